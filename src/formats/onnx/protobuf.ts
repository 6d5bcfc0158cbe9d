/**
 * A minimal protobuf wire-format reader and writer. nnmedia edits ONNX files at
 * the wire level instead of decoding them into objects, so that every byte it
 * does not touch (graph, names, attributes, unknown fields, field order) is
 * copied through unchanged.
 */

import { BadModelError } from '../../errors.js';

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;

/** Protobuf varints are at most 10 bytes; a longer run is a hostile file. */
const MAX_VARINT_BYTES = 10;
/** ONNX graphs nest (If/Loop bodies); deeper than this is a crafted file. */
export const MAX_NESTING = 64;

export interface WireField {
  field: number;
  wire: number;
  /** Offset of the tag. */
  start: number;
  /** Offset of the payload (after tag and, for LEN, the length). */
  valueStart: number;
  /** Offset just past the field. */
  end: number;
  /** The varint value for WIRE_VARINT fields. */
  value: number;
}

export function readVarint(buf: Uint8Array, pos: number, limit: number, file?: string): [number, number] {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos >= limit) throw new BadModelError(`truncated protobuf varint at byte ${pos}`, { file });
    const b = buf[pos++];
    result += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return [result, pos];
    scale *= 128;
  }
  throw new BadModelError(`protobuf varint longer than ${MAX_VARINT_BYTES} bytes at byte ${pos}`, { file });
}

/** Iterates the fields of one message occupying buf[start, end). */
export function* wireFields(buf: Uint8Array, start: number, end: number, file?: string): Generator<WireField> {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    const [tag, p1] = readVarint(buf, pos, end, file);
    pos = p1;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 0) throw new BadModelError(`protobuf field number 0 at byte ${fieldStart}`, { file });
    let value = 0;
    let valueStart = pos;
    switch (wire) {
      case WIRE_VARINT: {
        [value, pos] = readVarint(buf, pos, end, file);
        break;
      }
      case WIRE_I64:
        pos += 8;
        break;
      case WIRE_I32:
        pos += 4;
        break;
      case WIRE_LEN: {
        const [len, p2] = readVarint(buf, pos, end, file);
        valueStart = p2;
        pos = p2 + len;
        value = len;
        break;
      }
      default:
        throw new BadModelError(`unsupported protobuf wire type ${wire} at byte ${fieldStart}`, { file });
    }
    if (pos > end) {
      throw new BadModelError(`protobuf field ${field} at byte ${fieldStart} runs past its message end (${end})`, {
        file,
      });
    }
    yield { field, wire, start: fieldStart, valueStart, end: pos, value };
  }
}

export function encodeVarint(value: number): Uint8Array {
  const out: number[] = [];
  let v = value;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/** Bytes of a length-delimited field: tag, length, payload pieces. */
export function lenField<P extends { length: number } = Uint8Array>(field: number, payload: P[]): Array<Uint8Array | P> {
  const total = payload.reduce((s, p) => s + p.length, 0);
  return [encodeVarint(field * 8 + WIRE_LEN), encodeVarint(total), ...payload];
}

/** Bytes of a string field. */
export const stringField = (field: number, s: string): Uint8Array[] => lenField(field, [new TextEncoder().encode(s)]);

/** Bytes of a varint field. */
export const varintField = (field: number, v: number): Uint8Array[] => [encodeVarint(field * 8 + WIRE_VARINT), encodeVarint(v)];

/**
 * An int64 varint at `pos`, exactly: a negative value (ten bytes of two's complement) as the negative number.
 * (`readVarint` reads it as 2^64 − |v| rounded in a double: −1, −2 and −128 all came back as 2^64, and subtracting
 * 2^64 made them 0, so `axis = -1` read as axis 0.)
 */
export function readInt64(buf: Uint8Array, pos: number, limit: number, file?: string): [number, number] {
  let result = 0n;
  let shift = 0n;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos >= limit) throw new BadModelError(`truncated protobuf varint at byte ${pos}`, { file });
    const b = buf[pos++];
    result |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [Number(BigInt.asIntN(64, result)), pos];
    shift += 7n;
  }
  throw new BadModelError(`protobuf varint longer than ${MAX_VARINT_BYTES} bytes at byte ${pos}`, { file });
}

/** The int64 values of an attribute's `i` or `ints` field: one varint, or packed ones. */
export function int64Values(buf: Uint8Array, f: WireField, file?: string): number[] {
  if (f.wire === WIRE_VARINT) return [readInt64(buf, f.valueStart, f.end, file)[0]];
  const out: number[] = [];
  if (f.wire !== WIRE_LEN) return out;
  for (let p = f.valueStart; p < f.end;) {
    const [v, next] = readInt64(buf, p, f.end, file);
    out.push(v);
    p = next;
  }
  return out;
}

export function utf8(buf: Uint8Array, start: number, end: number): string {
  return new TextDecoder().decode(buf.subarray(start, end));
}
