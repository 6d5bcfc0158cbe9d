/**
 * Format version 4: per-channel steps in 20 bits (`step20`), the side entries of a small archive (ranges,
 * kept tensors, skeleton) as brotli members of its one pack, and manifest records without what the reader
 * restores.
 * Archives of versions 3 and earlier are still read.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  Archive,
  CorruptArchiveError,
  bytesSource,
  compressModel,
  decodeArchiveSource,
  decompressArchive,
  nodeBackend,
} from '../src/index.js';
import { HALF_ENTRY } from '../src/quantize/half.js';
import { browserBackend } from '../src/browser/backend.js';
import { brotliBytes } from '../src/browser/decoders.js';
import { RANGES_ENTRY, packMembers, type Manifest } from '../src/archive/manifest.js';
import { MIN_EXACT_STEP, exactStep, step20Channels, stepsFrom20, stepsTo20 } from '../src/quantize/step.js';
import { decodeAllTensors } from '../src/pipeline/decompress.js';
import { ZipReader } from '../src/archive/zip.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { rng } from './helpers/random.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const here = new URL('.', import.meta.url).pathname;

describe('step20: a step in the top 20 bits of its float32', () => {
  it('round-trips every step exactStep makes (8 and 16-bit codes, zero, the smallest step, odd counts)', () => {
    const r = rng(5);
    for (const n of [1, 2, 3, 7, 64, 1001])
      for (const bits of [2, 4, 8, 12, 16]) {
        const steps = new Float32Array(n);
        for (let i = 0; i < n; i++)
          steps[i] = i % 97 === 3 ? 0 : i % 89 === 5 ? MIN_EXACT_STEP : exactStep(10 ** (r() * 12 - 9), bits)!;
        const bytes = stepsTo20(steps)!;
        expect(bytes.length).toBe(2 * n + Math.ceil(n / 2));
        expect(step20Channels(bytes.length)).toBe(n);
        expect(stepsFrom20(bytes)).toEqual(steps);
      }
  });

  it('refuses a step with more than 11 mantissa bits (the encoder then stores step24)', () => {
    expect(stepsTo20(Float32Array.of(0.5, 1 / 3))).toBeUndefined();
  });
});

describe('a small model: one pack and the manifest', () => {
  it('ranges, kept tensors and skeleton are members of the pack; records restore to the full manifest', async () => {
    const model = join(dir, 'mixed.onnx');
    writeFileSync(model, mixedModel(1).bytes);
    const file = join(dir, 'mixed.nnm');
    const r = await compressModel(model, file, { force: true, check: false });
    expect(r.manifest.version).toBe(4);
    const zip = new ZipReader(file);
    const names = zip.list().map((e) => e.name);
    const raw = JSON.parse(Buffer.from(zip.read('manifest.json')).toString()) as Record<string, unknown> & Manifest;
    zip.close();
    expect(names.sort()).toEqual(['manifest.json', 'model/pack.0']);
    const members = packMembers(r.manifest);
    for (const name of [RANGES_ENTRY, HALF_ENTRY]) expect(members.get(name)?.size).toBeGreaterThan(0);
    expect(members.get(r.manifest.skeleton)).toBeDefined();
    // every coded tensor's ranges are step20
    for (const t of r.manifest.tensors) for (const d of t.quant?.rangeDtype ?? []) expect(d).toBe('step20');
    // the written records are compact ...
    const rawTensors = raw.tensors as unknown as Array<Record<string, unknown>>;
    expect(rawTensors.some((t) => typeof t.half === 'number')).toBe(true);
    expect(rawTensors.every((t) => typeof t.storage === 'string')).toBe(true);
    expect(raw.options).toEqual({ halfKept: true });
    // ... and the reader restores them to exactly what the writer held
    const a = new Archive(file);
    expect(a.manifest).toEqual(r.manifest);
    // a compressed member is a brotli stream of its recorded size (the skeleton too)
    expect(members.get(r.manifest.skeleton)?.size).toBeGreaterThan(0);
    const place = members.get(RANGES_ENTRY)!;
    const pack = a.entry('model/pack.0');
    expect(brotliDecompressSync(pack.subarray(place.offset, place.offset + place.bytes)).length).toBe(place.size);
    // Node and the isomorphic core (the browser's) decode the same values
    const node = await decodeAllTensors(a);
    a.close();
    const core = await decodeArchiveSource(bytesSource(readFileSync(file), file), nodeBackend);
    for (const [k, v] of node) expect(core.tensors.get(k)).toEqual(v);
    await decompressArchive(file, join(dir, 'out.onnx'), { force: true });
  }, 60_000);

  it('sliced tensors and duplicates: the reader restores every record to what the writer held', async () => {
    const model = join(dir, 'same.onnx');
    writeFileSync(model, mixedModel(2, { sameBranches: true }).bytes);
    const file = join(dir, 'same.nnm');
    const r = await compressModel(model, file, { force: true, check: false, sliceWeights: 256 });
    expect(r.manifest.tensors.some((t) => t.slices)).toBe(true);
    expect(r.manifest.tensors.some((t) => t.sameAs)).toBe(true);
    const raw = JSON.parse(Buffer.from(new ZipReader(file).read('manifest.json')).toString()) as {
      tensors: Array<Record<string, unknown>>;
    };
    // bytes are left out where the reader adds them up
    expect(raw.tensors.some((t) => t.layout !== undefined && t.bytes === undefined)).toBe(true);
    const a = new Archive(file);
    expect(a.manifest).toEqual(r.manifest);
    a.close();
  }, 60_000);

  it('a member whose recorded size is wrong is a typed error naming it', async () => {
    const file = join(dir, 'mixed.nnm');
    const { manifest, entries } = readArchive(file);
    const packs = structuredClone(manifest.packs!);
    const m = packs['model/pack.0'].find(([n]) => n === RANGES_ENTRY)!;
    m[2] = m[2]! + 1;
    const bad = join(dir, 'bad-size.nnm');
    writeArchive(bad, entries, { ...manifest, packs });
    const err = await decompressArchive(bad, join(dir, 'bad.onnx')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptArchiveError);
    expect(String((err as Error).message)).toMatch(
      /model\/ranges\.bin in model\/pack\.0: (decompresses to \d+ bytes, not the recorded|cannot decompress)/,
    );
    await expect(decodeArchiveSource(bytesSource(readFileSync(bad), bad), nodeBackend)).rejects.toThrow(/model\/ranges\.bin/);
    // a compressed member in a version-3 manifest is corrupt, and so is one larger than the source model
    const v3 = join(dir, 'bad-v3.nnm');
    writeArchive(v3, entries, { ...manifest, version: 3 });
    await expect(decompressArchive(v3, join(dir, 'bad.onnx'))).rejects.toThrow(/bad member record/);
    const big = structuredClone(manifest.packs!);
    big['model/pack.0'].find(([n]) => n === RANGES_ENTRY)![2] = 2 ** 40;
    const huge = join(dir, 'bad-huge.nnm');
    writeArchive(huge, entries, { ...manifest, packs: big });
    await expect(decompressArchive(huge, join(dir, 'bad.onnx'))).rejects.toThrow(/bad member record/);
  }, 60_000);
});

describe('hostile brotli streams', () => {
  it('a member that decompresses far past its recorded size fails at once, in Node and in the browser decoder', async () => {
    const model = join(dir, 'mixed.onnx');
    const good = join(dir, 'bomb-base.nnm');
    await compressModel(model, good, { force: true, check: false });
    const { manifest, entries } = readArchive(good);
    // 64 MiB of zeros: a few hundred bytes of brotli, put in place of the ranges member (its recorded size kept)
    const bomb = brotliCompressSync(Buffer.alloc(64 * 2 ** 20), { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } });
    const m = structuredClone(manifest);
    const [pack, members] = Object.entries(m.packs!).find(([, ms]) => ms.some(([n]) => n === RANGES_ENTRY))!;
    const old = entries.find(([n]) => n === pack)![1];
    const parts: Uint8Array[] = [];
    let at = 0;
    for (const member of members) {
      parts.push(member[0] === RANGES_ENTRY ? bomb : old.subarray(at, at + member[1]));
      at += member[1];
      if (member[0] === RANGES_ENTRY) member[1] = bomb.length;
    }
    const data = Buffer.concat(parts);
    m.entries[pack] = { sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
    const file = join(dir, 'bomb.nnm');
    writeArchive(
      file,
      entries.map(([n, d]) => [n, n === pack ? data : d] as const),
      m,
    );
    const size = members.find(([n]) => n === RANGES_ENTRY)![2]!;
    // the browser's decoder alone: refused as soon as it asks for more than the recorded size (or its ring buffer)
    const t0 = performance.now();
    expect(() => brotliBytes(bomb, size, 'ranges')).toThrow(/decodes past its/);
    expect(performance.now() - t0).toBeLessThan(5_000);
    // and the global it bounds while it runs is the native one again
    expect(Uint8Array.name).toBe('Uint8Array');
    for (const backend of [nodeBackend, { ...nodeBackend, unbrotli: browserBackend.unbrotli }])
      await expect(decodeArchiveSource(bytesSource(readFileSync(file), file), backend)).rejects.toThrow(CorruptArchiveError);
    await expect(decompressArchive(file, join(dir, 'bomb.onnx'))).rejects.toThrow(CorruptArchiveError);
  }, 60_000);

  it('a duplicate of a tensor that is not coded is a typed error (was a TypeError in decompress)', async () => {
    const { manifest, entries } = readArchive(join(dir, 'same.nnm'));
    const m = structuredClone(manifest);
    const dup = m.tensors.find((t) => t.sameAs)!;
    delete m.tensors.find((t) => t.key === dup.sameAs)!.layout;
    const bad = join(dir, 'bad-same.nnm');
    writeArchive(bad, entries, m);
    await expect(decompressArchive(bad, join(dir, 'bad.onnx'))).rejects.toThrow(/bad sameAs reference/);
  });

  it('the browser decoder: a tiny stream of a large window cannot make more than its size; valid streams decode', () => {
    const br = (data: Uint8Array, lgwin: number): Buffer =>
      brotliCompressSync(data, {
        params: {
          [constants.BROTLI_PARAM_QUALITY]: 5,
          [constants.BROTLI_PARAM_LGWIN]: lgwin,
          [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
        },
      });
    // 16 MiB of zeros is 14 bytes at a 2^24 window: asked for 100 bytes, refused before a 16 MiB output is made
    for (const lgwin of [16, 22, 24]) {
      const bomb = br(new Uint8Array(2 ** 24), lgwin);
      const t0 = performance.now();
      expect(() => brotliBytes(bomb, 100, 'member')).toThrow(/decodes past its 100 bytes/);
      expect(performance.now() - t0).toBeLessThan(1_000);
    }
    const rnd = rng(9);
    for (const n of [0, 1, 100, 5000, 70_000, 3 * 2 ** 20])
      for (const lgwin of [16, 22, 24])
        for (const data of [Uint8Array.from({ length: n }, () => Math.floor(rnd() * 40)), new Uint8Array(n)]) {
          const out = brotliBytes(br(data, lgwin), n, 'member');
          expect(out.constructor).toBe(Uint8Array);
          expect(Buffer.from(out).equals(Buffer.from(data))).toBe(true);
        }
  });

  it('a source size that is not a count is refused (it bounds every decompressed member)', async () => {
    const { manifest, entries } = readArchive(join(dir, 'mixed.nnm'));
    for (const bytes of [1e300, '1e300', -1, undefined]) {
      const bad = join(dir, 'bad-source.nnm');
      writeArchive(bad, entries, { ...manifest, source: { ...manifest.source, bytes } });
      await expect(decompressArchive(bad, join(dir, 'bad.onnx'))).rejects.toThrow(/bad source size/);
    }
  });
});

describe('older archives are still read', () => {
  it('a version-3 archive (nnmedia at b0118c6: step24 ranges, side entries of their own) decodes as it did then', async () => {
    // test/fixtures/mixed-v3.nnm: `mixedModel(1)` compressed by the default of b0118c6; the model it decoded to then
    const file = join(here, 'fixtures', 'mixed-v3.nnm');
    const a = new Archive(file);
    expect(a.manifest.version).toBe(3);
    expect(a.manifest.tensors.some((t) => t.quant?.rangeDtype?.includes('step24'))).toBe(true);
    a.close();
    const out = join(dir, 'from-v3.onnx');
    await decompressArchive(file, out, { force: true });
    expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(
      'a4305cdc43ea84d3a26b37b0d1acbacbdb15ecb094fb1703eb9391b10f76898e',
    );
  }, 60_000);
});
