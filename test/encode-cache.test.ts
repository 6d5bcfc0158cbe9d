import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EncodeCache } from '../src/pipeline/write.js';
import type { EncodedTensor, EncodeUnit } from '../src/pipeline/stages.js';
import { tempDir } from './helpers/tmp.js';

/** What the cache reads of a unit: its plan's index, settings and codecs, and its slice. */
const unit = (index: number): EncodeUnit => ({ plan: { index, settings: { bits: 8 }, codecs: [] } }) as unknown as EncodeUnit;

const encoded = (seed: number, sizes: number[]): EncodedTensor =>
  ({
    entries: sizes.map((n, k) => [`t${seed}.${k}.png`, Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255)]),
    coded: { seed },
    sums: { n: seed },
  }) as unknown as EncodedTensor;

describe('the encode cache of --target-bpw attempts', () => {
  const dir = tempDir();
  it('keeps encodings in memory up to its limit and spills the rest to an unlinked file, read back byte for byte', async () => {
    const cache = new EncodeCache(3000, dir);
    let made = 0;
    const encodeOf = (seed: number, sizes: number[]) => async (): Promise<EncodedTensor> => {
      made++;
      return encoded(seed, sizes);
    };
    // the first fits in memory, the next two are spilled (one of two entries, one of 70 kB)
    const first = await cache.encode(unit(0), encodeOf(0, [2000]));
    const second = await cache.encode(unit(1), encodeOf(1, [1500, 700]));
    const third = await cache.encode(unit(2), encodeOf(2, [70_000]));
    expect(made).toBe(3);
    // the spill file is gone from the folder already (unlinked while open)
    expect(readdirSync(dir)).toEqual([]);
    for (const [k, was] of [first, second, third].entries()) {
      const again = await cache.encode(unit(k), encodeOf(k, [1]));
      expect(again.entries.map(([n]) => n)).toEqual(was.entries.map(([n]) => n));
      again.entries.forEach(([, d], e) => expect(Buffer.compare(Buffer.from(d), Buffer.from(was.entries[e][1]))).toBe(0));
      expect(again.coded).toEqual(was.coded);
      expect(again.sums).toEqual(was.sums);
    }
    expect(made).toBe(3);
    expect(cache.hits).toBe(3);
    // closed: what was spilled is encoded again, what was in memory is still there
    cache.close();
    await cache.encode(unit(0), encodeOf(0, [1]));
    expect(made).toBe(3);
    await cache.encode(unit(2), encodeOf(2, [5]));
    expect(made).toBe(4);
  });

  it('spills at most its file limit, and nothing more once closed', async () => {
    const cache = new EncodeCache(0, dir, 2500);
    let made = 0;
    const encode = (seed: number) => async (): Promise<EncodedTensor> => {
      made++;
      return encoded(seed, [1000]);
    };
    for (let k = 0; k < 4; k++) await cache.encode(unit(k), encode(k));
    // two fit the 2500 bytes of file: those two are reused, the others made again
    for (let k = 0; k < 4; k++) await cache.encode(unit(k), encode(k));
    expect(made).toBe(6);
    expect(cache.hits).toBe(2);
    cache.close();
    await cache.encode(unit(9), encode(9));
    await cache.encode(unit(9), encode(9));
    expect(made).toBe(8);
  });

  it('without a folder to spill to (or one it cannot write), encodings past the limit are simply made again', async () => {
    for (const folder of [undefined, '/nonexistent/nnmedia-cache']) {
      const cache = new EncodeCache(10, folder);
      let made = 0;
      const encode = async (): Promise<EncodedTensor> => {
        made++;
        return encoded(5, [100]);
      };
      await cache.encode(unit(0), encode);
      await cache.encode(unit(0), encode);
      expect(made).toBe(2);
      cache.close();
      if (folder) expect(existsSync(folder)).toBe(false);
    }
  });
});
