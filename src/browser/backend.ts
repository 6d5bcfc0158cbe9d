/**
 * The browser's side of the platform seam (archive/backend.ts): Web Crypto for sha256, the
 * DecompressionStream for DEFLATE (stopped as soon as it passes the size the directory records), the brotli
 * package's decoder for compressed pack members, and the browser's codec decoders (decoders.ts). No Node module is reached from here.
 */

import type { DecodeBackend } from '../archive/backend.js';
import { CorruptArchiveError } from '../errors.js';
import { concatBytes } from '../io/bytes.js';
import { brotliBytes, decodeCodesBrowser } from './decoders.js';

async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function inflateRaw(data: Uint8Array, size: number): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    // a deflate bomb is stopped at the recorded size, not after it has filled the memory
    if (total > size) {
      await reader.cancel();
      throw new CorruptArchiveError(`inflates past its recorded ${size} bytes`);
    }
    parts.push(value);
  }
  return concatBytes(parts);
}

/** Chromium has no brotli DecompressionStream: the brotli package's JavaScript decoder. */
async function unbrotli(data: Uint8Array, size: number): Promise<Uint8Array> {
  return brotliBytes(data, size, 'brotli member');
}

export const browserBackend: DecodeBackend = { sha256, inflateRaw, unbrotli, decodeCodes: decodeCodesBrowser };
