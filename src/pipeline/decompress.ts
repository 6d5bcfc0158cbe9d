/**
 * decompress: .nnm archive → decode media → un-lay-out → dequantize (M1) →
 * rebuild the model in its original format (M9). Each entry is read once and
 * checked against the manifest's sha256 when it is read, before anything is
 * decoded from it (entries no tensor reads are checked first). The output goes
 * to a temporary file that is renamed into place only when every tensor has
 * been decoded and written: a corrupt entry, found however late, leaves no
 * output. The decoding itself is the isomorphic one of archive/decode.ts (the
 * browser's too); this module adds files, worker threads and streamed writing.
 */

import { availableParallelism } from 'node:os';
import { basename, extname } from 'node:path';
import { rmSync, statSync } from 'node:fs';
import { CorruptArchiveError, NnmediaError, OptionError, UnsupportedError } from '../errors.js';
import {
  BYTES_PER_ELEMENT,
  elementCount,
  tensorStorage,
  type FloatDType,
  type ModelFormat,
  type SafetensorsStorage,
  type RestoredData,
  type StoredTensor,
  storedDtype,
} from '../formats/model.js';
import { FORMAT_META, formatMeta } from '../formats/meta.js';
import { rebuildFromSkeleton } from '../formats/registry.js';
import { ZSTD_SKELETON_SUFFIX, codedParts, entryBytes, type QualityRecord, type TensorRecord } from '../archive/manifest.js';
import { decodeRecord, decodeRecordBytes, halfDecoder, sharedValues } from '../archive/decode.js';
import { transposeBlockInto, transposedBytes } from '../layout/transpose.js';
import { Archive, decodeCodesNode } from '../archive/node.js';
import { checkOutputPath, commitOutput, holdOutput, releaseOutput, stagingPath, writeAll, writeAtomic } from '../io/atomic.js';
import { concatBytes } from '../io/bytes.js';
import { QueuedWriter } from '../io/writer.js';
import { checkKnownKeys, expect } from './options.js';
import { runOrdered, runPool } from './pool.js';
import { poolFor, type WorkerPool } from './workers.js';
import { restoredBytes, safetensorsPieces } from '../formats/safetensors/reader.js';
import { OnnxReader } from '../formats/onnx/reader.js';
import { externalOnnx, layoutOnnx, type Piece } from '../formats/onnx/rebuild.js';

export interface DecompressOptions {
  jobs?: number;
  /**
   * Replace an existing output file (default: refuse with `OutputExistsError`). The original model the archive
   * was made from (found by its sha256 in the manifest) is never replaced, even with `force`.
   */
  force?: boolean;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
}

const DECOMPRESS_KEYS = ['jobs', 'force', 'onProgress', 'signal'] as const satisfies readonly (keyof DecompressOptions)[];

/** The options are checked when the call is made, before any work (OptionError), as compressModel's are. */
function checkDecompressOptions(o: DecompressOptions): void {
  if (typeof o !== 'object' || o === null) throw new OptionError(`Expected an options object but received ${JSON.stringify(o)}`);
  checkKnownKeys(o, DECOMPRESS_KEYS, 'decompress');
  const given = (v: unknown, valid: boolean): boolean => v === undefined || valid;
  expect(given(o.jobs, Number.isSafeInteger(o.jobs) && o.jobs! >= 1), 'an integer ≥ 1 for jobs', o.jobs);
  expect(given(o.force, typeof o.force === 'boolean'), 'true or false for force', o.force);
  expect(given(o.onProgress, typeof o.onProgress === 'function'), 'a function for onProgress', o.onProgress);
  const signal = o.signal as { throwIfAborted?: unknown } | null | undefined;
  expect(given(signal, typeof signal?.throwIfAborted === 'function'), 'an AbortSignal for signal', o.signal);
}

/** Decodes one compressed tensor of the archive (all its slices) to float32 values in file memory order. */
export function decodeTensor(archive: Archive, t: TensorRecord): Promise<Float32Array> {
  return decodeRecord(t, archive, decodeCodesNode);
}

