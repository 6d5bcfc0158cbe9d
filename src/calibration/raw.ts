/**
 * Raw tensors as calibration data: NumPy `.npy` (format 1.0–3.0), `.npz` (a ZIP of `.npy` files, stored or
 * deflated), safetensors, and JSON. Every header is treated as hostile: shapes are checked against the bytes
 * present and against `MAX_TENSOR_ELEMENTS` before anything is allocated.
 */

import { unzipSync, zipSync } from 'fflate';
import { basename, extname } from 'node:path';
import { BadCalibrationError } from '../errors.js';
import { bfloat16ToFloat32 } from '../formats/model.js';
import {
  MAX_RANK,
  MAX_TENSOR_ELEMENTS,
  allocate,
  convertTensor,
  elementCount,
  isElementType,
  type CalibrationTensor,
  type ElementType,
  type TensorData,
} from './tensor.js';

/** A tensor read from a file; `name` is absent where the format carries none (a `.npy` file, a bare JSON array). */
export interface NamedTensor {
  name?: string;
  tensor: CalibrationTensor;
}

/** The tensors of one sample (one run of the model) as read from a file. */
export type RawSample = NamedTensor[];

/** A `.npy` header is a short Python dict; longer is a crafted file. */
const MAX_NPY_HEADER = 1 << 16;
/** A safetensors header lists tensors as JSON; 100 MB is far more than any real one. */
const MAX_SAFETENSORS_HEADER = 100_000_000;
/** JSON calibration files are for small inputs; larger data belongs in .npy/.npz/safetensors. */
const MAX_JSON_BYTES = 256 * 2 ** 20;

const NPY_TYPES: Record<string, ElementType> = {
  f2: 'float16',
  f4: 'float32',
  f8: 'float64',
  i1: 'int8',
  i2: 'int16',
  i4: 'int32',
  i8: 'int64',
  u1: 'uint8',
  u2: 'uint16',
  u4: 'uint32',
  u8: 'uint64',
  b1: 'bool',
};
const NPY_CODE: Record<ElementType, string> = Object.fromEntries(Object.entries(NPY_TYPES).map(([k, v]) => [v, k])) as Record<
  ElementType,
  string
>;

const BYTES: Record<ElementType, number> = {
  float32: 4,
  float16: 2,
  float64: 8,
  int64: 8,
  uint64: 8,
  int32: 4,
  uint32: 4,
  int16: 2,
  uint16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

function checkShape(shape: number[], file: string, tensor?: string): number {
  if (shape.length > MAX_RANK) throw new BadCalibrationError(`rank ${shape.length} exceeds ${MAX_RANK}`, { file, tensor });
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw new BadCalibrationError(`shape [${shape}] is not a list of sizes`, { file, tensor });
  const n = elementCount(shape);
  if (n > MAX_TENSOR_ELEMENTS)
    throw new BadCalibrationError(`shape [${shape}] has ${n} elements, more than ${MAX_TENSOR_ELEMENTS}`, { file, tensor });
  return n;
}

/** Copies little- or big-endian element bytes into a fresh, aligned typed array. */
function typedFrom(bytes: Uint8Array, type: ElementType, n: number, bigEndian: boolean): TensorData {
  const out = allocate(type, n);
  const dst = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  dst.set(bytes.subarray(0, out.byteLength));
  const size = BYTES[type];
  if (bigEndian && size > 1)
    for (let i = 0; i < dst.length; i += size)
      for (let a = i, b = i + size - 1; a < b; a++, b--) [dst[a], dst[b]] = [dst[b], dst[a]];
  return out;
}

/** Parses a `.npy` file. */
export function decodeNpy(bytes: Uint8Array, file: string, tensor?: string): CalibrationTensor {
  const ctx = { file, tensor };
  if (bytes.length < 10 || bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== 'NUMPY')
    throw new BadCalibrationError('not a .npy file (no \\x93NUMPY magic)', ctx);
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new BadCalibrationError('truncated .npy header', ctx);
    headerLen = view.getUint32(8, true);
    start = 12;
  } else throw new BadCalibrationError(`unsupported .npy format version ${major}`, ctx);
  if (headerLen > MAX_NPY_HEADER || start + headerLen > bytes.length)
    throw new BadCalibrationError(`.npy header of ${headerLen} bytes is longer than the file or ${MAX_NPY_HEADER}`, ctx);
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([<>|=])?([a-zA-Z]\d+)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeText)
    throw new BadCalibrationError(`cannot read the .npy header ${JSON.stringify(header.trim())}`, ctx);
  const type = NPY_TYPES[descr[2]];
  if (!type) throw new BadCalibrationError(`.npy element type ${descr[2]} is not supported (floats, integers, bool)`, ctx);
  if (fortran[1] === 'True')
    throw new BadCalibrationError('.npy data in Fortran order is not supported; save it with np.ascontiguousarray', ctx);
  const shape = shapeText[1]
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const n = checkShape(shape, file, tensor);
  const dataStart = start + headerLen;
  if (bytes.length - dataStart < n * BYTES[type])
    throw new BadCalibrationError(
      `.npy shape [${shape}] of ${type} needs ${n * BYTES[type]} data bytes, the file holds ${bytes.length - dataStart}`,
      ctx,
    );
  return { type, dims: shape, data: typedFrom(bytes.subarray(dataStart), type, n, descr[1] === '>') };
}

