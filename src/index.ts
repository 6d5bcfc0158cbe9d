/** nnmedia's library API (Node). */
export * from './errors.js';
export { compressModel, type CompressResult } from './pipeline/compress.js';
export { planTensors, slicesOf } from './pipeline/plan.js';
export type { TensorPlan, KeptPlan, CodedPlan, CodecChoice, EncodeUnit, EncodedTensor, SliceSpec } from './pipeline/stages.js';
export {
  decompressArchive,
  rebuildModel,
  decodeAllTensors,
  decodeTensor,
  type DecompressOptions,
} from './pipeline/decompress.js';
export { Archive, nodeBackend } from './archive/node.js';
export { checkManifest, parseManifest } from './archive/check.js';
export { decodeArchiveSource, SourceArchive, type DecodedArchive, type DecodeOptions } from './archive/read.js';
export { bytesSource, urlSource, type ByteSource, type FetchStats } from './archive/source.js';
export type { DecodeBackend } from './archive/backend.js';
export type { CompressOptions, TensorRule, EncodeSettings, TensorSettings, ResolvedOptions } from './pipeline/options.js';
export { loadConfigFile, loadRulesFile, resolveOptions, OPTION_TABLE, type ConfigFile } from './pipeline/options.js';
export { registerQuantizer, getQuantizer, listQuantizers, type Quantizer, type TensorStatistics } from './quantize/registry.js';
export { MODEL_FORMATS, type ModelFormatModule } from './formats/registry.js';
export type { ModelReader, TensorEntry, TensorStorage, ModelFormat } from './formats/model.js';
export { openModel, detectFormat } from './formats/registry.js';
export { listCodecs, getCodec } from './codecs/registry.js';
export type { Codec, CodecOptions, CodePlane, Media } from './codecs/types.js';
export type { Manifest, TensorRecord, QualityRecord } from './archive/manifest.js';
export type { Calibrator } from './pipeline/options.js';
export type { CompensationReport } from './pipeline/write.js';
export type { TaskEvaluator } from './eval/tasks/types.js';
export type { TaskOptions } from './eval/tasks/index.js';
export type { CalibrationSpec } from './calibration/set.js';
export { errorStats, type ErrorStats } from './eval/metrics.js';
export { classifyTensor, type Role } from './roles/classify.js';
export { VERSION } from './version.js';
export { taskByName } from './eval/tasks/index.js';
export { removePendingTemps } from './io/atomic.js';
export { ortBackend, type OrtBackend } from './runtime/optional.js';
