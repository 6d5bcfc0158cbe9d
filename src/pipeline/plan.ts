/**
 * Stage 1, plan: every tensor's role, layout and complete settings, decided once from the model and the
 * resolved options; every request is checked here, before any codec runs (codec against medium and bits,
 * video blocks against the planes).
 */

import { getCodec, resolveCodecOptions } from '../codecs/registry.js';
import { UnsupportedError } from '../errors.js';
import type { ModelReader } from '../formats/model.js';
import { elementCount, rowElements, storageRecord } from '../formats/model.js';
import { MAX_FRAME_AREA, MIN_FRAME, blockSize, videoFrameArea } from '../layout/blocks.js';
import { layoutElementCount, planeShapes, sliceLayout } from '../layout/planes.js';
import type { LayoutSpec } from '../layout/types.js';
import { ADDED_TABLE, GATHER_TABLE, classifyTensor, layoutForRole } from '../roles/classify.js';
import {
  type CODEC_SET_NAMES,
  type CompressOptions,
  DEFAULT_CODEC,
  type ResolvedOptions,
  type TensorSettings,
  resolveOptions,
  rulesFor,
  settingsFor,
} from './options.js';
import type { CodecChoice, CodedPlan, RefineRule, SliceSpec, TensorPlan } from './stages.js';
import type { RangeMode } from '../quantize/uniform.js';

/**
 * zstd-19 where zstd-3 wrote under the codes' entropy (structure), and in the default set also where it wrote well
 * over it (a tensor of mostly exact zeros): RefineRule. Not in the rate-control modes' set: on their coarse grids
 * zstd-3 writes 1.06–1.3× the entropy of almost every tensor, and zstd-19 at ~0.6 s a million codes on each would
 * multiply their encode time.
 */
const REFINE: RefineRule = { effort: 19, below: 0.97 };
const REFINE_SKEWED: RefineRule = { ...REFINE, skewed: { above: 1.02, excess: 4096 } };

/**
 * The codec sets that pick per tensor: each tries its image codecs losslessly and keeps the smallest, with
 * the raw codes through zstd as the floor (no tensor is ever stored larger than that). `auto` (the default)
 * is fast: PNG and zstd-3 (on dense 8-bit weight codes zstd's level changes nothing measurable, 3 runs ~200 M
 * codes/s). `smallest` adds lossless WebP (≈ 1 % smaller on weight codes, 10–100× slower) and zstd-19
 * (smaller on structured tensors: Fourier bases, pruned blocks), for when size is all that counts.
 */
export const CODEC_SETS: Readonly<
  Record<
    (typeof CODEC_SET_NAMES)[number],
    {
      /** Image codecs tried, with their settings (`matches`: PNG's own match search, off where zstd is beside it). */
      images: ReadonlyArray<{ name: string; effort?: number; matches?: boolean }>;
      zstdLevel: number;
      /** The raw codecs' second try (RefineRule, stages.ts). */
      refine?: RefineRule;
    }
  >
> = {
  // zlib 6 for 16-bit planes (libvips): as small as 9 on weight codes, a third faster; 8-bit planes are
  // deflated Huffman-only whatever the effort (codecs/image/png-entropy.ts), without PNG's own match search:
  // zstd, tried beside it, finds the structure it would
  auto: { images: [{ name: 'png', effort: 6, matches: false }], zstdLevel: 3, refine: REFINE_SKEWED },
  // zstd-19 only where it pays (the refine rule): it took 20 s of a 22 s encode of a 124k-weight classifier
  smallest: {
    images: [{ name: 'webp' }, { name: 'png', matches: false }],
    zstdLevel: 3,
    refine: REFINE,
  },
};

/**
 * Largest plane a codec set tries lossless WebP on. libwebp's lossless encoder holds ~30 bytes a pixel (measured
 * through sharp: peak RSS 196 MB for a 2048 × 2048 plane of 8-bit codes, 558 MB for 3072 × 5461), which took a
 * `--target-bpw 4` encode of a 0.4 GB safetensors model to 1.3 GB at `--jobs 1`; above this the tensor keeps
 * PNG and zstd, ~1–5 % larger on such planes.
 */
export const WEBP_MAX_PIXELS = 2 ** 22;

/** Pixels of the largest plane one encode unit (a tensor, or a slice of `sliceWeights` weights) holds. */
function largestUnitPlane(layout: LayoutSpec, sliceWeights: number): number {
  return Math.min(Math.max(...planeShapes(layout).map((s) => s.rows * s.cols)), sliceWeights);
}

