/**
 * Kept tensors (biases, norm scales, anything not laid out as media) as
 * float16 instead of float32 in the skeleton: half the bytes, and a cast that
 * every inference runtime's fp16 mode makes. Only where the cast is safe:
 * every value finite and ≤ 65504, and each value's error at most 2^−11 of
 * itself (float16's normal range) or of the tensor's RMS (tiny values, which
 * float16 holds as subnormals). Otherwise the tensor stays exact.
 */

import { decodeFloats, encodeFloats } from '../formats/model.js';

/** The entry holding every half-stored tensor, one after another (little-endian float16). */
export const HALF_ENTRY = 'model/half.bin';

const TOLERANCE = 2 ** -11;
const MAX_HALF = 65504;

/** float16 bytes of the values, or undefined where the cast would be unsafe (see above). */
export function toHalfIfSafe(values: Float32Array): Uint8Array | undefined {
  let sq = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (!(a <= MAX_HALF)) return undefined; // also NaN
    sq += a * a;
  }
  const floor = TOLERANCE * Math.sqrt(sq / Math.max(1, values.length));
  const bytes = encodeFloats(values, 'float16');
  const back = decodeFloats(bytes, 'float16');
  for (let i = 0; i < values.length; i++)
    if (Math.abs(back[i] - values[i]) > Math.max(TOLERANCE * Math.abs(values[i]), floor)) return undefined;
  return bytes;
}

/** `count` float16 values at element `offset` of the half entry, as float32. */
export function fromHalf(entry: Uint8Array, offset: number, count: number): Float32Array {
  return decodeFloats(entry.subarray(offset * 2, (offset + count) * 2), 'float16');
}
