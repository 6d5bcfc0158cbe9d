/**
 * What the Chromium tests and the browser benchmark share: Debian's Chromium
 * with the flags this machine needs, the browser entry bundled by esbuild, a
 * static server for a folder (with HTTP Range support; `?norange` makes it
 * ignore Range and answer 200), and a page that exposes `window.nnmedia`.
 * No vitest here: bench/ imports it too.
 */
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(import.meta.dirname, '../..');

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** Bundles an entry point (path from the repository root) for the browser into `outfile`. */
export async function bundle(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [join(ROOT, entry)],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    outfile,
    logLevel: 'silent',
  });
}

const TYPES: Array<[RegExp, string]> = [
  [/\.m?js$/, 'text/javascript'],
  [/\.wasm$/, 'application/wasm'],
  [/\.html$/, 'text/html; charset=utf-8'],
  [/\.css$/, 'text/css'],
  [/\.png$/, 'image/png'],
  [/\.wav$/, 'audio/wav'],
];

/** Serves `dir` on 127.0.0.1 (port 0: any free one); `stats.rangeRequests` counts the Range requests answered with 206. */
export async function serveDir(
  dir: string,
  port = 0,
): Promise<{ server: Server; base: string; stats: { rangeRequests: number } }> {
  const stats = { rangeRequests: 0 };
  const server = createServer((req, res) => {
    const [path, query] = (req.url ?? '/').split('?');
    let f = join(dir, path.replace(/^\/+/, '') || 'index.html');
    if (existsSync(f) && statSync(f).isDirectory()) f = join(f, 'index.html');
    if (!f.startsWith(dir) || !existsSync(f)) return void res.writeHead(404).end();
    const type = TYPES.find(([re]) => re.test(f))?.[1] ?? 'application/octet-stream';
    const body = readFileSync(f);
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && query !== 'norange') {
      stats.rangeRequests++;
      const [a, b] = [range[1], range[2]];
      const start = a === '' ? Math.max(0, body.length - Number(b)) : Number(a);
      const end = a === '' || b === '' ? body.length - 1 : Math.min(Number(b), body.length - 1);
      res.writeHead(206, { 'content-type': type, 'content-range': `bytes ${start}-${end}/${body.length}` });
      return void res.end(body.subarray(start, end + 1));
    }
    res.writeHead(200, { 'content-type': type });
    res.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}`, stats };
}

/**
 * A new page whose waits never time out on their own: a loaded machine makes everything slower, and the
 * test's own timeout (vitest) bounds the wait instead of Playwright's 30 s.
 */
export async function newPage(browser: Browser, options: Parameters<Browser['newPage']>[0] = {}): Promise<Page> {
  const page = await browser.newPage(options);
  page.setDefaultTimeout(0);
  return page;
}

/**
 * Bundles the browser entry into `dir` (its decode worker beside it, where the entry's
 * `new URL('./decode-worker.js', import.meta.url)` finds it) with an index.html that sets `window.nnmedia`, and opens it.
 */
export async function openNnmediaPage(browser: Browser, dir: string, base: string): Promise<Page> {
  await bundle('src/browser/index.ts', join(dir, 'nnmedia.js'));
  await bundle('src/browser/decode-worker.ts', join(dir, 'decode-worker.js'));
  writeFileSync(
    join(dir, 'index.html'),
    '<!doctype html><meta charset="utf-8"><title>nnmedia</title><script type="module">import * as n from "./nnmedia.js"; window.nnmedia = n; window.ready = true;</script>',
  );
  const page = await newPage(browser);
  await page.goto(`${base}/index.html`);
  await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
  return page;
}
