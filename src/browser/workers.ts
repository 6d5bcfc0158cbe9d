/**
 * Decoding an archive's tensors in a pool of dedicated module workers (decode-worker.ts): the page fetches and
 * verifies every entry as before (nothing is decoded from a corrupt archive), then hands each tensor, in the
 * manifest's order, to the next idle worker with copies of the entries it reads (views into the archive cannot
 * be transferred without detaching it); entries several tensors read (the ranges entry) are sent to a worker
 * once. The values come back in their own transferred buffer. The values are the same bits as on the page: the
 * same decoder runs there. A failure is the same typed error, and the one the first failing tensor in the
 * manifest's order gives (tensors are handed out in order and nothing after a failure is started).
 *
 * Falls back to the page's thread, and says why in `DecodeThreads.fallback`, where there is no Worker, the
 * worker script does not start (not served, blocked), or a worker lacks what a tensor's codec needs
 * (OffscreenCanvas and createImageBitmap for images, VideoDecoder for video): such tensors are decoded on the
 * page while the workers decode the rest.
 */

import { decodeRecord } from '../archive/decode.js';
import { codedParts, recordEntries, type Manifest, type TensorRecord } from '../archive/manifest.js';
import type { TensorDecoding, TensorDecodingFactory, VerifiedEntries } from '../archive/read.js';
import { InternalError, OptionError, errorFromData } from '../errors.js';
import { elementCount } from '../formats/model.js';
import { decodeCodesBrowser } from './decoders.js';
import type { DecodeTask, FromWorker, WorkerCapabilities } from './worker-protocol.js';

export interface WorkerOptions {
  /**
   * Dedicated workers to decode tensors in: a count (0: on the page's thread), or 'auto' (the default):
   * `AUTO_WORKERS.max` at most, no more than `navigator.hardwareConcurrency`, and none for an archive with
   * fewer than `AUTO_WORKERS.minFloats` float32 values to decode (there starting workers costs more than it saves).
   */
  workers?: number | 'auto';
  /** The worker script; default `decode-worker.js` next to this module (dist/browser/decode-worker.js). */
  workerUrl?: string | URL;
}

/** How a decode was spread: workers used, tensors decoded in them and on the page, and why workers were not (all) used. */
export interface DecodeThreads {
  workers: number;
  inWorkers: number;
  onPage: number;
  fallback?: string;
}

/** What 'auto' chooses (measured: docs/benchmarks.md, "Decoding in the browser"). */
export const AUTO_WORKERS = { max: 4, minFloats: 1 << 20 };

/** A worker that does not say it is ready within this time is given up (the page decodes). */
const READY_TIMEOUT_MS = 10_000;

/** The number of workers `options` ask for, for these tensors. */
export function workerCount(options: WorkerOptions, tensors: readonly TensorRecord[]): number {
  const asked = options.workers ?? 'auto';
  if (asked !== 'auto') {
    if (!Number.isInteger(asked) || asked < 0 || asked > 64)
      throw new OptionError(`workers: expected 'auto' or an integer 0…64, got ${JSON.stringify(asked)}`);
    return Math.min(asked, tensors.length);
  }
  const floats = tensors.reduce((s, t) => s + elementCount(t.shape), 0);
  if (floats < AUTO_WORKERS.minFloats) return 0;
  const cores = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
  return Math.max(0, Math.min(AUTO_WORKERS.max, cores, tensors.length));
}

/**
 * Why a worker with these capabilities cannot decode every part of `t` as the page would (then the page does):
 * the names of what it lacks, or '' for what no worker takes (the browser refuses it, or the record is bad:
 * the page says so as it would alone); undefined if it can.
 */
export function workerLacks(caps: WorkerCapabilities, t: TensorRecord): string | undefined {
  for (const { record } of codedParts(t)) {
    const name = record.codec?.name;
    const bits = record.quant?.bits;
    if (name === 'zstd' || name === 'zstd-sign' || (name === 'png' && bits === 16)) continue;
    if ((name === 'png' || name === 'webp' || name === 'avif' || name === 'jpeg') && bits === 8) {
      const lacks = [caps.offscreenCanvas ? '' : 'OffscreenCanvas', caps.createImageBitmap ? '' : 'createImageBitmap'];
      if (lacks.some(Boolean)) return lacks.filter(Boolean).join(', ');
      continue;
    }
    if (name === 'h264' || name === 'vp9' || name === 'av1') {
      if (!caps.videoDecoder) return 'VideoDecoder';
      continue;
    }
    return '';
  }
  return undefined;
}

/** One worker: its capabilities once it is ready, and the shared entries it holds. */
class Lane {
  readonly worker: Worker;
  readonly ready: Promise<WorkerCapabilities>;
  readonly sent = new Set<string>();
  private pending?: { id: number; resolve(v: Float32Array): void; reject(e: unknown): void };
  broken?: string;

  constructor(url: string | URL | undefined) {
    // written out for bundlers (Vite, webpack 5, Parcel) to find and emit the worker next to the page's bundle
    this.worker = url
      ? new Worker(url, { type: 'module' })
      : new Worker(new URL('./decode-worker.js', import.meta.url), { type: 'module' });
    this.ready = new Promise<WorkerCapabilities>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready after ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS);
      this.worker.onmessage = ({ data }: MessageEvent<FromWorker>) => {
        if (data.type === 'ready') {
          clearTimeout(timer);
          resolve(data.capabilities);
          return;
        }
        const p = this.pending;
        if (!p || p.id !== data.id) return;
        this.pending = undefined;
        if (data.type === 'done') p.resolve(data.values);
        else p.reject(errorFromData(data.error));
      };
      this.worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        const why = e.message || 'the script did not load';
        this.broken = why;
        clearTimeout(timer);
        reject(new Error(why));
        this.pending?.reject(new InternalError(`decode worker failed: ${why}`));
        this.pending = undefined;
      };
    });
    // a rejection nobody awaits yet is not an unhandled one: the pool looks at it
    this.ready.catch(() => undefined);
  }

  run(task: DecodeTask, transfer: Transferable[]): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.pending = { id: task.id, resolve, reject };
      this.worker.postMessage(task, transfer);
    });
  }
}

