/** Worker-thread side of `WorkerPool`: one tensor per message, files opened once per worker. */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { errorToData } from '../errors.js';
import { elementCount, rowElements, type ModelReader } from '../formats/model.js';
import { encodeUnit } from './encode.js';
import { Archive, decodeCodesNode } from '../archive/node.js';
import { decodeRecord, decodeRecordBytes } from '../archive/decode.js';
import { openModel } from '../formats/registry.js';
import { measureTensor, measureToProbe, type ProbeMeasure } from './measure.js';
import type { EncodeReply, Job, MeasureReply, Reply, SourceRange, WorkerData } from './workers.js';
import { RangeReader } from '../formats/range-reader.js';

/**
 * V8's full collection, for this worker's own use after its units (see `COLLECT_WEIGHTS`). A unit's working arrays (its values, planes
 * and restored values: ~250 MB for a 16M-weight slice) are garbage once it is done, but V8 kept them until well
 * into the next unit: a worker finished units holding 150–290 MB of array buffers it no longer used, and peaks
 * were two units' worth. Collected after each unit (later: after each 4 M weights of units), `--target-snr 30` on the 0.4 GB synthetic model
 * peaked at 720 MB instead of 881, `--target-bpw 4` at 914 instead of 1,050 (the same archives), before later
 * sessions made the units' arrays fewer; since 2026-12-06 only where the worker's array buffers have reached its
 * share of a bound (COLLECT_BYTES). The collector is not
 * exposed without `--expose-gc`, which a library cannot ask of its host process: the flag is set just long enough
 * to make one context that has it, then cleared. Where V8 refuses, nothing is collected by hand.
 */
const collect = ((): (() => void) | undefined => {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
})();

const readers = new Map<string, ModelReader>();
const archives = new Map<string, Archive>();

/** A buffer that is exactly its own ArrayBuffer can be transferred; a view into a shared one is copied first. */
function own(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer ? b : b.slice();
}

/**
 * The reader a job's tensor is read with: its byte range alone where the job carries one (an ONNX model is
 * not read whole again in each worker), else the model opened once per worker.
 */
function readerOf(file: string, key: string, source?: SourceRange): ModelReader {
  if (source) return new RangeReader(source.format, file, key, source.range);
  let reader = readers.get(file);
  if (!reader) readers.set(file, (reader = openModel(file)));
  return reader;
}

async function handle(job: Job): Promise<{
  value: EncodeReply | MeasureReply | ProbeMeasure | Float32Array | Uint8Array | null;
  transfer: ArrayBuffer[];
}> {
  if (job.kind === 'close') {
    closeAll();
    return { value: null, transfer: [] };
  }
  if (job.kind === 'measure')
    return {
      value: measureTensor(readerOf(job.file, job.plan.entry.key, job.range), job.plan, job.sliceWeights, job.modes),
      transfer: [],
    };
  if (job.kind === 'prepare') {
    const { plan, range, ...request } = job;
    const reader = readerOf(job.file, plan.entry.key, range);
    const prepared = measureToProbe(plan, reader.read(plan.entry.key), request);
    // the working planes go back whole (each its own buffer, made by preparePlanes)
    const planes = prepared.prepared.planes;
    const transfer = planes.every((pl) => pl.byteOffset === 0 && pl.byteLength === pl.buffer.byteLength)
      ? [...new Set(planes.map((pl) => pl.buffer as ArrayBuffer))]
      : [];
    return { value: prepared, transfer };
  }
  if (job.kind === 'encode') {
    const encoded = await encodeUnit(readerOf(job.file, job.unit.plan.entry.key, job.range), job.unit);
    const entries = encoded.entries.map(([n, d]): [string, Uint8Array] => [n, own(d)]);
    return { value: { ...encoded, entries }, transfer: entries.map(([, d]) => d.buffer as ArrayBuffer) };
  }
  let archive = archives.get(job.file);
  if (!archive) archives.set(job.file, (archive = new Archive(job.file)));
  if (job.dtype) {
    // the model file's bytes, made here: the writer only writes them
    const made = await decodeRecordBytes(job.record, archive, decodeCodesNode, job.dtype, job.reuse);
    // decoded into the start of the buffer it was handed: that buffer goes back whole, the view says how much
    const bytes = job.reuse && made.buffer === job.reuse ? made : own(made);
    return { value: bytes, transfer: [bytes.buffer as ArrayBuffer] };
  }
  const values = await decodeRecord(job.record, archive, decodeCodesNode);
  return { value: values, transfer: [values.buffer as ArrayBuffer] };
}

function closeAll(): void {
  for (const r of readers.values()) r.close();
  for (const a of archives.values()) a.close();
  readers.clear();
  archives.clear();
}

/**
 * Weights of the units handled since the last collection: a collection costs ~20 ms whatever the garbage (ISNet's
 * 119 tensors, collected after each, took 5.6–6.3 s of CPU with two workers against 3.3 s with none), so small
 * units are collected together, once their arrays could reach ~64 MB (4 M weights at ~16 bytes each).
 */
let uncollected = 0;
const COLLECT_WEIGHTS = 2 ** 22;
/**
 * ...and only where this worker's array buffers, live or garbage, have reached its share of COLLECT_POOL_BYTES
 * (256 MB each of two workers). V8 collects on its own as they grow (external memory pressure), so a forced
 * collection after every unit mostly bought memory no run needed: the 1.2 GB model's default encode made 20 a
 * worker, ~0.3 s of CPU each; its peak is 0.69–0.70 GB either way, a 0.4 GB model's `--target-snr 30` 0.81–0.82 →
 * 0.82–0.88 GB with two workers (docs/speed.md). The share keeps the garbage of a pool of any size near 512 MB.
 * NNMEDIA_COLLECT_BYTES sets a worker's bound for measuring (0: the rule alone, once 4M weights of units are done).
 */
const COLLECT_POOL_BYTES = 2 ** 29;
const COLLECT_BYTES = ((): number => {
  const v = Number(process.env.NNMEDIA_COLLECT_BYTES);
  if (process.env.NNMEDIA_COLLECT_BYTES && Number.isFinite(v) && v >= 0) return v;
  return COLLECT_POOL_BYTES / Math.max(1, (workerData as WorkerData | undefined)?.workers ?? 1);
})();

function unitWeights(job: Job): number {
  if (job.kind === 'encode') {
    const { plan, slice } = job.unit;
    return slice ? slice.rows * rowElements(plan.entry.shape) : elementCount(plan.entry.shape);
  }
  return job.kind === 'measure' || job.kind === 'prepare' ? elementCount(job.plan.entry.shape) : 0;
}

parentPort!.on('message', (job: Job) => {
  handle(job).then(
    ({ value, transfer }) => {
      parentPort!.postMessage({ ok: true, value } satisfies Reply, transfer);
      // the unit's arrays are garbage now: collect them before the next units add their own (see `collect`)
      uncollected += unitWeights(job);
      if (uncollected >= COLLECT_WEIGHTS && process.memoryUsage().arrayBuffers >= COLLECT_BYTES) {
        uncollected = 0;
        collect?.();
      }
    },
    (e: unknown) => parentPort!.postMessage({ ok: false, error: errorToData(e) } satisfies Reply),
  );
});
