/**
 * The quantization error of every stride of a code grid from one pass over a tensor (issue 16: rate-control
 * measurements from histograms instead of a pass per candidate).
 *
 * A weight's place on the grid is x = (v − lo) / span · 2^bits. At stride k its code is decided by which side of
 * the rounding boundaries x lies, and every boundary of every integer stride (on a grid offset by an integer, as
 * `strideOffset` gives) is a multiple of ½. So one histogram of x in bins of ½, holding per bin the sums of
 * w, w·u and w·u² (u = x − bin start, w = the column's (span / 2^bits)²), gives every stride's error sum at once:
 * all weights of a bin take the same code, and (x − a)² = u² + 2u(b − a) + (b − a)² for the bin start b and the
 * decoded position a = code + ½.
 *
 * This is an estimate of `addPlaneErrors`' exact sums, which decode in float32 and add in element order. `bound`
 * says how far it can be from them: the float32 rounding of each decoded value (at most 2^−24 of the largest
 * magnitude of its column), the float64 sums, and weights whose x lies within rounding of a bin edge (where the two
 * neighbouring codes decode equally far from x, so the choice moves the error by next to nothing). A caller
 * compares the estimate with its threshold and measures exactly only when the threshold lies within the bound: the
 * same decision as the exact sums, without their pass per stride.
 */

import { columnRanges, strideOffset, type PlaneRanges } from './uniform.js';

/** The histogram of one tensor's planes that share a zero code. */
export interface ErrorHistogram {
  readonly bits: number;
  readonly zeroCode: number | undefined;
  /**
   * Bins of ½ from x = 0 to 2^bits, plus one below (x < 0) and one above (x ≥ 2^bits): bin m + 1, in `lanes`
   * copies (consecutive weights go to different copies, so that adding to a bin does not wait for the last add to
   * it), each bin's Σ w, Σ w·u, Σ w·u² side by side: [(bin · lanes + lane) · 3 + 0, 1, 2].
   */
  readonly sums: Float64Array;
  readonly lanes: number;
  /** Σ w · (largest magnitude of the column)² · 2^−48: the float32 rounding of the decoded values, squared. */
  rounding: number;
  /** Error of columns whose range is a single value (every stride decodes them the same). */
  constant: number;
  /** Weights counted (finite ones). */
  count: number;
}

/** Copies of each bin (8-bit codes: 4 KB of bins each; 16-bit codes have bins enough to spread the adds). */
const LANES = 4;

export function newErrorHistogram(bits: number, zeroCode: number | undefined): ErrorHistogram {
  const bins = 2 * 2 ** bits + 2;
  const lanes = bits <= 8 ? LANES : 1;
  return {
    bits,
    zeroCode,
    sums: new Float64Array(bins * lanes * 3),
    lanes,
    rounding: 0,
    constant: 0,
    count: 0,
  };
}

/** Adds a plane (rows × cols, row-major) to the histogram; returns the plane's Σ v² in element order. */
export function addToErrorHistogram(h: ErrorHistogram, values: Float32Array, cols: number, ranges: PlaneRanges): number {
  const levels = 2 ** h.bits;
  const last = 2 * levels + 1;
  const { los, spans } = columnRanges(ranges, cols);
  const weights = new Float64Array(cols);
  const scales = new Float64Array(cols);
  const magnitudes = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    weights[c] = (spans[c] / levels) ** 2;
    scales[c] = levels / spans[c];
    magnitudes[c] = Math.max(Math.abs(los[c]), Math.abs(los[c] + spans[c])) ** 2 * 2 ** -48;
  }
  const { sums, lanes } = h;
  const mask = lanes - 1;
  const top = 2 * levels;
  let signal = 0;
  let rounding = 0;
  let constant = 0;
  let count = 0;
  for (let i = 0, c = 0; i < values.length; i++, c = c + 1 === cols ? 0 : c + 1) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    signal += v * v;
    count++;
    const lo = los[c];
    if (!(spans[c] > 0)) {
      constant += (v - Math.fround(lo)) ** 2;
      continue;
    }
    // addPlaneErrors' x to within an ulp or two (a product for its quotient): a weight that lands in the next bin
    // sits on a rounding boundary, where both codes decode equally far from it
    const x = (v - lo) * scales[c];
    const twice = Math.floor(2 * x);
    const m = twice < 0 ? 0 : twice >= top ? last : twice + 1;
    const u = x - (m === 0 ? 0 : m === last ? levels : twice * 0.5);
    const wc = weights[c];
    const at = ((m * lanes) | (i & mask)) * 3;
    sums[at] += wc;
    sums[at + 1] += wc * u;
    sums[at + 2] += wc * u * u;
    rounding += magnitudes[c];
  }
  h.rounding += rounding;
  h.constant += constant;
  h.count += count;
  return signal;
}

/** The estimated error sum at `stride`, and how far the exact sum can be from it. */
export function histogramError(h: ErrorHistogram, stride: number): { error: number; bound: number } {
  const levels = 2 ** h.bits;
  const top = levels - 1;
  const last = 2 * levels + 1;
  const half = strideOffset(stride, h.zeroCode);
  const topLevel = Math.floor((top - half) / stride);
  let error = h.constant;
  let weight = 0;
  const { sums, lanes } = h;
  for (let m = 0; m <= last; m++) {
    let wm = 0;
    let wu = 0;
    let wuu = 0;
    for (let lane = 0, at = m * lanes * 3; lane < lanes; lane++, at += 3) {
      wm += sums[at];
      wu += sums[at + 1];
      wuu += sums[at + 2];
    }
    if (wm === 0) continue;
    weight += wm;
    // a point of the bin (its middle; x < 0 and x ≥ 2^bits: beyond either end) and the bin's start
    const start = m === 0 ? 0 : m === last ? levels : (m - 1) / 2;
    const probe = m === 0 ? -1 : m === last ? levels + 1 : start + 0.25;
    let code: number;
    if (stride === 1) {
      const q = Math.floor(probe);
      code = q < 0 ? 0 : q > top ? top : q;
    } else {
      const j = Math.round((probe - 0.5 - half) / stride);
      code = (j < 0 ? 0 : j > topLevel ? topLevel : j) * stride + half;
    }
    const d = start - (code + 0.5);
    error += wuu + 2 * d * wu + d * d * wm;
  }
  const e = Math.max(error, 0);
  // float32 decoding: |Σ (δ − e)² − Σ e²| ≤ 2·√(Σe²·Σδ²) + Σδ²; the float64 sums: 1e−9 of the sum; x itself (an
  // ulp or two of up to 2^bits) and a weight within rounding of a bin edge (its error moved by ≤ 2·stride·δx levels²):
  // 1e−12 · 2^bits · stride of a level's squared width a weight (Σ w)
  const bound = 2 * Math.sqrt(e * h.rounding) + h.rounding + 1e-9 * e + 1e-12 * levels * stride * weight;
  return { error: e, bound };
}
