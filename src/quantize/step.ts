/**
 * The step grid: instead of stretching 2^n codes over [min, max], the encoder
 * picks a step Δ per channel (a fraction of the channel's standard deviation,
 * or of the layer's in layer mode) and stores the M1 range that puts code
 * 2^(n−1) exactly on zero: lo = −(2^(n−1) + ½)·Δ, hi = (2^(n−1) − ½)·Δ.
 * With an entropy-coding codec unused codes cost nothing, so the step alone
 * sets the rate; every channel's codes centre on the same code, so they share
 * one distribution; weights beyond the grid are stored exactly. Δ is rounded
 * to m·2^e with m ∈ {4…7} so lo and hi are exact in float16: the stored range
 * is exactly the one used, and zero stays exactly zero.
 */

import { float16ToFloat32, float32ToFloat16 } from '../formats/model.js';
import type { PlaneShape } from '../layout/types.js';
import type { PlaneRanges, RangeMode } from './uniform.js';

/** Δ rounded down to m·2^e, m ∈ {4, 5, 6, 7}. */
export function snapStep(step: number): number {
  if (!(step > 0) || !Number.isFinite(step)) return 0;
  const e = Math.floor(Math.log2(step)) - 2;
  const m = Math.max(4, Math.min(7, Math.floor(step / 2 ** e)));
  return m * 2 ** e;
}

/** Steps m·2^e (m ∈ 4…7, e ∈ −40…22) fit one byte: (e + 40) << 2 | (m − 4); 255 means a zero step (all-zero channel). */
export const ZERO_STEP_BYTE = 255;

export function stepToByte(step: number): number | undefined {
  if (step === 0) return ZERO_STEP_BYTE;
  const e = Math.floor(Math.log2(step)) - 2;
  const m = step / 2 ** e;
  if (!Number.isInteger(m) || m < 4 || m > 7 || e < -40 || e > 22) return undefined;
  const b = ((e + 40) << 2) | (m - 4);
  return b === ZERO_STEP_BYTE ? undefined : b;
}

export function byteToStep(b: number): number {
  return b === ZERO_STEP_BYTE ? 0 : ((b & 3) + 4) * 2 ** ((b >> 2) - 40);
}

/** The M1 range of a step: code 2^(bits−1) decodes to exactly zero (a zero step: the constant +0). */
export function rangeOfStep(step: number, bits: number): [number, number] {
  if (step === 0) return [0, 0];
  const half = 2 ** (bits - 1);
  return [-(half + 0.5) * step, (half - 0.5) * step];
}

/**
 * Explicit mantissa bits a step keeps. Its M1 range must be exact in float32: lo = −(2^(bits−1) + ½)·Δ needs
 * bits + 1 significant bits beside Δ's, and float32 has 24 (so at most 22 − bits). Then the decoder's
 * lo + (c + ½)·span/2^bits is exactly (c − 2^(bits−1))·Δ: code 2^(bits−1) gives exactly 0, every level is
 * exact. At most 11: the step is then at most 2^−11 larger than max|w|/127, so the largest weight lands within
 * 0.06 of a step of its level (≤ 0.02 dB on a 9-weight depthwise kernel), and a stored step (step24) has 8
 * bits of entropy fewer than a float32. (With 8 bits the largest weight could land half a step away:
 * measured −0.64 dB on 9-weight depthwise kernels, where the extremes weigh.)
 */
export function exactStepBits(bits: number): number {
  return Math.min(11, 22 - bits);
}

/**
 * Δ rounded UP to the precision exactStepBits allows (never smaller, so a channel's extremes stay on the
 * grid), or undefined when no such step exists in float32 (codes of 22 bits and more, steps beyond
 * float32's range).
 */
