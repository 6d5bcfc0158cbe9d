/**
 * Error-compensating rounding (the GPTQ / OBQ family) onto the M1 grid the
 * decoder already reads. A weight matrix W [rows = output units, K = input
 * features] is quantized one input column at a time; each column's rounding
 * error is spread over the columns not yet quantized so that ‖X·Wᵀ − X·Ŵᵀ‖²
 * stays small for the inputs X whose Gram matrix is H = XᵀX. With U the upper
 * Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), column i's error e = (w_i − q_i)/U_ii
 * moves every later column j by −e·U_ij (the optimal update of the free
 * weights given the fixed ones). Columns are processed in blocks: inside a
 * block the update is immediate, beyond it deferred to one pass per block
 * (lazy batch updates), which keeps U's block rows in cache.
 *
 * Rows keep their own grid (per output channel ranges, step grids, stride):
 * decode(code) = lo + (code + ½)·span/2ⁿ, exactly as `dequantizePlane` does,
 * and a code is the one `quantizePlane` would give the updated value. Weights
 * stored exactly (side values: outliers, beyond the step grid, non-finite)
 * cannot move: they take their stored value and their share of the error goes
 * on to later columns.
 *
 * Pure TypeScript over Float64Array; no dependencies.
 */

import { fillCode, strideOffset } from '../quantize/uniform.js';
import type { HMatrix } from './statistics.js';

/** Damping added to H's diagonal, as a fraction of its mean: see docs/compensation.md for the measurement. */
export const DEFAULT_DAMP = 0.01;
/** Columns per lazy-update block. */
export const DEFAULT_BLOCK = 128;
/** Rows per block of the Cholesky factorization and the triangular inverse (32 rows of 2880 doubles: 740 KB). */
const ROW_BLOCK = 32;
/** Columns per tile of the deferred update (a 128 × 512 tile of U is 512 KB). */
const TILE = 512;

export interface GptqOptions {
  /** λ = damp · mean(diag H) is added to the diagonal before inversion (default DEFAULT_DAMP). */
  damp?: number;
  /** Quantize columns in order of decreasing H diagonal (most active inputs first). Default false. */
  actOrder?: boolean;
  /** Columns per lazy-update block (default DEFAULT_BLOCK). */
  blockSize?: number;
  /**
   * λ itself, instead of `damp` · mean(diag H): the diagonal blocks of a block-diagonal H (planes.ts) are
   * damped with the whole H's λ, as full H would be.
   */
  lambda?: number;
}

/** One matrix to quantize: W row-major [rows, k], with one M1 grid per row. */
export interface GridMatrix {
  rows: number;
  k: number;
  /** Values to quantize (row-major). Fixed positions are ignored. */
  w: Float64Array;
  /** 1 where the weight is stored exactly (its code is 0 and its value never changes). */
  fixed?: Uint8Array;
  /** Per row: the range start and span (max − min) as dequantizePlane computes them. */
  los: Float64Array;
  spans: Float64Array;
  bits: number;
  /** Use every stride-th code only (levels stride·j + offset, see strideOffset). */
  stride: number;
  /** The grid's zero code, where every row's ranges have one (zero-centred grids): stride levels keep it. */
  zeroCode?: number;
}

export interface GptqResult {
  /** Codes row-major [rows, k]; 0 at fixed positions. */
  codes: Uint32Array;
  /** 'gptq' when the error was compensated, 'rtn' when every weight was rounded to nearest. */
  method: 'gptq' | 'rtn';
  /** Why round-to-nearest was used. */
  reason?: string;
  /** λ actually added to the diagonal. */
  lambda: number;
  /** Input columns whose H diagonal is 0 (inputs that never fire): rounded to nearest, no error to spread. */
  deadColumns: number;
  /**
   * ‖X·ΔWᵀ‖² on the calibration data (with the damped H) that the compensated codes leave: Σ e² over every
   * weight, since ΔW = E·U and U·H·Uᵀ = I. What an allocator needs per grid; absent for round-to-nearest.
   */
  outputError?: number;
}

