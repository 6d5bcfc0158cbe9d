/**
 * Rate allocation across layers. For every tensor we measure, for each
 * candidate step grid (a step as a fraction of each channel's or the layer's
 * RMS, per-channel or per-layer ranges), the bits it would cost (entropy of its
 * codes, its ranges and the weights beyond the grid) and the squared weight
 * error it causes; and once per tensor, how much the model's output moves per
 * unit of squared weight error (its sensitivity, probed on calibration data by
 * pipeline/allocate.ts). A Lagrange multiplier λ then picks per tensor the
 * candidate minimising sensitivity·error + λ·bits; λ is searched to meet a bit
 * budget (`--target-bpw`) or a task loss (`--max-loss`).
 */

import { codeEntropyBits, entropyOf } from './entropy.js';
import { RANGE_BYTES, quantizePlanes, type QuantizeSettings, type RangeDtype } from '../quantize/tensor.js';
import {
  channelScales,
  columnMajorScales,
  gridBounds,
  planeScales,
  stepGrid,
  type ChannelScales,
  type MeasuredScales,
  type StepGrid,
} from '../quantize/step.js';
import { columnRanges, fillCode } from '../quantize/uniform.js';
import { measureSorted, type ColumnGrid } from './sorted.js';
import type { PlaneShape } from '../layout/types.js';
import type { RangeMode } from '../quantize/uniform.js';

/**
 * Candidate steps of the step grid for allocation, as fractions of RMS (8-bit
 * codes), down to coarse steps so small budgets can be met; the
 * sensitivity probe sits in the middle (PROBE_STEP).
 */
export const ALLOCATION_STEPS = [
  1 / 96,
  1 / 64,
  1 / 48,
  1 / 32,
  1 / 24,
  1 / 16,
  1 / 12,
  1 / 10,
  1 / 8,
  1 / 6,
  1 / 5,
  1 / 4,
  1 / 3,
  1 / 2.5,
  1 / 2,
  1 / 1.5,
  1,
  1.5,
  2,
];
export const PROBE_STEP = 1 / 3;
/**
 * Finer candidates on 16-bit codes (about 47, 59, 71, 83 and 95 dB on Gaussian weights): where a model moves more
 * than the quality floor allows at int8 precision (BlazeFace's 256×256 detector, M-LSD), the tensors the probes
 * flag need grids the 8-bit candidates cannot give (their finest steps leave a fifth of the weights beyond the
 * grid, stored exactly). M-LSD large needs the finest: with RMS/1024 at most it stalled at fidelity 0.871 (median
 * tensor 72 dB) where `--bits 16` (~92 dB) passes. Measured in the first range mode only; never compensated.
 */
export const FINE_STEPS = [1 / 64, 1 / 256, 1 / 1024, 1 / 4096, 1 / 16384];
/** The code width of the FINE_STEPS candidates. */
export const FINE_BITS = 16;
/** Bytes a tensor costs beyond its codes: entry headers in the ZIP and its manifest record. */
const PER_TENSOR_OVERHEAD_BYTES = 350;
/** Bytes per image entry (container headers, ZIP local and central records, name). */
const PER_PLANE_OVERHEAD_BYTES = 180;

export interface Candidate {
  stride: number;
  relStep?: number;
  range: RangeMode;
  bits: number;
  sse: number;
  /**
   * With layer statistics (`compensate`): whether the codes are error-compensated (rate/compensated.ts; `sse`
   * is then the round-to-nearest weight error that moves the layer output as much) or rounded to nearest.
   */
  compensated?: boolean;
  /** The code width of this candidate where it is not the tensor's own (FINE_STEPS: FINE_BITS). */
  codeBits?: number;
}

export interface TensorRate {
  key: string;
  weights: number;
  candidates: Candidate[];
  /** Output distortion per unit of squared weight error (1 when not probed). */
  sensitivity: number;
}

