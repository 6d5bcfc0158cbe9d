/**
 * M1: uniform quantization to n bits. [min, max] is split into 2^n equal
 * intervals numbered 0 … 2^n−1; a weight becomes the number of its interval and
 * decodes to the interval's centre. Ranges are per plane (per layer, or per
 * matrix for LSTM/GRU) or per output channel (a group of plane columns).
 *
 * A constant range (min == max) decodes exactly to min. Non-finite weights are
 * either an error or taken out to exact side storage before ranges are found.
 */

import { NonFiniteWeightError, OptionError } from '../errors.js';

export type CodeArray = Uint8Array | Uint16Array | Uint32Array;
export type RangeMode = 'layer' | 'channel';
export type NonFinitePolicy = 'error' | 'keep';

export const CODE_BITS = [8, 16, 24, 32] as const;
export type CodeBits = (typeof CODE_BITS)[number];

export function allocCodes(bits: number, n: number): CodeArray {
  if (bits === 8) return new Uint8Array(n);
  if (bits === 16) return new Uint16Array(n);
  if (bits === 24 || bits === 32) return new Uint32Array(n);
  throw new OptionError(`Expected one of 8, 16, 24, 32 for bits but received ${bits}`);
}

/** Ranges of one plane: one [min, max] pair per channel (one channel in layer mode). */
export interface PlaneRanges {
  mins: Float32Array;
  maxs: Float32Array;
  /** Plane columns per channel (conv: Ky; fc and gate matrices: 1). */
  channelWidth: number;
  /**
   * Encoder only (never stored): the code that decodes to exactly zero in every channel (zero-centred
   * grids). A coarser grid (`stride`) then keeps its levels on it, so zero stays a level.
   */
  zeroCode?: number;
}

/** The first level of a `stride` grid: on the zero code where the ranges have one, else the middle of a stride. */
export function strideOffset(stride: number, zeroCode?: number): number {
  return zeroCode !== undefined ? zeroCode % stride : Math.floor(stride / 2);
}

/**
 * The code of a weight the decoder does not read from its code: one of a constant channel (which decodes to its
 * one value whatever the code), one stored exactly (side data, beyond a step grid) or non-finite. Any code
 * decodes it right, so the encoder writes the cheapest: the zero code where the grid has one (the commonest
 * code of a zero-centred grid, and no sign bit in `zstd-sign`; an output channel pruned to zeros was a stripe
 * of code 0 among codes around 2^(n−1)), else 0 (min/max grids, the method as written).
 */
export function fillCode(zeroCode: number | undefined): number {
  return zeroCode ?? 0;
}

/** Finds the ranges of a rows×cols plane (row-major), skipping non-finite values. */
export function findRanges(values: Float32Array, rows: number, cols: number, mode: RangeMode, channelWidth: number): PlaneRanges {
  const channels = mode === 'layer' ? 1 : Math.ceil(cols / channelWidth);
  const mins = new Float32Array(channels).fill(Infinity);
  const maxs = new Float32Array(channels).fill(-Infinity);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const v = values[base + c];
      if (!Number.isFinite(v)) continue;
      const ch = mode === 'layer' ? 0 : Math.floor(c / channelWidth);
      if (v < mins[ch]) mins[ch] = v;
      if (v > maxs[ch]) maxs[ch] = v;
    }
  }
  for (let ch = 0; ch < channels; ch++) {
    // A channel with no finite value: any range works; use [0, 0] so it decodes to 0 before side data is restored.
    if (mins[ch] > maxs[ch]) mins[ch] = maxs[ch] = 0;
  }
  return { mins, maxs, channelWidth: mode === 'layer' ? cols : channelWidth };
}

/** Each column's range start and span (max − min in double precision, as JS arithmetic on the pair gives). */
export function columnRanges(ranges: PlaneRanges, cols: number): { los: Float64Array; spans: Float64Array } {
  const los = new Float64Array(cols);
  const spans = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    const ch = Math.floor(c / ranges.channelWidth);
    los[c] = ranges.mins[ch];
    spans[c] = ranges.maxs[ch] - ranges.mins[ch];
  }
  return { los, spans };
}

