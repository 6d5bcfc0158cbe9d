/**
 * The encoder's one-pass path for fully connected layers at the default grid (issue 16): from the tensor's
 * values in file order straight to codes in plane order, and from the codes straight to the error sums, with
 * no float plane laid out, no decoded plane and no scatter back. A matrix's plane is its transpose ([out, in]
 * in the file, `in` rows × `out` columns in the plane) or the file itself ([in, out]).
 *
 * Everything here gives the numbers the general path (prepare → quantize → finish) gives, to the last bit:
 * the same per-channel maxima (a maximum does not depend on order), the same arithmetic per code as
 * `quantizePlane`, the same float32 value per code as `dequantizePlane`, and the error summed in file order
 * as `errorSums` sums it (test/fused.test.ts compares both paths byte for byte).
 */

import type { ErrorSums } from '../eval/metrics.js';
import type { FcLayoutSpec, LayoutSpec } from '../layout/types.js';
import { symmetricFromMaxAbs } from '../quantize/ranges.js';
import { stepsTo24 } from '../quantize/step.js';
import type { PlaneQuantization } from '../quantize/tensor.js';
import {
  type CodeArray,
  type PlaneRanges,
  allocCodes,
  columnRanges,
  dequantizePlane,
  strideOffset,
} from '../quantize/uniform.js';
import type { TensorSettings } from './options.js';

/** Whether a unit can take the one-pass path: an fc layout on the default grid, lossless codecs, nothing set aside. */
export function fusedFits(
  layout: LayoutSpec,
  settings: TensorSettings,
  lossless: boolean,
  extras: { rotate?: boolean; compensation: boolean },
): layout is FcLayoutSpec {
  return (
    layout.kind === 'fc' &&
    lossless &&
    settings.quantizer === 'rtn' &&
    settings.relStep === undefined &&
    settings.range === 'channel' &&
    !settings.clip &&
    settings.outliers === 0 &&
    settings.targetSnr === undefined &&
    (settings.bits === 8 || settings.bits === 16) &&
    !extras.rotate &&
    !extras.compensation
  );
}

/**
 * The plane's codes and ranges of an fc tensor on the symmetric per-channel grid, or undefined where the
 * general path must run: a non-finite weight (side data), or a channel with no exact step.
 */
export function quantizeFc(
  values: Float32Array,
  layout: FcLayoutSpec,
  bits: number,
  stride: number,
): PlaneQuantization | undefined {
  const { nin, nout } = layout;
  if (values.length !== nin * nout) return undefined;
  const maxAbs = new Float64Array(nout);
  if (layout.order === 'out_in') {
    // channel j is the file's row j
    for (let j = 0; j < nout; j++) {
      let m = 0;
      for (let i = j * nin, end = i + nin; i < end; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) return undefined;
        const a = Math.abs(v);
        if (a > m) m = a;
      }
      maxAbs[j] = m;
    }
  } else {
    for (let i = 0, c = 0; i < values.length; i++, c = c + 1 === nout ? 0 : c + 1) {
      const v = values[i];
      if (!Number.isFinite(v)) return undefined;
      const a = Math.abs(v);
      if (a > maxAbs[c]) maxAbs[c] = a;
    }
  }
  const sym = symmetricFromMaxAbs(maxAbs, 1, bits);
  if (!sym) return undefined;
  const { ranges, steps } = sym;
  const codes = allocCodes(bits, nin * nout);
  if (layout.order === 'out_in') quantizeTransposed(values, nout, nin, bits, ranges, stride, codes);
  else quantizeRows(values, nin, nout, bits, ranges, stride, codes);
  let restored: Float32Array | undefined;
  return Object.defineProperty({ codes, ranges, rangeDtype: 'step24', stepBytes: stepsTo24(steps) }, 'restored', {
    get: () => (restored ??= dequantizePlane(codes, nin, nout, bits, ranges)),
    enumerable: true,
  }) as PlaneQuantization;
}

/** One weight's code, exactly as quantizePlane finds it (all values finite, span > 0 checked by the caller). */
interface Grid {
  levels: number;
  top: number;
  half: number;
  topLevel: number;
}

function gridOf(bits: number, stride: number, ranges: PlaneRanges): Grid {
  const levels = 2 ** bits;
  const top = levels - 1;
  const half = strideOffset(stride, ranges.zeroCode);
  return { levels, top, half, topLevel: Math.floor((top - half) / stride) };
}

