/** Rate–distortion plot per model: bits/weight on x, task metric on y, one line per codec family or peer. */
import { writeFileSync } from 'node:fs';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { BenchModel } from './models.js';
import type { BenchPoint } from './types.js';

export async function renderPlot(model: BenchModel, baseline: number, points: BenchPoint[], outBase: string): Promise<void> {
  const values = points
    .filter((p) => Number.isFinite(p.bitsPerWeight) && Number.isFinite(p.metric) && p.bitsPerWeight <= 34)
    .map((p) => ({ series: p.series, label: p.label, bpw: p.bitsPerWeight, metric: p.metric }));
  const threshold = model.metric.threshold(baseline);
  const spec: vegaLite.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${model.label}: rate–distortion (${model.metric.note})`,
    width: 640,
    height: 380,
    background: 'white',
    layer: [
      {
        data: { values },
        mark: { type: 'line', point: true, clip: true },
        encoding: {
          x: {
            field: 'bpw',
            type: 'quantitative',
            title: 'bits per weight (whole archive)',
            scale: { type: 'log', domain: [1, 34] },
          },
          // the interesting region is near no loss: CER on a symlog axis, agreement from 0.9 up (lower points sit on the edge)
          y: model.metric.higherIsBetter
            ? { field: 'metric', type: 'quantitative', title: model.metric.label, scale: { domain: [0.9, 1], clamp: true } }
            : {
                field: 'metric',
                type: 'quantitative',
                title: `${model.metric.label} (symlog)`,
                scale: { type: 'symlog', constant: 0.001 },
              },
          color: {
            field: 'series',
            type: 'nominal',
            title: null,
            scale: { scheme: 'tableau20' },
            legend: { orient: 'bottom', columns: 2, labelLimit: 320 },
          },
          order: { field: 'bpw' },
          tooltip: [{ field: 'label' }, { field: 'bpw' }, { field: 'metric' }],
        },
      },
      {
        data: { values: [{ t: threshold }] },
        mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' },
        encoding: { y: { field: 't', type: 'quantitative' } },
      },
    ],
  };
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileSync(`${outBase}.svg`, svg);
  await sharp(Buffer.from(svg), { density: 110 }).png().toFile(`${outBase}.png`);
}
