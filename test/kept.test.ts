/**
 * Kept tensors' precision by use: recurrent biases at bfloat16's 7 mantissa bits, everything else (conv and
 * dense biases, norms, kept weights, unknown uses) at float16's full 10 (quantize/half.ts keptMantissaBits), with
 * uses seen through data-movement ops (a bias sliced and concatenated before the LSTM that adds it).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, decodeAllTensors, decompressArchive, openModel } from '../src/index.js';
import { fromHalf, keptHalf, keptMantissaBits } from '../src/quantize/half.js';
import { syntheticCalibrationSet } from '../src/calibration/synthetic.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';
import { resolveOptions } from '../src/pipeline/options.js';

const T = onnx.TensorProto.DataType;
const use = (op: string, inputIndex: number): { op: string; inputIndex: number } => ({ op, inputIndex });

describe('keptMantissaBits', () => {
  it('7 bits for recurrent biases; 10 for conv and dense biases, norms, weights, unknown ops and no graph', () => {
    expect(keptMantissaBits([use('LSTM', 3)])).toBe(7);
    expect(keptMantissaBits([use('GRU', 3), use('LSTM', 3)])).toBe(7);
    expect(keptMantissaBits([use('Conv', 2)])).toBe(10); // may hold a folded BatchNorm
    expect(keptMantissaBits([use('Gemm', 2), use('Add', 1)])).toBe(10);
    for (const i of [1, 2, 3, 4]) expect(keptMantissaBits([use('BatchNormalization', i)])).toBe(10);
    expect(keptMantissaBits([use('Conv', 1)])).toBe(10); // a kept weight
    expect(keptMantissaBits([use('LSTM', 3), use('Mul', 1)])).toBe(10); // every use must be one
    expect(keptMantissaBits([use('Sub', 1)])).toBe(10);
    expect(keptMantissaBits([])).toBe(10); // safetensors: no graph
  });
});

/** A graph (not meant to run) with each kind of kept tensor: a sliced + concatenated LSTM bias, a BatchNorm, a small conv. */
function keptModel(): Uint8Array {
  const f = (name: string, dims: number[], seed: number, scale = 1): onnx.ITensorProto =>
    floatTensor(
      name,
      dims,
      gaussian(
        dims.reduce((a, b) => a * b, 1),
        seed,
        scale,
      ),
    );
  const i64 = (name: string, v: number[]): onnx.ITensorProto => ({
    name,
    dims: [v.length],
    dataType: T.INT64,
    rawData: new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer),
  });
  const node = (opType: string, input: string[], output: string): onnx.INodeProto => ({ opType, input, output: [output] });
  const inits = [
    f('lstm_w', [1, 32, 4], 1),
    f('lstm_r', [1, 32, 8], 2),
    f('bias_all', [80], 3, 0.1),
    f('bias_more', [16], 4, 0.1),
    f('conv_w', [4, 3, 3, 3], 5),
    f('conv_b', [4], 6, 0.1),
    f('bn_scale', [4], 7),
    f('bn_bias', [4], 8),
    f('bn_mean', [4], 9, 30),
    { ...f('bn_var', [4], 10), rawData: new Uint8Array(Float32Array.of(0.5, 1, 2, 4).buffer) },
    i64('s0', [0]),
    i64('s1', [48]),
  ];
  const graph: onnx.IGraphProto = {
    name: 'kept',
    initializer: inits,
    node: [
      node('Slice', ['bias_all', 's0', 's1'], 'bias_part'),
      { ...node('Concat', ['bias_part', 'bias_more'], 'bias_lstm'), attribute: [{ name: 'axis', i: 0, type: 2 }] },
      {
        opType: 'LSTM',
        input: ['seq', 'lstm_w', 'lstm_r', 'bias_lstm'],
        output: ['h'],
        attribute: [{ name: 'hidden_size', i: 8, type: 2 }],
      },
      node('Conv', ['img', 'conv_w', 'conv_b'], 'c'),
      node('BatchNormalization', ['c', 'bn_scale', 'bn_bias', 'bn_mean', 'bn_var'], 'y'),
    ],
    input: [],
    output: [],
  };
  return modelBytes(graph);
}