/** A `.npy` file (format 1.0, little-endian, C order) of a tensor. */
export function encodeNpy(t: CalibrationTensor): Uint8Array {
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
  let header = `{'descr': '${t.type === 'bool' || BYTES[t.type] === 1 ? '|' : '<'}${NPY_CODE[t.type]}', 'fortran_order': False, 'shape': ${shape}, }`;
  // pad so that the data starts on a multiple of 64 bytes, ending in a newline (as NumPy does)
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const out = new Uint8Array(total + t.data.byteLength);
  out.set([0x93, ...new TextEncoder().encode('NUMPY'), 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), total);
  return out;
}

/** Parses a `.npz` file: each `NAME.npy` entry is the tensor NAME. */
export function decodeNpz(bytes: Uint8Array, file: string): RawSample {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes, {
      filter: (f) => {
        if (f.originalSize > MAX_TENSOR_ELEMENTS * 8 + MAX_NPY_HEADER)
          throw new BadCalibrationError(`.npz entry ${f.name} of ${f.originalSize} bytes is too large`, { file });
        return f.name.endsWith('.npy');
      },
    });
  } catch (e) {
    if (e instanceof BadCalibrationError) throw e;
    throw new BadCalibrationError(`not a readable .npz (ZIP) file: ${(e as Error).message}`, { file });
  }
  const names = Object.keys(entries);
  if (!names.length) throw new BadCalibrationError('.npz file holds no .npy entries', { file });
  return names.map((entry) => {
    const name = entry.slice(0, -'.npy'.length);
    return { name, tensor: decodeNpy(entries[entry], file, name) };
  });
}

/** A `.npz` file (deflated) of named tensors. */
export function encodeNpz(tensors: Record<string, CalibrationTensor>): Uint8Array {
  return zipSync(Object.fromEntries(Object.entries(tensors).map(([k, t]) => [`${k}.npy`, encodeNpy(t)])));
}

const SAFETENSORS_TYPES: Record<string, ElementType | 'bfloat16'> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U64: 'uint64',
  U32: 'uint32',
  U16: 'uint16',
  U8: 'uint8',
  BOOL: 'bool',
};

/** Parses a safetensors file: every tensor by name (bfloat16 becomes float32; no model input takes bfloat16 here). */
export function decodeSafetensors(bytes: Uint8Array, file: string): RawSample {
  if (bytes.length < 8) throw new BadCalibrationError('not a safetensors file (shorter than its header length)', { file });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = Number(view.getBigUint64(0, true));
  if (len > MAX_SAFETENSORS_HEADER || 8 + len > bytes.length)
    throw new BadCalibrationError(`safetensors header of ${len} bytes is longer than the file or ${MAX_SAFETENSORS_HEADER}`, {
      file,
    });
  let header: Record<string, { dtype?: unknown; shape?: unknown; data_offsets?: unknown }>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len))) as typeof header;
  } catch (e) {
    throw new BadCalibrationError(`safetensors header is not JSON: ${(e as Error).message}`, { file });
  }
  const data = bytes.subarray(8 + len);
  const out: RawSample = [];
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const ctx = { file, tensor: name };
    const kind = typeof e.dtype === 'string' ? SAFETENSORS_TYPES[e.dtype] : undefined;
    if (!kind) throw new BadCalibrationError(`safetensors dtype ${JSON.stringify(e.dtype)} is not supported`, ctx);
    if (!Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2)
      throw new BadCalibrationError('safetensors entry lacks shape or data_offsets', ctx);
    const shape = e.shape as number[];
    const n = checkShape(shape, file, name);
    const [b, end] = e.data_offsets as number[];
    const size = kind === 'bfloat16' ? 2 : BYTES[kind];
    if (!Number.isSafeInteger(b) || !Number.isSafeInteger(end) || b < 0 || end > data.length || end - b !== n * size)
      throw new BadCalibrationError(`data_offsets [${b}, ${end}] do not hold shape [${shape}] of ${e.dtype} in the file`, ctx);
    if (kind === 'bfloat16') {
      const raw = typedFrom(data.subarray(b, end), 'uint16', n, false) as Uint16Array;
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = bfloat16ToFloat32(raw[i]);
      out.push({ name, tensor: { type: 'float32', dims: shape, data: f } });
    } else out.push({ name, tensor: { type: kind, dims: shape, data: typedFrom(data.subarray(b, end), kind, n, false) } });
  }
  if (!out.length) throw new BadCalibrationError('safetensors file holds no tensors', { file });
  return out;
}

