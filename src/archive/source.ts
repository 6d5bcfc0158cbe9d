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

/** `Content-Range: bytes start-end/total` of a 206 reply (total NaN where the server gives `*`). */
function contentRange(res: Response): { start: number; end: number; total: number } | undefined {
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/.exec(res.headers.get('content-range') ?? '');
  return m ? { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? NaN : Number(m[3]) } : undefined;
}

/**
 * A URL as a byte source: one suffix Range request for the archive's tail; if
 * the server answers 206, every later read is a Range request of its own, else
 * (200) the whole body has arrived and is read from memory. Every 206 reply is
 * checked against the range asked for (`Content-Range` and the body's length):
 * some servers answer a suffix range with the file's start (Vite's dev server
 * and `vite preview` answer `bytes=-65536` with `bytes 0-65536/…`), which was
 * read as the tail and reported as a damaged archive. The tail is then asked
 * for by its offsets, and where that is not honoured either, the whole file is
 * fetched once without Range.
 */
export async function urlSource(url: string, init: RequestInit = {}): Promise<ByteSource> {
  const get = async (range?: string): Promise<Response> => {
    const headers = { ...(init.headers as Record<string, string>), ...(range ? { Range: `bytes=${range}` } : {}) };
    try {
      return await fetch(url, { ...init, headers });
    } catch (e) {
      throw new IoError(`cannot fetch: ${(e as Error).message}`, { file: url }, e);
    }
  };
  const whole = async (res: Response, requests: number, fetched: number): Promise<ByteSource> => {
    const w = bytesSource(new Uint8Array(await res.arrayBuffer()), url);
    w.stats.requests = requests;
    w.stats.bytes = fetched + w.size;
    return w;
  };
  const first = await get(`-${MAX_EOCD_SEARCH}`);
  if (first.status === 200) return whole(first, 1, 0);
  if (first.status !== 206) throw new IoError(`cannot fetch: HTTP ${first.status}`, { file: url });
  const r = contentRange(first);
  const total = r?.total ?? NaN;
  if (!Number.isSafeInteger(total)) throw new IoError('Range reply without a total size', { file: url });
  let tail = new Uint8Array(await first.arrayBuffer());
  const stats = { requests: 1, bytes: tail.length, ranged: true };
  const isTail = (c: typeof r, body: Uint8Array): boolean =>
    c !== undefined && c.end === total - 1 && body.length === c.end - c.start + 1;
  if (!isTail(r, tail)) {
    // not the tail asked for: ask for it by its offsets
    const from = Math.max(0, total - MAX_EOCD_SEARCH);
    const again = await get(`${from}-${total - 1}`);
    if (again.status === 200) return whole(again, 2, stats.bytes);
    tail = new Uint8Array(await again.arrayBuffer());
    stats.requests++;
    stats.bytes += tail.length;
    const c = contentRange(again);
    if (again.status !== 206 || !isTail(c, tail) || c!.start !== from) {
      // Range is not to be trusted on this server: the whole file, once
      const plain = await get();
      if (plain.status !== 200) throw new IoError(`cannot fetch: HTTP ${plain.status}`, { file: url });
      return whole(plain, stats.requests + 1, stats.bytes);
    }
  }
  const tailStart = total - tail.length;
  const read = async (offset: number, length: number): Promise<Uint8Array> => {
    if (offset < 0 || length < 0 || offset + length > total) throw truncated(offset, length, total, url);
    if (offset >= tailStart) return tail.subarray(offset - tailStart, offset - tailStart + length);
    if (length === 0) return new Uint8Array(0);
    // a read that runs into the tail fetches only what lies before it (a pack entry ending in the tail)
    if (offset + length > tailStart) {
      const head = await read(offset, tailStart - offset);
      const joined = new Uint8Array(length);
      joined.set(head);
      joined.set(tail.subarray(0, offset + length - tailStart), head.length);
      return joined;
    }
    const res = await get(`${offset}-${offset + length - 1}`);
    const body = new Uint8Array(await res.arrayBuffer());
    stats.requests++;
    stats.bytes += body.length;
    const c = contentRange(res);
    if (res.status !== 206 || body.length !== length || (c !== undefined && c.start !== offset))
      throw new IoError(
        `Range ${offset}+${length} answered ${res.status} with ${body.length} bytes${c ? ` (bytes ${c.start}-${c.end})` : ''}`,
        { file: url },
      );
    return body;
  };
  return { size: total, stats, name: url, read };
}
