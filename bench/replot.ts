/** Re-renders the rate–distortion plots from bench/results/<model>.json without re-running the sweep. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MODELS, ROOT } from './models.js';
import { renderPlot } from './plot.js';

for (const model of MODELS) {
  const file = join(ROOT, 'bench/results', `${model.id}.json`);
  if (!existsSync(file)) continue;
  const r = JSON.parse(readFileSync(file, 'utf8'));
  await renderPlot(model, r.baseline, r.points, join(ROOT, 'bench/results', `rd-${model.id}`));
  console.log(`bench/results/rd-${model.id}.png`);
}
