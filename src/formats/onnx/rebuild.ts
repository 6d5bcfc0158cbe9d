/**
 * Rebuilding an ONNX file from its skeleton at the protobuf wire level: only
 * the data fields of restored tensors change (and the lengths of the messages
 * that hold them); every other byte is copied. No Node module is used, so the
 * browser decoder rebuilds models with the same code.
 */

import { concatBytes } from '../../io/bytes.js';
import { WIRE_LEN, encodeVarint, lenField, wireFields } from './protobuf.js';
import { type FloatDType, type RestoredData, restoredDataBytes } from '../model.js';
import { BadModelError } from '../../errors.js';

// ModelProto / GraphProto / NodeProto / AttributeProto / TensorProto field numbers (onnx.proto3).
export const MODEL_GRAPH = 7;
export const GRAPH_NODE = 1;
export const GRAPH_INITIALIZER = 5;
export const GRAPH_INPUT = 11;
export const GRAPH_OUTPUT = 12;
export const NODE_INPUT = 1;
export const NODE_OUTPUT = 2;
export const NODE_OP_TYPE = 4;
export const NODE_ATTRIBUTE = 5;
export const NODE_NAME = 3;
export const NODE_DOMAIN = 7;
/** Which of a local function's overloads a node calls (IR 10). */
export const NODE_OVERLOAD = 8;
export const ATTR_NAME = 1;
export const ATTR_F = 2;
export const ATTR_I = 3;
export const ATTR_S = 4;
export const ATTR_T = 5;
export const ATTR_G = 6;
export const ATTR_INTS = 8;
export const ATTR_GRAPHS = 11;
export const TENSOR_DIMS = 1;
export const TENSOR_DATA_TYPE = 2;
export const TENSOR_FLOAT_DATA = 4;
export const TENSOR_INT32_DATA = 5;
export const TENSOR_NAME = 8;
export const TENSOR_RAW_DATA = 9;
export const TENSOR_DOUBLE_DATA = 10;
export const TENSOR_EXTERNAL_DATA = 13;
export const TENSOR_DATA_LOCATION = 14;
export const DATA_FIELDS = new Set([TENSOR_FLOAT_DATA, TENSOR_INT32_DATA, TENSOR_RAW_DATA, TENSOR_DOUBLE_DATA]);

export const ONNX_FLOAT_TYPES: Record<number, FloatDType> = { 1: 'float32', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

/** A main-graph initializer's field path (graph 7.0, initializer 5.n). */
export const MAIN_INITIALIZER_PATH = /^7\.0\/5\.\d+$/;

/** How a tensor's data was stored, so the writer stores it the same way. */
export type DataForm = 'raw' | 'float_data' | 'int32_data' | 'double_data' | 'external';

export function pathJoin(parent: string, field: number, occurrence: number): string {
  return parent ? `${parent}/${field}.${occurrence}` : `${field}.${occurrence}`;
}

/** Counts occurrences of each field number while iterating a message. */
export function occurrenceCounter(): (field: number) => number {
  const seen = new Map<number, number>();
  return (field) => {
    const n = seen.get(field) ?? 0;
    seen.set(field, n + 1);
    return n;
  };
}

/**
 * A place in a rebuilt model for bytes not in memory yet: `length` bytes of the tensor numbered `slot`. A model
 * laid out with slots is written piece by piece (the streamed decompress), the slots' bytes decoded when written.
 */
export interface Slot {
  slot: number;
  length: number;
}
export type Piece = Uint8Array | Slot;

/**
 * Copies a message, descending only into fields on the way to an edited path;
 * untouched fields are copied byte for byte, touched ones get new lengths.
 */
export function rewriteMessage(
  buf: Uint8Array,
  start: number,
  end: number,
  path: string,
  edits: ReadonlyMap<string, (s: number, e: number) => Uint8Array[]>,
  file: string,
): Uint8Array {
  if (edits.size === 0) return buf.subarray(start, end);
  return concatBytes(rewritePieces(buf, start, end, path, edits, file) as Uint8Array[]);
}

/** `rewriteMessage` as its pieces, where edits may place slots: the model's layout without the slots' bytes. */
export function rewritePieces(
  buf: Uint8Array,
  start: number,
  end: number,
  path: string,
  edits: ReadonlyMap<string, (s: number, e: number) => Piece[]>,
  file: string,
): Piece[] {
  if (edits.size === 0) return [buf.subarray(start, end)];
  // every path an edit lies below (looked up once a field, not by scanning the edits: a graph has many)
  const below = new Set<string>();
  for (const k of edits.keys()) for (let i = k.indexOf('/'); i >= 0; i = k.indexOf('/', i + 1)) below.add(k.slice(0, i));
  const parts: Piece[] = [];
  const count = occurrenceCounter();
  let copyFrom = start;
  for (const f of wireFields(buf, start, end, file)) {
    const occ = count(f.field);
    if (f.wire !== WIRE_LEN) continue;
    const p = pathJoin(path, f.field, occ);
    const edit = edits.get(p);
    const descend = !edit && below.has(p);
    if (!edit && !descend) continue;
    parts.push(buf.subarray(copyFrom, f.start));
    const payload = edit ? edit(f.valueStart, f.end) : rewritePieces(buf, f.valueStart, f.end, p, subEdits(edits, p), file);
    // (a loop, not a spread: a graph's pieces may be more than a call's arguments can be)
    for (const piece of lenField(f.field, payload)) parts.push(piece);
    copyFrom = f.end;
  }
  parts.push(buf.subarray(copyFrom, end));
  return parts;
}

function subEdits<T>(edits: ReadonlyMap<string, T>, prefix: string): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of edits) if (k.startsWith(prefix + '/')) out.set(k, v);
  return out;
}