/** Codes of a plane that is the file itself (row-major rows × cols, channel = column). */
function quantizeRows(
  values: Float32Array,
  rows: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  stride: number,
  codes: CodeArray,
): void {
  const { levels, top, half, topLevel } = gridOf(bits, stride, ranges);
  const { los, spans } = columnRanges(ranges, cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const lo = los[c];
      const span = spans[c];
      if (!(span > 0)) continue; // constant channel: code 0
      const v = values[base + c];
      if (stride === 1) {
        const q = Math.floor(((v - lo) / span) * levels);
        codes[base + c] = q < 0 ? 0 : q > top ? top : q;
      } else {
        const j = Math.round((((v - lo) / span) * levels - 0.5 - half) / stride);
        codes[base + c] = (j < 0 ? 0 : j > topLevel ? topLevel : j) * stride + half;
      }
    }
  }
}

const BLOCK = 64;

/**
 * Codes of the plane (cols × rows: plane row i, column j) of a file matrix of `channels` rows × `cols`
 * columns, read along the file's rows and written down the plane's columns, in 64 × 64 blocks.
 */
function quantizeTransposed(
  values: Float32Array,
  channels: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  stride: number,
  codes: CodeArray,
): void {
  const { levels, top, half, topLevel } = gridOf(bits, stride, ranges);
  const { los, spans } = columnRanges(ranges, channels);
  for (let j0 = 0; j0 < channels; j0 += BLOCK) {
    const j1 = Math.min(channels, j0 + BLOCK);
    for (let i0 = 0; i0 < cols; i0 += BLOCK) {
      const i1 = Math.min(cols, i0 + BLOCK);
      for (let j = j0; j < j1; j++) {
        const lo = los[j];
        const span = spans[j];
        if (!(span > 0)) continue;
        const src = j * cols;
        if (stride === 1)
          for (let i = i0; i < i1; i++) {
            const q = Math.floor(((values[src + i] - lo) / span) * levels);
            codes[i * channels + j] = q < 0 ? 0 : q > top ? top : q;
          }
        else
          for (let i = i0; i < i1; i++) {
            const k = Math.round((((values[src + i] - lo) / span) * levels - 0.5 - half) / stride);
            codes[i * channels + j] = (k < 0 ? 0 : k > topLevel ? topLevel : k) * stride + half;
          }
      }
    }
  }
}

/**
 * What the general path's finish measures, from the decoded codes of an fc plane: the error sums of the
 * decoded weights against the file's values in file order (as errorSums), and the positions of exact zeros
 * that do not decode to 0 (none on the symmetric grid: code 2^(bits−1) is exactly 0; kept for safety).
 */
export function measureFc(
  values: Float32Array,
  codes: CodeArray,
  layout: FcLayoutSpec,
  bits: number,
  ranges: PlaneRanges,
): { sums: ErrorSums; zeros: Uint32Array } {
  const { nin, nout } = layout;
  const levels = 2 ** bits;
  const { los, spans } = columnRanges(ranges, nout);
  // file order: [out, in] walks channel c's row of the file (plane column c, a plane row at a time); [in, out]
  // is the plane itself. Each channel's values in a table (8-bit codes), each the float32 dequantizePlane writes.
  const transposed = layout.order === 'out_in';
  const table = new Float32Array(bits === 8 ? levels : 0);
  const decodedAt = (c: number, code: number): number => {
    const span = spans[c];
    return Math.fround(span > 0 ? los[c] + ((code + 0.5) * span) / levels : los[c]);
  };
  let maxAbs = 0;
  let se = 0;
  let sp = 0;
  const zeros: number[] = [];
  if (transposed && bits === 8) {
    for (let c = 0, i = 0; c < nout; c++) {
      for (let q = 0; q < levels; q++) table[q] = decodedAt(c, q);
      for (let r = 0, k = c; r < nin; r++, i++, k += nout) {
        const a = values[i];
        const b = table[codes[k]];
        if (a === 0 && b !== 0) zeros.push(i);
        // an exact zero is put back exactly (withExactZeros): no error there
        const d = a === 0 ? 0 : Math.abs(a - b);
        if (d > maxAbs) maxAbs = d;
        se += d * d;
        sp += a * a;
      }
    }
  } else {
    const outer = transposed ? nout : nin;
    const inner = transposed ? nin : nout;
    const kOuter = transposed ? 1 : nout;
    const kInner = transposed ? nout : 1;
    for (let o = 0, i = 0; o < outer; o++)
      for (let n = 0, k = o * kOuter; n < inner; n++, i++, k += kInner) {
        const a = values[i];
        const b = decodedAt(transposed ? o : n, codes[k]);
        if (a === 0 && b !== 0) zeros.push(i);
        const d = a === 0 ? 0 : Math.abs(a - b);
        if (d > maxAbs) maxAbs = d;
        se += d * d;
        sp += a * a;
      }
  }
  return { sums: { maxAbs, se, sp, n: values.length }, zeros: Uint32Array.from(zeros) };
}
