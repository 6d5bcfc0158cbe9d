/**
 * A dedicated module worker of the browser decoder (workers.ts starts it): it decodes one tensor at a time with
 * the same decoder as the page (archive/decode.ts with decoders.ts), from entries the page has already verified
 * against the manifest, and sends the float32 values back by transferring their buffer (no copy). A failure is
 * sent as error data and thrown in the page as the same typed error (class, code, file, tensor, message).
 *
 * In the built package this is dist/browser/decode-worker.js, found by `decodeArchive` next to its own module
 * (`new URL('./decode-worker.js', import.meta.url)`); see docs/browser.md.
 */

import { decodeRecord, type EntrySource } from '../archive/decode.js';
import { CorruptArchiveError, errorToData } from '../errors.js';
import { decodeCodesBrowser } from './decoders.js';
import type { FromWorker, ToWorker, WorkerCapabilities } from './worker-protocol.js';

interface WorkerScope {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
}

const scope = globalThis as unknown as WorkerScope;
const has = (name: string): boolean => typeof (globalThis as Record<string, unknown>)[name] === 'function';

/** Entries used by several tensors, sent once a decode (session) and kept for its later tasks. */
const sessions = new Map<number, Map<string, Uint8Array>>();

scope.onmessage = ({ data: task }) => {
  if (task.type === 'forget') return void sessions.delete(task.session);
  let shared = sessions.get(task.session);
  if (!shared) sessions.set(task.session, (shared = new Map()));
  for (const [name, bytes] of task.shared) shared.set(name, bytes);
  const own = new Map(task.entries);
  const source: EntrySource = {
    file: task.file,
    entry: (name, tensor) => {
      const data = own.get(name) ?? shared!.get(name);
      if (!data) throw new CorruptArchiveError(`entry ${name} was not verified`, { file: task.file, tensor });
      return data;
    },
  };
  decodeRecord(task.tensor, source, decodeCodesBrowser).then(
    (values) => {
      // the values' own buffer moves to the page; a view into a larger one is copied out first
      const whole = values.byteOffset === 0 && values.byteLength === values.buffer.byteLength ? values : values.slice();
      scope.postMessage({ type: 'done', id: task.id, values: whole }, [whole.buffer]);
    },
    (e: unknown) => scope.postMessage({ type: 'failed', id: task.id, error: errorToData(e) }),
  );
};

const capabilities: WorkerCapabilities = {
  imageDecoder: has('ImageDecoder'),
  offscreenCanvas: has('OffscreenCanvas'),
  createImageBitmap: has('createImageBitmap'),
  videoDecoder: has('VideoDecoder') && has('EncodedVideoChunk'),
};
scope.postMessage({ type: 'ready', capabilities });
