/**
 * compress: model file → classify → lay out (M2–M4) → quantize (M1) → encode
 * (M8) → .nnm archive. Every tensor is decoded again right after encoding so
 * the manifest records the true error, and a lossless path that is not
 * bit-exact is caught here rather than in the user's model.
 *
 * Rate control is the encoder's alone (the decoder reads plain M1 codes):
 * per-channel clipping ranges, a coarser code grid (stride) per tensor chosen
 * by per-tensor SNR targets or by allocation across layers, and `--codec auto`
 * with a raw codes + zstd fallback.
 */

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { getCodec, resolveCodecOptions } from '../codecs/registry.js';
import type { Codec, CodecOptions } from '../codecs/types.js';
import { CodecError, UnsupportedError, withContext } from '../errors.js';
import type { ModelReader, TensorEntry } from '../formats/model.js';
import { elementCount, rowElements, storageRecord } from '../formats/model.js';
import { gatherPlanes, planeShapes, scatterPlanes, sliceLayout } from '../layout/planes.js';
import { cutTile, pasteTile, tileGrid } from '../layout/tiles.js';
import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import { allocCodes, collectNonFinite, dequantizePlane, restoreNonFinite } from '../quantize/uniform.js';
import type { CodeArray, NonFiniteSide, RangeMode } from '../quantize/uniform.js';
import { encodeRanges, quantizePlanes, type PlaneQuantization, type QuantizeSettings } from '../quantize/tensor.js';
import { classifyTensor, layoutForRole } from '../roles/classify.js';
import { markOutliers } from '../quantize/outliers.js';
import { encodeExactValues } from '../quantize/exact.js';
import { HALF_ENTRY, fromHalf, toHalfIfSafe } from '../quantize/half.js';
import { concatBytes } from '../io/bytes.js';
import { rotatePlane, unrotatePlane } from '../transform/hadamard.js';
import { addSums, errorStats, errorSums, statsFromSums, type ErrorSums } from '../eval/metrics.js';
import {
  FORMAT_VERSION,
  MANIFEST_NAME,
  type Manifest,
  type PlaneRecord,
  type SliceRecord,
  type TensorRecord,
} from '../archive/manifest.js';
import { ZipWriter, type ZipMethod } from '../archive/zip.js';
import { checkOutputPath, writeAtomic } from '../io/atomic.js';
import { type CompressOptions, DEFAULTS, DEFAULT_CODEC, type EncodeSettings, checkCompressOptions, rulesFor } from './options.js';
import { MIN_FRAME, blockSize, evenUp } from '../layout/blocks.js';
import { openModel } from '../formats/registry.js';
import { VERSION } from '../version.js';
import { runOrdered } from './pool.js';
import { poolFor, type WorkerPool } from './workers.js';
import { sha256File } from '../io/atomic.js';
import {
  ALLOCATION_STEPS,
  PROBE_STEP,
  allocateForBudget,
  allocateForLoss,
  measureCandidates,
  STRIDES,
  type Candidate,
  type TensorRate,
} from '../rate/allocate.js';
import { substituteTensors } from './substitute.js';
import { randomInputOutputs } from '../eval/calibrate.js';

/** How much the allocator trusts per-tensor sensitivity probes (0…1); see allocate(). */
const DEFAULT_SENSITIVITY_WEIGHT = 0.5;

/** Outlier threshold (σ) used by the rate-control modes unless set: measured on PaddleOCR (see README). */
const DEFAULT_RATE_OUTLIERS = 4;

/**
 * Working planes of a tensor: laid out, with outliers (and non-finite values)
 * marked NaN; and the exact side values for every marked position, in file order.
 */
export function preparePlanes(
  values: Float32Array,
  layout: LayoutSpec,
  outlierSigma: number,
): { planes: Float32Array[]; shapes: PlaneShape[]; side?: NonFiniteSide } {
  const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
  const shapes = planeShapes(layout);
  let marked = 0;
  if (outlierSigma > 0) marked = markOutliers(planes, shapes, outlierSigma);
  let side: NonFiniteSide | undefined = collectNonFinite(values, 'keep', '', '');
  if (marked > 0) {
    const mask = scatterPlanes(planes, layout, new Float32Array(values.length));
    side = collectNonFinite(mask, 'keep', '', '');
    if (side) side.values = Float32Array.from(side.indices, (i) => values[i]);
  }
  return { planes, shapes, side };
}

/** Rotation seed of plane p of tensor i (stored in the manifest; any value works). */
const rotationSeed = (tensorIndex: number, plane: number): number => ((tensorIndex + 1) * 7919 + plane * 104729) >>> 0;

/** Rotates working planes in place; NaN (side-stored) positions enter the transform as 0. */
function rotatePlanes(planes: Float32Array[], shapes: readonly PlaneShape[], seeds: readonly number[]): void {
  planes.forEach((pl, p) => {
    for (let i = 0; i < pl.length; i++) if (!Number.isFinite(pl[i])) pl[i] = 0;
    rotatePlane(pl, shapes[p].rows, shapes[p].cols, seeds[p]);
  });
}

/**
 * The codec of the rate-control modes unless one is given: the smallest lossless one per tensor. Measured
 * on PaddleOCR step-grid codes: lossless WebP sits at their order-0 entropy (99.7 %), PNG 10–20 % above it.
 */
const RATE_CONTROL_CODEC = 'auto';

/** Lossless codecs `--codec auto` tries per tensor, smallest wins; zstd of the raw codes is the floor. */
const AUTO_CODECS = ['webp', 'png'];

export interface TensorPlan {
  entry: TensorEntry;
  record: TensorRecord;
  settings?: EncodeSettings;
  /** Candidate codecs (one unless `auto`). */
  codecs?: Array<{ codec: Codec; options: CodecOptions }>;
  auto?: boolean;
}

