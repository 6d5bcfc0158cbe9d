/**
 * Compensated quantization of a tensor's planes: the same ranges, range dtype,
 * step bytes and side values as `quantizePlanes` (computed from the original
 * weights, exactly as it computes them), and codes chosen by error-compensating
 * rounding (gptq.ts) with the tensor's layer-input statistics. The decoder
 * needs no word about it: the codes are plain M1 codes on the same grid.
 *
 * Planes and matrices: the layouts (src/layout/planes.ts) put output units in
 * plane columns and input features in plane rows; compensation works on the
 * natural matrix [output unit, input feature] of each group:
 * - fc: plane Nin × Nout → one matrix [Nout, Nin];
 * - Conv [out, in/g, kx, ky]: plane (Nfin·Kx) × (Nfout·Ky) → per group [Nfout/g, Nfin·Kx·Ky], features
 *   in ONNX order (c, x, y), i.e. im2col order;
 * - ConvTranspose [in, out/g, kx, ky]: per group [(Nfout, x, y), Nin/g] (outputs of the column product);
 * - LSTM/GRU: one plane Nin × H per gate and direction → [H, Nin], with the direction's H for R.
 */

import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import { type PlaneQuantization, type QuantizeSettings, quantizePlanes } from '../quantize/tensor.js';
import { type PlaneRanges, allocCodes, dequantizePlane } from '../quantize/uniform.js';
import {
  forgetInverse,
  DEFAULT_DAMP,
  EVERY_INPUT_ZERO,
  type GptqOptions,
  type GptqResult,
  type GridMatrix,
  gptqQuantize,
  roundingError,
} from './gptq.js';
import type { HMatrix, TensorStatistics } from './statistics.js';

/** How one plane was quantized. */
export interface PlaneCompensation {
  /** 'gptq' if every group of the plane was compensated, 'rtn' if none, 'mixed' otherwise. */
  method: 'gptq' | 'rtn' | 'mixed';
  /** Why some or all groups were rounded to nearest. */
  reason?: string;
  /** Groups (matrices) in the plane, and how many of them fell back to round-to-nearest. */
  groups: number;
  fallbackGroups: number;
  /** Input features never active on the calibration data, over the plane's groups. */
  deadColumns: number;
  /** ‖X·ΔWᵀ‖² on the calibration data (damped H) of the compensated groups; 0 when none was compensated. */
  outputError: number;
}

export type CompensatedQuantization = PlaneQuantization & { compensation: PlaneCompensation };

/** One matrix of a plane: its H group and where each element [row, feature] sits in the plane. */
export interface PlaneMatrix {
  group: number;
  rows: number;
  k: number;
  /** Plane index of element (r, i), row-major [rows, k]. */
  index: Uint32Array;
}

/** The matrices of plane p of a layout, for statistics with `groups` groups under `grouping`. */
export function planeMatrices(layout: LayoutSpec, shapes: readonly PlaneShape[], p: number, groups: number): PlaneMatrix[] {
  const { cols } = shapes[p];
  const build = (group: number, rows: number, k: number, at: (r: number, i: number) => number): PlaneMatrix => {
    const index = new Uint32Array(rows * k);
    for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) index[r * k + i] = at(r, i);
    return { group, rows, k, index };
  };
  switch (layout.kind) {
    case 'fc':
      return [build(0, layout.nout, layout.nin, (r, i) => i * cols + r)];
    case 'conv': {
      const { nfin, nfout, kx, ky } = layout;
      const taps = kx * ky;
      if (layout.order === 'out_in') {
        const per = nfout / groups;
        return Array.from({ length: groups }, (_, g) =>
          build(g, per, nfin * taps, (r, i) => {
            const fout = g * per + r;
            const fin = Math.floor(i / taps);
            const x = Math.floor((i - fin * taps) / ky);
            const y = i - fin * taps - x * ky;
            return (fin * kx + x) * cols + fout * ky + y;
          }),
        );
      }
      const cg = nfin / groups;
      return Array.from({ length: groups }, (_, g) =>
        build(g, nfout * taps, cg, (r, i) => {
          const fout = Math.floor(r / taps);
          const x = Math.floor((r - fout * taps) / ky);
          const y = r - fout * taps - x * ky;
          return ((g * cg + i) * kx + x) * cols + fout * ky + y;
        }),
      );
    }
    case 'lstm':
    case 'gru': {
      const direction = Math.floor(p / layout.gates);
      return [build(groups > 1 ? direction : 0, layout.hidden, layout.nin, (r, i) => i * cols + r)];
    }
    case 'stack':
      // (statisticsMisfit refuses statistics for a stack: each matrix multiplies inputs of its own)
      throw new Error('planeMatrices: a stack of matrices has no statistics');
  }
}