export function exactStep(step: number, bits: number): number | undefined {
  if (step === 0) return 0;
  const p = exactStepBits(bits);
  if (!(step > 0) || !Number.isFinite(step) || p < 1) return undefined;
  // a channel of (sub)normal dust: the smallest step kept well inside float32's normal range (its weights
  // decode to 0, off by less than 2^−100)
  if (step < MIN_EXACT_STEP) return MIN_EXACT_STEP;
  const e = Math.floor(Math.log2(step));
  const unit = 2 ** (e - p);
  let s = Math.ceil(step / unit) * unit;
  if (s < step) s += unit;
  const [lo, hi] = rangeOfStep(s, bits);
  // normal float32 only, and the range exactly as computed (subnormal or overflowing steps are not)
  if (Math.fround(s) !== s || Math.fround(lo) !== lo || Math.fround(hi) !== hi || !Number.isFinite(hi)) return undefined;
  return s;
}

/** The smallest step of an exact grid: far above float32's subnormals, so every level is a normal float. */
export const MIN_EXACT_STEP = 2 ** -100;

/**
 * Steps stored as the top three bytes of their float32 (`step24`; exactStep leaves the low byte zero), in
 * planes: every step's byte 1, then every byte 2, then every byte 3 (sign and exponent), so the deflated
 * manifest finds the runs of exponents.
 */
export function stepsTo24(steps: Float32Array): Uint8Array {
  const n = steps.length;
  const bits = new Uint32Array(Float32Array.from(steps).buffer);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    out[i] = (b >>> 8) & 255;
    out[n + i] = (b >>> 16) & 255;
    out[2 * n + i] = b >>> 24;
  }
  return out;
}

export function stepsFrom24(bytes: Uint8Array): Float32Array {
  const n = Math.floor(bytes.length / 3);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = ((bytes[i] << 8) | (bytes[n + i] << 16) | (bytes[2 * n + i] << 24)) >>> 0;
  return new Float32Array(bits.buffer);
}

/**
 * Steps stored in 20 bits (`step20`, format version 4): exactStep keeps at most 11 mantissa bits, so a step's
 * float32 has its low 12 bits zero and its top 20 bits say it all. Stored in planes, as `step24`: every
 * step's top byte (sign and exponent), then every second byte, then the 4 bits above the zero ones, two
 * steps a byte (the first in the low half). 2.5 bytes a channel instead of 3, and the deflated ranges ~12 %
 * smaller (measured on Silero VAD v4 and BlazeFace: the third plane of `step24` held 4 bits in 8).
 */
export function stepsTo20(steps: Float32Array): Uint8Array | undefined {
  const n = steps.length;
  const bits = new Uint32Array(Float32Array.from(steps).buffer);
  const out = new Uint8Array(2 * n + ((n + 1) >> 1));
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    if ((b & 0xfff) !== 0) return undefined;
    out[i] = b >>> 24;
    out[n + i] = (b >>> 16) & 255;
    out[2 * n + (i >> 1)] |= ((b >>> 12) & 15) << ((i & 1) * 4);
  }
  return out;
}

/** The channels `step20` bytes of this length hold: 2n + ⌈n/2⌉ bytes for n channels. */
export function step20Channels(bytes: number): number {
  return Math.floor((2 * bytes) / 5);
}

export function stepsFrom20(bytes: Uint8Array): Float32Array {
  const n = step20Channels(bytes.length);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++)
    bits[i] = ((bytes[i] << 24) | (bytes[n + i] << 16) | (((bytes[2 * n + (i >> 1)] >>> ((i & 1) * 4)) & 15) << 12)) >>> 0;
  return new Float32Array(bits.buffer);
}

function exactF16(v: number): boolean {
  return float16ToFloat32(float32ToFloat16(v)) === v;
}

/** A plane's robust per-channel RMS about zero, what a step grid's steps are fractions of (any relStep). */
export interface ChannelScales {
  readonly rms: Float64Array;
  /** Plane columns per channel (all of them in layer mode). */
  readonly width: number;
}

/**
 * An [out, in] matrix's (or slice's) scales in each range mode measured, as `columnMajorScales` finds them for its
 * values, where every value is finite: what rate control measured, handed to the encoder so it need not find them
 * again (four passes over the values an encode: three sums and a count of exact zeros).
 */