export interface CompressResult {
  manifest: Manifest;
  archiveBytes: number;
  /** Weights in compressed tensors (rank ≥ 2 by role), the denominator of bits/weight. */
  compressedWeights: number;
  bitsPerWeight: number;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80) || 'tensor';
}

/** Decides role, layout and settings of every tensor; checks every request before any codec runs. */
export function planTensors(reader: ModelReader, options: CompressOptions): TensorPlan[] {
  const rateControl = options.targetBpw !== undefined || options.maxLoss !== undefined || options.targetSnr !== undefined;
  return reader.tensors.map((entry) => {
    const rule = rulesFor(entry.name, options.rules);
    let cls = classifyTensor(entry, reader.format);
    if (rule.role) {
      const layout = rule.role === 'other' ? undefined : layoutForRole(rule.role, entry.shape, rule.order ?? 'out_in');
      if (rule.role !== 'other' && !layout)
        throw new UnsupportedError(`role ${rule.role} does not fit shape [${entry.shape}]`, {
          file: reader.file,
          tensor: entry.name,
        });
      cls = { role: rule.role, layout, reason: 'config rule' };
    }
    const record: TensorRecord = {
      key: entry.key,
      name: entry.name,
      dtype: entry.dtype,
      shape: [...entry.shape],
      role: cls.role,
      reason: cls.reason,
      storage: storageRecord(reader.storage(entry.key)),
    };
    if (cls.role === 'other' || !cls.layout) return { entry, record };
    const settings: EncodeSettings = {
      media: rule.media ?? options.media ?? DEFAULTS.media,
      codec:
        rule.codec ??
        options.codec ??
        (rateControl && !(rule.media ?? options.media) ? RATE_CONTROL_CODEC : undefined) ??
        DEFAULT_CODEC[rule.media ?? options.media ?? DEFAULTS.media] ??
        DEFAULTS.codec,
      bits: rule.bits ?? options.bits ?? DEFAULTS.bits,
      quality: rule.quality ?? options.quality,
      lossless: rule.lossless ?? options.lossless,
      effort: options.effort,
      range: rule.range ?? options.range ?? DEFAULTS.range,
      stride: rule.stride ?? options.stride ?? DEFAULTS.stride,
      clip: options.clip ?? false,
      outliers: rule.outliers ?? options.outliers ?? (options.targetSnr !== undefined ? DEFAULT_RATE_OUTLIERS : 0),
      relStep: rule.relStep ?? options.relStep,
      block: rule.block ?? options.block,
      rotate: options.rotate,
      gop: options.gop,
    };
    const ctx = { file: reader.file, tensor: entry.name };
    const auto = settings.codec === 'auto';
    const names = auto ? AUTO_CODECS : [settings.codec];
    const codecs: Array<{ codec: Codec; options: CodecOptions }> = [];
    for (const name of names) {
      const codec = getCodec(name, ctx);
      if (!auto && codec.media !== settings.media && codec.media !== 'raw')
        throw new UnsupportedError(`codec ${codec.name} is a ${codec.media} codec, not ${settings.media}`, ctx);
      if (auto && !codec.losslessBits.includes(settings.bits)) continue;
      codecs.push({
        codec,
        options: { ...resolveCodecOptions(codec, settings.bits, auto ? { lossless: true } : settings, ctx), gop: settings.gop },
      });
      if (codec.media === 'video') for (const s of planeShapes(cls.layout)) blockSize(cls.layout, s, settings.block); // checks --block now
    }
    if (auto) codecs.push({ codec: getCodec('zstd'), options: { lossless: true } });
    record.layout = cls.layout;
    return { entry, record, settings, codecs, auto };
  });
}

interface EncodedTiles {
  codec: Codec;
  options: CodecOptions;
  /** Per plane: its entries' bytes and the plane record (tile entries hold a suffix to be prefixed). */
  planes: Array<{ data: Uint8Array[]; record: PlaneRecord }>;
  /** Per plane: codes as decoded back. */
  decoded: CodeArray[];
  bytes: number;
}