/**
 * The tensor message with its data fields replaced by `payload` as a single
 * field of the right kind, placed where the first data field stood; external
 * data references are dropped (the data is inlined).
 */
export function replaceTensorData<P extends Piece = Uint8Array>(
  buf: Uint8Array,
  start: number,
  end: number,
  payload: P,
  file: string,
  form: DataForm = 'raw',
): Array<Uint8Array | P> {
  const parts: Array<Uint8Array | P> = [];
  let placed = false;
  const dataField =
    form === 'float_data'
      ? TENSOR_FLOAT_DATA
      : form === 'int32_data'
        ? TENSOR_INT32_DATA
        : form === 'double_data'
          ? TENSOR_DOUBLE_DATA
          : TENSOR_RAW_DATA;
  const place = (): void => {
    if (!placed) for (const p of lenField(dataField, [payload])) parts.push(p);
    placed = true;
  };
  for (const f of wireFields(buf, start, end, file)) {
    if (DATA_FIELDS.has(f.field) || f.field === TENSOR_EXTERNAL_DATA || f.field === TENSOR_DATA_LOCATION) {
      place();
      continue;
    }
    parts.push(buf.subarray(f.start, f.end));
  }
  place();
  return parts;
}

/**
 * The tensor message with its (empty) raw_data field given `payload`, every other field as it is: how data the
 * scan left in the file goes back into the skeleton, the bytes of the file again.
 */
export function withRawData(buf: Uint8Array, start: number, end: number, payload: Uint8Array, file: string): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (const f of wireFields(buf, start, end, file)) {
    if (f.field === TENSOR_RAW_DATA && f.wire === WIRE_LEN) for (const p of lenField(TENSOR_RAW_DATA, [payload])) parts.push(p);
    else parts.push(buf.subarray(f.start, f.end));
  }
  return parts;
}

function encodeForm(data: RestoredData, dtype: FloatDType, form: DataForm): Uint8Array {
  if (form === 'raw' || form === 'external' || form === 'float_data' || form === 'double_data') {
    // float_data holds float32 and double_data float64 as packed little-endian, the same bytes as raw.
    return restoredDataBytes(data, form === 'float_data' ? 'float32' : form === 'double_data' ? 'float64' : dtype);
  }
  // int32_data: float16/bfloat16 bit patterns as packed varints.
  const halves = restoredDataBytes(data, dtype);
  const view = new DataView(halves.buffer, halves.byteOffset, halves.byteLength);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < halves.length / 2; i++) parts.push(encodeVarint(view.getUint16(i * 2, true)));
  return concatBytes(parts);
}

export type RestoredTensor = {
  path: string;
  form: string;
  dtype: FloatDType;
} & RestoredData;

/**
 * The layout of a rebuilt model: the skeleton's bytes with a slot where each tensor's data goes (slot i: tensor
 * i, `lengths[i]` bytes, as `encodeForm` would write it). In file order; a tensor whose place is not in the
 * skeleton is an error, as in `rebuildOnnx`.
 */
