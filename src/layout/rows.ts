/**
 * Rows of a tensor's leading dimension that are all exact zeros (+0.0), left out of its planes: an output
 * channel pruned to zeros is a column of zero codes in an [in, out] plane, which no codec sees as a run
 * (a model with 30 % of its output channels pruned cost 16 % more than int8 + zstd-19 of its file, where those
 * rows are runs of zero bytes). The planes hold the other rows, in order, as a tensor of that many rows; a
 * record's `zeroRows` names the rows left out, and the decoder puts them back as zeros (format version 5).
 * Isomorphic: the decoder runs in the browser too.
 */

/**
 * The rows of `values` (rows × inner, row-major) whose every element is +0.0, as a bit mask (row r is bit r % 8
 * of byte r >> 3), or undefined where there is none, or only such rows (an all-zero tensor codes to next to
 * nothing as it is). −0.0 is not +0.0: a row holding one keeps its planes.
 */
export function zeroRowMask(values: Float32Array, rows: number, inner: number): Uint8Array | undefined {
  if (rows < 2 || inner < 1 || values.length !== rows * inner) return undefined;
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  let mask: Uint8Array | undefined;
  let zeros = 0;
  for (let r = 0; r < rows; r++) {
    const end = (r + 1) * inner;
    let i = r * inner;
    while (i < end && bits[i] === 0) i++;
    if (i < end) continue;
    (mask ??= new Uint8Array((rows + 7) >> 3))[r >> 3] |= 1 << (r & 7);
    zeros++;
  }
  return zeros > 0 && zeros < rows ? mask : undefined;
}

/** The rows a mask keeps (its clear bits), ascending. */
export function keptRows(mask: Uint8Array, rows: number): Int32Array {
  const kept: number[] = [];
  for (let r = 0; r < rows; r++) if (!(mask[r >> 3] & (1 << (r & 7)))) kept.push(r);
  return Int32Array.from(kept);
}

/**
 * Whether `mask` is a zero-row mask of a tensor of `rows` rows as the encoder writes one: its exact length, no bit
 * past the last row, at least one row left out and one kept. Returns how many rows it keeps, or undefined.
 */
export function maskKeeps(mask: Uint8Array, rows: number): number | undefined {
  if (rows < 2 || mask.length !== (rows + 7) >> 3) return undefined;
  if (rows & 7 && mask[mask.length - 1] >> (rows & 7)) return undefined;
  let zeros = 0;
  for (const b of mask) for (let v = b; v; v &= v - 1) zeros++;
  return zeros > 0 && zeros < rows ? rows - zeros : undefined;
}

/** The kept rows of `values` (rows × inner), one after another: the tensor the planes hold. */
export function gatherRows(values: Float32Array, kept: Int32Array, inner: number): Float32Array {
  const out = new Float32Array(kept.length * inner);
  for (let k = 0; k < kept.length; k++) out.set(values.subarray(kept[k] * inner, (kept[k] + 1) * inner), k * inner);
  return out;
}

/**
 * Puts the rows a mask left out back, in place: `data` holds the kept rows one after another at its start
 * (rows × inner elements in all); each moves to its own row, last first (a row only moves later in the array),
 * and the rows left out become +0.0 (bit pattern 0 in every output dtype).
 */
export function expandRows(data: Float32Array | Uint16Array, mask: Uint8Array, rows: number, inner: number): void {
  const kept = keptRows(mask, rows);
  let end = rows * inner; // everything from here on is in place
  for (let k = kept.length - 1; k >= 0; k--) {
    const to = kept[k] * inner;
    data.fill(0, to + inner, end);
    if (to !== k * inner) data.copyWithin(to, k * inner, (k + 1) * inner);
    end = to;
  }
  data.fill(0, 0, end);
}
