/**
 * `nnmedia view` in a real Chromium: Silero VAD v4 as an image (with its error maps), a video and an audio
 * archive. Layout facts are asserted through the DOM (graph order, one overview row per card, every
 * plane a decoded picture, bytes per layer as `inspect` counts them, a grid that uses the width, axes on
 * every histogram); the screenshots go to the test's folder, or to $NNMEDIA_SCREENSHOTS to be looked at.
 * The graph order itself is checked without a browser on a model whose initializers are listed backwards.
 */
import { request, type Server } from 'node:http';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onnx } from 'onnx-proto';
import { buildViewer, serveViewer } from '../src/cli/view.js';
import { Archive } from '../src/archive/node.js';
import { codedParts, tileEntries } from '../src/archive/manifest.js';
import { compressModel } from '../src/pipeline/compress.js';
import { CHROMIUM, launchChromium, newPage } from './helpers/browser.js';
import { cachedArchive } from './helpers/fixture-cache.js';
import { floatTensor } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const haveChromium = existsSync(CHROMIUM);
const dir = tempDir();
const SILERO_V4 = join(import.meta.dirname, '../models/silero_vad_v4.onnx');

/**
 * A model whose weights are listed in the reverse of the order its nodes use them: as initializers, or
 * (as some exporters write every weight) as Constant nodes in name order at the top of the graph.
 */
