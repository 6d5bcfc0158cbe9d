/**
 * Small ONNX models built in the test (with onnx-proto) that exercise every
 * layer role: Gemm with transB, MatMul, Conv and depthwise Conv, a
 * bidirectional LSTM, and Constant nodes inside If subgraphs.
 */
import { onnx } from 'onnx-proto';
import { gaussian } from './random.js';

const FLOAT = onnx.TensorProto.DataType.FLOAT;

export function floatTensor(name: string, dims: number[], values: Float32Array): onnx.ITensorProto {
  return { name, dims, dataType: FLOAT, rawData: new Uint8Array(values.buffer.slice(0)) };
}

/** A graph input or output: float32 unless `elemType` says otherwise; a string dimension is symbolic. */
export function valueInfo(name: string, dims: ReadonlyArray<number | string>, elemType: number = FLOAT): onnx.IValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

const vi = (name: string, dims: number[]): onnx.IValueInfoProto => valueInfo(name, dims);

/** A model file's bytes around a graph (IR version 8, opset 17). */
export function modelBytes(graph: onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ version: 17 }], graph }).finish();
}

const attrI = (name: string, i: number): onnx.IAttributeProto => ({ name, i, type: onnx.AttributeProto.AttributeType.INT });
const attrS = (name: string, s: string): onnx.IAttributeProto => ({
  name,
  s: new TextEncoder().encode(s),
  type: onnx.AttributeProto.AttributeType.STRING,
});

export const MIXED = {
  W1: [32, 16], // Gemm B with transB=1: [out, in]
  W2: [32, 24], // MatMul: [in, out]
  Wc: [32, 8, 3, 3],
  Wd: [32, 1, 3, 3], // depthwise, group 32
  lstmW: [2, 80, 12], // bidirectional, hidden 20, input 12
  lstmR: [2, 80, 20],
  Wk: [20, 30], // Constant inside If branches
};

export function mixedModel(
  seed = 1,
  opts: { sameBranches?: boolean } = {},
): { bytes: Uint8Array; weights: Record<string, Float32Array> } {
  const count = (d: number[]): number => d.reduce((a, b) => a * b, 1);
  const weights: Record<string, Float32Array> = {};
  let s = seed * 100;
  for (const [k, d] of Object.entries(MIXED)) weights[k] = gaussian(count(d), s++, 0.2);
  weights.b1 = gaussian(32, s++, 0.1);
  weights.lstmB = gaussian(2 * 160, s++, 0.1);
  weights.WkElse = opts.sameBranches ? weights.Wk : gaussian(count(MIXED.Wk), s++, 0.2);
  const branch = (name: string, w: Float32Array): onnx.IGraphProto => ({
    name,
    node: [
      {
        opType: 'Constant',
        output: [`${name}_k`],
        attribute: [
          { name: 'value', t: floatTensor(`${name}_weight`, MIXED.Wk, w), type: onnx.AttributeProto.AttributeType.TENSOR },
        ],
      },
      { opType: 'MatMul', input: ['k_in', `${name}_k`], output: [`${name}_out`] },
    ],
    output: [vi(`${name}_out`, [1, 30])],
  });
  const graph: onnx.IGraphProto = {
    name: 'mixed',
    initializer: [
      floatTensor('W1', MIXED.W1, weights.W1),
      floatTensor('b1', [32], weights.b1),
      floatTensor('W2', MIXED.W2, weights.W2),
      floatTensor('Wc', MIXED.Wc, weights.Wc),
      floatTensor('Wd', MIXED.Wd, weights.Wd),
      floatTensor('lstmW', MIXED.lstmW, weights.lstmW),
      floatTensor('lstmR', MIXED.lstmR, weights.lstmR),
      floatTensor('lstmB', [2, 160], weights.lstmB),
    ],
    node: [
      { opType: 'Gemm', input: ['x', 'W1', 'b1'], output: ['g'], attribute: [attrI('transB', 1)] },
      { opType: 'MatMul', input: ['g', 'W2'], output: ['yA'] },
      {
        opType: 'Conv',
        input: ['img', 'Wc'],
        output: ['c1'],
        attribute: [{ name: 'pads', ints: [1, 1, 1, 1], type: onnx.AttributeProto.AttributeType.INTS }],
      },
      { opType: 'Conv', input: ['c1', 'Wd'], output: ['yB'], attribute: [attrI('group', 32)] },
      {
        opType: 'LSTM',
        input: ['seq', 'lstmW', 'lstmR', 'lstmB'],
        output: ['yC'],
        attribute: [attrI('hidden_size', 20), attrS('direction', 'bidirectional')],
      },
      {
        opType: 'If',
        input: ['cond'],
        output: ['yD'],
        attribute: [
          { name: 'then_branch', g: branch('then', weights.Wk), type: onnx.AttributeProto.AttributeType.GRAPH },
          { name: 'else_branch', g: branch('else', weights.WkElse), type: onnx.AttributeProto.AttributeType.GRAPH },
        ],
      },
    ],
    input: [
      vi('x', [1, 16]),
      vi('img', [1, 8, 10, 10]),
      vi('seq', [5, 1, 12]),
      vi('k_in', [1, 20]),
      { name: 'cond', type: { tensorType: { elemType: onnx.TensorProto.DataType.BOOL, shape: { dim: [] } } } },
    ],
    output: [vi('yA', [1, 24]), vi('yB', [1, 32, 8, 8]), vi('yC', [5, 2, 1, 20]), vi('yD', [1, 30])],
  };
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'nnmedia-test',
    graph,
  };
  return { bytes: onnx.ModelProto.encode(model).finish(), weights };
}

export function mixedInputs(): Record<string, { dims: number[]; data: Float32Array | Uint8Array; type: 'float32' | 'bool' }> {
  return {
    x: { dims: [1, 16], data: gaussian(16, 900, 1), type: 'float32' },
    img: { dims: [1, 8, 10, 10], data: gaussian(800, 901, 1), type: 'float32' },
    seq: { dims: [5, 1, 12], data: gaussian(60, 902, 1), type: 'float32' },
    k_in: { dims: [1, 20], data: gaussian(20, 903, 1), type: 'float32' },
    cond: { dims: [], data: Uint8Array.of(1), type: 'bool' },
  };
}
