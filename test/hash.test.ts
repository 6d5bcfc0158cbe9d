/** The source hash read in reused buffers (io/atomic.ts sha256File). */

import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IoError } from '../src/errors.js';
import { sha256File } from '../src/io/atomic.js';
import { tempDir } from './helpers/tmp.js';

describe('sha256File', () => {
  it("is the file's sha256 at any size, across and at its buffers' edges", async () => {
    const dir = tempDir();
    for (const n of [0, 1, 2 ** 20 - 1, 2 ** 20, 2 ** 20 + 1, 5 * 2 ** 19 + 7]) {
      const bytes = new Uint8Array(n);
      for (let i = 0, x = n + 1; i < n; i++) bytes[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24;
      const file = join(dir, `f${n}.bin`);
      writeFileSync(file, bytes);
      expect(await sha256File(file)).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
  });

  it('names the file when it cannot be read, and stops when aborted', async () => {
    const dir = tempDir();
    await expect(sha256File(join(dir, 'missing.bin'))).rejects.toThrow(IoError);
    await expect(sha256File(join(dir, 'missing.bin'))).rejects.toThrow(/missing\.bin/);
    const file = join(dir, 'big.bin');
    writeFileSync(file, new Uint8Array(3 * 2 ** 20));
    await expect(sha256File(file, AbortSignal.abort())).rejects.toThrow(IoError);
  });
});
