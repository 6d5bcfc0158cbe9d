import { describe, expect, it } from 'vitest';
import { encodeFloats } from '../src/formats/model.js';
import { gatherPlanes, planeOffsets, planeShapes, scatterPlanes } from '../src/layout/planes.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { allocOutput, dequantizeInto, scatterInto, type DirectDtype } from '../src/quantize/dequantize.js';
import { dequantizePlane, findRanges, quantizePlane } from '../src/quantize/uniform.js';
import { SpareBuffers } from '../src/pipeline/decompress.js';

/** Seeded values with a wide spread (xorshift32). */
function values(n: number, seed: number): Float32Array {
  let x = seed;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (((x >>> 0) / 4294967296 - 0.5) * (i % 13 === 0 ? 40 : 1)) / 7;
  }
  return out;
}

/** The reference: dequantize to float planes, scatter into file order, encode to the dtype. */
function reference(planes: Float32Array[], spec: LayoutSpec, n: number, dtype: DirectDtype): Uint8Array {
  return encodeFloats(scatterPlanes(planes, spec, new Float32Array(n)), dtype);
}

describe('dequantizeInto: one pass gives the bytes of dequantize → scatter → encode', () => {
  const specs: LayoutSpec[] = [
    { kind: 'fc', nin: 130, nout: 71, order: 'out_in' },
    { kind: 'fc', nin: 130, nout: 71, order: 'in_out' },
    { kind: 'fc', nin: 3, nout: 700, order: 'out_in' },
    // enough rows per channel for the per-channel tables (20 × 256 levels ≤ 600 × 20 weights), both ways
    { kind: 'fc', nin: 600, nout: 20, order: 'out_in' },
    { kind: 'fc', nin: 600, nout: 20, order: 'in_out' },
    // and for one table of 65,536 levels (16-bit, layer ranges)
    { kind: 'fc', nin: 300, nout: 260, order: 'out_in' },
    { kind: 'conv', nfin: 5, nfout: 9, kx: 3, ky: 3, order: 'out_in' },
    { kind: 'conv', nfin: 5, nfout: 4, kx: 3, ky: 2, order: 'in_out' },
    // convs with per-channel tables, walked in strips of eight columns: over 512 rows (two strips' row blocks) and a
    // column count that is no multiple of eight, both ways
    { kind: 'conv', nfin: 200, nfout: 11, kx: 3, ky: 3, order: 'out_in' },
    { kind: 'conv', nfin: 200, nfout: 11, kx: 3, ky: 3, order: 'in_out' },
    { kind: 'lstm', gates: 4, directions: 2, hidden: 7, nin: 9 },
  ];
  for (const spec of specs)
    for (const bits of [8, 16])
      for (const mode of ['layer', 'channel'] as const)
        for (const dtype of ['float32', 'float16', 'bfloat16'] as const)
          it(`${spec.kind} ${spec.kind === 'fc' || spec.kind === 'conv' ? spec.order : ''} ${bits}-bit ${mode} → ${dtype}`, () => {
            const shapes = planeShapes(spec);
            const n = shapes.reduce((s, p) => s + p.rows * p.cols, 0);
            const src = values(n, 12345 + bits);
            const planes = gatherPlanes(src, spec, (k) => new Float32Array(k));
            const { out, bytes } = allocOutput(dtype, n);
            const decoded = shapes.map((s, p) => {
              const ranges = findRanges(planes[p], s.rows, s.cols, mode, s.channelWidth);
              if (mode === 'channel') ranges.maxs[0] = ranges.mins[0]; // a constant channel decodes to its min
              const codes = quantizePlane(planes[p], s.rows, s.cols, bits, ranges);
              const o = planeOffsets(spec, p);
              dequantizeInto(codes, s.rows, s.cols, bits, ranges, o.rows, o.cols, out);
              return dequantizePlane(codes, s.rows, s.cols, bits, ranges);
            });
            const want = reference(decoded, spec, n, dtype);
            expect(Buffer.compare(Buffer.from(bytes), Buffer.from(want))).toBe(0);
          });
});

describe('scatterInto: a float plane into place, converted', () => {
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const)
    it(`conv out_in → ${dtype}`, () => {
      const spec: LayoutSpec = { kind: 'conv', nfin: 4, nfout: 6, kx: 3, ky: 3, order: 'out_in' };
      const [s] = planeShapes(spec);
      const plane = values(s.rows * s.cols, 99);
      const { out, bytes } = allocOutput(dtype, plane.length);
      const o = planeOffsets(spec, 0);
      scatterInto(plane, s.rows, s.cols, o.rows, o.cols, out);
      expect(Buffer.compare(Buffer.from(bytes), Buffer.from(reference([plane], spec, plane.length, dtype)))).toBe(0);
    });
});

describe('allocOutput over a spare buffer', () => {
  it('decodes into the start of a larger, used buffer: the same bytes as a fresh one, the rest untouched', () => {
    const spec: LayoutSpec = { kind: 'fc', nin: 600, nout: 20, order: 'in_out' };
    const [s] = planeShapes(spec);
    const n = s.rows * s.cols;
    const src = values(n, 7);
    const [plane] = gatherPlanes(src, spec, (k) => new Float32Array(k));
    const ranges = findRanges(plane, s.rows, s.cols, 'channel', s.channelWidth);
    const codes = quantizePlane(plane, s.rows, s.cols, 8, ranges);
    const o = planeOffsets(spec, 0);
    for (const dtype of ['float32', 'float16'] as const) {
      const fresh = allocOutput(dtype, n);
      dequantizeInto(codes, s.rows, s.cols, 8, ranges, o.rows, o.cols, fresh.out);
      const spare = new ArrayBuffer(fresh.bytes.byteLength + 64);
      new Uint8Array(spare).fill(0xa5); // a buffer written out before holds the previous tensor's bytes
      const reused = allocOutput(dtype, n, spare);
      expect(reused.bytes.buffer).toBe(spare);
      expect(reused.bytes.byteLength).toBe(fresh.bytes.byteLength);
      expect(reused.out.data.length).toBe(n);
      dequantizeInto(codes, s.rows, s.cols, 8, ranges, o.rows, o.cols, reused.out);
      expect(Buffer.compare(Buffer.from(reused.bytes), Buffer.from(fresh.bytes))).toBe(0);
      expect(new Uint8Array(spare, fresh.bytes.byteLength).every((b) => b === 0xa5)).toBe(true);
      // too small a spare is not used
      expect(allocOutput(dtype, n, new ArrayBuffer(8)).bytes.buffer.byteLength).toBe(fresh.bytes.byteLength);
    }
  });
});

describe('SpareBuffers', () => {
  it('hands out the smallest spare that fits and keeps only the largest few', () => {
    const spares = new SpareBuffers();
    const sizes = [100, 400, 50, 300, 200];
    for (const size of sizes) spares.put(new Uint8Array(new ArrayBuffer(size), 0, 10));
    // four kept: 400, 300, 200, 100 (50 dropped)
    expect(spares.take(150)?.byteLength).toBe(200);
    expect(spares.take(150)?.byteLength).toBe(300);
    expect(spares.take(500)).toBeUndefined();
    expect(spares.take(60)?.byteLength).toBe(100);
    expect(spares.take(60)?.byteLength).toBe(400);
    expect(spares.take(1)).toBeUndefined();
    // a view that does not start its buffer is not taken in
    spares.put(new Uint8Array(new ArrayBuffer(64), 8, 8));
    expect(spares.take(1)).toBeUndefined();
  });
});