/** Encodes every plane: images tile by tile, video as one stream of M5/M6 frames, audio as one signal. */
async function encodeWith(
  codec: Codec,
  options: CodecOptions,
  quant: readonly PlaneQuantization[],
  shapes: readonly PlaneShape[],
  bits: number,
  ctx: { file: string; tensor: string },
  layout: LayoutSpec,
  block?: [number, number],
): Promise<EncodedTiles> {
  const planes: EncodedTiles['planes'] = [];
  const decoded: CodeArray[] = [];
  let bytes = 0;
  const run = async (data: CodeArray, width: number, height: number, frames?: number): Promise<[Uint8Array, CodeArray]> => {
    try {
      const enc = await codec.encode({ width, height, bits, data, frames }, options);
      const back = await codec.decode(enc, { width, height, bits, frames });
      if (options.lossless)
        for (let i = 0; i < data.length; i++)
          if (data[i] !== back[i]) throw new CodecError(`${codec.name} lossless round trip is not exact at sample ${i}`, ctx);
      return [enc, back];
    } catch (e) {
      throw withContext(e, ctx);
    }
  };
  for (let p = 0; p < quant.length; p++) {
    const s = shapes[p];
    const codes = quant[p].codes;
    const back = allocCodes(bits, codes.length);
    const record: PlaneRecord = { label: s.label, rows: s.rows, cols: s.cols, tiles: [] };
    const data: Uint8Array[] = [];
    if (codec.media === 'video') {
      const [br, bc] = blockSize(layout, s, block);
      const grid = tileGrid(s.rows, s.cols, br, bc);
      const [fr, fc] = [Math.max(MIN_FRAME, evenUp(br)), Math.max(MIN_FRAME, evenUp(bc))];
      // padding takes the middle code: zero on a step grid, the cheapest symbol for the codecs
      const stack = allocCodes(bits, fr * fc * grid.length).fill(2 ** (bits - 1));
      grid.forEach((t, k) => {
        for (let r = 0; r < t.rows; r++)
          stack.set(codes.subarray((t.row + r) * s.cols + t.col, (t.row + r) * s.cols + t.col + t.cols), (k * fr + r) * fc);
      });
      const [enc, got] = await run(stack, fc, fr * grid.length, grid.length);
      grid.forEach((t, k) => {
        for (let r = 0; r < t.rows; r++)
          back.set(got.subarray((k * fr + r) * fc, (k * fr + r) * fc + t.cols), (t.row + r) * s.cols + t.col);
        record.tiles.push({ ...t, entry: `p${p}.${codec.ext}`, frame: k });
      });
      record.frame = { rows: fr, cols: fc, count: grid.length };
      data.push(enc);
    } else if (codec.media === 'audio') {
      const [enc, got] = await run(codes, s.cols, s.rows);
      back.set(got);
      record.tiles.push({ row: 0, col: 0, rows: s.rows, cols: s.cols, entry: `p${p}.${codec.ext}` });
      data.push(enc);
    } else {
      const grid = tileGrid(s.rows, s.cols, codec.maxHeight, codec.maxWidth);
      for (let t = 0; t < grid.length; t++) {
        const rect = grid[t];
        const tile = cutTile(codes, s.cols, rect, (n) => allocCodes(bits, n));
        const [enc, got] = await run(tile, rect.cols, rect.rows);
        pasteTile(back, s.cols, rect, got);
        record.tiles.push({ ...rect, entry: `p${p}${grid.length > 1 ? `-t${t}` : ''}.${codec.ext}` });
        data.push(enc);
      }
    }
    bytes += data.reduce((n, d) => n + d.length, 0);
    planes.push({ data, record });
    decoded.push(back);
  }
  return { codec, options, planes, decoded, bytes };
}

function snrOf(values: readonly Float32Array[], restored: readonly Float32Array[]): number {
  let sp = 0;
  let se = 0;
  values.forEach((v, p) => {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) continue;
      sp += v[i] * v[i];
      se += (v[i] - restored[p][i]) ** 2;
    }
  });
  return se === 0 ? Infinity : 10 * Math.log10(sp / se);
}

/** Rows [row, row + rows) of a tensor's leading dimension, the k-th slice of a tensor too large to code whole. */
export interface SliceSpec {
  k: number;
  row: number;
  rows: number;
}

/** What coding a tensor (or one slice of it) puts in its record. */
export type CodedTensor = Omit<SliceRecord, 'row' | 'rows'>;

export interface EncodedTensor {
  entries: Array<[string, Uint8Array]>;
  coded: CodedTensor;
  /** Error sums, which add up over slices. */
  sums: ErrorSums;
}

/** Largest skeleton entry: a larger skeleton (kept tensors of any size) is written and read in parts of this. */
export const SKELETON_PART_BYTES = 64 * 2 ** 20;

/**
 * Default largest number of weights coded in one piece: a larger tensor is coded as slices of its leading
 * dimension, so memory follows the slice (~16 bytes per weight per job: values, working plane, codes,
 * codec bytes, codes decoded back, restored values), not the tensor. 2^24 keeps two jobs under 1.5 GB
 * (measured: 2^25 peaked at 1.54 GiB with --jobs 2 on a 128k-row embedding) and costs nothing measurable
 * in size: a slice adds one ZIP entry and one manifest record (~300 bytes) per 16 M weights.
 */
export const DEFAULT_SLICE_WEIGHTS = 2 ** 24;

/** The slices of a tensor larger than `sliceWeights` (none when it is coded whole or its layout cannot be sliced). */
export function slicesOf(plan: TensorPlan, sliceWeights: number): SliceSpec[] | undefined {
  const { shape } = plan.entry;
  const layout = plan.record.layout;
  if (!layout || elementCount(shape) <= sliceWeights || shape.length < 2) return undefined;
  const per = Math.max(1, Math.floor(sliceWeights / Math.max(1, rowElements(shape))));
  const out: SliceSpec[] = [];
  for (let row = 0, k = 0; row < shape[0]; row += per, k++) out.push({ k, row, rows: Math.min(per, shape[0] - row) });
  if (out.length < 2 || !out.every((s) => sliceLayout(layout, shape, s.rows))) return undefined;
  return out;
}