describe('kept tensors by use', () => {
  const dir = tempDir();
  const file = join(dir, 'kept.onnx');
  writeFileSync(file, keptModel());

  it('the reader follows Slice and Concat to the LSTM that adds the bias', () => {
    const reader = openModel(file);
    try {
      const t = reader.tensors.find((e) => e.key === 'bias_all')!;
      expect(t.uses.map((u) => u.op)).toEqual(['Slice']);
      expect(t.consumers!.map((u) => `${u.op}:${u.inputIndex}`)).toEqual(['LSTM:3']);
      expect(reader.tensors.find((e) => e.key === 'bn_mean')!.consumers!.map((u) => u.op)).toEqual(['BatchNormalization']);
    } finally {
      reader.close();
    }
  });

  it('an archive keeps each at the precision of its use', async () => {
    const archive = join(dir, 'kept.nnm');
    await compressModel(file, archive, { check: false, force: true });
    const a = new Archive(archive);
    try {
      const values = await decodeAllTensors(a, { jobs: 1 });
      const reader = openModel(file);
      const expectBits: Record<string, number> = {
        bias_all: 7,
        bias_more: 7,
        conv_b: 10,
        bn_scale: 10,
        bn_bias: 10,
        bn_var: 10,
        bn_mean: 10,
        conv_w: 10,
      };
      for (const [key, bits] of Object.entries(expectBits)) {
        const record = a.manifest.tensors.find((t) => t.key === key)!;
        expect(record.half, key).toBeDefined();
        const original = reader.read(key);
        const want = fromHalf(keptHalf(original, bits)!, 0, original.length);
        expect([...values.get(key)!], `${key} at ${bits} bits`).toEqual([...want]);
      }
      // and the 7-bit ones really lost bits against the 10-bit cast (the test would pass with either otherwise)
      const o = reader.read('bias_more');
      expect([...fromHalf(keptHalf(o, 7)!, 0, 4)]).not.toEqual([...fromHalf(keptHalf(o, 10)!, 0, 4)]);
      reader.close();
    } finally {
      a.close();
    }
  });
});

/**
 * onnxruntime's dynamic quantization of y = relu(x·W1 + b1)·W2 + b2: the weights are uint8 with float scales, and
 * DynamicQuantizeLinear rounds each layer's input to uint8 as the model runs.
 */
function dynamicQuantizedModel(): Uint8Array {
  const quantized = (w: Float32Array): { codes: Uint8Array; scale: number } => {
    const max = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const scale = max / 127;
    return { codes: Uint8Array.from(w, (v) => 128 + Math.round(v / scale)), scale };
  };
  const w1 = quantized(gaussian(64 * 96, 11, 0.1));
  const w2 = quantized(gaussian(96 * 10, 12, 0.1));
  const u8 = (name: string, dims: number[], codes: Uint8Array): onnx.ITensorProto => ({
    name,
    dims,
    dataType: T.UINT8,
    rawData: codes,
  });
  const layer = (i: number, x: string, w: string, b: string): onnx.INodeProto[] => [
    { opType: 'DynamicQuantizeLinear', input: [x], output: [`q${i}`, `qs${i}`, `qz${i}`] },
    { opType: 'MatMulInteger', input: [`q${i}`, w, `qz${i}`, `${w}_zero`], output: [`m${i}`] },
    {
      opType: 'Cast',
      input: [`m${i}`],
      output: [`f${i}`],
      attribute: [{ name: 'to', i: T.FLOAT, type: onnx.AttributeProto.AttributeType.INT }],
    },
    { opType: 'Mul', input: [`qs${i}`, `${w}_scale`], output: [`s${i}`] },
    { opType: 'Mul', input: [`f${i}`, `s${i}`], output: [`d${i}`] },
    { opType: 'Add', input: [`d${i}`, b], output: [`a${i}`] },
  ];
  const graph: onnx.IGraphProto = {
    name: 'dynamic-quantized',
    initializer: [
      u8('w1', [64, 96], w1.codes),
      u8('w1_zero', [], Uint8Array.of(128)),
      floatTensor('w1_scale', [], Float32Array.of(w1.scale)),
      floatTensor('b1', [96], gaussian(96, 13, 0.1)),
      u8('w2', [96, 10], w2.codes),
      u8('w2_zero', [], Uint8Array.of(128)),
      floatTensor('w2_scale', [], Float32Array.of(w2.scale)),
      floatTensor('b2', [10], gaussian(10, 14, 0.1)),
    ],
    node: [
      ...layer(1, 'x', 'w1', 'b1'),
      { opType: 'Relu', input: ['a1'], output: ['h'] },
      ...layer(2, 'h', 'w2', 'b2').map((n) => (n.opType === 'Add' ? { ...n, output: ['y'] } : n)),
    ],
    input: [valueInfo('x', [4, 64])],
    output: [valueInfo('y', [4, 10])],
  };
  return modelBytes(graph);
}

