/**
 * Tensors as calibration data: an element type, dimensions and a typed array, independent of onnxruntime (so
 * readers, the set and the fidelity metrics need no inference package), converted to and from `ort.Tensor`
 * only where a model runs.
 */

import type { Tensor as OrtTensor } from 'onnxruntime-common';
import { BadCalibrationError } from '../errors.js';
import { float16ToFloat32, float32ToFloat16 } from '../formats/model.js';
import type { loadOrt } from '../runtime/optional.js';

/** The numeric element types a model input can take here (ONNX names, as onnxruntime reports them). */
export const ELEMENT_TYPES = [
  'float32',
  'float16',
  'float64',
  'int64',
  'int32',
  'int16',
  'int8',
  'uint64',
  'uint32',
  'uint16',
  'uint8',
  'bool',
] as const;
export type ElementType = (typeof ELEMENT_TYPES)[number];

export type TensorData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint32Array
  | Uint16Array
  | Uint8Array;

export interface CalibrationTensor {
  type: ElementType;
  dims: number[];
  /** float16 as its bit patterns (Uint16Array), bool as 0/1 bytes. */
  data: TensorData;
}

/** One run's inputs (or outputs), by name. */
export type Feed = Record<string, CalibrationTensor>;

/** No real input has more dimensions than this; a bound against crafted headers. */
export const MAX_RANK = 16;
/** Elements in one calibration tensor (1 GiB of float32): a bound against crafted headers and runaway shapes. */
export const MAX_TENSOR_ELEMENTS = 2 ** 28;

export function isElementType(t: string): t is ElementType {
  return (ELEMENT_TYPES as readonly string[]).includes(t);
}

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function allocate(type: ElementType, n: number): TensorData {
  switch (type) {
    case 'float32':
      return new Float32Array(n);
    case 'float16':
      return new Uint16Array(n);
    case 'float64':
      return new Float64Array(n);
    case 'int64':
      return new BigInt64Array(n);
    case 'uint64':
      return new BigUint64Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'uint32':
      return new Uint32Array(n);
    case 'int16':
      return new Int16Array(n);
    case 'uint16':
      return new Uint16Array(n);
    case 'int8':
      return new Int8Array(n);
    case 'uint8':
    case 'bool':
      return new Uint8Array(n);
  }
}

/** Tensors of one type and shape [1, …] stacked along their first axis: [n, …]. */
export function stackBatch(
  parts: readonly CalibrationTensor[],
  context: { file?: string; tensor?: string } = {},
): CalibrationTensor {
  const [first] = parts;
  const per = elementCount(first.dims);
  const data = allocate(first.type, per * parts.length);
  parts.forEach((p, b) => {
    if (p.type !== first.type || p.dims.length !== first.dims.length || p.dims.some((d, k) => d !== first.dims[k]))
      throw new BadCalibrationError(
        `the pictures of one batch differ in shape ([${first.dims.join(',')}] and [${p.dims.join(',')}]): give them one size (--image-size WxH)`,
        context,
      );
    (data as Uint8Array).set(p.data as Uint8Array, b * per);
  });
  return { type: first.type, dims: [parts.length, ...first.dims.slice(1)], data };
}

export const isFloatType = (t: ElementType): boolean => t === 'float32' || t === 'float16' || t === 'float64';

/** Element i as a JS number (int64 beyond 2^53 loses precision; these are values, not ids, where it is used). */
export function valueAt(t: CalibrationTensor, i: number): number {
  const v = t.data[i];
  if (typeof v === 'bigint') return Number(v);
  return t.type === 'float16' ? float16ToFloat32(v) : v;
}

/** Any numeric tensor's values as float32 (float16 decoded, integers converted). */
export function toFloat32(t: CalibrationTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  const out = new Float32Array(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = valueAt(t, i);
  return out;
}

/**
 * The same values as another element type, for a model input of that type. Floats to integers only when every
 * value is integral (an id given as 3.0 is fine, 3.5 is an error); out-of-range integers are errors.
 */
export function convertTensor(
  t: CalibrationTensor,
  type: ElementType,
  what: { file?: string; tensor?: string } = {},
): CalibrationTensor {
  if (t.type === type) return t;
  const n = t.data.length;
  const out = allocate(type, n);
  if (type === 'float32' || type === 'float64') {
    for (let i = 0; i < n; i++) (out as Float32Array)[i] = valueAt(t, i);
  } else if (type === 'float16') {
    for (let i = 0; i < n; i++) (out as Uint16Array)[i] = float32ToFloat16(valueAt(t, i));
  } else if (type === 'bool') {
    for (let i = 0; i < n; i++) (out as Uint8Array)[i] = valueAt(t, i) !== 0 ? 1 : 0;
  } else {
    const [lo, hi] = INTEGER_RANGE[type];
    for (let i = 0; i < n; i++) {
      const raw = t.data[i];
      const v = typeof raw === 'bigint' ? raw : valueAt(t, i);
      if (typeof v === 'number' && (!Number.isInteger(v) || v < lo || v > hi))
        throw new BadCalibrationError(`value ${v} at index ${i} is not a ${type} (the model input's element type)`, what);
      if (type === 'int64' || type === 'uint64') (out as BigInt64Array)[i] = BigInt(v);
      else (out as Int32Array)[i] = Number(v);
    }
  }
  return { type, dims: t.dims, data: out };
}

const INTEGER_RANGE: Record<Exclude<ElementType, 'float32' | 'float16' | 'float64' | 'bool'>, [number, number]> = {
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint64: [0, Number.MAX_SAFE_INTEGER],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int16: [-(2 ** 15), 2 ** 15 - 1],
  uint16: [0, 2 ** 16 - 1],
  int8: [-128, 127],
  uint8: [0, 255],
};

type Ort = Awaited<ReturnType<typeof loadOrt>>;

/** An `ort.Tensor` over the same memory (no copy). */
export function toOrtTensor(ort: Ort, t: CalibrationTensor): OrtTensor {
  return new ort.Tensor(t.type, t.data as never, t.dims);
}

/** A calibration tensor over an `ort.Tensor`'s memory (no copy). */
export function fromOrtTensor(t: OrtTensor, name = ''): CalibrationTensor {
  const type = t.type === 'float16' && !(t.data instanceof Uint16Array) ? 'float16' : t.type;
  if (!isElementType(type)) throw new BadCalibrationError(`output ${name} has element type ${t.type}, which is not numeric`);
  let data = t.data as TensorData;
  // onnxruntime may hand float16 out as Float16Array where the runtime has it: keep bit patterns
  if (type === 'float16' && !(data instanceof Uint16Array))
    data = new Uint16Array(
      (data as unknown as { buffer: ArrayBuffer }).buffer,
      (data as unknown as { byteOffset: number }).byteOffset,
      t.size,
    );
  return { type, dims: [...t.dims], data };
}

export function describeTensor(t: { type: string; dims: readonly number[] }): string {
  return `${t.type}[${t.dims.join(',')}]`;
}
