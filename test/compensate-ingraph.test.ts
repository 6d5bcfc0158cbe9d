/**
 * H computed by onnxruntime in the capture graph (src/compensate/gram-graph.ts) against the JavaScript Gram
 * (gram.ts), block-diagonal H, position subsampling, and GPTQ under a block-diagonal H against full GPTQ.
 */

import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import {
  type RunWithOutputs,
  type TensorStatistics,
  captureStatistics,
  gptqQuantize,
  mergeStatistics,
  statisticsTargets,
} from '../src/compensate/index.js';
import { GramAccumulator, addConvPatches, convGeometry } from '../src/compensate/gram.js';
import { blockChannels } from '../src/compensate/gram-graph.js';
import { diagonalBlocks, gptqBlocks, statisticsMisfit } from '../src/compensate/planes.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { openOnnx } from '../src/formats/onnx/reader.js';
import type { QuantizeSettings } from '../src/quantize/tensor.js';
import { floatTensor, valueInfo } from './helpers/onnx-fixtures.js';
import { feedsRunner } from './helpers/ort.js';
import { relDiff } from './helpers/compare.js';
import { gaussian } from './helpers/random.js';

const INTS = onnx.AttributeProto.AttributeType.INTS;
const attr = (name: string, v: number | number[] | string): onnx.IAttributeProto =>
  typeof v === 'string'
    ? { name, s: new TextEncoder().encode(v), type: onnx.AttributeProto.AttributeType.STRING }
    : Array.isArray(v)
      ? { name, ints: v, type: INTS }
      : { name, i: v, type: onnx.AttributeProto.AttributeType.INT };

/** Convolutions of every kind the in-graph Gram handles, on a batch of two. */
function convModel(opset = 17): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: opset < 11 ? 5 : 8,
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: 'convs',
      initializer: [
        floatTensor('W3', [16, 24, 3, 3], gaussian(16 * 24 * 9, 61, 0.2)),
        floatTensor('Wg', [32, 4, 3, 3], gaussian(32 * 4 * 9, 62, 0.2)),
        floatTensor('W1', [64, 24, 1, 1], gaussian(64 * 24, 63, 0.2)),
        floatTensor('W1d', [16, 6, 5], gaussian(16 * 6 * 5, 64, 0.2)),
        floatTensor('Ws', [8, 16, 2, 2], gaussian(8 * 16 * 4, 65, 0.2)),
      ],
      node: [
        { opType: 'Conv', input: ['a', 'W3'], output: ['y3'], attribute: [attr('pads', [1, 1, 1, 1])] },
        {
          opType: 'Conv',
          input: ['g', 'Wg'],
          output: ['yg'],
          attribute: [attr('group', 2), attr('strides', [2, 1]), attr('dilations', [1, 2]), attr('pads', [1, 2, 0, 1])],
        },
        { opType: 'Conv', input: ['a', 'W1'], output: ['y1'], attribute: [] },
        {
          opType: 'Conv',
          input: ['b', 'W1d'],
          output: ['yb'],
          attribute: [attr('auto_pad', 'SAME_LOWER'), attr('strides', [2])],
        },
        // a value computed in the graph (not a graph input), strided 2×2 kernel
        { opType: 'Relu', input: ['y3'], output: ['r3'] },
        { opType: 'Conv', input: ['r3', 'Ws'], output: ['ys'], attribute: [attr('strides', [2, 2])] },
      ],
      input: [valueInfo('a', [2, 24, 9, 10]), valueInfo('g', [2, 8, 7, 8]), valueInfo('b', [2, 6, 11])],
      output: [
        valueInfo('y1', [2, 64, 9, 10]),
        valueInfo('yg', [2, 32, 3, 7]),
        valueInfo('yb', [2, 16, 6]),
        valueInfo('ys', [2, 8, 4, 5]),
      ],
    },
  }).finish();
}

const feeds = (seed: number): Record<string, ort.Tensor> => ({
  a: new ort.Tensor('float32', gaussian(2 * 24 * 90, seed, 1), [2, 24, 9, 10]),
  g: new ort.Tensor('float32', gaussian(2 * 8 * 56, seed + 1, 1), [2, 8, 7, 8]),
  b: new ort.Tensor('float32', gaussian(2 * 6 * 11, seed + 2, 1), [2, 6, 11]),
});