/** How near a rounding boundary quantizePlane's fast products must come before it divides (see there). */
const NEAR = 1e-6;

/**
 * Codes of a plane. With `stride` k > 1 the encoder uses only every k-th code
 * (levels k·j + offset: ⌊k/2⌋, or on the zero code of a zero-centred grid) and picks the level whose M1 decoding is nearest: a
 * coarser grid the decoder needs no word about, since it decodes plain M1
 * codes. Fewer distinct codes is what lets the codecs' entropy coders spend
 * fewer bits where a layer tolerates it. With `bounds` (per column), values outside them get the fill code
 * as non-finite ones do (`fillCode`): weights beyond a step grid, stored exactly (the encoder's one-pass path, fused.ts).
 */
export function quantizePlane(
  values: Float32Array,
  rows: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  stride = 1,
  bounds?: { lo: Float64Array; hi: Float64Array },
): CodeArray {
  const codes = allocCodes(bits, rows * cols);
  const fill = fillCode(ranges.zeroCode);
  if (fill) codes.fill(fill);
  const { lo: min, hi: max } = bounds ?? {
    lo: new Float64Array(cols).fill(-Infinity),
    hi: new Float64Array(cols).fill(Infinity),
  };
  const levels = 2 ** bits;
  const top = levels - 1;
  const half = strideOffset(stride, ranges.zeroCode);
  const topLevel = Math.floor((top - half) / stride);
  const { los, spans } = columnRanges(ranges, cols);
  // At stride > 1 the grid position ((v − lo) / span)·2^n through a reciprocal per column and the level through
  // 1/stride: two multiplications instead of two divisions a weight (issue 16: 17 → 14 ns a weight at stride 3).
  // The products differ from the quotients by a few ulps (< 1e-12 here), so where the level lies within NEAR of a
  // rounding boundary (a half), or is NaN, the weight takes the quotients: the codes are those of the divisions,
  // to the bit. (Spans are float64 differences of float32 bounds, so even a float32-subnormal span has a finite
  // reciprocal here.)
  const scale = Float64Array.from(spans, (span) => levels / span);
  const perStride = 1 / stride;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const lo = los[c];
      const span = spans[c];
      const v = values[base + c];
      // constant channel, side-stored value or beyond the bounds: the fill code (fillCode)
      if (!(span > 0) || !Number.isFinite(v) || v < min[c] || v > max[c]) continue;
      if (stride === 1) {
        // (the division measured as fast here as the product and its check)
        const q = Math.floor(((v - lo) / span) * levels);
        codes[base + c] = q < 0 ? 0 : q > top ? top : q;
      } else {
        // nearest level j: decoded value lo + (k·j + offset + 0.5)·span/2^n
        let y = ((v - lo) * scale[c] - 0.5 - half) * perStride;
        const f = y - Math.floor(y);
        if (!(Math.abs(f - 0.5) >= NEAR)) y = (((v - lo) / span) * levels - 0.5 - half) / stride;
        const j = Math.round(y);
        const jj = j < 0 ? 0 : j > topLevel ? topLevel : j;
        codes[base + c] = jj * stride + half;
      }
    }
  }
  return codes;
}

/** Running sums of an SNR: signal power and squared error over finite values. */
export interface ErrorSums {
  signal: number;
  error: number;
}

/**
 * Adds a plane's signal power and the squared error of its codes on `ranges` at `stride` to `sums`, without
 * writing codes or values: each weight's code is found as quantizePlane finds it and its value as
 * dequantizePlane makes it (a float32), in element order, so the sums are those of the written planes to the
 * last bit (test/rate.test.ts). Non-finite values (side data) are left out.
 */
