/**
 * The rate–distortion benchmark: for each real model, sweep nnmedia's codecs ×
 * quality × bits × range mode, and run the peers on the same tensors in the
 * same run; judge every point by the model's own task metric.
 *
 *   npm run bench              full sweep (all models), then the generalization table (bench/generalize.ts)
 *   npm run bench -- --quick   one model, a few points (CI: checks the pipeline works)
 *   npm run bench -- --no-generalize        the sweep only
 *   npm run bench -- --generalize-all       the generalization table on every model (adds PaddleOCR rec and
 *                                           ISNet: ~20 + ~30 min on 2 cores); by default the Silero models and
 *                                           the test suite's small models are re-measured and the PaddleOCR /
 *                                           ISNet rows are kept from their last run (their runs are listed)
 *
 * Writes bench/results/<model>.json, bench/results/results.md, rd-<model>.svg/.png,
 * the full report in docs/benchmarks.md (between the bench markers) and the README's summary (bench/summary.ts).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openModel } from '../src/formats/registry.js';
import { planTensors } from '../src/pipeline/plan.js';
import type { CodedPlan } from '../src/pipeline/stages.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import { taskByName } from '../src/eval/tasks/index.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { MODELS, ROOT, passes, type BenchModel } from './models.js';
import { formatMarkdown, writeSummary } from './summary.js';
import { rtnPeer, weightSet, zstdPeer, type PeerResult } from './peers.js';
import { renderPlot } from './plot.js';
import type { BenchPoint, PointOptions } from './types.js';

import { VERSION } from '../src/version.js';
import { getFfmpegInfo } from '../src/cli/ffmpeg-info.js';

const run = promisify(execFile);
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const GENERALIZE = !QUICK && !args.includes('--no-generalize');
/** The generalization cases re-measured by default (the rest keep their rows of the last run). */
const GENERALIZE_MODELS = 'classifier,stft,if,sparse,silero-v4,silero-v6';
const OUT = process.env.NNMEDIA_BENCH_OUT ?? join(ROOT, 'bench/results', QUICK ? 'quick' : '');
const onlyModels = args
  .find((a) => a.startsWith('--models='))
  ?.slice(9)
  .split(',');

interface PointSpec {
  series: string;
  label: string;
  options: PointOptions;
}

/** `nnmedia compress` with no options: what a user gets first (the README's "nnmedia default" column). */
const DEFAULT_POINT: PointSpec = { series: 'nnmedia default (no options)', label: 'default', options: {} };

