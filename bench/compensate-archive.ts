/**
 * Round-to-nearest vs error-compensated rounding in whole archives (issue 15, point 5): `compress` with and
 * without `compensate` on the same calibration data, per model, at the same step grids (`relStep`: every tensor
 * on the same grid, so the pair differs only in its codes) and at the same bit budgets (`targetBpw`: with
 * `compensate` the allocator probes compensated codes and models their error, so the grids may differ).
 * Bits/weight: the whole archive (manifest, skeleton, ranges, side values). Task metric: the restored model on
 * the model's task data (CER on the 200 lines of data/ocr, decision agreement on data/speech), also on the
 * part the statistics never saw (OCR: lines outside the probe samples). VAD: the recording is calibration data
 * at both rates (`--audio-rate 16000,8000`: Silero holds one network per rate), judged at 16 kHz and, as a
 * second preprocessing, resampled to 8 kHz.
 *
 *   node --import tsx bench/compensate-archive.ts [--models paddleocr-v4-rec,silero-v6]
 *        [--steps …] [--budgets 2.5,3,3.5,4] [--ocr-samples 64] [--out bench/results/compensate-archive]
 *        [--from a.json,b.json]   (no measuring: merge earlier results per model into <out>.json and <out>.md)
 *
 * Each model runs in its own process: round-to-nearest archives first, then compensated ones, so the peak RSS
 * after each half tells what statistics + compensation add. The statistics are captured once per process
 * (compress caches them for the same model and probe samples) and their time is the first compensated run's.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { compressModel, decompressArchive, type CompressOptions } from '../src/index.js';
import { characterErrorRate, ocrTask, vadTask } from '../src/eval/tasks/index.js';
import { evenlySpaced } from '../src/calibration/set.js';
import { MODELS, ROOT } from './models.js';

const DATA = join(ROOT, 'data');

interface Args {
  models: string[];
  steps?: number[];
  budgets: number[];
  ocrSamples: number;
  out: string;
  child?: string;
  /** Result files of earlier runs (<out>.json) to merge into one table instead of measuring (later wins per model). */
  from?: string[];
}

const DEFAULT_STEPS: Record<string, number[]> = {
  'paddleocr-v4-rec': [1 / 3, 1 / 2, 2 / 3, 1],
  'silero-v6': [1 / 3, 1 / 2, 1, 1.5, 2],
  'silero-v4': [1 / 3, 1 / 2, 1, 1.5],
};

function args(): Args {
  const { values } = parseArgs({
    options: {
      models: { type: 'string', default: 'paddleocr-v4-rec,silero-v6' },
      steps: { type: 'string' },
      budgets: { type: 'string', default: '2.5,3,3.5,4' },
      'ocr-samples': { type: 'string', default: '64' },
      out: { type: 'string', default: join(ROOT, 'bench/results/compensate-archive') },
      child: { type: 'string' },
      from: { type: 'string' },
    },
  });
  const list = (s: string): number[] => (s ? s.split(',').map(Number) : []);
  return {
    models: values.models!.split(','),
    steps: values.steps !== undefined ? list(values.steps) : undefined,
    budgets: list(values.budgets!),
    ocrSamples: Number(values['ocr-samples']),
    out: values.out!,
    child: values.child,
    from: values.from?.split(','),
  };
}

interface Point {
  setting: string;
  kind: 'step' | 'budget';
  value: number;
  method: 'rtn' | 'compensated';
  bpw: number;
  bytes: number;
  metric: number;
  /** OCR: CER on the lines no probe sample (statistics, sensitivities) came from. */
  metricUnseen?: number;
  meanAbsDiff?: number;
  seconds: number;
  compensatedTensors?: number;
  fallbackTensors?: number;
}

interface ModelResult {
  model: string;
  label: string;
  metric: string;
  higherIsBetter: boolean;
  calibration: string;
  baseline: number;
  baselineUnseen?: number;
  /** What `metricUnseen` / `baselineUnseen` measure ("unseen lines" when absent: results of earlier runs). */
  second?: string;
  weights: number;
  statisticsSeconds?: number;
  errorModelSeconds: number[];
  rssRtnMiB: number;
  rssCompensatedMiB: number;
  load: string;
  points: Point[];
}

