/**
 * The encoder's one-pass path for fully connected layers on the default grid or a step grid (issue 16): from the tensor's
 * values in file order straight to codes in plane order, and from the codes straight to the error sums, with
 * no float plane laid out, no decoded plane and no scatter back. A matrix's plane is its transpose ([out, in]
 * in the file, `in` rows × `out` columns in the plane) or the file itself ([in, out]).
 *
 * Everything here gives the numbers the general path (prepare → quantize → finish) gives, to the last bit:
 * the same per-channel maxima (a maximum does not depend on order), the same per-channel sums of squares for
 * a step grid's scales (each channel's weights are summed in the same order: a channel is a file row of an
 * [out, in] matrix, a column of an [in, out] one), the same arithmetic per code as
 * `quantizePlane`, the same float32 value per code as `dequantizePlane`, and the error summed in file order
 * as `errorSums` sums it (test/fused.test.ts compares both paths byte for byte).
 */

import type { ErrorSums } from '../eval/metrics.js';
import { LITTLE_ENDIAN } from '../formats/model.js';
import type { FcLayoutSpec, LayoutSpec } from '../layout/types.js';
import { symmetricChannel, symmetricFromMaxAbs, symmetricTarget } from '../quantize/ranges.js';
import { channelScales, columnMajorScales, gridBounds, stepGrid, type MeasuredScales } from '../quantize/step.js';
import { storedSteps, type PlaneQuantization } from '../quantize/tensor.js';
import {
  type CodeArray,
  type PlaneRanges,
  allocCodes,
  columnRanges,
  dequantizePlane,
  fillCode,
  quantizePlane,
  strideOffset,
  type RangeMode,
} from '../quantize/uniform.js';
import type { TensorSettings } from './options.js';

/**
 * NNMEDIA_GENERAL_PATH=1 sends every tensor the general way, in the encode and in rate control's measurements (to
 * compare both paths' archives: test/fused.test.ts).
 */
export const generalPathOnly = (): boolean => process.env.NNMEDIA_GENERAL_PATH === '1';

/**
 * Whether a unit can take the one-pass path: an fc layout, per-channel ranges on the default grid or a step
 * grid, lossless codecs, no outliers set aside, no rotation, no compensation, no per-tensor SNR search.
 */
export function fusedFits(
  layout: LayoutSpec,
  settings: TensorSettings,
  lossless: boolean,
  extras: { rotate?: boolean; compensation: boolean },
): layout is FcLayoutSpec {
  if (generalPathOnly()) return false;
  // the default grid per channel; a step grid per channel or per layer
  const grid =
    (settings.quantizer === 'rtn' && settings.relStep === undefined && settings.range === 'channel') ||
    (settings.quantizer === 'step' &&
      settings.relStep !== undefined &&
      (settings.range === 'channel' || settings.range === 'layer'));
  return (
    layout.kind === 'fc' &&
    lossless &&
    grid &&
    !settings.clip &&
    settings.outliers === 0 &&
    settings.targetSnr === undefined &&
    (settings.bits === 8 || settings.bits === 16) &&
    !extras.rotate &&
    !extras.compensation
  );
}

/** An fc tensor's plane quantized in one pass, and its weights beyond a step grid (file order, stored exactly). */
export interface FusedQuantization {
  readonly plane: PlaneQuantization;
  /** File positions of the weights beyond the step grid, ascending (none on the default grid). */
  readonly beyond: Uint32Array;
  /**
   * What measureFc gives of these codes, where the pass that found them measured them too ([out, in], 8 bits),
   * and the codes' histogram (codeEntropyBits' counts).
   */
  readonly measured?: { sums: ErrorSums; zeros: Uint32Array; histogram: Float64Array };
}

/**
 * The plane's codes and ranges of an fc tensor on the symmetric per-channel grid (no `relStep`) or the step
 * grid, or undefined where the general path must run: a non-finite weight (side data), or (default grid) a
 * channel with no exact step.
 */