/** A tensor or slice straight to its bytes in the model file, here (one job) or on a worker thread. */
function tensorBytesDecoder(
  archive: Archive,
  pool?: WorkerPool,
): (t: TensorRecord, dtype: FloatDType, reuse?: ArrayBuffer) => Promise<Uint8Array> {
  return (t, dtype, reuse) =>
    pool
      ? pool.run<Uint8Array>({ kind: 'decode', file: archive.file, record: t, dtype, reuse })
      : decodeRecordBytes(t, archive, decodeCodesNode, dtype, reuse);
}

/**
 * Output buffers the writer is done with, kept for the next tensors: decoding into memory that is mapped
 * already saves faulting in (and the kernel zeroing) fresh pages for every tensor. A tensor takes the
 * smallest spare that holds it and decodes into its start. At most `SPARES` are kept, the largest: they grow to
 * the model's largest units, then every unit fits one. Memory held: at most SPARES × the largest unit decoded
 * (a tensor or slice: 2^24 weights, 64 MB of float32, with the default `--slice-weights`), for the whole run.
 */
export class SpareBuffers {
  private readonly free: ArrayBuffer[] = [];
  static readonly SPARES = 4;

  put(bytes: Uint8Array): void {
    if (bytes.byteOffset !== 0 || !(bytes.buffer instanceof ArrayBuffer)) return;
    this.free.push(bytes.buffer);
    this.free.sort((a, b) => b.byteLength - a.byteLength);
    this.free.length = Math.min(this.free.length, SpareBuffers.SPARES);
  }

  take(byteLength: number): ArrayBuffer | undefined {
    // the list is sorted largest first: the last that fits is the smallest that fits
    let pick = -1;
    for (let i = 0; i < this.free.length && this.free[i].byteLength >= byteLength; i++) pick = i;
    return pick < 0 ? undefined : this.free.splice(pick, 1)[0];
  }
}

/** Decodes one tensor or slice here (one job) or on a worker thread; the values are the same either way. */
function tensorDecoder(archive: Archive, pool?: WorkerPool): (t: TensorRecord) => Promise<Float32Array> {
  return (t) => (pool ? pool.run<Float32Array>({ kind: 'decode', file: archive.file, record: t }) : decodeTensor(archive, t));
}

function workerPool(
  options: DecompressOptions,
  parts: ReadonlyArray<{ record?: TensorRecord; transposeOf?: TensorRecord }>,
): WorkerPool | undefined {
  // one job per coded tensor or slice; the weights they decode decide whether threads are worth starting
  const coded = parts.flatMap((p) =>
    p.record ? [p.record] : p.transposeOf ? codedParts(p.transposeOf).map((c) => c.record) : [],
  );
  return poolFor(
    options.jobs,
    coded.length,
    coded.reduce((n, r) => n + elementCount(r.shape), 0),
  );
}

/** One job of a decode: tensor `t`'s values come from `source` (itself, or the tensor it is stored once as). */
interface DecodePart {
  t: TensorRecord;
  source: TensorRecord;
  record: TensorRecord;
  offset: number;
}

/** The jobs of `tensors`: each coded tensor, or each slice of a sliced one, read from `sourceOf(t)`. */
function decodeParts(tensors: readonly TensorRecord[], sourceOf: (t: TensorRecord) => TensorRecord = (t) => t): DecodePart[] {
  return tensors.flatMap((t) => codedParts(sourceOf(t)).map((part) => ({ t, source: sourceOf(t), ...part })));
}

/**
 * Runs the parts on the worker threads (or here), each decoded by `decoder(pool)`, slices set into the whole
 * tensor `whole(part)` makes, at `offset × width(part)`; by tensor key.
 */
async function decodeEach<T extends Float32Array | Uint8Array>(
  parts: readonly DecodePart[],
  options: DecompressOptions,
  decoder: (pool: WorkerPool | undefined) => (part: DecodePart) => Promise<T>,
  whole: (part: DecodePart) => T,
  width: (part: DecodePart) => number,
): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  let done = 0;
  const pool = workerPool(options, parts);
  const decode = decoder(pool);
  try {
    await runPool(parts, options.jobs ?? availableParallelism(), async (part) => {
      options.signal?.throwIfAborted();
      const got = await decode(part);
      if (!part.source.slices) out.set(part.t.key, got);
      else {
        if (!out.has(part.t.key)) out.set(part.t.key, whole(part));
        (out.get(part.t.key)! as Uint8Array).set(got as Uint8Array, part.offset * width(part));
      }
      options.onProgress?.({ done: ++done, total: parts.length, tensor: part.record.name });
    });
  } finally {
    await pool?.close();
  }
  return out;
}

