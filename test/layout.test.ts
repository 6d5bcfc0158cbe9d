import { describe, expect, it } from 'vitest';
import { gatherPlanes, planeOffsets, planeShapes, scatterPlanes, sourceIndexFn } from '../src/layout/planes.js';
import { cutTile, pasteTile, tileGrid } from '../src/layout/tiles.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { exactSide, markedSide } from '../src/pipeline/prepare.js';

const iota = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => i);
const f32 = (n: number): Float32Array => new Float32Array(n);

describe('M2: fully-connected layer as an Nin × Nout image', () => {
  it('[in, out] storage (MatMul): pixel (i, j) = W[i, j]', () => {
    const spec: LayoutSpec = { kind: 'fc', nin: 3, nout: 5, order: 'in_out' };
    const [plane] = gatherPlanes(iota(15), spec, f32);
    expect(planeShapes(spec)[0]).toMatchObject({ rows: 3, cols: 5 });
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) expect(plane[i * 5 + j]).toBe(i * 5 + j);
  });
  it('[out, in] storage (PyTorch Linear, Gemm transB=1): pixel (i, j) = W[j, i]', () => {
    const spec: LayoutSpec = { kind: 'fc', nin: 3, nout: 5, order: 'out_in' };
    const [plane] = gatherPlanes(iota(15), spec, f32);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) expect(plane[i * 5 + j]).toBe(j * 3 + i);
  });
});

describe('M3: convolution as a (Nfin·Kx) × (Nfout·Ky) image of Kx × Ky tiles', () => {
  it('Conv [out, in, kx, ky]: pixel (fin·Kx + x, fout·Ky + y) = W[fout, fin, x, y]', () => {
    const [O, I, KX, KY] = [4, 3, 2, 5];
    const spec: LayoutSpec = { kind: 'conv', nfin: I, nfout: O, kx: KX, ky: KY, order: 'out_in' };
    const [plane] = gatherPlanes(iota(O * I * KX * KY), spec, f32);
    const s = planeShapes(spec)[0];
    expect([s.rows, s.cols, s.channelWidth]).toEqual([I * KX, O * KY, KY]);
    for (let fo = 0; fo < O; fo++)
      for (let fi = 0; fi < I; fi++)
        for (let x = 0; x < KX; x++)
          for (let y = 0; y < KY; y++)
            expect(plane[(fi * KX + x) * s.cols + fo * KY + y]).toBe(((fo * I + fi) * KX + x) * KY + y);
  });
  it('depthwise conv [C, 1, 3, 3]: one row of tiles, tile c is kernel c', () => {
    const spec: LayoutSpec = { kind: 'conv', nfin: 1, nfout: 6, kx: 3, ky: 3, order: 'out_in' };
    const [plane] = gatherPlanes(iota(54), spec, f32);
    expect(planeShapes(spec)[0]).toMatchObject({ rows: 3, cols: 18 });
    for (let c = 0; c < 6; c++)
      for (let x = 0; x < 3; x++) for (let y = 0; y < 3; y++) expect(plane[x * 18 + c * 3 + y]).toBe(c * 9 + x * 3 + y);
  });
  it('ConvTranspose [in, out, kx, ky]', () => {
    const spec: LayoutSpec = { kind: 'conv', nfin: 2, nfout: 3, kx: 2, ky: 2, order: 'in_out' };
    const [plane] = gatherPlanes(iota(24), spec, f32);
    // W[fin=1, fout=2, x=1, y=0] = ((1·3 + 2)·2 + 1)·2 + 0 = 22 at pixel (1·2+1, 2·2+0)
    expect(plane[3 * 6 + 4]).toBe(22);
  });
});

describe("stacked matrices (a batched MatMul constant, an MoE's experts) as one image each", () => {
  it('[E, in, out]: plane e pixel (i, j) = W[e, i, j], each column its own channel', () => {
    const [E, I, O] = [3, 4, 5];
    const spec: LayoutSpec = { kind: 'stack', batch: E, nin: I, nout: O, order: 'in_out' };
    const planes = gatherPlanes(iota(E * I * O), spec, f32);
    expect(planes).toHaveLength(E);
    expect(planeShapes(spec).map((s) => [s.rows, s.cols, s.channelWidth, s.label])).toEqual(
      Array.from({ length: E }, (_, e) => [I, O, 1, `matrix ${e}`]),
    );
    for (let e = 0; e < E; e++)
      for (let i = 0; i < I; i++) for (let j = 0; j < O; j++) expect(planes[e][i * O + j]).toBe((e * I + i) * O + j);
  });
  it('[E, out, in]: plane e pixel (i, j) = W[e, j, i]', () => {
    const [E, I, O] = [2, 3, 4];
    const spec: LayoutSpec = { kind: 'stack', batch: E, nin: I, nout: O, order: 'out_in' };
    const planes = gatherPlanes(iota(E * I * O), spec, f32);
    for (let e = 0; e < E; e++)
      for (let i = 0; i < I; i++) for (let j = 0; j < O; j++) expect(planes[e][i * O + j]).toBe((e * O + j) * I + i);
  });
});

describe('M4: LSTM as m images', () => {
  it('bidirectional ONNX LSTM W [2, 4H, I]: 8 planes of I × H, plane d·4+g pixel (i, h) = W[d, g·H + h, i]', () => {
    const [D, H, I] = [2, 3, 5];
    const spec: LayoutSpec = { kind: 'lstm', gates: 4, directions: D, hidden: H, nin: I };
    const planes = gatherPlanes(iota(D * 4 * H * I), spec, f32);
    expect(planes).toHaveLength(8);
    expect(planeShapes(spec).map((s) => s.label)).toContain('gate f, direction 1');
    for (let d = 0; d < D; d++)
      for (let g = 0; g < 4; g++)
        for (let i = 0; i < I; i++)
          for (let h = 0; h < H; h++) expect(planes[d * 4 + g][i * H + h]).toBe((d * 4 * H + g * H + h) * I + i);
  });
  it('GRU has 3 gates per direction', () => {
    expect(gatherPlanes(iota(3 * 4 * 2), { kind: 'gru', gates: 3, directions: 1, hidden: 4, nin: 2 }, f32)).toHaveLength(3);
  });
});