/** Decides role, layout and settings of every tensor (`options` unresolved: checked and resolved here). */
export function planTensors(reader: ModelReader, options: CompressOptions | ResolvedOptions = {}): TensorPlan[] {
  const resolved = 'echo' in options ? options : resolveOptions(options);
  const smallModel = reader.tensors.reduce((n, t) => n + elementCount(t.shape), 0) <= BROTLI_SMALL_MODEL;
  return reader.tensors.map((entry, index): TensorPlan => {
    const rule = rulesFor(entry.name, resolved.rules);
    let cls = classifyTensor(entry, reader.format);
    const ctx = { file: reader.file, tensor: entry.name };
    if (rule.role) {
      const layout = rule.role === 'other' ? undefined : layoutForRole(rule.role, entry.shape, rule.order ?? 'out_in');
      if (rule.role !== 'other' && !layout)
        throw new UnsupportedError(`role ${rule.role} does not fit shape [${entry.shape}]`, ctx);
      cls = { role: rule.role, layout, reason: 'config rule' };
    }
    // a table added to activations is coded where it looks learnt: one holding a non-finite value is a mask (-inf
    // on attention scores), one whose values all lie on a lattice of 1/256 is generated (a detector's anchor
    // points or grid, half-integers; a 0/−10000 mask): kept exactly, as a box offset by a fraction of a cell is
    if (!rule.role && cls.reason.startsWith(ADDED_TABLE)) {
      const why = generatedTable(reader.read(entry.key));
      if (why) cls = { role: 'other', reason: `added to activations, ${why}` };
    }
    // a table rows are looked up in whose columns are sinusoids of the row (a rotary embedding's cos/sin cache,
    // indexed by position ids) is generated, not learnt, and every query and key is rotated by it: kept (float16),
    // not coded where rate control, whose probes on random weights or inputs see little of it, could starve it
    if (!rule.role && cls.reason === GATHER_TABLE && sinusoidTable(reader, entry))
      cls = { role: 'other', reason: 'Gather table whose columns are sinusoids of the row (a rotary position table: generated)' };
    const base = { index, entry, role: cls.role, reason: cls.reason, storage: storageRecord(reader.storage(entry.key)) };
    if (cls.role === 'other' || !cls.layout) return { kind: 'kept', ...base };
    const settings = layerRangeWhereNarrow(
      asImageWhereFramesPad(settingsFor(entry.name, resolved), cls.layout, resolved, entry.name),
      cls.layout,
      resolved.asked.range ?? rule.range,
    );
    const { codecs, auto } = codecChoices(settings, cls.layout, resolved, ctx, smallModel);
    return { kind: 'coded', ...base, layout: cls.layout, settings, codecs, auto };
  });
}

/** Fewer weights than this in an output channel: one range for the layer (unless a range mode was asked for). */
export const MIN_CHANNEL_WEIGHTS = 4;

/**
 * Narrow tensors of at most this many weights keep their range per channel at the fixed grids: one range for the
 * layer is less accurate than int8 with a scale per channel wherever the channels' scales differ, and on so few
 * weights the ranges' bytes are few.
 */
export const NARROW_LAYER_WEIGHTS = 2 ** 16;

/**
 * Per-channel ranges cost their own bytes: a tensor of output channels of one to three weights (a [N, 1]
 * safetensors column) paid for a range per weight, 13 bits a weight against 7 with one range for the layer (9 since
 * ranges are coded compactly). Rate control weighs the two modes itself; the fixed grids take the layer's range
 * there — for a tensor of more than NARROW_LAYER_WEIGHTS: one 8-bit grid for a SIREN's first layer [2, 256] (each
 * output channel's two weights then scaled by ω0 = 30) ran at 48.3 dB against 54.2 for int8 per channel, and its
 * output was 1.7× as far off.
 */
function layerRangeWhereNarrow(settings: TensorSettings, layout: LayoutSpec, asked: RangeMode | undefined): TensorSettings {
  if (asked || settings.range !== 'channel' || layoutElementCount(layout) <= NARROW_LAYER_WEIGHTS) return settings;
  const narrow = planeShapes(layout).some((s) => s.rows * s.channelWidth < MIN_CHANNEL_WEIGHTS);
  return narrow ? { ...settings, range: 'layer' } : settings;
}

/**
 * A generated table's rounding, relative to its largest value, in the recurrence's residual: float16's (2⁻¹¹ a value,
 * four values a residual) with room; a learnt table's residual is of the order of its values.
 */
const TABLE_ROUNDING = 5e-3;
/** Rows first read to tell a learnt table from a generated one (a learnt one fails on them). */
const SINUSOID_PROBE_ROWS = 8;

/**
 * Whether every column of a [rows, width] table is a sinusoid of the row index, x[p] = a·cos(p·θ + φ) (sin and cos
 * tables, a rotary embedding's caches; constant and linear columns too): x[p+1] + x[p−1] = 2·cos θ·x[p] within
 * the rounding of a float16 table (TABLE_ROUNDING) and of float32 arguments p·θ, relative to each column's amplitude,
 * cos θ fitted per column by least squares.
 * The first rows are tried before the whole table is read: a learnt table (a token embedding) fails on them.
 */