export function quantizeFc(
  values: Float32Array,
  layout: FcLayoutSpec,
  bits: number,
  stride: number,
  relStep?: number,
  range: RangeMode = 'channel',
  scales?: MeasuredScales,
): FusedQuantization | undefined {
  const { nin, nout } = layout;
  if (values.length !== nin * nout) return undefined;
  // an [out, in] matrix's grid finds non-finite weights as it reads them (its maxima, its scales' first pass)
  if (layout.order === 'in_out' && relStep !== undefined)
    for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return undefined;
  // [out, in] at 8 bits: codes and error sums in one pass over the file (measured), and on the default grid each
  // channel's range found in that pass too, from its row while the row is in cache; otherwise codes, measured later
  const measuring = layout.order === 'out_in' && bits === 8;
  let measuredPass: ReturnType<typeof quantizeMeasured>;
  let grid: FusedGrid | undefined;
  if (measuring && relStep === undefined) {
    const { ranges, steps } = symmetricTarget(nout, 1, 8);
    measuredPass = quantizeMeasured(values, nout, nin, ranges, stride, undefined, steps);
    grid = measuredPass && { ranges, ...storedSteps(steps) };
  } else
    grid = relStep === undefined ? symmetricGrid(values, layout, bits) : stepGridOf(values, layout, bits, relStep, range, scales);
  if (!grid) return undefined;
  const { ranges, rangeDtype, stepBytes, bounds } = grid;
  // the step grid codes with every code (stride 1), as quantizePlanes does; [in, out]: the plane is the file
  const k = relStep === undefined ? stride : 1;
  if (measuring && !measuredPass) measuredPass = quantizeMeasured(values, nout, nin, ranges, k, bounds);
  // (the measured pass lists the weights beyond the grid as it meets them, in the same file order)
  const beyond = measuredPass?.beyond ?? (bounds ? beyondGrid(values, layout, bounds) : new Uint32Array(0));
  const codes =
    measuredPass?.codes ??
    (layout.order === 'out_in'
      ? quantizeTransposed(values, nout, nin, bits, ranges, k, bounds)
      : quantizePlane(values, nin, nout, bits, ranges, k, bounds));
  let restored: Float32Array | undefined;
  const plane = Object.defineProperty(
    { codes, ranges, rangeDtype, stepBytes, ...(bounds ? { beyond: beyond.length } : {}) },
    'restored',
    {
      // what the codes decode to, with the weights beyond the grid exact (plane order), as quantizePlanes gives it
      get: () => {
        if (restored) return restored;
        restored = dequantizePlane(codes, nin, nout, bits, ranges);
        for (const i of beyond) {
          const [r, c] = layout.order === 'out_in' ? [i % nin, Math.floor(i / nin)] : [Math.floor(i / nout), i % nout];
          restored[r * nout + c] = values[i];
        }
        return restored;
      },
      enumerable: true,
    },
  ) as PlaneQuantization;
  return {
    plane,
    beyond,
    ...(measuredPass
      ? { measured: { sums: measuredPass.sums, zeros: measuredPass.zeros, histogram: measuredPass.histogram } }
      : {}),
  };
}

/** A grid's ranges as the manifest stores them, and (step grid) each channel's interval of weights on it. */
interface FusedGrid {
  ranges: PlaneRanges;
  rangeDtype: PlaneQuantization['rangeDtype'];
  stepBytes?: Uint8Array;
  bounds?: { lo: Float64Array; hi: Float64Array };
}

/** The symmetric per-channel grid of the default (ranges.ts symmetricRanges) from each channel's largest |w|. */
function symmetricGrid(values: Float32Array, layout: FcLayoutSpec, bits: number): FusedGrid | undefined {
  const { nin, nout } = layout;
  const maxAbs = new Float64Array(nout);
  if (layout.order === 'out_in')
    // channel j is the file's row j; a NaN is found on the way (no pass of its own), an infinity by its maximum
    for (let j = 0; j < nout; j++) {
      const m = rowMaxAbs(values, j * nin, nin);
      if (!(m < Infinity)) return undefined;
      maxAbs[j] = m;
    }
  else {
    for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return undefined;
    for (let i = 0, c = 0; i < values.length; i++, c = c + 1 === nout ? 0 : c + 1) {
      const a = Math.abs(values[i]);
      if (a > maxAbs[c]) maxAbs[c] = a;
    }
  }
  const sym = symmetricFromMaxAbs(maxAbs, 1, bits);
  return sym && { ranges: sym.ranges, ...storedSteps(sym.steps) };
}

