/**
 * What starting the decode workers costs: one model compressed with one codec, decoded twice in each of 6 fresh
 * Chromium pages, alternately on the page's thread (`workers: 0`) and in 2 workers (`workers: 2`, started by
 * that first decode). Prints the first and second decode's time of each page, and the load before and after.
 *
 *   node --import tsx bench/browser-cold.ts [model id] [codec]      (default: paddleocr-v4-rec png)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compressModel } from '../src/index.js';
import { MODELS } from './models.js';
import { launchChromium, newPage, openNnmediaPage, serveDir } from '../test/helpers/browser.js';

const id = process.argv[2] ?? 'paddleocr-v4-rec';
const codec = process.argv[3] ?? 'png';
const model = MODELS.find((m) => m.id === id);
if (!model) throw new Error(`no model ${id}: one of ${MODELS.map((m) => m.id).join(', ')}`);
const dir = mkdtempSync(join(tmpdir(), 'nnmedia-browser-cold-'));
await compressModel(model.file, join(dir, 'a.nnm'), { codec, check: false });
const { server, base } = await serveDir(dir);
const browser = await launchChromium();
await (await openNnmediaPage(browser, dir, base)).close();
const uptime = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim();
console.log(`before: ${uptime()}`);
const times: Record<'page' | 'workers', number[][]> = { page: [], workers: [] };
for (let k = 0; k < 6; k++) {
  const mode = k % 2 ? 'workers' : 'page';
  const p = await newPage(browser);
  await p.goto(`${base}/index.html`);
  await p.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
  // a string: tsx's helpers for function names are not in the page
  const ms = (await p.evaluate(
    `(async () => {
      const bytes = new Uint8Array(await (await fetch('${base}/a.nnm')).arrayBuffer());
      const out = [];
      for (let i = 0; i < 2; i++) {
        const t0 = performance.now();
        await window.nnmedia.decodeArchive(bytes, { workers: ${mode === 'page' ? 0 : 2} });
        out.push(Math.round(performance.now() - t0));
      }
      return out;
    })()`,
  )) as number[];
  times[mode].push(ms);
  await p.close();
}
console.log(`after: ${uptime()}`);
console.log(`${model.label}, ${codec}: [first, second] decode in ms, one fresh page each`);
console.log(`  page's thread: ${JSON.stringify(times.page)}`);
console.log(`  2 workers:     ${JSON.stringify(times.workers)}`);
await browser.close();
server.close();
rmSync(dir, { recursive: true, force: true });