describe('kept tensors of a graph that rounds its activations while it runs', () => {
  it('stay exact (a scale off by 2^-11 moves roundings a whole step): nothing lossy, so the model is not run', async () => {
    const dir = tempDir();
    const file = join(dir, 'dynamic.onnx');
    writeFileSync(file, dynamicQuantizedModel());
    const log: string[] = [];
    const r = await compressModel(file, join(dir, 'dynamic.nnm'), { onLog: (m) => log.push(m) });
    const kept = r.manifest.tensors.filter((t) => !t.layout);
    expect(kept.map((t) => t.key).sort()).toEqual(['b1', 'b2', 'w1_scale', 'w2_scale']);
    for (const t of kept) expect(t.half, t.key).toBeUndefined();
    // every tensor exact: the decompressed model holds the original's values, the gate has nothing to judge
    expect(r.quality).toEqual({ checked: false, reason: expect.stringMatching(/^nothing lossy/) });
    expect(log.some((m) => m.includes('rounds activations while it runs (DynamicQuantizeLinear)'))).toBe(true);
  });
});

describe('a model with no coded tensor and kept tensors at float16', () => {
  it('--target-bpw and --compensate have nothing to act on: said so, the gate still judges, no NaN', async () => {
    // y = (x · s) + b: two 64-value vectors, kept at float16 (too small to code), and nothing else
    const dir = tempDir();
    const file = join(dir, 'vectors.onnx');
    writeFileSync(
      file,
      modelBytes({
        name: 'vectors',
        node: [
          { opType: 'Mul', input: ['x', 's'], output: ['m'] },
          { opType: 'Add', input: ['m', 'b'], output: ['y'] },
        ],
        initializer: [floatTensor('s', [64], gaussian(64, 1, 1)), floatTensor('b', [64], gaussian(64, 2, 0.1))],
        input: [valueInfo('x', [1, 64])],
        output: [valueInfo('y', [1, 64])],
      }),
    );
    const log: string[] = [];
    const r = await compressModel(file, join(dir, 'vectors.nnm'), { targetBpw: 4, compensate: true, onLog: (m) => log.push(m) });
    expect(log).toContain(
      'no tensor is coded (every weight is kept: too small, or integer): the rate options have nothing to act on',
    );
    expect(log.some((m) => /NaN|allocated/.test(m))).toBe(false);
    expect(r.manifest.tensors.every((t) => !t.layout)).toBe(true);
    expect(r.quality?.checked).toBe(true);
    expect(r.quality?.passed).toBe(true);
    // a floor the float16 rounding misses: the refusal's remedy is the kept tensors, not finer codes (none is coded)
    const refused = await compressModel(file, join(dir, 'strict.nnm'), { minFidelity: 1 }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'E_QUALITY', message: expect.stringMatching(/--no-half-kept/) });
    expect((refused as Error).message).not.toMatch(/--bits 16/);
  });
});