/**
 * The step grid (step.ts) at `relStep`: each channel's robust RMS summed along its weights in plane-row order, or
 * (layer mode) the plane's, from per-column sums added in column order. An [out, in] matrix takes the scales rate
 * control measured on these values (`measured`: columnMajorScales' own, found only where every weight is finite)
 * where they are given.
 */
function stepGridOf(
  values: Float32Array,
  layout: FcLayoutSpec,
  bits: number,
  relStep: number,
  range: RangeMode,
  measured?: MeasuredScales,
): FusedGrid | undefined {
  const { nin, nout } = layout;
  const shape = { rows: nin, cols: nout, channelWidth: 1, label: 'matrix' };
  // [in, out]: the plane is the file itself; [out, in]: channel j is the file's row j, summed in the same order
  let scales = layout.order === 'out_in' ? measured?.[range] : undefined;
  if (scales) {
    // (the measurements' own: the same values, so the same channels)
    if (scales.rms.length !== (range === 'channel' ? nout : 1))
      throw new Error(`measured scales for ${scales.rms.length} channels`);
  } else if (layout.order === 'in_out') scales = channelScales(values, shape, range);
  else {
    const found = columnMajorScales(values, nin, nout, range === 'channel', range === 'layer');
    // a non-finite weight: the general path's (side data)
    if (found.finite[1] !== values.length) return undefined;
    scales = found[range]!;
  }
  const grid = stepGrid(scales, relStep, bits);
  const rangeDtype = grid.stepBytes ? 'step8' : grid.f16 ? 'float16' : 'float32';
  return { ranges: grid.ranges, rangeDtype, stepBytes: grid.stepBytes, bounds: gridBounds(grid, nout, bits) };
}

/** File positions of the weights outside their channel's bounds, ascending. */
function beyondGrid(values: Float32Array, layout: FcLayoutSpec, bounds: { lo: Float64Array; hi: Float64Array }): Uint32Array {
  const { nin, nout } = layout;
  const { lo, hi } = bounds;
  const out: number[] = [];
  if (layout.order === 'out_in')
    for (let c = 0, i = 0; c < nout; c++) {
      const a = lo[c];
      const b = hi[c];
      for (let end = i + nin; i < end; i++) if (values[i] < a || values[i] > b) out.push(i);
    }
  else
    for (let i = 0, c = 0; i < values.length; i++, c = c + 1 === nout ? 0 : c + 1)
      if (values[i] < lo[c] || values[i] > hi[c]) out.push(i);
  return Uint32Array.from(out);
}

const BLOCK = 64;

/**
 * Codes of the plane (cols × rows: plane row i, column j) of a file matrix of `channels` rows × `cols`
 * columns, read along the file's rows and written down the plane's columns, in 64 × 64 blocks: each code as
 * quantizePlane finds it (values outside `bounds` and constant channels: the fill code).
 */
function quantizeTransposed(
  values: Float32Array,
  channels: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  stride: number,
  bounds?: { lo: Float64Array; hi: Float64Array },
): CodeArray {
  const codes = allocCodes(bits, channels * cols);
  const fill = fillCode(ranges.zeroCode);
  if (fill) codes.fill(fill);
  const levels = 2 ** bits;
  const top = levels - 1;
  const half = strideOffset(stride, ranges.zeroCode);
  const topLevel = Math.floor((top - half) / stride);
  const { los, spans } = columnRanges(ranges, channels);
  for (let j0 = 0; j0 < channels; j0 += BLOCK) {
    const j1 = Math.min(channels, j0 + BLOCK);
    for (let i0 = 0; i0 < cols; i0 += BLOCK) {
      const i1 = Math.min(cols, i0 + BLOCK);
      for (let j = j0; j < j1; j++) {
        const lo = los[j];
        const span = spans[j];
        if (!(span > 0)) continue;
        const a = bounds ? bounds.lo[j] : -Infinity;
        const b = bounds ? bounds.hi[j] : Infinity;
        for (let i = i0, src = j * cols + i0; i < i1; i++, src++) {
          const v = values[src];
          if (v < a || v > b) continue; // beyond the grid: the fill code, stored exactly
          if (stride === 1) {
            const q = Math.floor(((v - lo) / span) * levels);
            codes[i * channels + j] = q < 0 ? 0 : q > top ? top : q;
          } else {
            const k = Math.round((((v - lo) / span) * levels - 0.5 - half) / stride);
            codes[i * channels + j] = (k < 0 ? 0 : k > topLevel ? topLevel : k) * stride + half;
          }
        }
      }
    }
  }
  return codes;
}

