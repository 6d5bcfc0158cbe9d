/**
 * `npm run example`: builds the browser example (examples/vad/) into examples/vad/build/ — the page, its
 * bundle, Silero VAD v4 as an .nnm archive, the speech recording and onnxruntime-web's WebAssembly files —
 * and serves it on 127.0.0.1, printing the URL. `--port <n>` picks the port (default: any free one),
 * `--out <dir>` the folder, `--no-serve` only builds.
 */
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { compressModel } from '../src/pipeline/compress.js';
import { bundle, serveDir } from '../test/helpers/browser.js';

const ROOT = join(import.meta.dirname, '..');
export const EXAMPLE_MODEL = join(ROOT, 'models/silero_vad_v4.onnx');
export const EXAMPLE_WAV = join(ROOT, 'data/speech/speech_16k.wav');

export interface ExampleBuild {
  /** Writes the archive to `file`; default: Silero VAD v4 compressed with the default options. */
  archive?: (file: string) => Promise<unknown>;
}

/** Builds the example page into `out` (created if needed): everything the page loads. */
export async function buildExample(out: string, options: ExampleBuild = {}): Promise<void> {
  mkdirSync(join(out, 'ort'), { recursive: true });
  copyFileSync(join(ROOT, 'examples/vad/index.html'), join(out, 'index.html'));
  await bundle('examples/vad/main.ts', join(out, 'main.js'));
  // the decode worker beside the bundle, where decodeArchive looks for it (new URL('./decode-worker.js', import.meta.url))
  await bundle('src/browser/decode-worker.ts', join(out, 'decode-worker.js'));
  // onnxruntime-web loads its WebAssembly runtime (one of these variants, by browser features) from ./ort/
  const ortDist = join(ROOT, 'node_modules/onnxruntime-web/dist');
  for (const f of readdirSync(ortDist))
    if (f.startsWith('ort-wasm-simd-threaded.') && !f.endsWith('.map')) copyFileSync(join(ortDist, f), join(out, 'ort', f));
  copyFileSync(EXAMPLE_WAV, join(out, 'speech.wav'));
  const archive = join(out, 'silero_vad.nnm');
  await (options.archive ?? ((file: string) => compressModel(EXAMPLE_MODEL, file, { force: true })))(archive);
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const out = resolve(arg('--out') ?? join(ROOT, 'examples/vad/build'));
  const port = Number(arg('--port') ?? 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: expected 0…65535, got ${arg('--port')}`);
  const t0 = performance.now();
  await buildExample(out);
  console.log(`example built in ${out} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  if (argv.includes('--no-serve')) return;
  const { base } = await serveDir(out, port);
  console.log(`serving the example: ${base}/index.html (Ctrl-C to stop)`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href)
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(`npm run example: ${(e as Error).message}`);
    process.exitCode = 1;
  });
