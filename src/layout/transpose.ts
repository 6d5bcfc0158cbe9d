/**
 * A tensor stored once for its transpose (manifest `transposed`: a tied output head exported as a transposed copy
 * of the token embedding) is written back by transposing the first's values or bytes, a block of rows at a time
 * (a sliced first's slices are column blocks of the copy).
 */

/** Elements of one, two, four or eight bytes, read through a view of their width (the copy is bit for bit). */
type Elements = Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

function elementsOf(bytes: Uint8Array, width: number): Elements {
  const aligned = bytes.byteOffset % width === 0 ? bytes : bytes.slice();
  const n = aligned.byteLength / width;
  if (width === 8) return new BigUint64Array(aligned.buffer, aligned.byteOffset, n);
  if (width === 4) return new Uint32Array(aligned.buffer, aligned.byteOffset, n);
  if (width === 2) return new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  if (width === 1) return aligned;
  throw new RangeError(`no element width ${width}`);
}

/** Rows and columns of a tile the blocked transpose moves at once (both tiles stay in cache). */
const TILE = 64;

/** dst[c · dstCols + offset + r] = src[r · cols + c]: a [rows, cols] block into columns [offset, offset + rows) of dst. */
function transposeElements<T extends Elements>(
  src: T,
  rows: number,
  cols: number,
  dst: T,
  dstCols: number,
  offset: number,
): void {
  for (let r0 = 0; r0 < rows; r0 += TILE) {
    const r1 = Math.min(rows, r0 + TILE);
    for (let c0 = 0; c0 < cols; c0 += TILE) {
      const c1 = Math.min(cols, c0 + TILE);
      for (let c = c0; c < c1; c++) {
        const d = c * dstCols + offset;
        for (let r = r0; r < r1; r++) dst[d + r] = src[r * cols + c];
      }
    }
  }
}

/**
 * Writes the block `src` (rows [offset, offset + rows) of a [total, cols] tensor, elements of `width` bytes) into
 * `dst`, that tensor's transpose [cols, total], at its columns [offset, offset + rows).
 */
export function transposeBlockInto(
  src: Uint8Array,
  rows: number,
  cols: number,
  width: number,
  dst: Uint8Array,
  total: number,
  offset: number,
): void {
  if (src.byteLength !== rows * cols * width || dst.byteLength !== total * cols * width || offset + rows > total)
    throw new RangeError(`a [${rows}, ${cols}] block does not fit rows ${offset}… of a [${total}, ${cols}] tensor`);
  const out = elementsOf(dst, width);
  transposeElements<Elements>(elementsOf(src, width), rows, cols, out, total, offset);
  // (a destination that was not aligned was written through a copy)
  if (out.buffer !== dst.buffer || out.byteOffset !== dst.byteOffset)
    dst.set(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
}

/** The transpose [cols, rows] of a [rows, cols] tensor's values, bit for bit (NaN payloads and −0 too). */
export function transposedValues(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  const bytes = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  transposeBlockInto(bytes(values), rows, cols, 4, bytes(out), rows, 0);
  return out;
}

/** The transpose of a [rows, cols] tensor's bytes (elements of `width` bytes). */
export function transposedBytes(bytes: Uint8Array, rows: number, cols: number, width: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  transposeBlockInto(bytes, rows, cols, width, out, rows, 0);
  return out;
}