/** Why statistics cannot apply to a layout (groups or K disagree), or undefined when they fit. */
export function statisticsMisfit(layout: LayoutSpec, stats: TensorStatistics): string | undefined {
  const g = stats.h.length;
  const bad = (what: string): string =>
    `statistics (K ${stats.k}, ${g} group${g > 1 ? 's' : ''}) do not fit the ${layout.kind} layout: ${what}`;
  // H per group: K×K, or the packed diagonal blocks, whose widths add up to K
  const blocks = stats.blocks ?? [stats.k];
  if (blocks.reduce((a, b) => a + b, 0) !== stats.k) return bad(`blocks of ${blocks.join('+')} features`);
  const size = blocks.reduce((a, b) => a + b * b, 0);
  if (stats.h.some((h) => h.length !== size)) return bad(`H of another size than ${size} values`);
  switch (layout.kind) {
    case 'fc':
      return g === 1 && stats.k === layout.nin ? undefined : bad(`expected one group of K ${layout.nin}`);
    case 'conv': {
      const taps = layout.kx * layout.ky;
      if (layout.order === 'out_in')
        return layout.nfout % g === 0 && stats.k === layout.nfin * taps ? undefined : bad(`expected K ${layout.nfin * taps}`);
      return layout.nfin % g === 0 && stats.k === layout.nfin / g ? undefined : bad(`expected K ${layout.nfin / g}`);
    }
    case 'lstm':
    case 'gru':
      return (g === 1 || g === layout.directions) && stats.k === layout.nin ? undefined : bad(`expected K ${layout.nin}`);
    case 'stack':
      return bad('a stack of matrices, each multiplying inputs of its own');
  }
}

/** The diagonal blocks of a packed block-diagonal H as views (stable, so gptq.ts caches their inverses). */
const blockViews = new WeakMap<HMatrix, HMatrix[]>();

/** Views of the diagonal blocks of `h` (packed, widths `blocks`). */
export function diagonalBlocks(h: HMatrix, blocks: readonly number[]): HMatrix[] {
  let views = blockViews.get(h);
  if (!views) {
    views = [];
    let at = 0;
    for (const w of blocks) {
      views.push(h.subarray(at, at + w * w));
      at += w * w;
    }
    blockViews.set(h, views);
  }
  return views;
}

/** λ of a block-diagonal H as the whole H would have it: damp · mean of its non-zero diagonal. */
function blockLambda(h: HMatrix, blocks: readonly number[], damp: number): number {
  let sum = 0;
  let live = 0;
  let at = 0;
  for (const w of blocks) {
    for (let i = 0; i < w; i++) {
      const d = h[at + i * w + i];
      if (d > 0) {
        sum += d;
        live++;
      }
    }
    at += w * w;
  }
  return live ? (damp * sum) / live : 0;
}

/**
 * GPTQ of one matrix under a block-diagonal H: with H block-diagonal, U is too, and no column's error reaches
 * another block, so each block of columns is quantized on its own with its block of H (and the whole H's λ):
 * the same codes as full GPTQ with that H, at rows·K·B instead of rows·K² (and B³ instead of K³ for U).
 */
export function gptqBlocks(m: GridMatrix, h: HMatrix, blocks: readonly number[], options: GptqOptions): GptqResult {
  const views = diagonalBlocks(h, blocks);
  const lambda = options.lambda ?? blockLambda(h, blocks, options.damp ?? DEFAULT_DAMP);
  const codes = new Uint32Array(m.rows * m.k);
  let deadColumns = 0;
  let outputError = 0;
  let c0 = 0;
  for (let b = 0; b < blocks.length; b++) {
    const w = blocks[b];
    const sub = new Float64Array(m.rows * w);
    const fixed = m.fixed ? new Uint8Array(m.rows * w) : undefined;
    for (let r = 0; r < m.rows; r++) {
      sub.set(m.w.subarray(r * m.k + c0, r * m.k + c0 + w), r * w);
      if (fixed) fixed.set(m.fixed!.subarray(r * m.k + c0, r * m.k + c0 + w), r * w);
    }
    const block: GridMatrix = { ...m, k: w, w: sub, ...(fixed ? { fixed } : {}) };
    const r = gptqQuantize(block, views[b], { ...options, lambda });
    if (r.method === 'rtn' && r.reason === EVERY_INPUT_ZERO) {
      // a block whose inputs are all zero: full GPTQ leaves such columns rounded to nearest, counted dead (their
      // rounding error enters the output error as it does there)
      deadColumns += w;
      outputError += roundingError(block, r.codes);
    } else if (r.method === 'rtn') {
      // any other failure (H not positive definite): the whole matrix to nearest, as full H's failure would do
      return { ...gptqQuantize(m, undefined, options), reason: `block ${b}: ${r.reason}`, lambda };
    } else {
      deadColumns += r.deadColumns;
      outputError += r.outputError ?? 0;
    }
    for (let row = 0; row < m.rows; row++) codes.set(r.codes.subarray(row * w, row * w + w), row * m.k + c0);
    c0 += w;
  }
  return { codes, method: 'gptq', lambda, deadColumns, outputError };
}

