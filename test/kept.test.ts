/**
 * Kept tensors' precision by use: recurrent biases at bfloat16's 7 mantissa bits, everything else (conv and
 * dense biases, norms, kept weights, unknown uses) at float16's full 10 (quantize/half.ts keptMantissaBits), with
 * uses seen through data-movement ops (a bias sliced and concatenated before the LSTM that adds it).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, decodeAllTensors, openModel } from '../src/index.js';
import { fromHalf, keptHalf, keptMantissaBits } from '../src/quantize/half.js';
import { floatTensor } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

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
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ version: 17 }], graph }).finish();
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
