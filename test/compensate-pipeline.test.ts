/**
 * compress with `compensate: true` (issue 15): layer-input statistics gathered on the calibration set's probe
 * samples, the final codes chosen by error-compensating rounding on the same step grid, the decoder unchanged.
 * Judged by the quality gate (held-back samples) against round-to-nearest at the same grid; tensors without
 * statistics (an If branch no sample takes) are rounded to nearest and named with the reason.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, OptionError, OPTION_TABLE } from '../src/index.js';
import { decodeAllTensors } from '../src/pipeline/decompress.js';
import { encodeNpy } from '../src/calibration/raw.js';
import { largeInputs } from '../src/calibration/runner.js';
import { batchNormClassifier, ifBranchModel } from './helpers/onnx-builder.js';
import { floatTensor, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** Every coded tensor of an archive, decoded as a user would. */
async function decoded(file: string): Promise<Map<string, Float32Array>> {
  const a = new Archive(file);
  try {
    return await decodeAllTensors(a);
  } finally {
    a.close();
  }
}

describe('compress --compensate', () => {
  it('decodes with the unchanged decoder and keeps fidelity ≥ round-to-nearest at the same coarse step grid', async () => {
    const model = join(dir, 'classifier.onnx');
    writeFileSync(model, (await batchNormClassifier()).bytes);
    const logs: string[] = [];
    // a step of 0.75 × RMS per channel: coarse enough that rounding costs fidelity
    const base = { relStep: 0.75, minFidelity: 0, jobs: 1 };
    const rtn = await compressModel(model, join(dir, 'rtn.nnm'), base);
    const comp = await compressModel(model, join(dir, 'comp.nnm'), { ...base, compensate: true, onLog: (m) => logs.push(m) });
    expect(rtn.compensation).toBeUndefined();
    expect(comp.compensation!.compensated.length).toBeGreaterThan(5);
    expect(logs.some((l) => /^compensate: layer statistics for \d+ of \d+ tensors/.test(l))).toBe(true);
    expect(logs.some((l) => /^compensate: \d+ tensors error-compensated/.test(l))).toBe(true);
    // the same grid, other codes: the archives differ, both decode, every tensor of one is in the other
    expect(readFileSync(join(dir, 'comp.nnm')).equals(readFileSync(join(dir, 'rtn.nnm')))).toBe(false);
    const a = await decoded(join(dir, 'rtn.nnm'));
    const b = await decoded(join(dir, 'comp.nnm'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    let differing = 0;
    for (const [k, v] of b) if (v.some((x, i) => x !== a.get(k)![i])) differing++;
    expect(differing).toBeGreaterThan(5);
    // the gate on held-back samples: rounding costs fidelity, and compensation gives at least as much back
    expect(rtn.quality!.checked).toBe(true);
    expect(rtn.quality!.fidelity!).toBeLessThan(0.999);
    expect(comp.quality!.fidelity!).toBeGreaterThanOrEqual(rtn.quality!.fidelity!);
    expect(new Archive(join(dir, 'comp.nnm')).manifest.options).toMatchObject({ compensate: true });
    expect(new Archive(join(dir, 'rtn.nnm')).manifest.options).not.toHaveProperty('compensate');
    // --act-order and --damp reach every place that compensates: other codes, recorded; without compensate refused
    const ordered = await compressModel(model, join(dir, 'act.nnm'), { ...base, compensate: true, actOrder: true, damp: 0.1 });
    expect(ordered.compensation!.compensated.length).toBe(comp.compensation!.compensated.length);
    expect(readFileSync(join(dir, 'act.nnm')).equals(readFileSync(join(dir, 'comp.nnm')))).toBe(false);
    expect(new Archive(join(dir, 'act.nnm')).manifest.options).toMatchObject({ compensate: true, actOrder: true, damp: 0.1 });
    await expect(compressModel(model, join(dir, 'x.nnm'), { ...base, actOrder: true })).rejects.toThrow(
      /actOrder sets how compensate works: it needs compensate/,
    );
  }, 180_000);

  it('rounds tensors of an If branch no calibration sample takes to nearest and says which and why', async () => {
    const model = join(dir, 'wake.onnx');
    writeFileSync(model, ifBranchModel().bytes);
    const logs: string[] = [];
    const options = { relStep: 0.5, compensate: true, minFidelity: 0, onLog: (m: string) => logs.push(m) };
    // the synthetic set's 48 probe samples are fewer than 2 rows per input of stage1's 64, and each adds a direction
    // of its own (random inputs): not compensated, and said
    const few = await compressModel(model, join(dir, 'wake.nnm'), options);
    expect(new Map(few.compensation!.fallback.map((f) => [f.tensor, f.reason])).get('stage1.w')).toMatch(
      /^its statistics saw 48 rows of input for 64 inputs, spread over ~\d+ directions \(compensating would fit the probe samples: more calibration samples allow it\)$/,
    );
    // as few rows along one direction (scaled copies of one input): what other such inputs take too, compensated
    const along = join(dir, 'along.npy');
    const one = gaussian(64, 809, 1);
    const copies = Float32Array.from({ length: 16 * 64 }, (_, i) => (0.5 + Math.floor(i / 64) / 8) * one[i % 64]);
    writeFileSync(along, encodeNpy({ type: 'float32', dims: [16, 1, 64], data: copies }));
    const line = await compressModel(model, join(dir, 'wake.nnm'), { ...options, force: true, calibration: { paths: [along] } });
    expect(line.compensation!.compensated).toContain('stage1.w');
    // 256 inputs of the first stage's (none takes the branch): 192 probe rows
    const npy = join(dir, 'wake.npy');
    writeFileSync(npy, encodeNpy({ type: 'float32', dims: [256, 1, 64], data: gaussian(256 * 64, 808, 1) }));
    logs.length = 0;
    const r = await compressModel(model, join(dir, 'wake.nnm'), { ...options, force: true, calibration: { paths: [npy] } });
    const fallback = new Map(r.compensation!.fallback.map((f) => [f.tensor, f.reason]));
    expect(fallback.get('stage2.w1')).toMatch(/never ran/);
    expect(fallback.get('stage2.w2')).toMatch(/never ran/);
    expect(r.compensation!.compensated).toContain('stage1.w');
    const said = logs.find((l) => /rounded to nearest/.test(l));
    expect(said).toMatch(/stage2\.w1 \(its op never ran/);
  }, 120_000);

  it('large inputs, declared or only fed by the calibration data: statistics computed in the capture graph', async () => {
    // a fully convolutional model whose spatial size is dynamic: its declared shape says nothing, the
    // calibration data (1×4×512×512 = 2^20 elements a sample) is large
    const conv = (size: (string | number)[]): Uint8Array =>
      onnx.ModelProto.encode({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 17 }],
        graph: {
          name: 'fcn',
          initializer: [
            floatTensor('w1', [8, 4, 3, 3], gaussian(8 * 4 * 9, 71, 0.3)),
            floatTensor('w2', [4, 8, 3, 3], gaussian(4 * 8 * 9, 72, 0.3)),
          ],
          node: [
            { opType: 'Conv', input: ['x', 'w1'], output: ['h'], attribute: [pads] },
            { opType: 'Relu', input: ['h'], output: ['r'] },
            { opType: 'Conv', input: ['r', 'w2'], output: ['y'], attribute: [pads] },
          ],
          input: [valueInfo('x', [1, 4, ...size])],
          output: [valueInfo('y', [1, 4, ...size])],
        },
      }).finish();
    const pads: onnx.IAttributeProto = { name: 'pads', ints: [1, 1, 1, 1], type: onnx.AttributeProto.AttributeType.INTS };
    const data = join(dir, 'fcn-data');
    mkdirSync(data, { recursive: true });
    for (let i = 0; i < 4; i++)
      writeFileSync(
        join(data, `x${i}.npy`),
        encodeNpy({ type: 'float32', dims: [1, 4, 512, 512], data: gaussian(4 * 512 * 512, 80 + i, 1) }),
      );
    const small = join(dir, 'fcn-small');
    mkdirSync(small);
    for (let i = 0; i < 4; i++)
      writeFileSync(
        join(small, `x${i}.npy`),
        encodeNpy({ type: 'float32', dims: [1, 4, 64, 64], data: gaussian(4 * 64 * 64, 90 + i, 1) }),
      );
    const run = async (size: (string | number)[], calibration: string): Promise<string | undefined> => {
      const model = join(dir, `fcn-${size.join('x')}.onnx`);
      writeFileSync(model, conv(size));
      const logs: string[] = [];
      const r = await compressModel(model, join(dir, 'fcn.nnm'), {
        relStep: 0.5,
        compensate: true,
        minFidelity: 0,
        force: true,
        calibration: { paths: [calibration] },
        onLog: (m) => logs.push(m),
      });
      // both convolutions get statistics (whether compensation then pays is the allocation's verdict)
      expect(r.compensation!.compensated.length + r.compensation!.fallback.length).toBe(2);
      const line = logs.find((l) => l.startsWith('compensate: layer statistics'));
      expect(line).toMatch(/^compensate: layer statistics for 2 of 2 tensors/);
      return line;
    };
    const inGraph = /large inputs: convolutions' statistics computed by onnxruntime, block-diagonal over 576 features/;
    expect(await run(['H', 'W'], data)).toMatch(inGraph);
    expect(await run([512, 512], data)).toMatch(inGraph);
    // the fixed-shape model is also recognised from its declared shape alone (data need not be loaded for it);
    // dynamic or small declared shapes are not
    expect(largeInputs(conv([512, 512]))).toBe(true);
    expect(largeInputs(conv(['H', 'W']))).toBe(false);
    expect(largeInputs(conv([64, 64]))).toBe(false);
    // small inputs keep the JavaScript Gram of full H (the archives of such models do not change)
    expect(await run(['H', 'W'], small)).not.toMatch(inGraph);
  }, 180_000);

  it('is a boolean option with its flag from the option table', async () => {
    const spec = OPTION_TABLE.find((o) => o.key === 'compensate');
    expect(spec?.flags?.[0].flag).toBe('--compensate');
    await expect(compressModel(join(dir, 'wake.onnx'), join(dir, 'bad.nnm'), { compensate: 'yes' as never })).rejects.toThrow(
      OptionError,
    );
  });
});
