/**
 * Calibration data for any ONNX model: the user's images, audio or raw tensors turned into model inputs (or,
 * without any, synthetic inputs that the model accepts, marked as such), a deterministic split into probe and
 * held-back samples, and a runner that streams samples through a model. See docs/calibration.md.
 */

import type { CalibrationSpec } from './set.js';
import { buildCalibrationSet } from './set.js';
import { syntheticCalibrationSet, type SyntheticOptions } from './synthetic.js';
import type { CalibrationSet } from './types.js';

export type { CalibrationSample, CalibrationSet, SampleData } from './types.js';
export {
  ELEMENT_TYPES,
  convertTensor,
  toFloat32,
  type CalibrationTensor,
  type ElementType,
  type Feed,
  type TensorData,
} from './tensor.js';
export {
  describeModel,
  formatShape,
  formatValueInfo,
  type Dim,
  type ModelIo,
  type ValueInfo,
  type GraphNode,
} from './model-io.js';
export { parseInputShape, resolveShapeOverrides, fitDims, type InputShape, type ShapeOverrides } from './shape.js';
export { findStateLinks, findRateInput, type StateLink } from './state.js';
export {
  loadImage,
  isImageInput,
  pixelsToTensor,
  resolveImageSpec,
  describeImageSpec,
  RESIZE_KERNELS,
  RESIZE_FITS,
  type ImageSpec,
  type ImageSpecInput,
  type ResizeKernel,
  type ResizeFit,
} from './image.js';
export {
  decodeAudio,
  parseWav,
  resolveAudioSpec,
  describeAudioSpec,
  DEFAULT_SEGMENT_SECONDS,
  type AudioSpec,
  type AudioSpecInput,
} from './audio.js';
export {
  decodeNpy,
  encodeNpy,
  decodeNpz,
  encodeNpz,
  decodeSafetensors,
  encodeSafetensors,
  decodeJsonTensors,
  decodeRawFile,
} from './raw.js';
export {
  buildCalibrationSet,
  listCalibrationFiles,
  splitCalibrationSet,
  HOLD_BACK_EVERY,
  type CalibrationSpec,
  type CalibrationSplit,
} from './set.js';
export { syntheticCalibrationSet, naturalImage, speechLike, type SyntheticOptions } from './synthetic.js';
export { branchCoverage, branchTensors, withBoolOutputs, type BranchCoverage, type BranchTensors } from './branches.js';
export {
  CalibrationRunner,
  runCalibration,
  calibratorFor,
  type RunnerOptions,
  type RunRecord,
  type SampleOutputs,
} from './runner.js';
export {
  CALIBRATION_OPTIONS,
  calibrationSpecFromFlags,
  calibrationSpecFromConfig,
  mergeCalibrationSpecs,
  parseImageSize,
  parseStateLink,
  type CalibrationFlags,
} from './options.js';

/**
 * The calibration set for a model: from the user's files when `spec.paths` names any, else synthetic (shaped by
 * the spec's `--input` shapes and image/audio settings) and marked `synthetic: true`.
 */
export async function calibrationSetFor(
  model: Uint8Array,
  spec: CalibrationSpec = { paths: [] },
  synthetic: SyntheticOptions = {},
): Promise<CalibrationSet> {
  if (spec.paths.length) return buildCalibrationSet(model, spec);
  return syntheticCalibrationSet(model, { inputs: spec.inputs, image: spec.image, audio: spec.audio, ...synthetic });
}
