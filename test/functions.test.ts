/**
 * Models whose layers are model-local functions (ModelProto.functions), as PyTorch's dynamo exporter writes them:
 * each weight goes into a call, and only the function's body says it is a Conv's kernel or a Gemm's matrix. Before
 * the bodies were looked into, such a model with uninformative initializer names had nothing compressed at all
 * (every weight kept as float16) and `--target-bpw` had "nothing to act on".
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { describeModel } from '../src/calibration/model-io.js';
import { parseOnnxGraph } from '../src/compensate/graph.js';
import { inlineMainGraphFunctions } from '../src/compensate/inline.js';
import { inlineCalls, readLocalFunctions, type CallableNode } from '../src/formats/onnx/functions.js';
import { compressModel, decompressArchive, openModel } from '../src/index.js';
import { channelNormalizedWeights } from '../src/pipeline/normalized.js';
import { planTensors } from '../src/pipeline/plan.js';
import { FUNCTION_MODEL, classifierImages, localFunctionModel } from './helpers/onnx-builder.js';
import { floatTensor, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const model = localFunctionModel();
const file = join(dir, 'functions.onnx');
writeFileSync(file, model.bytes);

async function logits(path: string, inputs: Float32Array, count: number): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(path);
  const n = 3 * FUNCTION_MODEL.size ** 2;
  const out: Float32Array[] = [];
  for (let i = 0; i < count; i++) {
    const x = new ort.Tensor('float32', inputs.subarray(i * n, (i + 1) * n), [1, 3, FUNCTION_MODEL.size, FUNCTION_MODEL.size]);
    const r = await session.run({ input: x });
    out.push(Float32Array.from(Object.values(r)[0].data as Float32Array));
  }
  return out;
}

describe('model-local functions', () => {
  it('finds each weight’s op through the calls, nested calls and attributes the call sets', () => {
    const reader = openModel(file);
    try {
      const plans = planTensors(reader);
      const role = (key: string): string | undefined => plans.find((p) => p.entry.key === key)?.role;
      expect(role('p0')).toBe('conv');
      expect(role('p5')).toBe('conv');
      expect(role('p10')).toBe('fc');
      expect(role('p12')).toBe('fc');
      const fc = reader.tensors.find((t) => t.key === 'p10')!;
      // the Gemm's transB comes from the call's `trans` through ref_attr_name
      expect(fc.uses).toEqual([expect.objectContaining({ op: 'Gemm', inputIndex: 1, attrs: { transB: 1 } })]);
      const conv = reader.tensors.find((t) => t.key === 'p5')!;
      // inside Block → ConvBnRelu: the use sits at the call's place in the file
      expect(conv.uses[0]).toMatchObject({ op: 'Conv', inputIndex: 1 });
      expect(conv.uses[0].node).toMatch(/^7\.0\/1\.\d+#0$/);
      expect(reader.opTypes).toContain('BatchNormalization');
      expect(channelNormalizedWeights(reader, () => model.bytes)).toEqual(new Set(['p0', 'p5']));
    } finally {
      reader.close();
    }
  });

  it('renames a function’s own values under the call and its formal ones into the call’s', () => {
    const functions = readLocalFunctions(model.bytes);
    expect([...functions.values()].map((f) => f.name).sort()).toEqual(['Block', 'ConvBnRelu', 'Linear']);
    const graph = parseOnnxGraph(model.bytes, file, { inlineFunctions: true });
    const convs = graph.main.nodes.filter((n) => n.op === 'Conv');
    expect(convs.map((n) => n.inputs[1])).toEqual(['p0', 'p5']);
    // the second block's conv reads the first block's output (the call's actual output name)
    const firstBlockOutput = parseOnnxGraph(model.bytes).main.nodes[0].outputs[0];
    expect(convs[1].inputs[0]).toBe(firstBlockOutput);
    // values inside a body are the call's own: two calls of one function do not share them
    expect(new Set(graph.main.nodes.filter((n) => n.op === 'Relu').map((n) => n.inputs[0])).size).toBe(3);
    expect(describeModel(model.bytes).nodes.map((n) => n.op)).toEqual(
      expect.arrayContaining(['Conv', 'BatchNormalization', 'Gemm']),
    );
    // a function that calls itself is refused by name, not followed forever
    const selfCalling = {
      ...functions.get(`${FUNCTION_MODEL.domain}\u0000Linear\u0000`)!,
      nodes: [{ op: 'Linear', domain: FUNCTION_MODEL.domain, inputs: ['X'], outputs: ['Y'], attrs: {}, refs: {}, raw: [] }],
    };
    expect(() =>
      inlineCalls<CallableNode & { path: string }>(
        [{ op: 'Linear', domain: FUNCTION_MODEL.domain, inputs: ['a'], outputs: ['b'], attrs: {}, path: '0' }],
        new Map([[`${FUNCTION_MODEL.domain}\u0000Linear\u0000`, selfCalling]]),
        (call, body) => ({ ...body, path: call.path }),
      ),
    ).toThrow(/local function Linear calls functions more than 16 deep/);
  });

  it('compresses the weights, and the restored model keeps its functions and its outputs', async () => {
    const out = join(dir, 'functions.nnm');
    const result = await compressModel(file, out);
    expect(result.manifest.tensors.filter((t) => t.quant).map((t) => t.key)).toEqual(['p0', 'p5', 'p10', 'p12']);
    expect(result.compressedWeights).toBe(16 * 27 + 32 * 144 + 64 * 512 + 10 * 64);
    const restored = join(dir, 'functions.restored.onnx');
    await decompressArchive(out, restored);
    expect(readLocalFunctions(readFileSync(restored)).size).toBe(3);
    const images = classifierImages(8);
    const [a, b] = await Promise.all([logits(file, images, 8), logits(restored, images, 8)]);
    for (let i = 0; i < 8; i++) {
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let j = 0; j < a[i].length; j++) {
        dot += a[i][j] * b[i][j];
        na += a[i][j] ** 2;
        nb += b[i][j] ** 2;
      }
      expect(dot / Math.sqrt(na * nb)).toBeGreaterThan(0.99);
    }
  });

  it('--compensate captures the statistics of layers inside functions, on a copy with the calls inlined', async () => {
    const inlined = inlineMainGraphFunctions(model.bytes, file);
    if (typeof inlined !== 'object') throw new Error(`not inlined: ${inlined}`);
    const copy = join(dir, 'functions.inlined.onnx');
    writeFileSync(copy, inlined.bytes);
    // the copy computes what the model does, with the body's ops in its main graph
    const images = classifierImages(4);
    const [a, b] = await Promise.all([logits(file, images, 4), logits(copy, images, 4)]);
    expect(b).toEqual(a);
    const ops = parseOnnxGraph(inlined.bytes).main.nodes.map((n) => n.op);
    expect(ops.filter((op) => op === 'Conv')).toHaveLength(2);
    expect(ops).not.toContain('Block');
    // initializers keep their place; a node after a call moves by what the calls before it became
    expect(inlined.location('7.0/5.3')).toBe('7.0/5.3');
    expect(inlined.location('7.0/1.2')).toBe('7.0/1.8');
    const result = await compressModel(file, join(dir, 'functions.bpw.nnm'), { targetBpw: 6, compensate: true, force: true });
    expect(result.compensation!.compensated.length).toBeGreaterThanOrEqual(2);
    for (const f of result.compensation!.fallback) expect(f.reason).not.toMatch(/function/);
  });

  it('rounds to nearest and says why where a function’s body is written against another opset', async () => {
    const other = join(dir, 'functions.opset13.onnx');
    writeFileSync(other, localFunctionModel(1, { linearOpset: 13 }).bytes);
    expect(inlineMainGraphFunctions(readFileSync(other))).toBe(
      'its function Linear is written against ai.onnx version 13, the model imports version 17',
    );
    const result = await compressModel(other, join(dir, 'functions.opset13.nnm'), {
      targetBpw: 6,
      compensate: true,
      force: true,
    });
    expect(result.compensation?.fallback).toContainEqual({
      tensor: 'p10',
      reason:
        "used inside the model's local function Linear (its function Linear is written against ai.onnx version 13, the model imports version 17), whose values are not exposed",
    });
  });
});

describe('model-local functions: bodies the inlining must not break', () => {
  const D = 'pkg.edge';
  const A = onnx.AttributeProto.AttributeType;
  /** x [1, 64] → F(x, w) with F's second output left unnamed by the call, or G holding an If. */
  function edgeModel(kind: 'unnamed' | 'if'): Uint8Array {
    const f: onnx.IFunctionProto =
      kind === 'unnamed'
        ? {
            name: 'F',
            domain: D,
            input: ['X', 'W'],
            output: ['Y', 'Z'],
            node: [
              { opType: 'MatMul', input: ['X', 'W'], output: ['Z'] },
              { opType: 'Relu', input: ['Z'], output: ['Y'] },
            ],
            opsetImport: [{ domain: '', version: 17 }],
          }
        : {
            name: 'F',
            domain: D,
            input: ['X', 'W', 'C'],
            output: ['Y'],
            node: [
              { opType: 'MatMul', input: ['X', 'W'], output: ['h'] },
              {
                opType: 'If',
                input: ['C'],
                output: ['Y'],
                attribute: [
                  {
                    name: 'then_branch',
                    type: A.GRAPH,
                    g: {
                      name: 't',
                      node: [{ opType: 'Identity', input: ['h'], output: ['a'] }],
                      output: [valueInfo('a', [1, 64])],
                    },
                  },
                  {
                    name: 'else_branch',
                    type: A.GRAPH,
                    g: { name: 'e', node: [{ opType: 'Neg', input: ['h'], output: ['b'] }], output: [valueInfo('b', [1, 64])] },
                  },
                ],
              },
            ],
            opsetImport: [{ domain: '', version: 17 }],
          };
    const inputs = kind === 'unnamed' ? ['x', 'w'] : ['x', 'w', 'c'];
    return onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [
        { domain: '', version: 17 },
        { domain: D, version: 1 },
      ],
      graph: {
        name: 'edge',
        initializer: [
          floatTensor('w', [64, 64], gaussian(64 * 64, 901, 0.15)),
          ...(kind === 'if'
            ? [{ name: 'c', dims: [], dataType: onnx.TensorProto.DataType.BOOL, rawData: Uint8Array.of(1) }]
            : []),
        ],
        node: [{ opType: 'F', domain: D, input: inputs, output: kind === 'unnamed' ? ['y', ''] : ['y'] }],
        input: [valueInfo('x', [1, 64])],
        output: [valueInfo('y', [1, 64])],
      },
      functions: [f],
    }).finish();
  }

  async function run(bytes: Uint8Array): Promise<Float32Array> {
    const s = await ort.InferenceSession.create(bytes);
    const r = await s.run({ x: new ort.Tensor('float32', gaussian(64, 902, 1), [1, 64]) });
    return Float32Array.from(r.y.data as Float32Array);
  }

  it('an output the call leaves unnamed is still the body’s value', async () => {
    const bytes = edgeModel('unnamed');
    const path = join(dir, 'unnamed.onnx');
    writeFileSync(path, bytes);
    const reader = openModel(path);
    try {
      expect(reader.tensors.find((t) => t.key === 'w')!.uses).toEqual([expect.objectContaining({ op: 'MatMul', inputIndex: 1 })]);
    } finally {
      reader.close();
    }
    const inlined = inlineMainGraphFunctions(bytes);
    if (typeof inlined !== 'object') throw new Error(`not inlined: ${inlined}`);
    expect(await run(inlined.bytes)).toEqual(await run(bytes));
  });

  it('a body holding subgraphs is not inlined, and --compensate rounds its weights to nearest and says why', async () => {
    const bytes = edgeModel('if');
    expect(inlineMainGraphFunctions(bytes)).toBe('its function F holds subgraphs (If)');
    const path = join(dir, 'if.onnx');
    writeFileSync(path, bytes);
    const r = await compressModel(path, join(dir, 'if.nnm'), { relStep: 0.25, compensate: true, minFidelity: 0 });
    expect(r.compensation?.fallback).toContainEqual({
      tensor: 'w',
      reason: "used inside the model's local function F (its function F holds subgraphs (If)), whose values are not exposed",
    });
  });
});
