/**
 * decompress: .nnm archive → verify checksums → decode media → un-lay-out →
 * dequantize (M1) → rebuild the model in its original format (M9). The output
 * is written only after every entry has been verified and decoded.
 */

import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { getCodec } from '../codecs/registry.js';
import { CorruptArchiveError, NnmediaError, OptionError } from '../errors.js';
import { BYTES_PER_ELEMENT, elementCount, type ModelFormat } from '../formats/model.js';
import { rebuildFromSkeleton } from '../formats/rebuild.js';
import { layoutElementCount, planeShapes, scatterPlanes } from '../layout/planes.js';
import { pasteTile } from '../layout/tiles.js';
import { allocCodes, dequantizePlane, restoreNonFinite, type PlaneRanges } from '../quantize/uniform.js';
import { decodeRangeBytes, type RangeDtype } from '../quantize/tensor.js';
import { decodeExactValues } from '../quantize/exact.js';
import { fromHalf } from '../quantize/half.js';
import { unrotatePlane } from '../transform/hadamard.js';
import {
  FORMAT_VERSION,
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  codedParts,
  decodeParts,
  skeletonEntries,
  sliceAsTensor,
  type Manifest,
  type TensorRecord,
} from '../archive/manifest.js';
import { ZipReader } from '../archive/zip.js';
import { checkOutputPath, writeAll, writeAtomic } from '../io/atomic.js';
import { runOrdered, runPool } from './pool.js';
import { poolFor, type WorkerPool } from './workers.js';
import { restoredBytes, safetensorsPieces } from '../formats/safetensors/reader.js';
import { OnnxReader } from '../formats/onnx/reader.js';
import { concatBytes } from '../formats/onnx/protobuf.js';

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

/** Largest tensor we agree to allocate from a manifest's word (2^31 elements = 8 GiB of float32). */
const MAX_TENSOR_ELEMENTS = 2 ** 31;

/** An opened archive: manifest parsed and checked, entries verified on read. */
export class Archive {
  readonly manifest: Manifest;
  private readonly zip: ZipReader;

  constructor(readonly file: string) {
    this.zip = new ZipReader(file);
    try {
      const info = this.zip.list().find((e) => e.name === MANIFEST_NAME);
      if (!info) throw new CorruptArchiveError(`no ${MANIFEST_NAME}: not an nnmedia archive`, { file });
      if (info.size > MAX_MANIFEST_BYTES) throw new CorruptArchiveError(`manifest of ${info.size} bytes is too large`, { file });
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.from(this.zip.read(MANIFEST_NAME)).toString('utf8'));
      } catch (e) {
        if (e instanceof NnmediaError) throw e;
        throw new CorruptArchiveError(`manifest is not valid JSON: ${(e as Error).message}`, { file });
      }
      this.manifest = checkManifest(parsed, file);
      for (const name of Object.keys(this.manifest.entries))
        if (!this.zip.has(name)) throw new CorruptArchiveError(`entry ${name} listed in the manifest is missing`, { file });
    } catch (e) {
      this.zip.close();
      throw e;
    }
  }

  /** An entry's bytes, checked against the manifest's sha256. */
  entry(name: string, tensor?: string): Uint8Array {
    const want = this.manifest.entries[name];
    if (!want) throw new CorruptArchiveError(`entry ${name} is not listed in the manifest`, { file: this.file, tensor });
    const data = this.zip.read(name);
    const got = createHash('sha256').update(data).digest('hex');
    if (got !== want.sha256 || data.length !== want.bytes)
      throw new CorruptArchiveError(`entry ${name}: ${got !== want.sha256 ? 'sha256' : 'size'} mismatch (corrupt)`, {
        file: this.file,
        tensor,
      });
    return data;
  }

  /** The skeleton's entries, in order: one, unless a large skeleton was written in parts. */
  skeletonParts(): string[] {
    return skeletonEntries(this.manifest);
  }

  /** The whole skeleton in memory (ONNX, and in-memory rebuilds). */
  skeleton(): Uint8Array {
    const parts = this.skeletonParts().map((p) => this.entry(p));
    return parts.length === 1 ? parts[0] : concatBytes(parts);
  }

  /** Verifies every entry's checksum. */
  verify(): void {
    for (const name of Object.keys(this.manifest.entries)) this.entry(name);
  }

  entrySizes(): Map<string, number> {
    return new Map(this.zip.list().map((e) => [e.name, e.compressedSize]));
  }

  close(): void {
    this.zip.close();
  }
}