/** A safetensors file of named tensors (for tests and examples). */
export function encodeSafetensors(tensors: Record<string, CalibrationTensor>): Uint8Array {
  const code: Record<string, string> = Object.fromEntries(
    Object.entries(SAFETENSORS_TYPES)
      .filter(([, v]) => v !== 'bfloat16')
      .map(([k, v]) => [v, k]),
  );
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: code[t.type], shape: t.dims, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json = json.padEnd(Math.ceil(json.length / 8) * 8, ' ');
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of Object.values(tensors)) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/** The shape of a nested JSON array (rectangular), or an error naming where it is ragged. */
function nestedShape(v: unknown, ctx: { file: string; tensor?: string }): number[] {
  const shape: number[] = [];
  let x = v;
  while (Array.isArray(x)) {
    shape.push(x.length);
    if (shape.length > MAX_RANK) throw new BadCalibrationError(`nested deeper than ${MAX_RANK}`, ctx);
    x = x[0];
  }
  return shape;
}

function flatten(v: unknown, shape: number[], out: Float64Array, ctx: { file: string; tensor?: string }): void {
  let i = 0;
  const walk = (x: unknown, depth: number): void => {
    if (depth === shape.length) {
      const n = typeof x === 'boolean' ? Number(x) : x;
      if (typeof n !== 'number' || !Number.isFinite(n)) throw new BadCalibrationError(`element ${i} is not a finite number`, ctx);
      out[i++] = n;
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[depth])
      throw new BadCalibrationError(
        `ragged array: expected ${shape[depth]} elements at depth ${depth}${Array.isArray(x) ? `, found ${x.length}` : ''}; a tensor's rows are one length: pad them (with an attention mask), or give samples of different lengths one per entry of a top-level list ([{"input_ids": [[…]]}, {"input_ids": [[…]]}])`,
        ctx,
      );
    for (const y of x) walk(y, depth + 1);
  };
  walk(v, 0);
}

/** One JSON tensor: a nested array, or {"dims"|"shape": [...], "data": [...], "type"|"dtype": "float32"}. */
function jsonTensor(v: unknown, file: string, tensor?: string): CalibrationTensor {
  const ctx = { file, tensor };
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as { dims?: unknown; shape?: unknown; data?: unknown; type?: unknown; dtype?: unknown };
    const dims = (o.dims ?? o.shape) as number[] | undefined;
    const type = (o.type ?? o.dtype ?? 'float64') as string;
    if (!Array.isArray(dims) || !Array.isArray(o.data))
      throw new BadCalibrationError('expected {"dims": [...], "data": [...]} or a nested array', ctx);
    if (!isElementType(type)) throw new BadCalibrationError(`unknown element type ${JSON.stringify(type)}`, ctx);
    const n = checkShape(dims, file, tensor);
    if (o.data.length !== n) throw new BadCalibrationError(`data holds ${o.data.length} values, dims [${dims}] need ${n}`, ctx);
    const flat = new Float64Array(n);
    flatten(o.data, [n], flat, ctx);
    return convertTensor({ type: 'float64', dims, data: flat }, type, ctx);
  }
  const shape = nestedShape(v, ctx);
  const n = checkShape(shape, file, tensor);
  const flat = new Float64Array(n);
  flatten(v, shape, flat, ctx);
  return { type: 'float64', dims: shape, data: flat };
}

