/**
 * Layers whose output channels a BatchNormalization rescales keep a range per channel under rate control
 * (src/pipeline/normalized.ts): with one range for the layer, channels of small weights lose their precision, and
 * BatchNorm scales their error up with them.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, openModel } from '../src/index.js';
import { channelNormalizedWeights } from '../src/pipeline/normalized.js';
import { channelSpread, layerRangeProbe, LAYER_PROBE_SPREAD } from '../src/pipeline/allocate.js';
import { PROBE_STEP, type TensorRate } from '../src/rate/allocate.js';
import { batchNormClassifier } from './helpers/onnx-builder.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** The keys channelNormalizedWeights finds in a model file. */
function normalized(file: string): string[] {
  const reader = openModel(file);
  try {
    return [...channelNormalizedWeights(reader, () => readFileSync(file))].sort();
  } finally {
    reader.close();
  }
}

/** Four 8-channel convolutions side by side from x, each followed by a different chain, and a 1-d BatchNorm MLP. */
function chains(): Uint8Array {
  const c = 8;
  const kernel = (name: string): onnx.ITensorProto => floatTensor(name, [c, 3, 3, 3], gaussian(c * 27, name.length, 0.2));
  const bn = (p: string): onnx.ITensorProto[] => [
    floatTensor(`${p}.g`, [c], new Float32Array(c).fill(1)),
    floatTensor(`${p}.b`, [c], new Float32Array(c)),
    floatTensor(`${p}.m`, [c], new Float32Array(c)),
    floatTensor(`${p}.v`, [c], new Float32Array(c).fill(1)),
  ];
  const norm = (p: string, input: string, output: string): onnx.INodeProto => ({
    opType: 'BatchNormalization',
    input: [input, `${p}.g`, `${p}.b`, `${p}.m`, `${p}.v`],
    output: [output],
  });
  const conv = (w: string, out: string): onnx.INodeProto => ({ opType: 'Conv', input: ['x', w], output: [out] });
  const graph: onnx.IGraphProto = {
    name: 'chains',
    initializer: [
      ...['direct.w', 'relu.w', 'bias.w', 'residual.w', 'plain.w'].map(kernel),
      ...['n1', 'n2', 'n3', 'n4'].flatMap(bn),
      floatTensor('bias', [1, c, 1, 1], new Float32Array(c).fill(0.1)),
      floatTensor('fc.w', [4 * c * 4 * 4, 16], gaussian(4 * c * 16 * 16, 3, 0.05)),
      floatTensor('n5.g', [16], new Float32Array(16).fill(1)),
      floatTensor('n5.b', [16], new Float32Array(16)),
      floatTensor('n5.m', [16], new Float32Array(16)),
      floatTensor('n5.v', [16], new Float32Array(16).fill(1)),
      floatTensor('shape', [2], new Float32Array(0)),
    ].filter((t) => t.name !== 'shape'),
    node: [
      // Conv → BatchNorm
      conv('direct.w', 'a0'),
      norm('n1', 'a0', 'a1'),
      // Conv → Relu → BatchNorm
      conv('relu.w', 'b0'),
      { opType: 'Relu', input: ['b0'], output: ['b1'] },
      norm('n2', 'b1', 'b2'),
      // Conv → Add(constant) → BatchNorm
      conv('bias.w', 'c0'),
      { opType: 'Add', input: ['c0', 'bias'], output: ['c1'] },
      norm('n3', 'c1', 'c2'),
      // Conv → BatchNorm and → Add (a residual sees it unnormalized): not
      conv('residual.w', 'd0'),
      norm('n4', 'd0', 'd1'),
      { opType: 'Add', input: ['d0', 'd1'], output: ['d2'] },
      // Conv → Relu → the output: not
      conv('plain.w', 'e0'),
      { opType: 'Relu', input: ['e0'], output: ['e1'] },
      // MatMul → BatchNorm over its 16 features
      { opType: 'Concat', input: ['a1', 'b2', 'c2', 'd2'], output: ['f0'], attribute: [{ name: 'axis', i: 1, type: 2 }] },
      { opType: 'Flatten', input: ['f0'], output: ['f1'] },
      { opType: 'MatMul', input: ['f1', 'fc.w'], output: ['f2'] },
      norm('n5', 'f2', 'y'),
    ],
    input: [valueInfo('x', [1, 3, 6, 6])],
    output: [valueInfo('y', [1, 16]), valueInfo('e1', [1, c, 4, 4])],
  };
  return modelBytes(graph);
}