/**
 * The tensors an archive codes or keeps as float16, decoded, by name (slices as jobs of their own; identical
 * tensors share one decode). Tensors kept exact (scalars, integer tensors, `--no-half-kept`) stay where the model
 * file had them, inside the archive's skeleton: `decompressArchive` restores them, this map does not hold them.
 * Given a path, the archive is opened and closed here; given an `Archive`, it stays open (the caller closes it:
 * each holds a file descriptor until `close()`).
 */
export async function decodeAllTensors(
  archive: Archive | string,
  options: DecompressOptions = {},
): Promise<Map<string, Float32Array>> {
  if (typeof archive === 'string') {
    const opened = new Archive(archive);
    try {
      return await decodeAllTensors(opened, options);
    } finally {
      opened.close();
    }
  }
  const out = await decodeEach(
    decodeParts(archive.manifest.tensors.filter((t) => t.layout && !t.sameAs)),
    options,
    (pool) => {
      const decode = tensorDecoder(archive, pool);
      return (part) => decode(part.record);
    },
    (part) => new Float32Array(elementCount(part.t.shape)),
    () => 1,
  );
  for (const t of archive.manifest.tensors) if (t.sameAs) out.set(t.key, sharedValues(t, out.get(t.sameAs)!));
  const half = halfDecoder(archive);
  for (const t of archive.manifest.tensors) if (t.half) out.set(t.key, await half(t));
  return out;
}

/**
 * Every restored tensor as the bytes its file holds (dtype and form of its storage), each decoded in one pass
 * on the worker threads (slices as jobs of their own); identical tensors share one decode, kept float16
 * tensors come as values.
 */
async function decodeRestored(archive: Archive, options: DecompressOptions): Promise<Map<string, RestoredData>> {
  const format = archive.manifest.source.format;
  const byKey = new Map(archive.manifest.tensors.map((t) => [t.key, t]));
  const dtypeOf = (t: TensorRecord): FloatDType => storedDtype(tensorStorage(format, t.storage), t.dtype);
  const sourceOf = (t: TensorRecord): TensorRecord => (t.sameAs ? byKey.get(t.sameAs)! : t);
  // a tensor stored once for several names is decoded once per file dtype among them: a float32 copy of a
  // float16 tensor gets the float32 values, not the float16 ones widened
  const decoded = archive.manifest.tensors.filter((t) => t.layout && (!t.sameAs || dtypeOf(t) !== dtypeOf(sourceOf(t))));
  const bytes = await decodeEach(
    decodeParts(decoded, sourceOf),
    options,
    (pool) => {
      const decode = tensorBytesDecoder(archive, pool);
      return (part) => decode(part.record, dtypeOf(part.t));
    },
    (part) => new Uint8Array(elementCount(part.t.shape) * BYTES_PER_ELEMENT[dtypeOf(part.t)]),
    (part) => BYTES_PER_ELEMENT[dtypeOf(part.t)],
  );
  const out = new Map<string, RestoredData>(
    [...bytes].map(([key, b]) => [key, { bytes: b, bytesDtype: dtypeOf(byKey.get(key)!) }]),
  );
  for (const t of archive.manifest.tensors) {
    if (!t.sameAs) continue;
    // decoded in its own dtype (in the first's memory order), or the first's bytes
    const shared = out.get(t.key) ?? out.get(t.sameAs)!;
    const width = BYTES_PER_ELEMENT[shared.bytesDtype!];
    out.set(
      t.key,
      t.transposed
        ? { bytes: transposedBytes(shared.bytes!, t.shape[1], t.shape[0], width), bytesDtype: shared.bytesDtype! }
        : shared,
    );
  }
  const half = halfDecoder(archive);
  for (const t of archive.manifest.tensors) if (t.half) out.set(t.key, { values: await half(t) });
  return out;
}

