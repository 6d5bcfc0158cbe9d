import { describe, expect, it } from 'vitest';
import { getCodec, listCodecs, resolveCodecOptions } from '../src/codecs/registry.js';
import { MissingCodecError, OptionError, UnsupportedError } from '../src/errors.js';
import { allocCodes } from '../src/quantize/uniform.js';
import { gaussian } from './helpers/random.js';

/** Codes of Gaussian weights: the realistic content of a weight image. */
function codes(bits: number, width: number, height: number): ReturnType<typeof allocCodes> {
  const g = gaussian(width * height, bits + width, 1);
  const out = allocCodes(bits, g.length);
  const top = 2 ** bits - 1;
  for (let i = 0; i < g.length; i++) out[i] = Math.max(0, Math.min(top, Math.round((g[i] / 8 + 0.5) * top)));
  return out;
}

describe('lossless image codecs round-trip codes bit-exactly', () => {
  for (const codec of listCodecs().filter((c) => c.media === 'image'))
    for (const bits of codec.losslessBits)
      it(`${codec.name} ${bits}-bit`, async () => {
        const data = codes(bits, 37, 23); // odd sizes on purpose
        const opts = resolveCodecOptions(codec, bits, { lossless: true });
        const bytes = await codec.encode({ width: 37, height: 23, bits, data }, opts);
        const back = await codec.decode(bytes, { width: 37, height: 23, bits });
        expect(back).toEqual(data);
      });
});

/** Stated bounds (in codes) at default quality on Gaussian codes; measured, then given headroom. */
const LOSSY_BOUNDS: Record<string, { bits: number; maxErr: number; rmse: number }> = {
  jpeg: { bits: 8, maxErr: 40, rmse: 8 },
  webp: { bits: 8, maxErr: 60, rmse: 10 },
  avif: { bits: 8, maxErr: 60, rmse: 10 },
};

describe('lossy image codecs stay within their stated error bound at default quality', () => {
  for (const [name, bound] of Object.entries(LOSSY_BOUNDS))
    it(`${name}: max |Δcode| ≤ ${bound.maxErr}, RMSE ≤ ${bound.rmse}`, async () => {
      const codec = getCodec(name);
      const data = codes(bound.bits, 64, 48);
      const bytes = await codec.encode(
        { width: 64, height: 48, bits: bound.bits, data },
        resolveCodecOptions(codec, bound.bits, { lossless: false }),
      );
      const back = await codec.decode(bytes, { width: 64, height: 48, bits: bound.bits });
      let max = 0;
      let se = 0;
      for (let i = 0; i < data.length; i++) {
        const d = Math.abs(data[i] - back[i]);
        max = Math.max(max, d);
        se += d * d;
      }
      expect(max).toBeLessThanOrEqual(bound.maxErr);
      expect(Math.sqrt(se / data.length)).toBeLessThanOrEqual(bound.rmse);
      expect(max).toBeGreaterThan(0); // it really is lossy
    });
  // 12-bit samples drop the 4 low bits (an error up to 2^4 codes), and AVIF stays lossy at quality 100: the
  // bound is 2^9 codes of 2^16 (under 1 % of the range), not 2^4
  it('avif carries 16-bit codes at 12-bit depth, lossy even at quality 100: error below 2^9 codes', async () => {
    const codec = getCodec('avif');
    const data = codes(16, 32, 32);
    const bytes = await codec.encode({ width: 32, height: 32, bits: 16, data }, resolveCodecOptions(codec, 16, { quality: 100 }));
    const back = await codec.decode(bytes, { width: 32, height: 32, bits: 16 });
    let max = 0;
    for (let i = 0; i < data.length; i++) max = Math.max(max, Math.abs(data[i] - back[i]));
    expect(max).toBeLessThan(2 ** 9);
  });
});

describe('impossible requests are clear errors', () => {
  it('16-bit into WebP or JPEG', () => {
    expect(() => resolveCodecOptions(getCodec('webp'), 16, {})).toThrow(UnsupportedError);
    expect(() => resolveCodecOptions(getCodec('jpeg'), 16, {})).toThrow(/cannot carry 16-bit/);
  });
  it('lossless JPEG, lossless 16-bit AVIF', () => {
    expect(() => resolveCodecOptions(getCodec('jpeg'), 8, { lossless: true })).toThrow(/no lossless mode/);
    expect(() => resolveCodecOptions(getCodec('avif'), 16, { lossless: true })).toThrow(/not lossless for 16-bit/);
  });
  it('unknown codec and out-of-range quality', () => {
    expect(() => getCodec('bmp')).toThrow(MissingCodecError);
    expect(() => resolveCodecOptions(getCodec('jpeg'), 8, { quality: 150 })).toThrow(
      new OptionError('Expected integer between 1 and 100 for quality but received 150'),
    );
  });
});

