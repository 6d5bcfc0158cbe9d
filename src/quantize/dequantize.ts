/**
 * The decoder's one pass (issue 16): codes of a plane → values in the tensor's own memory order and dtype,
 * written straight into the output, with no float plane in between and no second walk to transpose or to
 * convert to float16 / bfloat16. Each value is the one `dequantizePlane` gives (M1, the same arithmetic in
 * double, rounded to float32), then the same conversion `encodeFloats` makes: the bytes are identical to
 * dequantize → scatter → encode, only made in one walk.
 *
 * With few enough channels the values of every code are tabulated per channel (256 entries at 8 bits, a
 * table no larger than the plane otherwise), already in the output dtype; else each value is computed.
 * A tabulated plane whose rows are runs of the output is walked row by row; any other in strips of eight columns
 * (`strips`), so that the codes read, the tables and the outputs written stay in cache whichever is the
 * transposed one; computed values go in square blocks (`blocks`).
 */

import { type FloatDType, float32ToBfloat16, float32ToFloat16 } from '../formats/model.js';
import type { CodeArray, PlaneRanges } from './uniform.js';

/** Output dtypes the one pass writes (float64 tensors go through float32 values and `encodeFloats`). */
export type DirectDtype = 'float32' | 'float16' | 'bfloat16';

export const isDirectDtype = (d: FloatDType): d is DirectDtype => d === 'float32' || d === 'float16' || d === 'bfloat16';

/** A tensor being written: float32 values, or the 16-bit patterns of float16 / bfloat16 values. */
export type TensorOutput = { dtype: 'float32'; data: Float32Array } | { dtype: 'float16' | 'bfloat16'; data: Uint16Array };

/**
 * An output of `n` elements; `bytes` is its little-endian file image (typed arrays are LE here). Over the
 * start of `reuse` when that is at least its size (a buffer already written out: its pages are mapped, fresh
 * memory's are faulted in and zeroed by the kernel on first touch), else over fresh bytes. Every element is
 * written by the decoder.
 */
export function allocOutput(dtype: DirectDtype, n: number, reuse?: ArrayBuffer): { out: TensorOutput; bytes: Uint8Array } {
  const width = dtype === 'float32' ? 4 : 2;
  const buffer = reuse && reuse.byteLength >= n * width ? reuse : new ArrayBuffer(n * width);
  const bytes = new Uint8Array(buffer, 0, n * width);
  if (dtype === 'float32') return { out: { dtype, data: new Float32Array(buffer, 0, n) }, bytes };
  return { out: { dtype, data: new Uint16Array(buffer, 0, n) }, bytes };
}

/** Sets element i of the output to the float32 value v (rounded to float32 first, as a Float32Array would). */
export function setOutput(out: TensorOutput, i: number, v: number): void {
  if (out.dtype === 'float32') out.data[i] = v;
  else out.data[i] = out.dtype === 'float16' ? float32ToFloat16(v) : float32ToBfloat16(v);
}

/** The output dtype's word for a float32 value. */
function converter(dtype: DirectDtype): (v: number) => number {
  if (dtype === 'float16') return float32ToFloat16;
  if (dtype === 'bfloat16') return float32ToBfloat16;
  return Math.fround;
}

const BLOCK = 64;

/**
 * Entries of a table small enough to stay in cache whatever the column (64 KB of float32): rows of such a plane
 * are walked whole where they are runs of the output; a larger one (a table per channel across a row of
 * channels) goes through `strips`, eight channels' tables at a time.
 */
const SMALL_TABLE = 16384;

/** Per column: the table offset of its channel (tabulated) or its channel (computed). */
function columnChannels(cols: number, channelWidth: number, scale: number): Int32Array {
  const out = new Int32Array(cols);
  for (let c = 0; c < cols; c++) out[c] = Math.floor(c / channelWidth) * scale;
  return out;
}

/**
 * Dequantizes a rows×cols plane of codes into the output, element (r, c) at `rowOffsets[r] + colOffsets[c]`
 * (the layout's map, `planeOffsets`).
 */
export function dequantizeInto(
  codes: CodeArray,
  rows: number,
  cols: number,
  bits: number,
  ranges: PlaneRanges,
  rowOffsets: Int32Array,
  colOffsets: Int32Array,
  out: TensorOutput,
): void {
  const levels = 2 ** bits;
  const channels = ranges.mins.length;
  const convert = converter(out.dtype);
  // the tables cost channels × levels values: worth it when that is no more than the plane
  if (levels <= 65536 && channels * levels <= rows * cols) {
    const table = out.dtype === 'float32' ? new Float32Array(channels * levels) : new Uint16Array(channels * levels);
    for (let ch = 0; ch < channels; ch++) {
      const lo = ranges.mins[ch];
      const span = ranges.maxs[ch] - ranges.mins[ch];
      const base = ch * levels;
      for (let q = 0; q < levels; q++) table[base + q] = convert(span > 0 ? lo + ((q + 0.5) * span) / levels : lo);
    }
    const at = columnChannels(cols, ranges.channelWidth, levels);
    if (out.dtype === 'float32') lookUp(codes, rows, cols, at, table as Float32Array, rowOffsets, colOffsets, out.data);
    else lookUp(codes, rows, cols, at, table as Uint16Array, rowOffsets, colOffsets, out.data);
    return;
  }
  const ch = columnChannels(cols, ranges.channelWidth, 1);
  const los = new Float64Array(cols);
  const spans = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    los[c] = ranges.mins[ch[c]];
    spans[c] = ranges.maxs[ch[c]] - ranges.mins[ch[c]];
  }
  blocks(rows, cols, rowOffsets, colOffsets, (r0, r1, c0, c1, rowsInner) => {
    const data = out.data;
    const at = (r: number, c: number): void => {
      const span = spans[c];
      data[rowOffsets[r] + colOffsets[c]] = convert(span > 0 ? los[c] + ((codes[r * cols + c] + 0.5) * span) / levels : los[c]);
    };
    if (rowsInner) for (let c = c0; c < c1; c++) for (let r = r0; r < r1; r++) at(r, c);
    else for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) at(r, c);
  });
}

