import { createRequire } from 'node:module';
import { CodecError } from '../../errors.js';
import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { type ByteCoder, rawCodec, signCodec } from './coder.js';

// @mongodb-js/zstd 1.2.2's JS wrapper drops the level argument; its native binding takes it.
const zstd = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress(data: Buffer, level: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
};

/** zstd through the native binding (the frames state no content size: `size` is checked by the caller). */
const zstdCoder: ByteCoder = {
  async compress(data, level, codec) {
    try {
      return new Uint8Array(await zstd.compress(Buffer.from(data.buffer, data.byteOffset, data.byteLength), level));
    } catch (e) {
      throw new CodecError(`${codec} encode failed: ${(e as Error).message}`, {}, e);
    }
  },
  async decompress(bytes, _size, codec) {
    try {
      // a view of the entry's bytes (Buffer.from of a Uint8Array would copy them)
      return await zstd.decompress(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (e) {
      throw new CodecError(`${codec} decode failed: ${(e as Error).message}`, {}, e);
    }
  },
};

/**
 * Not a medium: the codes' little-endian bytes through zstd (level = effort, default 19). It is the
 * floor of the codec sets (`auto`, `smallest`): no tensor is ever stored larger than its raw codes + zstd
 * would be; they pick it only where it is smaller than every image codec.
 */
export const rawZstd: Codec = rawCodec(CODEC_META.zstd, zstdCoder, 19);

/**
 * Raw codes split into distances from the middle code and signs (raw/sign.ts), each through zstd: the
 * codec sets try it beside plain zstd and keep the smaller (format version 3).
 */
export const rawZstdSign: Codec = signCodec(CODEC_META['zstd-sign'], zstdCoder, 19);