/** Statistics whose prepared inverses outlive a compensatePlanes call (holdInverses), with the depth of the holds. */
const holds = new WeakMap<TensorStatistics, number>();

/**
 * Runs `fn` with the inverses prepared for `stats` kept from one compensatePlanes call to the next (the error
 * model quantizes a tensor at several steps with one H), and lets them go at the end. Outside a hold each call
 * lets its own go: they are as large as H in float64, and a model's worth of them stayed otherwise (ISNet 0.84 GB).
 */
export function holdInverses<T>(stats: TensorStatistics, fn: () => T): T {
  holds.set(stats, (holds.get(stats) ?? 0) + 1);
  try {
    return fn();
  } finally {
    const left = holds.get(stats)! - 1;
    if (left) holds.set(stats, left);
    else {
      holds.delete(stats);
      forgetPrepared(stats);
    }
  }
}

/** Lets go of what compensating with `stats` cached: the block views of each H and their prepared inverses. */
export function forgetPrepared(stats: TensorStatistics): void {
  for (const h of stats.h) {
    for (const v of blockViews.get(h) ?? []) forgetInverse(v);
    blockViews.delete(h);
    forgetInverse(h);
  }
}

/** GPTQ of one matrix with its group's H, full or block-diagonal. */
function quantizeMatrix(
  m: GridMatrix,
  h: HMatrix | undefined,
  blocks: readonly number[] | undefined,
  options: GptqOptions,
): GptqResult {
  return h && blocks && blocks.length > 1 ? gptqBlocks(m, h, blocks, options) : gptqQuantize(m, h, options);
}

/** Per matrix row, the range start and span of its channel (as dequantizePlane computes them). */
function rowGrids(ranges: PlaneRanges, cols: number, m: PlaneMatrix): { los: Float64Array; spans: Float64Array } {
  const los = new Float64Array(m.rows);
  const spans = new Float64Array(m.rows);
  for (let r = 0; r < m.rows; r++) {
    // every element of a row lies in one channel: its output unit's
    const c = m.index[r * m.k] % cols;
    const ch = Math.floor(c / ranges.channelWidth);
    los[r] = ranges.mins[ch];
    spans[r] = ranges.maxs[ch] - ranges.mins[ch];
  }
  return { los, spans };
}

/**
 * Quantizes a tensor's working planes (NaN/±Inf = stored exactly as side values) like `quantizePlanes`,
 * with codes chosen by error compensation where `stats` allow it. `restored` is what the codes decode to,
 * with weights beyond a step grid restored exactly, as `quantizePlanes` gives it. The planes must be in
 * the tensor's own basis (not rotated).
 */