/** Bytes of codes quantizeMeasured holds in file order at a time (a block of channels). */
const MEASURE_BLOCK_BYTES = 2 ** 17;

/** How close to a code's edge (in codes) measureRowBounded's product must land for the quotient to decide instead. */
const EDGE = 1e-9;

/**
 * quantizeTransposed and measureFc of 8-bit codes in one pass (and the codes' histogram): a block of channels (file rows) at a time, each
 * channel's codes found along its row into a file-order buffer and measured there (the error summed in file
 * order, as measureFc sums it: the same sums to the bit), then the block's codes written down the plane's
 * columns. One read of the values instead of two, and no gather of the plane's codes back into file order.
 * With `steps`, the default grid is found here too, a channel at a time (its row's largest |w|, then its step
 * and range written to `steps` and `ranges`): the row is quantized while it is still in cache, where a pass of
 * its own read the whole tensor once more. Undefined where that grid cannot be made (symmetricGrid's cases).
 */
function quantizeMeasured(
  values: Float32Array,
  channels: number,
  cols: number,
  ranges: PlaneRanges,
  stride: number,
  bounds?: { lo: Float64Array; hi: Float64Array },
  steps?: Float32Array,
): { codes: Uint8Array; sums: ErrorSums; zeros: Uint32Array; histogram: Float64Array; beyond: Uint32Array } | undefined {
  const levels = 256;
  const histogram = new Float64Array(levels);
  const codes = allocCodes(8, channels * cols) as Uint8Array;
  const half = strideOffset(stride, ranges.zeroCode);
  const fill = fillCode(ranges.zeroCode);
  const { los, spans } = columnRanges(ranges, channels);
  // (a multiple of four channels where it can be: transposeBlock's words)
  const fit = Math.floor(MEASURE_BLOCK_BYTES / cols);
  const block = Math.max(1, Math.min(channels, fit >= 4 ? fit - (fit % 4) : fit));
  const run = new Uint8Array(block * cols);
  const words = codes.byteOffset % 4 === 0 ? new Uint32Array(codes.buffer, codes.byteOffset, codes.length >>> 2) : undefined;
  const table = new Float32Array(levels);
  const sums = new Float64Array(3); // the largest error, the squared error and the signal power, in file order
  const zeros: number[] = [];
  const beyond: number[] = [];
  for (let j0 = 0, src = 0; j0 < channels; j0 += block) {
    const j1 = Math.min(channels, j0 + block);
    for (let j = j0; j < j1; j++, src += cols) {
      if (steps) {
        // the default grid (symmetricGrid, channel by channel); a NaN or an infinity leaves the tensor to the
        // general path, as there
        const m = rowMaxAbs(values, src, cols);
        if (!(m < Infinity) || !symmetricChannel(steps, ranges, j, m, 8)) return undefined;
        los[j] = ranges.mins[j];
        spans[j] = ranges.maxs[j] - ranges.mins[j];
      }
      const lo = los[j];
      const span = spans[j];
      const live = span > 0;
      // the float32 dequantizePlane writes for each code (measureFc's table)
      for (let q = 0; q < levels; q++) table[q] = Math.fround(live ? lo + ((q + 0.5) * span) / levels : lo);
      const row = { values, src, cols, lo, span, table, run, at: (j - j0) * cols, histogram, sums, zeros, beyond, fill };
      if (live && stride === 1) measureRowBounded(row, bounds ? bounds.lo[j] : -Infinity, bounds ? bounds.hi[j] : Infinity);
      else measureRow(row, live, stride, half, bounds ? bounds.lo[j] : -Infinity, bounds ? bounds.hi[j] : Infinity);
    }
    // the block's codes down the plane's columns: plane row i holds channel j's code at i·channels + j
    transposeBlock(run, codes, words, j1 - j0, cols, channels, j0);
  }
  return {
    codes,
    sums: { maxAbs: sums[0], se: sums[1], sp: sums[2], n: values.length },
    zeros: Uint32Array.from(zeros),
    histogram,
    beyond: Uint32Array.from(beyond),
  };
}