/** Lays out, quantizes, encodes one tensor (or one slice of it) and decodes it again to measure the error. */
export async function encodeTensor(
  reader: ModelReader,
  plan: TensorPlan,
  index: number,
  options: Pick<CompressOptions, 'targetSnr' | 'nonFinite'>,
  slice?: SliceSpec,
): Promise<EncodedTensor> {
  const { entry, record, settings, codecs } = plan;
  if (!settings || !codecs || !record.layout) throw new Error('encodeTensor called on a kept tensor');
  const layout = slice ? sliceLayout(record.layout, entry.shape, slice.rows) : record.layout;
  if (!layout) throw new Error(`slice ${slice!.k} of ${entry.name} has no layout`);
  const ctx = {
    file: reader.file,
    tensor: slice ? `${entry.name} [rows ${slice.row}–${slice.row + slice.rows - 1}]` : entry.name,
  };
  const values = slice ? reader.readRows(entry.key, slice.row, slice.rows) : reader.read(entry.key);
  collectNonFinite(values, options.nonFinite ?? 'error', reader.file, ctx.tensor); // throws under the 'error' policy
  const { planes, shapes, side: side0 } = preparePlanes(values, layout, settings.outliers);
  const seeds = settings.rotate ? shapes.map((_, p) => rotationSeed(index, p)) : undefined;
  if (seeds) rotatePlanes(planes, shapes, seeds);
  const qs = (stride: number): QuantizeSettings => ({
    bits: settings.bits,
    range: settings.range,
    stride,
    clip: settings.clip,
    relStep: settings.relStep,
  });
  let stride = settings.stride;
  // Per-tensor rate control for lossless codecs: the coarsest grid that keeps the SNR target.
  const lossless = codecs.every((c) => c.options.lossless);
  if (options.targetSnr !== undefined && lossless) {
    stride = 1;
    for (const k of STRIDES) {
      const q = quantizePlanes(planes, shapes, qs(k));
      if (
        snrOf(
          planes,
          q.map((x) => x.restored),
        ) >= options.targetSnr
      )
        stride = k;
      else break;
    }
  }
  const quant = quantizePlanes(planes, shapes, qs(stride));
  let side = side0;
  if (quant.some((q) => q.beyond)) {
    // weights beyond the step grid join the exact side values
    const mask = scatterPlanes(
      quant.map((q, p) => q.working ?? planes[p]),
      layout,
      new Float32Array(values.length),
    );
    side = collectNonFinite(mask, 'keep', '', '');
    if (side) side.values = Float32Array.from(side.indices, (i) => values[i]);
  }
  let best: EncodedTiles | undefined;
  if (options.targetSnr !== undefined && !lossless) {
    // Per-tensor rate control for lossy codecs: the lowest quality whose decoded weights keep the SNR target.
    const { codec, options: base } = codecs[0];
    const scale = codec.quality!;
    let lo = scale.min;
    let hi = scale.max;
    const trial = async (q: number): Promise<{ enc: EncodedTiles; snr: number }> => {
      const enc = await encodeWith(codec, { ...base, quality: q }, quant, shapes, settings.bits, ctx, layout, settings.block);
      const restored = enc.decoded.map((c, p) =>
        dequantizePlane(c, shapes[p].rows, shapes[p].cols, settings.bits, quant[p].ranges),
      );
      return { enc, snr: snrOf(planes, restored) };
    };
    let top = await trial(hi);
    best = top.enc;
    if (top.snr >= options.targetSnr) {
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        const t = await trial(mid);
        if (t.snr >= options.targetSnr) {
          hi = mid;
          top = t;
        } else lo = mid + 1;
      }
      best = top.enc;
    }
  } else {
    for (const { codec, options: o } of codecs) {
      const enc = await encodeWith(codec, o, quant, shapes, settings.bits, ctx, layout, settings.block);
      if (!best || enc.bytes < best.bytes) best = enc;
    }
  }
  if (!best) throw new CodecError('no codec could encode the tensor', ctx);
  const dir = `tensors/${String(index).padStart(4, '0')}-${safeName(entry.name)}${slice ? `/s${String(slice.k).padStart(4, '0')}` : ''}`;
  const entries: Array<[string, Uint8Array]> = [];
  const planeRecords: PlaneRecord[] = [];
  const restoredPlanes: Float32Array[] = [];
  let bytes = 0;
  for (let p = 0; p < planes.length; p++) {
    const s = shapes[p];
    const { data, record: pr } = best.planes[p];
    const names = [...new Set(pr.tiles.map((t) => t.entry))];
    names.forEach((suffix, k) => {
      entries.push([`${dir}/${suffix}`, data[k]]);
      bytes += data[k].length;
    });
    planeRecords.push({ ...pr, tiles: pr.tiles.map((t) => ({ ...t, entry: `${dir}/${t.entry}` })) });
    // the working plane is not needed any more: decode into it rather than into a new array
    const back = dequantizePlane(
      best.decoded[p],
      s.rows,
      s.cols,
      settings.bits,
      quant[p].ranges,
      planes[p] as Float32Array<ArrayBuffer>,
    );
    if (seeds) unrotatePlane(back, s.rows, s.cols, seeds[p]);
    restoredPlanes.push(back);
  }
  const restored = scatterPlanes(restoredPlanes, layout, new Float32Array(values.length));
  restoreNonFinite(restored, side);
  const coded: CodedTensor = { layout } as CodedTensor;
  if (side) {
    const name = `${dir}/exact.bin`;
    const data = encodeExactValues(side);
    entries.push([name, data]);
    bytes += data.length;
    coded.nonFinite = name;
    coded.exactValues = side.indices.length;
  }
  coded.quant = {
    bits: settings.bits,
    range: settings.range,
    ranges: quant.map((q) => encodeRanges(q.ranges, q.rangeDtype, q.stepBytes)),
    rangeDtype: quant.map((q) => q.rangeDtype),
    channelWidth: quant.map((q) => q.ranges.channelWidth),
    ...(stride > 1 ? { stride } : {}),
    ...(settings.clip ? { clip: true } : {}),
    ...(settings.outliers > 0 ? { outlierSigma: settings.outliers } : {}),
    ...(settings.relStep !== undefined ? { relStep: settings.relStep } : {}),
    ...(seeds ? { rotation: { kind: 'hadamard' as const, seeds } } : {}),
  };
  coded.codec = {
    name: best.codec.name,
    media: best.codec.media,
    lossless: best.options.lossless ?? false,
    ...(best.options.quality !== undefined ? { quality: best.options.quality } : {}),
    ...(best.options.effort !== undefined ? { effort: best.options.effort } : {}),
    ...(plan.auto && best.codec.media === 'raw' ? { fallback: 'raw codes + zstd were smaller than every image codec' } : {}),
    ...(best.codec.media === 'video' ? { gop: best.options.gop ?? 'intra' } : {}),
  };
  coded.planes = planeRecords;
  const sums = errorSums(values, restored);
  coded.stats = statsFromSums(sums);
  coded.bytes = bytes;
  return { entries, coded, sums };
}

