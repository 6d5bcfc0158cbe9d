/**
 * Raw codes through brotli (Node's zlib): plain, and split into distances and signs as `zstd-sign` is
 * (raw/sign.ts). Brotli's literal coding (context modelling, block splitting, cheaper Huffman tables) codes
 * small planes of weight codes 0.5–2 % smaller than zstd-19 (measured on Silero VAD v4 and v6, BlazeFace, two
 * wake-word models), so the codec sets try it on tensors small enough that its slower encoder costs little
 * (plan.ts). Format version 4.
 */

import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, constants } from 'node:zlib';
import { CodecError } from '../../errors.js';
import { CODEC_META } from '../meta.js';
import type { Codec, CodePlane } from '../types.js';
import { SIGN_SPLIT_BITS, joinFrames, joinSigns, signFrames, splitSigns } from './sign.js';
import { codeBytes, codesFrom } from './zstd.js';

const compressAsync = promisify(brotliCompress);
const decompressAsync = promisify(brotliDecompress);

async function compress(buf: Uint8Array, quality: number, codec: string): Promise<Uint8Array> {
  try {
    // a window no larger than the codes (at least 2^16): the decoder's ring buffer is that large
    const params = {
      [constants.BROTLI_PARAM_QUALITY]: quality,
      [constants.BROTLI_PARAM_LGWIN]: Math.min(24, Math.max(16, Math.ceil(Math.log2(buf.length + 1)))),
      [constants.BROTLI_PARAM_SIZE_HINT]: buf.length,
    };
    return new Uint8Array(await compressAsync(buf, { params }));
  } catch (e) {
    throw new CodecError(`${codec} encode failed: ${(e as Error).message}`, {}, e);
  }
}

/** Exactly `size` bytes out of a brotli stream (a hostile stream cannot inflate past them). */
async function decompress(bytes: Uint8Array, size: number, codec: string): Promise<Buffer> {
  let out: Buffer;
  try {
    out = await decompressAsync(bytes, { maxOutputLength: Math.max(1, size) });
  } catch (e) {
    throw new CodecError(`${codec} decode failed: ${(e as Error).message}`, {}, e);
  }
  return out;
}

const byteWidth = (bits: number): number => (bits === 8 ? 1 : bits === 16 ? 2 : 4);

/** The raw codes' little-endian bytes through brotli (effort = quality 0–11). */
export const rawBrotli: Codec = {
  ...CODEC_META.brotli,
  encode: (plane: CodePlane, o) => compress(codeBytes(plane.data, plane.bits), o.effort ?? 11, 'brotli'),
  async decode(bytes, expected) {
    const n = expected.width * expected.height;
    const buf = await decompress(bytes, n * byteWidth(expected.bits), 'brotli');
    return codesFrom(buf, expected.bits, n, 'brotli entry');
  },
};

/** Distances from the middle code and signs, each through brotli: a u32 LE length, then the two streams. */
export const rawBrotliSign: Codec = {
  ...CODEC_META['brotli-sign'],
  async encode(plane, o) {
    if (!SIGN_SPLIT_BITS.includes(plane.bits)) throw new CodecError(`brotli-sign cannot carry ${plane.bits}-bit codes`);
    const { distances, signs } = splitSigns(plane.data, plane.bits);
    const quality = o.effort ?? 11;
    const first = await compress(codeBytes(distances, plane.bits), quality, 'brotli-sign');
    const second = await compress(signs, quality, 'brotli-sign');
    return joinFrames(first, second);
  },
  async decode(bytes, expected) {
    const frames = signFrames(bytes);
    if (!frames) throw new CodecError('brotli-sign entry: its length prefix does not fit the entry');
    const n = expected.width * expected.height;
    const width = byteWidth(expected.bits);
    const distances = codesFrom(await decompress(frames[0], n * width, 'brotli-sign'), expected.bits, n, 'brotli-sign distances');
    // at most one sign bit a code
    const signs = await decompress(frames[1], (n + 7) >>> 3, 'brotli-sign');
    const codes = joinSigns(distances, signs, expected.bits);
    if (!codes) throw new CodecError('brotli-sign entry: its signs do not fit its distances');
    return codes;
  },
};