/**
 * A block of `n` channels' codes (`run`, channel after channel, `cols` each) into the plane, down its columns from
 * column `j0`: plane row i holds channel j's code at i·channels + j. Four channels at a time as one 32-bit word
 * where the plane's rows and the block start on a word (little-endian: the first channel in the lowest byte), a
 * quarter of the stores of a byte at a time.
 */
function transposeBlock(
  run: Uint8Array,
  codes: Uint8Array,
  words: Uint32Array | undefined,
  n: number,
  cols: number,
  channels: number,
  j0: number,
): void {
  const quads = LITTLE_ENDIAN && words && channels % 4 === 0 && j0 % 4 === 0 ? n >>> 2 : 0;
  for (let i = 0; i < cols; i++) {
    const row = i * channels + j0;
    let k = i;
    for (let t = 0, w = row >>> 2; t < quads; t++, w++, k += 4 * cols)
      words![w] = run[k] | (run[k + cols] << 8) | (run[k + 2 * cols] << 16) | (run[k + 3 * cols] << 24);
    for (let t = 4 * quads; t < n; t++, k += cols) codes[row + t] = run[k];
  }
}

/** The largest |w| of `count` values from `start`; NaN where one is NaN. */
function rowMaxAbs(values: Float32Array, start: number, count: number): number {
  let m = 0;
  for (let i = start, end = start + count; i < end; i++) {
    const a = Math.abs(values[i]);
    if (a > m) m = a;
    else if (a !== a) return NaN;
  }
  return m;
}

/**
 * One channel's row for quantizeMeasured: its weights from `src`, its codes into `run` from `at`, counted in
 * `histogram`, and its error added to `sums` in file order (exact zeros that do not decode to 0 into `zeros`).
 * Each row is a small function of its own: V8 optimizes a loop called per row as a whole function, where one
 * loop among several inside the tensor's pass was compiled on stack, again and again (measured 25 % slower).
 */
interface MeasuredRow {
  values: Float32Array;
  src: number;
  cols: number;
  lo: number;
  span: number;
  table: Float32Array;
  run: Uint8Array;
  at: number;
  histogram: Float64Array;
  sums: Float64Array;
  zeros: number[];
  /** File positions of the weights beyond a step grid's bounds (measureRow), ascending. */
  beyond: number[];
  /** The code of a weight beyond them, and of a dead channel's (fillCode). */
  fill: number;
}

/**
 * A live channel at stride 1 (the default grid, whose bounds are ±Infinity, or a step grid's `a`–`b`): measureRow's
 * arithmetic for that case (the weights beyond: the fill code, exact; a NaN level, from a range that overflowed
 * float32: code 0), with no branch on the channel's kind.
 */
function measureRowBounded(r: MeasuredRow, a: number, b: number): void {
  const { values, cols, lo, span, table, run, histogram, sums, zeros, beyond, fill } = r;
  let maxAbs = sums[0];
  let se = sums[1];
  let sp = sums[2];
  const inv = 256 / span;
  for (let i = 0, k = r.at, src = r.src; i < cols; i++, k++, src++) {
    const v = values[src];
    let code = fill;
    let restored = v;
    if (v < a || v > b) beyond.push(src);
    else {
      // ((v − lo) / span)·256 as a product: within a few ulps of the quotient (3.3e−16 of it), so the same code
      // unless it lands next to a code's edge, where the quotient decides (a division a weight cost ~0.5 ns)
      const x = (v - lo) * inv;
      let q = Math.floor(x);
      if (x - q < EDGE || q + 1 - x < EDGE) q = Math.floor(((v - lo) / span) * 256);
      code = q >= 0 ? (q > 255 ? 255 : q) : 0;
      restored = table[code];
    }
    run[k] = code;
    histogram[code]++;
    let d = 0;
    if (v === 0) {
      if (restored !== 0) zeros.push(src);
    } else d = Math.abs(v - restored);
    if (d > maxAbs) maxAbs = d;
    se += d * d;
    sp += v * v;
  }
  sums[0] = maxAbs;
  sums[1] = se;
  sums[2] = sp;
}