describe('layouts are pairs of inverse functions', () => {
  const specs: LayoutSpec[] = [
    { kind: 'fc', nin: 7, nout: 3, order: 'out_in' },
    { kind: 'fc', nin: 7, nout: 3, order: 'in_out' },
    { kind: 'conv', nfin: 3, nfout: 4, kx: 3, ky: 2, order: 'out_in' },
    { kind: 'conv', nfin: 3, nfout: 4, kx: 1, ky: 1, order: 'in_out' },
    { kind: 'lstm', gates: 4, directions: 2, hidden: 3, nin: 4 },
    { kind: 'conv', nfin: 3, nfout: 5, kx: 3, ky: 2, order: 'in_out' },
    { kind: 'gru', gates: 3, directions: 2, hidden: 4, nin: 3 },
    { kind: 'stack', batch: 3, nin: 5, nout: 4, order: 'in_out' },
    { kind: 'stack', batch: 2, nin: 3, nout: 7, order: 'out_in' },
  ];
  for (const spec of specs)
    it(`${spec.kind} ${JSON.stringify(spec)}`, () => {
      const n = planeShapes(spec).reduce((s, p) => s + p.rows * p.cols, 0);
      const src = iota(n);
      const back = scatterPlanes(gatherPlanes(src, spec, f32), spec, f32(n));
      expect(back).toEqual(src);
    });
  for (const spec of specs)
    it(`marked positions in file order without a scatter: ${spec.kind} ${JSON.stringify(spec)}`, () => {
      const shapes = planeShapes(spec);
      const n = shapes.reduce((s, p) => s + p.rows * p.cols, 0);
      const values = iota(n).map((v) => v * 0.5 - 3);
      // non-finite originals too: their exact values (NaN, ±Inf) are what the side must carry
      for (let i = 2; i < n; i += 11) values[i] = i % 3 ? Infinity : NaN;
      const planes = gatherPlanes(values, spec, f32);
      // marks (NaN, ±Inf) at scattered plane positions, as outliers and non-finite weights are
      planes.forEach((plane, p) => {
        for (let i = p % 3; i < plane.length; i += 5) plane[i] = i % 2 ? NaN : -Infinity;
      });
      const expected = exactSide(scatterPlanes(planes, spec, f32(n)), values);
      const side = markedSide(planes, shapes, spec, values);
      expect(side!.indices.length).toBeGreaterThan(0);
      expect(side).toEqual(expected);
    });
});

describe('the strip-wise fc transpose is the index function', () => {
  for (const order of ['out_in', 'in_out'] as const)
    for (const [nin, nout] of [
      [130, 71],
      [3, 40],
      [40, 3],
      [8, 16],
    ])
      it(`fc ${order}, ${nin} × ${nout} (rows a multiple of the strip of 8, or not, or fewer)`, () => {
        const spec: LayoutSpec = { kind: 'fc', nin, nout, order };
        const src = iota(nin * nout);
        const [plane] = gatherPlanes(src, spec, f32);
        const idx = sourceIndexFn(spec);
        for (let r = 0; r < nin; r++) for (let c = 0; c < nout; c++) expect(plane[r * nout + c]).toBe(src[idx(0, r, c)]);
        expect(scatterPlanes([plane], spec, f32(src.length))).toEqual(src);
      });
});

describe('planeOffsets: the index function as row + column offsets', () => {
  const specs: LayoutSpec[] = [
    { kind: 'fc', nin: 7, nout: 3, order: 'out_in' },
    { kind: 'fc', nin: 7, nout: 3, order: 'in_out' },
    { kind: 'conv', nfin: 3, nfout: 4, kx: 3, ky: 2, order: 'out_in' },
    { kind: 'conv', nfin: 3, nfout: 4, kx: 3, ky: 2, order: 'in_out' },
    { kind: 'conv', nfin: 1, nfout: 6, kx: 3, ky: 3, order: 'out_in' },
    { kind: 'lstm', gates: 4, directions: 2, hidden: 3, nin: 4 },
    { kind: 'gru', gates: 3, directions: 1, hidden: 5, nin: 2 },
    { kind: 'stack', batch: 4, nin: 3, nout: 5, order: 'in_out' },
    { kind: 'stack', batch: 3, nin: 6, nout: 2, order: 'out_in' },
  ];
  for (const spec of specs)
    it(`${spec.kind} ${JSON.stringify(spec)}`, () => {
      const idx = sourceIndexFn(spec);
      planeShapes(spec).forEach((s, p) => {
        const { rows, cols } = planeOffsets(spec, p);
        for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) expect(rows[r] + cols[c]).toBe(idx(p, r, c));
      });
    });
});

describe('tiles', () => {
  it('split a plane larger than the codec limit and join back', () => {
    const grid = tileGrid(10, 7, 4, 3);
    expect(grid).toHaveLength(9);
    expect(grid.at(-1)).toEqual({ row: 8, col: 6, rows: 2, cols: 1 });
    const plane = Uint16Array.from({ length: 70 }, (_, i) => i);
    const out = new Uint16Array(70);
    for (const t of grid)
      pasteTile(
        out,
        7,
        t,
        cutTile(plane, 7, t, (n) => new Uint16Array(n)),
      );
    expect(out).toEqual(plane);
  });
});
