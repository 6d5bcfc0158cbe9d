/**
 * nnmedia in the browser: an .nnm archive fetched (HTTP Range requests where the server allows them:
 * directory first, then only the entries wanted) or taken from memory, checked by the same validator and
 * decoded by the same decoder as in Node (archive/), with the browser's own decoders behind the platform
 * seam (backend.ts, decoders.ts). Errors are the library's typed errors with their codes
 * (CorruptArchiveError for a bad archive, UnsupportedError for what the browser cannot decode exactly).
 * No Node module is reached from here.
 */

import { decodeArchiveSource, type DecodedArchive, type DecodeOptions as CoreDecodeOptions } from '../archive/read.js';
import { bytesSource, urlSource, type ByteSource } from '../archive/source.js';
import { rebuildOnnx } from '../formats/onnx/rebuild.js';
import { encodeFloats, tensorStorage, type OnnxStorage } from '../formats/model.js';
import { NnmediaError, OptionError, UnsupportedError } from '../errors.js';
import { browserBackend } from './backend.js';
import { workerDecoding, type DecodeThreads, type WorkerOptions } from './workers.js';

export * from '../errors.js';
export { bytesSource, urlSource, type ByteSource, type FetchStats } from '../archive/source.js';
export type { DecodedArchive } from '../archive/read.js';
export type { Manifest, TensorRecord, QualityRecord } from '../archive/manifest.js';
export { browserBackend } from './backend.js';
export { BROWSER_DECODERS } from './decoders.js';
export { AUTO_WORKERS, WORKER_IDLE_MS, terminateDecodeWorkers, type DecodeThreads, type WorkerOptions } from './workers.js';

/**
 * @deprecated Every error the browser decoder throws is an `NnmediaError` with a stable `code`
 * (`E_CORRUPT_ARCHIVE`, `E_UNSUPPORTED`, …), as in Node; this name is kept so that `instanceof
 * BrowserArchiveError` in existing pages still matches them all.
 */
export const BrowserArchiveError = NnmediaError;

export interface DecodeOptions extends CoreDecodeOptions, WorkerOptions {
  /** Passed to fetch() for URLs (credentials, headers, signal). */
  init?: RequestInit;
}

/** A decoded archive, and how its tensors were spread over workers and the page. */
export interface BrowserDecodedArchive extends DecodedArchive {
  threads: DecodeThreads;
}

/**
 * Fetches (or takes) an archive, verifies the checksum of every entry it needs before decoding any, and decodes
 * the tensors with the browser's decoders: in dedicated workers (`workers`, default 'auto': see WorkerOptions)
 * where the archive is large enough and workers can start, else on the page's thread. The values are the same
 * bits either way, and so are the errors.
 */
export async function decodeArchive(
  source: string | ArrayBuffer | Uint8Array | ByteSource,
  options: DecodeOptions = {},
): Promise<BrowserDecodedArchive> {
  const src =
    typeof source === 'string'
      ? await urlSource(source, options.init)
      : source instanceof Uint8Array
        ? bytesSource(source)
        : source instanceof ArrayBuffer
          ? bytesSource(new Uint8Array(source))
          : source;
  const threads: DecodeThreads = { workers: 0, inWorkers: 0, onPage: 0 };
  const decoded = await decodeArchiveSource(src, browserBackend, { tensors: options.tensors }, workerDecoding(options, threads));
  return { ...decoded, threads };
}

/** The ONNX model file rebuilt from a decoded archive (the same wire-level rebuild as Node's), ready for onnxruntime-web. */
export function rebuildOnnxModel(d: DecodedArchive): Uint8Array {
  if (d.manifest.source.format !== 'onnx')
    throw new UnsupportedError(
      `the browser rebuilds ONNX models only; this archive holds ${d.manifest.source.format} (use .tensors)`,
    );
  if (!d.skeleton) throw new OptionError('the archive was decoded for some tensors only: no skeleton to rebuild the model from');
  const restored = d.manifest.tensors
    .filter((t) => d.tensors.has(t.key))
    .map((t) => {
      // the validator checked every storage record against the source format
      const storage = tensorStorage('onnx', t.storage) as OnnxStorage;
      return { path: storage.path, form: storage.form, dtype: t.dtype, values: d.tensors.get(t.key)! };
    });
  return rebuildOnnx(d.skeleton, restored, d.manifest.source.file);
}

/**
 * Float16 copies of decoded tensors, where a runtime wants half precision (onnxruntime-web
 * float16 tensors take these IEEE binary16 bit patterns; round to nearest even, as Node's).
 */
export function toFloat16(values: Float32Array): Uint16Array {
  const bytes = encodeFloats(values, 'float16');
  return new Uint16Array(bytes.buffer, bytes.byteOffset, values.length);
}
