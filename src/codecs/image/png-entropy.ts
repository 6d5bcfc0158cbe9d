/**
 * 8-bit grey PNG whose deflate stream is entropy coding only: the rows unfiltered (filter type None), deflated
 * with zlib's Huffman-only strategy by node's zlib (run-length matches, `Z_RLE`, measured within 0.1 % on
 * noise-like codes and never smaller on the models measured: not used).
 * Any PNG reader decodes it (libvips, browsers): it is a PNG like any other, only its encoder searches no
 * matches.
 *
 * Why: weight codes are noise-like. zlib's default strategy (libvips' PNG) looks for repeats that are not
 * there, and the short matches it finds cost more than the literals they replace: on a 3072 × 1024 plane of
 * Gaussian codes at an order-0 entropy of 3.38 bits/code, libvips' PNG at level 9 wrote 3.94 bits/code in
 * 0.32 s, Huffman-only deflate 3.44 in 0.07 s (and 2.33 against 2.68 at an entropy of 2.25, 0.06 s against
 * 1.26 s). Structure a histogram misses (runs, repeats) is what the raw zstd floor of the codec sets is for.
 */

import { once } from 'node:events';
import { constants, crc32, createDeflate } from 'node:zlib';
import { CodecError } from '../../errors.js';
import type { CodePlane } from '../types.js';

const SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/** Bytes of unfiltered rows handed to zlib at a time (the plane is never copied whole). */
const CHUNK_BYTES = 2 ** 20;

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** The zlib stream of the plane's rows, each behind its filter byte 0 (None). */
async function deflateRows(plane: CodePlane): Promise<Buffer> {
  const { width, height } = plane;
  const data = plane.data as Uint8Array;
  const z = createDeflate({ level: 9, memLevel: 9, strategy: constants.Z_HUFFMAN_ONLY });
  const parts: Buffer[] = [];
  z.on('data', (b: Buffer) => parts.push(b));
  const ended = once(z, 'end');
  // an error while waiting on 'drain' rejects that wait (thrown below); this one must not go unhandled
  ended.catch(() => undefined);
  try {
    const stride = width + 1;
    const rows = Math.max(1, Math.floor(CHUNK_BYTES / stride));
    for (let y = 0; y < height; y += rows) {
      const n = Math.min(rows, height - y);
      const buf = Buffer.allocUnsafe(n * stride);
      for (let r = 0; r < n; r++) {
        buf[r * stride] = 0;
        buf.set(data.subarray((y + r) * width, (y + r + 1) * width), r * stride + 1);
      }
      if (!z.write(buf)) await once(z, 'drain');
    }
    z.end();
    await ended;
    return Buffer.concat(parts);
  } finally {
    z.destroy();
  }
}

/** A PNG of one 8-bit grey plane, rows unfiltered, deflated Huffman-only. */
export async function entropyPng(plane: CodePlane): Promise<Uint8Array> {
  if (plane.bits !== 8) throw new CodecError(`the entropy-coded PNG carries 8-bit codes, not ${plane.bits}`);
  // (PNG has no empty image: IHDR's width and height are at least 1)
  if (!(plane.width >= 1 && plane.height >= 1))
    throw new CodecError(`png: a ${plane.width}×${plane.height} plane is empty; PNG needs at least one pixel`);
  if (plane.data.length !== plane.width * plane.height)
    throw new CodecError(`png: ${plane.data.length} codes for a ${plane.width}×${plane.height} plane`);
  const header = Buffer.alloc(13);
  header.writeUInt32BE(plane.width, 0);
  header.writeUInt32BE(plane.height, 4);
  header[8] = 8; // bit depth
  header[9] = 0; // grey; compression 0 (deflate), filter method 0, no interlace
  let idat: Buffer;
  try {
    idat = await deflateRows(plane);
  } catch (e) {
    throw new CodecError(`png encode failed: ${(e as Error).message}`, {}, e);
  }
  const out = Buffer.concat([SIGNATURE, chunk('IHDR', header), chunk('IDAT', idat), chunk('IEND', new Uint8Array(0))]);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