/** The factory `decodeArchiveSource` takes: workers started as soon as the manifest is read. */
export function workerDecoding(options: WorkerOptions, report: DecodeThreads): TensorDecodingFactory {
  return (_manifest: Manifest, tensors: readonly TensorRecord[]): TensorDecoding => {
    const n = workerCount(options, tensors);
    let lanes: Lane[] = [];
    if (n > 0) {
      if (typeof Worker !== 'function') report.fallback = 'no Worker here: decoded on the page';
      else
        try {
          for (let i = 0; i < n; i++) lanes.push(new Lane(options.workerUrl));
        } catch (e) {
          // a Content Security Policy without worker-src, a bad URL: the page decodes
          report.fallback = `cannot start a decode worker (${(e as Error).message}): decoded on the page`;
          for (const l of lanes) l.worker.terminate();
          lanes = [];
        }
    }
    return {
      decode: async (list, entries) => {
        let caps: WorkerCapabilities | undefined;
        if (lanes.length) {
          const started = await Promise.allSettled(lanes.map((l) => l.ready));
          const failed = started.find((s) => s.status === 'rejected');
          const ok = started.filter((s) => s.status === 'fulfilled');
          for (let i = lanes.length - 1; i >= 0; i--)
            if (started[i].status === 'rejected') {
              lanes[i].worker.terminate();
              lanes.splice(i, 1);
            }
          if (failed) {
            const why = ((failed as PromiseRejectedResult).reason as Error).message;
            report.fallback = ok.length
              ? `${started.length - ok.length} of ${started.length} decode workers did not start (${why})`
              : `the decode workers did not start (${why}): decoded on the page`;
          }
          caps = ok.length ? ok[0].value : undefined;
        }
        return decodeInLanes(list, entries, lanes, caps, report);
      },
      close: () => {
        for (const l of lanes) l.worker.terminate();
      },
    };
  };
}

async function decodeInLanes(
  tensors: readonly TensorRecord[],
  entries: VerifiedEntries,
  lanes: Lane[],
  caps: WorkerCapabilities | undefined,
  report: DecodeThreads,
): Promise<Float32Array[]> {
  report.workers = lanes.length;
  const results: Float32Array[] = new Array(tensors.length);
  const failures = new Map<number, unknown>();
  // entries several tensors read (the ranges entry, a pack's members do not count): sent to each worker once
  const names = tensors.map((t) => new Set(codedParts(t).flatMap(({ record }) => [...recordEntries(record)])));
  const uses = new Map<string, number>();
  for (const set of names) for (const n of set) uses.set(n, (uses.get(n) ?? 0) + 1);
  const idle = [...lanes];
  let wake: (() => void) | undefined;
  const inFlight = new Set<Promise<void>>();
  const lacking = new Set<string>();
  const onPage = async (i: number): Promise<void> => {
    report.onPage++;
    try {
      results[i] = await decodeRecord(tensors[i], entries, decodeCodesBrowser);
    } catch (e) {
      failures.set(i, e);
    }
  };
  for (let i = 0; i < tensors.length && failures.size === 0; i++) {
    const t = tensors[i];
    const lacks = caps ? workerLacks(caps, t) : '';
    if (lacks) lacking.add(lacks);
    while (lacks === undefined && !idle.length && lanes.some((l) => !l.broken))
      await new Promise<void>((resolve) => (wake = resolve));
    if (failures.size) break;
    const lane = lacks === undefined ? idle.shift() : undefined;
    if (!lane) {
      await onPage(i);
      continue;
    }
    const own: Array<[string, Uint8Array]> = [];
    const shared: Array<[string, Uint8Array]> = [];
    for (const name of names[i]) {
      const bytes = entries.bytes.get(name);
      // not verified: the worker's decoder reports it as the page's would
      if (!bytes) continue;
      if ((uses.get(name) ?? 0) > 1) {
        if (lane.sent.has(name)) continue;
        lane.sent.add(name);
        shared.push([name, bytes.slice()]);
      } else own.push([name, bytes.slice()]);
    }
    const transfer = [...own, ...shared].map(([, b]) => b.buffer);
    report.inWorkers++;
    const job = lane
      .run({ type: 'decode', id: i, file: entries.file, tensor: t, entries: own, shared }, transfer)
      .then(
        (v) => void (results[i] = v),
        (e: unknown) => {
          if (!lane.broken) return void failures.set(i, e);
          // the worker itself died (out of memory, killed): the page decodes its tensor
          report.inWorkers--;
          return onPage(i);
        },
      )
      .finally(() => {
        inFlight.delete(job);
        if (!lane.broken) idle.push(lane);
        wake?.();
        wake = undefined;
      });
    inFlight.add(job);
  }
  await Promise.all(inFlight);
  if (lacking.size && !report.fallback)
    report.fallback = `the workers have no ${[...lacking].join('; ')}: those tensors decoded on the page`;
  if (failures.size) throw failures.get(Math.min(...failures.keys()));
  return results;
}