/**
 * Parses a JSON calibration file: `{"NAME": tensor, …}` (one sample), `[{"NAME": tensor, …}, …]` (several
 * samples), or a bare nested array (one unnamed tensor). A tensor is a nested array or
 * `{"dims": [...], "data": [...], "type": "int64"}`. Values without a type take the model input's type.
 */
export function decodeJsonTensors(bytes: Uint8Array, file: string): RawSample[] {
  if (bytes.length > MAX_JSON_BYTES)
    throw new BadCalibrationError(
      `JSON calibration file of ${bytes.length} bytes is larger than ${MAX_JSON_BYTES}; use .npy or .npz`,
      {
        file,
      },
    );
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new BadCalibrationError(`not JSON: ${(e as Error).message}`, { file });
  }
  const sample = (o: unknown): RawSample => {
    if (Array.isArray(o)) return [{ tensor: jsonTensor(o, file) }];
    if (o === null || typeof o !== 'object')
      throw new BadCalibrationError('expected an object of named tensors or an array', { file });
    const keys = Object.keys(o);
    if (keys.includes('data') && (keys.includes('dims') || keys.includes('shape'))) return [{ tensor: jsonTensor(o, file) }];
    return Object.entries(o as Record<string, unknown>).map(([name, t]) => ({ name, tensor: jsonTensor(t, file, name) }));
  };
  // a top-level array of objects is a list of samples; an array of numbers/arrays is one tensor
  if (Array.isArray(v) && v.length > 0 && v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x)))
    return v.map(sample);
  return [sample(v)];
}

export const RAW_EXTENSIONS = ['.npy', '.npz', '.safetensors', '.json'] as const;

/** Reads any raw-tensor file into its samples (a .npy file is one unnamed tensor, hinted by its file stem). */
export function decodeRawFile(bytes: Uint8Array, file: string): RawSample[] {
  const ext = extname(file).toLowerCase();
  const samples =
    ext === '.npy'
      ? [[{ name: undefined, tensor: decodeNpy(bytes, file) }]]
      : ext === '.npz'
        ? [decodeNpz(bytes, file)]
        : ext === '.safetensors'
          ? [decodeSafetensors(bytes, file)]
          : ext === '.json'
            ? decodeJsonTensors(bytes, file)
            : undefined;
  if (!samples) throw new BadCalibrationError(`not a raw tensor file (${RAW_EXTENSIONS.join(', ')})`, { file });
  // a NaN input makes the outputs NaN: the gate would compare nothing. (±Infinity stays allowed: an additive
  // attention mask holds -Infinity; JSON cannot write either.)
  for (const sample of samples) for (const t of sample) checkNoNaN(t, file);
  return samples;
}

/** Refuses a floating-point tensor holding NaN, naming the first such element. */
function checkNoNaN({ name, tensor }: NamedTensor, file: string): void {
  const { type, data } = tensor;
  let bad = -1;
  if (type === 'float16') bad = (data as Uint16Array).findIndex((h) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0);
  else if (type === 'float32' || type === 'float64') bad = (data as Float32Array | Float64Array).findIndex(Number.isNaN);
  if (bad >= 0)
    throw new BadCalibrationError(`element ${bad} is NaN; calibration inputs must be numbers`, { file, tensor: name });
}

/**
 * `x.npy` → `x`; `sample3.x.npy` → `x`: the stem names the input after the group's dot. Input names hold dots too
 * (`past_key_values.0.key`, as Hugging Face exports name a decoder's cache): of the model's `inputs`, the longest
 * the stem ends with after a dot is the input (`s0.past_key_values.0.key.npy` → group `s0`); without one, the
 * part after the last dot.
 */
export function npyInputHint(file: string, inputs: Iterable<string> = []): { stem: string; group?: string; input: string } {
  const stem = basename(file, extname(file));
  let named: string | undefined;
  for (const name of inputs)
    if (stem.length > name.length + 1 && stem.endsWith(`.${name}`) && (!named || name.length > named.length)) named = name;
  if (named) return { stem, group: stem.slice(0, stem.length - named.length - 1), input: named };
  const dot = stem.lastIndexOf('.');
  return dot > 0 ? { stem, group: stem.slice(0, dot), input: stem.slice(dot + 1) } : { stem, input: stem };
}