/** Removes what an earlier encode (rate control re-encodes) put in a record, before the new coding goes in. */
function clearCoding(record: TensorRecord): void {
  for (const k of ['nonFinite', 'exactValues', 'slices', 'planes', 'quant', 'codec'] as const) delete record[k];
}

/**
 * Kept float32/float64 tensors whose float16 cast is safe: their bytes, one after another, and their records
 * marked. Biases and norms: a kept tensor larger than a slice stays exact in the skeleton, which is streamed.
 */
function halfKept(
  reader: ModelReader,
  plans: readonly TensorPlan[],
  maxWeights: number,
): { data: Uint8Array; keys: string[] } | undefined {
  const parts: Uint8Array[] = [];
  const keys: string[] = [];
  let offset = 0;
  for (const p of plans) {
    if (p.settings || (p.entry.dtype !== 'float32' && p.entry.dtype !== 'float64')) continue;
    if (elementCount(p.entry.shape) > maxWeights) continue;
    const values = reader.read(p.entry.key);
    const bytes = values.length ? toHalfIfSafe(values) : undefined;
    if (!bytes) continue;
    p.record.half = { entry: HALF_ENTRY, offset };
    p.record.stats = errorStats(values, fromHalf(bytes, 0, values.length));
    parts.push(bytes);
    keys.push(p.entry.key);
    offset += values.length;
  }
  return keys.length ? { data: concatBytes(parts), keys } : undefined;
}

/** The rate of a tensor measured slice by slice: bits and squared errors add up per candidate. */
function addRates(a: TensorRate, b: TensorRate): TensorRate {
  return {
    ...a,
    weights: a.weights + b.weights,
    candidates: a.candidates.map((c, i) => ({ ...c, bits: c.bits + b.candidates[i].bits, sse: c.sse + b.candidates[i].sse })),
  };
}

/** Hash of a tensor's values and shape: identical tensors are stored once. A large tensor is read slice by slice. */
function contentHash(reader: ModelReader, plan: TensorPlan, sliceWeights: number): string {
  const h = createHash('sha256').update(JSON.stringify([plan.entry.shape, plan.record.layout, plan.settings]));
  const { key } = plan.entry;
  const add = (v: Float32Array): void => void h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  const slices = slicesOf(plan, sliceWeights);
  if (!slices) add(reader.read(key));
  else for (const s of slices) add(reader.readRows(key, s.row, s.rows));
  return h.digest('hex');
}

function mse(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += Number.isFinite(d) ? d * d : 0;
  }
  return s / Math.max(1, a.length);
}

/**
 * Allocation across layers (`targetBpw` / `maxLoss`): measures per tensor the
 * bits and error of every candidate grid and its sensitivity on calibration
 * data, then sets each plan's stride.
 */