describe('kept tensors whose values decide a shape, an index or a decision', () => {
  it('stay exact: a Resize scale, a Range delta, a float table cast to indices; a bias beside them is float16', async () => {
    // z = Resize(x · s + b, scales); n = Range(0, 1, 0.1); g = Gather(t, Cast(idx)). In float16, 1.2497 is 1.25 (z one
    // row and column larger), 0.1 is 0.09998 (11 values for 10), 2049 is 2048 (the wrong row)
    const dir = tempDir();
    const file = join(dir, 'shapes.onnx');
    const I64 = T.INT64;
    writeFileSync(
      file,
      modelBytes({
        name: 'shapes',
        node: [
          { opType: 'Mul', input: ['x', 's'], output: ['m'] },
          { opType: 'Add', input: ['m', 'b'], output: ['a'] },
          { opType: 'Resize', input: ['a', '', 'scales'], output: ['z'] },
          { opType: 'Range', input: ['start', 'limit', 'delta'], output: ['n'] },
          {
            opType: 'Cast',
            input: ['idx'],
            output: ['idx64'],
            attribute: [{ name: 'to', i: I64, type: onnx.AttributeProto.AttributeType.INT }],
          },
          { opType: 'Gather', input: ['table', 'idx64'], output: ['g'] },
        ],
        initializer: [
          floatTensor('s', [1, 1, 1, 8], gaussian(8, 1, 1)),
          floatTensor('b', [1, 1, 1, 8], gaussian(8, 2, 0.1)),
          floatTensor('scales', [4], Float32Array.from([1, 1, 1.2497, 1.2497])),
          floatTensor('start', [], Float32Array.of(0)),
          floatTensor('limit', [], Float32Array.of(1)),
          floatTensor('delta', [], Float32Array.of(0.1)),
          floatTensor('idx', [2], Float32Array.of(2049, 3)),
          floatTensor('table', [2100], gaussian(2100, 3, 1)),
        ],
        input: [valueInfo('x', [1, 1, 8, 8])],
        output: [valueInfo('z', [1, 1, 'h', 'w']), valueInfo('n', ['k']), valueInfo('g', [2])],
      }),
    );
    const r = await compressModel(file, join(dir, 'shapes.nnm'), {});
    const half = new Set(r.manifest.tensors.filter((t) => t.half).map((t) => t.key));
    for (const key of ['scales', 'delta', 'idx']) expect(half.has(key), key).toBe(false);
    for (const key of ['s', 'b']) expect(half.has(key), key).toBe(true);
    // the gate compares the same shapes, and the outputs match
    expect(r.quality?.passed).toBe(true);
    expect(r.quality?.fidelity).toBeGreaterThan(0.99);
  });
});

