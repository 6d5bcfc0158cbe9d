/**
 * One unit of encoding work (a tensor, or one slice of it), stage by stage: read → prepare → quantize →
 * encode media → decode back and measure → its coding record (fully connected layers on the default or a
 * step grid: read → codes → encode media, measured from the codes, the kept media's round trip checked;
 * fused.ts). Runs here or on a worker thread with the same result. Per-tensor rate control lives here: the coarsest grid (lossless codecs) or the lowest
 * quality (lossy codecs) whose decoded weights keep an SNR target.
 */

import { getCodec } from '../codecs/registry.js';
import type { Codec, CodecOptions } from '../codecs/types.js';
import { CodecError } from '../errors.js';
import { type ErrorSums, errorSums, statsFromSums } from '../eval/metrics.js';
import type { ModelReader } from '../formats/model.js';
import { planeOffsets, planeShapes, scatterPlanes, sliceLayout } from '../layout/planes.js';
import { dequantizeInto } from '../quantize/dequantize.js';
import type { FcLayoutSpec } from '../layout/types.js';
import { encodeExactValues } from '../quantize/exact.js';
import {
  type CodeArray,
  type NonFiniteSide,
  allocCodes,
  collectNonFinite,
  dequantizePlane,
  restoreNonFinite,
} from '../quantize/uniform.js';
import { unrotatePlane } from '../transform/hadamard.js';
import type { PlaneRecord } from '../archive/manifest.js';
import { encodePlanes, type EncodedMedia } from './media.js';
import { type FusedQuantization, fusedFits, measureFc, quantizeFc } from './fused.js';
import { prepareTensor, withExactZeros, withoutZeroChannels, type PreparedTensor } from './prepare.js';
import { modelGridUnit } from './model-grid.js';
import { coarsestStride, quantizeTensor, snrOf, type QuantizedTensor } from './quantize.js';
import { codedRecord } from './records.js';
import { codeCounts, codeEntropyBits, entropyOf } from '../rate/entropy.js';
import { refineTrigger, type CodedPlan, type EncodedTensor, type EncodeUnit, type UnitCompensation } from './stages.js';

/**
 * The folder of a tensor's (or slice's) entries in the archive: `t/<index>/` (the manifest names the tensor;
 * short names because every entry's name is stored twice in the ZIP: 100+ bytes an entry with full tensor
 * names, measured 6 KB on Silero VAD v4's 59 entries).
 */
export function entryFolder(plan: CodedPlan, slice?: { k: number }): string {
  return `t/${plan.index}${slice ? `/s${slice.k}` : ''}`;
}

