/**
 * The URL byte source (archive/source.ts) against servers that answer Range requests in different ways: right,
 * not at all, with the file's start for a suffix range (Vite's dev server and `vite preview`), and wrongly for
 * every range. The archive must decode to the same tensors in each case, reading no more than it must.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compressModel, decodeAllTensors, decodeArchiveSource, nodeBackend, urlSource, Archive } from '../src/index.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const SILERO = join(import.meta.dirname, '../models/silero_vad_v4.onnx');
type Mode = 'right' | 'none' | 'suffix-from-start' | 'all-wrong';

let server: Server;
let base = '';
let body: Buffer;

/** Answers `/<mode>` by that mode's rules. */
function answer(req: IncomingMessage, res: ServerResponse): void {
  const mode = (req.url ?? '').slice(1) as Mode;
  const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
  const size = body.length;
  if (!range || mode === 'none') {
    res.writeHead(200, { 'content-length': size });
    res.end(body);
    return;
  }
  let [start, end] =
    range[1] === '' ? [size - Number(range[2]), size - 1] : [Number(range[1]), range[2] ? Number(range[2]) : size - 1];
  start = Math.max(0, start);
  end = Math.min(size - 1, end);
  // Vite: a suffix range answered from the file's start, as many bytes as asked (+1)
  if (mode === 'suffix-from-start' && range[1] === '') [start, end] = [0, Math.min(size - 1, Number(range[2]))];
  // every range answered from the start
  if (mode === 'all-wrong') [start, end] = [0, Math.min(size - 1, end - start)];
  res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
  res.end(body.subarray(start, end + 1));
}

beforeAll(async () => {
  // over the 64 KiB tail read, in several entries (PNG planes): a decode needs reads outside the tail
  await compressModel(SILERO, join(dir, 'm.nnm'), { codec: 'png', check: false });
  body = readFileSync(join(dir, 'm.nnm'));
  server = createServer(answer);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('an archive read over HTTP', () => {
  it('decodes to the same tensors whatever the server does with Range, and says how it read', async () => {
    const archive = new Archive(join(dir, 'm.nnm'));
    const want = await decodeAllTensors(archive);
    archive.close();
    const read = async (mode: Mode) => {
      const source = await urlSource(`${base}/${mode}`);
      const got = await decodeArchiveSource(source, nodeBackend);
      expect([...got.tensors.keys()].sort(), mode).toEqual([...want.keys()].sort());
      for (const [k, v] of want) expect(got.tensors.get(k), `${mode}: ${k}`).toEqual(v);
      return source.stats;
    };
    const right = await read('right');
    expect(right.ranged).toBe(true);
    // never more than the file: an entry that runs into the tail already read fetches only what lies before it
    expect(right.bytes).toBeLessThanOrEqual(body.length);
    expect(await read('none')).toEqual({ requests: 1, bytes: body.length, ranged: false });
    // the suffix answered from the start (was: "truncated or damaged … without its end-of-central-directory
    // record"): the tail asked for by offsets, then Range reads as usual
    expect(body.length).toBeGreaterThan(2 * 65536);
    const vite = await read('suffix-from-start');
    expect(vite.ranged).toBe(true);
    expect(vite.requests).toBeGreaterThanOrEqual(2);
    // no range honoured: the whole file once, after the two tail attempts
    const wrong = await read('all-wrong');
    expect(wrong).toMatchObject({ requests: 3, ranged: false });
  });
});
