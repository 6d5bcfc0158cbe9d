/**
 * What every model format reader gives the pipeline: a list of named float
 * tensors (with how the graph uses them, where the format says), a way to read
 * one tensor at a time, and "the rest" of the file with the data of chosen
 * tensors taken out, from which the writer rebuilds the model. Isomorphic
 * (types and float conversions only): the browser decoder uses it too.
 */

import { BadModelError } from '../errors.js';

export type FloatDType = 'float32' | 'float16' | 'bfloat16' | 'float64';
/** The model formats (each a folder of formats/, registered in meta.ts and registry.ts). */
export type ModelFormat = 'onnx' | 'safetensors';

/** ONNX: the protobuf field path of the tensor and the form its data takes there (raw_data, float_data, …). */
export interface OnnxStorage {
  format: 'onnx';
  form: string;
  path: string;
}

/** safetensors: the tensor's byte range in the data area. */
export interface SafetensorsStorage {
  format: 'safetensors';
  begin: number;
  end: number;
}

/** Where a tensor sits in its source file: what the writer needs to put it back exactly as stored. */
export type TensorStorage = OnnxStorage | SafetensorsStorage;

/** A storage as a manifest records it: without `format`, which the manifest's source says once for all. */
export type StorageRecord = Omit<OnnxStorage, 'format'> | Omit<SafetensorsStorage, 'format'>;

/** The record of a storage (its fields in the reader's order, `format` left out). */
export function storageRecord(s: TensorStorage): StorageRecord {
  return Object.fromEntries(Object.entries(s).filter(([k]) => k !== 'format')) as StorageRecord;
}

/** A checked record (see each format's `isStorage`) with its format put back. */
export function tensorStorage(format: ModelFormat, record: StorageRecord): TensorStorage {
  return { format, ...record } as TensorStorage;
}

/** How the graph consumes a tensor: which op, as which input, with which attributes. */
export interface TensorUse {
  op: string;
  /** The op's domain where it is not the default (`com.microsoft`: onnxruntime's contrib ops). */
  domain?: string;
  inputIndex: number;
  attrs: Record<string, number | string | number[]>;
  /** In `consumers`: the data-movement ops the values pass through before this use, in order (none: a direct use). */
  through?: readonly string[];
  /** In `consumers`: the `perm` of each Transpose among `through`, in order (where each gives one). */
  perms?: readonly (readonly number[])[];
  /** Where the using node sits (ONNX field path, as tensor locations spell it): a subgraph's nodes below its `If`. */
  node?: string;
}

export interface TensorEntry {
  /** Unique key inside the model (the tensor name, made unique if needed). */
  key: string;
  /** Name as stored in the file (a Constant node's tensor takes its output name). */
  name: string;
  dtype: FloatDType;
  shape: number[];
  /** How the graph uses the tensor (ONNX); empty where the format has no graph. */
  uses: TensorUse[];
  /**
   * The uses of its values past data-movement ops (Slice, Split, Concat, Reshape, Squeeze, Unsqueeze, Transpose,
   * Identity, Flatten): where a tensor is sliced into gates before it is added, the Adds. ONNX only.
   */
  consumers?: TensorUse[];
  /**
   * The uses its values reach past data movement and elementwise arithmetic (Add, Mul, Div, Log, Exp…), a few
   * steps deep: where a constant is computed on before it decides an index or a phase. ONNX only, small tensors.
   */
  reaches?: TensorUse[];
  /**
   * A default the caller may override: an ONNX initializer that is also an input of the main graph (IR ≥ 4, and
   * not every initializer listed so). Its values are a setting of the model, such as a threshold.
   */
  overridable?: boolean;
  /**
   * ONNX: the graph rounds this weight onto an int8/uint8 grid at run time (every use a QuantizeLinear: a model of
   * quantization-aware training): the scale tensor's key, the zero points (one, or one per index of `axis`; −1: one
   * scale for the tensor) and whether the integers are signed. pipeline/model-grid.ts codes it on that grid.
   */
  quantizedBy?: { scale: string; zeroPoints: number[]; signed: boolean; axis: number };
  /** Format-specific locator (ONNX: protobuf field path; safetensors: data offsets). */
  location: string;
}