const mib = (): number => (process.resourceUsage().maxRSS * 1024) / 2 ** 20;
const load = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

interface Judge {
  label: string;
  higherIsBetter: boolean;
  calibration: CompressOptions['calibration'];
  calibrationNote: string;
  /** What the second number in parentheses is (OCR: the unseen lines; VAD: the other sample rate). */
  second: string;
  judge(model: Uint8Array): Promise<{ metric: number; unseen?: number; meanAbsDiff?: number }>;
}

function judgeFor(id: string, a: Args): Judge {
  if (id === 'paddleocr-v4-rec') {
    const task = ocrTask({ dir: join(DATA, 'ocr'), dictionary: join(DATA, 'ocr/ppocr_keys_v1.txt') });
    // the lines compress takes as samples (maxSamples evenly spaced over the 200) and, of those, the probe ones
    // (every 4th sample held back): what the statistics and the sensitivities saw
    const samples = evenlySpaced(200, a.ocrSamples);
    const probe = new Set(samples.filter((_, k) => k % 4 !== 3));
    return {
      label: 'CER',
      higherIsBetter: false,
      calibration: {
        paths: [join(DATA, 'ocr')],
        image: { order: 'bgr', mean: [0.5], std: [0.5], minWidth: 8 },
        maxSamples: a.ocrSamples,
      },
      second: 'unseen lines',
      calibrationNote: `--calibration data/ocr --image-order bgr --image-mean 0.5 --image-std 0.5 --image-min-width 8 --max-calibration-samples ${a.ocrSamples} (${probe.size} probe lines: statistics and sensitivities); CER on all 200 lines and on the ${200 - probe.size} lines outside the probe samples`,
      async judge(model) {
        const o = await task.run(model);
        const pick = (f: (i: number) => boolean): number =>
          characterErrorRate(
            o.texts.filter((_, i) => f(i)),
            o.truth.filter((_, i) => f(i)),
          );
        return { metric: pick(() => true), unseen: pick((i) => !probe.has(i)) };
      },
    };
  }
  const task = vadTask({ wav: join(DATA, 'speech/speech_16k.wav'), regions: join(DATA, 'speech/speech_regions.json') });
  const task8 = vadTask({
    wav: join(DATA, 'speech/speech_16k.wav'),
    regions: join(DATA, 'speech/speech_regions.json'),
    sampleRate: 8000,
  });
  let reference: Awaited<ReturnType<typeof task.run>> | undefined;
  let reference8: Awaited<ReturnType<typeof task.run>> | undefined;
  return {
    label: 'agreement',
    higherIsBetter: true,
    // both rates: Silero holds one network per rate (If on sr); calibrated at one, the other keeps the default grid
    calibration: { paths: [join(DATA, 'speech/speech_16k.wav')], audio: { rate: 16000, rates: [16000, 8000] } },
    second: '8 kHz',
    calibrationNote:
      '--calibration data/speech/speech_16k.wav --audio-rate 16000,8000 (7 samples of 10 s at each rate; 3 of the 14 held back); decision agreement with the original on the whole recording at 16 kHz, and (in parentheses) resampled to 8 kHz',
    async judge(model) {
      const o = await task.run(model);
      reference ??= o;
      const m = new Map(task.compare(reference, o).map((x) => [x.key, x.value]));
      const o8 = await task8.run(model);
      reference8 ??= o8;
      const m8 = new Map(task8.compare(reference8, o8).map((x) => [x.key, x.value]));
      return { metric: m.get('agreement')!, unseen: m8.get('agreement')!, meanAbsDiff: m.get('meanAbsDiff') };
    },
  };
}

