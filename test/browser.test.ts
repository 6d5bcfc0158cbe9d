/**
 * The browser decoder in a real Chromium (Debian's, driven by playwright-core):
 * tensors rebuilt with the browser's own image decoders are bit-identical to
 * Node's, and a corrupt archive is rejected. `.ci/run` installs chromium; on a
 * machine without /usr/bin/chromium these tests are skipped, loudly.
 */
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Archive, compressModel, decodeAllTensors } from '../src/index.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { tempDir } from './helpers/tmp.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  // CI installs chromium (.ci/run): there a missing browser is a failure, not a skip
  if (process.env.CI) throw new Error(`${CHROMIUM} not found on CI: .ci/run must install chromium`);
  console.warn(`browser tests SKIPPED: ${CHROMIUM} not found (apt-get install chromium)`);
}

const dir = tempDir();
let server: Server;
let browser: Browser;
let page: Page;
let base = '';

const CASES: Array<[string, Parameters<typeof compressModel>[2]]> = [
  ['png', { codec: 'png', bits: 8 }],
  ['webp', { codec: 'webp', lossless: true, bits: 8 }],
  ['avif', { codec: 'avif', lossless: true, bits: 8 }],
  ['step-webp', { codec: 'webp', lossless: true, relStep: 1 / 4 }],
  ['rotated-png', { codec: 'png', rotate: true }],
];

describe.skipIf(!haveChromium)('browser decoder (Chromium)', () => {
  beforeAll(async () => {
    const model = join(dir, 'm.onnx');
    writeFileSync(model, mixedModel().bytes);
    for (const [name, o] of CASES) await compressModel(model, join(dir, `${name}.nnm`), o);
    const good = readFileSync(join(dir, 'png.nnm'));
    const bad = Buffer.from(good);
    bad[bad.indexOf(Buffer.from('IDAT')) + 20] ^= 1;
    writeFileSync(join(dir, 'corrupt.nnm'), bad);
    await build({
      entryPoints: [join(import.meta.dirname, '../src/browser/index.ts')],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      outfile: join(dir, 'nnmedia.js'),
      logLevel: 'silent',
    });
    writeFileSync(
      join(dir, 'index.html'),
      '<!doctype html><meta charset="utf-8"><title>nnmedia</title><script type="module">import * as n from "./nnmedia.js"; window.nnmedia = n; window.ready = true;</script>',
    );
    server = createServer((req, res) => {
      const f = join(dir, (req.url ?? '/').split('?')[0].replace(/^\/+/, '') || 'index.html');
      if (!f.startsWith(dir) || !existsSync(f)) return void res.writeHead(404).end();
      res.writeHead(200, {
        'content-type': f.endsWith('.js') ? 'text/javascript' : f.endsWith('.html') ? 'text/html' : 'application/octet-stream',
      });
      res.end(readFileSync(f));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    browser = await chromium.launch({
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
    page = await browser.newPage();
    await page.goto(`${base}/index.html`);
    await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
  });
  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  for (const [name] of CASES)
    it(`${name}: every tensor decoded in the browser is bit-identical to Node's`, async () => {
      const node = await decodeAllTensors(new Archive(join(dir, `${name}.nnm`)));
      const inPage = await page.evaluate(async (url) => {
        const w = window as unknown as { nnmedia: { decodeArchive(u: string): Promise<{ tensors: Map<string, Float32Array> }> } };
        const r = await w.nnmedia.decodeArchive(url);
        return Object.fromEntries(
          [...r.tensors].map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))]),
        );
      }, `${base}/${name}.nnm`);
      expect(Object.keys(inPage).sort()).toEqual([...node.keys()].sort());
      for (const [k, v] of node) expect(inPage[k]).toEqual(Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length)));
    });

  it('a corrupt archive is rejected with a clear error', async () => {
    const message = await page.evaluate(async (url) => {
      const w = window as unknown as { nnmedia: { decodeArchive(u: string): Promise<unknown> } };
      try {
        await w.nnmedia.decodeArchive(url);
        return 'decoded';
      } catch (e) {
        return `${(e as Error).name}: ${(e as Error).message}`;
      }
    }, `${base}/corrupt.nnm`);
    expect(message).toMatch(/^BrowserArchiveError: entry tensors\/.*\.png: sha256 mismatch \(corrupt\)$/);
  });
});
