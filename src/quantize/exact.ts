/**
 * The exact side entry: weights stored exactly (non-finite ones, outliers,
 * weights beyond a step grid) as u32 count, u32 index deltas (ascending
 * indices), f32 values; little-endian. Shared by the Node and browser decoders.
 */
import type { NonFiniteSide } from './uniform.js';

export function encodeExactValues(side: NonFiniteSide): Uint8Array {
  const n = side.indices.length;
  const out = new Uint8Array(4 + n * 8);
  const view = new DataView(out.buffer);
  view.setUint32(0, n, true);
  side.indices.forEach((v, i) => view.setUint32(4 + i * 4, i === 0 ? v : v - side.indices[i - 1], true));
  side.values.forEach((v, i) => view.setFloat32(4 + n * 4 + i * 4, v, true));
  return out;
}

/** Parses and checks the entry for a tensor of `size` elements; `fail` raises the caller's error type. */
export function decodeExactValues(data: Uint8Array, size: number, fail: (message: string) => never): NonFiniteSide {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.length < 4) fail('exact side values truncated');
  const count = view.getUint32(0, true);
  if (data.length !== 4 + count * 8) fail('exact side values have the wrong size');
  const indices = new Uint32Array(count);
  const values = new Float32Array(count);
  let index = 0;
  for (let i = 0; i < count; i++) {
    index += view.getUint32(4 + i * 4, true);
    indices[i] = index;
    if (index >= size || (i > 0 && index === indices[i - 1])) fail('exact side value index outside the tensor or repeated');
    values[i] = view.getFloat32(4 + count * 4 + i * 4, true);
  }
  return { indices, values };
}
