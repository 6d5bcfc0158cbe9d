/**
 * MatMul weights on either side: a constant left operand (y = W·x, as exported by graphs that keep features in
 * columns) was kept whole as an unknown use, and a batched constant ([heads, K, N]) too. Both are coded now, one
 * range per output channel: a row of A, a column of B.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compressModel, decompressArchive } from '../src/index.js';
import { classifyTensor } from '../src/roles/classify.js';
import { floatTensor } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const matmul = (inputIndex: number): { op: string; inputIndex: number; attrs: Record<string, never> } => ({
  op: 'MatMul',
  inputIndex,
  attrs: {},
});
const entry = (shape: number[], inputIndex: number): Parameters<typeof classifyTensor>[0] => ({
  key: 'w',
  name: 'w',
  dtype: 'float32',
  shape,
  uses: [matmul(inputIndex)],
  location: '',
});

describe('MatMul constants', () => {
  it('B [K, N] keeps its layout; A [M, K] is [out, in]; batched constants stack their matrices along the rows', () => {
    expect(classifyTensor(entry([64, 32], 1), 'onnx')).toEqual({
      role: 'fc',
      layout: { kind: 'fc', nin: 64, nout: 32, order: 'in_out' },
      reason: 'MatMul constant operand',
    });
    expect(classifyTensor(entry([96, 48], 0), 'onnx')).toMatchObject({
      role: 'fc',
      layout: { kind: 'fc', nout: 96, nin: 48, order: 'out_in' },
    });
    expect(classifyTensor(entry([4, 32, 16], 1), 'onnx').layout).toEqual({ kind: 'fc', nin: 128, nout: 16, order: 'in_out' });
    expect(classifyTensor(entry([4, 16, 32], 0), 'onnx').layout).toEqual({ kind: 'fc', nout: 64, nin: 32, order: 'out_in' });
  });

  it('a model y = W·x (W the left operand) and a batched B are compressed and pass the gate', async () => {
    const dir = tempDir();
    const vi = (name: string, dims: (number | string)[]): onnx.IValueInfoProto => ({
      name,
      type: {
        tensorType: {
          elemType: onnx.TensorProto.DataType.FLOAT,
          shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
        },
      },
    });
    const graph: onnx.IGraphProto = {
      name: 'sides',
      initializer: [
        floatTensor('W', [96, 48], gaussian(96 * 48, 1, 0.1)),
        floatTensor('B', [4, 96, 24], gaussian(4 * 96 * 24, 2, 0.1)),
      ],
      node: [
        // [96, 48]·[48, n] → [96, n]; transposed to [n, 96]; [4, n, 96]·[4, 96, 24] → [4, n, 24]
        { opType: 'MatMul', input: ['W', 'x'], output: ['h'] },
        { opType: 'Transpose', input: ['h'], output: ['ht'] },
        { opType: 'MatMul', input: ['ht', 'B'], output: ['y'] },
      ],
      input: [vi('x', [48, 'n'])],
      output: [vi('y', [4, 'n', 24])],
    };
    const file = join(dir, 'sides.onnx');
    writeFileSync(file, onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ version: 17 }], graph }).finish());
    const r = await compressModel(file, join(dir, 'sides.nnm'));
    expect(r.compressedWeights).toBe(96 * 48 + 4 * 96 * 24);
    expect(r.quality?.passed).toBe(true);
    expect(r.quality!.fidelity).toBeGreaterThan(0.98);
    // and the rebuilt model runs
    const restored = join(dir, 'restored.onnx');
    await decompressArchive(join(dir, 'sides.nnm'), restored);
    const s = await ort.InferenceSession.create(restored);
    const out = await s.run({ x: new ort.Tensor('float32', gaussian(48 * 5, 3, 1), [48, 5]) });
    expect(out.y.dims).toEqual([4, 5, 24]);
    await s.release();
  });
});
