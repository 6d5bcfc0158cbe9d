/**
 * Error-compensating quantization: layer-input statistics from real inference
 * (statistics.ts), GPTQ-style rounding onto the decoder's M1 grid (gptq.ts),
 * and the adapter between a tensor's planes and its weight matrices (planes.ts).
 */

import type { ModelReader } from '../formats/model.js';
import { classifyTensor } from '../roles/classify.js';
import type { StatisticsTarget } from './statistics.js';

export {
  captureStatistics,
  mergeStatistics,
  type CaptureOptions,
  type Grouping,
  type OutputTensor,
  type RunWithOutputs,
  type StatisticsReport,
  type StatisticsTarget,
  type TensorStatistics,
} from './statistics.js';
export {
  DEFAULT_BLOCK,
  DEFAULT_DAMP,
  RowGrid,
  gptqQuantize,
  roundToNearest,
  type GptqOptions,
  type GptqResult,
  type GridMatrix,
} from './gptq.js';
export {
  compensatePlanes,
  planeMatrices,
  planeOutputError,
  statisticsMisfit,
  type CompensatedQuantization,
  type PlaneCompensation,
  type PlaneMatrix,
} from './planes.js';

/** Every tensor of an ONNX model the classifier gives a layout (the tensors the pipeline codes). */
export function statisticsTargets(reader: ModelReader): StatisticsTarget[] {
  return reader.tensors.flatMap((t) => {
    const c = classifyTensor(t, reader.format);
    return c.layout ? [{ key: t.key, location: t.location, shape: t.shape, layout: c.layout }] : [];
  });
}
