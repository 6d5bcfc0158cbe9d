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

import { LITTLE_ENDIAN } from '../../formats/model.js';
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
  if (bits === 8 && codes instanceof Uint8Array) return splitSigns8(codes);
  // a small integer, not a double (2 ** n is one): the loop below stays in integer arithmetic
  const mid = bits <= 30 ? 1 << (bits - 1) : 2 ** (bits - 1);
  const n = codes.length;
  const distances = allocCodes(bits, n);
  const signs = new Uint8Array((n + 7) >>> 3); // at most one bit a code; cut to the bits used below
  const w: SignWriter = { acc: 0, k: 0, byte: 0 };
  splitFrom(codes, 0, mid, distances, signs, w);
  return finishSplit(distances, signs, w);
}

/** The sign bytes being written: the bits of the byte being filled (`k` of them, in `acc`), and its index. */
interface SignWriter {
  acc: number;
  k: number;
  byte: number;
}

/** Codes from `from` on, one at a time: their distances, and their signs on from `w`. */
function splitFrom(codes: CodeArray, from: number, mid: number, distances: CodeArray, signs: Uint8Array, w: SignWriter): void {
  let { acc, k, byte } = w;
  for (let i = from, n = codes.length; i < n; i++) {
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
  w.acc = acc;
  w.k = k;
  w.byte = byte;
}

/** The split, with the last sign byte flushed and the sign bytes cut to those used. */
function finishSplit(distances: CodeArray, signs: Uint8Array, w: SignWriter): SignSplit {
  if (w.k) signs[w.byte++] = w.acc;
  return { distances, signs: signs.subarray(0, w.byte) };
}

/**
 * The codes again from distances and signs; undefined when they do not fit together (a distance beyond the
 * grid, or too few or too many sign bytes): the caller names the entry.
 */
export function joinSigns(distances: CodeArray, signs: Uint8Array, bits: number): CodeArray | undefined {
  if (bits === 8 && distances instanceof Uint8Array) return joinSigns8(distances, signs);
  const mid = bits <= 30 ? 1 << (bits - 1) : 2 ** (bits - 1); // a small integer (splitSigns)
  const out = distances; // in place: the distances are the caller's own, freshly decoded
  const r: SignReader = { cur: signs.length > 0 ? signs[0] : 0, byte: 0, left: 8, bad: 0 };
  joinFrom(out, 0, mid, signs, r);
  return signsFit(r, signs.length) ? out : undefined;
}

/** The sign bytes being read: the byte (shifted as its bits are used), its index, the bits left in it; a misfit seen. */
interface SignReader {
  cur: number;
  byte: number;
  left: number;
  bad: number;
}

/** Codes from `from` on, one at a time, from their distances (in place) and the signs on from `r`. */
function joinFrom(out: CodeArray, from: number, mid: number, signs: Uint8Array, r: SignReader): void {
  const count = signs.length;
  let { cur, byte, left, bad } = r;
  for (let i = from, n = out.length; i < n; i++) {
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
  r.cur = cur;
  r.byte = byte;
  r.left = left;
  r.bad = bad;
}

/** Whether the distances fitted the grid and used the sign bytes exactly (every byte touched, none more). */
function signsFit(r: SignReader, count: number): boolean {
  return !r.bad && r.byte + (r.left < 8 ? 1 : 0) === count;
}

/*
 * 8-bit codes four at a time (issue 16: the split took 3.3 ns a code on the encoder's default path, the join as
 * much on the decoder's). A 32-bit word holds four codes c, little-endian; per byte, b = 1 where c < 128 (below
 * the middle). The distance |c − 128| is c & 0x7f above the middle and 128 − c = (~c & 0x7f) + 1 below it; the
 * + 1 cannot carry into the next byte (at most 0x80). A byte's sign is written only where its distance is not 0:
 * the four b bits and the four non-zero bits gathered into a nibble each (one multiply: bytes' low bits at 0, 8,
 * 16, 24 land on 24–27), and a 256-entry table keeps the b bits of the non-zero ones, in order (`PACKED`), with
 * their count (`COUNT`). The bytes are the generic loop's to the bit (test/sign.test.ts).
 */

/** Bytes' low bits (positions 0, 8, 16, 24) gathered into bits 24–27: no two partial products meet or carry. */
const GATHER = 0x01020408;
const LOW = 0x01010101;
const SEVEN = 0x7f7f7f7f;
const HIGH = 0x80808080;

/** For (b nibble | non-zero nibble << 4): the b bits of the non-zero bytes, packed from bit 0. */
const PACKED = new Uint8Array(256);
/** For a non-zero nibble: how many of its bytes carry a sign. */
const COUNT = new Uint8Array(16);
/** For a nibble: each of its bits at the low bit of its byte. */
const SPREAD = new Uint32Array(16);
for (let nz = 0; nz < 16; nz++) {
  let count = 0;
  for (let j = 0; j < 4; j++) count += (nz >> j) & 1;
  COUNT[nz] = count;
  let spread = 0;
  for (let j = 0; j < 4; j++) spread |= ((nz >> j) & 1) << (8 * j);
  SPREAD[nz] = spread;
  for (let b = 0; b < 16; b++) {
    let packed = 0;
    let k = 0;
    for (let j = 0; j < 4; j++)
      if ((nz >> j) & 1) {
        packed |= ((b >> j) & 1) << k;
        k++;
      }
    PACKED[b | (nz << 4)] = packed;
  }
}

/**
 * Four bytes' words over `a` where it starts on a 4-byte boundary on a little-endian machine (the first code in a
 * word's lowest byte, as the sign bits' order needs); else none, and the one-at-a-time loop does it all.
 */
function words(a: Uint8Array): Uint32Array {
  return LITTLE_ENDIAN && a.byteOffset % 4 === 0 ? new Uint32Array(a.buffer, a.byteOffset, a.length >>> 2) : new Uint32Array(0);
}

/** The four bytes of a word of distances that are not 0, as a nibble (bit j: byte j). */
function nonZeroNibble(d: number): number {
  // a byte is non-zero where its low seven bits, plus 0x7f, or its own high bit reach bit 7
  return Math.imul(((((d & SEVEN) + SEVEN) | d) >>> 7) & LOW, GATHER) >>> 24;
}

function splitSigns8(codes: Uint8Array): SignSplit {
  const n = codes.length;
  const distances = new Uint8Array(n);
  const signs = new Uint8Array((n + 7) >>> 3);
  const w = words(codes);
  const out = new Uint32Array(distances.buffer, 0, w.length);
  let acc = 0; // (as SignWriter)
  let k = 0;
  let byte = 0;
  for (let i = 0; i < w.length; i++) {
    const c = w[i];
    const b = (~c >>> 7) & LOW;
    const d = (((c ^ Math.imul(b, 0xff)) & SEVEN) + b) | 0;
    out[i] = d;
    const n4 = nonZeroNibble(d);
    acc |= PACKED[(Math.imul(b, GATHER) >>> 24) | (n4 << 4)] << k;
    k += COUNT[n4];
    if (k >= 8) {
      signs[byte++] = acc & 0xff;
      acc >>>= 8;
      k -= 8;
    }
  }
  // the rest one code at a time (fewer than k < 8 bits are left in acc, as the generic loop keeps them)
  const rest: SignWriter = { acc, k, byte };
  splitFrom(codes, w.length << 2, 128, distances, signs, rest);
  return finishSplit(distances, signs, rest);
}

/** UNPACKED[packed b bits | non-zero nibble << 4]: the b nibble (the inverse of PACKED on its own entries). */
const UNPACKED = new Uint8Array(256);
for (let nz = 0; nz < 16; nz++) for (let b = 0; b < 16; b++) if ((b & ~nz) === 0) UNPACKED[PACKED[b | (nz << 4)] | (nz << 4)] = b;

function joinSigns8(out: Uint8Array, signs: Uint8Array): Uint8Array | undefined {
  const count = signs.length;
  const w = words(out);
  let bad = 0;
  let acc = 0; // bits read ahead from the sign bytes, the next one at bit 0
  let have = 0; // (never more than 7 between words)
  let byte = 0; // the next sign byte to read
  for (let i = 0; i < w.length; i++) {
    const d = w[i];
    const n4 = nonZeroNibble(d);
    const take = COUNT[n4];
    if (have < take) {
      // past the last sign byte the bits read 0, and the count check below fails
      acc |= (byte < count ? signs[byte] : 0) << have;
      byte++;
      have += 8;
    }
    const b4 = UNPACKED[(acc & ((1 << take) - 1)) | (n4 << 4)];
    acc >>>= take;
    have -= take;
    const b = SPREAD[b4];
    // above: 128 + d (d ≤ 127); below: 128 − d = (d − 1) ^ 0x7f (1 ≤ d ≤ 128); neither borrows nor carries
    w[i] = (((d - b) ^ Math.imul(b, 0x7f)) | Math.imul(b ^ LOW, 0x80)) >>> 0;
    // a distance of 128 or more is only right as exactly 128 below the middle (code 0): a high bit is wrong
    // beside any of the low seven or in a byte above the middle
    bad |= d & HIGH & (((d & SEVEN) + SEVEN) | Math.imul(b ^ LOW, 0x80));
  }
  // the rest one code at a time, from the bits not yet used: the byte they are in (`byte` − 1), or the next one
  const r: SignReader =
    have > 0 ? { cur: acc, byte: byte - 1, left: have, bad } : { cur: byte < count ? signs[byte] : 0, byte, left: 8, bad };
  joinFrom(out, w.length << 2, 128, signs, r);
  return signsFit(r, count) ? out : undefined;
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