/** Rebuilds the model file bytes from the archive (in memory; `decompressArchive` streams safetensors). */
export async function rebuildModel(archive: Archive, options: DecompressOptions = {}): Promise<Uint8Array> {
  // every entry decoding reads is checked when read (once); any other is checked here
  archive.verifyUnread();
  const restoredData = await decodeRestored(archive, options);
  const skeleton = archive.skeleton();
  const restored = archive.manifest.tensors
    .filter((t) => restoredData.has(t.key))
    .map((t): StoredTensor => ({
      storage: tensorStorage(archive.manifest.source.format, t.storage),
      dtype: t.dtype,
      ...restoredData.get(t.key)!,
    }));
  return rebuildFromSkeleton(archive.manifest.source.format, skeleton, restored, archive.file);
}

/** What the streamed writer writes on its own: a kept float16 tensor, a coded tensor, or one slice, at [begin, end). */
export interface WritePart {
  t: TensorRecord;
  record?: TensorRecord;
  /** A transposed copy (`t.transposed`): the whole of `t`, from the parts (slices) of the tensor it is stored as. */
  transposeOf?: TensorRecord;
  begin: number;
  end: number;
  /** The dtype of its bytes in the file. */
  dtype: FloatDType;
}

/**
 * A streamed model file: units in file order, each the model's own bytes before a restored part (`before`, read
 * when written) and that part.
 */
export interface StreamLayout {
  parts: WritePart[];
  units: Array<{ before: (write: (chunk: Uint8Array) => void) => void; part?: number }>;
}

/** A restored tensor's parts at `begin` of the file: itself (kept float16), or its slices (or whole coded tensor). */
function writeParts(t: TensorRecord, source: TensorRecord, begin: number, dtype: FloatDType): WritePart[] {
  const width = BYTES_PER_ELEMENT[dtype];
  if (t.half) return [{ t, begin, end: begin + elementCount(t.shape) * width, dtype }];
  // a transposed copy is written whole: each slice of the first is a block of its columns
  if (t.transposed) return [{ t, transposeOf: source, begin, end: begin + elementCount(t.shape) * width, dtype }];
  return codedParts(source).map(({ record, offset }) => ({
    t,
    record,
    begin: begin + offset * width,
    end: begin + (offset + elementCount(record.shape)) * width,
    dtype,
  }));
}

/** safetensors: the skeleton's kept ranges between the tensors' byte ranges (read from the archive when written). */
function safetensorsLayout(archive: Archive): StreamLayout {
  const byKey = new Map(archive.manifest.tensors.map((t) => [t.key, t]));
  const parts = archive.manifest.tensors
    .filter((t) => t.layout || t.half)
    .flatMap((t) => {
      const { begin, end } = t.storage as SafetensorsStorage;
      // a kept tensor fills its range as the header states it (checked against its bytes when written)
      if (t.half) return [{ t, begin, end, dtype: t.dtype }];
      return writeParts(t, t.sameAs ? byKey.get(t.sameAs)! : t, begin, t.dtype);
    });
  const skeleton = new SkeletonReader(archive);
  const pieces = safetensorsPieces((o, n) => skeleton.read(o, n), skeleton.length, parts, archive.file);
  // each restored part with the skeleton bytes before it
  const units: StreamLayout['units'] = [];
  for (const piece of pieces)
    if ('keep' in piece) {
      const [from, to] = piece.keep;
      units.push({ before: (write) => skeleton.each(from, to, write) });
    } else units[units.length - 1].part = piece.tensor;
  return { parts, units };
}

/**
 * ONNX: the skeleton (small once the tensors' data is out) laid out with a slot for each restored tensor's data
 * (`layoutOnnx`), whose offsets in the file follow from the slots' sizes. Undefined where a tensor's data size
 * does not follow from its shape (float16 kept as `int32_data` varints): that model is rebuilt in memory.
 * The layout is checked as the in-memory rebuild is: the skeleton read as a model whose restored tensors hold
 * their slots' bytes must have, for every float tensor, exactly the data its shape needs.
 */
/** ONNX data forms whose size follows from the shape (`int32_data`'s varints do not). */
const STREAMED_FORMS = new Set(['raw', 'external', 'float_data', 'double_data']);

