/**
 * Raw codes through a general-purpose compressor (zstd, brotli), shared by those codecs: the codes' own
 * little-endian bytes, plain or split into distances from the middle code and signs (sign.ts).
 */

import { CodecError } from '../../errors.js';
import { LITTLE_ENDIAN } from '../../formats/model.js';
import { allocCodes, type CodeArray } from '../../quantize/uniform.js';
import type { Codec, CodecMeta } from '../types.js';
import { SIGN_SPLIT_BITS, joinFrames, joinSigns, signFrames, splitSigns } from './sign.js';

/** A compressor: bytes at a level (the codec's effort), and back to at most `size` bytes (a bound where it takes one). */
export interface ByteCoder {
  compress(data: Uint8Array, level: number, codec: string): Promise<Uint8Array>;
  decompress(data: Uint8Array, size: number, codec: string): Promise<Buffer>;
}

/** The codes' little-endian bytes (a view where they already are). */
export function codeBytes(data: CodeArray, bits: number): Buffer {
  const width = bits === 8 ? 1 : bits === 16 ? 2 : 4;
  // the codes' own bytes are their little-endian bytes: a view, not a walk
  if (LITTLE_ENDIAN && data.BYTES_PER_ELEMENT === width) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const buf = Buffer.alloc(data.length * width);
  for (let i = 0; i < data.length; i++) buf.writeUIntLE(data[i], i * width, width);
  return buf;
}

/** n codes of `bits` bits from their little-endian bytes, or a CodecError naming what `what` held. */
export function codesFrom(buf: Buffer, bits: number, n: number, what: string): CodeArray {
  const width = bits === 8 ? 1 : bits === 16 ? 2 : 4;
  if (buf.length !== n * width) throw new CodecError(`${what} holds ${buf.length} bytes, expected ${n * width}`);
  // the decompressed bytes are this call's own: 8-bit codes (and aligned 16/32-bit ones) are a view of them
  // instead of a copy into fresh memory
  if (LITTLE_ENDIAN && buf.byteOffset % width === 0) {
    if (bits === 8) return new Uint8Array(buf.buffer, buf.byteOffset, n);
    if (bits === 16) return new Uint16Array(buf.buffer, buf.byteOffset, n);
    if (bits === 24 || bits === 32) return new Uint32Array(buf.buffer, buf.byteOffset, n);
  }
  const out = allocCodes(bits, n);
  if (LITTLE_ENDIAN && out.BYTES_PER_ELEMENT === width) new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(buf);
  else for (let i = 0; i < n; i++) out[i] = buf.readUIntLE(i * width, width);
  return out;
}

/** The codes' little-endian bytes through the compressor (level = effort, else `defaultLevel`). */
export function rawCodec(meta: CodecMeta, coder: ByteCoder, defaultLevel: number): Codec {
  const width = (bits: number): number => (bits === 8 ? 1 : bits === 16 ? 2 : 4);
  return {
    ...meta,
    encode: (plane, o) => coder.compress(codeBytes(plane.data, plane.bits), o.effort ?? defaultLevel, meta.name),
    async decode(bytes, expected) {
      const n = expected.width * expected.height;
      const buf = await coder.decompress(bytes, n * width(expected.bits), meta.name);
      return codesFrom(buf, expected.bits, n, `${meta.name} entry`);
    },
  };
}

/**
 * Distances from the middle code and signs, each through the compressor: a u32 LE length, then the two
 * streams (sign.ts).
 */
export function signCodec(meta: CodecMeta, coder: ByteCoder, defaultLevel: number): Codec {
  const name = meta.name;
  return {
    ...meta,
    async encode(plane, o) {
      if (!SIGN_SPLIT_BITS.includes(plane.bits)) throw new CodecError(`${name} cannot carry ${plane.bits}-bit codes`);
      const { distances, signs } = splitSigns(plane.data, plane.bits);
      const level = o.effort ?? defaultLevel;
      const first = await coder.compress(codeBytes(distances, plane.bits), level, name);
      const second = await coder.compress(signs, level, name);
      return joinFrames(first, second);
    },
    async decode(bytes, expected) {
      const frames = signFrames(bytes);
      if (!frames) throw new CodecError(`${name} entry: its length prefix does not fit the entry`);
      const n = expected.width * expected.height;
      const width = expected.bits === 8 ? 1 : expected.bits === 16 ? 2 : 4;
      const distances = codesFrom(await coder.decompress(frames[0], n * width, name), expected.bits, n, `${name} distances`);
      // at most one sign bit a code
      const signs = await coder.decompress(frames[1], (n + 7) >>> 3, name);
      const codes = joinSigns(distances, signs, expected.bits);
      if (!codes) throw new CodecError(`${name} entry: its signs do not fit its distances`);
      return codes;
    },
  };
}