describe('kept tensors computed on before they decide an index or a phase', () => {
  it("stay exact: T5's ln 16 in its bucket formula, a diffusion model's timestep frequencies; a bias beside is float16", async () => {
    // idx = Cast<int64>(Log(n / 8) / ln16 · 8): ln16 in float16 (2.77344) moves the buckets of n = 16, 32, 64 by one;
    // emb = [Cos(t · f), Sin(t · f)]: f's rounding is multiplied by t (up to 999)
    const dir = tempDir();
    const file = join(dir, 'reach.onnx');
    const half = Array.from({ length: 32 }, (_, i) => Math.exp((-Math.log(10000) * i) / 32));
    writeFileSync(
      file,
      modelBytes({
        name: 'reach',
        node: [
          { opType: 'Div', input: ['n', 'eight'], output: ['q'] },
          { opType: 'Log', input: ['q'], output: ['lq'] },
          { opType: 'Div', input: ['lq', 'ln16'], output: ['r'] },
          { opType: 'Mul', input: ['r', 'eight_b'], output: ['s'] },
          {
            opType: 'Cast',
            input: ['s'],
            output: ['idx'],
            attribute: [{ name: 'to', i: T.INT64, type: onnx.AttributeProto.AttributeType.INT }],
          },
          { opType: 'Mul', input: ['t', 'freqs'], output: ['arg'] },
          { opType: 'Cos', input: ['arg'], output: ['c'] },
          { opType: 'Sin', input: ['arg'], output: ['si'] },
          { opType: 'Concat', input: ['c', 'si'], output: ['emb0'], attribute: [{ name: 'axis', i: 1, type: 2 }] },
          { opType: 'Add', input: ['emb0', 'b'], output: ['emb'] },
        ],
        initializer: [
          floatTensor('eight', [], Float32Array.of(8)),
          floatTensor('eight_b', [], Float32Array.of(8)),
          floatTensor('ln16', [], Float32Array.of(Math.log(16))),
          floatTensor('freqs', [1, 32], Float32Array.from(half)),
          floatTensor('b', [1, 64], gaussian(64, 4, 0.1)),
        ],
        input: [valueInfo('n', [5]), valueInfo('t', [1, 1])],
        output: [valueInfo('idx', [5], T.INT64), valueInfo('emb', [1, 64])],
      }),
    );
    const r = await compressModel(file, join(dir, 'reach.nnm'), { check: false });
    const halfKeys = new Set(r.manifest.tensors.filter((t) => t.half).map((t) => t.key));
    for (const key of ['ln16', 'freqs']) expect(halfKeys.has(key), key).toBe(false);
    expect(halfKeys.has('b')).toBe(true);
    // and it matters: the restored model's buckets are the original's (float16's ln 16 gives 15 for n = 64, not 16)
    await decompressArchive(join(dir, 'reach.nnm'), join(dir, 'restored.onnx'));
    const feeds = {
      n: new ort.Tensor('float32', Float32Array.of(16, 32, 64, 100, 9), [5]),
      t: new ort.Tensor('float32', Float32Array.of(999), [1, 1]),
    };
    const run = async (f: string): Promise<ort.InferenceSession.ReturnType> => {
      const session = await ort.InferenceSession.create(f);
      try {
        return await session.run(feeds);
      } finally {
        await session.release();
      }
    };
    const [a, b] = [await run(file), await run(join(dir, 'restored.onnx'))];
    expect(Array.from(b.idx.data as BigInt64Array)).toEqual(Array.from(a.idx.data as BigInt64Array));
    expect(Array.from(a.idx.data as BigInt64Array).map(Number)).toEqual([2, 4, 6, 7, 0]);
    const e0 = a.emb.data as Float32Array;
    const e1 = b.emb.data as Float32Array;
    // the embedding differs only by the float16 bias (≤ 2^-11 of 0.3), not by phases off at t = 999
    for (let i = 0; i < 64; i++) expect(Math.abs(e1[i] - e0[i]), `emb[${i}]`).toBeLessThan(1e-3);
  });
});

describe('a diffusion model’s timestep input', () => {
  it('gets synthetic timesteps of 0–999, said so (as ids it got 0–15, as a float N(0, 1))', async () => {
    for (const type of [T.INT64, T.FLOAT]) {
      const bytes = modelBytes({
        name: 'timestep',
        node: [
          { opType: 'Cast', input: ['timestep'], output: ['tf'], attribute: [{ name: 'to', i: T.FLOAT, type: 2 }] },
          { opType: 'Mul', input: ['tf', 'freqs'], output: ['arg'] },
          { opType: 'Sin', input: ['arg'], output: ['emb'] },
        ],
        initializer: [floatTensor('freqs', [1, 8], gaussian(8, 3, 0.1))],
        input: [valueInfo('timestep', ['batch'], type)],
        output: [valueInfo('emb', ['batch', 8])],
      });
      const set = await syntheticCalibrationSet(bytes, { count: 16 });
      expect(set.description).toMatch(/timestep (int64|float32)\[1\]: timesteps 0–999/);
      const values = await Promise.all(
        set.samples.map(async (x) => {
          const d = await x.load();
          if (d.kind !== 'feed') throw new Error('a feed sample');
          return Number(d.feed.timestep.data[0]);
        }),
      );
      expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...values)).toBeLessThan(1000);
      expect(Math.max(...values)).toBeGreaterThan(100);
      expect(values.every((v) => Number.isInteger(v))).toBe(true);
    }
  }, 60_000);
});

describe('kept tensors beside codes of 16 bits or more', () => {
  it('stay exact unless --half-kept is asked for (float16 would be the coarsest rounding in the model)', () => {
    expect(resolveOptions({ bits: 16 }).halfKept).toBe(false);
    expect(resolveOptions({ bits: 32 }).halfKept).toBe(false);
    expect(resolveOptions({ bits: 16, halfKept: true }).halfKept).toBe(true);
    expect(resolveOptions({}).halfKept).toBe(true);
    expect(resolveOptions({ bits: 8 }).halfKept).toBe(true);
  });
});

