/**
 * The allocator's error model under error-compensating rounding (`compensate`, src/compensate). Rate allocation
 * (allocate.ts) weighs each candidate grid by its squared weight error times the tensor's sensitivity. Compensated
 * codes have a larger weight error than round-to-nearest on the same grid but a much smaller error in the
 * layer's output (what the model sees), and by a factor that differs per tensor (0.05× to 0.5× measured). So a
 * candidate's error becomes the round-to-nearest weight error that moves the layer's output as much as the
 * compensated codes do:
 *
 *     sse'(c) = sse_rtn(c) · ‖X·ΔW_comp(c)ᵀ‖² / ‖X·ΔW_rtn(c)ᵀ‖²
 *
 * with both layer-output errors measured on the calibration statistics (H = XᵀX) at a few anchor steps and the
 * ratio interpolated in log–log between them (constant beyond the ends): the ratio changes slowly with the step
 * (PaddleOCR 5.6–6.3× over relStep 1/4…1). The codes' extra entropy is measured at the same anchors and added to
 * each candidate's bits. The sensitivity probe then substitutes the compensated weights, so probe and error model
 * describe the codes that will be written.
 */

import { deflateRawSync } from 'node:zlib';
import { compensatePlanes, planeOutputError, type TensorStatistics } from '../compensate/index.js';
import { holdInverses } from '../compensate/planes.js';
import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import { quantizePlanes, type QuantizeSettings } from '../quantize/tensor.js';
import type { CodeArray, RangeMode } from '../quantize/uniform.js';
import { measureCandidates, type TensorRate } from './allocate.js';

/**
 * Steps (fractions of RMS) at which the compensated/round-to-nearest error ratio and extra bits are measured;
 * the coarsest candidate among them, where the extra bits grow most (the codes leave zero).
 */
export const COMPENSATION_ANCHORS = [1 / 8, 1 / 3, 1, 2];

/**
 * The coarsest step offered compensated. Beyond it the layer-output error still falls, but the model's output
 * stops following it (every layer's compensation assumes the original inputs; coarse grids move them a lot):
 * Silero v6 (16 kHz file) at --target-bpw 2.0 with compensated candidates up to relStep 2: agreement 0.64 against
 * 0.84 rounded to nearest.
 */
export const MAX_COMPENSATED_STEP = 1;

/** The ratio of layer-output errors, compensated over round-to-nearest, at one step. */
export interface CompensationRatio {
  readonly relStep: number;
  /** ‖X·ΔW_compᵀ‖² / ‖X·ΔW_rtnᵀ‖² (1 where compensation fell back or neither has an error). */
  readonly ratio: number;
  /**
   * Code bits (deflated) of the compensated codes beyond round-to-nearest's: the codes spread a little, and a
   * structured tensor loses the regularity a codec exploits (Silero v6's STFT basis: +1.6 bits/weight).
   */
  readonly extraBits: number;
}

/**
 * Output units measured per tensor when its statistics are block-diagonal (large models: ISNet, K up to 9216):
 * every ⌈units / SAMPLED_UNITS⌉-th output unit, so the anchors cost rows/s·K·B instead of rows·K·B. The ratio is a
 * ratio of sums over output units (each on its own grid), estimated from the sample; the extra bits are scaled up.
 * Full statistics (every other model) measure every unit, as before.
 */
export const SAMPLED_UNITS = 128;