/** Lays out, quantizes, encodes one tensor (or one slice of it) and decodes it again to measure the error. */
export async function encodeUnit(reader: ModelReader, unit: EncodeUnit): Promise<EncodedTensor> {
  const { plan, slice, stats } = unit;
  const { entry, settings } = plan;
  const ctx = {
    file: reader.file,
    tensor: slice ? `${entry.name} [rows ${slice.row}–${slice.row + slice.rows - 1}]` : entry.name,
  };
  const sliced = slice ? sliceLayout(plan.layout, entry.shape, slice.rows) : plan.layout;
  if (!sliced) throw new Error(`slice ${slice!.k} of ${entry.name} has no layout`);
  const read = slice ? reader.readRows(entry.key, slice.row, slice.rows) : reader.read(entry.key);
  const codecs = plan.codecs.map((c) => ({ codec: getCodec(c.name, ctx), options: c.options }));
  // a weight the graph rounds onto int8 itself: coded as those integers, on its own grid (model-grid.ts)
  const grid = modelGridUnit(reader, unit, read, sliced);
  // output channels pruned to zeros are left out of the planes (layout/channels.ts): the planes hold the others
  const { values, layout, zeroChannels, zeros } = grid ?? withoutZeroChannels(plan, read, sliced, unit.compensation);
  const lossless = codecs.every((c) => c.options.lossless);
  const target = settings.targetSnr;
  // fully connected layers on the default or a step grid: one pass from the file's values to codes (fused.ts); it finds
  // no non-finite weight, or leaves the tensor to the general path
  // (rate control measured the scales of the same channels: measure.ts leaves the same ones out)
  const fused =
    !grid && fusedFits(layout, settings, lossless, { rotate: settings.rotate, compensation: unit.compensation !== undefined })
      ? quantizeFc(values, layout, settings.bits, settings.stride, settings.relStep, settings.range, unit.scales)
      : undefined;
  // (on the values as the file holds them, so that an error names the weight's index in the file)
  if (!fused) collectNonFinite(read, settings.nonFinite, reader.file, ctx.tensor); // throws under the 'error' policy
  const prepared: PreparedTensor = fused
    ? { layout, planes: [], shapes: planeShapes(layout) }
    : { ...prepareTensor(values, layout, settings, plan.index), ...(grid ? { channelSteps: grid.channelSteps } : {}) };
  const stride = target !== undefined && lossless ? coarsestStride(prepared, settings, target, stats) : settings.stride;
  const quantized: QuantizedTensor = fused
    ? { planes: [fused.plane], stride }
    : quantizeTensor(prepared, values, settings, stride, stats, unit.compensation);
  const codes = quantized.planes.map((q) => q.codes);
  const encode = (i: number, quality?: number, effort?: number): Promise<EncodedMedia> =>
    encodePlanes(
      codecs[i].codec,
      { ...codecs[i].options, ...(quality !== undefined ? { quality } : {}), ...(effort !== undefined ? { effort } : {}) },
      codes,
      prepared.shapes,
      settings.bits,
      layout,
      settings.block,
      ctx,
    );
  let best: EncodedMedia | undefined;
  let measured: Measured | undefined;
  if (target !== undefined && !lossless)
    best = await lowestQuality(codecs[0].codec.quality!, target, settings.bits, prepared, quantized, encode);
  else {
    // the first candidate's encode runs on a native thread while this thread measures the one-pass path's
    // error: the codes are lossless, so the decoded ones will be these (checked below). (Every candidate at
    // once measured no faster with two workers, and held more memory.)
    const first = encode(0);
    first.catch(() => {}); // awaited below
    if (fused) measured = measureFused(values, fused, layout as FcLayoutSpec, settings.bits);
    let entropy: number | undefined; // the codes' order-0 entropy in bits, once for every candidate
    let peak: number | undefined; // the share of the most frequent code, counted where a retry asks for it
    const peakOf = (): number => (peak ??= codesPeak(codes, fused));
    for (let i = 0; i < codecs.length; i++) {
      let media = await (i === 0 ? first : encode(i));
      const refine = plan.codecs[i].refine;
      if (refine) {
        entropy ??= codesEntropy(codes, fused);
        const trigger = refineTrigger(refine, media.bytes * 8, entropy, settings.bits);
        // a skewed retry is judged on a sample, and only where it could beat the candidates before it
        const toBeat = best ? best.bytes - (plan.codecs[i].margin ?? 0) : Infinity;
        if (
          trigger &&
          (trigger === 'structure' ||
            (await refinePays(codecs[i], codes, settings.bits, refine.effort, media.bytes, toBeat, peakOf)))
        ) {
          const again = await encode(i, undefined, refine.effort);
          if (again.bytes < media.bytes) media = again;
        }
      }
      if (!best || media.bytes + (plan.codecs[i].margin ?? 0) < best.bytes) best = media;
    }
  }
  if (!best) throw new CodecError('no codec could encode the tensor', ctx);
  // the kept candidate decoded and checked against its codes (lossless: exactly these)
  const decoded = await best.decoded();
  const m = measured ?? measure(layout, values, prepared, quantized, decoded, settings.bits);
  // the channels left out are exact: no error, no signal, but weights all the same
  return finish(
    plan,
    unit,
    layout,
    values,
    prepared,
    quantized,
    best,
    { ...m, sums: { ...m.sums, n: m.sums.n + zeros } },
    zeroChannels,
  );
}