function fail(file: string, msg: string, tensor?: string): never {
  throw new CorruptArchiveError(`manifest: ${msg}`, { file, tensor });
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isPos = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const FLOAT_DTYPES = ['float32', 'float16', 'bfloat16', 'float64'];

/** The shape of every field of a tensor record the decoder reads: types first, then the geometry checks. */
function checkRecordTypes(t: TensorRecord, format: string, file: string): void {
  const bad: (what: string) => never = (what) => fail(file, `bad ${what}`, typeof t.key === 'string' ? t.key : undefined);
  if (!FLOAT_DTYPES.includes(t.dtype)) bad('dtype');
  if (typeof t.name !== 'string') bad('name');
  if (!isObj(t.storage)) bad('storage');
  if (format === 'onnx' && (typeof t.storage.path !== 'string' || typeof t.storage.form !== 'string')) bad('storage');
  if (format === 'safetensors' && !(isCount(t.storage.begin) && isCount(t.storage.end) && t.storage.end >= t.storage.begin))
    bad('storage');
  if (t.sameAs !== undefined && typeof t.sameAs !== 'string') bad('sameAs');
  if (t.half !== undefined && !(isObj(t.half) && typeof t.half.entry === 'string' && isCount(t.half.offset) && !t.layout))
    bad('half record');
  if (t.layout === undefined) return;
  const l = t.layout as unknown as Record<string, unknown>;
  if (!isObj(l)) bad('layout');
  const fields: Record<string, string[]> = {
    fc: ['nin', 'nout'],
    conv: ['nfin', 'nfout', 'kx', 'ky'],
    lstm: ['gates', 'directions', 'hidden', 'nin'],
    gru: ['gates', 'directions', 'hidden', 'nin'],
  };
  const need = typeof l.kind === 'string' && Object.hasOwn(fields, l.kind) ? fields[l.kind] : undefined;
  if (!need || !need.every((k) => isPos(l[k]))) bad('layout');
  if ((l.kind === 'fc' || l.kind === 'conv') && l.order !== 'in_out' && l.order !== 'out_in') bad('layout order');
  // recurrent layouts are one plane per gate and direction: bound them before any plane list is made
  if ((l.kind === 'lstm' && l.gates !== 4) || (l.kind === 'gru' && l.gates !== 3)) bad('gate count');
  if ((l.kind === 'lstm' || l.kind === 'gru') && l.directions !== 1 && l.directions !== 2) bad('direction count');
  if (t.sameAs !== undefined) return;
  if (t.slices !== undefined) {
    if (
      !Array.isArray(t.slices) ||
      t.planes !== undefined ||
      t.quant !== undefined ||
      t.codec !== undefined ||
      t.shape.length < 2
    )
      bad('slices');
    return;
  }
  if (!Array.isArray(t.planes) || !isObj(t.quant) || !isObj(t.codec)) bad('planes, quantization or codec');
  if (!isPos(t.quant.bits)) bad('bits');
  if (typeof t.codec.name !== 'string' || typeof t.codec.media !== 'string') bad('codec');
  const q = t.quant;
  if (!Array.isArray(q.ranges) || !q.ranges.every((r) => typeof r === 'string')) bad('ranges');
  if (!Array.isArray(q.channelWidth) || !q.channelWidth.every(isPos)) bad('channel widths');
  if (q.rangeDtype !== undefined && !(Array.isArray(q.rangeDtype) && q.rangeDtype.every((d) => typeof d === 'string')))
    bad('range dtypes');
  if (q.rotation !== undefined && !(isObj(q.rotation) && Array.isArray(q.rotation.seeds))) bad('rotation');
  for (const pr of t.planes as unknown[]) {
    if (!isObj(pr) || !Array.isArray(pr.tiles)) bad('plane record');
    const rec = pr as unknown as Record<string, unknown> & { tiles: unknown[] };
    if (
      rec.frame !== undefined &&
      !(isObj(rec.frame) && isPos(rec.frame.rows) && isPos(rec.frame.cols) && isPos(rec.frame.count))
    )
      bad('frame record');
    for (const tile of rec.tiles)
      if (
        !isObj(tile) ||
        typeof tile.entry !== 'string' ||
        !['row', 'col', 'rows', 'cols'].every((k) => isCount(tile[k])) ||
        (tile.frame !== undefined && !isCount(tile.frame))
      )
        bad('tile record');
  }
  if (t.nonFinite !== undefined && typeof t.nonFinite !== 'string') bad('exact-values entry');
}

/** Structural checks on a hostile manifest before any allocation is based on it. */
export function checkManifest(m: unknown, file: string): Manifest {
  const man = m as Manifest;
  if (typeof man !== 'object' || man === null || man.format !== 'nnmedia') fail(file, 'not an nnmedia manifest');
  if (man.version !== FORMAT_VERSION)
    fail(file, `unsupported format version ${JSON.stringify(man.version)} (this build reads ${FORMAT_VERSION})`);
  if (!man.source || (man.source.format !== 'onnx' && man.source.format !== 'safetensors')) fail(file, 'unknown source format');
  if (!Array.isArray(man.tensors) || typeof man.entries !== 'object' || man.entries === null)
    fail(file, 'tensors or entries missing');
  for (const [name, e] of Object.entries(man.entries))
    if (!isObj(e) || typeof e.sha256 !== 'string' || !isCount(e.bytes)) fail(file, `bad entry record ${JSON.stringify(name)}`);
  if (typeof man.skeleton !== 'string' || !Object.hasOwn(man.entries, man.skeleton)) fail(file, 'skeleton entry missing');
  if (
    man.skeletonParts !== undefined &&
    !(
      Array.isArray(man.skeletonParts) &&
      man.skeletonParts[0] === man.skeleton &&
      man.skeletonParts.every((p) => typeof p === 'string' && Object.hasOwn(man.entries, p))
    )
  )
    fail(file, 'bad skeleton parts');
  const keys = new Set<string>();
  for (const t of man.tensors) {
    if (!isObj(t) || typeof t.key !== 'string' || !Array.isArray(t.shape)) fail(file, 'tensor record without key or shape');
    checkRecordTypes(t, man.source.format, file);
    if (keys.has(t.key)) fail(file, `duplicate tensor key`, t.key);
    if (t.half) {
      const e = man.entries[t.half.entry];
      if (!e || (t.half.offset + elementCount(t.shape)) * 2 > e.bytes)
        fail(file, 'half-precision values outside their entry', t.key);
    }
    keys.add(t.key);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(file, 'invalid shape', t.key);
    const n = elementCount(t.shape);
    if (n > MAX_TENSOR_ELEMENTS) fail(file, `tensor of ${n} elements exceeds the limit`, t.key);
    if (t.sameAs !== undefined) {
      const first = man.tensors.find((x) => x.key === t.sameAs);
      if (!first || first.sameAs !== undefined || elementCount(first.shape) !== n)
        fail(file, `bad sameAs reference ${JSON.stringify(t.sameAs)}`, t.key);
      continue;
    }
    if (!t.layout) continue;
    if (layoutElementCount(t.layout) !== n) fail(file, 'layout does not match the shape', t.key);
    if (t.slices) checkSlices(t, man, file);
    else checkCoded(t, man, file);
  }
  return man;
}

/** Planes, quantization and tiles of a coded tensor (or slice) against its layout and the listed entries. */
function checkCoded(t: TensorRecord, man: Manifest, file: string): void {
  if (!t.layout) fail(file, 'layout missing', t.key);
  const shapes = planeShapes(t.layout);
  if (!t.planes || !t.quant || !t.codec || t.planes.length !== shapes.length || t.quant.ranges.length !== shapes.length)
    fail(file, 'planes, quantization or codec missing', t.key);
  if (![8, 16, 24, 32].includes(t.quant.bits)) fail(file, `invalid bits ${JSON.stringify(t.quant.bits)}`, t.key);
  shapes.forEach((s, p) => {
    const pr = t.planes![p];
    if (pr.rows !== s.rows || pr.cols !== s.cols) fail(file, `plane ${p} geometry differs from the layout`, t.key);
    let covered = 0;
    for (const tile of pr.tiles) {
      if (!(
        tile.row >= 0 &&
        tile.col >= 0 &&
        tile.rows > 0 &&
        tile.cols > 0 &&
        tile.row + tile.rows <= s.rows &&
        tile.col + tile.cols <= s.cols
      ))
        fail(file, `tile outside plane ${p}`, t.key);
      if (!man.entries[tile.entry]) fail(file, `tile entry ${tile.entry} not listed`, t.key);
      covered += tile.rows * tile.cols;
    }
    if (covered !== s.rows * s.cols) fail(file, `tiles do not cover plane ${p}`, t.key);
  });
}

/** Slices: contiguous blocks of the leading dimension from row 0 to the end, each a coded tensor of its own. */
function checkSlices(t: TensorRecord, man: Manifest, file: string): void {
  let next = 0;
  for (const s of t.slices!) {
    if (!isObj(s) || !isCount(s.row) || !isPos(s.rows) || s.row !== next || s.row + s.rows > t.shape[0])
      fail(file, 'slices do not tile the leading dimension', t.key);
    next = s.row + s.rows;
    const { record } = sliceAsTensor(t, s);
    checkRecordTypes(record, man.source.format, file);
    if (!record.layout || layoutElementCount(record.layout) !== elementCount(record.shape))
      fail(file, `slice at row ${s.row}: layout does not match its shape`, t.key);
    checkCoded(record, man, file);
  }
  if (next !== t.shape[0]) fail(file, 'slices do not tile the leading dimension', t.key);
}

function decodeRanges(
  b64: string,
  dtype: RangeDtype,
  bits: number,
  channelWidth: number,
  file: string,
  tensor: string,
): PlaneRanges {
  const bytes = Buffer.from(b64, 'base64');
  const width = dtype === 'step8' ? 0.5 : dtype === 'float16' ? 2 : 4;
  if (bytes.length % (2 * width) !== 0 || bytes.length === 0) fail(file, 'bad quantization ranges', tensor);
  const all = decodeRangeBytes(bytes, dtype, bits);
  const n = all.length / 2;
  return { mins: all.subarray(0, n), maxs: all.subarray(n), channelWidth };
}

/** Decodes one compressed tensor of the archive (all its slices) to float32 values in file memory order. */
export async function decodeTensor(archive: Archive, t: TensorRecord): Promise<Float32Array> {
  return decodeParts(
    t,
    (record) => decodeCoded(archive, record),
    (message) => fail(archive.file, message, t.key),
  );
}

/** Decodes one coded tensor or slice. */
async function decodeCoded(archive: Archive, t: TensorRecord): Promise<Float32Array> {
  const file = archive.file;
  if (!t.layout || !t.planes || !t.quant || !t.codec) fail(file, 'tensor is not compressed', t.key);
  const codec = getCodec(t.codec.name, { file, tensor: t.name });
  const bits = t.quant.bits;
  const shapes = planeShapes(t.layout);
  const planes: Float32Array[] = [];
  for (let p = 0; p < shapes.length; p++) {
    const s = shapes[p];
    const codes = allocCodes(bits, s.rows * s.cols);
    const pr = t.planes[p];
    if (pr.frame) {
      // video: one stream of frames; every block is a frame, padded to the frame size
      const f = pr.frame;
      if (!(f.rows > 0 && f.cols > 0 && f.count === pr.tiles.length && f.rows * f.cols * f.count <= 4 * s.rows * s.cols + 1e6))
        fail(file, `plane ${p} has an implausible frame geometry`, t.key);
      const entry = pr.tiles[0].entry;
      const data = archive.entry(entry, t.name);
      let frames;
      try {
        frames = await codec.decode(data, { width: f.cols, height: f.rows * f.count, bits, frames: f.count });
      } catch (e) {
        throw new CorruptArchiveError(`cannot decode ${entry}: ${(e as Error).message}`, { file, tensor: t.name });
      }
      for (const tile of pr.tiles) {
        const k = tile.frame ?? 0;
        if (tile.entry !== entry || k < 0 || k >= f.count || tile.rows > f.rows || tile.cols > f.cols)
          fail(file, `bad frame record in plane ${p}`, t.key);
        for (let r = 0; r < tile.rows; r++)
          codes.set(
            frames.subarray((k * f.rows + r) * f.cols, (k * f.rows + r) * f.cols + tile.cols),
            (tile.row + r) * s.cols + tile.col,
          );
      }
    } else
      for (const tile of pr.tiles) {
        const data = archive.entry(tile.entry, t.name);
        let back;
        try {
          back = await codec.decode(data, { width: tile.cols, height: tile.rows, bits });
        } catch (e) {
          throw new CorruptArchiveError(`cannot decode ${tile.entry}: ${(e as Error).message}`, { file, tensor: t.name });
        }
        pasteTile(codes, s.cols, tile, back);
      }
    const dtype = t.quant.rangeDtype?.[p] ?? 'float32';
    if (dtype !== 'float16' && dtype !== 'float32' && dtype !== 'step8')
      fail(file, `unknown range dtype ${JSON.stringify(dtype)}`, t.key);
    const ranges = decodeRanges(t.quant.ranges[p], dtype, bits, t.quant.channelWidth[p], file, t.key);
    const channels = Math.ceil(s.cols / ranges.channelWidth);
    if (ranges.mins.length !== channels)
      fail(file, `plane ${p} has ${ranges.mins.length} ranges for ${channels} channels`, t.key);
    const plane = dequantizePlane(codes, s.rows, s.cols, bits, ranges);
    const rot = t.quant.rotation;
    if (rot) {
      if (rot.kind !== 'hadamard' || !Array.isArray(rot.seeds) || !Number.isInteger(rot.seeds[p]))
        fail(file, 'bad rotation record', t.key);
      unrotatePlane(plane, s.rows, s.cols, rot.seeds[p]);
    }
    planes.push(plane);
  }
  const out = scatterPlanes(planes, t.layout, new Float32Array(elementCount(t.shape)));
  if (t.nonFinite)
    restoreNonFinite(
      out,
      decodeExactValues(archive.entry(t.nonFinite, t.name), out.length, (m) => fail(file, m, t.key)),
    );
  return out;
}

/** Decodes one tensor or slice here (one job) or on a worker thread; the values are the same either way. */
function tensorDecoder(archive: Archive, pool?: WorkerPool): (t: TensorRecord) => Promise<Float32Array> {
  return (t) => (pool ? pool.run<Float32Array>({ kind: 'decode', file: archive.file, record: t }) : decodeTensor(archive, t));
}

function workerPool(options: DecompressOptions, parts: ReadonlyArray<{ record?: TensorRecord }>): WorkerPool | undefined {
  // one job per coded tensor or slice; the weights they decode decide whether threads are worth starting
  const coded = parts.filter((p) => p.record);
  return poolFor(
    options.jobs,
    coded.length,
    coded.reduce((n, p) => n + elementCount(p.record!.shape), 0),
  );
}

/** Decodes every compressed tensor (slices as jobs of their own); identical tensors share one decode. */
export async function decodeAllTensors(archive: Archive, options: DecompressOptions = {}): Promise<Map<string, Float32Array>> {
  const records = archive.manifest.tensors.filter((t) => t.layout && !t.sameAs);
  const parts = records.flatMap((t) => codedParts(t).map((part) => ({ t, ...part })));
  const out = new Map<string, Float32Array>();
  let done = 0;
  const pool = workerPool(options, parts);
  const decode = tensorDecoder(archive, pool);
  try {
    await runPool(parts, options.jobs ?? availableParallelism(), async ({ t, record, offset }) => {
      options.signal?.throwIfAborted();
      const values = await decode(record);
      if (!t.slices) out.set(t.key, values);
      else {
        if (!out.has(t.key)) out.set(t.key, new Float32Array(elementCount(t.shape)));
        out.get(t.key)!.set(values, offset);
      }
      options.onProgress?.({ done: ++done, total: parts.length, tensor: record.name });
    });
  } finally {
    await pool?.close();
  }
  for (const t of archive.manifest.tensors) if (t.sameAs) out.set(t.key, out.get(t.sameAs)!);
  const half = halfValues(archive);
  for (const t of archive.manifest.tensors) if (t.half) out.set(t.key, half(t));
  return out;
}

/** Kept tensors stored as float16; each half entry is read (and checked) once. */
function halfValues(archive: Archive): (t: TensorRecord) => Float32Array {
  const entries = new Map<string, Uint8Array>();
  return (t) => {
    const { entry, offset } = t.half!;
    if (!entries.has(entry)) entries.set(entry, archive.entry(entry, t.name));
    return fromHalf(entries.get(entry)!, offset, elementCount(t.shape));
  };
}

/** Rebuilds the model file bytes from the archive (in memory; `decompressArchive` streams safetensors). */
export async function rebuildModel(archive: Archive, options: DecompressOptions = {}): Promise<Uint8Array> {
  archive.verify();
  const values = await decodeAllTensors(archive, options);
  const skeleton = archive.skeleton();
  const restored = archive.manifest.tensors
    .filter((t) => values.has(t.key))
    .map((t) => ({ storage: t.storage, dtype: t.dtype, values: values.get(t.key)! }));
  return rebuildFromSkeleton(archive.manifest.source.format, skeleton, restored, archive.file);
}

/**
 * safetensors, streamed: the file is written piece by piece in file order,
 * tensors (and the slices of sliced ones) decoded in parallel a few ahead of
 * the writer, so memory holds a few tensors or slices, never the model. A
 * tensor stored once for several names is decoded again for each (bounded
 * memory beats saving the decode).
 */
async function writeSafetensorsStream(archive: Archive, fd: number, options: DecompressOptions): Promise<number> {
  const file = archive.file;
  const byKey = new Map(archive.manifest.tensors.map((t) => [t.key, t]));
  // what is written on its own: a kept float16 tensor, a coded tensor, or one slice, each with its byte range
  const parts = archive.manifest.tensors
    .filter((t) => t.layout || t.half)
    .flatMap((t) => {
      const begin = Number(t.storage.begin);
      const width = BYTES_PER_ELEMENT[t.dtype];
      if (t.half) return [{ t, record: undefined as TensorRecord | undefined, begin, end: Number(t.storage.end) }];
      const source = t.sameAs ? byKey.get(t.sameAs)! : t;
      return codedParts(source).map(({ record, offset }) => ({
        t,
        record,
        begin: begin + offset * width,
        end: begin + (offset + elementCount(record.shape)) * width,
      }));
    });
  const skeleton = new SkeletonReader(archive);
  const pieces = safetensorsPieces((o, n) => skeleton.read(o, n), skeleton.length, parts, file);
  const pool = workerPool(options, parts);
  const decode = tensorDecoder(archive, pool);
  const half = halfValues(archive);
  // Each restored tensor with the skeleton bytes before it: units of work that the window counts, so `jobs`
  // tensors are decoding while the writer waits (counting the skeleton pieces let only one decode at a time).
  const units: Array<{ keep: [number, number]; tensor?: number }> = [];
  for (const piece of pieces)
    if ('keep' in piece) units.push({ keep: piece.keep });
    else units[units.length - 1].tensor = piece.tensor;
  const jobs = options.jobs ?? availableParallelism();
  let written = 0;
  let done = 0;
  try {
    await runOrdered(
      units,
      // one decoded tensor may wait for the writer while every worker decodes the next ones
      jobs + 1,
      async ({ tensor }) => {
        if (tensor === undefined) return undefined;
        options.signal?.throwIfAborted();
        const { t, record, begin, end } = parts[tensor];
        const values = record ? await decode(record) : half(t);
        return restoredBytes({ begin, end, dtype: t.dtype, values }, file);
      },
      (bytes, { keep, tensor }) => {
        // skeleton bytes are read when written, in file order: one part of the skeleton in memory at a time
        skeleton.each(keep[0], keep[1], (chunk) => {
          writeAll(fd, chunk);
          written += chunk.length;
        });
        if (tensor === undefined) return;
        writeAll(fd, bytes!);
        written += bytes!.length;
        options.onProgress?.({ done: ++done, total: parts.length, tensor: (parts[tensor].record ?? parts[tensor].t).name });
      },
    );
  } finally {
    await pool?.close();
  }
  return written;
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
    let at = 0;
    for (const p of this.parts) {
      this.starts.push(at);
      at += archive.manifest.entries[p].bytes;
    }
    this.length = at;
  }

  private part(index: number): Uint8Array {
    if (this.cached?.index !== index) this.cached = { index, data: this.archive.entry(this.parts[index]) };
    return this.cached.data;
  }

  /** Calls `fn` with the bytes [start, end) in order, a part at a time. */
  each(start: number, end: number, fn: (chunk: Uint8Array) => void): void {
    for (let i = 0; i < this.parts.length && start < end; i++) {
      const s = this.starts[i];
      const e = s + this.archive.manifest.entries[this.parts[i]].bytes;
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

const EXTENSIONS: Record<ModelFormat, string> = { onnx: '.onnx', safetensors: '.safetensors' };

export async function decompressArchive(
  input: string,
  output: string,
  options: DecompressOptions = {},
): Promise<{ format: ModelFormat; bytes: number }> {
  const archive = new Archive(input);
  try {
    const { source } = archive.manifest;
    await checkOutputPath(output, [input], {
      force: options.force,
      protect: {
        sha256: source.sha256,
        what: `this is the original model the archive was made from (${source.file}, sha256 ${source.sha256.slice(0, 12)}…)`,
      },
    });
    const format = archive.manifest.source.format;
    const ext = extname(output).toLowerCase();
    if (ext && Object.values(EXTENSIONS).includes(ext) && ext !== EXTENSIONS[format])
      throw new OptionError(`the archive holds a ${format} model; cannot write it as ${ext}`);
    let bytes = 0;
    if (format === 'safetensors') {
      // every checksum is verified before the first byte is written (entry by entry: bounded memory)
      archive.verify();
      await writeAtomic(
        output,
        async (fd) => {
          bytes = await writeSafetensorsStream(archive, fd, options);
        },
        { overwrite: options.force },
      );
    } else {
      const model = await rebuildModel(archive, options);
      // the rebuilt model must read back: every float tensor with exactly the data its shape needs
      try {
        new OnnxReader(output, model);
      } catch (e) {
        if (!(e instanceof NnmediaError)) throw e;
        throw new CorruptArchiveError(`the rebuilt model is not valid (${e.message}): the manifest does not match the skeleton`, {
          file: input,
        });
      }
      options.signal?.throwIfAborted();
      await writeAtomic(output, (fd) => writeAll(fd, model), { overwrite: options.force });
      bytes = model.length;
    }
    return { format, bytes };
  } finally {
    archive.close();
  }
}
