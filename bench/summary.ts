/**
 * The README's results: one table across the benchmarked models and one plot, from the benchmark's own
 * results (bench/results/<model>.json, written by `npm run bench`): per model the default setting, the best
 * nnmedia point at no measurable loss, and the int8 + zstd and float32 + zstd peers, with the date they were
 * measured. `tsx bench/summary.ts` writes bench/results/summary.md and summary.png/.svg and puts the table
 * between the README's `<!-- results:start -->` and `<!-- results:end -->` markers (run.ts calls it too).
 */

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as prettier from 'prettier';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import { MODELS, ROOT, passes, type BenchModel } from './models.js';
import type { BenchPoint } from './types.js';

const OUT = join(ROOT, 'bench/results');
export const RESULTS_START = '<!-- results:start -->';
export const RESULTS_END = '<!-- results:end -->';

interface Result {
  model: BenchModel;
  baseline: number;
  points: BenchPoint[];
  weights: number;
}

/** The point a row of the summary shows, or none if the run did not measure it. */
const ROWS: ReadonlyArray<[label: string, pick: (r: Result) => BenchPoint | undefined]> = [
  ['nnmedia default (no options)', (r) => r.points.find((p) => p.label === 'default')],
  [
    'nnmedia, best at no loss',
    (r) =>
      r.points
        .filter((p) => p.kind === 'nnmedia' && passes(r.model, r.baseline, p))
        .sort((a, b) => a.bitsPerWeight - b.bitsPerWeight)[0],
  ],
  ['int8 per-channel + zstd-19', (r) => r.points.find((p) => p.label === 'int8 per-channel + zstd-19')],
  ['float32 + zstd-19 (lossless)', (r) => r.points.find((p) => p.label === 'float32 + zstd-19')],
];

/** The date the benchmark ran, from the first line of its report. */
function measuredOn(): string {
  const md = readFileSync(join(OUT, 'results.md'), 'utf8');
  return /Measured (\d{4}-\d{2}-\d{2})/.exec(md)?.[1] ?? 'unknown date';
}

function results(): Result[] {
  return MODELS.filter((m) => existsSync(join(OUT, `${m.id}.json`))).map((model) => {
    const r = JSON.parse(readFileSync(join(OUT, `${model.id}.json`), 'utf8')) as Omit<Result, 'model'>;
    return { ...r, model };
  });
}

const fmtMetric = (m: BenchModel, v: number): string =>
  m.metric.key === 'cer' ? `CER ${(v * 100).toFixed(2)} %` : `${m.metric.key} ${v.toFixed(3)}`;

/** The markdown table: a row per model, a column per kind of point (bits/weight, task metric, the setting). */
export function summaryTable(all = results(), date = measuredOn()): string {
  const header = ['model (weights compressed)', ...ROWS.map(([label]) => label), 'no loss means'];
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
  for (const r of all) {
    const cells = ROWS.map(([label, pick]) => {
      const p = pick(r);
      if (!p) return '–';
      const bpw = p.bitsPerWeight.toFixed(2);
      const flag = /^(max-loss|target-bpw|target-snr) /.test(p.label) ? `\`--${p.label}\`` : p.label;
      const setting = p.kind === 'nnmedia' && label.includes('best') ? ` (${flag})` : '';
      const loss = passes(r.model, r.baseline, p) ? '' : ' ✗';
      return `${label.includes('best') ? `**${bpw}**` : bpw} · ${fmtMetric(r.model, p.metric)}${loss}${setting}`;
    });
    lines.push(
      `| ${r.model.label} (${(r.weights / 1e6).toFixed(2)} M) | ${cells.join(' | ')} | ${r.model.metric.note}${r.model.metric.key === 'cer' ? ` (original ${(r.baseline * 100).toFixed(2)} %)` : ''} |`,
    );
  }
  return [
    ...lines,
    '',
    `Bits per weight of the whole archive (manifest, graph and kept tensors included; the peers count only their codes and scales) · the task metric of the decompressed model; ✗: a measurable loss. Measured ${date} by \`npm run bench\` ([details](docs/benchmarks.md)).`,
  ].join('\n');
}

/** Bits per weight of each row's point, per model: bars, the no-loss ones solid. */
async function renderSummaryPlot(all: Result[], outBase: string): Promise<void> {
  const values = all.flatMap((r) =>
    ROWS.flatMap(([label, pick]) => {
      const p = pick(r);
      return p
        ? [{ model: r.model.label, point: label, bpw: p.bitsPerWeight, ok: passes(r.model, r.baseline, p) ? 'no loss' : 'loss' }]
        : [];
    }),
  );
  const spec: vegaLite.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Bits per weight of the whole archive (fewer is better; a faded bar: the model measurably lost accuracy)',
    background: 'white',
    data: { values },
    facet: {
      row: {
        field: 'model',
        type: 'nominal',
        title: null,
        sort: all.map((r) => r.model.label),
        header: { labelOrient: 'top', labelAnchor: 'start', labelAngle: 0, labelFontWeight: 'bold', labelFontSize: 12 },
      },
    },
    spec: {
      width: 520,
      height: { step: 18 },
      layer: [
        {
          mark: 'bar',
          encoding: {
            y: { field: 'point', type: 'nominal', title: null, sort: ROWS.map(([l]) => l), axis: { labelLimit: 300 } },
            x: { field: 'bpw', type: 'quantitative', title: 'bits per weight (whole archive)', scale: { domain: [0, 32] } },
            color: { field: 'point', type: 'nominal', legend: null, scale: { scheme: 'tableau10' } },
            opacity: { condition: { test: "datum.ok === 'loss'", value: 0.35 }, value: 1 },
          },
        },
        {
          mark: { type: 'text', align: 'left', dx: 4 },
          encoding: {
            y: { field: 'point', type: 'nominal', sort: ROWS.map(([l]) => l) },
            x: { field: 'bpw', type: 'quantitative' },
            text: { field: 'bpw', type: 'quantitative', format: '.2f' },
          },
        },
      ],
    },
  };
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileSync(`${outBase}.svg`, svg);
  await sharp(Buffer.from(svg), { density: 110 }).png().toFile(`${outBase}.png`);
}

/** The file with its block between the markers replaced (unchanged if it has no such block). */
export function withBlock(text: string, start: string, end: string, block: string): string {
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) return text;
  return `${text.slice(0, a + start.length)}\n\n${block}\n\n${text.slice(b)}`;
}

/** A markdown file formatted as `npm run lint` wants it (prettier with the project's settings). */
export async function formatMarkdown(text: string, file: string): Promise<string> {
  return prettier.format(text, { ...(await prettier.resolveConfig(file)), filepath: file });
}

export async function writeSummary(): Promise<void> {
  const all = results();
  const table = summaryTable(all);
  writeFileSync(join(OUT, 'summary.md'), `${table}\n`);
  await renderSummaryPlot(all, join(OUT, 'summary'));
  const readme = join(ROOT, 'README.md');
  writeFileSync(readme, await formatMarkdown(withBlock(readFileSync(readme, 'utf8'), RESULTS_START, RESULTS_END, table), readme));
  console.log(`wrote ${join(OUT, 'summary.md')}, summary.png and the README's results`);
}

if (import.meta.url === `file://${process.argv[1]}`) await writeSummary();