/** The M1 grid of one row: quantize (as quantizePlane) and decode (as dequantizePlane, in float32). */
export class RowGrid {
  private readonly levels: number;
  private readonly top: number;
  private readonly half: number;
  private readonly topLevel: number;
  /** The code of a weight stored apart and of a constant channel's (uniform.ts fillCode). */
  readonly fill: number;

  constructor(
    bits: number,
    private readonly stride: number,
    zeroCode?: number,
  ) {
    this.levels = 2 ** bits;
    this.top = this.levels - 1;
    this.half = strideOffset(stride, zeroCode);
    this.fill = fillCode(zeroCode);
    this.topLevel = Math.floor((this.top - this.half) / stride);
  }

  code(v: number, lo: number, span: number): number {
    // a constant channel or a weight stored apart: the fill code (uniform.ts fillCode)
    if (!(span > 0) || !Number.isFinite(v)) return this.fill;
    if (this.stride === 1) {
      const q = Math.floor(((v - lo) / span) * this.levels);
      return q < 0 ? 0 : q > this.top ? this.top : q;
    }
    const j = Math.round((((v - lo) / span) * this.levels - 0.5 - this.half) / this.stride);
    const jj = j < 0 ? 0 : j > this.topLevel ? this.topLevel : j;
    return jj * this.stride + this.half;
  }

  value(code: number, lo: number, span: number): number {
    return Math.fround(span > 0 ? lo + ((code + 0.5) * span) / this.levels : lo);
  }
}

/** Round-to-nearest of every weight on its row's grid. */
export function roundToNearest(m: GridMatrix): Uint32Array {
  const grid = new RowGrid(m.bits, m.stride, m.zeroCode);
  const codes = new Uint32Array(m.rows * m.k).fill(grid.fill);
  for (let r = 0; r < m.rows; r++)
    for (let i = 0; i < m.k; i++) {
      const at = r * m.k + i;
      if (!m.fixed?.[at]) codes[at] = grid.code(m.w[at], m.los[r], m.spans[r]);
    }
  return codes;
}

/**
 * U, the upper Cholesky factor of A⁻¹ for a symmetric positive definite A (row-major n×n), or the column
 * where A is not positive definite. With J the reversal, J·A·J = L·Lᵀ gives A = V·Vᵀ with V = J·L·J upper,
 * so A⁻¹ = V⁻ᵀ·V⁻¹ and U = V⁻¹ = J·L⁻¹·J: one Cholesky and one triangular inverse (≈ n³/3 multiply-adds).
 */
export function inverseCholeskyUpper(a: Float64Array, n: number): Float64Array | number {
  // L (lower, row-major) of the reversed matrix, rows in blocks: each earlier row j is read once per block
  // and used for every row of the block (the rows of L stream from memory otherwise: 3–4× slower at n = 2880)
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) l[i * n + j] = a[(n - 1 - i) * n + (n - 1 - j)];
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    for (let j = 0; j < i1; j++) {
      const rj = j * n;
      const djj = l[rj + j];
      for (let i = Math.max(i0, j); i < i1; i++) {
        const ri = i * n;
        // four partial sums: one accumulator would chain every multiply-add on the one before (4× slower)
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let k = 0;
        for (; k + 3 < j; k += 4) {
          s0 += l[ri + k] * l[rj + k];
          s1 += l[ri + k + 1] * l[rj + k + 1];
          s2 += l[ri + k + 2] * l[rj + k + 2];
          s3 += l[ri + k + 3] * l[rj + k + 3];
        }
        for (; k < j; k++) s0 += l[ri + k] * l[rj + k];
        const s = l[ri + j] - (s0 + s1 + (s2 + s3));
        if (i === j) {
          if (!(s > 0) || !Number.isFinite(s)) return n - 1 - i;
          l[ri + i] = Math.sqrt(s);
        } else l[ri + j] = s / (j < i0 ? djj : l[rj + j]);
      }
    }
  }
  // M = L⁻¹, rows in blocks: row i = (e_i − Σ_{k<i} L_ik · row k of M) / L_ii, each row k of M read once per block
  const m = new Float64Array(n * n);
  for (let i0 = 0; i0 < n; i0 += ROW_BLOCK) {
    const i1 = Math.min(n, i0 + ROW_BLOCK);
    // rows before the block are final: subtract four of them at a time (one load and store of the row per four)
    let k = 0;
    for (; k + 3 < i0; k += 4) {
      const r0 = k * n;
      const r1 = r0 + n;
      const r2 = r1 + n;
      const r3 = r2 + n;
      for (let i = i0; i < i1; i++) {
        const ri = i * n;
        const c0 = l[ri + k];
        const c1 = l[ri + k + 1];
        const c2 = l[ri + k + 2];
        const c3 = l[ri + k + 3];
        for (let j = 0; j <= k; j++) m[ri + j] -= c0 * m[r0 + j] + c1 * m[r1 + j] + c2 * m[r2 + j] + c3 * m[r3 + j];
        m[ri + k + 1] -= c1 * m[r1 + k + 1] + c2 * m[r2 + k + 1] + c3 * m[r3 + k + 1];
        m[ri + k + 2] -= c2 * m[r2 + k + 2] + c3 * m[r3 + k + 2];
        m[ri + k + 3] -= c3 * m[r3 + k + 3];
      }
    }
    for (; k < i1; k++) {
      const rk = k * n;
      if (k >= i0) {
        // row k of the block is complete once every earlier row has been subtracted from it
        m[rk + k] += 1;
        const d = l[rk + k];
        for (let j = 0; j <= k; j++) m[rk + j] /= d;
      }
      for (let i = Math.max(i0, k + 1); i < i1; i++) {
        const c = l[i * n + k];
        if (c === 0) continue;
        const ri = i * n;
        for (let j = 0; j <= k; j++) m[ri + j] -= c * m[rk + j];
      }
    }
  }
  // U = J·M·J
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
  return u;
}