export function measureCandidates(
  key: string,
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  base: Omit<QuantizeSettings, 'stride' | 'range' | 'relStep'>,
  steps: readonly number[] = ALLOCATION_STEPS,
  ranges: readonly RangeMode[] = ['channel', 'layer'],
  fine: readonly number[] = [],
): TensorRate {
  const weights = planes.reduce((s, p) => s + p.length, 0);
  const grid = ranges.flatMap((range) => steps.map((relStep) => ({ range, relStep, stride: 1 })));
  const fused = base.bits === 8 || base.bits === 16;
  // per range mode, each plane's channel scales: the same at every step, so found once (both modes in the same
  // sweeps of the plane where both are measured)
  const scales = new Map<RangeMode, ChannelScales[]>();
  const scalesOf = (range: RangeMode): ChannelScales[] => {
    let s = scales.get(range);
    if (!s && ranges.includes('channel') && ranges.includes('layer')) {
      const both = planes.map((plane, p) => planeScales(plane, shapes[p], true, true));
      scales.set(
        'channel',
        both.map((b) => b.channel!),
      );
      scales.set(
        'layer',
        both.map((b) => b.layer!),
      );
      s = scales.get(range);
    }
    if (!s) scales.set(range, (s = planes.map((plane, p) => channelScales(plane, shapes[p], range))));
    return s;
  };
  const candidates =
    base.bits === 8
      ? measureStepGrids(planes, shapes, scalesOf, base, grid)
      : grid.map(({ range, relStep, stride }) =>
          fused
            ? measureStepGrid(planes, shapes, scalesOf(range), base, range, relStep)
            : measureQuantized(planes, shapes, { ...base, range, stride, relStep }),
        );
  // 16-bit candidates only beside 8-bit codes (a --bits 16 tensor has them already); one pass a weight each (their
  // codes' runs are a weight or two long: the sorted walk measured no faster)
  if (base.bits === 8)
    for (const relStep of fine)
      candidates.push({
        ...measureStepGrid(planes, shapes, scalesOf(ranges[0]), { ...base, bits: FINE_BITS }, ranges[0], relStep),
        codeBits: FINE_BITS,
      });
  return { key, weights, candidates, sensitivity: 1 };
}

/**
 * measureCandidates' 8-bit step grids for one plane of one-column channels stored column by column (`values`:
 * column c at c·rows, a PyTorch [out, in] matrix as it is in the file), without laying the plane out: the same
 * candidates to the bit. Also the plane's finite values' squares and count (`columnPower`'s order).
 */
export function measureColumnMajor(
  key: string,
  values: Float32Array,
  shape: PlaneShape,
  base: Omit<QuantizeSettings, 'stride' | 'range' | 'relStep'>,
  steps: readonly number[] = ALLOCATION_STEPS,
  ranges: readonly RangeMode[] = ['channel', 'layer'],
): { rate: TensorRate; finite: [number, number]; scales: MeasuredScales } {
  const { rows, cols } = shape;
  const scales = columnMajorScales(values, rows, cols, ranges.includes('channel'), ranges.includes('layer'));
  const grid = ranges.flatMap((range) => steps.map((relStep) => ({ range, relStep })));
  const candidates = measureStepGrids([values], [shape], (range) => [scales[range]!], base, grid, true);
  const { channel, layer } = scales;
  return {
    rate: { key, weights: values.length, candidates, sensitivity: 1 },
    finite: scales.finite,
    scales: { ...(channel ? { channel } : {}), ...(layer ? { layer } : {}) },
  };
}

/** Bits a tensor's entries and records cost, and the bits of a plane's ranges, weights beyond and codes. */
function overheadBits(planes: number): number {
  return 8 * (PER_TENSOR_OVERHEAD_BYTES + PER_PLANE_OVERHEAD_BYTES * planes);
}

function planeBits(codeBits: number, channels: number, rangeDtype: RangeDtype, beyond: number): number {
  // codes, ranges (base64 in the manifest), weights beyond the grid (index delta + float32, before deflate)
  return codeBits + channels * 8 * RANGE_BYTES[rangeDtype] * (4 / 3) + beyond * 64;
}