/** Block b of a full K×K matrix. */
function subBlock(h: ArrayLike<number>, k: number, c0: number, w: number): Float64Array {
  const out = new Float64Array(w * w);
  for (let i = 0; i < w; i++) for (let j = 0; j < w; j++) out[i * w + j] = h[(c0 + i) * k + c0 + j];
  return out;
}

describe('H computed by onnxruntime in the capture graph', () => {
  const model = convModel();
  const reader = openOnnx('convs.onnx', model);
  const targets = statisticsTargets(reader);
  const runs = [feeds(71), feeds(81)];

  it('equals the JavaScript Gram for plain, grouped/strided/dilated, 1×1, 1-D SAME_LOWER and inner convolutions', async () => {
    const js = await captureStatistics(model, targets, feedsRunner(runs));
    const graph = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true });
    expect(Object.fromEntries(graph.missing)).toEqual({});
    expect([...graph.stats.keys()].sort()).toEqual(['W1', 'W1d', 'W3', 'Wg', 'Ws']);
    for (const [key, s] of graph.stats) {
      const ref = js.stats.get(key)!;
      expect([s.k, s.grouping, s.h.length, s.blocks], key).toEqual([ref.k, ref.grouping, ref.h.length, undefined]);
      expect(s.rows, key).toEqual(ref.rows);
      for (let g = 0; g < s.h.length; g++) expect(relDiff(s.h[g], ref.h[g]), key).toBeLessThan(1e-5);
    }
    // the JS path did expose the inputs; the in-graph path computes every H in the session
    expect(graph.stats.get('W3')!.rows).toEqual([2 * 2 * 90]);
    expect([js.inGraph, graph.inGraph]).toEqual([0, 5]);
  });

  it('a model of an opset before 11 (Gemm needs C, Slice takes attributes) keeps the JavaScript Gram', async () => {
    const old = convModel(10);
    const js = await captureStatistics(old, targets, feedsRunner(runs));
    const graph = await captureStatistics(old, targets, feedsRunner(runs), { gramInGraph: true, maxBlock: 64 });
    expect(graph.inGraph).toBe(0);
    expect([...graph.stats.keys()].sort()).toEqual(['W1', 'W1d', 'W3', 'Wg', 'Ws']);
    for (const [key, s] of graph.stats) expect(s.h, key).toEqual(js.stats.get(key)!.h);
  });

  it('block-diagonal: the blocks of whole channels equal the diagonal blocks of full H', async () => {
    const full = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true });
    const blocked = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true, maxBlock: 72 });
    // W3: 24 channels × 9 taps = 216 → 3 blocks of 8 channels; W1 (1×1, K 24): one block of 24, kept full
    const w3 = blocked.stats.get('W3')!;
    expect(w3.blocks).toEqual([72, 72, 72]);
    expect(w3.h[0].length).toBe(3 * 72 * 72);
    expect(blocked.stats.get('W1')!.blocks).toBeUndefined();
    expect(blockChannels(10, 9, 72)).toEqual([5, 5]);
    expect(blockChannels(24, 1, 10)).toEqual([8, 8, 8]);
    const ref = full.stats.get('W3')!.h[0];
    const views = diagonalBlocks(w3.h[0], w3.blocks!);
    for (let b = 0; b < 3; b++) expect(relDiff(views[b], subBlock(ref, 216, b * 72, 72))).toBeLessThan(1e-5);
    // grouped: 4 channels per group × 9 = 36 → blocks of 2 channels (18) in each group
    const blockedG = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true, maxBlock: 20 });
    const wg = blockedG.stats.get('Wg')!;
    expect([wg.blocks, wg.h.length]).toEqual([[18, 18], 2]);
    for (let g = 0; g < 2; g++) {
      const r = full.stats.get('Wg')!.h[g];
      const v = diagonalBlocks(wg.h[g], wg.blocks!);
      for (let b = 0; b < 2; b++) expect(relDiff(v[b], subBlock(r, 36, b * 18, 18))).toBeLessThan(1e-5);
    }
  });

  it('block-diagonal statistics merge block by block, and are checked against the layout', async () => {
    const stats = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true, maxBlock: 64 });
    const w3 = stats.stats.get('W3')!; // K = 24·9 = 216: blocks of 7 channels (63 features) and fewer
    expect(w3.blocks!.reduce((a, b) => a + b, 0)).toBe(216);
    expect(w3.blocks!.length).toBeGreaterThan(1);
    const merged = mergeStatistics('W3', [w3, w3])!;
    expect(merged.blocks).toEqual(w3.blocks);
    expect(merged.rows).toEqual(w3.rows.map((r) => 2 * r));
    expect(Array.from(merged.h[0])).toEqual(Array.from(w3.h[0], (v) => 2 * v));
    // full H and block-diagonal H of the same tensor do not merge
    const full = (await captureStatistics(model, targets, feedsRunner(runs))).stats.get('W3')!;
    expect(mergeStatistics('W3', [w3, full])).toBeUndefined();
    // blocks that do not add up to K are refused before any rounding
    const layout: LayoutSpec = { kind: 'conv', nfin: 24, nfout: 16, kx: 3, ky: 3, order: 'out_in' };
    expect(statisticsMisfit(layout, w3)).toBeUndefined();
    expect(statisticsMisfit(layout, { ...w3, blocks: w3.blocks!.slice(1) })).toMatch(/blocks of/);
    expect(statisticsMisfit(layout, { ...w3, h: [w3.h[0].subarray(1)] })).toMatch(/H of another size/);
  });

  it('in parts (gramPartBytes): a pass over the samples per part, the same H, held in float32', async () => {
    const passes = (n: { count: number }): RunWithOutputs => {
      const inner = feedsRunner(runs);
      return async (m, extra, onRun) => {
        n.count++;
        await inner(m, extra, onRun);
      };
    };
    const one = { count: 0 };
    const whole = await captureStatistics(model, targets, passes(one), { gramInGraph: true, maxBlock: 72 });
    const split = { count: 0 };
    // W3's Grams alone are 3 × 72² floats: 64 KB a part puts every convolution in a part of its own but W3's
    const parted = await captureStatistics(model, targets, passes(split), {
      gramInGraph: true,
      maxBlock: 72,
      gramPartBytes: 64 * 1024,
    });
    expect([whole.parts, one.count]).toEqual([1, 1]);
    expect(parted.parts).toBeGreaterThan(1);
    expect(split.count).toBe(parted.parts);
    // runs count the samples once, not once a part
    expect(parted.runs).toBe(whole.runs);
    expect([...parted.stats.keys()].sort()).toEqual([...whole.stats.keys()].sort());
    for (const [key, s] of parted.stats) {
      const ref = whole.stats.get(key)!;
      expect([s.rows, s.blocks], key).toEqual([ref.rows, ref.blocks]);
      for (let g = 0; g < s.h.length; g++) {
        expect(s.h[g], key).toBeInstanceOf(Float32Array);
        expect(relDiff(s.h[g], ref.h[g]), key).toBeLessThan(1e-6);
      }
    }
    // a budget below one convolution's Grams: every convolution a part of its own
    const each = await captureStatistics(model, targets, feedsRunner(runs), {
      gramInGraph: true,
      maxBlock: 72,
      gramPartBytes: 1,
    });
    expect(each.parts).toBe(each.inGraph);
  });

  it('position stride 2: the patches of every other output row and column', async () => {
    const sub = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true, positionStride: 2 });
    const w3 = sub.stats.get('W3')!;
    // reference: the JS im2col with the strides doubled (pads 1: rows and columns 0, 2, 4, … of the 9×10 output)
    const geom = convGeometry({ pads: [1, 1, 1, 1], strides: [2, 2] }, 24, [9, 10], [3, 3])!;
    const acc = new GramAccumulator(216);
    for (const f of runs) for (let n = 0; n < 2; n++) addConvPatches(f.a.data as Float32Array, n * 24 * 90, geom, [acc]);
    expect(w3.rows).toEqual([2 * 2 * 5 * 5]);
    expect(relDiff(w3.h[0], acc.finish())).toBeLessThan(1e-5);
    // SAME_* auto padding is not subsampled (the op's begin pads would move): every position
    const full = await captureStatistics(model, targets, feedsRunner(runs), { gramInGraph: true });
    expect(sub.stats.get('W1d')!.rows).toEqual(full.stats.get('W1d')!.rows);
  });
});