/** Values of a float plane (a rotated plane, undone) into the output, converted to its dtype. */
export function scatterInto(
  plane: Float32Array,
  rows: number,
  cols: number,
  rowOffsets: Int32Array,
  colOffsets: Int32Array,
  out: TensorOutput,
): void {
  const convert = converter(out.dtype);
  const data = out.data;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) data[rowOffsets[r] + colOffsets[c]] = convert(plane[r * cols + c]);
}

/**
 * The plane in BLOCK×BLOCK blocks; `rowsInner` when the output is contiguous along the plane's rows (a
 * transposed layout): the inner loop then walks rows, writing in sequence.
 */
function blocks(
  rows: number,
  cols: number,
  rowOffsets: Int32Array,
  colOffsets: Int32Array,
  fn: (r0: number, r1: number, c0: number, c1: number, rowsInner: boolean) => void,
): void {
  const rowStep = stepOf(rowOffsets, rows);
  const colStep = stepOf(colOffsets, cols);
  const rowsInner = rowStep < colStep;
  for (let c0 = 0; c0 < cols; c0 += BLOCK)
    for (let r0 = 0; r0 < rows; r0 += BLOCK) fn(r0, Math.min(rows, r0 + BLOCK), c0, Math.min(cols, c0 + BLOCK), rowsInner);
}

/** How far apart in the output two neighbouring rows (or columns) of the plane are; Infinity for one. */
function stepOf(offsets: Int32Array, n: number): number {
  return n > 1 ? Math.abs(offsets[1] - offsets[0]) : Infinity;
}

/** The tabulated walk, monomorphic per (codes, table) pair of types in practice: 8-bit codes dominate. */
function lookUp<T extends Float32Array | Uint16Array>(
  codes: CodeArray,
  rows: number,
  cols: number,
  at: Int32Array,
  table: T,
  rowOffsets: Int32Array,
  colOffsets: Int32Array,
  data: T,
): void {
  const rowStep = stepOf(rowOffsets, rows);
  const colStep = stepOf(colOffsets, cols);
  if (colStep === 1 && rowStep >= cols && table.length <= SMALL_TABLE) {
    // rows of the plane are runs of the output (fc [in, out]) and the table stays in cache: row by row
    for (let r = 0; r < rows; r++) {
      const o = rowOffsets[r] + colOffsets[0];
      const base = r * cols;
      for (let c = 0; c < cols; c++) data[o + c] = table[at[c] + codes[base + c]];
    }
    return;
  }
  strips(codes, rows, cols, at, table, rowOffsets, colOffsets, data);
}

/** Rows of the plane taken together by `strips`: their codes' cache lines stay near while its strips pass. */
const STRIP_ROWS = 512;

/**
 * The tabulated walk in strips of eight columns down STRIP_ROWS rows: every row's eight codes are neighbours in
 * one cache line, the eight channels' tables stay in cache, and each column's outputs are written in order of
 * the rows, however the layout places them. Measured against the 64×64 blocks it replaces (a micro-benchmark,
 * the same bytes): fc [out, in] 3072×2731 float32 5.7 → 2.8 ns a weight; a 3×3 conv's plane (ISNet's
 * 256×1024×3×3: rows (in, kh) and columns (out, kw), float16) 5.3–5.9 → 1.8–1.9; fc [in, out] with a table per
 * column too large for cache 5.6–5.9 → 3.1–3.7.
 */
function strips<T extends Float32Array | Uint16Array>(
  codes: CodeArray,
  rows: number,
  cols: number,
  at: Int32Array,
  table: T,
  rowOffsets: Int32Array,
  colOffsets: Int32Array,
  data: T,
): void {
  for (let r0 = 0; r0 < rows; r0 += STRIP_ROWS) {
    const r1 = Math.min(rows, r0 + STRIP_ROWS);
    let c = 0;
    for (; c + 8 <= cols; c += 8) {
      const t0 = at[c],
        t1 = at[c + 1],
        t2 = at[c + 2],
        t3 = at[c + 3];
      const t4 = at[c + 4],
        t5 = at[c + 5],
        t6 = at[c + 6],
        t7 = at[c + 7];
      const o0 = colOffsets[c],
        o1 = colOffsets[c + 1],
        o2 = colOffsets[c + 2],
        o3 = colOffsets[c + 3];
      const o4 = colOffsets[c + 4],
        o5 = colOffsets[c + 5],
        o6 = colOffsets[c + 6],
        o7 = colOffsets[c + 7];
      for (let r = r0, k = r0 * cols + c; r < r1; r++, k += cols) {
        const o = rowOffsets[r];
        data[o0 + o] = table[t0 + codes[k]];
        data[o1 + o] = table[t1 + codes[k + 1]];
        data[o2 + o] = table[t2 + codes[k + 2]];
        data[o3 + o] = table[t3 + codes[k + 3]];
        data[o4 + o] = table[t4 + codes[k + 4]];
        data[o5 + o] = table[t5 + codes[k + 5]];
        data[o6 + o] = table[t6 + codes[k + 6]];
        data[o7 + o] = table[t7 + codes[k + 7]];
      }
    }
    for (; c < cols; c++) {
      const t = at[c];
      const o = colOffsets[c];
      for (let r = r0, k = r0 * cols + c; r < r1; r++, k += cols) data[o + rowOffsets[r]] = table[t + codes[k]];
    }
  }
}