/** The planes of every `every`-th output unit of an fc or [out, in, …] conv layout (one group), or undefined. */
export function sampleOutputUnits(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  layout: LayoutSpec,
  every: number,
): { planes: Float32Array[]; shapes: PlaneShape[]; layout: LayoutSpec; units: number } | undefined {
  if (planes.length !== 1 || every <= 1) return undefined;
  let units: number;
  if (layout.kind === 'fc') units = layout.nout;
  else if (layout.kind === 'conv' && layout.order === 'out_in') units = layout.nfout;
  else return undefined;
  const { rows, cols, channelWidth } = shapes[0];
  const width = cols / units;
  if (!Number.isInteger(width) || channelWidth !== width) return undefined;
  const kept = Math.ceil(units / every);
  const outCols = kept * width;
  const out = new Float32Array(rows * outCols);
  const src = planes[0];
  for (let r = 0; r < rows; r++)
    for (let u = 0; u < kept; u++)
      for (let y = 0; y < width; y++) out[r * outCols + u * width + y] = src[r * cols + u * every * width + y];
  const sampled: LayoutSpec = layout.kind === 'fc' ? { ...layout, nout: kept } : { ...layout, nfout: kept };
  return { planes: [out], shapes: [{ ...shapes[0], cols: outCols }], layout: sampled, units: kept };
}

/** Measures the error ratio of a tensor's working planes (outliers NaN, unrotated) at each anchor step. */
export function compensationRatios(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  layout: LayoutSpec,
  base: Pick<QuantizeSettings, 'bits' | 'clip'>,
  range: RangeMode,
  stats: TensorStatistics,
  anchors: readonly number[] = COMPENSATION_ANCHORS,
): CompensationRatio[] {
  // one H at every anchor step: its inverses prepared once, let go at the end
  return holdInverses(stats, (): CompensationRatio[] => {
    const units = layout.kind === 'fc' ? layout.nout : layout.kind === 'conv' ? layout.nfout : 0;
    const sample =
      stats.blocks && stats.h.length === 1 && range === 'channel' && units > SAMPLED_UNITS
        ? sampleOutputUnits(planes, shapes, layout, Math.ceil(units / SAMPLED_UNITS))
        : undefined;
    if (sample) {
      const scale = units / sample.units;
      return compensationRatios(sample.planes, sample.shapes, sample.layout, base, range, stats, anchors).map((r) => ({
        ...r,
        extraBits: r.extraBits * scale,
      }));
    }
    return anchors.map((relStep) => {
      const settings: QuantizeSettings = { ...base, range, stride: 1, relStep };
      const rtn = quantizePlanes(planes, shapes, settings);
      const comp = compensatePlanes(planes, shapes, layout, settings, stats);
      if (comp.every((q) => q.compensation.method === 'rtn')) return { relStep, ratio: 1, extraBits: 0 };
      // deflated size, not order-0 entropy: a structured tensor (Silero's fixed Fourier basis) codes far below
      // its order-0 entropy when rounded to nearest (zstd: 0.54 bits/weight at relStep 1/3, entropy 3.68) and
      // loses that regularity when compensated (2.17 bits/weight; entropy 3.72)
      const bits = (qs: ReadonlyArray<{ codes: CodeArray }>): number =>
        qs.reduce(
          (n, q) => n + 8 * deflateRawSync(new Uint8Array(q.codes.buffer, q.codes.byteOffset, q.codes.byteLength)).length,
          0,
        );
      const error = (restored: Float32Array[]): number =>
        planeOutputError(layout, shapes, planes, restored, stats, false)?.error ?? 0;
      const eRtn = error(rtn.map((q) => q.restored));
      const eComp = error(comp.map((q) => q.restored));
      return { relStep, ratio: eRtn > 0 ? eComp / eRtn : 1, extraBits: bits(comp) - bits(rtn) };
    });
  });
}

/** Interpolation in log step between the anchors (the end values beyond them), of `f` or of its log. */
function interpolate(
  ratios: readonly CompensationRatio[],
  relStep: number,
  f: (r: CompensationRatio) => number,
  logValues: boolean,
): number {
  const r = [...ratios].sort((a, b) => a.relStep - b.relStep);
  if (relStep <= r[0].relStep) return f(r[0]);
  const last = r[r.length - 1];
  if (relStep >= last.relStep) return f(last);
  const k = r.findIndex((x) => x.relStep >= relStep);
  const t = Math.log(relStep / r[k - 1].relStep) / Math.log(r[k].relStep / r[k - 1].relStep);
  const [a, b] = [f(r[k - 1]), f(r[k])];
  return logValues ? Math.exp(Math.log(a) + t * Math.log(b / a)) : a + t * (b - a);
}

