/**
 * Browser decode throughput next to Node's, on the same archives: the
 * benchmark models compressed with the image codecs the browser decodes
 * natively (and the 16-bit PNG / zstd JS fallbacks), decoded in Debian's
 * Chromium (playwright-core) from bytes already in the page, and in Node
 * (one job, in-process, the same work). MB/s counts float32 weights out.
 * In the page each archive is decoded on the page's thread and in workers
 * (`decodeArchive(bytes, { workers })`), alternating the two REPEAT times, so
 * that both see the same load; best and median of each, the longest the page's
 * thread went without running a timer (a stall), and the values of both checked equal.
 *
 *   npm run bench:browser [-- --models silero-v4,isnet] [--codecs png,zstd] [--workers 2] [--repeat 5] [--tag NAME]
 *
 * (needs /usr/bin/chromium; .ci/run installs it.) Writes bench/results/browser.json and browser.md
 * (browser-NAME.* with --tag).
 */

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Archive, compressModel, decodeAllTensors } from '../src/index.js';
import { MODELS, ROOT } from './models.js';
import { CHROMIUM, launchChromium, openNnmediaPage, serveDir } from '../test/helpers/browser.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const REPEAT = Number(arg('--repeat') ?? 5);
const NODE_REPEAT = 3;
const WORKERS = Number(arg('--workers') ?? 2);
const TAG = arg('--tag');
type Setting = [id: string, label: string, options: Parameters<typeof compressModel>[2]];
const ALL_SETTINGS: Setting[] = [
  ['png', 'png 8-bit', { codec: 'png' }],
  ['webp', 'webp lossless 8-bit', { codec: 'webp', lossless: true }],
  ['avif', 'avif lossless 8-bit', { codec: 'avif', lossless: true }],
  ['png16', 'png 16-bit (JS fallback)', { codec: 'png', bits: 16 }],
  ['zstd', 'zstd codes (JS fallback)', { codec: 'zstd' }],
  ['default', 'default (auto: png / zstd-sign)', {}],
];
const SETTINGS = ALL_SETTINGS.filter(([id]) => !arg('--codecs') || arg('--codecs')!.split(',').includes(id));
const BENCH_MODELS = MODELS.filter((m) => !arg('--models') || arg('--models')!.split(',').includes(m.id));

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const uptime = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim();