describe('GPTQ under a block-diagonal H', () => {
  const rows = 6;
  const k = 40;
  const blocks = [16, 16, 8];
  // a correlated H whose off-diagonal blocks are then zeroed
  const x = gaussian(200 * k, 91, 1);
  for (let t = 0; t < 200; t++) for (let i = 1; i < k; i++) x[t * k + i] += 0.7 * x[t * k + i - 1];
  const full = new Float64Array(k * k);
  for (let t = 0; t < 200; t++)
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) full[i * k + j] += x[t * k + i] * x[t * k + j];
  const masked = new Float64Array(k * k);
  const packed = new Float64Array(blocks.reduce((s, w) => s + w * w, 0));
  for (let b = 0, c0 = 0, at = 0; b < blocks.length; c0 += blocks[b], at += blocks[b] ** 2, b++)
    for (let i = 0; i < blocks[b]; i++)
      for (let j = 0; j < blocks[b]; j++) {
        masked[(c0 + i) * k + c0 + j] = full[(c0 + i) * k + c0 + j];
        packed[at + i * blocks[b] + j] = full[(c0 + i) * k + c0 + j];
      }
  const w = Float64Array.from(gaussian(rows * k, 92, 1));
  const los = new Float64Array(rows).fill(-2.5);
  const spans = new Float64Array(rows).fill(5);
  const m = { rows, k, w, los, spans, bits: 3, stride: 1 };

  it('gives full GPTQ’s codes and output error when H is block-diagonal', () => {
    const a = gptqQuantize(m, masked);
    const b = gptqBlocks(m, packed, blocks, {});
    expect(b.method).toBe('gptq');
    expect(b.lambda).toBeCloseTo(a.lambda, 12);
    expect(Array.from(b.codes)).toEqual(Array.from(a.codes));
    expect(b.outputError!).toBeCloseTo(a.outputError!, 9);
    // and it differs from full GPTQ with the off-diagonal blocks (they carry error across blocks)
    expect(Array.from(gptqQuantize(m, full).codes)).not.toEqual(Array.from(a.codes));
  });

  it('a block whose inputs are all zero is dead columns, as full GPTQ counts them; any other failure rounds all', () => {
    const dead = Float64Array.from(packed);
    dead.fill(0, 16 * 16, 2 * 16 * 16); // block 1: its 16 inputs never non-zero
    const full16 = new Float64Array(k * k);
    for (let b = 0, c0 = 0, at = 0; b < blocks.length; c0 += blocks[b], at += blocks[b] ** 2, b++)
      for (let i = 0; i < blocks[b]; i++)
        for (let j = 0; j < blocks[b]; j++) full16[(c0 + i) * k + c0 + j] = dead[at + i * blocks[b] + j];
    const a = gptqQuantize(m, full16);
    const b = gptqBlocks(m, dead, blocks, {});
    expect([b.method, b.deadColumns]).toEqual(['gptq', 16]);
    expect([a.method, a.deadColumns]).toEqual(['gptq', 16]);
    expect(Array.from(b.codes)).toEqual(Array.from(a.codes));
    expect(b.outputError!).toBeCloseTo(a.outputError!, 9);
    // a block that is not positive definite: the whole matrix to nearest, with the block named
    const broken = Float64Array.from(packed);
    const at = 2 * 16 * 16; // block 2 (8 wide): inputs 0 and 1 correlated beyond their own variances
    broken[at + 1] = broken[at + 8] = 1e6;
    const c = gptqBlocks(m, broken, blocks, { damp: 0 });
    expect(c.method).toBe('rtn');
    expect(c.reason).toMatch(/^block 2: H is not positive definite/);
    expect(Array.from(c.codes)).toEqual(Array.from(gptqQuantize(m, undefined).codes));
  });

  it('one block covering every column is full GPTQ', () => {
    const a = gptqQuantize(m, full, { actOrder: true });
    const b = gptqBlocks(m, full, [k], { actOrder: true });
    expect(Array.from(b.codes)).toEqual(Array.from(a.codes));
    expect(b.outputError).toBe(a.outputError);
  });

  it('statistics with blocks flow through compensatePlanes and planeOutputError like the masked full H', async () => {
    const { compensatePlanes, planeOutputError } = await import('../src/compensate/planes.js');
    const layout = { kind: 'fc', nin: k, nout: rows, order: 'in_out' } as const;
    const plane = new Float32Array(k * rows);
    for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) plane[i * rows + r] = w[r * k + i];
    const shapes = [{ rows: k, cols: rows, channelWidth: 1, label: 'w' }];
    const settings: QuantizeSettings = { bits: 8, range: 'channel', stride: 32, clip: false };
    const stat = (h: Float64Array, b?: number[]): TensorStatistics => ({
      key: 'w',
      k,
      grouping: 'none',
      h: [h],
      rows: [200],
      sources: [],
      ...(b ? { blocks: b } : {}),
    });
    const [qa] = compensatePlanes([plane], shapes, layout, settings, stat(masked));
    const [qb] = compensatePlanes([plane], shapes, layout, settings, stat(packed, blocks));
    expect(qb.compensation.method).toBe('gptq');
    expect(Array.from(qb.codes)).toEqual(Array.from(qa.codes));
    const ea = planeOutputError(layout, shapes, [plane], [qa.restored], stat(masked))!;
    const eb = planeOutputError(layout, shapes, [plane], [qb.restored], stat(packed, blocks))!;
    expect(eb.error).toBeCloseTo(ea.error, 6);
    expect(eb.power).toBeCloseTo(ea.power, 6);
    expect(ea.error).toBeGreaterThan(0);
    // the prepared inverses let go (what the error model does after each tensor): prepared again, the same codes
    const { forgetPrepared } = await import('../src/compensate/planes.js');
    const packedStats = stat(packed, blocks);
    const [q1] = compensatePlanes([plane], shapes, layout, settings, packedStats);
    forgetPrepared(packedStats);
    const [q2] = compensatePlanes([plane], shapes, layout, settings, packedStats);
    expect(Array.from(q2.codes)).toEqual(Array.from(q1.codes));
    // H held in float32 (statistics computed by onnxruntime): the same codes as its float64 values
    const [q3] = compensatePlanes([plane], shapes, layout, settings, {
      ...packedStats,
      h: [Float64Array.from(Float32Array.from(packed))],
    });
    const [q4] = compensatePlanes([plane], shapes, layout, settings, { ...packedStats, h: [Float32Array.from(packed)] });
    expect(Array.from(q4.codes)).toEqual(Array.from(q3.codes));
  });
});

