/**
 * The sign split of raw codes (codec `zstd-sign`, format version 3): lossless for any codes, refused where
 * an entry's parts do not fit together, picked by the default where it is smaller than plain zstd, and an
 * archive is written as the lowest version that reads it (3 for the sign split, 4 for step20 ranges, brotli pack members and the brotli codecs).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compressModel, decompressArchive } from '../src/index.js';
import { formatVersionOf, type TensorRecord } from '../src/archive/manifest.js';
import { getCodec } from '../src/codecs/registry.js';
import { joinFrames, joinSigns, signFrames, splitSigns } from '../src/codecs/raw/sign.js';
import { CodecError } from '../src/errors.js';
import { allocCodes } from '../src/quantize/uniform.js';
import { stftMelModel } from './helpers/onnx-builder.js';
import { gaussian, rng } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** Codes of Gaussian weights on a zero-centred grid, with the grid's two ends and zeros among them. */
function symmetricCodes(bits: number, n: number, seed: number): ReturnType<typeof allocCodes> {
  const mid = 2 ** (bits - 1);
  const g = gaussian(n, seed, mid / 6);
  const out = allocCodes(bits, n);
  for (let i = 0; i < n; i++) out[i] = Math.max(0, Math.min(2 * mid - 1, mid + Math.round(g[i])));
  out[0] = 0;
  out[1] = 2 * mid - 1;
  out[2] = mid;
  return out;
}