export interface ModelReader {
  readonly format: ModelFormat;
  readonly file: string;
  readonly tensors: readonly TensorEntry[];
  /** Values of one tensor as float32 (float64 is narrowed; NaN/Inf pass through). */
  read(key: string): Float32Array;
  /** Values of rows [row, row + rows) of the leading dimension only (by offset where the format allows). */
  readRows(key: string, row: number, rows: number): Float32Array;
  /** The model without the data of the given tensors; input to the matching writer. */
  skeleton(stripped: ReadonlySet<string>): Uint8Array;
  /** The same bytes in parts of `partBytes` (the last shorter), produced one at a time where the format allows. */
  skeletonParts(stripped: ReadonlySet<string>, partBytes: number): Iterable<Uint8Array>;
  /** Format-specific details the writer needs to restore stripped tensors exactly as stored. */
  storage(key: string): TensorStorage;
  /** Releases the file (a no-op for a model read whole). */
  close(): void;
  /**
   * Files beside the model that hold tensor data (ONNX external data), each once; absent or empty when the
   * model is the one file. The skeleton places their data inline.
   */
  readonly externalFiles?: readonly string[];
  /** The op types of the graph and its subgraphs (ONNX); absent where the format has no graph. */
  readonly opTypes?: ReadonlySet<string>;
  /**
   * Where a tensor's values lie as plain little-endian bytes of its dtype in a file (ONNX raw_data or external
   * data), so a worker thread can read just them instead of opening the whole model; undefined where they are
   * not such a byte range (typed repeated fields) or the format reads by offset anyway.
   */
  dataRange?(key: string): DataRange | undefined;
}

/** A tensor's values as a byte range of a file (ModelReader.dataRange). */
export interface DataRange {
  readonly file: string;
  readonly start: number;
  readonly end: number;
  readonly dtype: FloatDType;
  readonly shape: readonly number[];
  /** The file's size and modification time when the model was opened: a file replaced since is refused. */
  readonly fileBytes: number;
  readonly mtimeMs: number;
}

/** A model format as an archive knows it (isomorphic; formats/meta.ts lists them). */
export interface FormatMeta {
  name: ModelFormat;
  /** The extension of its files, lower case with the dot. */
  extension: string;
  /** Whether a manifest's storage record holds what this format's writer reads (the record is hostile). */
  isStorage(record: Record<string, unknown>): boolean;
}

/** A restored tensor and where it goes. */
/**
 * A restored tensor's data: its float32 values, or its bytes as the model file holds them (little-endian
 * `bytesDtype`, made by the decoder's one pass, so the rebuild only places them).
 */
export type RestoredData =
  | { values: Float32Array; bytes?: undefined; bytesDtype?: undefined }
  | { bytes: Uint8Array; bytesDtype: FloatDType; values?: undefined };

/**
 * Restored data as little-endian `dtype` bytes: its own bytes where it has them in that dtype (float32 values on
 * a little-endian machine: a view of them, not a copy; the caller owns the values), else encoded.
 */
export function restoredDataBytes(data: RestoredData, dtype: FloatDType): Uint8Array {
  if (!data.bytes) {
    const v = data.values;
    return dtype === 'float32' && LITTLE_ENDIAN ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : encodeFloats(v, dtype);
  }
  return data.bytesDtype === dtype ? data.bytes : encodeFloats(decodeFloats(data.bytes, data.bytesDtype), dtype);
}

/**
 * The dtype of a tensor's bytes in its file: its own, except ONNX `float_data` (float32) and `double_data`
 * (float64) forms, which hold packed values of their own width whatever the tensor's type.
 */
