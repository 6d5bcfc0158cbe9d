/**
 * Where the browser's decode time goes: Silero VAD v4 compressed with one codec, decoded once in Chromium to
 * warm up, then again under the V8 CPU profiler (Chrome DevTools Protocol); prints the wall time and the
 * functions with the most self time.
 *
 *   node --import tsx bench/browser-profile.ts [codec]      (codec: png, webp, zstd, …; default zstd)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compressModel } from '../src/index.js';
import { MODELS } from './models.js';
import { launchChromium, openNnmediaPage, serveDir } from '../test/helpers/browser.js';
const dir = mkdtempSync(join(tmpdir(), 'nnmedia-browser-profile-'));
const codec = process.argv[2] ?? 'zstd';
await compressModel(MODELS[0].file, join(dir, 'a.nnm'), { codec, check: false });
const { server, base } = await serveDir(dir);
const browser = await launchChromium();
const page = await openNnmediaPage(browser, dir, base);
const cdp = await page.context().newCDPSession(page);
await cdp.send('Profiler.enable');
await page.evaluate(async (url) => {
  const w = window as unknown as { nnmedia: { decodeArchive(b: Uint8Array): Promise<unknown> } };
  (window as unknown as { bytes: Uint8Array }).bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  await w.nnmedia.decodeArchive((window as unknown as { bytes: Uint8Array }).bytes);
}, `${base}/a.nnm`);
await cdp.send('Profiler.start');
const ms = await page.evaluate(async () => {
  const w = window as unknown as { nnmedia: { decodeArchive(b: Uint8Array): Promise<unknown> } };
  const t0 = performance.now();
  await w.nnmedia.decodeArchive((window as unknown as { bytes: Uint8Array }).bytes);
  return performance.now() - t0;
});
const { profile } = await cdp.send('Profiler.stop');
console.log(`decode ${ms.toFixed(1)} ms; self time:`);
const self = new Map<string, number>();
const dt = profile.timeDeltas ?? [];
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
(profile.samples ?? []).forEach((id, i) => {
  const n = byId.get(id)!;
  const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
  self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0) / 1000);
});
console.log(
  [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 15)
    .map(([k, v]) => `${v.toFixed(1)} ms ${k}`)
    .join('\n'),
);
await browser.close();
server.close();
rmSync(dir, { recursive: true, force: true });