export interface MeasuredScales {
  readonly channel?: ChannelScales;
  readonly layer?: ChannelScales;
  /** The file rows they were measured on (a slice's, or the whole tensor's), checked where they are handed out. */
  readonly row?: number;
  readonly rows?: number;
}

/**
 * Per channel (one channel in layer mode), the RMS about zero over |v| ≤ 3·RMS, recomputed twice so one outlier
 * does not coarsen its whole channel. Non-finite values are left out, and so are exact zeros where they are most of
 * a channel's weights (`prunedZeros`).
 */
export function channelScales(plane: Float32Array, shape: PlaneShape, mode: RangeMode): ChannelScales {
  const both = planeScales(plane, shape, mode === 'channel', mode === 'layer');
  return (mode === 'layer' ? both.layer : both.channel)!;
}

/**
 * channelScales of a plane in either range mode or both, both from the same three sweeps of the plane (and one
 * counting its exact zeros; each sweep adds every value to the sums of each mode whose bound it is within: the
 * same sums, in the same order, as one mode alone).
 *
 * Channel mode: per channel, its sums row by row across its columns. Layer mode: each pass's sums taken per plane
 * column (down the column, row by row) and then added over the columns in order (`columnTotals`), an order that
 * does not depend on how the plane is stored: the fused path sums a transposed plane (a column is a file row)
 * along the file's rows and gets the same scale to the bit. Where a channel is one column, the first pass's
 * channel sums are the layer's column sums and are taken once.
 */
export function planeScales(
  plane: Float32Array,
  shape: PlaneShape,
  channel: boolean,
  layer: boolean,
): { channel?: ChannelScales; layer?: ChannelScales } {
  const { rows, cols } = shape;
  const width = shape.channelWidth;
  const channels = Math.ceil(cols / width);
  // exact zeros per column (a sweep under a bound of 0: v² ≤ 0 holds for ±0 alone), then per channel and in the
  // plane; after the first pass (every finite value counted) only the pruned ones are kept, and taken from every
  // count (prunedZeros)
  const colZeros = new Float64Array(cols);
  sweepColumns(plane, rows, cols, new Float64Array(cols), new Float64Array(cols), colZeros);
  const zeros = new Float64Array(channel ? channels : 0);
  if (channel) for (let c = 0; c < cols; c++) zeros[Math.floor(c / width)] += colZeros[c];
  let layerZeros = colZeros.reduce((n, z) => n + z, 0);
  const sqs = new Float64Array(channel ? channels : 0);
  const counts = new Float64Array(channel ? channels : 0);
  // the first pass's bound keeps every finite value (a float32's square is far below it) and no infinity
  const bound = new Float64Array(channel ? channels : 0).fill(Number.MAX_VALUE);
  let layerBound = Number.MAX_VALUE;
  const colSqs = new Float64Array(layer ? cols : 0);
  const colCounts = new Float64Array(layer ? cols : 0);
  // the layer's bound, for every column (sweepColumns takes one a column)
  const layerBounds = new Float64Array(layer ? cols : 0);
  let layerSq = 0;
  let layerN = 0;
  for (let pass = 0; pass < 3; pass++) {
    if (channel && layer && width === 1) {
      // a channel of one column: the first pass's channel sums are the column sums
      if (pass === 0) {
        sweepColumns(plane, rows, cols, bound, sqs, counts);
        colSqs.set(sqs);
        colCounts.set(counts);
      } else sweepColumnsAndLayer(plane, rows, cols, bound, layerBound, sqs, counts, colSqs, colCounts);
    } else {
      if (channel)
        if (width === 1) sweepColumns(plane, rows, cols, bound, sqs, counts);
        else sweepChannels(plane, rows, cols, width, bound, sqs, counts);
      if (layer) sweepColumns(plane, rows, cols, layerBounds.fill(layerBound), colSqs, colCounts);
    }
    if (channel && pass < 2)
      for (let ch = 0; ch < channels; ch++) {
        if (pass === 0) zeros[ch] = prunedZeros(zeros[ch], counts[ch]);
        const n = counts[ch] - zeros[ch];
        bound[ch] = n ? 9 * (sqs[ch] / n) : 0;
      }
    if (layer) {
      [layerSq, layerN] = columnTotals(colSqs, colCounts);
      if (pass === 0) layerZeros = prunedZeros(layerZeros, layerN);
      layerN -= layerZeros;
      layerBound = layerN ? 9 * (layerSq / layerN) : 0;
    }
  }
  return {
    // RMS about zero: the grid is centred on zero, and so is its scale
    ...(channel
      ? {
          channel: {
            rms: Float64Array.from(sqs, (q, ch) => (counts[ch] - zeros[ch] ? Math.sqrt(q / (counts[ch] - zeros[ch])) : 0)),
            width,
          },
        }
      : {}),
    ...(layer ? { layer: { rms: Float64Array.of(layerN ? Math.sqrt(layerSq / layerN) : 0), width: cols } } : {}),
  };
}