async function allocate(
  reader: ModelReader,
  source: () => Uint8Array,
  plans: TensorPlan[],
  unique: TensorPlan[],
  overheadBits: number,
  options: CompressOptions,
): Promise<(budgetScale: number) => void> {
  const log = options.onLog ?? (() => {});
  const rates: TensorRate[] = [];
  const planesOf = new Map<string, { planes: Float32Array[]; shapes: PlaneShape[]; side?: NonFiniteSide }>();
  const seedsOf = new Map<string, number[] | undefined>();
  // Without a graph to run (safetensors) and no calibrator, every tensor counts the same per unit of error.
  const canRun = reader.format === 'onnx' || options.calibrate !== undefined || options.task !== undefined;
  const sliceWeights = options.sliceWeights ?? DEFAULT_SLICE_WEIGHTS;
  // mean square of each tensor's weights, the scale its sensitivity is damped on
  const powers: number[] = [];
  for (const p of unique) {
    // the range mode is a candidate too unless the user fixed it: per-channel ranges cost bits of their own
    const modes: RangeMode[] = options.range ? [options.range] : ['channel', 'layer'];
    // Nothing to run: measure slice by slice (as they will be coded) and keep nothing, so memory follows the
    // slice. To probe, substitutions need every tensor's working planes: the model is in memory then anyway.
    const parts = canRun ? undefined : slicesOf(p, sliceWeights);
    let rate: TensorRate | undefined;
    let sq = 0;
    let n = 0;
    for (const part of parts ?? [undefined]) {
      const values = part ? reader.readRows(p.entry.key, part.row, part.rows) : reader.read(p.entry.key);
      const layout = part ? sliceLayout(p.record.layout!, p.entry.shape, part.rows)! : p.record.layout!;
      const prepared = preparePlanes(values, layout, p.settings!.outliers);
      const seeds = p.settings!.rotate ? prepared.shapes.map((_, k) => rotationSeed(plans.indexOf(p), k)) : undefined;
      if (seeds) rotatePlanes(prepared.planes, prepared.shapes, seeds);
      if (canRun) {
        seedsOf.set(p.entry.key, seeds);
        planesOf.set(p.entry.key, prepared);
      }
      const r = measureCandidates(
        p.entry.key,
        prepared.planes,
        prepared.shapes,
        { bits: p.settings!.bits, clip: p.settings!.clip },
        ALLOCATION_STEPS,
        modes,
      );
      // exact side values cost the same at every grid: ~8 bytes each before deflate
      const sideBits = (prepared.side?.indices.length ?? 0) * 64;
      r.candidates.forEach((c) => (c.bits += sideBits));
      rate = rate ? addRates(rate, r) : r;
      for (const pl of prepared.planes)
        for (const v of pl)
          if (Number.isFinite(v)) {
            sq += v * v;
            n++;
          }
    }
    rates.push(rate!);
    powers.push(Math.max(sq / Math.max(n, 1), 1e-30));
  }
  // values of a tensor (and its duplicates) at a given candidate, in file order
  const restoredAt = (i: number, c: Candidate): Map<string, Float32Array> => {
    const p = unique[i];
    const { planes, shapes, side } = planesOf.get(p.entry.key)!;
    const q = quantizePlanes(planes, shapes, {
      bits: p.settings!.bits,
      range: c.range,
      clip: p.settings!.clip,
      stride: c.stride,
      relStep: c.relStep,
      clampBeyond: Boolean(seedsOf.get(p.entry.key)),
    });
    const seeds = seedsOf.get(p.entry.key);
    if (seeds) q.forEach((x, k) => unrotatePlane(x.restored, shapes[k].rows, shapes[k].cols, seeds[k]));
    const v = scatterPlanes(
      q.map((x) => x.restored),
      p.record.layout!,
      new Float32Array(elementCount(p.entry.shape)),
    );
    restoreNonFinite(v, side);
    const out = new Map([[p.entry.key, v]]);
    for (const d of plans) if (d.record.sameAs === p.record.key) out.set(d.entry.key, v);
    return out;
  };
  const weights = plans.filter((p) => p.settings).reduce((s, p) => s + elementCount(p.entry.shape), 0);
  let probeAt: ((i: number, c: Candidate) => Promise<number>) | undefined;
  if (canRun) {
    const calibrate = options.calibrate ?? (options.task ? (m: Uint8Array) => options.task!.calibrate(m) : randomInputOutputs);
    const reference = await calibrate(source());
    // output distortion per unit of squared weight error with tensor i at candidate c
    // (duplicates are substituted together and cost their bits once, so no correction is needed)
    probeAt = async (i, c) => {
      options.signal?.throwIfAborted();
      const out = await calibrate(substituteTensors(reader, restoredAt(i, c)));
      return c.sse > 0 ? Math.max(mse(out, reference), 1e-30) / c.sse : 1e-30;
    };
    log(`probing the sensitivity of ${unique.length} tensors on calibration data`);
    for (let i = 0; i < unique.length; i++) {
      const probe = rates[i].candidates.find((c) => c.relStep === PROBE_STEP && c.range === (options.range ?? 'channel'))!;
      rates[i].sensitivity = await probeAt(i, probe);
      if (process.env.NNMEDIA_DEBUG) log(`  ${unique[i].entry.name}: sensitivity ${rates[i].sensitivity.toExponential(2)}`);
    }
  }
  // Damped sensitivities: s_t^γ on the scale of each tensor's own weight power. γ = 0 spends bits for equal
  // relative precision everywhere; γ = 1 trusts the probes fully (measured to over-commit on PaddleOCR).
  const gamma = options.sensitivityWeight ?? DEFAULT_SENSITIVITY_WEIGHT;
  unique.forEach((_, i) => {
    const power = powers[i];
    rates[i].sensitivity = (rates[i].sensitivity * power) ** gamma / power;
  });
  const apply = (choice: number[]): void =>
    unique.forEach((p, i) => {
      const c = rates[i].candidates[choice[i]];
      p.settings!.stride = 1;
      p.settings!.relStep = c.relStep;
      p.settings!.range = c.range;
    });
  if (options.targetBpw !== undefined) {
    const target = options.targetBpw;
    const byBudget = (budgetScale: number): void => {
      const choice = allocateForBudget(rates, target * weights * budgetScale - overheadBits);
      log(
        `allocated ${(rates.reduce((s, t, i) => s + t.candidates[choice[i]].bits, 0) / weights).toFixed(3)} bits/weight (estimate) for a target of ${target}`,
      );
      apply(choice);
    };
    if ((options.reprobe ?? true) && probeAt) {
      // The linear model is measured at one step; most tensors land elsewhere. Measure again where the
      // first allocation put each tensor, then allocate with those (PaddleOCR at 4 bits/weight: CER 0.30 → 0.19 %).
      const first = allocateForBudget(rates, target * weights - overheadBits);
      log(`probing again at the allocated grids`);
      for (let i = 0; i < unique.length; i++) {
        const raw = await probeAt(i, rates[i].candidates[first[i]]);
        rates[i].sensitivity = (raw * powers[i]) ** gamma / powers[i];
      }
    }
    byBudget(1);
    return byBudget;
  } else {
    const task = options.task!;
    const ref = await task.run(source());
    const result = await allocateForLoss(rates, options.maxLoss!, async (c) => {
      if (process.env.NNMEDIA_DEBUG)
        log(
          c
            .map(
              (k, i) =>
                `${unique[i].entry.name}:${rates[i].candidates[k].range[0]}${(1 / rates[i].candidates[k].relStep!).toFixed(1)}`,
            )
            .join(' '),
        );
      const all = new Map<string, Float32Array>();
      c.forEach((k, i) => restoredAt(i, rates[i].candidates[k]).forEach((v, key) => all.set(key, v)));
      const loss = task.loss(ref, await task.run(substituteTensors(reader, all)));
      log(
        `  ${(rates.reduce((s, t, i) => s + t.candidates[c[i]].bits, 0) / weights).toFixed(3)} bits/weight (estimate): loss ${loss.toFixed(5)}`,
      );
      return loss;
    });
    apply(result.choice);
    return () => {};
  }
}