/** An ONNX archive's restored tensors (coded, kept as float16, or stored once for several): where each goes, its size. */
function onnxRestored(archive: Archive) {
  const format = archive.manifest.source.format;
  const restored = archive.manifest.tensors
    .filter((t) => t.layout || t.half || t.sameAs)
    .map((t) => {
      const storage = tensorStorage(format, t.storage);
      if (storage.format !== 'onnx')
        throw new CorruptArchiveError(`a ${storage.format} tensor cannot go into an ONNX model`, {
          file: archive.file,
          tensor: t.key,
        });
      const dtype = storedDtype(storage, t.dtype);
      return { t, path: storage.path, form: storage.form, dtype, length: elementCount(t.shape) * BYTES_PER_ELEMENT[dtype] };
    });
  for (const r of restored)
    if (!STREAMED_FORMS.has(r.form) && r.form !== 'int32_data')
      throw new CorruptArchiveError(`tensor ${r.t.key}: unknown ONNX data form ${JSON.stringify(r.form)}`, {
        file: archive.file,
        tensor: r.t.key,
      });
  return restored;
}

/** A restored tensor's own parts, checked to make its shape (a tensor stored as another's: that one's codes). */
function restoredParts(
  archive: Archive,
  byKey: ReadonlyMap<string, TensorRecord>,
  t: TensorRecord,
  at: number,
  dtype: FloatDType,
  length: number,
): WritePart[] {
  const source = t.sameAs ? byKey.get(t.sameAs) : t;
  if (!source || (!t.half && !source.layout))
    throw new CorruptArchiveError(`tensor ${t.key} is stored as ${t.sameAs}, which is not coded`, {
      file: archive.file,
      tensor: t.key,
    });
  const own = writeParts(t, source, at, dtype);
  if (own.reduce((n, p) => n + p.end - p.begin, 0) !== length)
    throw new CorruptArchiveError(`the slices of ${t.key} do not make its shape [${t.shape}]`, {
      file: archive.file,
      tensor: t.key,
    });
  return own;
}

export function onnxLayout(archive: Archive, output: string): StreamLayout | undefined {
  const byKey = new Map(archive.manifest.tensors.map((t) => [t.key, t]));
  const restored = onnxRestored(archive);
  if (restored.some((r) => r.form === 'int32_data')) return undefined;
  const skeleton = archive.skeleton();
  let pieces: Piece[] = [];
  checkRebuilt(archive, () => {
    pieces = layoutOnnx(skeleton, restored, archive.file);
    new OnnxReader(output, skeleton, {
      elided: new Map(restored.map((r) => [r.path, [0, r.length]])),
      at: new Map(),
      fileBytes: 0,
      mtimeMs: 0,
    });
  });
  const parts: WritePart[] = [];
  const units: StreamLayout['units'] = [];
  let before: Uint8Array[] = [];
  let at = 0;
  for (const piece of pieces) {
    if (piece instanceof Uint8Array) {
      before.push(piece);
      at += piece.length;
      continue;
    }
    const { t, dtype, length } = restored[piece.slot];
    const own = restoredParts(archive, byKey, t, at, dtype, length);
    for (const [i, p] of own.entries()) {
      const chunks = i === 0 ? before : [];
      units.push({ before: (write) => chunks.forEach(write), part: parts.length });
      parts.push(p);
    }
    before = [];
    at += length;
  }
  const tail = before;
  units.push({ before: (write) => tail.forEach(write) });
  return { parts, units };
}

/**
 * The largest ONNX file written as one: protobuf (and so onnxruntime) reads no message over 2 GiB − 1. Above it
 * the restored tensors go to an external data file beside the model. `NNMEDIA_ONNX_INLINE_LIMIT` (bytes) lowers
 * it: external data for smaller models too (and for the tests).
 */
function onnxInlineLimit(): number {
  const v = Number(process.env.NNMEDIA_ONNX_INLINE_LIMIT);
  return process.env.NNMEDIA_ONNX_INLINE_LIMIT && Number.isSafeInteger(v) && v >= 0
    ? Math.min(v, ONE_FILE_ONNX_BYTES)
    : ONE_FILE_ONNX_BYTES;
}

/** Protobuf's largest message: the largest ONNX model that is one file. */
const ONE_FILE_ONNX_BYTES = 2 ** 31 - 1;