/** A candidate measured from the codes and values `quantizePlanes` makes (any code width). */
function measureQuantized(planes: readonly Float32Array[], shapes: readonly PlaneShape[], s: QuantizeSettings): Candidate {
  const q = quantizePlanes(planes, shapes, s);
  let bits = overheadBits(planes.length);
  let sse = 0;
  q.forEach((pq, p) => {
    bits += planeBits(codeEntropyBits(pq.codes), pq.ranges.mins.length, pq.rangeDtype, pq.beyond ?? 0);
    const v = planes[p];
    for (let i = 0; i < v.length; i++) if (Number.isFinite(v[i])) sse += (v[i] - pq.restored[i]) ** 2;
  });
  return { stride: s.stride, relStep: s.relStep, range: s.range, bits, sse };
}

/**
 * A step-grid candidate of 8- or 16-bit codes measured in one pass a plane, with no codes or values written:
 * the same squared error, to the last bit, as quantizing it, and the same bits as the entropy of those codes
 * (16-bit codes: their byte-coded estimate, `byteCodedBits`; test/rate.test.ts compares them).
 * Each weight's code, level and error are found as quantizePlane, dequantizePlane and the error sum find them,
 * in the same order.
 */
function measureStepGrid(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  planeScales: readonly ChannelScales[],
  base: Omit<QuantizeSettings, 'stride' | 'range' | 'relStep'>,
  range: RangeMode,
  relStep: number,
): Candidate {
  const { bits: codeWidth } = base;
  const markBeyond = !base.clampBeyond;
  const hist = new Float64Array(2 ** codeWidth);
  let bits = overheadBits(planes.length);
  let sse = 0;
  for (let p = 0; p < planes.length; p++) {
    const { cols } = shapes[p];
    const scales = planeScales[p];
    const g = stepGrid(scales, relStep, codeWidth);
    const { los, spans, inLo, inHi, fill } = gridColumns(g, cols, codeWidth, markBeyond);
    hist.fill(0);
    const m = measurePlane(planes[p], cols, los, spans, inLo, inHi, codeWidth, fill, hist, sse);
    sse = m.sse;
    bits += stepPlaneBits(g, hist, planes[p].length, codeWidth, m.beyond);
  }
  return { stride: 1, relStep, range, bits, sse };
}

/** A step grid per column of a plane: its range, and the interval of weights on it (everything, when weights beyond it are clamped). */
function gridColumns(g: StepGrid, cols: number, codeWidth: number, markBeyond: boolean): ColumnGrid {
  const { los, spans } = columnRanges(g.ranges, cols);
  const { lo: inLo, hi: inHi } = markBeyond
    ? gridBounds(g, cols, codeWidth)
    : { lo: new Float64Array(cols).fill(-Infinity), hi: new Float64Array(cols).fill(Infinity) };
  return { los, spans, inLo, inHi, fill: fillCode(g.ranges.zeroCode) };
}

/** A plane's bits on a step grid, from its code histogram (16-bit codes: as zstd's byte coder sees them). */
function stepPlaneBits(g: StepGrid, hist: Float64Array, n: number, codeWidth: number, beyond: number): number {
  const rangeDtype: RangeDtype = g.stepBytes ? 'step8' : g.f16 ? 'float16' : 'float32';
  const codeBits = codeWidth === 16 ? byteCodedBits(hist, n) : entropyOf(hist, n);
  return planeBits(codeBits, g.steps.length, rangeDtype, beyond);
}

/**
 * Step-grid candidates, all of them from one sort of each plane's columns (rate/sorted.ts): the same bits as
 * measureStepGrid to the last bit, the same squared error within ~1e-9 relative, at a few evaluations per
 * occupied code and column instead of one per weight.
 */
function measureStepGrids(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  scalesOf: (range: RangeMode) => ChannelScales[],
  base: Omit<QuantizeSettings, 'stride' | 'range' | 'relStep'>,
  grid: ReadonlyArray<{ range: RangeMode; relStep: number }>,
  columnMajor = false,
): Candidate[] {
  const { bits: codeWidth } = base;
  const markBeyond = !base.clampBeyond;
  const bits = grid.map(() => overheadBits(planes.length));
  const sse = grid.map(() => 0);
  for (let p = 0; p < planes.length; p++) {
    const { rows, cols } = shapes[p];
    const grids = grid.map(({ range, relStep }) => stepGrid(scalesOf(range)[p], relStep, codeWidth));
    const columns = grids.map((g) => gridColumns(g, cols, codeWidth, markBeyond));
    measureSorted(planes[p], rows, cols, columns, codeWidth, columnMajor).forEach((m, k) => {
      sse[k] += m.sse;
      bits[k] += stepPlaneBits(grids[k], m.hist, planes[p].length, codeWidth, m.beyond);
    });
  }
  return grid.map(({ range, relStep }, k) => ({ stride: 1, relStep, range, bits: bits[k], sse: sse[k] }));
}

