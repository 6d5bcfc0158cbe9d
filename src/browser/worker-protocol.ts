/**
 * The messages between `decodeArchive` (workers.ts) and its decode workers (decode-worker.ts). Entries and
 * values travel as transferred ArrayBuffers; errors as plain data (errors.ts: errorToData / errorFromData).
 */

import type { TensorRecord } from '../archive/manifest.js';
import type { ErrorData } from '../errors.js';

/** What a worker's global scope offers for decoding (WebCodecs and canvas are not in every worker). */
export interface WorkerCapabilities {
  imageDecoder: boolean;
  offscreenCanvas: boolean;
  createImageBitmap: boolean;
  videoDecoder: boolean;
}

/**
 * One tensor to decode. `entries` are its own; `shared` ones (used by several tensors) are kept by the worker for
 * the later tasks of the same decode (`session`), until it is told to forget them.
 */
export interface DecodeTask {
  type: 'decode';
  id: number;
  session: number;
  file?: string;
  tensor: TensorRecord;
  entries: Array<[string, Uint8Array]>;
  shared: Array<[string, Uint8Array]>;
}

export type ToWorker = DecodeTask | { type: 'forget'; session: number };

export type FromWorker =
  | { type: 'ready'; capabilities: WorkerCapabilities }
  | { type: 'done'; id: number; values: Float32Array }
  | { type: 'failed'; id: number; error: ErrorData };
