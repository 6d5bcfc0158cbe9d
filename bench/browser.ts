/**
 * Browser decode throughput next to Node's, on the same archives: the
 * benchmark models compressed with the image codecs the browser decodes
 * natively (and the 16-bit PNG / zstd JS fallbacks), decoded in Debian's
 * Chromium (playwright-core) from bytes already in the page, and in Node
 * (one job, in-process, the same work). MB/s counts float32 weights out.
 *
 *   npm run bench:browser        (needs /usr/bin/chromium; .ci/run installs it)
 *
 * Writes bench/results/browser.json and browser.md.
 */

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Archive, compressModel, decodeAllTensors } from '../src/index.js';
import { MODELS, ROOT } from './models.js';
import { CHROMIUM, launchChromium, openNnmediaPage, serveDir } from '../test/helpers/browser.js';

const REPEAT = 3;
const SETTINGS: Array<[string, Parameters<typeof compressModel>[2]]> = [
  ['png 8-bit', { codec: 'png' }],
  ['webp lossless 8-bit', { codec: 'webp', lossless: true }],
  ['avif lossless 8-bit', { codec: 'avif', lossless: true }],
  ['png 16-bit (JS fallback)', { codec: 'png', bits: 16 }],
  ['zstd codes (JS fallback)', { codec: 'zstd' }],
];

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
  const rows: Array<Record<string, string | number>> = [];
  for (const model of MODELS) {
    for (const [label, options] of SETTINGS) {
      const name = `${model.id}-${label.replace(/[^a-z0-9]+/gi, '-')}.nnm`;
      const file = join(dir, name);
      await compressModel(model.file, file, options);
      const archive = new Archive(file);
      const floats = archive.manifest.tensors.filter((t) => t.layout).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
      let nodeMs = Infinity;
      for (let k = 0; k < REPEAT; k++) {
        const t0 = performance.now();
        await decodeAllTensors(archive, { jobs: 1 });
        nodeMs = Math.min(nodeMs, performance.now() - t0);
      }
      archive.close();
      // best of REPEAT in the page, from bytes already fetched (the network is not the decoder)
      const browserMs = await page.evaluate(
        async ([url, repeat]) => {
          const w = window as unknown as { nnmedia: { decodeArchive(b: Uint8Array): Promise<unknown> } };
          const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
          let best = Infinity;
          for (let k = 0; k < repeat; k++) {
            const t0 = performance.now();
            await w.nnmedia.decodeArchive(bytes);
            best = Math.min(best, performance.now() - t0);
          }
          return best;
        },
        [`${base}/${name}`, REPEAT] as const,
      );
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
      };
      rows.push(row);
      console.log(
        `${model.label}, ${label}: Node ${row.nodeMBps.toFixed(1)} MB/s, ${version.split('/')[0]} ${row.browserMBps.toFixed(1)} MB/s (${row.browserVsNode.toFixed(2)}× Node)`,
      );
    }
  }
  await browser.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  const out = join(ROOT, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'browser.json'),
    JSON.stringify({ date: new Date().toISOString(), browser: `Chromium ${version}`, rows }, null, 2) + '\n',
  );
  const md = [
    `Decode throughput (MB/s of float32 weights out; best of ${REPEAT}; checksums verified each time), Chromium ${version} headless vs Node ${process.version}, one thread each:`,
    '',
    '| model | codec | float32 MB | Node ms | browser ms | Node MB/s | browser MB/s | browser / Node |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.model} | ${r.codec} | ${Number(r.weightsMB).toFixed(2)} | ${Number(r.nodeMs).toFixed(0)} | ${Number(r.browserMs).toFixed(0)} | ${Number(r.nodeMBps).toFixed(1)} | ${Number(r.browserMBps).toFixed(1)} | ${Number(r.browserVsNode).toFixed(2)}× |`,
    ),
  ].join('\n');
  writeFileSync(join(out, 'browser.md'), md + '\n');
  console.log('\n' + md);
}

await main();
