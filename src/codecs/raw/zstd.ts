import { createRequire } from 'node:module';
import { CodecError } from '../../errors.js';
import { LITTLE_ENDIAN } from '../../formats/model.js';
import { allocCodes } from '../../quantize/uniform.js';
import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';

// @mongodb-js/zstd 1.2.2's JS wrapper drops the level argument; its native binding takes it.
const zstd = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress(data: Buffer, level: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
};

/**
 * Not a medium: the codes' little-endian bytes through zstd (level = effort, default 19). It is the
 * floor of the codec sets (`auto`, `smallest`): no tensor is ever stored larger than its raw codes + zstd
 * would be; they pick it only where it is smaller than every image codec.
 */
export const rawZstd: Codec = {
  ...CODEC_META.zstd,
  async encode(plane, o) {
    const width = plane.bits === 8 ? 1 : plane.bits === 16 ? 2 : 4;
    let buf: Buffer;
    if (LITTLE_ENDIAN && plane.data.BYTES_PER_ELEMENT === width)
      // the codes' own bytes are their little-endian bytes: a view, not a walk
      buf = Buffer.from(plane.data.buffer, plane.data.byteOffset, plane.data.byteLength);
    else {
      buf = Buffer.alloc(plane.data.length * width);
      for (let i = 0; i < plane.data.length; i++) buf.writeUIntLE(plane.data[i], i * width, width);
    }
    try {
      return new Uint8Array(await zstd.compress(buf, o.effort ?? 19));
    } catch (e) {
      throw new CodecError(`zstd encode failed: ${(e as Error).message}`, {}, e);
    }
  },
  async decode(bytes, expected) {
    let buf: Buffer;
    try {
      // a view of the entry's bytes (Buffer.from of a Uint8Array would copy them)
      buf = await zstd.decompress(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (e) {
      throw new CodecError(`zstd decode failed: ${(e as Error).message}`, {}, e);
    }
    const width = expected.bits === 8 ? 1 : expected.bits === 16 ? 2 : 4;
    const n = expected.width * expected.height;
    if (buf.length !== n * width) throw new CodecError(`zstd entry holds ${buf.length} bytes, expected ${n * width}`);
    const out = allocCodes(expected.bits, n);
    if (LITTLE_ENDIAN && out.BYTES_PER_ELEMENT === width) new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(buf);
    else for (let i = 0; i < n; i++) out[i] = buf.readUIntLE(i * width, width);
    return out;
  },
};
