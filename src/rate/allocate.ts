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

import { codeEntropyBits } from './entropy.js';
import { RANGE_BYTES, quantizePlanes, type QuantizeSettings } from '../quantize/tensor.js';
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
): TensorRate {
  const weights = planes.reduce((s, p) => s + p.length, 0);
  const grid = ranges.flatMap((range) => steps.map((relStep) => ({ range, relStep, stride: 1 })));
  const candidates = grid.map(({ range, relStep, stride }) => {
    const q = quantizePlanes(planes, shapes, { ...base, range, stride, relStep });
    let bits = 8 * (PER_TENSOR_OVERHEAD_BYTES + PER_PLANE_OVERHEAD_BYTES * planes.length);
    let sse = 0;
    q.forEach((pq, p) => {
      // codes, ranges (base64 in the manifest), weights beyond the grid (index delta + float32, before deflate)
      bits +=
        codeEntropyBits(pq.codes) + pq.ranges.mins.length * 8 * RANGE_BYTES[pq.rangeDtype] * (4 / 3) + (pq.beyond ?? 0) * 64;
      const v = planes[p];
      for (let i = 0; i < v.length; i++) if (Number.isFinite(v[i])) sse += (v[i] - pq.restored[i]) ** 2;
    });
    return { stride, relStep, range, bits, sse };
  });
  return { key, weights, candidates, sensitivity: 1 };
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
    const first = t.candidates[0];
    const last = t.candidates[t.candidates.length - 1];
    d += t.sensitivity * Math.max(last.sse - first.sse, 1e-30);
    b += Math.max(first.bits - last.bits, 1);
  }
  return d / b;
}

/** The choice with the least modelled distortion whose bits fit the budget (or the smallest if none fits). */
export function allocateForBudget(tensors: readonly TensorRate[], budgetBits: number): number[] {
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
  let lo = -8;
  let hi = 6;
  let best = { choice: choose(tensors, lambdaAt(lo, scale)), loss: await lossOf(choose(tensors, lambdaAt(lo, scale))) };
  if (best.loss > maxLoss) return best;
  for (let i = 0; i < steps; i++) {
    const mid = (lo + hi) / 2;
    const choice = choose(tensors, lambdaAt(mid, scale));
    const loss = await lossOf(choice);
    if (loss <= maxLoss) {
      lo = mid;
      best = { choice, loss };
    } else hi = mid;
  }
  return best;
}
