/**
 * The sign split of raw codes (codec `zstd-sign`), shared by every platform: a code c of an n-bit grid becomes
 * its distance from the middle code m = 2ⁿ⁻¹ (which decodes to exactly 0 on a zero-centred grid), |c − m|,
 * and, for every non-zero distance, one sign bit (1: below the middle), packed eight to a byte, least
 * significant bit first. Lossless for any codes. Weight codes are nearly symmetric about zero, so the
 * distances carry one bit less than the codes over half the alphabet, which zstd's per-block Huffman
 * tables describe in half the space, and the signs of a structured tensor (a Fourier basis) repeat on their
 * own. Entry layout: u32 LE byte length of the first zstd frame, that frame (the distances as
 * little-endian codes of the plane's width), then a second frame (the sign bytes).
 */

import { allocCodes, type CodeArray } from '../../quantize/uniform.js';

/** Code bit depths the split carries (the distance of a 2ⁿ⁻¹ code needs n bits, and no more). */
export const SIGN_SPLIT_BITS: readonly number[] = [8, 16];

export interface SignSplit {
  /** |c − 2ⁿ⁻¹| per code, in the plane's own code width. */
  readonly distances: CodeArray;
  /** One bit per non-zero distance, in order, LSB first. */
  readonly signs: Uint8Array;
}

/** Distances and signs of a plane of n-bit codes (one pass, no data-dependent branch but the byte flush). */
export function splitSigns(codes: CodeArray, bits: number): SignSplit {
  // a small integer, not a double (2 ** n is one): the loop below stays in integer arithmetic
  const mid = bits <= 30 ? 1 << (bits - 1) : 2 ** (bits - 1);
  const n = codes.length;
  const distances = allocCodes(bits, n);
  const signs = new Uint8Array((n + 7) >>> 3); // at most one bit a code; cut to the bits used below
  let acc = 0;
  let k = 0; // sign bits in the byte being filled
  let byte = 0;
  for (let i = 0; i < n; i++) {
    const d = codes[i] - mid;
    const neg = d >> 31; // −1 below the middle, else 0
    distances[i] = (d ^ neg) - neg;
    const nz = (d | -d) >>> 31; // 1 for a non-zero distance
    acc |= (neg & nz) << k;
    k += nz;
    if (k === 8) {
      signs[byte++] = acc;
      acc = 0;
      k = 0;
    }
  }
  if (k) signs[byte++] = acc;
  return { distances, signs: signs.subarray(0, byte) };
}

/**
 * The codes again from distances and signs; undefined when they do not fit together (a distance beyond the
 * grid, or too few or too many sign bytes): the caller names the entry.
 */
export function joinSigns(distances: CodeArray, signs: Uint8Array, bits: number): CodeArray | undefined {
  const mid = bits <= 30 ? 1 << (bits - 1) : 2 ** (bits - 1); // a small integer (splitSigns)
  const out = distances; // in place: the distances are the caller's own, freshly decoded
  const n = out.length;
  const count = signs.length;
  let bad = 0;
  // the sign byte being read (shifted as its bits are used), its index and the bits left in it
  let byte = 0;
  let cur = count > 0 ? signs[0] : 0;
  let left = 8;
  for (let i = 0; i < n; i++) {
    const d = out[i];
    // a zero distance has no sign; rare in a dense plane, the rule in a sparse one: predictable either way
    if (d === 0) {
      out[i] = mid;
      continue;
    }
    const below = cur & 1;
    cur >>>= 1;
    if (--left === 0) {
      // past the last sign byte the bits read 0, and the count check below fails
      cur = ++byte < count ? signs[byte] : 0;
      left = 8;
    }
    // below: mid − d (d ≤ mid); above: mid + d (d ≤ mid − 1)
    out[i] = mid + d - ((d << 1) & -below);
    // compared as numbers: 24-bit codes travel as 32-bit distances, past what an int32 difference holds
    bad |= d > mid - 1 + below ? 1 : 0;
  }
  return bad || byte + (left < 8 ? 1 : 0) !== count ? undefined : out;
}

/** The two frames of a `zstd-sign` entry, or undefined when its length prefix does not fit the entry. */
export function signFrames(bytes: Uint8Array): [Uint8Array, Uint8Array] | undefined {
  if (bytes.length < 4) return undefined;
  const n = (bytes[0] | (bytes[1] << 8) | (bytes[2] << 16)) + bytes[3] * 2 ** 24;
  if (n > bytes.length - 4) return undefined;
  return [bytes.subarray(4, 4 + n), bytes.subarray(4 + n)];
}

/** An entry from its two frames (see signFrames). */
export function joinFrames(first: Uint8Array, second: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + first.length + second.length);
  new DataView(out.buffer).setUint32(0, first.length, true);
  out.set(first, 4);
  out.set(second, 4 + first.length);
  return out;
}
