/**
 * Outputs that are not tensors (skl2onnx's ZipMap of class probabilities, a sequence): onnxruntime-node cannot give
 * them back, so every run of such a model failed ("Non tensor type is temporarily not supported") and neither the
 * gate nor rate control could run it. The tensors they are made from are compared in their place.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { BadCalibrationError, OptionError, compressModel } from '../src/index.js';
import { checkJudgedOutputs } from '../src/pipeline/gate.js';
import { CalibrationRunner } from '../src/calibration/runner.js';
import { floatTensor, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const FEATURES = 32;
const HIDDEN = 64;
const CLASSES = 5;
const T = onnx.TensorProto.DataType;

/** An MLP classifier as skl2onnx writes it: a label (ArgMax) and the probabilities as a ZipMap, or (`sequence`) a sequence. */
function classifier(sequence = false): Uint8Array {
  const probabilities: onnx.ITypeProto = sequence
    ? { sequenceType: { elemType: { tensorType: { elemType: T.FLOAT } } } }
    : { sequenceType: { elemType: { mapType: { keyType: T.INT64, valueType: { tensorType: { elemType: T.FLOAT } } } } } };
  const node: onnx.INodeProto[] = [
    { opType: 'MatMul', input: ['input', 'coefficient'], output: ['h0'] },
    { opType: 'Relu', input: ['h0'], output: ['h'] },
    { opType: 'MatMul', input: ['h', 'coefficient1'], output: ['logits'] },
    { opType: 'Softmax', input: ['logits'], output: ['probabilities'], attribute: [{ name: 'axis', i: 1, type: 2 }] },
    sequence
      ? { opType: 'SequenceConstruct', input: ['probabilities', 'logits'], output: ['output_probability'] }
      : {
          opType: 'ZipMap',
          domain: 'ai.onnx.ml',
          input: ['probabilities'],
          output: ['output_probability'],
          attribute: [{ name: 'classlabels_int64s', ints: [3, 5, 7, 11, 13], type: onnx.AttributeProto.AttributeType.INTS }],
        },
  ];
  if (!sequence)
    node.push({
      opType: 'ArgMax',
      input: ['probabilities'],
      output: ['output_label'],
      attribute: [{ name: 'axis', i: 1, type: 2 }],
    });
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ version: 13 }, ...(sequence ? [] : [{ domain: 'ai.onnx.ml', version: 1 }])],
    graph: {
      name: 'classifier',
      node,
      initializer: [
        floatTensor('coefficient', [FEATURES, HIDDEN], gaussian(FEATURES * HIDDEN, 1, 0.3)),
        floatTensor('coefficient1', [HIDDEN, CLASSES], gaussian(HIDDEN * CLASSES, 2, 0.5)),
      ],
      input: [valueInfo('input', ['N', FEATURES])],
      output: [
        ...(sequence ? [] : [valueInfo('output_label', ['N'], T.INT64)]),
        { name: 'output_probability', type: probabilities },
      ],
    },
  })
    .finish()
    .slice();
}

describe('outputs that are not tensors', () => {
  it('a ZipMap of probabilities: compressed with the gate and rate control, the probabilities judged in its place', async () => {
    const model = join(dir, 'zipmap.onnx');
    writeFileSync(model, classifier());
    const log: string[] = [];
    const r = await compressModel(model, join(dir, 'zipmap.nnm'), { jobs: 1, onLog: (m) => log.push(m) });
    expect(r.quality?.passed).toBe(true);
    const names = r.quality!.outputs!.map((o) => [o.name, o.kind]);
    expect(names).toEqual([
      ['output_label', 'labels'],
      ['probabilities (→ output_probability)', 'classes'],
    ]);
    expect(log.join('\n')).toMatch(/output output_probability is not a tensor .*compared in its place/);
    // rate control runs it too (passed or refused, the probabilities are what it is judged on)
    const worst = await compressModel(model, join(dir, 'zipmap-6.nnm'), { jobs: 1, targetBpw: 6 }).then(
      (b) => b.quality!.worst!,
      (e: Error) => e.message,
    );
    expect(worst).toMatch(/probabilities \(→ output_probability\)/);
  }, 120_000);

  it('a sequence of tensors: each tensor judged; asking to judge the sequence itself is a clear error', async () => {
    const model = join(dir, 'sequence.onnx');
    writeFileSync(model, classifier(true));
    const r = await compressModel(model, join(dir, 'sequence.nnm'), { jobs: 1 });
    expect(r.quality!.outputs!.map((o) => o.name).sort()).toEqual([
      'logits (→ output_probability)',
      'probabilities (→ output_probability)',
    ]);
    await expect(CalibrationRunner.open(model, { outputs: ['output_probability'] })).rejects.toThrow(BadCalibrationError);
    // --judge-output naming it is refused up front, as an option
    expect(() => checkJudgedOutputs(classifier(true), ['output_probability'])).toThrow(OptionError);
    expect(() => checkJudgedOutputs(classifier(true), ['output_probability'])).toThrow(/not a tensor .*leave --judge-output out/);
    await expect(CalibrationRunner.open(model, { outputs: ['output_probability'] })).rejects.toThrow(
      /output output_probability is not a tensor .*--judge-output/,
    );
  }, 60_000);
});