/** What quantizing with one H needs, whatever the grid: column order, damping and U. */
interface PreparedInverse {
  u: Float64Array;
  order: number[];
  lambda: number;
  deadColumns: number;
}

/** Prepared inverses per H and options: one tensor is quantized at many grids (rate search) with one H. */
const prepared = new WeakMap<HMatrix, Map<string, PreparedInverse | string>>();

/**
 * Lets go of the inverses prepared for `h` (as large as H in float64): the error model is done with a tensor
 * before it moves to the next, and its H stays for the encode (ISNet: 0.84 GB of U held otherwise).
 */
export function forgetInverse(h: HMatrix): void {
  prepared.delete(h);
}

/** Why a matrix whose every input column is zero on the calibration data is rounded to nearest. */
export const EVERY_INPUT_ZERO = 'every input is zero on the calibration data';

/**
 * Σ (w − value(code))² over the matrix's weights not `fixed`: the output error GPTQ's sweep counts for columns
 * it leaves as they round (a dead column's U is 1).
 */
export function roundingError(m: GridMatrix, codes: Uint32Array): number {
  const grid = new RowGrid(m.bits, m.stride, m.zeroCode);
  let sum = 0;
  for (let r = 0; r < m.rows; r++)
    for (let i = 0; i < m.k; i++) {
      const at = r * m.k + i;
      if (m.fixed?.[at]) continue;
      const e = m.w[at] - grid.value(codes[at], m.los[r], m.spans[r]);
      sum += e * e;
    }
  return sum;
}

/** U of the damped, reordered H (cached per H array and options), or why there is none. */
function prepareInverse(h: HMatrix, k: number, options: GptqOptions): PreparedInverse | string {
  const damp = options.damp ?? DEFAULT_DAMP;
  const key = `${damp}|${Boolean(options.actOrder)}|${options.lambda ?? ''}`;
  let byOptions = prepared.get(h);
  const known = byOptions?.get(key);
  if (known) return known;
  // dead inputs: their column of W does not reach the output; an isolated unit diagonal keeps H invertible
  const dead = new Uint8Array(k);
  let deadColumns = 0;
  let diagSum = 0;
  for (let i = 0; i < k; i++) {
    const d = h[i * k + i];
    if (!(d > 0)) {
      dead[i] = 1;
      deadColumns++;
    } else diagSum += d;
  }
  let result: PreparedInverse | string;
  if (deadColumns === k) result = EVERY_INPUT_ZERO;
  else {
    const lambda = options.lambda ?? (damp * diagSum) / (k - deadColumns);
    // column order: identity, or by decreasing activity
    const order = Array.from({ length: k }, (_, i) => i);
    if (options.actOrder) order.sort((x, y) => h[y * k + y] - h[x * k + x] || x - y);
    const hp = new Float64Array(k * k);
    for (let i = 0; i < k; i++) {
      const oi = order[i];
      for (let j = 0; j < k; j++) {
        const oj = order[j];
        hp[i * k + j] = dead[oi] || dead[oj] ? (i === j ? 1 : 0) : h[oi * k + oj];
      }
      if (!dead[oi]) hp[i * k + i] += lambda;
    }
    const u = inverseCholeskyUpper(hp, k);
    result =
      typeof u === 'number'
        ? `H is not positive definite (input ${order[u]}); raise the damping`
        : { u, order, lambda, deadColumns };
  }
  if (!byOptions) prepared.set(h, (byOptions = new Map()));
  byOptions.set(key, result);
  return result;
}