export function sinusoidTable(reader: ModelReader, entry: ModelReader['tensors'][number]): boolean {
  const [rows, width] = entry.shape;
  if (entry.shape.length !== 2 || rows < SINUSOID_PROBE_ROWS || width < 1) return false;
  const test = (x: Float32Array, p: number): boolean => {
    let max = 0;
    for (const v of x) max = Math.max(max, Math.abs(v));
    if (!(max > 0) || !Number.isFinite(max)) return false;
    for (let j = 0; j < width; j++) {
      // each column against its own amplitude: a learnt table is not let through by one large constant column
      let amplitude = 0;
      for (let i = 0; i < p; i++) amplitude = Math.max(amplitude, Math.abs(x[i * width + j]));
      if (amplitude === 0) continue;
      let num = 0;
      let den = 0;
      for (let i = 1; i < p - 1; i++) {
        const v = x[i * width + j];
        num += (x[(i + 1) * width + j] + x[(i - 1) * width + j]) * v;
        den += v * v;
      }
      const c = den > 0 ? num / (2 * den) : 0;
      // the argument p·θ rounded to float32 moves a row's value by up to p·θ·2⁻²⁴ of the amplitude
      const theta = Math.acos(Math.max(-1, Math.min(1, c)));
      for (let i = 1; i < p - 1; i++)
        if (
          Math.abs(x[(i + 1) * width + j] + x[(i - 1) * width + j] - 2 * c * x[i * width + j]) >
          amplitude * (TABLE_ROUNDING + 4 * (i + 1) * theta * 2 ** -24)
        )
          return false;
    }
    return true;
  };
  return test(reader.readRows(entry.key, 0, SINUSOID_PROBE_ROWS), SINUSOID_PROBE_ROWS) && test(reader.read(entry.key), rows);
}

/** Why a table added to activations is not a learnt one (undefined: it is). */
function generatedTable(values: Float32Array): string | undefined {
  if (!values.every(Number.isFinite)) return 'with non-finite values (a mask)';
  if (values.every((v) => Number.isInteger(v * 256))) return 'every value on a lattice of 1/256 (anchors, a grid or a mask)';
  return undefined;
}

/**
 * Video where the frames would be mostly padding (a plane thinner than a frame: videoFrameArea) is coded as an
 * image with the image default, and the log says so: the frames were written, and the reader refused them.
 */
function asImageWhereFramesPad(
  settings: TensorSettings,
  layout: LayoutSpec,
  resolved: ResolvedOptions,
  name: string,
): TensorSettings {
  if (settings.media !== 'video') return settings;
  const thin = planeShapes(layout).find((s) => videoFrameArea(layout, s, settings.block) > MAX_FRAME_AREA(s.rows * s.cols));
  if (!thin) return settings;
  resolved.onLog?.(
    `${name}: a ${thin.rows}×${thin.cols} plane as video frames (at least ${MIN_FRAME}×${MIN_FRAME} each) would be mostly padding: coded as an image (codec ${DEFAULT_CODEC.image})`,
  );
  return {
    ...settings,
    media: 'image',
    codec: DEFAULT_CODEC.image!,
    quality: undefined,
    lossless: undefined,
    block: undefined,
    gop: undefined,
  };
}

