/**
 * The encoder's one pass over an [out, in] matrix on the default grid (quantizeFc: maxima, codes, error sums,
 * histogram, the codes laid down the plane's columns), alone, in ns a weight, beside a plain copy of the same
 * float32 bytes as the floor of any pass over them. A matrix like the 1.2 GB synthetic model's down projections
 * (Gaussian, a few 6–30 σ weights a row). Prints a table and writes JSON; the codes' sha256 shows that two
 * builds being compared wrote the same codes.
 *
 *   npx tsx bench/quantize-pass.ts [--rows 3072] [--cols 8192] [--repeats 5] [--out bench/results/quantize-pass.json]
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { quantizeFc } from '../src/pipeline/fused.js';
import { gaussian } from '../test/helpers/random.js';
import { ROOT } from './models.js';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '3072' },
    cols: { type: 'string', default: '8192' },
    repeats: { type: 'string', default: '5' },
    out: { type: 'string', default: join(ROOT, 'bench/results/quantize-pass.json') },
  },
});
const nout = Number(args.rows);
const nin = Number(args.cols);
const repeats = Number(args.repeats);
const n = nout * nin;
const w = gaussian(n, 1, 0.02);
const draw = gaussian(n, 2, 1);
for (let i = 0, k = 0; i < n; i += 1 + Math.floor(4000 * Math.abs(draw[k++]) + 1))
  w[i] = 0.02 * (6 + 6 * Math.abs(draw[k++])) * Math.sign(draw[k++]);

/** The best of `repeats` runs, in ns a weight. */
function best(run: () => void): number {
  let ms = Infinity;
  for (let r = 0; r < repeats; r++) {
    const t = performance.now();
    run();
    ms = Math.min(ms, performance.now() - t);
  }
  return (ms * 1e6) / n;
}

const copy = new Float32Array(n);
const rows: Array<{ pass: string; nsPerWeight: number; codesSha256?: string }> = [];
rows.push({ pass: 'copy of the float32 values', nsPerWeight: best(() => copy.set(w)) });
let codes: Uint8Array | undefined;
const layout = { kind: 'fc', nin, nout, order: 'out_in' } as const;
rows.push({
  pass: 'quantizeFc, default grid, 8 bits',
  nsPerWeight: best(() => {
    codes = quantizeFc(w, layout, 8, 1)!.plane.codes as Uint8Array;
  }),
  codesSha256: createHash('sha256').update(codes!).digest('hex').slice(0, 16),
});
console.log(`[${nout}, ${nin}] float32, best of ${repeats}`);
console.log('| pass | ns a weight | codes (sha256, first 16) |\n| --- | --- | --- |');
for (const r of rows) console.log(`| ${r.pass} | ${r.nsPerWeight.toFixed(2)} | ${r.codesSha256 ?? ''} |`);
writeFileSync(args.out!, JSON.stringify({ rows: nout, cols: nin, repeats, results: rows }, null, 2) + '\n');
