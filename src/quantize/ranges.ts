/**
 * Range choices beyond per-layer min/max: ranges stored compactly (float16,
 * rounded outward so they still cover the data), and clipping ranges chosen
 * per channel by search for the least reconstruction error at the grid in use.
 * The decoder reads whatever ranges are stored; every choice here is the
 * encoder's.
 */

import { float16ToFloat32, float32ToFloat16 } from '../formats/model.js';
import { type PlaneRanges, quantizePlane, dequantizePlane, findRanges, type RangeMode } from './uniform.js';
import { exactStep, rangeOfStep } from './step.js';

const F16_MAX = 65504;

/** Rounds ranges outward to float16 when every bound fits; returns the dtype used. */
export function storageRanges(r: PlaneRanges): { ranges: PlaneRanges; dtype: 'float16' | 'float32' } {
  const all = [...r.mins, ...r.maxs];
  if (!all.every((v) => Math.abs(v) <= F16_MAX)) return { ranges: r, dtype: 'float32' };
  const down = (v: number): number => {
    let h = float16ToFloat32(float32ToFloat16(v));
    if (h > v) h = float16ToFloat32(nextF16(float32ToFloat16(v), -1));
    return h;
  };
  const up = (v: number): number => {
    let h = float16ToFloat32(float32ToFloat16(v));
    if (h < v) h = float16ToFloat32(nextF16(float32ToFloat16(v), +1));
    return h;
  };
  const mins = r.mins.map(down);
  const maxs = r.maxs.map((v, i) => (r.maxs[i] === r.mins[i] ? mins[i] : up(v)));
  // A constant channel stays constant only if its value is exactly representable.
  for (let i = 0; i < mins.length; i++)
    if (r.maxs[i] === r.mins[i] && mins[i] !== r.mins[i]) return { ranges: r, dtype: 'float32' };
  return { ranges: { mins, maxs, channelWidth: r.channelWidth }, dtype: 'float16' };
}

/** The neighbouring float16 bit pattern towards +∞ (dir 1) or −∞ (dir −1). */
function nextF16(h: number, dir: 1 | -1): number {
  const negative = (h & 0x8000) !== 0;
  const mag = h & 0x7fff;
  if (mag === 0) return dir > 0 ? 0x0001 : 0x8001;
  return (negative ? dir > 0 : dir < 0) ? h - 1 : h + 1;
}

/** Candidate shrink factors of a channel's range toward its midpoint (1 = min/max). */
const CLIP_FACTORS = [1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/**
 * Per channel (or per plane), the clipping range with the least squared error
 * for the given bits and stride, searched over shrink factors of min/max.
 */
export function searchClipRanges(
  values: Float32Array,
  rows: number,
  cols: number,
  mode: RangeMode,
  channelWidth: number,
  bits: number,
  stride: number,
): PlaneRanges {
  const base = findRanges(values, rows, cols, mode, channelWidth);
  const width = base.channelWidth;
  const channels = base.mins.length;
  const best = { mins: Float32Array.from(base.mins), maxs: Float32Array.from(base.maxs), channelWidth: width };
  const bestErr = new Float64Array(channels).fill(Infinity);
  for (const f of CLIP_FACTORS) {
    const mid = (i: number): number => (base.mins[i] + base.maxs[i]) / 2;
    const cand: PlaneRanges = {
      mins: base.mins.map((lo, i) => mid(i) - (mid(i) - lo) * f),
      maxs: base.maxs.map((hi, i) => mid(i) + (hi - mid(i)) * f),
      channelWidth: width,
    };
    const { ranges } = storageRanges(cand);
    const back = dequantizePlane(quantizePlane(values, rows, cols, bits, ranges, stride), rows, cols, bits, ranges);
    const err = new Float64Array(channels);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        const v = values[i];
        if (!Number.isFinite(v)) continue;
        err[Math.floor(c / width)] += (v - back[i]) ** 2;
      }
    for (let ch = 0; ch < channels; ch++)
      if (err[ch] < bestErr[ch]) {
        bestErr[ch] = err[ch];
        best.mins[ch] = cand.mins[ch];
        best.maxs[ch] = cand.maxs[ch];
      }
  }
  return best;
}

/**
 * The zero-centred grid of per-output-channel int8 (int16) round-to-nearest, expressed as M1 ranges: per
 * channel a step Δ = max|w| / (2^(bits−1) − 1) (rounded up to the precision that keeps the range exact in
 * float32, see step.ts exactStep) and the range [−(2^(bits−1) + ½)Δ, (2^(bits−1) − ½)Δ], so code 2^(bits−1)
 * decodes to exactly 0, a channel's largest |w| is a grid point, and the codes are those of symmetric
 * per-channel round-to-nearest (+2^(bits−1)): the same error, for the same plain M1 decoder. With `clip`,
 * each channel's Δ is searched over shrink factors of max|w| for the least squared error (weights beyond are
 * clamped). Undefined when some step has no exact range (22+-bit codes, absurd magnitudes): the caller
 * falls back to min/max ranges.
 */