export function storedDtype(storage: TensorStorage, dtype: FloatDType): FloatDType {
  if (storage.format === 'onnx' && storage.form === 'float_data') return 'float32';
  if (storage.format === 'onnx' && storage.form === 'double_data') return 'float64';
  return dtype;
}

export type StoredTensor = {
  storage: TensorStorage;
  dtype: FloatDType;
} & RestoredData;

/** A model format on Node (formats/registry.ts lists them): its metadata, and how to recognise, read and rebuild its files. */
export interface ModelFormatModule extends FormatMeta {
  /** Whether a file's first bytes are this format's, for a file whose extension says nothing. */
  sniff(head: Uint8Array): boolean;
  /** A reader of the file (`bytes`: the file already in memory, where the format reads it whole). */
  open(file: string, bytes?: Uint8Array): ModelReader;
  /** The model file from its skeleton (`ModelReader.skeleton`) and the restored tensors. */
  rebuild(skeleton: Uint8Array, tensors: readonly StoredTensor[], file: string): Uint8Array;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Elements of one row of the leading dimension. */
export function rowElements(shape: readonly number[]): number {
  return elementCount(shape.slice(1));
}

/** Rows [row, row + rows) of a tensor's leading dimension as an element range [start, end), checked. */
export function rowsRange(
  shape: readonly number[],
  row: number,
  rows: number,
  ctx: { file: string; tensor: string },
): [number, number] {
  if (!(Number.isSafeInteger(row) && Number.isSafeInteger(rows) && row >= 0 && rows >= 0 && row + rows <= (shape[0] ?? 1)))
    throw new BadModelError(`rows ${row}+${rows} outside the tensor's ${shape[0]}`, ctx);
  const width = rowElements(shape);
  return [row * width, (row + rows) * width];
}

export const BYTES_PER_ELEMENT: Record<FloatDType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
};

// ---- float16 / bfloat16 conversions (explicit little-endian, round to nearest even) ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function float16ToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function float32ToFloat16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half >> 10;
  return sign | half;
}

export function bfloat16ToFloat32(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

export function float32ToBfloat16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** The platform stores typed arrays little-endian (true on every platform Node and browsers ship for). */
export const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

let halfTable: Float32Array | undefined;
let bhalfTable: Float32Array | undefined;
/** float16 / bfloat16 → float32 for all 65,536 bit patterns (built on first use). */
function table(dtype: 'float16' | 'bfloat16'): Float32Array {
  if (dtype === 'float16') return (halfTable ??= Float32Array.from({ length: 65536 }, (_, h) => float16ToFloat32(h)));
  return (bhalfTable ??= Float32Array.from({ length: 65536 }, (_, h) => bfloat16ToFloat32(h)));
}

/** Little-endian bytes of the given dtype → float32 values. */
export function decodeFloats(bytes: Uint8Array, dtype: FloatDType): Float32Array {
  const n = bytes.byteLength / BYTES_PER_ELEMENT[dtype];
  if (LITTLE_ENDIAN && dtype === 'float32') {
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  if (dtype === 'float64') for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
  else if (dtype === 'float32') for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  else {
    const t = table(dtype);
    for (let i = 0; i < n; i++) out[i] = t[view.getUint16(i * 2, true)];
  }
  return out;
}

/** float32 values → little-endian bytes of the given dtype. */
export function encodeFloats(values: Float32Array, dtype: FloatDType): Uint8Array {
  if (LITTLE_ENDIAN && dtype === 'float32')
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const out = new Uint8Array(values.length * BYTES_PER_ELEMENT[dtype]);
  const view = new DataView(out.buffer);
  switch (dtype) {
    case 'float32':
      for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
      break;
    case 'float64':
      for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i], true);
      break;
    case 'float16':
      for (let i = 0; i < values.length; i++) view.setUint16(i * 2, float32ToFloat16(values[i]), true);
      break;
    case 'bfloat16':
      for (let i = 0; i < values.length; i++) view.setUint16(i * 2, float32ToBfloat16(values[i]), true);
      break;
  }
  return out;
}
