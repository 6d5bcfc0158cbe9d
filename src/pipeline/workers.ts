/**
 * A pool of worker threads for the per-tensor work of compress and
 * decompress: each worker opens the model or archive itself (by path), does
 * one tensor per message and sends the bytes back as transferred buffers.
 * Under the TypeScript sources (tests, tsx) the worker runs through tsx.
 */

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { errorFromData, type ErrorData } from '../errors.js';
import type { TensorRecord } from '../archive/manifest.js';
import type { DataRange, FloatDType, ModelFormat, ModelReader } from '../formats/model.js';
import type { CodedPlan, EncodedTensor, EncodeUnit } from './stages.js';
import type { RangeMode } from '../quantize/uniform.js';
import type { measureTensor, PrepareRequest, ProbeMeasure } from './measure.js';

/** One unit of encoding: plans are plain data (codecs by name), so a unit crosses to a worker as it is. */
export interface EncodeJob {
  kind: 'encode';
  file: string;
  unit: EncodeUnit;
  /** Where the unit's tensor lies in a file (the worker reads just that, not the whole model). */
  range?: SourceRange;
}

/** A tensor's byte range, and the format of the model it is from (ModelReader.dataRange). */
export interface SourceRange {
  format: ModelFormat;
  range: DataRange;
}

export interface DecodeJob {
  kind: 'decode';
  file: string;
  record: TensorRecord;
  /** Reply with the tensor's bytes in this dtype (the model file's) instead of float32 values. */
  dtype?: FloatDType;
  /** A written-out buffer to decode into (transferred), where it is the bytes' size. */
  reuse?: ArrayBuffer;
}

/** The allocation's measurement of one tensor of a model that cannot run (pipeline/measure.ts measureTensor). */
export interface MeasureJob {
  kind: 'measure';
  file: string;
  plan: CodedPlan;
  sliceWeights: number;
  modes: RangeMode[];
  range?: SourceRange;
}

/** A tensor of a model that runs, measured for the probes (pipeline/measure.ts measureToProbe). */
export interface PrepareJob extends PrepareRequest {
  kind: 'prepare';
  file: string;
  plan: CodedPlan;
  range?: SourceRange;
}

/** The byte range of a tensor for a worker job, where the reader has one. */
export function sourceRange(reader: ModelReader, key: string): { range?: SourceRange } {
  const range = reader.dataRange?.(key);
  return range ? { range: { format: reader.format, range } } : {};
}

export type Job = EncodeJob | DecodeJob | MeasureJob | PrepareJob | { kind: 'close' };

export type EncodeReply = EncodedTensor;

export type MeasureReply = ReturnType<typeof measureTensor>;

type ReplyValue = EncodeReply | MeasureReply | ProbeMeasure | Float32Array | Uint8Array;

export type Reply = { ok: true; value: ReplyValue | null } | { ok: false; error: ErrorData };

/** The built worker; under the TypeScript sources, a bootstrap that registers tsx's loader and imports worker.ts. */
function spawnWorker(workers: number): Worker {
  // (the pool's size: a worker's share of the garbage its collections allow, worker.ts COLLECT_BYTES)
  const workerData: WorkerData = { workers };
  // the parent's node flags are not the worker's business (`node --input-type=module -e …` would make it fail)
  if (!fileURLToPath(import.meta.url).endsWith('.ts'))
    return new Worker(new URL('./worker.js', import.meta.url), { execArgv: [], workerData });
  const api = createRequire(import.meta.url)
    .resolve('tsx/esm/api')
    .replace(/\.cjs$/, '.mjs');
  const source = new URL('./worker.ts', import.meta.url).href;
  return new Worker(
    `import(${JSON.stringify(pathToFileURL(api).href)}).then((m) => { m.register(); return import(${JSON.stringify(source)}); });`,
    { eval: true, workerData },
  );
}

/** What a worker is started with. */
export interface WorkerData {
  /** Workers in its pool. */
  workers: number;
}

interface Slot {
  worker: Worker;
  busy: boolean;
  dead?: boolean;
}

/**
 * Below this many weights the default job count runs in one thread: starting workers costs more than
 * they save on a small model. An explicit job count is always honoured.
 */
export const WORKER_MIN_WEIGHTS = 1 << 20;

/** A pool for `jobs` (explicit) or the cores (default, when the model is large enough); undefined: run here. */
export function poolFor(jobs: number | undefined, tasks: number, weights: number): WorkerPool | undefined {
  const n = jobs ?? (weights >= WORKER_MIN_WEIGHTS ? availableParallelism() : 1);
  return n > 1 && tasks > 1 ? new WorkerPool(n) : undefined;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  private async acquire(): Promise<Slot> {
    for (;;) {
      const free = this.slots.find((s) => !s.busy);
      if (free) {
        free.busy = true;
        return free;
      }
      if (this.slots.length < this.size) {
        const slot = { worker: spawnWorker(this.size), busy: true };
        slot.worker.unref();
        this.slots.push(slot);
        return slot;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private release(slot: Slot): void {
    slot.busy = false;
    this.waiting.shift()?.();
  }

  /** Runs one job on a free worker; a worker that dies fails its job with the reason. */
  run<T extends ReplyValue>(job: Exclude<Job, { kind: 'close' }>): Promise<T> {
    return this.acquire().then((slot) => this.post<T>(slot, job));
  }

  private async post<T>(slot: Slot, job: Job): Promise<T> {
    const what =
      job.kind === 'close'
        ? 'close'
        : job.kind === 'encode'
          ? `encode of ${job.unit.plan.entry.name}`
          : job.kind === 'measure' || job.kind === 'prepare'
            ? `measurement of ${job.plan.entry.name}`
            : `decode of ${job.record.name}`;
    try {
      return await new Promise<T>((resolve, reject) => {
        const w = slot.worker;
        const done = (): void => {
          w.off('message', onMessage);
          w.off('error', onError);
          w.off('exit', onExit);
        };
        const onMessage = (r: Reply): void => {
          done();
          if (r.ok) resolve(r.value as T);
          else reject(errorFromData(r.error));
        };
        const onError = (e: Error): void => {
          done();
          slot.dead = true;
          reject(e);
        };
        const onExit = (code: number): void => {
          done();
          slot.dead = true;
          reject(new Error(`worker thread exited (code ${code}) during ${what}`));
        };
        w.on('message', onMessage);
        w.on('error', onError);
        w.on('exit', onExit);
        w.ref();
        w.postMessage(job, job.kind === 'decode' && job.reuse ? [job.reuse] : []);
      }).finally(() => slot.worker.unref());
    } finally {
      // a dead worker is replaced on the next acquire
      if (slot.dead) this.slots.splice(this.slots.indexOf(slot), 1);
      this.release(slot);
    }
  }

  /** Ends every worker; each closes the files it opened first. */
  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    await Promise.all(
      slots.map(async (s) => {
        if (!s.dead) await this.post(s, { kind: 'close' }).catch(() => {});
        await s.worker.terminate();
      }),
    );
  }
}