export function symmetricRanges(
  values: Float32Array,
  rows: number,
  cols: number,
  channelWidth: number,
  bits: number,
  clip = false,
): { ranges: PlaneRanges; steps: Float32Array } | undefined {
  const channels = Math.ceil(cols / channelWidth);
  const maxAbs = new Float64Array(channels);
  // (NaN and ±Infinity, non-finite weights stored apart, are left out)
  if (channelWidth === 1)
    // fc planes, a channel a column: no column → channel table (the loop below, 1.7× slower)
    for (let r = 0, i = 0; r < rows; r++)
      for (let c = 0; c < cols; c++, i++) {
        const a = Math.abs(values[i]);
        if (a > maxAbs[c] && a !== Infinity) maxAbs[c] = a;
      }
  else {
    const channelOf = Int32Array.from({ length: cols }, (_, c) => Math.floor(c / channelWidth));
    for (let r = 0, i = 0; r < rows; r++)
      for (let c = 0; c < cols; c++, i++) {
        const a = Math.abs(values[i]);
        if (a > maxAbs[channelOf[c]] && a !== Infinity) maxAbs[channelOf[c]] = a;
      }
  }
  if (!clip) return symmetricFromMaxAbs(maxAbs, channelWidth, bits);
  const half = 2 ** (bits - 1);
  const make = (steps: Float32Array): PlaneRanges => {
    const mins = new Float32Array(channels);
    const maxs = new Float32Array(channels);
    steps.forEach((st, ch) => ([mins[ch], maxs[ch]] = rangeOfStep(st, bits)));
    return { mins, maxs, channelWidth, zeroCode: half };
  };
  const stepsAt = (factor: number): Float32Array | undefined => {
    const steps = new Float32Array(channels);
    for (let ch = 0; ch < channels; ch++) {
      const st = exactStep((factor * maxAbs[ch]) / (half - 1), bits);
      if (st === undefined) return undefined;
      steps[ch] = st;
    }
    return steps;
  };
  const steps = stepsAt(1);
  if (!steps) return undefined;
  const best = Float32Array.from(steps);
  const bestErr = new Float64Array(channels).fill(Infinity);
  for (const f of CLIP_FACTORS) {
    const cand = stepsAt(f);
    if (!cand) continue;
    const ranges = make(cand);
    const back = dequantizePlane(quantizePlane(values, rows, cols, bits, ranges), rows, cols, bits, ranges);
    const err = new Float64Array(channels);
    for (let i = 0; i < values.length; i++)
      if (Number.isFinite(values[i])) err[Math.floor((i % cols) / channelWidth)] += (values[i] - back[i]) ** 2;
    for (let ch = 0; ch < channels; ch++)
      if (err[ch] < bestErr[ch]) {
        bestErr[ch] = err[ch];
        best[ch] = cand[ch];
      }
  }
  return { ranges: make(best), steps: best };
}

/**
 * `symmetricRanges` without clipping, from each channel's largest |w| (found by the caller, in any order: a
 * maximum does not depend on it). Undefined where some step has no exact range.
 */
export function symmetricFromMaxAbs(
  maxAbs: Float64Array,
  channelWidth: number,
  bits: number,
): { ranges: PlaneRanges; steps: Float32Array } | undefined {
  const { ranges, steps } = symmetricTarget(maxAbs.length, channelWidth, bits);
  for (let ch = 0; ch < maxAbs.length; ch++) if (!symmetricChannel(steps, ranges, ch, maxAbs[ch], bits)) return undefined;
  return { ranges, steps };
}

/** The ranges and steps of a symmetric grid of `channels` channels, to be filled by `symmetricChannel`. */
export function symmetricTarget(
  channels: number,
  channelWidth: number,
  bits: number,
): { ranges: PlaneRanges; steps: Float32Array } {
  return {
    ranges: { mins: new Float32Array(channels), maxs: new Float32Array(channels), channelWidth, zeroCode: 2 ** (bits - 1) },
    steps: new Float32Array(channels),
  };
}

/**
 * One channel of `symmetricFromMaxAbs`, from its largest |w|: its step and range written at `ch` of `steps` and
 * `ranges`. False where the step has no exact range.
 */
export function symmetricChannel(steps: Float32Array, ranges: PlaneRanges, ch: number, maxAbs: number, bits: number): boolean {
  const st = exactStep(maxAbs / (2 ** (bits - 1) - 1), bits);
  if (st === undefined) return false;
  steps[ch] = st;
  [ranges.mins[ch], ranges.maxs[ch]] = rangeOfStep(st, bits);
  return true;
}