async function runModel(id: string, a: Args): Promise<ModelResult> {
  const spec = MODELS.find((m) => m.id === id);
  if (!spec) throw new Error(`unknown model ${id}`);
  const j = judgeFor(id, a);
  const log = (s: string): void => console.error(`[${id}] ${s}`);
  const original = readFileSync(spec.file);
  const base = await j.judge(original);
  log(`original: ${j.label} ${base.metric}${base.unseen !== undefined ? ` (unseen ${base.unseen})` : ''}`);
  const steps = a.steps ?? DEFAULT_STEPS[id] ?? [1 / 3, 1 / 2, 1];
  const settings = [
    ...steps.map((v) => ({ kind: 'step' as const, value: v, options: { relStep: v } })),
    ...a.budgets.map((v) => ({ kind: 'budget' as const, value: v, options: { targetBpw: v } })),
  ];
  const dir = join(tmpdir(), `nnm-comp-archive-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const archive = join(dir, 'a.nnm');
  const restored = join(dir, 'a.onnx');
  const points: Point[] = [];
  let statisticsSeconds: number | undefined;
  const errorModelSeconds: number[] = [];
  let weights = 0;
  let rssRtnMiB = 0;
  for (const method of ['rtn', 'compensated'] as const) {
    for (const s of settings) {
      const logs: string[] = [];
      const t0 = performance.now();
      const r = await compressModel(spec.file, archive, {
        ...s.options,
        codec: 'auto',
        calibration: j.calibration,
        check: false,
        force: true,
        ...(method === 'compensated' ? { compensate: true } : {}),
        onLog: (m) => logs.push(m),
      });
      const seconds = (performance.now() - t0) / 1000;
      for (const l of logs) {
        const st = /^compensate: layer statistics .* \(([\d.]+) s\)$/.exec(l);
        if (st) statisticsSeconds = Number(st[1]);
        const em = /^compensate: the error model .* \(([\d.]+) s\)$/.exec(l);
        if (em) errorModelSeconds.push(Number(em[1]));
      }
      weights = r.compressedWeights;
      await decompressArchive(archive, restored, { force: true });
      const m = await j.judge(readFileSync(restored));
      const p: Point = {
        setting: s.kind === 'step' ? `step ${+s.value.toFixed(4)}` : `target-bpw ${s.value}`,
        kind: s.kind,
        value: s.value,
        method,
        bpw: r.bitsPerWeight,
        bytes: r.archiveBytes,
        metric: m.metric,
        ...(m.unseen !== undefined ? { metricUnseen: m.unseen } : {}),
        ...(m.meanAbsDiff !== undefined ? { meanAbsDiff: m.meanAbsDiff } : {}),
        seconds,
        ...(r.compensation
          ? { compensatedTensors: r.compensation.compensated.length, fallbackTensors: r.compensation.fallback.length }
          : {}),
      };
      points.push(p);
      log(
        `${p.setting} ${method}: ${p.bpw.toFixed(3)} bits/weight, ${j.label} ${p.metric.toFixed(5)}${p.metricUnseen !== undefined ? ` (unseen ${p.metricUnseen.toFixed(5)})` : ''}, ${seconds.toFixed(1)} s, load ${load()}`,
      );
    }
    if (method === 'rtn') rssRtnMiB = mib();
  }
  for (const f of [archive, restored]) unlinkSync(f);
  return {
    model: id,
    label: spec.label,
    metric: j.label,
    higherIsBetter: j.higherIsBetter,
    calibration: j.calibrationNote,
    baseline: base.metric,
    ...(base.unseen !== undefined ? { baselineUnseen: base.unseen } : {}),
    second: j.second,
    weights,
    ...(statisticsSeconds !== undefined ? { statisticsSeconds } : {}),
    errorModelSeconds,
    rssRtnMiB,
    rssCompensatedMiB: mib(),
    load: load(),
    points,
  };
}

function table(results: ModelResult[]): string {
  const lines: string[] = ['# Round-to-nearest vs compensated, whole archives', ''];
  lines.push(
    '`node --import tsx bench/compensate-archive.ts`: `compress` (codec auto) with and without `--compensate` on the same calibration data; bits/weight of the whole archive; the task metric of the restored model. "Same grid": `--step` puts every tensor on the same grid in both archives. "Same budget": `--target-bpw`; with `--compensate` the allocation probes compensated codes and models their error (rate/compensated.ts), so its grids differ.',
    '',
  );
  for (const r of results) {
    const pct = r.metric === 'CER';
    const f = (v: number | undefined): string => (v === undefined ? '–' : pct ? `${(v * 100).toFixed(2)} %` : v.toFixed(4));
    const better = (c: Point, n: Point): string => {
      const d = c.metric - n.metric;
      if (d === 0) return 'same';
      return (r.higherIsBetter ? d > 0 : d < 0) ? 'compensated' : '**nearest**';
    };
    lines.push(`## ${r.label}`, '');
    lines.push(`${r.calibration}.`, '');
    lines.push(
      `Original: ${r.metric} ${f(r.baseline)}${r.baselineUnseen !== undefined ? ` (${r.second ?? 'unseen lines'} ${f(r.baselineUnseen)})` : ''}; ${r.weights.toLocaleString('en')} weights coded. ` +
        `Statistics ${r.statisticsSeconds?.toFixed(1) ?? '–'} s (once per process); error model of the allocation ${r.errorModelSeconds.map((x) => x.toFixed(1)).join(', ') || '–'} s per --target-bpw run; ` +
        `peak RSS ${r.rssRtnMiB.toFixed(0)} MiB after the round-to-nearest runs, ${r.rssCompensatedMiB.toFixed(0)} MiB after the compensated ones; load at the end ${r.load}.`,
      '',
    );
    const unseen = r.points.some((p) => p.metricUnseen !== undefined);
    const second = unseen ? ` (${r.second === '8 kHz' ? '8 kHz' : 'unseen'})` : '';
    lines.push(
      `| setting | nearest bits/weight | nearest ${r.metric}${second} | compensated bits/weight | compensated ${r.metric}${second} | better | seconds (nearest / compensated) |`,
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const n of r.points.filter((p) => p.method === 'rtn')) {
      const c = r.points.find((p) => p.method === 'compensated' && p.setting === n.setting);
      if (!c) continue;
      const m = (p: Point): string => `${f(p.metric)}${unseen ? ` (${f(p.metricUnseen)})` : ''}`;
      lines.push(
        `| ${n.setting} | ${n.bpw.toFixed(3)} | ${m(n)} | ${c.bpw.toFixed(3)} | ${m(c)} | ${better(c, n)} | ${n.seconds.toFixed(0)} / ${c.seconds.toFixed(0)} |`,
      );
    }
    lines.push('');
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const a = args();
  if (a.child) {
    writeFileSync(a.out, JSON.stringify(await runModel(a.child, a)));
    return;
  }
  mkdirSync(dirname(a.out), { recursive: true });
  const results: ModelResult[] = [];
  if (a.from) {
    const byModel = new Map<string, ModelResult>();
    for (const f of a.from)
      for (const r of (JSON.parse(readFileSync(f, 'utf8')) as { results: ModelResult[] }).results) byModel.set(r.model, r);
    results.push(...a.models.flatMap((id) => (byModel.has(id) ? [byModel.get(id)!] : [])));
  }
  for (const id of a.from ? [] : a.models) {
    const tmp = `${a.out}.${id}.part.json`;
    const pass = [
      '--budgets',
      a.budgets.join(','),
      '--ocr-samples',
      String(a.ocrSamples),
      ...(a.steps ? ['--steps', a.steps.join(',')] : []),
    ];
    execFileSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--child', id, '--out', tmp, ...pass], {
      stdio: ['ignore', 'inherit', 'inherit'],
      cwd: ROOT,
    });
    results.push(JSON.parse(readFileSync(tmp, 'utf8')) as ModelResult);
    unlinkSync(tmp);
  }
  writeFileSync(`${a.out}.json`, JSON.stringify({ budgets: a.budgets, results }, null, 1));
  const md = table(results);
  writeFileSync(`${a.out}.md`, md);
  console.log(md);
}

await main();
