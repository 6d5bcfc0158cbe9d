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
import type { Codec } from '../types.js';
import { type ByteCoder, rawCodec, signCodec } from './coder.js';

const compressAsync = promisify(brotliCompress);
const decompressAsync = promisify(brotliDecompress);

/**
 * Brotli's parameters for `length` bytes at `quality`, for codes and the archive's side members alike: a window
 * no larger than the data (at least 2^16; the decoder's ring buffer is that large).
 */
export function brotliParams(length: number, quality: number): Record<number, number> {
  return {
    [constants.BROTLI_PARAM_QUALITY]: quality,
    [constants.BROTLI_PARAM_LGWIN]: Math.min(24, Math.max(16, Math.ceil(Math.log2(length + 1)))),
    [constants.BROTLI_PARAM_SIZE_HINT]: length,
  };
}

/** Node's brotli. */
const brotliCoder: ByteCoder = {
  async compress(buf, quality, codec) {
    try {
      return new Uint8Array(await compressAsync(buf, { params: brotliParams(buf.length, quality) }));
    } catch (e) {
      throw new CodecError(`${codec} encode failed: ${(e as Error).message}`, {}, e);
    }
  },
  // at most `size` bytes: a hostile stream cannot inflate past them
  async decompress(bytes, size, codec) {
    try {
      return await decompressAsync(bytes, { maxOutputLength: Math.max(1, size) });
    } catch (e) {
      throw new CodecError(`${codec} decode failed: ${(e as Error).message}`, {}, e);
    }
  },
};

/** The raw codes' little-endian bytes through brotli (effort = quality 0–11). */
export const rawBrotli: Codec = rawCodec(CODEC_META.brotli, brotliCoder, 11);

/** Distances from the middle code and signs, each through brotli: a u32 LE length, then the two streams. */
export const rawBrotliSign: Codec = signCodec(CODEC_META['brotli-sign'], brotliCoder, 11);