/**
 * What 16-bit codes cost through zstd's byte coder: their entropy as symbols undercounts it (measured: 16-bit
 * codes at a step of RMS/256 code to ~15 % more than their entropy), because zstd codes bytes, the high and low
 * byte of each code from one table. Estimated as the sign split writes them: per code its distance from the
 * middle as two bytes, both counted in one byte histogram, plus one sign bit per non-zero distance.
 */
export function byteCodedBits(hist: Float64Array, n: number): number {
  const mid = hist.length >>> 1;
  const bytes = new Float64Array(256);
  let signs = 0;
  for (let c = 0; c < hist.length; c++) {
    const k = hist[c];
    if (!k) continue;
    const d = Math.abs(c - mid);
    bytes[d & 255] += k;
    bytes[d >>> 8] += k;
    if (d) signs += k;
  }
  return entropyOf(bytes, 2 * n) + signs;
}

/**
 * One plane's codes counted into `hist` and its squared error added to `sse` (in element order, as the error sum
 * over restored values adds it): a function of its own, so its loop keeps every value in a register.
 */
function measurePlane(
  plane: Float32Array,
  cols: number,
  los: Float64Array,
  spans: Float64Array,
  inLo: Float64Array,
  inHi: Float64Array,
  codeWidth: number,
  fill: number,
  hist: Float64Array,
  sseIn: number,
): { sse: number; beyond: number } {
  const levels = 2 ** codeWidth;
  const perLevel = 1 / levels;
  const top = levels - 1;
  let sse = sseIn;
  let beyond = 0;
  for (let i = 0, c = 0; i < plane.length; i++, c = c + 1 === cols ? 0 : c + 1) {
    const v = plane[i];
    // non-finite (side data) and beyond the grid (stored exactly): the fill code, no error counted
    if (!Number.isFinite(v)) {
      hist[fill]++;
      continue;
    }
    if (v < inLo[c] || v > inHi[c]) {
      hist[fill]++;
      beyond++;
      continue;
    }
    const lo = los[c];
    const span = spans[c];
    if (!(span > 0)) {
      hist[fill]++;
      sse += (v - Math.fround(lo)) ** 2;
      continue;
    }
    const q = Math.floor(((v - lo) / span) * levels);
    const code = q < 0 ? 0 : q > top ? top : q;
    hist[code]++;
    // (code + ½)·span/2^bits: a division by a power of two is a multiplication by its inverse, to the last bit
    sse += (v - Math.fround(lo + (code + 0.5) * span * perLevel)) ** 2;
  }
  return { sse, beyond };
}

/** Per tensor, the candidate index minimising sensitivity·sse + λ·bits. */
export function choose(tensors: readonly TensorRate[], lambda: number): number[] {
  return tensors.map((t) => {
    let best = 0;
    let bestCost = Infinity;
    t.candidates.forEach((c, i) => {
      const cost = t.sensitivity * c.sse + lambda * c.bits;
      if (cost < bestCost) {
        bestCost = cost;
        best = i;
      }
    });
    return best;
  });
}

export function totalBits(tensors: readonly TensorRate[], choice: readonly number[]): number {
  return tensors.reduce((s, t, i) => s + t.candidates[choice[i]].bits, 0);
}

/** The λ grid searched: log-spaced, wide enough for any sensitivity scale. */
function lambdaAt(x: number, scale: number): number {
  return scale * 10 ** x;
}

function lambdaScale(tensors: readonly TensorRate[]): number {
  // typical distortion per bit: makes the search range independent of units
  let d = 0;
  let b = 0;
  for (const t of tensors) {
    // the tensor's own code width: the scale the allocation had before 16-bit candidates were added
    const own = t.candidates.filter((c) => c.codeBits === undefined);
    const first = own[0];
    const last = own[own.length - 1];
    d += t.sensitivity * Math.max(last.sse - first.sse, 1e-30);
    b += Math.max(first.bits - last.bits, 1);
  }
  return d / b;
}

