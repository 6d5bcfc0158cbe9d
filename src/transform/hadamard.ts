/**
 * Optional decorrelating transform: a randomized Hadamard rotation along the
 * rows (inputs) of each plane, x → H·D·x per column, in blocks of B rows (the
 * largest power of two ≤ 256 dividing the row count). D is a seeded diagonal
 * of ±1 (the seed is in the manifest); H is the orthonormal Walsh–Hadamard
 * matrix, its own inverse. Orthonormal, so squared error is the same in both
 * domains; decoding applies D·H after dequantization.
 */

const MAX_BLOCK = 256;

export function rotationBlock(rows: number): number {
  let b = 1;
  while (b * 2 <= MAX_BLOCK && rows % (b * 2) === 0) b *= 2;
  return b;
}

function signs(rows: number, seed: number): Int8Array {
  let s = seed >>> 0 || 1;
  const out = new Int8Array(rows);
  for (let i = 0; i < rows; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 1 ? -1 : 1;
  }
  return out;
}

/**
 * Marks (NaN) every segment of a rotated plane (the block of rows one column's transform mixes) that holds a
 * marked value. Exact values put back after the rotation is undone can only restore whole segments: one value
 * restored alone left the rest of its segment with the rotated value lost (a narrow step grid: 2.9 dB).
 */
export function wholeSegments(plane: Float32Array, rows: number, cols: number): void {
  const block = rotationBlock(rows);
  for (let c = 0; c < cols; c++)
    for (let r0 = 0; r0 < rows; r0 += block) {
      let hit = false;
      for (let r = r0; r < r0 + block && !hit; r++) hit = Number.isNaN(plane[r * cols + c]);
      if (hit) for (let r = r0; r < r0 + block; r++) plane[r * cols + c] = NaN;
    }
}

/** In-place orthonormal Walsh–Hadamard transform of `block` rows of one column. */
function fwht(plane: Float32Array, cols: number, col: number, row0: number, block: number, tmp: Float64Array): void {
  for (let i = 0; i < block; i++) tmp[i] = plane[(row0 + i) * cols + col];
  for (let h = 1; h < block; h *= 2)
    for (let i = 0; i < block; i += 2 * h)
      for (let j = i; j < i + h; j++) {
        const a = tmp[j];
        const b = tmp[j + h];
        tmp[j] = a + b;
        tmp[j + h] = a - b;
      }
  const norm = 1 / Math.sqrt(block);
  for (let i = 0; i < block; i++) plane[(row0 + i) * cols + col] = tmp[i] * norm;
}

/** x → H·D·x along rows. Non-finite values must have been taken out first. */
export function rotatePlane(plane: Float32Array, rows: number, cols: number, seed: number): void {
  const block = rotationBlock(rows);
  if (block === 1) return;
  const d = signs(rows, seed);
  const tmp = new Float64Array(block);
  for (let r = 0; r < rows; r++) if (d[r] < 0) for (let c = 0; c < cols; c++) plane[r * cols + c] = -plane[r * cols + c];
  for (let c = 0; c < cols; c++) for (let r0 = 0; r0 < rows; r0 += block) fwht(plane, cols, c, r0, block, tmp);
}

/** The inverse: y → D·H·y. */
export function unrotatePlane(plane: Float32Array, rows: number, cols: number, seed: number): void {
  const block = rotationBlock(rows);
  if (block === 1) return;
  const d = signs(rows, seed);
  const tmp = new Float64Array(block);
  for (let c = 0; c < cols; c++) for (let r0 = 0; r0 < rows; r0 += block) fwht(plane, cols, c, r0, block, tmp);
  for (let r = 0; r < rows; r++) if (d[r] < 0) for (let c = 0; c < cols; c++) plane[r * cols + c] = -plane[r * cols + c];
}