function pointSpecs(model: BenchModel): PointSpec[] {
  const step = 'step grid, per channel (--step, --codec auto)';
  if (QUICK)
    return [
      {
        series: 'method as written (per-layer 8-bit)',
        label: 'png lossless layer',
        options: { codec: 'png', bits: 8, range: 'layer' },
      },
      { series: 'png per-channel', label: 'png 8 channel', options: { codec: 'png', bits: 8, range: 'channel' } },
      DEFAULT_POINT,
      { series: 'jpeg 8-bit per-channel', label: 'jpeg q90', options: { codec: 'jpeg', bits: 8, quality: 90 } },
      { series: step, label: 'step 1/3 auto', options: { codec: 'auto', relStep: 1 / 3 } },
    ];
  const s: PointSpec[] = [];
  for (const [codec, extra] of [
    ['png', {}],
    ['webp', { lossless: true }],
    ['jpeg', { quality: 90 }],
    ['webp', { quality: 90 }],
    ['avif', { quality: 80 }],
  ] as const)
    s.push({
      series: 'method as written (per-layer 8-bit)',
      label: `${codec}${'quality' in extra ? ` q${extra.quality}` : ' lossless'} layer`,
      options: { codec, bits: 8, range: 'layer', ...extra },
    });
  s.push({ series: 'png per-channel', label: 'png 8 channel', options: { codec: 'png', bits: 8 } });
  s.push(DEFAULT_POINT);
  s.push({ series: 'png per-channel', label: 'png 16 channel', options: { codec: 'png', bits: 16 } });
  s.push({
    series: 'lossless per-channel (webp, tiff, avif)',
    label: 'webp lossless 8',
    options: { codec: 'webp', lossless: true, bits: 8 },
  });
  s.push({ series: 'lossless per-channel (webp, tiff, avif)', label: 'tiff 16', options: { codec: 'tiff', bits: 16 } });
  // (lossless AVIF measured 13–15 bits/weight: no better than raw codes; left out of the sweep)

  for (const q of [90, 95])
    s.push({ series: 'jpeg 8-bit per-channel', label: `jpeg q${q}`, options: { codec: 'jpeg', bits: 8, quality: q } });
  for (const q of [85, 95])
    s.push({ series: 'webp 8-bit per-channel', label: `webp q${q}`, options: { codec: 'webp', bits: 8, quality: q } });
  for (const q of [70, 90])
    s.push({ series: 'avif 8-bit per-channel', label: `avif q${q}`, options: { codec: 'avif', bits: 8, quality: q } });
  for (const q of [95])
    s.push({
      series: 'avif 16-bit (12-bit depth) per-channel',
      label: `avif16 q${q}`,
      options: { codec: 'avif', bits: 16, quality: q },
    });
  // video (M5/M6) and audio (M7) through ffmpeg; AV1 (libaom 2018) is left out: minutes per model
  s.push({
    series: 'video, lossless (ffv1, h264, vp9)',
    label: 'ffv1 8 channel',
    options: { media: 'video', codec: 'ffv1', bits: 8 },
  });
  s.push({
    series: 'video, lossless (ffv1, h264, vp9)',
    label: 'h264 lossless',
    options: { media: 'video', codec: 'h264', lossless: true },
  });
  s.push({
    series: 'video, lossless (ffv1, h264, vp9)',
    label: 'vp9 lossless',
    options: { media: 'video', codec: 'vp9', lossless: true },
  });
  for (const crf of [24])
    s.push({
      series: 'video h264 lossy (CRF)',
      label: `h264 crf${crf}`,
      options: { media: 'video', codec: 'h264', quality: crf },
    });
  s.push({ series: 'audio flac', label: 'flac 8 channel', options: { media: 'audio', codec: 'flac', bits: 8 } });
  s.push({ series: 'audio flac', label: 'flac step 1/4', options: { media: 'audio', codec: 'flac', relStep: 1 / 4 } });
  for (const st of [8, 4, 3, 2])
    s.push({ series: step, label: `step 1/${st} auto`, options: { codec: 'auto', relStep: 1 / st } });
  // ISNet: a sensitivity probe is a 1024×1024 run per sample and tensor (238 tensors): hours per point; its
  // --target-bpw row is measured by bench/generalize.ts --isnet-budget with --probe-samples (docs/generalization.md)
  if (model.task === 'isnet') return s;
  for (const b of model.task === 'ocr' ? [4, 4.5] : [2.5, 3])
    s.push({
      series: 'allocated across layers (--target-bpw, --codec auto)',
      label: `target-bpw ${b}`,
      options: { codec: 'auto', targetBpw: b, task: model.task },
    });
  const maxLoss = model.task === 'ocr' ? 0.001 : 1 - model.metric.threshold(0);
  s.push({
    series: 'allocated for no loss (--max-loss, --codec auto)',
    label: `max-loss ${+maxLoss.toFixed(4)}`,
    options: { codec: 'auto', maxLoss, task: model.task },
  });
  return s;
}