describe('the error model on sampled output units (block-diagonal statistics)', () => {
  it('keeps every n-th output channel of a conv plane, whole, with the layout to match', async () => {
    const { sampleOutputUnits } = await import('../src/rate/compensated.js');
    const { planeMatrices } = await import('../src/compensate/planes.js');
    const { gatherPlanes, planeShapes } = await import('../src/layout/planes.js');
    const layout = { kind: 'conv', nfout: 10, nfin: 3, kx: 3, ky: 3, order: 'out_in' } as const;
    const values = gaussian(10 * 3 * 9, 93, 1);
    const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
    const shapes = planeShapes(layout);
    const s = sampleOutputUnits(planes, shapes, layout, 3)!;
    expect(s.units).toBe(4); // channels 0, 3, 6, 9
    expect(s.layout).toEqual({ ...layout, nfout: 4 });
    const [full] = planeMatrices(layout, shapes, 0, 1);
    const [part] = planeMatrices(s.layout, s.shapes, 0, 1);
    for (let r = 0; r < 4; r++)
      for (let i = 0; i < 27; i++) expect(s.planes[0][part.index[r * 27 + i]]).toBe(planes[0][full.index[3 * r * 27 + i]]);
    // an LSTM layout or a stride of 1 is left alone
    expect(sampleOutputUnits(planes, shapes, layout, 1)).toBeUndefined();
  });
});