/** The codecs a coded tensor tries at its settings (a code width decides which image codecs carry it lossless). */
function codecChoices(
  settings: CodedPlan['settings'],
  layout: LayoutSpec,
  resolved: ResolvedOptions,
  ctx: { file: string; tensor: string },
  smallModel: boolean,
): { codecs: CodecChoice[]; auto: boolean } {
  const set = Object.hasOwn(CODEC_SETS, settings.codec) ? CODEC_SETS[settings.codec as keyof typeof CODEC_SETS] : undefined;
  const auto = set !== undefined;
  const codecs: CodecChoice[] = [];
  for (const { name, effort, matches } of set ? set.images : [{ name: settings.codec, effort: undefined, matches: undefined }]) {
    const codec = getCodec(name, ctx);
    if (!auto && codec.media !== settings.media && codec.media !== 'raw')
      throw new UnsupportedError(
        `codec ${codec.name} is ${/^[aeiou]/.test(codec.media) ? 'an' : 'a'} ${codec.media} codec, not for media ${settings.media}`,
        ctx,
      );
    if (auto && !codec.losslessBits.includes(settings.bits)) continue;
    // libwebp's lossless encoder holds ~30 bytes a pixel: past WEBP_MAX_PIXELS a plane goes to the others
    if (auto && name === 'webp' && largestUnitPlane(layout, resolved.sliceWeights) > WEBP_MAX_PIXELS) continue;
    codecs.push({
      name,
      options: {
        ...resolveCodecOptions(codec, settings.bits, auto ? { lossless: true, effort } : settings, ctx),
        gop: settings.gop,
        ...(matches !== undefined ? { matches } : {}),
      },
    });
    if (codec.media === 'video') for (const s of planeShapes(layout)) blockSize(layout, s, settings.block); // checks the block now
  }
  // the raw floor, plain and sign-split (raw/sign.ts): the smaller of the two is kept per tensor
  if (set)
    for (const name of ['zstd', 'zstd-sign'])
      if (getCodec(name, ctx).losslessBits.includes(settings.bits))
        codecs.push({
          name,
          options: { lossless: true, effort: set.zstdLevel },
          ...(set.refine ? { refine: set.refine } : {}),
          // a few bytes of manifest, and version 3 for the archive: kept only where it saves more than that
          ...(name === 'zstd-sign' ? { margin: 4 } : {}),
        });
  // brotli on tensors small enough that its slower encoder (and the browser's JavaScript decoder) cost little
  const unit = Math.min(
    planeShapes(layout).reduce((n, p) => n + p.rows * p.cols, 0),
    resolved.sliceWeights,
  );
  if (set && (unit <= BROTLI_MAX_WEIGHTS || smallModel))
    for (const name of ['brotli', 'brotli-sign'])
      if (getCodec(name, ctx).losslessBits.includes(settings.bits))
        codecs.push({
          name,
          options: { lossless: true, effort: unit <= BROTLI_BEST_WEIGHTS || smallModel ? BROTLI_BEST : BROTLI_FAST },
          // kept where it saves more than a few bytes: zstd decodes faster (and natively in more places)
          margin: 4,
        });
  return { codecs, auto };
}

/**
 * Tensors (or slices) of at most this many weights also try brotli (raw/brotli.ts), plain and sign-split,
 * kept where smaller: by tensor size, −1.2 to −1.7 % on tensors of ≤ 16k weights and −0.8 to −1.5 % up to 64k
 * (Silero VAD v4, PaddleOCR rec, ISNet), −0.2 to −0.7 % from 64k to 1M (measured, 2026-12-04). Brotli's
 * quality-11 encoder takes ~1.2 µs a code, quality 5 ~0.1 µs (most of the gain), so quality 11 up to
 * BROTLI_BEST_WEIGHTS, quality 5 above, and none past this size (a model of at most BROTLI_SMALL_MODEL weights
 * tries quality 11 on every tensor): tried up to 1M weights it added 2 s to a 2.7 s ISNet encode for 0.1 % of its
 * size. Small models, where a percent of the codes is the difference to an int8 file, are made of such
 * tensors.
 */
export const BROTLI_MAX_WEIGHTS = 2 ** 16;
export const BROTLI_BEST_WEIGHTS = 2 ** 14;
const BROTLI_FAST = 5;
const BROTLI_BEST = 11;
/** A model of at most this many float weights tries brotli at quality 11 on every tensor (≤ ~2.5 s of encoding). */
export const BROTLI_SMALL_MODEL = 2 ** 20;

/**
 * The plan at another code width (the allocation's 16-bit candidates): the same grid settings, and the codecs
 * that carry codes of that width.
 */
export function withBits(plan: CodedPlan, bits: number, resolved: ResolvedOptions, file: string): CodedPlan {
  if (bits === plan.settings.bits) return plan;
  const settings = { ...plan.settings, bits };
  // a small model's tensors try brotli at its best quality (planTensors decided it: the plan's own candidates say so)
  const smallModel = plan.codecs.some((c) => c.name.startsWith('brotli') && c.options.effort === BROTLI_BEST);
  const { codecs } = codecChoices(settings, plan.layout, resolved, { file, tensor: plan.entry.name }, smallModel);
  return { ...plan, settings, codecs };
}

/** The slices of a tensor larger than `sliceWeights` (none when it is coded whole or its layout cannot be sliced). */
export function slicesOf(plan: TensorPlan, sliceWeights: number): SliceSpec[] | undefined {
  const { shape } = plan.entry;
  if (plan.kind !== 'coded' || elementCount(shape) <= sliceWeights || shape.length < 2) return undefined;
  const per = Math.max(1, Math.floor(sliceWeights / Math.max(1, rowElements(shape))));
  const out: SliceSpec[] = [];
  for (let row = 0, k = 0; row < shape[0]; row += per, k++) out.push({ k, row, rows: Math.min(per, shape[0] - row) });
  if (out.length < 2 || !out.every((s) => sliceLayout(plan.layout, shape, s.rows))) return undefined;
  return out;
}

/** The plan with new settings (allocation changes grids; plans themselves are never changed). */
export function withSettings(plan: CodedPlan, change: Partial<CodedPlan['settings']>): CodedPlan {
  return { ...plan, settings: { ...plan.settings, ...change } };
}
