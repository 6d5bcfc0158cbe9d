/**
 * Quantizers registered under a stable id (after llama.cpp's gguf-py `quants.py`): each turns a tensor's
 * working planes into M1 codes and the ranges they decode with, so every quantizer's output decodes the
 * same way (the decoder never needs to know which one ran). The resolved settings of a tensor name its
 * quantizer by id (options.ts); the encoder dispatches here. A new quantizer (an error-compensating one,
 * say) is a module and one `registerQuantizer` line; it may use calibration statistics of the tensor's
 * inputs, which the pipeline hands to `quantize` when it has them.
 */

import { OptionError } from '../errors.js';
import type { PlaneShape } from '../layout/types.js';
import { quantizePlanes, type PlaneQuantization, type QuantizeSettings } from './tensor.js';

/**
 * What calibration tells about a tensor's inputs, per plane (absent where unknown). A plane's rows are the
 * inputs of the layer (fc and gate matrices: one row per input; conv: per input channel and kernel row),
 * so a Hessian is rows × rows.
 */
export interface TensorStatistics {
  /** Per plane: XᵀX of the inputs along the plane's rows, row-major float64 (rows × rows). */
  hessians?: ReadonlyArray<Float64Array | undefined>;
  /** How many calibration samples the statistics summarise. */
  samples?: number;
}

export interface Quantizer {
  /** Stable id, as a tensor's settings name it. */
  id: string;
  description: string;
  /** Codes, ranges and the values they decode to for every plane (`stats`: calibration data, if any). */
  quantize(
    planes: readonly Float32Array[],
    shapes: readonly PlaneShape[],
    settings: QuantizeSettings,
    stats?: TensorStatistics,
  ): PlaneQuantization[];
}

/** Round to nearest on [min, max] (or searched clipping) ranges, every `stride`-th code (M1 as written). */
export const roundToNearest: Quantizer = {
  id: 'rtn',
  description:
    'round to nearest on per-channel or per-layer [min, max] ranges (clipped by search with clip), on every stride-th code',
  quantize: (planes, shapes, settings) => quantizePlanes(planes, shapes, { ...settings, relStep: undefined }),
};

/** The step grid: a step per channel as a fraction of its RMS, zero on a code, weights beyond the grid exact. */
export const stepGrid: Quantizer = {
  id: 'step',
  description: 'step grid: step = relStep × RMS per channel (or layer), zero on code 2^(bits−1), weights beyond the grid exact',
  quantize: (planes, shapes, settings) => {
    if (settings.relStep === undefined) throw new Error('the step-grid quantizer needs relStep');
    return quantizePlanes(planes, shapes, settings);
  },
};

const QUANTIZERS = new Map<string, Quantizer>([
  [roundToNearest.id, roundToNearest],
  [stepGrid.id, stepGrid],
]);

/**
 * Adds a quantizer at run time (its id must be new). Worker threads import this module afresh: a quantizer
 * that must run there too (`jobs` > 1) is registered in QUANTIZERS above, one line, like rtn and step.
 */
export function registerQuantizer(q: Quantizer): void {
  if (QUANTIZERS.has(q.id)) throw new Error(`a quantizer with id ${JSON.stringify(q.id)} is registered already`);
  QUANTIZERS.set(q.id, q);
}

export function getQuantizer(id: string): Quantizer {
  const q = QUANTIZERS.get(id);
  if (!q) throw new OptionError(`unknown quantizer ${JSON.stringify(id)}; known: ${[...QUANTIZERS.keys()].join(', ')}`);
  return q;
}

export function listQuantizers(): Quantizer[] {
  return [...QUANTIZERS.values()];
}

/** The quantizer a tensor's settings call for when none is named: the step grid where a step is set. */
export function defaultQuantizer(s: { relStep?: number }): string {
  return s.relStep !== undefined ? stepGrid.id : roundToNearest.id;
}