describe('an input with a default value (an initializer listed as a graph input)', () => {
  /** probs = Softmax((x · W + b) / temperature + prior); `temperature` and `prior` are listed as inputs where `all`. */
  function defaultsModel(listed: 'defaults' | 'all', irVersion = 8): Uint8Array {
    const inits = [
      floatTensor('W', [64, 256], gaussian(64 * 256, 11, 0.1)),
      floatTensor('b', [256], gaussian(256, 12, 0.1)),
      floatTensor('temperature', [], Float32Array.of(0.07)),
      floatTensor('prior', [256], gaussian(256, 13, 0.3)),
    ];
    const inputs = [valueInfo('x', [1, 64])];
    for (const t of inits)
      if (listed === 'all' || t.name === 'temperature' || t.name === 'prior') inputs.push(valueInfo(t.name!, t.dims as number[]));
    return onnx.ModelProto.encode({
      irVersion,
      opsetImport: [{ version: 17 }],
      graph: {
        name: 'defaults',
        node: [
          { opType: 'MatMul', input: ['x', 'W'], output: ['m'] },
          { opType: 'Add', input: ['m', 'b'], output: ['a'] },
          { opType: 'Div', input: ['a', 'temperature'], output: ['t'] },
          { opType: 'Add', input: ['t', 'prior'], output: ['l'] },
          { opType: 'Softmax', input: ['l'], output: ['probs'] },
        ],
        initializer: inits,
        input: inputs,
        output: [valueInfo('probs', [1, 256])],
      },
    }).finish();
  }

  it('keeps its exact value (0.07, not float16 0.0700073); a bias beside it is float16; the reader marks only defaults', async () => {
    const dir = tempDir();
    const file = join(dir, 'defaults.onnx');
    writeFileSync(file, defaultsModel('defaults'));
    const reader = openModel(file);
    const overridable = reader.tensors.filter((t) => t.overridable).map((t) => t.key);
    expect(overridable.sort()).toEqual(['prior', 'temperature']);
    const r = await compressModel(file, join(dir, 'defaults.nnm'), { check: false });
    const half = new Set(r.manifest.tensors.filter((t) => t.half).map((t) => t.key));
    expect(half.has('b')).toBe(true);
    expect(half.has('temperature')).toBe(false);
    expect(half.has('prior')).toBe(false);
    await decompressArchive(join(dir, 'defaults.nnm'), join(dir, 'restored.onnx'));
    const restored = openModel(join(dir, 'restored.onnx'));
    try {
      expect(restored.read('temperature')[0]).toBe(Math.fround(0.07));
      expect(Array.from(restored.read('prior'))).toEqual(Array.from(reader.read('prior')));
      // the bias is the float16 cast (the test would pass with every kept tensor exact otherwise)
      expect(Array.from(restored.read('b'))).not.toEqual(Array.from(reader.read('b')));
      // and the restored model still lists them as inputs with defaults
      expect(restored.tensors.filter((t) => t.overridable).length).toBe(2);
    } finally {
      restored.close();
      reader.close();
    }
  });

  it('is a weight where every initializer is listed (IR < 4, or an exporter keeping that convention)', () => {
    const dir = tempDir();
    for (const [name, bytes] of [
      ['all.onnx', defaultsModel('all')],
      ['ir3.onnx', defaultsModel('defaults', 3)],
    ] as const) {
      const file = join(dir, name);
      writeFileSync(file, bytes);
      expect(
        openModel(file).tensors.some((t) => t.overridable),
        name,
      ).toBe(false);
    }
  });

  it('a calibration file naming it is refused with the reason (onnxruntime-node takes only the default)', async () => {
    const dir = tempDir();
    const file = join(dir, 'defaults.onnx');
    writeFileSync(file, defaultsModel('defaults'));
    const calib = join(dir, 'calib.json');
    writeFileSync(
      calib,
      JSON.stringify({
        x: Array.from(gaussian(64, 5, 1))
          .map((v) => [v])
          .flat(),
        temperature: 1,
      }),
    );
    await expect(compressModel(file, join(dir, 'c.nnm'), { calibration: { paths: [calib] } })).rejects.toThrow(
      /temperature names an input with a default value/,
    );
  });
});