export async function compressModel(input: string, output: string, options: CompressOptions = {}): Promise<CompressResult> {
  checkCompressOptions(options);
  await checkOutputPath(output, [input], { force: options.force });
  const reader = openModel(input);
  try {
    const plans = planTensors(reader, options);
    const work = plans.filter((p) => p.settings);
    // Identical tensors (e.g. a model's branches that share weights) are encoded once.
    const firstByHash = new Map<string, TensorPlan>();
    const unique: TensorPlan[] = [];
    for (const p of work) {
      const h = contentHash(reader, p, options.sliceWeights ?? DEFAULT_SLICE_WEIGHTS);
      const first = firstByHash.get(h);
      if (first) p.record.sameAs = first.record.key;
      else {
        firstByHash.set(h, p);
        unique.push(p);
      }
    }
    const allocating = options.targetBpw !== undefined || options.maxLoss !== undefined;
    const half =
      (options.halfKept ?? (allocating || options.targetSnr !== undefined))
        ? halfKept(reader, plans, options.sliceWeights ?? DEFAULT_SLICE_WEIGHTS)
        : undefined;
    const stripped = new Set([...work.map((p) => p.entry.key), ...(half?.keys ?? [])]);
    const skeletonName = `model/skeleton.${reader.format}`;
    // the skeleton (the model minus the coded tensors) is read part by part where it is written
    const skeleton = (): Iterable<Uint8Array> => reader.skeletonParts(stripped, options.skeletonPartBytes ?? SKELETON_PART_BYTES);
    const sourceSha = await sha256File(input);
    const compressedWeights = work.reduce((s, p) => s + elementCount(p.entry.shape), 0);
    // Skeleton, manifest head and ZIP directory: what the allocator must leave room for.
    let skeletonDeflated = 0;
    if (allocating) for (const part of skeleton()) skeletonDeflated += deflateRawSync(part, { level: 9 }).length;
    const overheadBits = 8 * (skeletonDeflated + (half ? deflateRawSync(half.data, { level: 9 }).length : 0) + 2000);
    // only allocation runs the model, and only then is it read whole (ONNX, which protobuf bounds to 2 GB)
    const reallocate = allocating
      ? await allocate(reader, () => readFileSync(input), plans, unique, overheadBits, options)
      : undefined;
    // rate control writes the archive more than once: after the first write the file at `output` is ours
    let written = false;
    const encode = async (): Promise<CompressResult> => {
      const r = await encodeAll(
        reader,
        input,
        output,
        written ? { ...options, force: true } : options,
        plans,
        work,
        unique,
        skeletonName,
        skeleton,
        sourceSha,
        compressedWeights,
        half?.data,
      );
      written = true;
      return r;
    };
    let result = await encode();
    // The allocator's rate is an estimate. Over the target: tighten. Under by more than 5 %: spend the rest,
    // but keep the last archive that fitted if the larger budget overshoots.
    const target = options.targetBpw;
    if (target !== undefined && reallocate) {
      // bisection on the budget scale between the largest that fitted and the smallest that did not
      let fitted = result.bitsPerWeight <= target ? 1 : 0;
      let over = result.bitsPerWeight > target ? 1 : Infinity;
      let best = result.bitsPerWeight <= target ? 1 : undefined;
      let scale = 1;
      for (let attempt = 0; attempt < 4 && (result.bitsPerWeight > target || result.bitsPerWeight < 0.95 * target); attempt++) {
        options.onLog?.(`archive at ${result.bitsPerWeight.toFixed(3)} bits/weight for a target of ${target}: re-allocating`);
        const guess = scale * (target / result.bitsPerWeight);
        scale = Number.isFinite(over) && fitted > 0 ? Math.sqrt(fitted * over) : Math.min(guess, over * 0.97);
        reallocate(scale);
        result = await encode();
        if (result.bitsPerWeight <= target) {
          fitted = Math.max(fitted, scale);
          best = fitted;
        } else over = Math.min(over, scale);
      }
      if (result.bitsPerWeight > target && best !== undefined) {
        reallocate(best);
        result = await encode();
      }
    }
    if (options.targetBpw !== undefined && result.bitsPerWeight > options.targetBpw)
      options.onLog?.(
        `warning: ${result.bitsPerWeight.toFixed(3)} bits/weight is over the target ${options.targetBpw}: the coarsest grids cost more`,
      );
    return result;
  } finally {
    reader.close();
  }
}

/** A piece of encoding work: a whole tensor, or one slice of it. */
interface Unit {
  plan: TensorPlan;
  index: number;
  slice?: SliceSpec;
}

/** Encodes one tensor or slice here (one job) or on a worker thread; the result is the same either way. */
function tensorEncoder(reader: ModelReader, options: CompressOptions, pool?: WorkerPool): (unit: Unit) => Promise<EncodedTensor> {
  const own = { targetSnr: options.targetSnr, nonFinite: options.nonFinite };
  return ({ plan, index, slice }) =>
    pool
      ? pool.run<EncodedTensor>({
          kind: 'encode',
          file: reader.file,
          entry: plan.entry,
          record: plan.record,
          settings: plan.settings!,
          codecs: plan.codecs!.map((c) => ({ name: c.codec.name, options: c.options })),
          auto: plan.auto ?? false,
          index,
          options: own,
          slice,
        })
      : encodeTensor(reader, plan, index, own, slice);
}

/**
 * Encodes the tensors (in parallel, `--jobs`; a tensor larger than the slice size as slices, each its own
 * job) and writes the archive as they finish, in plan order, to a temporary file renamed when complete:
 * memory holds a few tensors or slices at a time, never the archive.
 */
