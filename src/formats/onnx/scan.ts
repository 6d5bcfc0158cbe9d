/**
 * An ONNX model read from its file front to back without holding its weights: a copy of the protobuf in which
 * every large float tensor's `raw_data` is left empty (the lengths of the messages around it made to fit), and
 * where each such tensor's data is in the file. The reader walks the copy as it walks a whole model, and reads
 * those tensors from the file by offset, as it reads external data. A 2 GB model is a few MB of copy.
 *
 * Only the messages the reader walks are descended (model → graph → node → attribute → tensor, and subgraphs);
 * everything else is copied as it is. A message holding no elided data is copied byte for byte, its length
 * varint included, so the copy is the file wherever nothing was left out.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BadModelError } from '../../errors.js';
import { fsError } from '../../io/files.js';
import { MAX_NESTING, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT, encodeVarint } from './protobuf.js';
import {
  ATTR_G,
  ATTR_GRAPHS,
  ATTR_T,
  GRAPH_INITIALIZER,
  GRAPH_NODE,
  MODEL_GRAPH,
  NODE_ATTRIBUTE,
  ONNX_FLOAT_TYPES,
  TENSOR_DATA_LOCATION,
  TENSOR_DATA_TYPE,
  TENSOR_EXTERNAL_DATA,
  TENSOR_RAW_DATA,
  occurrenceCounter,
  pathJoin,
} from './rebuild.js';

/** `raw_data` of at least this many bytes is left in the file; smaller data is copied (a copy costs less than a read). */
export const ELIDE_MIN_BYTES = 1 << 16;
/** The file is read in pieces of this size. */
const CHUNK = 1 << 22;

type Kind = 'model' | 'graph' | 'node' | 'attribute' | 'tensor';

/** TensorProto's data fields other than raw_data (float, int32, string, int64, double, uint64) and external_data. */
const OTHER_DATA_FIELDS = new Set([4, 5, 6, 7, 10, 11, TENSOR_EXTERNAL_DATA]);

/** The messages the reader walks, by the field that holds them in each kind of message. */
const CHILDREN: Record<Kind, Readonly<Record<number, Kind>>> = {
  model: { [MODEL_GRAPH]: 'graph' },
  graph: { [GRAPH_NODE]: 'node', [GRAPH_INITIALIZER]: 'tensor' },
  node: { [NODE_ATTRIBUTE]: 'attribute' },
  attribute: { [ATTR_T]: 'tensor', [ATTR_G]: 'graph', [ATTR_GRAPHS]: 'graph' },
  tensor: {},
};

export interface ScannedOnnx {
  /** The model with the elided tensors' raw_data empty. */
  bytes: Uint8Array;
  /** Where each elided tensor's raw_data is in the file ([start, end)), by the tensor's field path. */
  elided: Map<string, [number, number]>;
  /** Where each other float tensor's raw_data is in the file (its offset there, not in the copy), by field path. */
  at: Map<string, number>;
  /** The file's size and modification time when scanned: what it is read by offset from must be that file. */
  fileBytes: number;
  mtimeMs: number;
}

/** Reads a file front to back through one buffer; bytes are copied out, so the buffer is reused. */
class Cursor {
  private readonly buf = new Uint8Array(CHUNK);
  private bufStart = 0;
  private bufEnd = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly file: string,
  ) {}

  private fill(pos: number): void {
    this.bufStart = pos;
    this.bufEnd = pos;
    const want = Math.min(CHUNK, this.size - pos);
    while (this.bufEnd - pos < want) {
      const n = readSync(this.fd, this.buf, this.bufEnd - pos, want - (this.bufEnd - pos), this.bufEnd);
      if (n === 0) throw new BadModelError(`the model file ended at byte ${this.bufEnd} while being read`, { file: this.file });
      this.bufEnd += n;
    }
  }

  byte(pos: number): number {
    if (pos >= this.size) throw new BadModelError(`truncated protobuf at byte ${pos}`, { file: this.file });
    if (pos < this.bufStart || pos >= this.bufEnd) this.fill(pos);
    return this.buf[pos - this.bufStart];
  }

  /** Copies [start, end) of the file into `out` at `offset`. */
  copyInto(start: number, end: number, out: Uint8Array, offset: number): void {
    let at = start;
    while (at < end) {
      if (at < this.bufStart || at >= this.bufEnd) this.fill(at);
      const n = Math.min(end, this.bufEnd) - at;
      out.set(this.buf.subarray(at - this.bufStart, at - this.bufStart + n), offset + at - start);
      at += n;
    }
  }

  varint(pos: number, limit: number): [number, number] {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= limit) throw new BadModelError(`truncated protobuf varint at byte ${pos}`, { file: this.file });
      const b = this.byte(pos++);
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return [result, pos];
      scale *= 128;
    }
    throw new BadModelError(`protobuf varint too long at byte ${pos}`, { file: this.file });
  }
}

/** A message's copy: its pieces (new bytes, or a range of the file to copy) and their total length. */
interface Copy {
  parts: Array<Uint8Array | [number, number]>;
  length: number;
}

/**
 * Scans an ONNX file (see the module comment). Throws BadModelError where the protobuf does not parse; the caller
 * then reads the file whole, whose reader names the problem as it always has.
 */
