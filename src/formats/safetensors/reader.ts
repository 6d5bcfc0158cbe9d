/**
 * safetensors: an 8-byte little-endian header length, a JSON header
 * ({name: {dtype, shape, data_offsets}}, optional __metadata__), then the data.
 * Tensors are read by offset, one at a time. The header is treated as hostile:
 * size limits, offsets checked against the file and against each other.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BadModelError } from '../../errors.js';
import { fsError } from '../../io/files.js';
import { concatBytes } from '../../io/bytes.js';
import {
  BYTES_PER_ELEMENT,
  type FloatDType,
  type ModelReader,
  type SafetensorsStorage,
  type TensorEntry,
  LITTLE_ENDIAN,
  decodeFloats,
  elementCount,
  type RestoredData,
  restoredDataBytes,
  rowsRange,
} from '../model.js';

/** The reference implementation refuses headers over 100 MB; so do we. */
const MAX_HEADER_BYTES = 100_000_000;
const MAX_RANK = 16;
const FLOAT_DTYPES: Record<string, FloatDType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64' };
const ALL_DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

interface StEntry extends TensorEntry {
  begin: number;
  end: number;
}

export class SafetensorsReader implements ModelReader {
  readonly format = 'safetensors' as const;
  readonly tensors: StEntry[] = [];
  readonly headerBytes: Uint8Array;
  readonly metadata: Record<string, string> = {};
  private readonly fd: number;
  private readonly dataStart: number;
  private readonly fileSize: number;

  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'r');
    } catch (e) {
      throw fsError('cannot read the model', file, e);
    }
    try {
      this.fileSize = fstatSync(this.fd).size;
      const lenBuf = this.readAt(0, 8);
      const len = Number(lenBuf.readBigUInt64LE(0));
      if (len > MAX_HEADER_BYTES)
        throw new BadModelError(`safetensors header of ${len} bytes exceeds ${MAX_HEADER_BYTES}`, { file });
      if (8 + len > this.fileSize)
        throw new BadModelError(`truncated: header of ${len} bytes but the file has ${this.fileSize}`, { file });
      this.headerBytes = this.readAt(0, 8 + len);
      this.dataStart = 8 + len;
      this.parseHeader(Buffer.from(this.headerBytes.subarray(8)).toString('utf8'));
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  private readAt(offset: number, length: number): Buffer {
    const b = Buffer.allocUnsafeSlow(length); // filled below; never from the shared pool
    this.readInto(b, 0, offset, length);
    return b;
  }

  private readInto(b: Uint8Array, at: number, offset: number, length: number): void {
    if (offset + length > this.fileSize)
      throw new BadModelError(`truncated: needs bytes up to ${offset + length}, file has ${this.fileSize}`, { file: this.file });
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, b, at + done, length - done, offset + done);
      if (n === 0) throw new BadModelError('unexpected end of file', { file: this.file });
      done += n;
    }
  }

  private parseHeader(text: string): void {
    const file = this.file;
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (e) {
      throw new BadModelError(`header is not valid JSON (${(e as Error).message})`, { file });
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header))
      throw new BadModelError('header is not a JSON object', { file });
    const ranges: Array<[number, number, string]> = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (typeof raw !== 'object' || raw === null) throw new BadModelError('__metadata__ is not an object', { file });
        for (const [k, v] of Object.entries(raw)) {
          if (typeof v !== 'string') throw new BadModelError(`__metadata__.${k} is not a string`, { file });
          this.metadata[k] = v;
        }
        continue;
      }
      const e = raw as Partial<HeaderEntry>;
      const ctx = { file, tensor: name };
      if (
        typeof e !== 'object' ||
        e === null ||
        typeof e.dtype !== 'string' ||
        !Array.isArray(e.shape) ||
        !Array.isArray(e.data_offsets)
      )
        throw new BadModelError('header entry lacks dtype, shape or data_offsets', ctx);
      const width = ALL_DTYPE_BYTES[e.dtype];
      if (!width) throw new BadModelError(`unknown dtype ${e.dtype}`, ctx);
      if (e.shape.length > MAX_RANK || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        throw new BadModelError(`invalid shape ${JSON.stringify(e.shape)}`, ctx);
      const [b, en] = e.data_offsets;
      if (!Number.isSafeInteger(b) || !Number.isSafeInteger(en) || b < 0 || en < b)
        throw new BadModelError(`invalid data_offsets ${JSON.stringify(e.data_offsets)}`, ctx);
      if (this.dataStart + en > this.fileSize)
        throw new BadModelError(
          `data ends at byte ${this.dataStart + en}, past the end of the file (${this.fileSize}): truncated`,
          ctx,
        );
      const n = elementCount(e.shape);
      if (n * width !== en - b)
        throw new BadModelError(`holds ${en - b} bytes but shape [${e.shape}] of ${e.dtype} needs ${n * width}`, ctx);
      // an empty tensor holds no bytes, so it overlaps nothing (writers give it the next tensor's start: [x, x])
      if (en > b) ranges.push([b, en, name]);
      const dtype = FLOAT_DTYPES[e.dtype];
      if (dtype)
        this.tensors.push({ key: name, name, dtype, shape: e.shape, uses: [], location: `${b}-${en}`, begin: b, end: en });
    }
    ranges.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < ranges.length; i++)
      if (ranges[i][0] < ranges[i - 1][1])
        throw new BadModelError(`data of ${ranges[i][2]} overlaps ${ranges[i - 1][2]}`, { file });
  }

  private get(key: string): StEntry {
    const t = this.tensors.find((x) => x.key === key);
    if (!t) throw new BadModelError(`no float tensor named ${key}`, { file: this.file, tensor: key });
    return t;
  }

  read(key: string): Float32Array {
    const t = this.get(key);
    return this.decode(t, this.readAt(this.dataStart + t.begin, t.end - t.begin));
  }

  readRows(key: string, row: number, rows: number): Float32Array {
    const t = this.get(key);
    const [start, end] = rowsRange(t.shape, row, rows, { file: this.file, tensor: key });
    const width = BYTES_PER_ELEMENT[t.dtype];
    return this.decode(t, this.readAt(this.dataStart + t.begin + start * width, (end - start) * width));
  }

  private decode(t: StEntry, bytes: Buffer): Float32Array {
    // float32 in a buffer of its own: use it as it is rather than copy it (tensors can be hundreds of MB)
    if (t.dtype === 'float32' && LITTLE_ENDIAN && bytes.byteOffset % 4 === 0)
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return decodeFloats(bytes, t.dtype);
  }

  storage(key: string): SafetensorsStorage {
    const t = this.get(key);
    return { format: 'safetensors', begin: t.begin, end: t.end };
  }

  /** Header bytes verbatim, then the data area with the stripped tensors' ranges cut out. */
  skeleton(stripped: ReadonlySet<string>): Uint8Array {
    return concatBytes([...this.skeletonParts(stripped, Infinity)]);
  }

  /**
   * The skeleton in parts of `partBytes` (the last one shorter), read by offset one part at a time: kept
   * tensors of any size (int8 weights, a tensor kept by a rule) never make it whole in memory.
   */
  *skeletonParts(stripped: ReadonlySet<string>, partBytes: number): Generator<Uint8Array> {
    const cuts = this.tensors.filter((t) => stripped.has(t.key)).sort((a, b) => a.begin - b.begin);
    // file regions kept, in order
    const regions: Array<[number, number]> = [[0, this.dataStart]];
    let pos = 0;
    for (const c of cuts) {
      regions.push([this.dataStart + pos, c.begin - pos]);
      pos = c.end;
    }
    regions.push([this.dataStart + pos, this.fileSize - this.dataStart - pos]);
    const total = regions.reduce((n, r) => n + r[1], 0);
    let left = total;
    let part = Buffer.allocUnsafeSlow(Math.min(partBytes, left));
    let fill = 0;
    for (let [offset, length] of regions)
      while (length > 0) {
        const n = Math.min(length, part.length - fill);
        this.readInto(part, fill, offset, n);
        fill += n;
        offset += n;
        length -= n;
        if (fill === part.length) {
          yield part;
          left -= fill;
          part = Buffer.allocUnsafeSlow(Math.min(partBytes, left));
          fill = 0;
        }
      }
    if (total === 0) yield part;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export type RestoredRange = {
  begin: number;
  end: number;
  dtype: FloatDType;
} & RestoredData;

/** A piece of the rebuilt file: skeleton bytes [start, end) kept as they are, or the restored tensor at this index. */
export type SafetensorsPiece = { keep: [number, number] } | { tensor: number };

/**
 * The rebuilt file as a sequence of pieces, in file order: the skeleton's
 * bytes between the cut-out ranges, and each restored tensor in its range.
 * One plan for the in-memory rebuild and for the streaming writer, which
 * reads the skeleton (`length` bytes, possibly in several archive entries)
 * through `read` and its kept pieces part by part.
 */
export function safetensorsPieces(
  read: (offset: number, length: number) => Uint8Array,
  length: number,
  tensors: ReadonlyArray<{ begin: number; end: number }>,
  file: string,
): SafetensorsPiece[] {
  if (length < 8) throw new BadModelError('skeleton too short', { file });
  const headerLen = 8 + Number(Buffer.from(read(0, 8)).readBigUInt64LE(0));
  if (headerLen > length || headerLen - 8 > MAX_HEADER_BYTES) throw new BadModelError('skeleton header is truncated', { file });
  const pieces: SafetensorsPiece[] = [{ keep: [0, headerLen] }];
  let src = headerLen;
  let pos = 0;
  const order = tensors.map((_, i) => i).sort((a, b) => tensors[a].begin - tensors[b].begin);
  for (const i of order) {
    const t = tensors[i];
    const keep = t.begin - pos;
    if (keep < 0 || src + keep > length || t.end < t.begin)
      throw new BadModelError(`restored range ${t.begin}-${t.end} does not fit the skeleton`, { file });
    pieces.push({ keep: [src, src + keep] }, { tensor: i });
    src += keep;
    pos = t.end;
  }
  pieces.push({ keep: [src, length] });
  // the pieces must fill the data area the header describes: no tensor left out
  let header: Record<string, { data_offsets?: unknown }>;
  try {
    header = JSON.parse(Buffer.from(read(8, headerLen - 8)).toString('utf8')) as typeof header;
  } catch {
    throw new BadModelError('skeleton header is not JSON', { file });
  }
  let dataEnd = 0;
  for (const [k, v] of Object.entries(header))
    if (k !== '__metadata__' && Array.isArray(v?.data_offsets)) dataEnd = Math.max(dataEnd, Number(v.data_offsets[1]));
  // (bytes after the last tensor, which some writers leave, come back as they were: the skeleton holds them)
  if (pos + (length - src) < dataEnd)
    throw new BadModelError(`restored tensors and skeleton make ${pos + length - src} data bytes, the header needs ${dataEnd}`, {
      file,
    });
  return pieces;
}

/** A restored tensor's bytes for its range, checked to fill it exactly. */
export function restoredBytes(t: RestoredRange, file: string): Uint8Array {
  const bytes = restoredDataBytes(t, t.dtype);
  if (bytes.length !== t.end - t.begin)
    throw new BadModelError(`restored tensor does not fit its range ${t.begin}-${t.end}`, { file });
  return bytes;
}

/** Puts restored tensors back into the cut-out ranges of a safetensors skeleton. */
export function rebuildSafetensors(skeleton: Uint8Array, tensors: readonly RestoredRange[], file: string): Uint8Array {
  return concatBytes(
    safetensorsPieces((o, n) => skeleton.subarray(o, o + n), skeleton.length, tensors, file).map((p) =>
      'keep' in p ? skeleton.subarray(p.keep[0], p.keep[1]) : restoredBytes(tensors[p.tensor], file),
    ),
  );
}

export { BYTES_PER_ELEMENT };