/** The error ratio at any step: log–log interpolation between the anchors, the end values beyond them. */
export function ratioAt(ratios: readonly CompensationRatio[], relStep: number): number {
  const usable = ratios.filter((x) => x.ratio > 0);
  return usable.length ? interpolate(usable, relStep, (x) => x.ratio, true) : 1;
}

/** The extra code bits at any step: linear in log step between the anchors, the end values beyond them. */
export function extraBitsAt(ratios: readonly CompensationRatio[], relStep: number): number {
  return ratios.length ? interpolate(ratios, relStep, (x) => x.extraBits, false) : 0;
}

/**
 * A tensor's candidates both ways (in place): every step-grid candidate rounded to nearest (`compensated:
 * false`) and compensated (`compensated: true`: its squared error scaled by the ratio at its step, its bits
 * raised by the codes' extra entropy there). The allocation then chooses per tensor, grid and way: compensation
 * is not free in bits (the codes spread, and a structured tensor such as a fixed Fourier basis loses the
 * regularity its codec exploits), so where it buys less error than a finer grid would, rounding wins.
 */
export function addCompensatedCandidates(rate: TensorRate, ratios: readonly CompensationRatio[]): void {
  const extra = rate.candidates
    .filter((c) => c.relStep !== undefined && c.relStep <= MAX_COMPENSATED_STEP && c.codeBits === undefined)
    .map((c) => ({
      ...c,
      sse: c.sse * ratioAt(ratios, c.relStep!),
      bits: Math.max(0, c.bits + extraBitsAt(ratios, c.relStep!)),
      compensated: true,
    }));
  for (const c of rate.candidates) c.compensated = false;
  rate.candidates.push(...extra);
}

/** The verdict on compensating one tensor at a grid fixed by the user (no allocation to weigh it). */
export interface CompensationVerdict {
  readonly pays: boolean;
  /** Error ratio and extra bits at the grid (see CompensationRatio). */
  readonly ratio: number;
  readonly extraBits: number;
  /** The round-to-nearest squared weight error the compensation saves, and what its extra bits would buy. */
  readonly saved: number;
  readonly cost: number;
}

/**
 * Whether compensating a tensor on a fixed step grid (`--step`) is worth its extra bits, at the exchange rate
 * of the tensor's own round-to-nearest rate–distortion curve there (λ = −Δsse/Δbits between steps ×/÷ 1.25,
 * the rate the allocation's Lagrangian would price bits at): it pays when the squared weight error it saves,
 * sse·(1 − ratio), exceeds λ·extraBits. A fixed Fourier basis does not (its rounded codes deflate to a fraction
 * of their entropy); learned weights do by a wide margin.
 */
export function compensationVerdict(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  layout: LayoutSpec,
  base: Pick<QuantizeSettings, 'bits' | 'clip'>,
  range: RangeMode,
  relStep: number,
  stats: TensorStatistics,
): CompensationVerdict {
  const [r] = compensationRatios(planes, shapes, layout, base, range, stats, [relStep]);
  const curve = measureCandidates('', planes, shapes, base, [relStep / 1.25, relStep, relStep * 1.25], [range]).candidates;
  const [fine, at, coarse] = curve;
  const lambda = Math.max(coarse.sse - fine.sse, 0) / Math.max(fine.bits - coarse.bits, 1);
  const saved = at.sse * (1 - r.ratio);
  const cost = lambda * Math.max(r.extraBits, 0);
  return { pays: saved > cost, ratio: r.ratio, extraBits: r.extraBits, saved, cost };
}