describe('layers a BatchNormalization normalizes', () => {
  it('found directly, past an activation or a constant added, a MatMul too; not where the value also goes elsewhere', () => {
    const file = join(dir, 'chains.onnx');
    writeFileSync(file, chains());
    expect(normalized(file)).toEqual(['bias.w', 'direct.w', 'fc.w', 'relu.w']);
  });

  it('the BatchNorm classifier: every convolution, not the Gemm head', async () => {
    const file = join(dir, 'bn.onnx');
    writeFileSync(file, (await batchNormClassifier()).bytes);
    const found = normalized(file);
    expect(found).toContain('stem.weight');
    expect(found.filter((k) => k.endsWith('.weight') && k.startsWith('block'))).toHaveLength(16);
    expect(found.some((k) => k.startsWith('head.'))).toBe(false);
  });

  it('rate control keeps their range per channel: channels 20× smaller are not crushed by one range for the layer', async () => {
    const file = join(dir, 'bn-small.onnx');
    writeFileSync(file, (await batchNormClassifier({ smallChannels: true })).bytes);
    const out = join(dir, 'bn-small.nnm');
    const logs: string[] = [];
    const r = await compressModel(file, out, { targetBpw: 7, minFidelity: 0, onLog: (m) => logs.push(m) });
    const said =
      /(\d+) tensors feed a per-channel normalization \(BatchNormalization, InstanceNormalization\): a range per channel only/.exec(
        logs.join('\n'),
      );
    const a = new Archive(out);
    try {
      const convs = a.manifest.tensors.filter((x) => x.layout && !x.name.startsWith('head.'));
      expect(Number(said?.[1])).toBe(convs.length);
      for (const t of convs) expect(t.quant?.range, t.name).toBe('channel');
    } finally {
      a.close();
    }
    // one range for those layers (before): fidelity 0.62 at 7 bits/weight; a range per channel 0.93
    expect(r.quality!.fidelity).toBeGreaterThan(0.85);
  }, 300_000);
});

/**
 * A convolution whose every fourth output channel is 20× smaller, scaled back up by a constant per-channel Mul (a
 * BatchNorm folded into the next layer's input side, as a normalization the graph no longer names), then a second
 * convolution.
 */
function rescaled(): Uint8Array {
  const [cin, c, cout] = [16, 64, 64];
  const size = (o: number): number => (o % 4 === 0 ? 0.05 : 1);
  const w1 = gaussian(c * cin * 9, 11, Math.sqrt(2 / (cin * 9))).map((v, i) => v * size(Math.floor(i / (cin * 9))));
  const back = Float32Array.from({ length: c }, (_, o) => 1 / size(o));
  const graph: onnx.IGraphProto = {
    name: 'rescaled',
    initializer: [
      floatTensor('conv1.w', [c, cin, 3, 3], w1),
      floatTensor('scale', [1, c, 1, 1], back),
      floatTensor('conv2.w', [cout, c, 3, 3], gaussian(cout * c * 9, 12, Math.sqrt(2 / (c * 9)))),
    ],
    node: [
      { opType: 'Conv', input: ['x', 'conv1.w'], output: ['a'], attribute: [{ name: 'pads', ints: [1, 1, 1, 1], type: 7 }] },
      { opType: 'Mul', input: ['a', 'scale'], output: ['b'] },
      { opType: 'Relu', input: ['b'], output: ['r'] },
      { opType: 'Conv', input: ['r', 'conv2.w'], output: ['y'] },
    ],
    input: [valueInfo('x', [1, cin, 12, 12])],
    output: [valueInfo('y', [1, cout, 10, 10])],
  };
  return modelBytes(graph);
}