export function addPlaneError(
  values: Float32Array,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  stride: number,
  sums: ErrorSums,
): void {
  addPlaneErrors(values, cols, bits, ranges, [stride], [sums]);
}

/**
 * `addPlaneError` for several strides in one pass over the plane: each weight's position on the grid is found
 * once and its code and error at every stride from it, each stride's sums in element order (test/rate.test.ts:
 * a batch gives each stride's sums of a pass of its own, and those of the quantized planes, to the last bit). The per-tensor SNR
 * search tries its strides in such batches: a pass a batch instead of a pass a stride.
 */
export function addPlaneErrors(
  values: Float32Array,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  strides: readonly number[],
  sums: readonly ErrorSums[],
): void {
  const levels = 2 ** bits;
  const perLevel = 1 / levels;
  const top = levels - 1;
  const n = strides.length;
  const k = Float64Array.from(strides);
  const halves = Float64Array.from(strides, (st) => strideOffset(st, ranges.zeroCode));
  const topLevels = Float64Array.from(strides, (st, i) => Math.floor((top - halves[i]) / st));
  const errors = Float64Array.from(sums, (x) => x.error);
  const { los, spans } = columnRanges(ranges, cols);
  let signal = sums.length ? sums[0].signal : 0;
  for (let i = 0, c = 0; i < values.length; i++, c = c + 1 === cols ? 0 : c + 1) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    const lo = los[c];
    const span = spans[c];
    signal += v * v;
    if (!(span > 0)) {
      const e = (v - Math.fround(lo)) ** 2;
      for (let s = 0; s < n; s++) errors[s] += e;
      continue;
    }
    const x = ((v - lo) / span) * levels;
    for (let s = 0; s < n; s++) {
      let code: number;
      if (k[s] === 1) {
        const q = Math.floor(x);
        code = q < 0 ? 0 : q > top ? top : q;
      } else {
        const half = halves[s];
        const j = Math.round((x - 0.5 - half) / k[s]);
        code = (j < 0 ? 0 : j > topLevels[s] ? topLevels[s] : j) * k[s] + half;
      }
      // (code + ½)·span/2^bits: a division by a power of two is a multiplication by its inverse, to the last bit
      errors[s] += (v - Math.fround(lo + (code + 0.5) * span * perLevel)) ** 2;
    }
  }
  sums.forEach((x, s) => {
    x.signal = signal;
    x.error = errors[s];
  });
}

/** Values the codes decode to, written into `out` if given (a fresh array otherwise). */
export function dequantizePlane(
  codes: CodeArray,
  rows: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  out = new Float32Array(rows * cols),
): Float32Array {
  const levels = 2 ** bits;
  const { los, spans } = columnRanges(ranges, cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const lo = los[c];
      const span = spans[c];
      out[base + c] = span > 0 ? lo + ((codes[base + c] + 0.5) * span) / levels : lo;
    }
  }
  return out;
}

/** Exact storage of the non-finite weights of a tensor, by flat index. */
export interface NonFiniteSide {
  indices: Uint32Array;
  values: Float32Array;
}

export function collectNonFinite(
  values: Float32Array,
  policy: NonFinitePolicy,
  file: string,
  tensor: string,
): NonFiniteSide | undefined {
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    if (Number.isFinite(values[i])) continue;
    if (policy === 'error') {
      throw new NonFiniteWeightError(
        `weight ${i} is ${values[i]}; pass --non-finite keep to store non-finite weights exactly as side data`,
        { file, tensor },
      );
    }
    count++;
  }
  if (count === 0) return undefined;
  const indices = new Uint32Array(count);
  const side = new Float32Array(count);
  let k = 0;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      indices[k] = i;
      side[k++] = values[i];
    }
  }
  return { indices, values: side };
}

export function restoreNonFinite(values: Float32Array, side: NonFiniteSide | undefined): void {
  if (!side) return;
  for (let k = 0; k < side.indices.length; k++) values[side.indices[k]] = side.values[k];
}
