/**
 * Generalization benchmark (issue 14): each model with and without calibration data, at the default and at
 * `--target-bpw 4`. Columns: whole-archive bits/weight (archive bytes × 8 / coded weights, as bench/run.ts),
 * the quality gate's fidelity on held-back calibration inputs. A budget the gate refuses is a result:
 * "refused, smallest passing X bits/weight".
 *
 * PARTIAL (see docs/generalization.md): Silero v4/v6 rows only; the int8/int4 RTN peers, task metrics, PaddleOCR,
 * ISNet and the test-suite models are not yet wired in.
 *
 *   node --import tsx bench/generalize.ts [--quick]
 */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compressModel, QualityError, type CompressOptions } from '../src/index.js';
import { MODELS, ROOT } from './models.js';

interface Row {
  model: string;
  calibration: string;
  point: string;
  bitsPerWeight?: number;
  fidelity?: number;
  refused?: { smallestPassing?: number; fidelity?: number };
  seconds: number;
}

const quick = process.argv.includes('--quick');
const speech = join(ROOT, 'data/speech/speech_16k.wav');

interface Case {
  model: string;
  file: string;
  calibrations: { label: string; options: CompressOptions }[];
}

const cases: Case[] = MODELS.filter((m) => m.task === 'vad').map((m) => ({
  model: m.label,
  file: m.file,
  calibrations: [
    { label: 'synthetic', options: {} },
    { label: 'speech_16k.wav', options: { calibration: { paths: [speech] } } },
  ],
}));

async function runOne(
  c: Case,
  cal: Case['calibrations'][number],
  point: string,
  extra: CompressOptions,
  dir: string,
): Promise<Row> {
  const out = join(dir, `${c.model.replace(/\W+/g, '-')}-${cal.label}-${point.replace(/\W+/g, '-')}.nnm`);
  const t0 = performance.now();
  const row: Row = { model: c.model, calibration: cal.label, point, seconds: 0 };
  try {
    const r = await compressModel(c.file, out, { ...cal.options, ...extra });
    row.bitsPerWeight = (r.archiveBytes * 8) / r.compressedWeights;
    row.fidelity = r.quality?.fidelity;
  } catch (e) {
    if (!(e instanceof QualityError)) throw e;
    row.refused = { smallestPassing: e.details.smallestPassing, fidelity: e.details.fidelity };
  }
  row.seconds = (performance.now() - t0) / 1000;
  return row;
}

const fmt = (x: number | undefined, d = 3): string => (x === undefined ? '' : x.toFixed(d));
const cell = (r: Row): string =>
  r.refused
    ? `refused${r.refused.smallestPassing !== undefined ? `, smallest passing ${fmt(r.refused.smallestPassing, 2)} bits/weight` : ''}`
    : fmt(r.bitsPerWeight);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nnm-gen-'));
  const rows: Row[] = [];
  const t0 = performance.now();
  try {
    for (const c of quick ? cases.slice(0, 1) : cases)
      for (const cal of quick ? c.calibrations.slice(0, 1) : c.calibrations)
        for (const [point, extra] of [['default', {}], ...(quick ? [] : [['target-bpw 4', { targetBpw: 4 }]])] as [
          string,
          CompressOptions,
        ][]) {
          const r = await runOne(c, cal, point, extra, dir);
          rows.push(r);
          console.log(
            `  ${r.model.padEnd(16)} ${r.calibration.padEnd(16)} ${r.point.padEnd(13)} ${cell(r).padStart(10)}  fidelity ${fmt(r.fidelity, 4)}  ${r.seconds.toFixed(1)} s`,
          );
        }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const wall = (performance.now() - t0) / 1000;
  const md = [
    `| model | calibration | point | bits/weight | fidelity | s |`,
    `| --- | --- | --- | ---: | ---: | ---: |`,
    ...rows.map(
      (r) => `| ${r.model} | ${r.calibration} | ${r.point} | ${cell(r)} | ${fmt(r.fidelity, 4)} | ${r.seconds.toFixed(1)} |`,
    ),
    '',
    `Wall time ${wall.toFixed(0)} s${quick ? ' (--quick)' : ''}.`,
    '',
  ].join('\n');
  if (!quick) {
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench/results/generalize.json'), JSON.stringify({ wallSeconds: wall, rows }, null, 2) + '\n');
    writeFileSync(join(ROOT, 'bench/results/generalize.md'), md);
  }
  console.log('\n' + md);
}

await main();