async function main(): Promise<void> {
  if (!existsSync(CHROMIUM)) {
    console.error(`${CHROMIUM} not found: apt-get install chromium (.ci/run does)`);
    process.exit(2);
  }
  const dir = mkdtempSync(join(tmpdir(), 'nnmedia-bench-browser-'));
  const { server, base } = await serveDir(dir);
  const browser = await launchChromium();
  const page = await openNnmediaPage(browser, dir, base);
  const version = browser.version();
  // tsx keeps function names with a helper (__name) the page does not have: the functions evaluated below use it
  await page.evaluate('window.__name = (f) => f');
  const rows: Array<Record<string, string | number>> = [];
  const loadBefore = uptime();
  const started = new Date().toISOString();
  for (const model of BENCH_MODELS) {
    for (const [, label, options] of SETTINGS) {
      const name = `${model.id}-${label.replace(/[^a-z0-9]+/gi, '-')}.nnm`;
      const file = join(dir, name);
      await compressModel(model.file, file, options);
      const archive = new Archive(file);
      const floats = archive.manifest.tensors.filter((t) => t.layout).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
      let nodeMs = Infinity;
      for (let k = 0; k < NODE_REPEAT; k++) {
        const t0 = performance.now();
        await decodeAllTensors(archive, { jobs: 1 });
        nodeMs = Math.min(nodeMs, performance.now() - t0);
      }
      archive.close();
      // in the page, from bytes already fetched (the network is not the decoder): the page's thread and workers
      // alternately (which goes first alternates too), REPEAT times each
      const r = await page.evaluate(
        async ([url, repeat, workers]) => {
          type Threads = { workers: number; inWorkers: number; onPage: number; fallback?: string };
          const w = window as unknown as {
            nnmedia: {
              decodeArchive(b: Uint8Array, o: object): Promise<{ tensors: Map<string, Float32Array>; threads: Threads }>;
            };
          };
          const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
          const hash = (m: Map<string, Float32Array>): string => {
            let h = 0x811c9dc5;
            for (const [k, v] of [...m].sort(([a], [b]) => (a < b ? -1 : 1))) {
              for (let i = 0; i < k.length; i++) h = Math.imul(h ^ k.charCodeAt(i), 16777619);
              const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
              for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i], 16777619);
            }
            return (h >>> 0).toString(16);
          };
          const out = {
            page: [] as number[],
            workers: [] as number[],
            pageStall: 0,
            workersStall: 0,
            hashes: {} as Record<string, string>,
            threads: undefined as Threads | undefined,
          };
          for (let k = 0; k < repeat; k++)
            for (const mode of k % 2 ? (['workers', 'page'] as const) : (['page', 'workers'] as const)) {
              // the longest the page's thread goes without running a timer while the decode runs
              let last = performance.now();
              let stall = 0;
              let on = true;
              const tick = (): void => {
                const now = performance.now();
                stall = Math.max(stall, now - last);
                last = now;
                if (on) setTimeout(tick, 0);
              };
              setTimeout(tick, 0);
              const t0 = performance.now();
              const d = await w.nnmedia.decodeArchive(bytes, { workers: mode === 'page' ? 0 : workers });
              const ms = performance.now() - t0;
              on = false;
              stall = Math.max(stall, performance.now() - last);
              out[mode].push(ms);
              if (mode === 'page') out.pageStall = Math.max(out.pageStall, stall);
              else {
                out.workersStall = Math.max(out.workersStall, stall);
                out.threads = d.threads;
              }
              if (k === 0) out.hashes[mode] = hash(d.tensors);
            }
          return out;
        },
        [`${base}/${name}`, REPEAT, WORKERS] as const,
      );
      if (r.hashes.page !== r.hashes.workers) throw new Error(`${name}: values in workers differ from the page's`);
      const browserMs = Math.min(...r.page);
      const workersMs = Math.min(...r.workers);
      const mb = (floats * 4) / 1e6;
      const row = {
        model: model.label,
        codec: label,
        weightsMB: mb,
        nodeMs,
        browserMs,
        nodeMBps: mb / (nodeMs / 1000),
        browserMBps: mb / (browserMs / 1000),
        browserVsNode: nodeMs / browserMs,
        workersMs,
        workersMBps: mb / (workersMs / 1000),
        workersVsPage: browserMs / workersMs,
        browserMedianMs: median(r.page),
        workersMedianMs: median(r.workers),
        workersMedianVsPage: median(r.page) / median(r.workers),
        pageStallMs: r.pageStall,
        workersStallMs: r.workersStall,
        workersUsed: r.threads?.workers ?? 0,
        tensorsInWorkers: r.threads?.inWorkers ?? 0,
        tensorsOnPage: r.threads?.onPage ?? 0,
      };
      rows.push(row);
      console.log(
        `${model.label}, ${label}: Node ${row.nodeMBps.toFixed(1)} MB/s, ${version.split('/')[0]} page ${row.browserMBps.toFixed(1)} MB/s, ${WORKERS} workers ${row.workersMBps.toFixed(1)} MB/s (best ${row.workersVsPage.toFixed(2)}×, median ${row.workersMedianVsPage.toFixed(2)}×; stalls ${row.pageStallMs.toFixed(0)} / ${row.workersStallMs.toFixed(0)} ms)`,
      );
    }
  }
  const loadAfter = uptime();
  await browser.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  const out = join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  const stem = TAG ? `browser-${TAG}` : 'browser';
  const command = `npm run bench:browser${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`;
  writeFileSync(
    join(out, `${stem}.json`),
    JSON.stringify(
      { date: started, command, browser: `Chromium ${version}`, workers: WORKERS, repeat: REPEAT, loadBefore, loadAfter, rows },
      null,
      2,
    ) + '\n',
  );
  const f = (x: string | number, d: number): string => Number(x).toFixed(d);
  const md = [
    `Decode throughput (MB/s of float32 weights out; best of ${REPEAT}, the page's thread and ${WORKERS} workers alternating; checksums verified each time), Chromium ${version} headless vs Node ${process.version} (one job); \`${command}\`, ${started}. Load before: \`${loadBefore}\`; after: \`${loadAfter}\`.`,
    '',
    `| model | codec | float32 MB | Node MB/s | page MB/s | ${WORKERS} workers MB/s | workers / page (best) | workers / page (median) | longest page stall ms: page / workers |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.model} | ${r.codec} | ${f(r.weightsMB, 2)} | ${f(r.nodeMBps, 1)} | ${f(r.browserMBps, 1)} | ${f(r.workersMBps, 1)} | ${f(r.workersVsPage, 2)}× | ${f(r.workersMedianVsPage, 2)}× | ${f(r.pageStallMs, 0)} / ${f(r.workersStallMs, 0)} |`,
    ),
  ].join('\n');
  writeFileSync(join(out, `${stem}.md`), md + '\n');
  console.log('\n' + md);
}

await main();