async function encodeAll(
  reader: ModelReader,
  input: string,
  output: string,
  options: CompressOptions,
  plans: TensorPlan[],
  work: TensorPlan[],
  unique: TensorPlan[],
  skeletonName: string,
  skeleton: () => Iterable<Uint8Array>,
  sourceSha: string,
  compressedWeights: number,
  halfData?: Uint8Array,
): Promise<CompressResult> {
  const jobs = options.jobs ?? availableParallelism();
  const sliceWeights = options.sliceWeights ?? DEFAULT_SLICE_WEIGHTS;
  const units: Unit[] = unique.flatMap((plan) => {
    const index = plans.indexOf(plan);
    return slicesOf(plan, sliceWeights)?.map((slice) => ({ plan, index, slice })) ?? [{ plan, index }];
  });
  const pool = poolFor(options.jobs, units.length, compressedWeights);
  const encode = tensorEncoder(reader, options, pool);
  let manifest: Manifest | undefined;
  const entries: Manifest['entries'] = {};
  let archiveBytes = 0;
  let done = 0;
  // the slices of the tensor being committed, and their error sums
  let slices: SliceRecord[] = [];
  let sums: ErrorSums | undefined;
  try {
    await writeAtomic(
      output,
      async (fd) => {
        const zip = new ZipWriter(fd);
        const put = (name: string, data: Uint8Array, method: ZipMethod): void => {
          entries[name] = { sha256: sha256(data), bytes: data.length };
          zip.add(name, data, method);
        };
        await runOrdered(
          units,
          jobs,
          (unit) => {
            options.signal?.throwIfAborted();
            return encode(unit);
          },
          (encoded, { plan, slice }) => {
            // media are compressed already; the exact side values (index deltas, floats) deflate well
            for (const [name, data] of encoded.entries) put(name, data, name.endsWith('.bin') ? 'deflate' : 'store');
            if (!slice) {
              clearCoding(plan.record);
              Object.assign(plan.record, encoded.coded);
            } else {
              slices.push({ row: slice.row, rows: slice.rows, ...encoded.coded });
              sums = sums ? addSums(sums, encoded.sums) : encoded.sums;
              if (slice.row + slice.rows === plan.entry.shape[0]) {
                clearCoding(plan.record);
                Object.assign(plan.record, {
                  slices,
                  stats: statsFromSums(sums),
                  bytes: slices.reduce((n, x) => n + (x.bytes ?? 0), 0),
                });
                slices = [];
                sums = undefined;
              }
            }
            options.onProgress?.({
              done: ++done,
              total: units.length,
              tensor: slice ? `${plan.entry.name} [slice ${slice.k + 1}]` : plan.entry.name,
            });
          },
        );
        for (const p of work) {
          if (!p.record.sameAs) continue;
          const first = plans.find((q) => q.record.key === p.record.sameAs)!;
          p.record.stats = first.record.stats;
          p.record.bytes = 0;
        }
        if (halfData) put(HALF_ENTRY, halfData, 'deflate');
        // a skeleton larger than one part (large kept tensors) is stored in parts, listed in the manifest
        const parts: string[] = [];
        for (const part of skeleton()) {
          const name = parts.length ? `${skeletonName}.${parts.length}` : skeletonName;
          put(name, part, 'deflate');
          parts.push(name);
          options.signal?.throwIfAborted();
        }
        manifest = buildManifest(reader, input, options, plans, skeletonName, sourceSha, entries);
        if (parts.length > 1) manifest.skeletonParts = parts;
        zip.add(MANIFEST_NAME, Buffer.from(JSON.stringify(manifest)), 'deflate');
        zip.finish();
        archiveBytes = zip.bytesWritten;
      },
      { overwrite: options.force },
    );
  } finally {
    await pool?.close();
  }
  return {
    manifest: manifest!,
    archiveBytes,
    compressedWeights,
    bitsPerWeight: compressedWeights ? (archiveBytes * 8) / compressedWeights : 0,
  };
}

function buildManifest(
  reader: ModelReader,
  input: string,
  options: CompressOptions,
  plans: readonly TensorPlan[],
  skeletonName: string,
  sourceSha: string,
  entries: Manifest['entries'],
): Manifest {
  return {
    format: 'nnmedia',
    version: FORMAT_VERSION,
    createdBy: `nnmedia ${VERSION}`,
    source: { format: reader.format, file: basename(input), bytes: statSync(input).size, sha256: sourceSha },
    skeleton: skeletonName,
    options: {
      media: options.media ?? DEFAULTS.media,
      codec: options.codec ?? DEFAULTS.codec,
      bits: options.bits ?? DEFAULTS.bits,
      range: options.range ?? DEFAULTS.range,
      ...(options.quality !== undefined ? { quality: options.quality } : {}),
      ...(options.lossless !== undefined ? { lossless: options.lossless } : {}),
      ...(options.stride !== undefined ? { stride: options.stride } : {}),
      ...(options.clip !== undefined ? { clip: options.clip } : {}),
      ...(options.outliers !== undefined ? { outliers: options.outliers } : {}),
      ...(options.relStep !== undefined ? { step: options.relStep } : {}),
      ...(options.rotate ? { rotate: true } : {}),
      ...(options.targetSnr !== undefined ? { targetSnr: options.targetSnr } : {}),
      ...(options.targetBpw !== undefined ? { targetBpw: options.targetBpw } : {}),
      ...(options.halfKept !== undefined ? { halfKept: options.halfKept } : {}),
      ...(options.maxLoss !== undefined ? { maxLoss: options.maxLoss, task: options.task?.name } : {}),
      nonFinite: options.nonFinite ?? 'error',
      rules: options.rules ?? [],
    },
    tensors: plans.map((p) => p.record),
    entries,
  };
}
