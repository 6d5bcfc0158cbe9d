/**
 * Random access to an archive's bytes for the isomorphic reader: bytes in memory, or a URL read with HTTP
 * Range requests where the server allows them (its directory first, then only the entries wanted). Uses
 * only `fetch`, so it runs in browsers and in Node alike.
 */

import { CorruptArchiveError, IoError } from '../errors.js';
import { MAX_EOCD_SEARCH } from './zip-directory.js';

/** What reading the archive cost: requests and bytes fetched, and whether the server honoured Range requests. */
export interface FetchStats {
  requests: number;
  bytes: number;
  ranged: boolean;
}

/** Random access to the archive's bytes. */
export interface ByteSource {
  readonly size: number;
  readonly stats: FetchStats;
  /** A name for error messages (the URL), if it has one. */
  readonly name?: string;
  read(offset: number, length: number): Promise<Uint8Array>;
}

function truncated(offset: number, length: number, size: number, name?: string): CorruptArchiveError {
  return new CorruptArchiveError(`truncated: needs bytes ${offset}…${offset + length} of ${size}`, { file: name });
}

export function bytesSource(buf: Uint8Array, name?: string): ByteSource {
  const stats = { requests: 0, bytes: 0, ranged: false };
  return {
    size: buf.length,
    stats,
    name,
    read: async (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > buf.length) throw truncated(offset, length, buf.length, name);
      return buf.subarray(offset, offset + length);
    },
  };
}

/**
 * A URL as a byte source: one suffix Range request for the archive's tail; if
 * the server answers 206, every later read is a Range request of its own, else
 * (200) the whole body has arrived and is read from memory.
 */
export async function urlSource(url: string, init: RequestInit = {}): Promise<ByteSource> {
  const get = async (range: string): Promise<Response> => {
    try {
      return await fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), Range: `bytes=${range}` } });
    } catch (e) {
      throw new IoError(`cannot fetch: ${(e as Error).message}`, { file: url }, e);
    }
  };
  const first = await get(`-${MAX_EOCD_SEARCH}`);
  if (first.status === 200) {
    const whole = bytesSource(new Uint8Array(await first.arrayBuffer()), url);
    whole.stats.requests = 1;
    whole.stats.bytes = whole.size;
    return whole;
  }
  if (first.status !== 206) throw new IoError(`cannot fetch: HTTP ${first.status}`, { file: url });
  const total = Number(/\/(\d+)\s*$/.exec(first.headers.get('content-range') ?? '')?.[1]);
  if (!Number.isSafeInteger(total)) throw new IoError('Range reply without a total size', { file: url });
  const tail = new Uint8Array(await first.arrayBuffer());
  const tailStart = total - tail.length;
  const stats = { requests: 1, bytes: tail.length, ranged: true };
  return {
    size: total,
    stats,
    name: url,
    read: async (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > total) throw truncated(offset, length, total, url);
      if (offset >= tailStart) return tail.subarray(offset - tailStart, offset - tailStart + length);
      if (length === 0) return new Uint8Array(0);
      const res = await get(`${offset}-${offset + length - 1}`);
      const body = new Uint8Array(await res.arrayBuffer());
      stats.requests++;
      stats.bytes += body.length;
      if (res.status !== 206 || body.length !== length)
        throw new IoError(`Range ${offset}+${length} answered ${res.status} with ${body.length} bytes`, { file: url });
      return body;
    },
  };
}