/** Tensors in an external data file start on a page (4 KiB): a runtime that maps the file reads them in place. */
const EXTERNAL_ALIGN = 4096;

/**
 * An ONNX model with its restored tensors in the external data file `location` (beside the model): the model's
 * bytes (the skeleton with external references) and the data file's layout, streamed as a model is.
 */
function onnxExternal(archive: Archive, location: string): { model: Uint8Array; data: StreamLayout } {
  const byKey = new Map(archive.manifest.tensors.map((t) => [t.key, t]));
  const parts: WritePart[] = [];
  const units: StreamLayout['units'] = [];
  const places: Array<{ path: string; place: { location: string; offset: number; length: number } }> = [];
  let at = 0;
  for (const { t, path, dtype, length } of onnxRestored(archive)) {
    const pad = (EXTERNAL_ALIGN - (at % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
    const zeros = new Uint8Array(pad);
    at += pad;
    places.push({ path, place: { location, offset: at, length } });
    for (const [i, p] of restoredParts(archive, byKey, t, at, dtype, length).entries())
      units.push({ before: i === 0 && pad ? (write) => write(zeros) : () => {}, part: parts.push(p) - 1 });
    at += length;
  }
  units.push({ before: () => {} });
  const model = externalOnnx(archive.skeleton(), places, archive.file);
  return { model, data: { parts, units } };
}

/** The size of an ONNX archive's model as one file, at most (undefined: known only once rebuilt, int32_data). */
function inlineOnnxBytes(archive: Archive): number | undefined {
  const restored = onnxRestored(archive);
  if (restored.some((r) => r.form === 'int32_data')) return undefined;
  // the skeleton, and each tensor's bytes with a field header (a tag and a length) in its message and in each
  // message around it (a graph inside a node's attribute: a few levels; 64 bytes covers them)
  return new SkeletonReader(archive).length + restored.reduce((n, r) => n + r.length + 64, 0);
}

/**
 * A transposed copy's bytes (`t` [b, a] of `first` [a, b]): the first's parts (its slices: blocks of its rows) decoded
 * one at a time into `t`'s columns. Memory: the copy and one slice.
 */
async function transposedCopy(
  t: TensorRecord,
  first: TensorRecord,
  dtype: FloatDType,
  decode: (record: TensorRecord) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const width = BYTES_PER_ELEMENT[dtype];
  const [rows, cols] = first.shape;
  const out = new Uint8Array(rows * cols * width);
  for (const { record, offset } of codedParts(first))
    transposeBlockInto(await decode(record), record.shape[0], cols, width, out, rows, offset / cols);
  return out;
}

/**
 * A model file, streamed: written piece by piece in file order, tensors (and the slices of sliced ones) decoded
 * in parallel a few ahead of the writer, so memory holds a few tensors or slices, never the model. A tensor stored
 * once for several names is decoded again for each (bounded memory beats saving the decode).
 */
async function writeStreamed(archive: Archive, fd: number, options: DecompressOptions, layout: StreamLayout): Promise<number> {
  const file = archive.file;
  const { parts, units } = layout;
  const pool = workerPool(options, parts);
  const decode = tensorBytesDecoder(archive, pool);
  const half = halfDecoder(archive);
  const jobs = options.jobs ?? availableParallelism();
  // writes run on libuv's threads while the next tensors decode
  const writer = new QueuedWriter(fd);
  const spare = new SpareBuffers();
  let done = 0;
  try {
    // Units of work that the window counts, each a restored part with the bytes before it, so `jobs` parts are
    // decoding while the writer waits (counting the bytes between as units let only one decode at a time).
    await runOrdered(
      units,
      // one decoded tensor may wait for the writer while every worker decodes the next ones
      jobs + 1,
      async ({ part }) => {
        if (part === undefined) return undefined;
        options.signal?.throwIfAborted();
        const { t, record, transposeOf, begin, end, dtype } = parts[part];
        // a coded tensor or slice comes back as its bytes in the file (dequantized, laid out and converted in one pass)
        const bytes = record
          ? await decode(record, dtype, spare.take(end - begin))
          : transposeOf
            ? await transposedCopy(t, transposeOf, dtype, (r) => decode(r, dtype))
            : restoredBytes({ begin, end, dtype, values: await half(t) }, file);
        if (bytes.length !== end - begin)
          throw new CorruptArchiveError(`restored tensor does not fit its range ${begin}-${end}`, { file, tensor: t.key });
        return bytes;
      },
      async (bytes, { before, part }) => {
        // the model's own bytes before the part, in file order (a skeleton part at a time in memory)
        const chunks: Uint8Array[] = [];
        before((chunk) => chunks.push(chunk));
        for (const chunk of chunks) await writer.write(chunk);
        if (part === undefined) return;
        const written = bytes!;
        await writer.write(written, parts[part].record ? () => spare.put(written) : undefined);
        options.onProgress?.({ done: ++done, total: parts.length, tensor: (parts[part].record ?? parts[part].t).name });
      },
    );
    await writer.flush();
  } finally {
    // no write may still be running when the caller closes the descriptor (on success flushed already)
    await writer.flush().catch(() => {});
    await pool?.close();
  }
  return writer.bytes;
}

/**
 * The skeleton of an archive read by offset across its parts, one part (verified) in memory at a time:
 * the streaming writer reads it front to back.
 */
class SkeletonReader {
  readonly length: number;
  private readonly parts: string[];
  private readonly starts: number[] = [];
  private cached?: { index: number; data: Uint8Array };

  constructor(private readonly archive: Archive) {
    this.parts = archive.skeletonParts();
    // a zstd skeleton (one part) is read whole up front: its length is its content's
    if (this.parts.length === 1 && this.parts[0].endsWith(ZSTD_SKELETON_SUFFIX))
      this.cached = { index: 0, data: archive.skeletonPart(this.parts[0]) };
    let at = 0;
    for (const [i, p] of this.parts.entries()) {
      this.starts.push(at);
      at += this.partLength(i, p);
    }
    this.length = at;
  }

  private partLength(index: number, name: string): number {
    return this.cached?.index === index ? this.cached.data.length : entryBytes(this.archive.manifest, name)!;
  }

  private part(index: number): Uint8Array {
    if (this.cached?.index !== index) this.cached = { index, data: this.archive.skeletonPart(this.parts[index]) };
    return this.cached.data;
  }

  /** Calls `fn` with the bytes [start, end) in order, a part at a time. */
  each(start: number, end: number, fn: (chunk: Uint8Array) => void): void {
    for (let i = 0; i < this.parts.length && start < end; i++) {
      const s = this.starts[i];
      const e = s + this.partLength(i, this.parts[i]);
      if (e <= start) continue;
      const data = this.part(i);
      const to = Math.min(end, e);
      fn(data.subarray(start - s, to - s));
      start = to;
    }
    if (start < end) throw new CorruptArchiveError(`skeleton ends before byte ${end}`, { file: this.archive.file });
  }

  read(start: number, length: number): Uint8Array {
    const chunks: Uint8Array[] = [];
    this.each(start, start + length, (c) => chunks.push(c));
    return chunks.length === 1 ? chunks[0] : concatBytes(chunks);
  }
}

/** Runs a read-back check of a rebuilt model; what it finds is the archive's fault (manifest and skeleton disagree). */
function checkRebuilt(archive: Archive, check: () => unknown): void {
  try {
    check();
  } catch (e) {
    if (!(e instanceof NnmediaError)) throw e;
    throw new CorruptArchiveError(`the rebuilt model is not valid (${e.message}): the manifest does not match the skeleton`, {
      file: archive.file,
    });
  }
}

/**
 * Writes the archive's model to `fd`, returning its bytes: streamed in file order (safetensors, and ONNX whose
 * tensors' sizes follow from their shapes), else rebuilt in memory and checked to read back. Each entry is checked
 * (sha256) when it is read for decoding; entries no tensor reads are checked first. `output` names the model in
 * errors about it.
 */
export async function writeModel(archive: Archive, fd: number, options: DecompressOptions, output: string): Promise<number> {
  const format = archive.manifest.source.format;
  const layout = format === 'safetensors' ? safetensorsLayout(archive) : onnxLayout(archive, output);
  if (layout) {
    // a corrupt entry fails the write: the caller's temporary file is removed and the output never appears
    archive.verifyUnread();
    return writeStreamed(archive, fd, options, layout);
  }
  const model = await rebuildModel(archive, options);
  // the rebuilt model must read back: every float tensor with exactly the data its shape needs
  checkRebuilt(archive, () => new OnnxReader(output, model));
  // (its size known only now: protobuf reads no message over 2 GiB − 1, and int32_data cannot go to external data)
  if (model.length > ONE_FILE_ONNX_BYTES)
    throw new UnsupportedError(
      `the restored model is ${model.length} bytes, over ONNX's 2 GiB for one file, and its float16 tensors are stored as int32_data: they cannot go to external data`,
      { file: output },
    );
  options.signal?.throwIfAborted();
  writeAll(fd, model);
  return model.length;
}

/**
 * An ONNX model over 2 GiB: the model (the skeleton with external references, checked first) and its restored
 * tensors in `OUTPUT.data` beside it. The data file is an output too: never replaced without `force`.
 */
async function writeExternal(
  archive: Archive,
  input: string,
  output: string,
  options: DecompressOptions,
): Promise<{ file: string; bytes: number }> {
  const dataFile = `${output}.data`;
  await checkOutputPath(dataFile, [input], { force: options.force });
  const { model, data } = onnxExternal(archive, basename(dataFile));
  // read back as the model it will be (its external references are checked for form, not opened)
  checkRebuilt(archive, () => new OnnxReader(output, model));
  archive.verifyUnread();
  // Both files are written under staging names and renamed into place one right after the other: an old model
  // beside a new data file (or the reverse) would load with the wrong weights, and a failure leaves the old pair.
  const [dataStaged, modelStaged] = [stagingPath(dataFile), stagingPath(output)];
  holdOutput(dataStaged);
  holdOutput(modelStaged);
  let bytes = 0;
  try {
    await writeAtomic(
      dataStaged,
      async (fd) => {
        bytes = await writeStreamed(archive, fd, options, data);
      },
      { signal: options.signal },
    );
    await writeAtomic(modelStaged, (fd) => writeAll(fd, model), { signal: options.signal });
    commitOutput(dataStaged, dataFile, Boolean(options.force));
    try {
      commitOutput(modelStaged, output, Boolean(options.force));
    } catch (e) {
      // (without force the data file replaced nothing: it goes again)
      if (!options.force) rmSync(dataFile, { force: true });
      throw e;
    }
  } finally {
    rmSync(dataStaged, { force: true });
    rmSync(modelStaged, { force: true });
    releaseOutput(dataStaged);
    releaseOutput(modelStaged);
  }
  return { file: dataFile, bytes };
}

export async function decompressArchive(
  input: string,
  output: string,
  options: DecompressOptions = {},
): Promise<{ format: ModelFormat; bytes: number; externalData?: { file: string; bytes: number }; quality?: QualityRecord }> {
  checkDecompressOptions(options);
  const archive = new Archive(input);
  try {
    const { source } = archive.manifest;
    await checkOutputPath(output, [input], {
      force: options.force,
      protect: {
        sha256: source.sha256,
        bytes: source.bytes,
        what: `this is the original model the archive was made from (${source.file}, sha256 ${source.sha256.slice(0, 12)}…)`,
      },
    });
    const format = archive.manifest.source.format;
    const ext = extname(output).toLowerCase();
    if (ext && FORMAT_META.some((f) => f.extension === ext) && ext !== formatMeta(format)!.extension)
      throw new OptionError(`the archive holds a ${format} model; cannot write it as ${ext}`);
    let bytes = 0;
    let externalData: { file: string; bytes: number } | undefined;
    const inline = format === 'onnx' ? inlineOnnxBytes(archive) : undefined;
    if (inline !== undefined && inline > onnxInlineLimit()) externalData = await writeExternal(archive, input, output, options);
    else
      await writeAtomic(
        output,
        async (fd) => {
          bytes = await writeModel(archive, fd, options, output);
        },
        { overwrite: options.force, signal: options.signal },
      );
    if (externalData) bytes = statSync(output).size;
    // the gate's verdict when the archive was made: a refused archive kept with --force restores too, and says so
    return {
      format,
      bytes,
      ...(externalData ? { externalData } : {}),
      ...(archive.manifest.quality ? { quality: archive.manifest.quality } : {}),
    };
  } finally {
    archive.close();
  }
}