function backwardsModel(asConstants: boolean): Uint8Array {
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const vi = (name: string, dims: number[]): onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  const names = ['z_first', 'y_second', 'x_third', 'a_fourth'];
  const tensors = [...names].reverse().map((n, i) => floatTensor(n, [32, 32], gaussian(32 * 32, i + 1, 0.2)));
  const constants: onnx.INodeProto[] = tensors.map((t) => ({
    opType: 'Constant',
    output: [`${t.name}_out`],
    attribute: [{ name: 'value', t, type: onnx.AttributeProto.AttributeType.TENSOR }],
  }));
  const matmuls: onnx.INodeProto[] = names.map((n, i) => ({
    opType: 'MatMul',
    input: [i ? `h${i}` : 'in', asConstants ? `${n}_out` : n],
    output: [`h${i + 1}`],
  }));
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'backwards',
      input: [vi('in', [1, 32])],
      output: [vi('h4', [1, 32])],
      initializer: asConstants ? [] : tensors,
      node: asConstants ? [...constants, ...matmuls] : matmuls,
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

describe('nnmedia view without a browser', () => {
  for (const asConstants of [false, true])
    it(`cards and overview rows follow the graph, not the file or the alphabet (weights as ${asConstants ? 'Constant nodes' : 'initializers'})`, async () => {
      const file = join(dir, `backwards-${asConstants}.onnx`);
      writeFileSync(file, backwardsModel(asConstants));
      await compressModel(file, `${file}.nnm`, {});
      const m = new Archive(`${file}.nnm`).manifest;
      expect(m.tensors.map((t) => t.name)).toEqual(['a_fourth', 'x_third', 'y_second', 'z_first']);
      const html = Buffer.from((await buildViewer(`${file}.nnm`)).get('/')!.body).toString('utf8');
      const cards = [...html.matchAll(/<section class="layer"[^>]*>\s*<h2><a[^>]*>([^<]+)</g)].map((x) => x[1]);
      const rows = [...html.matchAll(/<tr data-target="[^"]+"><td class="num">\d+<\/td><td class="name"><a[^>]*>([^<]+)</g)].map(
        (x) => x[1],
      );
      expect(cards).toEqual(['z_first', 'y_second', 'x_third', 'a_fourth']);
      expect(rows).toEqual(cards);
    });
});

const MEDIA = [
  ['image', {}],
  ['video', { media: 'video' }],
  ['audio', { media: 'audio' }],
] as const;

describe('the view server against other pages', () => {
  it('a malformed URL is a 400 (it ended the server), another Host a 421 (DNS rebinding)', async () => {
    const file = join(dir, 'served.nnm');
    await compressModel(SILERO_V4, file, { check: false, force: true });
    const { server, url } = await serveViewer(file, 0);
    try {
      const port = new URL(url).port;
      const get = (path: string, headers: Record<string, string> = {}) =>
        new Promise<number>((resolve, reject) =>
          request({ host: '127.0.0.1', port, path, headers }, (r) => {
            r.resume();
            resolve(r.statusCode!);
          })
            .on('error', reject)
            .end(),
        );
      while ((await get('/')) === 503) await new Promise((r) => setTimeout(r, 50));
      expect(await get('/%')).toBe(400);
      expect(await get('/')).toBe(200); // still serving
      expect(await get('/', { host: `evil.example.com:${port}` })).toBe(421);
      expect(await get('/', { host: `localhost:${port}` })).toBe(200);
      const page = await fetch(url);
      expect(page.headers.get('x-content-type-options')).toBe('nosniff');
      expect(await page.text()).toContain('<link rel="icon" href="data:,">'); // no favicon 404 on every load
    } finally {
      server.close();
    }
  }, 120_000);

  it('a tensor name holding HTML is shown as text, not run (a crafted archive is hostile)', async () => {
    const file = join(dir, 'served.nnm');
    if (!existsSync(file)) await compressModel(SILERO_V4, file, { check: false, force: true });
    const { manifest, entries } = readArchive(file);
    const crafted = structuredClone(manifest);
    crafted.tensors.find((t) => t.layout)!.name = '<img src=x onerror=alert(1)>';
    const evil = join(dir, 'html-name.nnm');
    writeArchive(evil, entries, crafted);
    const html = Buffer.from((await buildViewer(evil)).get('/')!.body).toString();
    expect(html).not.toContain('<img src=x');
    expect(html).toContain('&#60;img src=x onerror=alert(1)&#62;');
  }, 120_000);
});

describe.skipIf(!haveChromium)('nnmedia view in Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  for (const [media, options] of MEDIA)
    it(`${media} archive of Silero VAD v4: every layer a decoded picture, in graph order, on a grid (screenshot kept)`, async () => {
      const file = join(dir, `silero-${media}.nnm`);
      await cachedArchive(SILERO_V4, options, file);
      const archive = new Archive(file);
      const parts = archive.manifest.tensors.flatMap((t) => codedParts(t).map((c) => c.record)).filter((t) => t.planes);
      const sizes = archive.entrySizes();
      // what `inspect` counts: every media entry of a layer once
      const inspectBytes = new Map(parts.map((t) => [t.key, [...tileEntries(t)].reduce((s, e) => s + sizes.get(e)!, 0)]));
      archive.close();
      let viewer: Server | undefined;
      try {
        // error maps (a second decode of every layer) for the image archive only: the video and audio
        // ones come from the same code, and ffmpeg decodes dominate this test's time on a loaded machine
        const served = await serveViewer(file, 0, media === 'image' ? { model: SILERO_V4 } : {});
        viewer = served.server;
        const page = await newPage(browser, { viewport: { width: 1440, height: 1000 } });
        await page.goto(served.url);
        await page.waitForFunction(() => document.body.dataset.ready === 'true');
        const state = await page.evaluate(() => {
          const cards = [...document.querySelectorAll<HTMLElement>('section.layer')];
          return {
            text: document.body.innerText,
            cards: cards.map((c) => ({
              key: c.dataset.key!,
              name: c.querySelector('h2')!.textContent!,
              id: c.id,
              media: c.dataset.media!,
              bytes: Number(c.dataset.bytes),
              top: c.getBoundingClientRect().top,
              left: c.getBoundingClientRect().left,
              width: c.getBoundingClientRect().width,
              planes: [...c.querySelectorAll<HTMLImageElement>('figure.plane img')].map((i) => i.naturalWidth),
              frames: c.querySelectorAll('figure.frames img').length,
              waves: c.querySelectorAll('figure.waveform svg path.signal').length,
              errors: [...c.querySelectorAll<HTMLImageElement>('.errors img')].map((i) => i.naturalWidth),
              histogramTicks: c.querySelectorAll('svg.hist .axis text').length,
            })),
            rows: [...document.querySelectorAll<HTMLElement>('tr[data-target]')].map((r) => r.dataset.target!),
            broken: document.querySelectorAll('img[data-broken]').length,
            summary: [...document.querySelectorAll('.summary .stat span')].map((s) => s.textContent),
            width: document.documentElement.clientWidth,
          };
        });
        // NNMEDIA_SCREENSHOTS=<folder> keeps them after the test (the test's folder is removed)
        const shot = join(process.env.NNMEDIA_SCREENSHOTS ?? dir, `viewer-${media}.png`);
        writeFileSync(shot, await page.screenshot());
        // and the cards of the first recurrent layer, where the LSTM gates sit side by side
        const lstm = state.cards.find((c) => parts.find((t) => t.key === c.key)?.role === 'lstm') ?? state.cards[0];
        await page.locator(`#${lstm.id}`).scrollIntoViewIfNeeded();
        await page.evaluate((id) => document.getElementById(id)!.scrollIntoView(), lstm.id);
        writeFileSync(shot.replace(/\.png$/, '-cards.png'), await page.screenshot());
        console.log(`viewer screenshots (${media}): ${shot}, ${shot.replace(/\.png$/, '-cards.png')}`);
        await page.close();

        expect(state.text).not.toMatch(/not shown as a picture/);
        expect(state.broken).toBe(0);
        expect(state.summary).toEqual(
          expect.arrayContaining(['model', 'archive', 'bits per weight', 'coded weights', 'codec', 'fidelity']),
        );
        // one card per coded layer, one overview row per card, linking to it, in the same order
        expect(state.cards.map((c) => c.key).sort()).toEqual(parts.map((t) => t.key).sort());
        expect(state.rows).toEqual(state.cards.map((c) => c.id));
        expect(state.cards.some((c) => c.frames > 0)).toBe(media === 'video'); // Silero has planes of 5 frames
        for (const c of state.cards) {
          // the default image codec stores a layer's codes as zstd when that is smaller: shown as pictures all the same
          const coded = parts.find((t) => t.key === c.key && t.name === c.name)!;
          expect(c.media).toBe(coded.codec?.media === 'raw' ? 'raw' : media);
          expect(c.bytes).toBe(inspectBytes.get(c.key));
          // every plane a picture, each with its error map of the same geometry
          expect(c.planes.length).toBeGreaterThan(0);
          expect(c.planes.every((w) => w > 0)).toBe(true);
          expect(c.errors).toEqual(media === 'image' ? c.planes : []);
          expect(c.histogramTicks).toBeGreaterThanOrEqual(6);
          // video: the frames of every plane coded as several; audio: one waveform of all planes
          const record = parts.find((t) => t.key === c.key && t.name === c.name)!;
          if (media === 'video') expect(c.frames).toBe(record.planes!.filter((p) => p.frame!.count > 1).length);
          if (media === 'audio') expect(c.waves).toBe(1);
        }
        // a grid that uses the width: several cards side by side, spanning most of the window
        const firstRow = state.cards.filter((c) => c.top === state.cards[0].top);
        expect(firstRow.length).toBeGreaterThanOrEqual(2);
        const right = Math.max(...firstRow.map((c) => c.left + c.width));
        expect(right - firstRow[0].left).toBeGreaterThan(0.85 * state.width);
      } finally {
        viewer?.close();
      }
    });
});