describe('sign split', () => {
  for (const bits of [8, 16])
    it(`${bits}-bit: distances and signs join back to the same codes, whatever the codes`, () => {
      const codes = symmetricCodes(bits, 10_001, bits);
      const { distances, signs } = splitSigns(codes, bits);
      const mid = 2 ** (bits - 1);
      expect(Math.max(...distances)).toBe(mid); // code 0 is mid below the middle
      const nonZero = codes.filter((c) => c !== mid).length;
      expect(signs.length).toBe(Math.ceil(nonZero / 8));
      expect(joinSigns(distances.slice(), signs, bits)).toEqual(codes);
      // uniform codes (no symmetry at all) round-trip too
      const r = rng(bits);
      const any = allocCodes(bits, 999).map(() => Math.floor(r() * 2 ** bits));
      const s = splitSigns(any, bits);
      expect(joinSigns(s.distances.slice(), s.signs, bits)).toEqual(any);
    });

  it('a plane of middle codes has no sign bytes; parts that do not fit are refused', () => {
    const zeros = allocCodes(8, 100).fill(128);
    const s = splitSigns(zeros, 8);
    expect(s.signs.length).toBe(0);
    expect(joinSigns(s.distances.slice(), s.signs, 8)).toEqual(zeros);
    const codes = symmetricCodes(8, 1000, 3);
    const { distances, signs } = splitSigns(codes, 8);
    expect(joinSigns(distances.slice(), signs.subarray(1), 8)).toBeUndefined(); // a sign byte short
    expect(joinSigns(distances.slice(), new Uint8Array([...signs, 0]), 8)).toBeUndefined(); // one too many
    const far = distances.slice();
    far[5] = 200; // beyond the 8-bit grid
    expect(joinSigns(far, signs, 8)).toBeUndefined();
    // a distance of 128 is only a code below the middle (code 0); above it would be code 256
    expect(joinSigns(Uint8Array.of(128), Uint8Array.of(1), 8)).toEqual(Uint8Array.of(0));
    expect(joinSigns(Uint8Array.of(128), Uint8Array.of(0), 8)).toBeUndefined();
    // 24-bit codes travel as 32-bit distances: one far beyond the grid is refused too (not wrapped around)
    expect(joinSigns(Uint32Array.of(2 ** 31 + 2 ** 23 + 5), Uint8Array.of(1), 24)).toBeUndefined();
    expect(joinSigns(Uint32Array.of(2 ** 23), Uint8Array.of(1), 24)).toEqual(Uint32Array.of(0));
    // sixteen signs fill two whole bytes: a third (even empty) is one too many, one byte is too few
    const sixteen = allocCodes(8, 20).map((_, i) => (i % 5 === 4 ? 128 : i % 2 ? 100 : 150));
    const split16 = splitSigns(sixteen, 8);
    expect(split16.signs.length).toBe(2);
    expect(joinSigns(split16.distances.slice(), split16.signs, 8)).toEqual(sixteen);
    expect(joinSigns(split16.distances.slice(), Uint8Array.of(...split16.signs, 0), 8)).toBeUndefined();
    expect(joinSigns(split16.distances.slice(), split16.signs.subarray(0, 1), 8)).toBeUndefined();
    expect(signFrames(new Uint8Array([9, 0, 0, 0, 1]))).toBeUndefined(); // a prefix past the entry
    const [a, b] = signFrames(joinFrames(new Uint8Array([1, 2]), new Uint8Array([3])))!;
    expect([...a, -1, ...b]).toEqual([1, 2, -1, 3]);
  });

  it('8-bit codes four at a time: the same distances, signs and refusals as one at a time, at any length and offset', () => {
    // a Uint16Array of 8-bit codes takes the one-at-a-time loop, a Uint8Array the word loop (on a 4-byte boundary)
    const r = rng(8);
    const pick = (n: number, kind: number): number[] =>
      Array.from({ length: n }, () => {
        if (kind === 0) return Math.floor(r() * 256); // every code, no symmetry
        if (kind === 1) return r() < 0.7 ? 128 : Math.floor(r() * 256); // mostly the middle (pruned)
        if (kind === 2) return [0, 127, 128, 129, 255][Math.floor(r() * 5)]; // the grid's ends and the middle
        return 128 + Math.round((r() - 0.5) * 10);
      });
    /** `values` as a Uint8Array that starts `offset` bytes into its buffer. */
    const at = (values: ArrayLike<number>, offset: number): Uint8Array => {
      const out = new Uint8Array(values.length + offset).subarray(offset);
      out.set(values);
      return out;
    };
    let refused = 0;
    for (let t = 0; t < 300; t++) {
      // the length, the kind of codes and the damage drawn independently; every byte offset of each case
      const codes = pick(Math.floor(r() * 70), Math.floor(r() * 4));
      const one = splitSigns(Uint16Array.from(codes), 8);
      const distances = Uint16Array.from(one.distances);
      let signs = one.signs.slice();
      const kind = Math.floor(r() * 4);
      if (kind === 0 && codes.length) distances[Math.floor(r() * codes.length)] = Math.floor(r() * 256);
      if (kind === 1) signs = signs.subarray(0, Math.max(0, signs.length - 1));
      if (kind === 2) signs = Uint8Array.of(...signs, Math.floor(r() * 256));
      if (kind === 3 && signs.length) signs[Math.floor(r() * signs.length)] ^= 1 << Math.floor(r() * 8);
      const expected = joinSigns(distances.slice(), signs, 8);
      if (!expected) refused++;
      for (let offset = 0; offset < 4; offset++) {
        const word = splitSigns(at(codes, offset), 8);
        expect([...word.distances]).toEqual([...one.distances]);
        expect([...word.signs]).toEqual([...one.signs]);
        expect([...joinSigns(at(word.distances, offset), word.signs, 8)!]).toEqual(codes);
        // damaged parts: a distance anywhere in 0…255, a sign byte short, one too many, a sign bit flipped
        const got = joinSigns(at(distances, offset), signs, 8);
        expect(got === undefined ? undefined : [...got]).toEqual(expected === undefined ? undefined : [...expected]);
      }
    }
    expect(refused).toBeGreaterThan(100); // the damaged cases were damaged
  });

  it('the Node codec round-trips 8- and 16-bit codes and names a broken entry', async () => {
    const codec = getCodec('zstd-sign');
    for (const bits of [8, 16]) {
      const data = symmetricCodes(bits, 64 * 48, bits + 1);
      const bytes = await codec.encode({ width: 64, height: 48, bits, data }, { lossless: true, effort: 3 });
      expect(await codec.decode(bytes, { width: 64, height: 48, bits })).toEqual(data);
    }
    // a Fourier basis (rows of cosines, as an STFT's kernels): magnitudes and signs each repeat on their own,
    // which the split lets zstd find; on i.i.d. noise it does not pay, and the default then keeps plain zstd
    const basis = allocCodes(8, 257 * 64);
    for (let k = 0; k < 257; k++)
      for (let t = 0; t < 64; t++) basis[k * 64 + t] = 128 + Math.round(100 * Math.cos((2 * Math.PI * k * t) / 512));
    const split = await codec.encode({ width: 64, height: 257, bits: 8, data: basis }, { lossless: true, effort: 19 });
    const plain = await getCodec('zstd').encode({ width: 64, height: 257, bits: 8, data: basis }, { lossless: true, effort: 19 });
    expect(split.length).toBeLessThan(plain.length);
    const data = symmetricCodes(8, 1000, 7);
    const bytes = await codec.encode({ width: 100, height: 10, bits: 8, data }, { lossless: true, effort: 3 });
    const cut = bytes.slice(0, bytes.length - 3);
    await expect(codec.decode(cut, { width: 100, height: 10, bits: 8 })).rejects.toThrow(CodecError);
    await expect(codec.decode(bytes.subarray(0, 3), { width: 100, height: 10, bits: 8 })).rejects.toThrow(/length prefix/);
  });
});