/**
 * The other channels (a live one at stride 1 is measureRowBounded's): dead ones (the fill code) and strides above 1,
 * with a step grid's bounds `a`–`b` (weights beyond: the fill code, exact).
 */
function measureRow(r: MeasuredRow, live: boolean, stride: number, half: number, a: number, b: number): void {
  const { values, cols, lo, span, table, run, histogram, sums, zeros, beyond, fill } = r;
  const topLevel = Math.floor((255 - half) / stride);
  let maxAbs = sums[0];
  let se = sums[1];
  let sp = sums[2];
  for (let i = 0, k = r.at, src = r.src; i < cols; i++, k++, src++) {
    const v = values[src];
    let code = fill;
    let restored: number;
    if (v < a || v > b) {
      restored = v; // beyond the grid: the fill code, stored exactly
      beyond.push(src);
    } else {
      if (live) {
        const n = Math.round((((v - lo) / span) * 256 - 0.5 - half) / stride);
        code = (n < 0 ? 0 : n > topLevel ? topLevel : n) * stride + half;
      }
      // NaN (a step grid whose range overflowed float32: ±Inf bounds): code 0, as a Uint8Array stores it
      if (code !== code) code = 0;
      restored = table[code];
    }
    run[k] = code;
    histogram[code]++;
    if (v === 0 && restored !== 0) zeros.push(src);
    // an exact zero is put back exactly (withExactZeros): no error there
    const d = v === 0 ? 0 : Math.abs(v - restored);
    if (d > maxAbs) maxAbs = d;
    se += d * d;
    sp += v * v;
  }
  sums[0] = maxAbs;
  sums[1] = se;
  sums[2] = sp;
}

/**
 * What the general path's finish measures, from the decoded codes of an fc plane: the error sums of the
 * decoded weights against the file's values in file order (as errorSums), where the weights beyond a step
 * grid (`beyond`, ascending) are exact, and the positions of exact zeros that do not decode to 0 (none on
 * these grids: the zero code is exactly 0; kept for safety).
 */
export function measureFc(
  values: Float32Array,
  codes: CodeArray,
  layout: FcLayoutSpec,
  bits: number,
  ranges: PlaneRanges,
  beyond: Uint32Array = new Uint32Array(0),
): { sums: ErrorSums; zeros: Uint32Array } {
  const { nin, nout } = layout;
  const levels = 2 ** bits;
  const { los, spans } = columnRanges(ranges, nout);
  // file order: [out, in] walks channel c's row of the file (plane column c, a plane row at a time); [in, out]
  // is the plane itself; each code's value the float32 dequantizePlane writes.
  const transposed = layout.order === 'out_in';
  const decodedAt = (c: number, code: number): number => {
    const span = spans[c];
    return Math.fround(span > 0 ? los[c] + ((code + 0.5) * span) / levels : los[c]);
  };
  let maxAbs = 0;
  let se = 0;
  let sp = 0;
  const zeros: number[] = [];
  let j = 0;
  let exactAt = beyond.length ? beyond[0] : -1;
  // (an [out, in] matrix at 8 bits is measured by quantizeMeasured as its codes are found: here the others, and
  // the tests' reference)
  const outer = transposed ? nout : nin;
  const inner = transposed ? nin : nout;
  const kOuter = transposed ? 1 : nout;
  const kInner = transposed ? nout : 1;
  for (let o = 0, i = 0; o < outer; o++)
    for (let n = 0, k = o * kOuter; n < inner; n++, i++, k += kInner) {
      const a = values[i];
      let b = decodedAt(transposed ? o : n, codes[k]);
      if (i === exactAt) {
        b = a;
        exactAt = ++j < beyond.length ? beyond[j] : -1;
      }
      if (a === 0 && b !== 0) zeros.push(i);
      const d = a === 0 ? 0 : Math.abs(a - b);
      if (d > maxAbs) maxAbs = d;
      se += d * d;
      sp += a * a;
    }
  return { sums: { maxAbs, se, sp, n: values.length }, zeros: Uint32Array.from(zeros) };
}