async function benchModel(
  model: BenchModel,
  tmp: string,
): Promise<{ baseline: number; points: BenchPoint[]; weights: number; floatBytes: number; modelBytes: number }> {
  const task = taskByName(model.task);
  const original = readFileSync(model.file);
  const refOut = await task.run(original);
  const baseline = task.baseline(refOut).find((m) => m.key === model.metric.key)?.value ?? (model.metric.higherIsBetter ? 1 : 0);
  const metricOf = async (bytes: Uint8Array): Promise<Record<string, number>> => {
    const out = await task.run(bytes);
    return Object.fromEntries(task.compare(refOut, out).map((m) => [m.key, m.value]));
  };
  // The compressed tensors: what every peer is measured on too.
  const reader = openModel(model.file);
  const plans = planTensors(reader, {}).filter((p): p is CodedPlan => p.kind === 'coded');
  const layouts = new Map<string, LayoutSpec>(plans.map((p) => [p.entry.key, p.layout]));
  const ws = weightSet(reader, [...layouts.keys()], layouts);
  const floatBytes = ws.count * 4;
  const mbps = (ms: number): number => floatBytes / 1e6 / (ms / 1000);
  const points: BenchPoint[] = [];
  const log = (p: BenchPoint): void => {
    points.push(p);
    console.log(
      `  ${p.label.padEnd(34)} ${p.bitsPerWeight.toFixed(3).padStart(7)} bits/w  ${model.metric.key} ${p.metric.toFixed(4)}  enc ${p.encodeMBps.toFixed(1)} MB/s  dec ${p.decodeMBps.toFixed(1)} MB/s${p.maxRssMB ? `  rss ${p.maxRssMB.toFixed(0)} MB` : ''}`,
    );
  };
  // Peers
  const peers: PeerResult[] = [
    { name: 'float32 (raw)', bytes: floatBytes, encodeMs: 0, decodeMs: 0 },
    await zstdPeer(ws, 3),
    await zstdPeer(ws, 19),
    await rtnPeer(ws, 8, false),
    await rtnPeer(ws, 8, true),
    await rtnPeer(ws, 4, false),
    await rtnPeer(ws, 4, true),
  ];
  for (const peer of peers) {
    const metrics = peer.values ? await metricOf(substituteTensors(reader, peer.values)) : await metricOf(original);
    log({
      series: peer.name.startsWith('int') ? 'peer: round-to-nearest + zstd-19' : 'peer: float32 (lossless)',
      label: peer.name,
      kind: 'peer',
      bytes: peer.bytes,
      bitsPerWeight: (peer.bytes * 8) / ws.count,
      metric: metrics[model.metric.key],
      metrics,
      encodeMBps: peer.encodeMs ? mbps(peer.encodeMs) : Infinity,
      decodeMBps: peer.decodeMs ? mbps(peer.decodeMs) : Infinity,
    });
  }
  reader.close();
  // nnmedia points, each in its own process
  for (const spec of pointSpecs(model)) {
    const archive = join(tmp, `${model.id}.nnm`);
    const restored = join(tmp, `${model.id}.restored.onnx`);
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'bench/point.ts'), model.file, archive, restored, JSON.stringify(spec.options)],
      {
        maxBuffer: 1 << 24,
      },
    );
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
      archiveBytes: number;
      mediaBytes: number;
      compressedWeights: number;
      encodeMs: number;
      decodeMs: number;
      maxRssBytes: number;
    };
    const metrics = await metricOf(readFileSync(restored));
    log({
      series: spec.series,
      label: spec.label,
      kind: 'nnmedia',
      options: spec.options,
      bytes: r.archiveBytes,
      bitsPerWeight: (r.archiveBytes * 8) / r.compressedWeights,
      mediaBitsPerWeight: (r.mediaBytes * 8) / r.compressedWeights,
      metric: metrics[model.metric.key],
      metrics,
      encodeMBps: mbps(r.encodeMs),
      decodeMBps: mbps(r.decodeMs),
      maxRssMB: r.maxRssBytes / 2 ** 20,
    });
  }
  return { baseline, points, weights: ws.count, floatBytes, modelBytes: original.length };
}

function fmt(v: number, d = 3): string {
  return Number.isFinite(v) ? v.toFixed(d) : '–';
}