describe('one range for the layer, probed where channels differ in size', () => {
  it('channelSpread: about 1 for alike channels, large where a quarter are 20× smaller', () => {
    const rows = 36;
    const cols = 64;
    const alike = gaussian(rows * cols, 5, 1);
    const apart = alike.map((v, i) => ((i % cols) % 4 === 0 ? v * 0.05 : v));
    const shapes = [{ rows, cols, channelWidth: 1, label: '' }];
    expect(channelSpread({ planes: [alike], shapes })).toBeLessThan(1.2);
    expect(channelSpread({ planes: [apart], shapes })).toBeGreaterThan(50);
    expect(channelSpread({ planes: [apart], shapes })).toBeGreaterThan(LAYER_PROBE_SPREAD);
  });

  it('layerRangeProbe weighs the layer-range candidates by how much more they move the outputs, never less', async () => {
    const rate = (): TensorRate => ({
      key: 'w',
      weights: 100,
      sensitivity: 1,
      candidates: [
        { stride: 1, relStep: PROBE_STEP, range: 'channel', bits: 100, sse: 2 },
        { stride: 1, relStep: PROBE_STEP, range: 'layer', bits: 90, sse: 2 },
        { stride: 1, relStep: 1 / 8, range: 'layer', bits: 200, sse: 0.5 },
      ],
    });
    const worse = rate();
    expect(await layerRangeProbe(worse, 2, async (c) => (c.range === 'layer' ? 10 : 2))).toBe(5);
    expect(worse.candidates.map((c) => c.sse)).toEqual([2, 10, 2.5]);
    const harmless = rate();
    expect(await layerRangeProbe(harmless, 2, async () => 1)).toBe(1);
    expect(harmless.candidates.map((c) => c.sse)).toEqual([2, 2, 0.5]);
    // a ratio beyond 10⁴ is 10⁴ (a per-channel probe of almost no error must not push λ's search off the others)
    const huge = rate();
    expect(await layerRangeProbe(huge, 1e-20, async () => 1)).toBe(1e4);
    // the probe's placeholder for a candidate of no error (1e-30) is not a measurement
    expect(await layerRangeProbe(rate(), 1e-30, async () => 1)).toBe(1);
    // under --compensate, the layer candidate of the same kind of codes as the per-channel probe's
    const both = rate();
    both.candidates.push({ stride: 1, relStep: PROBE_STEP, range: 'layer', bits: 95, sse: 1, compensated: true });
    const probed: Array<boolean | undefined> = [];
    await layerRangeProbe(both, 2, async (c) => (probed.push(c.compensated), 4), true);
    expect(probed).toEqual([true]);
    // unmeasured: nothing weighed
    const unseen = rate();
    expect(await layerRangeProbe(unseen, NaN, async () => 10)).toBe(1);
    expect(await layerRangeProbe(unseen, 2, async () => NaN)).toBe(1);
    expect(unseen.candidates.map((c) => c.sse)).toEqual([2, 2, 0.5]);
  });

  it('a layer rescaled per channel downstream without a BatchNorm (folded) keeps a range per channel under a budget', async () => {
    const file = join(dir, 'rescaled.onnx');
    writeFileSync(file, rescaled());
    expect(normalized(file)).toEqual([]); // (no normalization op to see)
    const logs: string[] = [];
    await compressModel(file, join(dir, 'rescaled.nnm'), { targetBpw: 4, minFidelity: 0, onLog: (m) => logs.push(m) });
    expect(logs.join('\n')).toMatch(/tensors? moves? the outputs more per squared error with one range for the layer .*conv1\.w/);
    const a = new Archive(join(dir, 'rescaled.nnm'));
    try {
      expect(a.manifest.tensors.find((t) => t.name === 'conv1.w')!.quant!.range).toBe('channel');
    } finally {
      a.close();
    }
  }, 120_000);
});