/**
 * A skewed retry (RefineRule) of more than REFINE_SAMPLE_ABOVE codes is decided on a sample of them first:
 * REFINE_SAMPLE codes in REFINE_SAMPLE_RUNS runs spread evenly over them, coded at the candidate's own effort and at
 * the retry's (a sample of 2^18 codes cost the 1.2 GB model's `--step 0.25` 13.3 → 19.0 s, one of 2^16 a quarter of
 * that).
 * The whole is coded again only where the sample shrank by REFINE_SAMPLE_GAIN and the candidate, shrunk as much
 * (give or take REFINE_SAMPLE_SLACK), would beat the best candidate before it; fewer codes are simply tried (a
 * sample of a small tensor misjudges it: PaddleOCR rec's step-grid tensors of 43–230 k codes shrink by 1.5–3 % more
 * whole than in samples of an eighth). Measured (2026-12-07): the 1.2 GB synthetic model's down projections are
 * written at 1.024× H by zstd-sign and zstd-19 wins nothing there (the default encode 11 → 56 s while every such
 * tensor was tried); its step-grid codes (`--codec auto --step 0.25`) are written at 1.06–1.15× H and shrink by
 * 1–10 % at level 19, but PNG already codes them smaller (15–25 → 350–485 s for 38 bytes); pruned tensors' samples
 * shrink by 9–19 %, as the whole tensors do, and PNG's Huffman codes spend at least a bit a code on them.
 */
const REFINE_SAMPLE_ABOVE = 1 << 18;
/**
 * The share of the codes one code must take for a skewed retry of many codes to be tried at all: a pruned tensor's
 * zero code takes 0.5 and more where half its weights are zeros; dense grids' most frequent code 0.03–0.1 (the 1.2
 * GB model's heavy-tailed down projections, its `--step 0.25` codes), where a sample would be coded twice for nothing.
 * Coarser steps crowd the zero code more (estimated ~0.2 of Gaussian weights' codes at `--step 0.5`, ~0.38 at
 * `--step 1`): there the sample decides.
 */
const REFINE_SAMPLE_PEAK = 0.25;
const REFINE_SAMPLE = 1 << 16;
const REFINE_SAMPLE_RUNS = 8;
const REFINE_SAMPLE_GAIN = 0.01;
/**
 * How much more than its sample the whole may shrink (a larger window, tables fitted to more codes): the
 * 50 %-pruned tensor of test/fused.test.ts (524,288 codes) shrinks to 0.907 of zstd-3's size, its sample to 0.916,
 * and comes 0.4 % under PNG; the synthetic model's step-grid codes were estimated 2.4–3 % over PNG and never came
 * under it.
 */
const REFINE_SAMPLE_SLACK = 0.015;

/**
 * Whether retrying `codes` (written in `written` bytes by `candidate`; the most frequent code `peak()` of them) at
 * `effort` pays: where they are many (REFINE_SAMPLE_ABOVE), only with one code taking a good part of them
 * (REFINE_SAMPLE_PEAK), judged on a sample, and where the result could come under `toBeat` bytes.
 */
export async function refinePays(
  candidate: { codec: Codec; options: CodecOptions },
  codes: readonly CodeArray[],
  bits: number,
  effort: number,
  written: number,
  toBeat: number,
  peak: () => number,
): Promise<boolean> {
  const total = codes.reduce((n, c) => n + c.length, 0);
  if (total <= REFINE_SAMPLE_ABOVE) return true;
  if (peak() < REFINE_SAMPLE_PEAK) return false;
  const sample = refineSample(codes, bits, total);
  const plane = { width: sample.length, height: 1, bits, data: sample };
  try {
    const first = await candidate.codec.encode(plane, candidate.options);
    const again = await candidate.codec.encode(plane, { ...candidate.options, effort });
    const ratio = again.length / first.length;
    return ratio < 1 - REFINE_SAMPLE_GAIN && written * ratio * (1 - REFINE_SAMPLE_SLACK) < toBeat;
  } catch {
    return true; // the whole retry says what failed, with the tensor's name
  }
}

/** REFINE_SAMPLE of `total` codes (planes one after another) in REFINE_SAMPLE_RUNS runs spread evenly over them. */
export function refineSample(codes: readonly CodeArray[], bits: number, total: number): CodeArray {
  const run = REFINE_SAMPLE / REFINE_SAMPLE_RUNS;
  const sample = allocCodes(bits, REFINE_SAMPLE);
  for (let k = 0; k < REFINE_SAMPLE_RUNS; k++) {
    // the run's start in the planes one after another, spread evenly from the first code to the last run's
    let at = Math.floor((k * (total - run)) / (REFINE_SAMPLE_RUNS - 1));
    let p = 0;
    while (at >= codes[p].length) at -= codes[p++].length;
    for (let filled = 0; filled < run; p++, at = 0) {
      const take = Math.min(run - filled, codes[p].length - at);
      sample.set(codes[p].subarray(at, at + take), k * run + filled);
      filled += take;
    }
  }
  return sample;
}