// planeScales' sweeps, each its own function so its loop stays tight: a value counts where v² ≤ its bound (NaN
// never does; infinities only under an infinite bound, which is never used)

/** Channels of `width` columns: sums per channel, row by row (the channel counted along the row, not divided out). */
function sweepChannels(
  plane: Float32Array,
  rows: number,
  cols: number,
  width: number,
  bound: Float64Array,
  sqs: Float64Array,
  counts: Float64Array,
): void {
  sqs.fill(0);
  counts.fill(0);
  for (let r = 0, i = 0; r < rows; r++)
    for (let c = 0, ch = 0, k = 0; c < cols; c++, i++) {
      const v = plane[i];
      const v2 = v * v;
      if (v2 <= bound[ch]) {
        sqs[ch] += v2;
        counts[ch]++;
      }
      if (++k === width) {
        k = 0;
        ch++;
      }
    }
}

/** Sums per column under a bound per column. */
function sweepColumns(
  plane: Float32Array,
  rows: number,
  cols: number,
  bound: Float64Array,
  sqs: Float64Array,
  counts: Float64Array,
): void {
  sqs.fill(0);
  counts.fill(0);
  for (let r = 0, i = 0; r < rows; r++)
    for (let c = 0; c < cols; c++, i++) {
      const v = plane[i];
      const v2 = v * v;
      if (v2 <= bound[c]) {
        sqs[c] += v2;
        counts[c]++;
      }
    }
}

/** Both at once: sums per column under its own bound, and per column under the layer's. */
function sweepColumnsAndLayer(
  plane: Float32Array,
  rows: number,
  cols: number,
  bound: Float64Array,
  layerBound: number,
  sqs: Float64Array,
  counts: Float64Array,
  colSqs: Float64Array,
  colCounts: Float64Array,
): void {
  sqs.fill(0);
  counts.fill(0);
  colSqs.fill(0);
  colCounts.fill(0);
  for (let r = 0, i = 0; r < rows; r++)
    for (let c = 0; c < cols; c++, i++) {
      const v = plane[i];
      const v2 = v * v;
      if (v2 <= bound[c]) {
        sqs[c] += v2;
        counts[c]++;
      }
      if (v2 <= layerBound) {
        colSqs[c] += v2;
        colCounts[c]++;
      }
    }
}

/**
 * planeScales of a plane of one-column channels stored column by column (`values` holds column c at c·rows: a
 * PyTorch [out, in] matrix is the transpose of its plane, each file row a plane column): the same sums in the same
 * order, to the bit, each column's taken in registers along its run. Also the first pass's totals (every finite
 * value's square, and their count, added per column and then over the columns: `columnPower`).
 */
