import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { QueuedWriter } from '../src/io/writer.js';

const dir = mkdtempSync(join(tmpdir(), 'nnm-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('QueuedWriter: writes in order off the thread, bounded', () => {
  it('the file is the buffers in order; each is reported written; a small bound still writes everything', async () => {
    const file = join(dir, 'a.bin');
    const fd = openSync(file, 'w');
    const w = new QueuedWriter(fd, 1000);
    const parts = Array.from({ length: 40 }, (_, k) => Uint8Array.from({ length: 97 * (k + 1) }, (_, i) => (i * 7 + k) & 255));
    const written: number[] = [];
    for (const [k, p] of parts.entries()) await w.write(p, () => written.push(k));
    await w.flush();
    closeSync(fd);
    expect(written).toEqual(parts.map((_, k) => k));
    expect(w.bytes).toBe(parts.reduce((n, p) => n + p.length, 0));
    expect(Buffer.compare(readFileSync(file), Buffer.concat(parts))).toBe(0);
  });
  it('a failed write is thrown by flush (a descriptor closed underneath)', async () => {
    const fd = openSync(join(dir, 'b.bin'), 'w');
    closeSync(fd);
    const w = new QueuedWriter(fd);
    await w.write(new Uint8Array(10));
    await expect(w.flush()).rejects.toThrow(/EBADF/);
  });
});
