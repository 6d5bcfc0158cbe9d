/**
 * Stage 3, quantize: the prepared planes to M1 codes and ranges by the tensor's quantizer (registered by
 * id, quantize/registry.ts), with weights beyond a step grid joining the exact side values; and the
 * per-tensor search of lossless rate control: the coarsest code grid that keeps an SNR target.
 */

import { compensatePlanes, type CompensatedQuantization } from '../compensate/planes.js';
import type { TensorStatistics as LayerStatistics } from '../compensate/statistics.js';
import { getQuantizer, roundToNearest, type TensorStatistics } from '../quantize/registry.js';
import { planeRanges, type PlaneQuantization, type QuantizeSettings } from '../quantize/tensor.js';
import { addPlaneErrors, type NonFiniteSide } from '../quantize/uniform.js';
import { addToErrorHistogram, histogramError, newErrorHistogram, type ErrorHistogram } from '../quantize/error-histogram.js';
import type { TensorSettings } from './options.js';
import { markedSide, type PreparedTensor } from './prepare.js';
import { wholeSegments } from '../transform/hadamard.js';

/** A tensor's codes and ranges per plane, the exact side values, and the grid stride used. */
export interface QuantizedTensor {
  readonly planes: readonly PlaneQuantization[];
  readonly side?: NonFiniteSide;
  readonly stride: number;
  /** Per plane, how compensation went, when layer statistics were given. */
  readonly compensated?: readonly CompensatedQuantization['compensation'][];
}

/** SNR in dB of restored planes against the working ones (side-stored positions left out). */
export function snrOf(values: readonly Float32Array[], restored: readonly Float32Array[]): number {
  let sp = 0;
  let se = 0;
  values.forEach((v, p) => {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) continue;
      sp += v[i] * v[i];
      se += (v[i] - restored[p][i]) ** 2;
    }
  });
  return se === 0 ? Infinity : 10 * Math.log10(sp / se);
}

/** Candidate strides for per-tensor SNR targets: 256/k levels for 8-bit codes, from all codes to 4 levels. */
export const SNR_STRIDES = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64];

function quantizeSettings(s: TensorSettings, stride: number): QuantizeSettings {
  return { bits: s.bits, range: s.range, stride, clip: s.clip, relStep: s.relStep };
}

/** The planes' codes by the tensor's quantizer at a given stride. */
export function quantizePrepared(
  prepared: PreparedTensor,
  settings: TensorSettings,
  stride: number,
  stats?: TensorStatistics,
): PlaneQuantization[] {
  const s = quantizeSettings(settings, stride);
  return getQuantizer(settings.quantizer).quantize(
    prepared.planes,
    prepared.shapes,
    prepared.channelSteps ? { ...s, channelSteps: prepared.channelSteps } : s,
    stats,
  );
}

/** Per-tensor rate control for lossless codecs: the coarsest stride whose codes keep the SNR target. */
export function coarsestStride(
  prepared: PreparedTensor,
  settings: TensorSettings,
  targetSnr: number,
  stats?: TensorStatistics,
): number {
  const { planes, shapes } = prepared;
  // Round to nearest on ranges no stride changes: each stride's SNR in one pass a plane, nothing written
  // (the same sums as snrOf of the quantized planes). Otherwise every stride is quantized in full.
  const grids =
    settings.quantizer === roundToNearest.id && settings.relStep === undefined
      ? planes.map((plane, p) => planeRanges(plane, shapes[p], quantizeSettings(settings, 1)))
      : undefined;
  const fused = grids?.every((g) => !g.byStride) ? grids : undefined;
  const snrOfSums = (sums: { signal: number; error: number }): number =>
    sums.error === 0 ? Infinity : 10 * Math.log10(sums.signal / sums.error);
  // a stride's exact SNR (addPlaneErrors where no stride changes the ranges, else the stride quantized in full)
  const snrAt = (k: number): number => {
    if (!fused)
      return snrOf(
        planes,
        quantizePrepared(prepared, settings, k, stats).map((x) => x.restored),
      );
    const sums = [{ signal: 0, error: 0 }];
    planes.forEach((plane, p) => addPlaneErrors(plane, shapes[p].cols, settings.bits, fused[p].ranges, [k], sums));
    return snrOfSums(sums[0]);
  };
  // every stride's error from one histogram pass; a stride is measured exactly only where the target lies within
  // the estimate's bound (error-histogram.ts): the same stride as measuring each, in a fraction of the time
  const histograms = new Map<number | undefined, ErrorHistogram>();
  let signal = 0;
  fused?.forEach(({ ranges }, p) => {
    let h = histograms.get(ranges.zeroCode);
    if (!h) histograms.set(ranges.zeroCode, (h = newErrorHistogram(settings.bits, ranges.zeroCode)));
    signal += addToErrorHistogram(h, planes[p], shapes[p].cols, ranges);
  });
  const threshold = signal / 10 ** (targetSnr / 10);
  const passes = (k: number): boolean => {
    if (!fused) return snrAt(k) >= targetSnr;
    let error = 0;
    let bound = 0;
    for (const h of histograms.values()) {
      const e = histogramError(h, k);
      error += e.error;
      bound += e.bound;
    }
    return error + bound < threshold ? true : error - bound > threshold ? false : snrAt(k) >= targetSnr;
  };
  // the first stride that misses the target ends the search
  let stride = 1;
  for (const k of SNR_STRIDES) {
    if (!passes(k)) break;
    stride = k;
  }
  return stride;
}

/** Quantizes the prepared tensor; weights beyond a step grid join the exact side values (in file order). */
export function quantizeTensor(
  prepared: PreparedTensor,
  values: Float32Array,
  settings: TensorSettings,
  stride: number,
  stats?: TensorStatistics,
  layer?: LayerStatistics,
): QuantizedTensor {
  // error-compensating rounding (compensate/planes.ts) onto the same grid; the planes must be unrotated
  const compensated =
    layer && !prepared.seeds
      ? compensatePlanes(prepared.planes, prepared.shapes, prepared.layout, quantizeSettings(settings, stride), layer)
      : undefined;
  const planes = compensated ?? quantizePrepared(prepared, settings, stride, stats);
  let side = prepared.side;
  // a rotated plane's weights beyond its grid are restored after the decoder undoes the rotation: their whole
  // rotation segments are stored exactly (one weight alone left its segment with the rotated value lost)
  if (prepared.seeds)
    planes.forEach((q, p) => {
      if (q.beyond && q.working) wholeSegments(q.working, prepared.shapes[p].rows, prepared.shapes[p].cols);
    });
  if (planes.some((q) => q.beyond)) {
    side = markedSide(
      planes.map((q, p) => q.working ?? prepared.planes[p]),
      prepared.shapes,
      prepared.layout,
      values,
    );
  }
  return { planes, side, stride, ...(compensated ? { compensated: compensated.map((q) => q.compensation) } : {}) };
}
