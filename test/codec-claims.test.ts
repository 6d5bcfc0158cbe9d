/** What `nnmedia codecs` says about a codec is what the codec does. */
import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { getCodec } from '../src/codecs/registry.js';

/** The filter type byte of each row of a PNG (after inflating its IDAT chunks). */
function rowFilters(png: Uint8Array): number[] {
  const b = Buffer.from(png);
  const idat: Buffer[] = [];
  let width = 0;
  let height = 0;
  let bytesPerPixel = 1;
  for (let p = 8; p < b.length;) {
    const len = b.readUInt32BE(p);
    const type = b.toString('latin1', p + 4, p + 8);
    if (type === 'IHDR') {
      width = b.readUInt32BE(p + 8);
      height = b.readUInt32BE(p + 12);
      bytesPerPixel = b[p + 16] / 8;
      expect(b[p + 17]).toBe(0); // colour type grey
    }
    if (type === 'IDAT') idat.push(b.subarray(p + 8, p + 8 + len));
    p += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = 1 + width * bytesPerPixel;
  expect(raw.length).toBe(stride * height);
  return Array.from({ length: height }, (_, r) => raw[r * stride]);
}

describe('png', () => {
  it('writes every row unfiltered (filter type None), 8 and 16-bit, as its description says', async () => {
    const png = getCodec('png');
    expect(png.description).toMatch(/rows unfiltered/);
    const width = 96;
    const height = 64;
    for (const bits of [8, 16]) {
      const data = bits === 8 ? new Uint8Array(width * height) : new Uint16Array(width * height);
      // a smooth ramp plus noise: a picture every PNG filter would change
      for (let i = 0; i < data.length; i++) data[i] = ((i % width) * (bits === 8 ? 2 : 500) + ((i * 7919) % 13)) % 2 ** bits;
      const filters = rowFilters(await png.encode({ width, height, bits, data }, { lossless: true }));
      expect(filters).toEqual(new Array(height).fill(0));
      // and with adaptive filtering asked for (library only), libvips does filter: the check above can fail
      expect(
        rowFilters(await png.encode({ width, height, bits, data }, { lossless: true, filter: true })).some((f) => f !== 0),
      ).toBe(true);
    }
  });
});
