/**
 * Decoding an archive's tensors in a pool of dedicated module workers (decode-worker.ts): the page fetches and
 * verifies every entry as before (nothing is decoded from a corrupt archive), then hands each tensor to the next
 * idle worker with copies of the entries it reads (views into the archive cannot
 * be transferred without detaching it), the largest tensors first; entries several tensors read (the ranges
 * entry) are sent to a worker once a decode. The values come back in their own transferred buffer, the same bits
 * as on the page: the same decoder runs there. A failure is the same typed error, and the one the first failing
 * tensor in the manifest's order gives (after a failure, only tensors before it in that order are still decoded).
 *
 * The workers are kept between decodes (a fresh worker loads its script and runs its decoder cold: measured,
 * that cost more than the decode of a 10 MB model) and ended after `WORKER_IDLE_MS` without work, or by
 * `terminateDecodeWorkers()`.
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
import type { DecodeTask, FromWorker, ToWorker, WorkerCapabilities } from './worker-protocol.js';

export interface WorkerOptions {
  /**
   * Dedicated workers to decode tensors in: a count (0: on the page's thread), or 'auto' (the default): none for
   * an archive with fewer than `AUTO_WORKERS.minFloats` values to decode or a machine with fewer than 2 cores
   * (`navigator.hardwareConcurrency`), else one a core, `AUTO_WORKERS.max` at most.
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

/**
 * What 'auto' chooses. Measured on 2 cores (docs/benchmarks.md, "Decoding in workers"): 2 workers decode ISNet
 * (44 M weights) 1.3–1.7× as fast as the page for WebP, zstd, 16-bit PNG and the default archive (8-bit PNG: as
 * fast), and the page's longest stall in the JS decoders falls from seconds to under 0.15 s; on PaddleOCR rec
 * (2.7 M) and the Silero models (0.2–0.5 M) they are no faster, often slower. Hence 4 M values. The cap of 4 is
 * not measured (2 cores here).
 */
export const AUTO_WORKERS = { max: 4, minFloats: 1 << 22 };

/** Workers with no decode to do for this long are ended (the next decode starts new ones). */
export const WORKER_IDLE_MS = 30_000;

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
  if (cores < 2) return 0;
  return Math.min(AUTO_WORKERS.max, cores, tensors.length);
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
    // pure JavaScript decoders (fzstd, brotli, fast-png): every worker has them
    if (name === 'zstd' || name === 'zstd-sign' || name === 'brotli' || name === 'brotli-sign' || (name === 'png' && bits === 16))
      continue;
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

/** One worker: its capabilities once it is ready, and the task it runs. */
class Lane {
  readonly worker: Worker;
  readonly ready: Promise<WorkerCapabilities>;
  private pending?: { id: number; resolve(v: Float32Array): void; reject(e: unknown): void };
  /** Why the worker is dead (failed to load, crashed); undefined while it works. */
  broken?: string;

  constructor(url: string | URL | undefined, onBroken: (lane: Lane) => void) {
    // written out for bundlers (Vite, webpack 5) to find and emit the worker next to the page's bundle
    this.worker = url
      ? new Worker(url, { type: 'module' })
      : new Worker(new URL('./decode-worker.js', import.meta.url), { type: 'module' });
    this.ready = new Promise<WorkerCapabilities>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.broken = `not ready after ${READY_TIMEOUT_MS / 1000} s`;
        reject(new Error(this.broken));
        onBroken(this);
      }, READY_TIMEOUT_MS);
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
        this.broken = e.message || 'the script did not load';
        clearTimeout(timer);
        reject(new Error(this.broken));
        this.pending?.reject(new InternalError(`decode worker failed: ${this.broken}`));
        this.pending = undefined;
        onBroken(this);
      };
    });
    // a rejection nobody awaits yet is not an unhandled one: the pool looks at it
    this.ready.catch(() => undefined);
  }

  run(task: DecodeTask, transfer: Transferable[]): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.pending = { id: task.id, resolve, reject };
      this.worker.postMessage(task satisfies ToWorker, transfer);
    });
  }

  /** Ends the worker; its running task, if any, fails as one of a dead worker. */
  kill(why: string): void {
    this.broken = why;
    this.worker.terminate();
    this.pending?.reject(new InternalError(`decode worker ended: ${why}`));
    this.pending = undefined;
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message);
  }
}