/**
 * A choice whose bits fit the budget (or the smallest if none fits), with no more modelled distortion than the
 * Lagrangian's (`lagrangianChoice`): that choice, then what it left of the budget spent (`spendRemainder`, greedy:
 * not the least distortion any choice within the budget could reach).
 */
export function allocateForBudget(tensors: readonly TensorRate[], budgetBits: number): number[] {
  return spendRemainder(tensors, lagrangianChoice(tensors, budgetBits), budgetBits);
}

/**
 * The choice at the smallest λ whose bits fit the budget (or the smallest if none fits). Between two λ the choices
 * jump: just below this λ a tensor moves to a finer grid and the total no longer fits, so up to one tensor's step
 * of the budget is left unspent (ISNet at 3 bits/weight: 2.972 allocated).
 */
export function lagrangianChoice(tensors: readonly TensorRate[], budgetBits: number): number[] {
  const scale = lambdaScale(tensors);
  let lo = -8;
  let hi = 8;
  const fits = (x: number): boolean => totalBits(tensors, choose(tensors, lambdaAt(x, scale))) <= budgetBits;
  if (fits(lo)) return choose(tensors, lambdaAt(lo, scale));
  if (!fits(hi)) return choose(tensors, lambdaAt(hi, scale));
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (fits(mid)) hi = mid;
    else lo = mid;
  }
  return choose(tensors, lambdaAt(hi, scale));
}

/**
 * Spends what a choice leaves of the budget: over and over, the move of one tensor to a candidate that costs more
 * bits and saves modelled distortion, the most distortion saved per bit among the moves that still fit, until no
 * move fits. The modelled distortion never grows and the bits never pass the budget (a choice already over it is
 * returned as it is).
 */
export function spendRemainder(tensors: readonly TensorRate[], choice: readonly number[], budgetBits: number): number[] {
  const out = choice.slice();
  let left = budgetBits - totalBits(tensors, out);
  for (;;) {
    let tensor = -1;
    let to = -1;
    let bestGain = 0;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i];
      const now = t.candidates[out[i]];
      for (let k = 0; k < t.candidates.length; k++) {
        const c = t.candidates[k];
        const extra = c.bits - now.bits;
        if (!(extra > 0 && extra <= left)) continue;
        const gain = (t.sensitivity * (now.sse - c.sse)) / extra;
        if (gain > bestGain) {
          bestGain = gain;
          tensor = i;
          to = k;
        }
      }
    }
    if (tensor < 0) return out;
    left -= tensors[tensor].candidates[to].bits - tensors[tensor].candidates[out[tensor]].bits;
    out[tensor] = to;
  }
}

/**
 * The cheapest choice whose measured loss stays within `maxLoss`, searching λ
 * by bisection with a real evaluation at each step (loss assumed to grow with λ).
 */
export async function allocateForLoss(
  tensors: readonly TensorRate[],
  maxLoss: number,
  lossOf: (choice: number[]) => Promise<number>,
  steps = 9,
): Promise<{ choice: number[]; loss: number }> {
  const scale = lambdaScale(tensors);
  // neighbouring λ often choose the same grids: each choice is measured once
  const measured = new Map<string, number>();
  const measure = async (choice: number[]): Promise<number> => {
    const key = choice.join(',');
    let loss = measured.get(key);
    if (loss === undefined) measured.set(key, (loss = await lossOf(choice)));
    return loss;
  };
  let lo = -8;
  let hi = 6;
  const first = choose(tensors, lambdaAt(lo, scale));
  let best = { choice: first, loss: await measure(first) };
  if (best.loss > maxLoss) return best;
  for (let i = 0; i < steps; i++) {
    const mid = (lo + hi) / 2;
    const choice = choose(tensors, lambdaAt(mid, scale));
    const loss = await measure(choice);
    if (loss <= maxLoss) {
      lo = mid;
      best = { choice, loss };
    } else hi = mid;
  }
  return best;
}
