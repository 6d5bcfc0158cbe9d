/**
 * compress with `compensate: true` (issue 15): layer-input statistics gathered on the calibration set's probe
 * samples, the final codes chosen by error-compensating rounding on the same step grid, the decoder unchanged.
 * Judged by the quality gate (held-back samples) against round-to-nearest at the same grid; tensors without
 * statistics (an If branch no sample takes) are rounded to nearest and named with the reason.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, OptionError, OPTION_TABLE } from '../src/index.js';
import { decodeAllTensors } from '../src/pipeline/decompress.js';
import { batchNormClassifier, ifBranchModel } from './helpers/onnx-builder.js';
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
    const r = await compressModel(model, join(dir, 'wake.nnm'), {
      relStep: 0.5,
      compensate: true,
      minFidelity: 0,
      onLog: (m) => logs.push(m),
    });
    const fallback = new Map(r.compensation!.fallback.map((f) => [f.tensor, f.reason]));
    expect(fallback.get('stage2.w1')).toMatch(/never ran/);
    expect(fallback.get('stage2.w2')).toMatch(/never ran/);
    expect(r.compensation!.compensated).toContain('stage1.w');
    const line = logs.find((l) => /rounded to nearest/.test(l));
    expect(line).toMatch(/stage2\.w1 \(its op never ran/);
  }, 120_000);

  it('is a boolean option with its flag from the option table', async () => {
    const spec = OPTION_TABLE.find((o) => o.key === 'compensate');
    expect(spec?.flags?.[0].flag).toBe('--compensate');
    await expect(compressModel(join(dir, 'wake.onnx'), join(dir, 'bad.nnm'), { compensate: 'yes' as never })).rejects.toThrow(
      OptionError,
    );
  });
});