/** The share of the codes the most frequent one takes (8-bit codes; 0 for others, which no skewed rule retries). */
function codesPeak(codes: readonly CodeArray[], fused: FusedQuantization | undefined): number {
  if (!codes.every((c): c is Uint8Array => c instanceof Uint8Array)) return 0;
  const counts = fused?.measured?.histogram && codes.length === 1 ? fused.measured.histogram : codeCounts(codes);
  const n = codes.reduce((m, c) => m + c.length, 0);
  return n > 0 ? Math.max(...counts) / n : 0;
}

/** The codes' order-0 entropy in bits (codeEntropyBits), from the one-pass path's histogram where it counted one. */
function codesEntropy(codes: readonly CodeArray[], fused: FusedQuantization | undefined): number {
  const h = fused?.measured?.histogram;
  return h && codes.length === 1 ? entropyOf(h, codes[0].length) : codes.reduce((n, c) => n + codeEntropyBits(c), 0);
}

/**
 * Per-tensor rate control for lossy codecs: the lowest quality whose decoded weights keep the SNR target. The
 * search runs on how good a setting is: a CRF (`lowerIsBetter`) is searched from its largest number down (the
 * search took CRF 51, the worst, for the best, and every tensor of an h264 archive under --target-snr 30 came out
 * at 0–9 dB).
 */
async function lowestQuality(
  scale: { min: number; max: number; lowerIsBetter?: boolean },
  target: number,
  bits: number,
  prepared: PreparedTensor,
  quantized: QuantizedTensor,
  encode: (codec: number, quality: number) => Promise<EncodedMedia>,
): Promise<EncodedMedia> {
  const { shapes } = prepared;
  // g runs from the worst setting (scale.min) to the best (scale.max); the codec's own number for it
  const setting = (g: number): number => (scale.lowerIsBetter ? scale.min + scale.max - g : g);
  const trial = async (g: number): Promise<{ media: EncodedMedia; snr: number }> => {
    const media = await encode(0, setting(g));
    const restored = (await media.decoded()).map((c, p) =>
      dequantizePlane(c, shapes[p].rows, shapes[p].cols, bits, quantized.planes[p].ranges),
    );
    return { media, snr: snrOf(prepared.planes, restored) };
  };
  let lo = scale.min;
  let hi = scale.max;
  let top = await trial(hi);
  if (top.snr < target) return top.media;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const t = await trial(mid);
    if (t.snr >= target) {
      hi = mid;
      top = t;
    } else lo = mid + 1;
  }
  return top.media;
}

/** The unit's entries and record: the chosen media, the exact side values and the measured error. */
function finish(
  plan: CodedPlan,
  unit: EncodeUnit,
  layout: CodedPlan['layout'],
  values: Float32Array,
  prepared: PreparedTensor,
  quantized: QuantizedTensor,
  best: EncodedMedia,
  measured: Measured,
  zeroChannels?: Uint8Array,
): EncodedTensor {
  const { settings } = plan;
  const { shapes, seeds } = prepared;
  const dir = entryFolder(plan, unit.slice);
  const entries: Array<[string, Uint8Array]> = [];
  const planes: PlaneRecord[] = [];
  let bytes = 0;
  for (let p = 0; p < shapes.length; p++) {
    const { data, record } = best.planes[p];
    const names = [...new Set(record.tiles.map((t) => t.entry))];
    names.forEach((suffix, k) => {
      entries.push([`${dir}/${suffix}`, data[k]]);
      bytes += data[k].length;
    });
    planes.push({ ...record, tiles: record.tiles.map((t) => ({ ...t, entry: `${dir}/${t.entry}` })) });
  }
  const { side, sums } = measured;
  let exact: { entry: string; count: number } | undefined;
  if (side) {
    exact = { entry: `${dir}/exact.bin`, count: side.indices.length };
    const data = encodeExactValues(side);
    entries.push([exact.entry, data]);
    bytes += data.length;
  }
  const coded = codedRecord({
    layout,
    ...(zeroChannels ? { zeroChannels } : {}),
    settings,
    quant: quantized.planes,
    stride: quantized.stride,
    seeds,
    modelGrid: prepared.channelSteps !== undefined,
    media: best,
    auto: plan.auto,
    planes,
    exact,
    stats: statsFromSums(sums),
    bytes,
  });
  return { entries, coded, sums, ...(quantized.compensated ? { compensation: compensationSummary(quantized.compensated) } : {}) };
}

