/**
 * The platform seam of the decoder: all that Node and the browser do differently to read an archive.
 * Node: node:crypto, node:zlib and the codec registry (archive/node.ts); the browser: Web Crypto,
 * DecompressionStream and its own image/video decoders (browser/backend.ts).
 */

import type { CodeDecoder } from './decode.js';

export interface DecodeBackend {
  /** Lower-case hex sha256 of the bytes. */
  sha256(data: Uint8Array): Promise<string>;
  /** Raw DEFLATE data inflated; `size` is what the ZIP directory records (a bound on the output). */
  inflateRaw(data: Uint8Array, size: number): Promise<Uint8Array>;
  /** A brotli stream of exactly `size` bytes (a compressed pack member, format version 4); at most `size` are made. */
  unbrotli(data: Uint8Array, size: number): Promise<Uint8Array>;
  /** Codes of one media entry. */
  decodeCodes: CodeDecoder;
}