/** The workers of one script, kept between decodes; a decode takes idle ones, one task at a time. */
class Pool {
  readonly lanes: Lane[] = [];
  private readonly idle: Lane[] = [];
  private waiters: Array<() => void> = [];
  private users = 0;
  private timer?: ReturnType<typeof setTimeout>;

  constructor(
    private readonly url: string | URL | undefined,
    private readonly onEmpty: () => void,
  ) {}

  /** At least `n` live workers (started now where missing); held until `leave`. */
  enter(n: number): void {
    this.users++;
    clearTimeout(this.timer);
    while (this.lanes.length < n) {
      const lane = new Lane(this.url, (l) => this.drop(l));
      this.lanes.push(lane);
      lane.ready.then(
        () => this.release(lane),
        () => undefined,
      );
    }
  }

  leave(): void {
    if (--this.users > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.terminate(), WORKER_IDLE_MS);
  }

  /** An idle live worker (waiting for one), or undefined when none is left alive. */
  async acquire(): Promise<Lane | undefined> {
    for (;;) {
      const lane = this.idle.shift();
      if (lane) return lane;
      if (!this.lanes.length) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  release(lane: Lane): void {
    if (lane.broken || !this.lanes.includes(lane)) return;
    this.idle.push(lane);
    this.wake();
  }

  private drop(lane: Lane): void {
    lane.worker.terminate();
    for (const list of [this.lanes, this.idle]) {
      const i = list.indexOf(lane);
      if (i >= 0) list.splice(i, 1);
    }
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  terminate(): void {
    clearTimeout(this.timer);
    // a task still running is decoded on the page instead (see decodeInPool)
    for (const l of this.lanes) l.kill('ended by terminateDecodeWorkers()');
    this.lanes.length = 0;
    this.idle.length = 0;
    this.wake();
    this.onEmpty();
  }
}

const pools = new Map<string, Pool>();
let sessions = 0;

/** Ends the decode workers now (they end on their own after WORKER_IDLE_MS without work). Decodes running then finish on the page. */
export function terminateDecodeWorkers(): void {
  for (const p of [...pools.values()]) p.terminate();
}

function poolFor(url: string | URL | undefined): Pool {
  const key = url === undefined ? '' : String(url);
  let pool = pools.get(key);
  if (!pool) {
    const p = new Pool(url, () => {
      if (pools.get(key) === p) pools.delete(key);
    });
    pools.set(key, p);
    pool = p;
  }
  return pool;
}

/** The factory `decodeArchiveSource` takes: the workers started (or taken from the pool) as soon as the manifest is read. */
export function workerDecoding(options: WorkerOptions, report: DecodeThreads): TensorDecodingFactory {
  return (_manifest: Manifest, tensors: readonly TensorRecord[]): TensorDecoding => {
    const n = workerCount(options, tensors);
    let pool: Pool | undefined;
    // the workers this decode waits for, taken now: a worker whose script fails to load leaves the pool at once,
    // and looked up at decode time it was gone, with no reason given for decoding on the page
    let lanes: Lane[] = [];
    if (n > 0) {
      if (typeof Worker !== 'function') report.fallback = 'no Worker here: decoded on the page';
      else
        try {
          pool = poolFor(options.workerUrl);
          pool.enter(n);
          lanes = pool.lanes.slice(0, n);
        } catch (e) {
          // a Content Security Policy without worker-src, a bad URL: the page decodes
          report.fallback = `cannot start a decode worker (${(e as Error).message}): decoded on the page`;
          pool?.leave();
          pool = undefined;
        }
    }
    const session = ++sessions;
    const used = new Set<Lane>();
    return {
      decode: async (list, entries) => {
        let caps: WorkerCapabilities | undefined;
        if (pool) {
          const started = await Promise.allSettled(lanes.map((l) => l.ready));
          const ok = started.filter((s) => s.status === 'fulfilled');
          const failed = started.find((s) => s.status === 'rejected');
          if (failed) {
            const why = ((failed as PromiseRejectedResult).reason as Error).message;
            report.fallback = ok.length
              ? `${started.length - ok.length} of ${started.length} decode workers did not start (${why})`
              : `the decode workers did not start (${why}): decoded on the page`;
          }
          caps = ok.length ? ok[0].value : undefined;
          report.workers = ok.length;
        }
        return decodeInPool(list, entries, pool && caps ? { pool, caps, n: report.workers, session, used } : undefined, report);
      },
      close: () => {
        for (const lane of used) if (!lane.broken) lane.post({ type: 'forget', session });
        pool?.leave();
      },
    };
  };
}

interface PoolUse {
  pool: Pool;
  caps: WorkerCapabilities;
  /** Workers this decode uses at most at once. */
  n: number;
  session: number;
  /** The workers this decode sent tasks to (told to forget its shared entries at the end). */
  used: Set<Lane>;
}

async function decodeInPool(
  tensors: readonly TensorRecord[],
  entries: VerifiedEntries,
  use: PoolUse | undefined,
  report: DecodeThreads,
): Promise<Float32Array[]> {
  const results: Float32Array[] = new Array(tensors.length);
  const failures = new Map<number, unknown>();
  // entries several tensors read (the ranges entry; a pack's members do not count): sent to each worker once
  const names = tensors.map((t) => new Set(codedParts(t).flatMap(({ record }) => [...recordEntries(record)])));
  const uses = new Map<string, number>();
  for (const set of names) for (const n of set) uses.set(n, (uses.get(n) ?? 0) + 1);
  const sent = new Map<Lane, Set<string>>();
  const inFlight = new Set<Promise<void>>();
  let wake: (() => void) | undefined;
  const lacking = new Set<string>();
  const onPage = async (i: number): Promise<void> => {
    report.onPage++;
    try {
      results[i] = await decodeRecord(tensors[i], entries, decodeCodesBrowser);
    } catch (e) {
      failures.set(i, e);
    }
  };
  // the largest first (the last task to finish is a small one); after a failure only tensors before it in the
  // manifest's order are still decoded, so that the error is the one of the first failing tensor in that order
  const order = tensors.map((_, i) => i);
  if (use) order.sort((a, b) => elementCount(tensors[b].shape) - elementCount(tensors[a].shape) || a - b);
  const stopped = (i: number): boolean => failures.size > 0 && i > Math.min(...failures.keys());
  for (const i of order) {
    if (stopped(i)) continue;
    const t = tensors[i];
    const lacks = use ? workerLacks(use.caps, t) : '';
    if (lacks) lacking.add(lacks);
    // this decode's share of the pool: n tasks at once
    while (use && lacks === undefined && inFlight.size >= use.n) await new Promise<void>((resolve) => (wake = resolve));
    if (stopped(i)) continue;
    const lane = use && lacks === undefined ? await use.pool.acquire() : undefined;
    if (!use || !lane) {
      await onPage(i);
      continue;
    }
    use.used.add(lane);
    let laneSent = sent.get(lane);
    if (!laneSent) sent.set(lane, (laneSent = new Set()));
    const own: Array<[string, Uint8Array]> = [];
    const shared: Array<[string, Uint8Array]> = [];
    for (const name of names[i]) {
      const bytes = entries.bytes.get(name);
      // not verified: the worker's decoder reports it as the page's would
      if (!bytes) continue;
      if ((uses.get(name) ?? 0) > 1) {
        if (laneSent.has(name)) continue;
        laneSent.add(name);
        shared.push([name, bytes.slice()]);
      } else own.push([name, bytes.slice()]);
    }
    const transfer = [...own, ...shared].map(([, b]) => b.buffer);
    report.inWorkers++;
    const task: DecodeTask = { type: 'decode', id: i, session: use.session, file: entries.file, tensor: t, entries: own, shared };
    const job = lane
      .run(task, transfer)
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
        use.pool.release(lane);
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
