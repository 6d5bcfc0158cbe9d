/**
 * 8-bit grey PNG whose rows are unfiltered (filter type None) and deflated by node's zlib, entropy coding only
 * (zlib's Huffman-only strategy) unless a match search pays (below). Any PNG reader decodes it (libvips,
 * browsers): it is a PNG like any other.
 *
 * Why entropy coding: weight codes are noise-like. zlib's default strategy (libvips' PNG) looks for repeats that
 * are not there, and the short matches it finds cost more than the literals they replace: on a 3072 × 1024 plane
 * of Gaussian codes at an order-0 entropy of 3.38 bits/code, libvips' PNG at level 9 wrote 3.94 bits/code in
 * 0.32 s, Huffman-only deflate 3.44 in 0.07 s (and 2.33 against 2.68 at an entropy of 2.25, 0.06 s against
 * 1.26 s). Run-length matches (`Z_RLE`) measured within 0.1 % on noise-like codes: not used.
 *
 * Why a match search where it pays (`matches`, the default): some tensors have structure a histogram misses. A
 * Fourier basis (Silero VAD v4's STFT, 66k weights at 8-bit per-layer codes): 58.1 KB Huffman-only, 24.1 KB with
 * matches (zlib level 6), and the `--codec png` archive of Silero v4 was 16 % larger than libvips' PNG made it.
 * So a sample of the codes (the whole plane up to 256 KiB, else four strips of 64 KiB spread over it) is deflated
 * both ways, Huffman-only and at zlib level 1 (a quick match search, larger than Huffman-only on every
 * noise-like plane measured); only where level 1 is smaller on the sample does a level-6 search run over the
 * plane, and the smaller of it and the Huffman-only stream is kept. The codec sets (`auto`, `smallest`) turn it
 * off: zstd beside them finds that structure.
 */

import { once } from 'node:events';
import { constants, crc32, createDeflate, deflateRawSync, type ZlibOptions } from 'node:zlib';
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

/** zlib settings: entropy coding only, a fast match search, the default one. */
const HUFFMAN_ONLY = { level: 9, memLevel: 9, strategy: constants.Z_HUFFMAN_ONLY };
const QUICK_MATCHES = { level: 1, memLevel: 9 };
const MATCHES = { level: 6, memLevel: 9 };

/** Codes the quick match search looks at: all of a smaller plane, else `SAMPLE_STRIPS` strips spread over it. */
const SAMPLE_BYTES = 2 ** 18;
const SAMPLE_STRIPS = 4;

/** The plane's codes up to SAMPLE_BYTES, else SAMPLE_STRIPS strips of them spread over it (row filter bytes aside). */
function sampleCodes(plane: CodePlane): Uint8Array {
  const data = plane.data as Uint8Array;
  if (data.length <= SAMPLE_BYTES) return data;
  const strip = SAMPLE_BYTES / SAMPLE_STRIPS;
  const out = new Uint8Array(SAMPLE_BYTES);
  for (let k = 0; k < SAMPLE_STRIPS; k++) {
    const at = Math.floor((k * (data.length - strip)) / (SAMPLE_STRIPS - 1));
    out.set(data.subarray(at, at + strip), k * strip);
  }
  return out;
}

/** A quick match search finds repeats in the sample that pay for themselves (see the module comment). */
function matchesPay(plane: CodePlane): boolean {
  const sample = sampleCodes(plane);
  return deflateRawSync(sample, QUICK_MATCHES).length < deflateRawSync(sample, HUFFMAN_ONLY).length;
}

/** The zlib stream of the plane's rows, each behind its filter byte 0 (None). */
async function deflateRows(plane: CodePlane, settings: ZlibOptions): Promise<Buffer> {
  const { width, height } = plane;
  const data = plane.data as Uint8Array;
  const z = createDeflate(settings);
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

/**
 * A PNG of one 8-bit grey plane, rows unfiltered, deflated Huffman-only, or with matches where that is smaller
 * (`matches`, default true; see the module comment).
 */
export async function entropyPng(plane: CodePlane, options: { matches?: boolean } = {}): Promise<Uint8Array> {
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
    idat = await deflateRows(plane, HUFFMAN_ONLY);
    if (options.matches !== false && matchesPay(plane)) {
      const withMatches = await deflateRows(plane, MATCHES);
      if (withMatches.length < idat.length) idat = withMatches;
    }
  } catch (e) {
    throw new CodecError(`png encode failed: ${(e as Error).message}`, {}, e);
  }
  const out = Buffer.concat([SIGNATURE, chunk('IHDR', header), chunk('IDAT', idat), chunk('IEND', new Uint8Array(0))]);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}