export function compensatePlanes(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  layout: LayoutSpec,
  settings: QuantizeSettings,
  stats: TensorStatistics | undefined,
  options: GptqOptions = stats?.gptq ?? {},
): CompensatedQuantization[] {
  const base = quantizePlanes(planes, shapes, settings);
  const misfit = stats ? statisticsMisfit(layout, stats) : undefined;
  const usable = misfit ? undefined : stats;
  const groups = usable?.h.length ?? 1;
  const result = base.map((q, p) => {
    const { rows, cols } = shapes[p];
    const plane = planes[p];
    const values = q.working ?? plane;
    const matrices = planeMatrices(layout, shapes, p, groups);
    const codes = allocCodes(settings.bits, rows * cols);
    const reasons = new Set<string>();
    let fallback = 0;
    let dead = 0;
    let outputError = 0;
    for (const m of matrices) {
      const w = new Float64Array(m.rows * m.k);
      const fixed = new Uint8Array(m.rows * m.k);
      for (let e = 0; e < w.length; e++) {
        const v = values[m.index[e]];
        if (Number.isFinite(v)) w[e] = v;
        else fixed[e] = 1;
      }
      const { los, spans } = rowGrids(q.ranges, cols, m);
      const h = usable && usable.k === m.k ? usable.h[m.group] : undefined;
      const r = quantizeMatrix(
        {
          rows: m.rows,
          k: m.k,
          w,
          fixed,
          los,
          spans,
          bits: settings.bits,
          stride: settings.relStep !== undefined ? 1 : settings.stride,
          zeroCode: q.ranges.zeroCode,
        },
        h,
        usable?.blocks,
        options,
      );
      if (r.method === 'rtn') {
        fallback++;
        reasons.add(
          misfit ?? (usable && usable.k !== m.k ? `statistics have K ${usable.k}, the plane's matrices ${m.k}` : r.reason!),
        );
      }
      dead += r.deadColumns;
      outputError += r.outputError ?? 0;
      for (let e = 0; e < r.codes.length; e++) codes[m.index[e]] = r.codes[e];
    }
    const compensation: PlaneCompensation = {
      method: fallback === 0 ? 'gptq' : fallback === matrices.length ? 'rtn' : 'mixed',
      ...(reasons.size ? { reason: [...reasons].join('; ') } : {}),
      groups: matrices.length,
      fallbackGroups: fallback,
      deadColumns: dead,
      outputError,
    };
    const step = settings.relStep !== undefined;
    let cached: Float32Array | undefined;
    const out = {
      codes,
      ranges: q.ranges,
      rangeDtype: q.rangeDtype,
      ...(q.stepBytes ? { stepBytes: q.stepBytes } : {}),
      ...(q.working ? { working: q.working } : {}),
      ...(q.beyond !== undefined ? { beyond: q.beyond } : {}),
      compensation,
    };
    return Object.defineProperty(out, 'restored', {
      enumerable: true,
      get: () =>
        (cached ??= (() => {
          const restored = dequantizePlane(codes, rows, cols, settings.bits, q.ranges);
          if (step)
            for (let i = 0; i < plane.length; i++)
              if (Number.isNaN(values[i]) && Number.isFinite(plane[i])) restored[i] = plane[i];
          return restored;
        })()),
    }) as CompensatedQuantization;
  });
  // the inverses served this call: kept only where the caller holds them for more (holdInverses)
  if (stats && !holds.has(stats)) forgetPrepared(stats);
  return result;
}

/**
 * ‖X·ΔWᵀ‖² and ‖X·Wᵀ‖² of a tensor for the inputs whose statistics are given (round-to-nearest or
 * compensated alike): Σ over matrix rows of δᵀHδ. Positions stored exactly (NaN/±Inf in the working
 * planes) have no error. Undefined when the statistics do not fit the layout.
 */
export function planeOutputError(
  layout: LayoutSpec,
  shapes: readonly PlaneShape[],
  planes: readonly Float32Array[],
  restored: readonly Float32Array[],
  stats: TensorStatistics,
  /** Also ‖X·Wᵀ‖² (as much work again); `power` is 0 without it. */
  withPower = true,
): { error: number; power: number } | undefined {
  if (statisticsMisfit(layout, stats)) return undefined;
  let error = 0;
  let power = 0;
  const groups = stats.h.length;
  planes.forEach((plane, p) => {
    for (const m of planeMatrices(layout, shapes, p, groups)) {
      const h = stats.h[m.group];
      const blocks = stats.blocks ?? [m.k];
      const views = blocks.length > 1 ? diagonalBlocks(h, blocks) : [h];
      const d = new Float64Array(m.k);
      const o = new Float64Array(m.k);
      for (let r = 0; r < m.rows; r++) {
        for (let i = 0; i < m.k; i++) {
          const at = m.index[r * m.k + i];
          const v = plane[at];
          d[i] = Number.isFinite(v) ? v - restored[p][at] : 0;
          o[i] = Number.isFinite(v) ? v : 0;
        }
        let c0 = 0;
        for (let b = 0; b < blocks.length; b++) {
          const w = blocks[b];
          error += quadratic(views[b], d.subarray(c0, c0 + w), w);
          if (withPower) power += quadratic(views[b], o.subarray(c0, c0 + w), w);
          c0 += w;
        }
      }
    }
  });
  return { error, power };
}

/** vᵀ·H·v. */
function quadratic(h: HMatrix, v: Float64Array, k: number): number {
  let s = 0;
  for (let i = 0; i < k; i++) {
    if (v[i] === 0) continue;
    let t = 0;
    const row = i * k;
    for (let j = 0; j < k; j++) t += h[row + j] * v[j];
    s += v[i] * t;
  }
  return s;
}
