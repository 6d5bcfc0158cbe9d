/** nnmedia's library API (Node). */
export * from './errors.js';
export { compressModel, planTensors, type CompressResult } from './pipeline/compress.js';
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
export type { CompressOptions, TensorRule, EncodeSettings } from './pipeline/options.js';
export { loadRulesFile } from './pipeline/options.js';
export { openModel, detectFormat } from './formats/registry.js';
export { listCodecs, getCodec } from './codecs/registry.js';
export type { Codec, CodecOptions, CodePlane, Media } from './codecs/types.js';
export type { Manifest, TensorRecord } from './archive/manifest.js';
export { errorStats, type ErrorStats } from './eval/metrics.js';
export { classifyTensor, type Role } from './roles/classify.js';
export { VERSION } from './version.js';
export { taskByName } from './eval/tasks/index.js';
export { removePendingTemps } from './io/atomic.js';
