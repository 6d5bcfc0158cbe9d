import { createRequire } from 'node:module';
import { CodecError } from '../../errors.js';
import { LITTLE_ENDIAN } from '../../formats/model.js';
import { allocCodes, type CodeArray } from '../../quantize/uniform.js';
import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { SIGN_SPLIT_BITS, joinFrames, joinSigns, signFrames, splitSigns } from './sign.js';

// @mongodb-js/zstd 1.2.2's JS wrapper drops the level argument; its native binding takes it.
const zstd = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress(data: Buffer, level: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
};

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

async function compress(buf: Buffer, level: number, codec: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await zstd.compress(buf, level));
  } catch (e) {
    throw new CodecError(`${codec} encode failed: ${(e as Error).message}`, {}, e);
  }
}

async function decompress(bytes: Uint8Array, codec: string): Promise<Buffer> {
  try {
    // a view of the entry's bytes (Buffer.from of a Uint8Array would copy them)
    return await zstd.decompress(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new CodecError(`${codec} decode failed: ${(e as Error).message}`, {}, e);
  }
}

/**
 * Not a medium: the codes' little-endian bytes through zstd (level = effort, default 19). It is the
 * floor of the codec sets (`auto`, `smallest`): no tensor is ever stored larger than its raw codes + zstd
 * would be; they pick it only where it is smaller than every image codec.
 */
export const rawZstd: Codec = {
  ...CODEC_META.zstd,
  encode: (plane, o) => compress(codeBytes(plane.data, plane.bits), o.effort ?? 19, 'zstd'),
  async decode(bytes, expected) {
    const buf = await decompress(bytes, 'zstd');
    return codesFrom(buf, expected.bits, expected.width * expected.height, 'zstd entry');
  },
};

/**
 * Raw codes split into distances from the middle code and signs (raw/sign.ts), each through zstd: the
 * codec sets try it beside plain zstd and keep the smaller (format version 3).
 */
export const rawZstdSign: Codec = {
  ...CODEC_META['zstd-sign'],
  async encode(plane, o) {
    if (!SIGN_SPLIT_BITS.includes(plane.bits)) throw new CodecError(`zstd-sign cannot carry ${plane.bits}-bit codes`);
    const { distances, signs } = splitSigns(plane.data, plane.bits);
    const level = o.effort ?? 19;
    const first = await compress(codeBytes(distances, plane.bits), level, 'zstd-sign');
    const second = await compress(Buffer.from(signs.buffer, signs.byteOffset, signs.byteLength), level, 'zstd-sign');
    return joinFrames(first, second);
  },
  async decode(bytes, expected) {
    const frames = signFrames(bytes);
    if (!frames) throw new CodecError('zstd-sign entry: its length prefix does not fit the entry');
    const n = expected.width * expected.height;
    const distances = codesFrom(await decompress(frames[0], 'zstd-sign'), expected.bits, n, 'zstd-sign distances');
    const signs = await decompress(frames[1], 'zstd-sign');
    const codes = joinSigns(distances, signs, expected.bits);
    if (!codes) throw new CodecError('zstd-sign entry: its signs do not fit its distances');
    return codes;
  },
};