/** The decoded weights against the original ones: error sums, and the exact side values to store. */
interface Measured {
  side?: NonFiniteSide;
  sums: ErrorSums;
}

/**
 * The one-pass path's measurement (fused.ts): error sums in file order, and the side values to store: the
 * weights beyond a step grid, and any exact zero that does not decode to 0, in file order.
 */
function measureFused(values: Float32Array, fused: FusedQuantization, layout: FcLayoutSpec, bits: number): Measured {
  const { codes, ranges } = fused.plane;
  const { sums, zeros } = fused.measured ?? measureFc(values, codes, layout, bits, ranges, fused.beyond);
  const a = fused.beyond;
  if (a.length + zeros.length === 0) return { sums };
  // both ascending and apart (a weight beyond the grid is exact, so never a missed zero): merged
  const indices = new Uint32Array(a.length + zeros.length);
  for (let i = 0, j = 0, k = 0; k < indices.length; k++)
    indices[k] = j >= zeros.length || (i < a.length && a[i] < zeros[j]) ? a[i++] : zeros[j++];
  return { sums, side: { indices, values: Float32Array.from(indices, (i) => values[i]) } };
}

/** Decodes the codes back to weights in file order and measures them against the original values. */
function measure(
  layout: CodedPlan['layout'],
  values: Float32Array,
  prepared: PreparedTensor,
  quantized: QuantizedTensor,
  decoded: readonly CodeArray[],
  bits: number,
): Measured {
  const { shapes, seeds } = prepared;
  // an fc plane (not rotated): decoded straight into file order by the decoder's one pass, into the working
  // plane's memory (no longer needed), where laying it out again took a tensor-sized array more per job
  const plane = prepared.planes[0] as Float32Array<ArrayBuffer> | undefined;
  if (layout.kind === 'fc' && !seeds && shapes.length === 1 && plane?.length === values.length) {
    const { rows, cols } = shapes[0];
    const offsets = planeOffsets(layout, 0);
    const restored = plane;
    dequantizeInto(decoded[0], rows, cols, bits, quantized.planes[0].ranges, offsets.rows, offsets.cols, {
      dtype: 'float32',
      data: restored,
    });
    restoreNonFinite(restored, quantized.side);
    const side = withExactZeros(values, restored, quantized.side);
    return { side, sums: errorSums(values, restored) };
  }
  const restoredPlanes: Float32Array[] = [];
  for (let p = 0; p < shapes.length; p++) {
    const s = shapes[p];
    // the working plane is not needed any more: decode into it rather than into a new array
    const back = dequantizePlane(
      decoded[p],
      s.rows,
      s.cols,
      bits,
      quantized.planes[p].ranges,
      prepared.planes[p] as Float32Array<ArrayBuffer>,
    );
    if (seeds) unrotatePlane(back, s.rows, s.cols, seeds[p]);
    restoredPlanes.push(back);
  }
  const restored = scatterPlanes(restoredPlanes, layout, new Float32Array(values.length));
  restoreNonFinite(restored, quantized.side);
  const side = withExactZeros(values, restored, quantized.side);
  return { side, sums: errorSums(values, restored) };
}

/** Planes compensated, in part, or not, and why (for the compress log). */
function compensationSummary(planes: NonNullable<QuantizedTensor['compensated']>): UnitCompensation {
  const reasons = [...new Set(planes.flatMap((c) => (c.reason ? [c.reason] : [])))];
  return {
    gptq: planes.filter((c) => c.method === 'gptq').length,
    mixed: planes.filter((c) => c.method === 'mixed').length,
    rtn: planes.filter((c) => c.method === 'rtn').length,
    ...(reasons.length ? { reason: reasons.join('; ') } : {}),
  };
}