/**
 * Quantizes `m` onto its rows' grids, compensating each column's error with H (k×k, symmetric).
 * Falls back to round-to-nearest, with the reason, where H is missing, the wrong size, or not positive
 * definite after damping.
 */
export function gptqQuantize(m: GridMatrix, h: HMatrix | undefined, options: GptqOptions = {}): GptqResult {
  const { rows, k } = m;
  const rtn = (reason: string, lambda = 0, deadColumns = 0): GptqResult => ({
    codes: roundToNearest(m),
    method: 'rtn',
    reason,
    lambda,
    deadColumns,
  });
  if (!h) return rtn('no statistics');
  if (h.length !== k * k) return rtn(`statistics are ${Math.round(Math.sqrt(h.length))}×, expected ${k} input features`);
  const prep = prepareInverse(h, k, options);
  if (typeof prep === 'string') return rtn(prep);
  const { u, order, lambda, deadColumns } = prep;
  const block = Math.max(1, Math.floor(options.blockSize ?? DEFAULT_BLOCK));
  const grid = new RowGrid(m.bits, m.stride, m.zeroCode);
  const codes = new Uint32Array(rows * k).fill(grid.fill);
  // W in processing order; fixed weights enter as 0 and track only the change pushed onto them
  const w = new Float64Array(rows * k);
  const fixed = new Uint8Array(rows * k);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < k; i++) {
      const at = r * k + order[i];
      const f = m.fixed?.[at] ?? 0;
      fixed[r * k + i] = f;
      w[r * k + i] = f ? 0 : m.w[at];
    }
  const err = new Float64Array(rows * block);
  let outputError = 0;
  for (let b0 = 0; b0 < k; b0 += block) {
    const b1 = Math.min(k, b0 + block);
    const width = b1 - b0;
    // inside the block: quantize column by column, updating the block's later columns at once
    for (let r = 0; r < rows; r++) {
      const lo = m.los[r];
      const span = m.spans[r];
      const row = r * k;
      const er = r * block - b0;
      for (let i = b0; i < b1; i++) {
        let q = 0;
        if (!fixed[row + i]) {
          const c = grid.code(w[row + i], lo, span);
          codes[row + order[i]] = c;
          q = grid.value(c, lo, span);
        }
        const e = (w[row + i] - q) / u[i * k + i];
        err[er + i] = e;
        if (e === 0) continue;
        outputError += e * e;
        const ui = i * k;
        for (let j = i + 1; j < b1; j++) w[row + j] -= e * u[ui + j];
      }
    }
    // the deferred update W[:, b1:] −= E · U[block, b1:], in column tiles so a tile of U stays in cache
    for (let j0 = b1; j0 < k; j0 += TILE) {
      const j1 = Math.min(k, j0 + TILE);
      for (let r = 0; r < rows; r++) {
        const row = r * k;
        const er = r * block;
        for (let t = 0; t < width; t++) {
          const e = err[er + t];
          if (e === 0) continue;
          const ui = (b0 + t) * k;
          for (let j = j0; j < j1; j++) w[row + j] -= e * u[ui + j];
        }
      }
    }
  }
  return { codes, method: 'gptq', lambda, deadColumns, outputError };
}