/** The report: per model its headline rows, every point, and its plot (`plots`: the plots' folder from where the report is). */
function markdown(
  all: Array<{ model: BenchModel; baseline: number; points: BenchPoint[]; weights: number; modelBytes: number }>,
  meta: string,
  plots: string,
): string {
  const lines: string[] = [meta, ''];
  for (const { model, baseline, points, weights, modelBytes } of all) {
    const zstd3 = points.find((p) => p.label === 'float32 + zstd-3')!;
    lines.push(`### ${model.label}`, '');
    lines.push(
      `${weights.toLocaleString('en')} weights in compressed tensors (model file ${modelBytes.toLocaleString('en')} B); original ${model.metric.label}: ${fmt(baseline, 4)}; "no measurable loss" = ${model.metric.note}.`,
      '',
    );
    const ok = points.filter((p) => passes(model, baseline, p));
    const best = (pred: (p: BenchPoint) => boolean): BenchPoint | undefined =>
      ok.filter(pred).sort((a, b) => a.bitsPerWeight - b.bitsPerWeight)[0];
    const bestN = best((p) => p.kind === 'nnmedia');
    const rows: Array<[string, BenchPoint | undefined]> = [
      ['**nnmedia, best at no loss**', bestN],
      [
        'nnmedia, --target-bpw (closest to the headline target)',
        points
          .filter((p) => p.label.startsWith('target-bpw'))
          .sort((a, b) => Math.abs(a.bitsPerWeight - 4) - Math.abs(b.bitsPerWeight - 4))[0],
      ],
      [
        'nnmedia, method as written (per-layer 8-bit PNG)',
        points.find((p) => p.label === 'png lossless layer' || p.label === 'png 8 layer'),
      ],
      ['int8 per-channel + zstd-19', points.find((p) => p.label === 'int8 per-channel + zstd-19')],
      ['int8 per-tensor + zstd-19', points.find((p) => p.label === 'int8 per-tensor + zstd-19')],
      ['int4 per-channel + zstd-19', points.find((p) => p.label === 'int4 per-channel + zstd-19')],
      ['float32 + zstd-19', points.find((p) => p.label === 'float32 + zstd-19')],
    ];
    lines.push(`| | point | bits/weight | ${model.metric.label} | no loss? |`, '|---|---|---|---|---|');
    for (const [name, p] of rows)
      if (p)
        lines.push(
          `| ${name} | ${p.label} | ${fmt(p.bitsPerWeight)} | ${fmt(p.metric, 4)} | ${passes(model, baseline, p) ? 'yes' : 'no'} |`,
        );
    lines.push('', `<details><summary>All points (${points.length})</summary>`, '');
    // the smooth judges (src/eval/judges.ts) in their own columns: KL of the outputs, OCR's ground-truth log-likelihood
    const smooth = (['kl', 'ctcLogLikDelta'] as const).filter((k) => points.some((p) => p.metrics[k] !== undefined));
    const smoothHead = smooth.map((k) => (k === 'kl' ? ' KL vs original (nats) |' : ' Δ CTC log-lik. (nats/char) |')).join('');
    lines.push(
      `| point | bits/weight (archive) | bits/weight (media only) | ${model.metric.label} |${smoothHead} other metrics | encode MB/s | decode MB/s | ×zstd-3 speed (enc/dec) | peak RSS MB |`,
      `|---|---|---|---|${smooth.map(() => '---|').join('')}---|---|---|---|---|`,
    );
    for (const p of points) {
      const small = (v: number): string => (v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential(2) : fmt(v, 5));
      const smoothCells = smooth.map((k) => ` ${p.metrics[k] !== undefined ? small(p.metrics[k]) : ''} |`).join('');
      const others = Object.entries(p.metrics)
        .filter(([k]) => k !== model.metric.key && !(smooth as readonly string[]).includes(k))
        .map(([k, v]) => `${k} ${fmt(v, 4)}`)
        .join(', ');
      lines.push(
        `| ${p.label} | ${fmt(p.bitsPerWeight)} | ${p.mediaBitsPerWeight !== undefined ? fmt(p.mediaBitsPerWeight) : ''} | ${fmt(p.metric, 4)} |${smoothCells} ${others} | ${fmt(p.encodeMBps, 1)} | ${fmt(p.decodeMBps, 1)} | ${p.kind === 'nnmedia' ? `${fmt(p.encodeMBps / zstd3.encodeMBps, 3)} / ${fmt(p.decodeMBps / zstd3.decodeMBps, 3)}` : ''} | ${p.maxRssMB ? fmt(p.maxRssMB, 0) : ''} |`,
      );
    }
    lines.push(
      '',
      '</details>',
      '',
      `![rate–distortion, ${model.label}](${plots}${QUICK ? 'quick/' : ''}rd-${model.id}.png)`,
      '',
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'nnmedia-bench-'));
  const models = QUICK
    ? MODELS.filter((m) => m.id === 'silero-v6')
    : MODELS.filter((m) => !onlyModels || onlyModels.includes(m.id));
  const started = performance.now();
  const all = [];
  try {
    for (const model of models) {
      console.log(`${model.label}`);
      const r = await benchModel(model, tmp);
      const result = { model, ...r };
      all.push(result);
      writeFileSync(
        join(OUT, `${model.id}.json`),
        JSON.stringify(
          { ...r, model: { id: model.id, label: model.label, metric: model.metric.key } },
          (_k, v) => (v === Infinity ? null : v),
          1,
        ),
      );
      await renderPlot(model, r.baseline, r.points, join(OUT, `rd-${model.id}`));
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // issue 14's generalization table: every model with and without calibration data, default and --target-bpw 4,
  // beside int8/int4 round-to-nearest + zstd-19 of the whole file (its own process: it runs models on onnxruntime)
  let generalization = '';
  if (GENERALIZE) {
    console.log('\ngeneralization (bench/generalize.ts)');
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          join(ROOT, 'bench/generalize.ts'),
          ...(args.includes('--generalize-all') ? [] : ['--models', GENERALIZE_MODELS]),
        ],
        { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] },
      );
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`bench/generalize.ts exited with ${code}`))));
    });
    generalization = [
      '## Generalization: models we did not tune on (issue 14)',
      '',
      'From `bench/generalize.ts` (run by `npm run bench`; the method and the calibration sets: [docs/generalization.md](generalization.md)).',
      '',
      readFileSync(join(ROOT, 'bench/results/generalize.md'), 'utf8'),
    ].join('\n');
  }
  const minutes = (performance.now() - started) / 60000;
  const ff = getFfmpegInfo();
  const meta = `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpus()[0]?.model.trim()}, Node ${process.version}, nnmedia ${VERSION}, ffmpeg ${ff ? `${ff.version} (${ff.source})` : 'none'}, in ${minutes.toFixed(1)} min (\`npm run bench${QUICK ? ' -- --quick' : ''}\`). Bits/weight = all archive bytes × 8 / weights of the compressed tensors (manifest, model skeleton and kept tensors included); peers count only their code and scale bytes.`;
  writeFileSync(join(OUT, 'results.md'), markdown(all, meta, '') + (generalization ? '\n\n' + generalization : ''));
  if (!QUICK && !onlyModels) {
    // the full report goes into docs/benchmarks.md (between the bench markers), the summary into the README
    const docPath = join(ROOT, 'docs/benchmarks.md');
    const md = markdown(all, meta, '../bench/results/') + (generalization ? '\n\n' + generalization : '');
    const doc = readFileSync(docPath, 'utf8');
    const start = '<!-- bench:start -->';
    const end = '<!-- bench:end -->';
    if (doc.includes(start) && doc.includes(end))
      writeFileSync(
        docPath,
        await formatMarkdown(
          doc.slice(0, doc.indexOf(start) + start.length) + '\n\n' + md + '\n' + doc.slice(doc.indexOf(end)),
          docPath,
        ),
      );
    await writeSummary();
  }
  console.log(`\nwrote ${OUT}/results.md (${minutes.toFixed(1)} min)`);
  if (QUICK && all.some((r) => r.points.length === 0)) process.exitCode = 1;
}

await main();