describe('the default keeps the smaller of plain and sign-split zstd', () => {
  it('an STFT front end (a Fourier basis, signs that repeat) is sign-split and decodes to the same model as plain zstd', async () => {
    const model = join(dir, 'stft.onnx');
    writeFileSync(model, stftMelModel().bytes);
    const signed = join(dir, 'stft.nnm');
    const r = await compressModel(model, signed, { force: true });
    // version 5: its sine basis has a row of ±0.0 (the DC term), left out of the plane (its ranges are step20 and its
    // side entries brotli pack members, version 4; the sign split alone is 3)
    expect(r.manifest.version).toBe(5);
    // sign-split: through zstd or (a small model's tensors) brotli, whichever is smaller
    const names = r.manifest.tensors.map((t) => t.codec?.name).filter(Boolean);
    expect(names.some((n) => n === 'zstd-sign' || n === 'brotli-sign')).toBe(true);
    // the same codes through plain zstd only: larger, the same model out
    const plain = join(dir, 'stft-plain.nnm');
    await compressModel(model, plain, { force: true, codec: 'zstd' });
    expect(readFileSync(signed).length).toBeLessThan(readFileSync(plain).length * 0.8);
    await decompressArchive(signed, join(dir, 'a.onnx'), { force: true });
    await decompressArchive(plain, join(dir, 'b.onnx'), { force: true });
    expect(readFileSync(join(dir, 'a.onnx'))).toEqual(readFileSync(join(dir, 'b.onnx')));
  }, 120_000);

  it('an archive is written as the lowest version that reads it', () => {
    const rec = (codec: string, rangeDtype = 'step24'): TensorRecord =>
      ({ key: 'w', codec: { name: codec }, quant: { rangeDtype: [rangeDtype] } }) as unknown as TensorRecord;
    expect(formatVersionOf([rec('png')])).toBe(2);
    expect(formatVersionOf([rec('zstd-sign')])).toBe(3);
    expect(formatVersionOf([rec('png', 'step20')])).toBe(4);
    const sliced = { key: 's', slices: [rec('zstd-sign')] } as unknown as TensorRecord;
    expect(formatVersionOf([sliced])).toBe(3);
    expect(formatVersionOf([rec('png')], { 'model/pack.0': [['t/0/p0.png', 10]] })).toBe(2);
    expect(formatVersionOf([rec('png')], { 'model/pack.0': [['model/ranges.bin', 10, 30]] })).toBe(4);
    expect(
      formatVersionOf([rec('png')], { 'model/pack.0': [['model/skeleton.onnx.zst', 10]] }, ['model/skeleton.onnx.zst']),
    ).toBe(4);
  });
});