export function scanOnnx(file: string, minBytes = ELIDE_MIN_BYTES): ScannedOnnx {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw fsError('cannot read the model', file, e);
  }
  try {
    const { size, mtimeMs } = fstatSync(fd);
    const cursor = new Cursor(fd, size, file);
    const elided = new Map<string, [number, number]>();
    const at = new Map<string, number>();

    const message = (start: number, end: number, kind: Kind, path: string, depth: number): Copy => {
      if (depth > MAX_NESTING * 4) throw new BadModelError(`messages nested deeper than ${MAX_NESTING * 4}`, { file });
      const parts: Copy['parts'] = [];
      let length = 0;
      let copyFrom = start;
      const flush = (to: number): void => {
        if (to > copyFrom) {
          parts.push([copyFrom, to]);
          length += to - copyFrom;
        }
      };
      const count = occurrenceCounter();
      // A tensor with raw_data: its data left in the file (or its offset recorded) must be the tensor's only data,
      // of the type known when it is met, so that the reader of the copy sees what the reader of the file sees and
      // the skeleton puts back the same bytes. Anything else (protobuf's last field wins; several data fields;
      // external data; a later data_type) is read whole instead: `refuse`.
      let dataType = 0;
      let raw = false;
      let otherData = false;
      const refuse = (what: string): never => {
        throw new BadModelError(`tensor at ${path}: ${what}: read whole`, { file });
      };
      // A header written anew must be the bytes it replaces (varints at their shortest: the skeleton's writer
      // writes them so), or the copy, and what is put back, would differ from the file.
      const minimal = (fieldStart: number, p1: number, valueStart: number, tag: number, len: number): void => {
        if (p1 - fieldStart !== encodeVarint(tag).length || valueStart - p1 !== encodeVarint(len).length)
          throw new BadModelError(`field at byte ${fieldStart}: a varint not at its shortest: read whole`, { file });
      };
      let pos = start;
      while (pos < end) {
        const fieldStart = pos;
        const [tag, p1] = cursor.varint(pos, end);
        const field = Math.floor(tag / 8);
        const wire = tag & 7;
        if (field === 0) throw new BadModelError(`protobuf field number 0 at byte ${fieldStart}`, { file });
        const occ = count(field);
        if (kind === 'tensor') {
          if (field === TENSOR_RAW_DATA) {
            if (raw) refuse('a second raw_data');
            if (otherData) refuse('raw_data beside another data field or external data');
            raw = true;
          } else if (field === TENSOR_DATA_TYPE && raw) refuse('a data_type after its raw_data');
          else if (OTHER_DATA_FIELDS.has(field)) {
            if (raw) refuse('raw_data beside another data field or external data');
            otherData = true;
          }
        }
        if (wire === WIRE_VARINT) {
          const [value, p2] = cursor.varint(p1, end);
          if (kind === 'tensor' && field === TENSOR_DATA_TYPE) dataType = value;
          // data_location DEFAULT (0) says nothing; EXTERNAL does
          if (kind === 'tensor' && field === TENSOR_DATA_LOCATION && value !== 0) {
            otherData = true;
            if (raw) refuse('raw_data beside external data');
          }
          pos = p2;
        } else if (wire === WIRE_I64) pos = p1 + 8;
        else if (wire === WIRE_I32) pos = p1 + 4;
        else if (wire === WIRE_LEN) {
          const [len, valueStart] = cursor.varint(p1, end);
          const valueEnd = valueStart + len;
          if (valueEnd > end)
            throw new BadModelError(`protobuf field ${field} at byte ${fieldStart} runs past its message`, { file });
          const child = CHILDREN[kind][field];
          if (kind === 'tensor' && field === TENSOR_RAW_DATA && ONNX_FLOAT_TYPES[dataType]) {
            if (len >= minBytes) {
              // the data stays in the file: an empty raw_data in its place
              minimal(fieldStart, p1, valueStart, tag, len);
              flush(fieldStart);
              const head = Uint8Array.of(...encodeVarint(tag), 0);
              parts.push(head);
              length += head.length;
              elided.set(path, [valueStart, valueEnd]);
              copyFrom = valueEnd;
            } else at.set(path, valueStart);
          } else if (child) {
            const inner = message(valueStart, valueEnd, child, pathJoin(path, field, occ), depth + 1);
            // a message left whole is copied with its own bytes (its length varint as written)
            if (inner.length !== len) {
              minimal(fieldStart, p1, valueStart, tag, len);
              flush(fieldStart);
              const head = Uint8Array.of(...encodeVarint(tag), ...encodeVarint(inner.length));
              parts.push(head);
              for (const piece of inner.parts) parts.push(piece);
              length += head.length + inner.length;
              copyFrom = valueEnd;
            }
          }
          pos = valueEnd;
        } else throw new BadModelError(`unsupported protobuf wire type ${wire} at byte ${fieldStart}`, { file });
        if (pos > end) throw new BadModelError(`protobuf field ${field} at byte ${fieldStart} runs past its message`, { file });
      }
      flush(end);
      // the pieces of a message left whole are not used: its parent copies it as one range
      return { parts, length };
    };

    const copy = message(0, size, 'model', '', 0);
    // the ranges are in file order: one pass through the file
    const bytes = new Uint8Array(copy.length);
    let to = 0;
    for (const p of copy.parts) {
      if (p instanceof Uint8Array) bytes.set(p, to);
      else cursor.copyInto(p[0], p[1], bytes, to);
      to += p instanceof Uint8Array ? p.length : p[1] - p[0];
    }
    return { bytes, elided, at, fileBytes: size, mtimeMs };
  } finally {
    closeSync(fd);
  }
}