export function columnMajorScales(
  values: Float32Array,
  rows: number,
  cols: number,
  channel: boolean,
  layer: boolean,
): { channel?: ChannelScales; layer?: ChannelScales; finite: [number, number] } {
  const sqs = new Float64Array(cols);
  const counts = new Float64Array(cols);
  const colSqs = new Float64Array(cols);
  const colCounts = new Float64Array(cols);
  // pass 1: every finite value (a float32's square is far below MAX_VALUE; an infinity's is not); from here on
  // `counts` and the layer's count leave out the exact zeros (planeScales' doc), which every sum still counts
  const zeros = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    [sqs[c], counts[c]] = boundedSum(values, c * rows, rows, Number.MAX_VALUE);
    zeros[c] = boundedSum(values, c * rows, rows, 0)[1]; // ±0 alone (planeScales)
  }
  colSqs.set(sqs);
  colCounts.set(counts);
  const finite = columnTotals(sqs, counts);
  const layerZeros = prunedZeros(
    zeros.reduce((n, z) => n + z, 0),
    finite[1],
  );
  for (let c = 0; c < cols; c++) {
    zeros[c] = prunedZeros(zeros[c], counts[c]);
    counts[c] -= zeros[c];
  }
  let [layerSq, layerN] = finite;
  layerN -= layerZeros;
  for (let pass = 1; pass < 3; pass++) {
    const layerBound = layerN ? 9 * (layerSq / layerN) : 0;
    for (let c = 0; c < cols; c++) {
      const start = c * rows;
      if (channel && layer) {
        let q = 0;
        let n = 0;
        let lq = 0;
        let ln = 0;
        const bound = counts[c] ? 9 * (sqs[c] / counts[c]) : 0;
        for (let i = start, end = i + rows; i < end; i++) {
          const v2 = values[i] * values[i];
          if (v2 <= bound) {
            q += v2;
            n++;
          }
          if (v2 <= layerBound) {
            lq += v2;
            ln++;
          }
        }
        sqs[c] = q;
        counts[c] = n - zeros[c];
        colSqs[c] = lq;
        colCounts[c] = ln;
      } else if (channel) {
        [sqs[c], counts[c]] = boundedSum(values, start, rows, counts[c] ? 9 * (sqs[c] / counts[c]) : 0);
        counts[c] -= zeros[c];
      } else [colSqs[c], colCounts[c]] = boundedSum(values, start, rows, layerBound);
    }
    if (layer) {
      [layerSq, layerN] = columnTotals(colSqs, colCounts);
      layerN -= layerZeros;
    }
  }
  return {
    ...(channel
      ? { channel: { rms: Float64Array.from(sqs, (q, c) => (counts[c] ? Math.sqrt(q / counts[c]) : 0)), width: 1 } }
      : {}),
    ...(layer ? { layer: { rms: Float64Array.of(layerN ? Math.sqrt(layerSq / layerN) : 0), width: cols } } : {}),
    finite,
  };
}

/**
 * The exact zeros of a channel that its scale (and markOutliers' σ) leaves out: all of them where they are most
 * of its finite weights (a pruned channel, whose zeros lie on every zero-centred grid whatever its step: counted, the zeros of a tensor
 * pruned to 90–99 % pulled the scale under every weight it kept, all beyond 3·RMS in the second sum and a scale of 0
 * in the third, so every weight it kept was stored exactly), else none (a dense channel's few zeros are values
 * like the others: a Fourier basis's zero rows). The sums still count them (their squares add nothing); the count
 * without them divides.
 */
export function prunedZeros(zeros: number, finite: number): number {
  return 2 * zeros > finite ? zeros : 0;
}

/** The squares of values[start, start + n) that are at most `bound`, summed in order, and their count. */
function boundedSum(values: Float32Array, start: number, n: number, bound: number): [number, number] {
  let q = 0;
  let k = 0;
  for (let i = start, end = start + n; i < end; i++) {
    const v2 = values[i] * values[i];
    if (v2 <= bound) {
      q += v2;
      k++;
    }
  }
  return [q, k];
}

/**
 * A plane's finite values' squares and their count, summed per column (down the column) and then over the columns
 * in order: the order columnMajorScales' first pass takes for a plane stored the other way round.
 */
export function columnPower(plane: Float32Array, rows: number, cols: number): [number, number] {
  const sqs = new Float64Array(cols);
  const counts = new Float64Array(cols);
  sweepColumns(plane, rows, cols, new Float64Array(cols).fill(Number.MAX_VALUE), sqs, counts);
  return columnTotals(sqs, counts);
}

