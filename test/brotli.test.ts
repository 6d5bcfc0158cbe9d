/**
 * Raw codes through brotli (codecs `brotli` and `brotli-sign`, format version 4): lossless for any codes, the
 * browser's JavaScript decoder gives the same codes as Node's, broken entries are typed errors, and the codec
 * sets try it on small tensors only (plan.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Archive, bytesSource, compressModel, decodeArchiveSource, nodeBackend } from '../src/index.js';
import { getCodec } from '../src/codecs/registry.js';
import { BROWSER_DECODERS } from '../src/browser/decoders.js';
import type { CodecRecord } from '../src/archive/manifest.js';
import { CodecError } from '../src/errors.js';
import { openModel } from '../src/formats/registry.js';
import { BROTLI_BEST_WEIGHTS, BROTLI_MAX_WEIGHTS, planTensors } from '../src/pipeline/plan.js';
import { decodeAllTensors } from '../src/pipeline/decompress.js';
import { PACK_MEMBER_MAX, mayPack } from '../src/pipeline/write.js';
import type { CodedPlan } from '../src/pipeline/stages.js';
import { allocCodes } from '../src/quantize/uniform.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';
import { writeSafetensors } from './helpers/safetensors-fixture.js';

const dir = tempDir();

/** Codes of Gaussian weights around the middle code, some exactly at it. */
function codes(bits: number, n: number, seed: number): ReturnType<typeof allocCodes> {
  const g = gaussian(n, seed, 1);
  const mid = 2 ** (bits - 1);
  const out = allocCodes(bits, n);
  for (let i = 0; i < n; i++) out[i] = Math.max(0, Math.min(2 * mid - 1, mid + Math.round(g[i] * mid * 0.05)));
  return out;
}

describe('brotli codecs', () => {
  for (const name of ['brotli', 'brotli-sign'])
    for (const bits of getCodec(name).losslessBits)
      it(`${name} ${bits}-bit: Node and the browser's decoder give back the codes`, async () => {
        const codec = getCodec(name);
        const [width, height] = [37, 23];
        const data = codes(bits, width * height, bits + 3);
        const bytes = await codec.encode({ width, height, bits, data }, { lossless: true, effort: 11 });
        expect(await codec.decode(bytes, { width, height, bits })).toEqual(data);
        const browser = await BROWSER_DECODERS[name](bytes, { width, height, bits }, { name } as CodecRecord);
        expect(Array.from(browser)).toEqual(Array.from(data));
      });

  it('a truncated or wrong-sized entry is a CodecError, in Node and in the browser decoder', async () => {
    for (const name of ['brotli', 'brotli-sign']) {
      const codec = getCodec(name);
      const data = codes(8, 1000, 9);
      const bytes = await codec.encode({ width: 100, height: 10, bits: 8, data }, { lossless: true, effort: 5 });
      const cut = bytes.slice(0, bytes.length - 5);
      await expect(codec.decode(cut, { width: 100, height: 10, bits: 8 })).rejects.toThrow(CodecError);
      // more codes than the stream holds, and fewer
      await expect(codec.decode(bytes, { width: 100, height: 11, bits: 8 })).rejects.toThrow(CodecError);
      await expect(codec.decode(bytes, { width: 100, height: 9, bits: 8 })).rejects.toThrow(CodecError);
      const record = { name } as CodecRecord;
      await expect(BROWSER_DECODERS[name](cut, { width: 100, height: 10, bits: 8 }, record)).rejects.toThrow(CodecError);
      await expect(BROWSER_DECODERS[name](bytes, { width: 100, height: 9, bits: 8 }, record)).rejects.toThrow(CodecError);
    }
  });
});

describe('the codec sets try brotli on small tensors', () => {
  it('a small model: every coded tensor at quality 11; a larger one: by tensor size', async () => {
    const small = join(dir, 'mixed.onnx');
    writeFileSync(small, mixedModel(1).bytes);
    const brotliOf = (p: CodedPlan) => p.codecs.filter((c) => c.name.startsWith('brotli')).map((c) => c.options.effort);
    const plans = planTensors(await openModel(small)).filter((p): p is CodedPlan => p.kind === 'coded');
    expect(plans.length).toBeGreaterThan(0);
    for (const p of plans) expect(brotliOf(p)).toEqual([11, 11]);
    // 2^20 + 2^16 weights: past the small-model size; tensors of 2^14, 2^16 and 2^16 + 1024 weights
    const big = join(dir, 'big.safetensors');
    writeSafetensors(big, {
      'tiny.weight': { shape: [128, BROTLI_BEST_WEIGHTS / 128], data: gaussian(BROTLI_BEST_WEIGHTS, 1, 0.1) },
      'mid.weight': { shape: [256, BROTLI_MAX_WEIGHTS / 256], data: gaussian(BROTLI_MAX_WEIGHTS, 2, 0.1) },
      'over.weight': { shape: [264, 256], data: gaussian(264 * 256, 3, 0.1) },
      'rest.weight': { shape: [1024, 1024], data: gaussian(2 ** 20, 4, 0.1) },
    });
    const byName = new Map(
      planTensors(await openModel(big))
        .filter((p): p is CodedPlan => p.kind === 'coded')
        .map((p) => [p.entry.name, brotliOf(p)]),
    );
    expect(byName.get('tiny.weight')).toEqual([11, 11]);
    expect(byName.get('mid.weight')).toEqual([5, 5]);
    expect(byName.get('over.weight')).toEqual([]);
    expect(byName.get('rest.weight')).toEqual([]);
  });

  it('an archive with brotli tensors is version 4 and decodes the same in Node and in the isomorphic core', async () => {
    const model = join(dir, 'mixed.onnx');
    const file = join(dir, 'mixed.nnm');
    const r = await compressModel(model, file, { force: true, check: false });
    expect(r.manifest.tensors.some((t) => t.codec?.name.startsWith('brotli'))).toBe(true);
    expect(r.manifest.version).toBe(4);
    const a = new Archive(file);
    const node = await decodeAllTensors(a);
    a.close();
    const core = await decodeArchiveSource(bytesSource(readFileSync(file), file), nodeBackend);
    for (const [k, v] of node) expect(core.tensors.get(k)).toEqual(v);
  }, 60_000);
});

describe('side data through brotli into the pack', () => {
  it('is not tried where brotli at quality 5 leaves far more than a member may hold', () => {
    const noise = (n: number, seed: number): Uint8Array => {
      const out = new Uint8Array(n);
      for (let i = 0, x = seed; i < n; i++) out[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24;
      return out;
    };
    const bound = PACK_MEMBER_MAX * 1.5;
    expect(mayPack(noise(bound, 1))).toBe(true); // small enough to try whatever it holds
    expect(mayPack(noise(bound + 1, 1))).toBe(false); // incompressible, just past it
    expect(mayPack(noise(200_000, 2))).toBe(false);
    expect(mayPack(new Uint8Array(200_000))).toBe(true);
    // half noise, half zeros: 100 KB of noise is more than a member could hold after any coder
    const half = new Uint8Array(200_000);
    half.set(noise(100_000, 4));
    expect(mayPack(half)).toBe(false);
    // one block of noise repeated 2.1 MB apart, beyond deflate's and zstd-3's windows: brotli's finds it
    const part = noise(50_000, 3);
    const far = new Uint8Array(2_200_000);
    far.set(part, 0);
    far.set(part, 2_100_000);
    expect(mayPack(far)).toBe(true);
    expect(mayPack(new Uint8Array(2 ** 22 + 1))).toBe(false); // past BROTLI_SIDE_MAX
  });
});