describe('PNG of 8-bit codes: entropy coding, matches where they pay (png-entropy.ts)', () => {
  const png = getCodec('png');
  /** Codes of Gaussian weights on a grid of `step` σ, centred on 128 (the weight codes of a rate-controlled archive). */
  const gridCodes = (n: number, step: number, seed: number): Uint8Array =>
    Uint8Array.from(gaussian(n, seed, 1), (v) => Math.max(0, Math.min(255, Math.round(v / step) + 128)));
  const entropyBits = (c: Uint8Array): number => {
    const h = new Float64Array(256);
    for (const v of c) h[v]++;
    return h.reduce((s, k) => (k ? s - k * Math.log2(k / c.length) : s), 0);
  };

  it('round-trips through libvips on shapes across its chunks (one row, one column, rows longer than a chunk)', async () => {
    for (const [width, height] of [
      [1, 1],
      [1, 300],
      [700, 1],
      [2 ** 20 + 3, 2],
      [513, 2049],
    ]) {
      const data = gridCodes(width * height, 0.3, width + height);
      const bytes = await png.encode({ width, height, bits: 8, data }, {});
      expect(Buffer.from(bytes.subarray(1, 4)).toString('latin1')).toBe('PNG');
      const back = await png.decode(bytes, { width, height, bits: 8 });
      expect(Buffer.compare(Buffer.from(back.buffer, back.byteOffset, back.byteLength), data)).toBe(0);
    }
  });

  it('codes noise-like planes near their order-0 entropy, smaller than libvips at zlib level 9', async () => {
    const sharp = (await import('sharp')).default;
    const [width, height] = [1024, 512];
    for (const step of [0.25, 0.6, 1.2]) {
      const data = gridCodes(width * height, step, 7);
      const bytes = await png.encode({ width, height, bits: 8, data }, { effort: 9 });
      const libvips = await sharp(data, { raw: { width, height, channels: 1 } })
        .toColourspace('b-w')
        .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
        .toBuffer();
      const entropy = entropyBits(data) / 8;
      // measured: 1.5 / 2.3 / 6.3 % over the entropy (Huffman's whole-bit code lengths tell at 1.9 bits a code);
      // libvips 16 / 18 / 22 % over it
      expect(bytes.byteLength).toBeLessThan(1.09 * entropy);
      expect(bytes.byteLength).toBeLessThan(0.95 * libvips.byteLength);
    }
  });

  it('searches matches where a quick search shows repeats (rows repeating: a tiled kernel), and not on noise', async () => {
    const [width, height] = [512, 256];
    const block = gridCodes(width * 16, 0.3, 11);
    const repeated = new Uint8Array(width * height);
    for (let y = 0; y < height; y += 16) repeated.set(block, y * width);
    const withMatches = await png.encode({ width, height, bits: 8, data: repeated }, {});
    const huffmanOnly = await png.encode({ width, height, bits: 8, data: repeated }, { matches: false });
    // measured 5.5 KB against 63.3 KB
    expect(withMatches.byteLength).toBeLessThan(0.25 * huffmanOnly.byteLength);
    const back = await png.decode(withMatches, { width, height, bits: 8 });
    expect(Buffer.compare(Buffer.from(back.buffer, back.byteOffset, back.byteLength), repeated)).toBe(0);
    // a plane over 256 KiB: the quick search looks at four strips of it, and still finds the repeats
    const [wideW, tallH] = [1024, 1024];
    const big = new Uint8Array(wideW * tallH);
    const bigBlock = gridCodes(wideW * 16, 0.3, 12);
    for (let y = 0; y < tallH; y += 16) big.set(bigBlock, y * wideW);
    const bigMatches = await png.encode({ width: wideW, height: tallH, bits: 8, data: big }, {});
    const bigHuffman = await png.encode({ width: wideW, height: tallH, bits: 8, data: big }, { matches: false });
    expect(bigMatches.byteLength).toBeLessThan(0.25 * bigHuffman.byteLength);
    // noise: the quick search finds nothing that pays, and the Huffman-only PNG is written as it was
    for (const step of [0.25, 1.2]) {
      const noise = gridCodes(width * height, step, 5);
      const a = await png.encode({ width, height, bits: 8, data: noise }, {});
      const b = await png.encode({ width, height, bits: 8, data: noise }, { matches: false });
      expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
    }
  });

  it('an empty plane is refused with a codec error, not written as a PNG no reader opens', async () => {
    for (const [width, height] of [
      [0, 0],
      [0, 5],
      [5, 0],
    ])
      await expect(png.encode({ width, height, bits: 8, data: new Uint8Array(0) }, {})).rejects.toThrow(/empty/);
  });

  it('16-bit codes and filtered rows still go through libvips, and decode', async () => {
    const data16 = codes(16, 40, 30);
    const b16 = await png.encode({ width: 40, height: 30, bits: 16, data: data16 }, {});
    expect(await png.decode(b16, { width: 40, height: 30, bits: 16 })).toEqual(data16);
    const data8 = codes(8, 40, 30);
    const filtered = await png.encode({ width: 40, height: 30, bits: 8, data: data8 }, { filter: true });
    expect(await png.decode(filtered, { width: 40, height: 30, bits: 8 })).toEqual(data8);
  });
});