/** The layer's sums of squares and counts: its column sums added in column order (planeScales' layer mode). */
export function columnTotals(sqs: Float64Array, counts: Float64Array): [number, number] {
  let q = 0;
  let n = 0;
  for (let c = 0; c < sqs.length; c++) {
    q += sqs[c];
    n += counts[c];
  }
  return [q, n];
}

/** The step grid of a plane at one relStep: per channel its step, its M1 range, and how the steps are stored. */
export interface StepGrid {
  readonly steps: Float64Array;
  readonly ranges: PlaneRanges;
  /** Whether every range is exact in float16. */
  readonly f16: boolean;
  /** One byte a step (`step8`), when every step has one. */
  readonly stepBytes?: Uint8Array;
}

export function stepGrid(scales: ChannelScales, relStep: number, bits: number): StepGrid {
  const channels = scales.rms.length;
  const half = 2 ** (bits - 1);
  const mins = new Float32Array(channels);
  const maxs = new Float32Array(channels);
  const steps = new Float64Array(channels);
  let f16 = true;
  for (let ch = 0; ch < channels; ch++) {
    const step = snapStep(scales.rms[ch] * relStep);
    steps[ch] = step;
    [mins[ch], maxs[ch]] = rangeOfStep(step, bits);
    if (step > 0 && (mins[ch] !== -(half + 0.5) * step || !exactF16(mins[ch]) || !exactF16(maxs[ch]))) f16 = false;
  }
  const stepBytes = new Uint8Array(channels);
  let byteable = true;
  steps.forEach((st, ch) => {
    const b = stepToByte(st);
    if (b === undefined) byteable = false;
    else stepBytes[ch] = b;
  });
  return {
    steps,
    ranges: { mins, maxs, channelWidth: scales.width, zeroCode: half },
    f16,
    ...(byteable ? { stepBytes } : {}),
  };
}

/**
 * Per column of a plane, the interval of weights on its channel's grid: within half a step of the outermost
 * reconstruction points. A weight outside it is stored exactly; a channel of step zero gives [−0, 0], so only its
 * exact zeros are on the grid.
 */
export function gridBounds(grid: StepGrid, cols: number, bits: number): { lo: Float64Array; hi: Float64Array } {
  const half = 2 ** (bits - 1);
  const width = grid.ranges.channelWidth;
  const lo = new Float64Array(cols);
  const hi = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    const step = grid.steps[Math.floor(c / width)];
    lo[c] = -half * step - step / 2;
    hi[c] = (half - 1) * step + step / 2;
  }
  return { lo, hi };
}

/**
 * The finite weights of a plane beyond its grid (gridBounds): counted, and marked NaN in place (to be stored
 * exactly) when `mark`.
 */
export function weightsBeyond(plane: Float32Array, shape: PlaneShape, grid: StepGrid, bits: number, mark: boolean): number {
  const { rows, cols } = shape;
  const { lo, hi } = gridBounds(grid, cols, bits);
  let marked = 0;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const v = plane[i];
      if (Number.isFinite(v) && (v < lo[c] || v > hi[c])) {
        if (mark) plane[i] = NaN;
        marked++;
      }
    }
  return marked;
}

/**
 * Step ranges for one plane and the values beyond the grid (marked NaN in place,
 * to be stored exactly). Returns the ranges and whether they are exact in float16.
 */
export function stepRanges(
  plane: Float32Array,
  shape: PlaneShape,
  mode: RangeMode,
  relStep: number,
  bits: number,
  markBeyond = true,
): { ranges: PlaneRanges; f16: boolean; marked: number; stepBytes?: Uint8Array } {
  const grid = stepGrid(channelScales(plane, shape, mode), relStep, bits);
  const marked = markBeyond ? weightsBeyond(plane, shape, grid, bits, true) : 0;
  return { ranges: grid.ranges, f16: grid.f16, marked, stepBytes: grid.stepBytes };
}