export function layoutOnnx(
  skeleton: Uint8Array,
  tensors: ReadonlyArray<{ path: string; form: string; length: number }>,
  file: string,
): Piece[] {
  const edits = new Map<string, (s: number, e: number) => Piece[]>();
  const applied = new Set<string>();
  tensors.forEach((t, slot) => {
    const form = t.form as DataForm;
    edits.set(t.path, (s, e) => {
      applied.add(t.path);
      return replaceTensorData<Piece>(skeleton, s, e, { slot, length: t.length }, file, form === 'external' ? 'raw' : form);
    });
  });
  const out = rewritePieces(skeleton, 0, skeleton.length, '', edits, file);
  for (const t of tensors)
    if (!applied.has(t.path)) throw new BadModelError(`restored tensor's place ${t.path} is not in the model skeleton`, { file });
  return out;
}

/** Rebuilds an ONNX file from its skeleton and the restored tensors. */
export function rebuildOnnx(skeleton: Uint8Array, tensors: readonly RestoredTensor[], file: string): Uint8Array {
  const edits = new Map<string, (s: number, e: number) => Uint8Array[]>();
  const applied = new Set<string>();
  for (const t of tensors) {
    const form = t.form as DataForm;
    edits.set(t.path, (s, e) => {
      applied.add(t.path);
      return replaceTensorData(skeleton, s, e, encodeForm(t, t.dtype, form), file, form === 'external' ? 'raw' : form);
    });
  }
  const out = rewriteMessage(skeleton, 0, skeleton.length, '', edits, file);
  // a restored tensor whose place is not in the skeleton would silently be left out of the model
  for (const t of tensors)
    if (!applied.has(t.path)) throw new BadModelError(`restored tensor's place ${t.path} is not in the model skeleton`, { file });
  return out;
}

/** TensorProto.DataLocation EXTERNAL. */
const DATA_LOCATION_EXTERNAL = 1;

/** One `StringStringEntryProto` (key = 1, value = 2) as a field of number `field`. */
function stringEntry(field: number, key: string, value: string): Uint8Array[] {
  const text = new TextEncoder();
  const entry = concatBytes([...lenField(1, [text.encode(key)]), ...lenField(2, [text.encode(value)])]);
  return lenField(field, [entry]);
}

/**
 * The tensor message with its data in an external file: the data fields (and any earlier external reference)
 * dropped, `external_data` = location, offset and length, `data_location` = EXTERNAL; every other field as it is.
 */
export function withExternalData(
  buf: Uint8Array,
  start: number,
  end: number,
  place: { location: string; offset: number; length: number },
  file: string,
): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (const f of wireFields(buf, start, end, file))
    if (!(DATA_FIELDS.has(f.field) || f.field === TENSOR_EXTERNAL_DATA || f.field === TENSOR_DATA_LOCATION))
      parts.push(buf.subarray(f.start, f.end));
  parts.push(
    ...stringEntry(TENSOR_EXTERNAL_DATA, 'location', place.location),
    ...stringEntry(TENSOR_EXTERNAL_DATA, 'offset', String(place.offset)),
    ...stringEntry(TENSOR_EXTERNAL_DATA, 'length', String(place.length)),
    encodeVarint((TENSOR_DATA_LOCATION << 3) | 0),
    encodeVarint(DATA_LOCATION_EXTERNAL),
  );
  return parts;
}

/**
 * An ONNX model whose restored tensors live in an external data file (`place` gives each one's location, offset
 * and length there): a model over protobuf's 2 GiB cannot be one file. Every other byte is the skeleton's.
 */
export function externalOnnx(
  skeleton: Uint8Array,
  tensors: ReadonlyArray<{ path: string; place: { location: string; offset: number; length: number } }>,
  file: string,
): Uint8Array {
  const edits = new Map<string, (s: number, e: number) => Uint8Array[]>();
  const applied = new Set<string>();
  for (const t of tensors)
    edits.set(t.path, (s, e) => {
      applied.add(t.path);
      return withExternalData(skeleton, s, e, t.place, file);
    });
  const out = rewriteMessage(skeleton, 0, skeleton.length, '', edits, file);
  for (const t of tensors)
    if (!applied.has(t.path)) throw new BadModelError(`restored tensor's place ${t.path} is not in the model skeleton`, { file });
  return out;
}
