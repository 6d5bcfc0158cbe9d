/**
 * Example page: download Silero VAD v4 as an .nnm archive (weights as PNG
 * images), rebuild the model in the page with the browser's own image
 * decoders, and run it with onnxruntime-web on a bundled speech clip.
 * `npm run example` builds and serves it; `?archive=…&wav=…` pick other files.
 */
import * as ort from 'onnxruntime-web';
import { decodeArchive, rebuildOnnxModel } from '../../src/browser/index.js';

export interface VadResult {
  probs: number[];
  decodeMs: number;
}

function readWav16(buf: ArrayBuffer): Float32Array {
  const v = new DataView(buf);
  if (buf.byteLength < 12 || v.getUint32(0) !== 0x52494646) throw new Error('not a WAV file (no RIFF header)');
  let p = 12;
  while (p + 8 <= buf.byteLength) {
    const id = String.fromCharCode(v.getUint8(p), v.getUint8(p + 1), v.getUint8(p + 2), v.getUint8(p + 3));
    const size = v.getUint32(p + 4, true);
    if (id === 'data') return Float32Array.from({ length: size / 2 }, (_, i) => v.getInt16(p + 8 + i * 2, true) / 32768);
    p += 8 + size + (size & 1);
  }
  throw new Error('no data chunk in the WAV file');
}

async function fetchBytes(url: string): Promise<ArrayBuffer> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot fetch ${url}: HTTP ${res.status}`);
  return res.arrayBuffer();
}

function show(text: string, error = false): void {
  const el = document.getElementById('result');
  if (!el) return;
  el.textContent = text;
  el.className = error ? 'error' : '';
}

export async function run(archiveUrl: string, wavUrl: string): Promise<VadResult> {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  show(`decoding ${archiveUrl}…`);
  const t0 = performance.now();
  const decoded = await decodeArchive(archiveUrl);
  const model = rebuildOnnxModel(decoded);
  const decodeMs = performance.now() - t0;
  const samples = readWav16(await fetchBytes(wavUrl));
  show(`model rebuilt in ${decodeMs.toFixed(0)} ms; running it on ${(samples.length / 16000).toFixed(1)} s of audio…`);
  const session = await ort.InferenceSession.create(model);
  const sr = new ort.Tensor('int64', BigInt64Array.from([16000n]), []);
  let h: ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
  let c: ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
  const probs: number[] = [];
  for (let i = 0; i + 1536 <= samples.length; i += 1536) {
    const out = await session.run({ input: new ort.Tensor('float32', samples.slice(i, i + 1536), [1, 1536]), sr, h, c });
    probs.push((out.output.data as Float32Array)[0]);
    h = out.hn;
    c = out.cn;
  }
  show(`rebuilt in ${decodeMs.toFixed(0)} ms; speech in ${probs.filter((p) => p > 0.5).length} of ${probs.length} frames`);
  return { probs, decodeMs };
}

const w = window as unknown as { vadExample: typeof run; vadResult?: VadResult; vadError?: string };
w.vadExample = run;
const params = new URLSearchParams(location.search);
run(params.get('archive') ?? './silero_vad.nnm', params.get('wav') ?? './speech.wav').then(
  (r) => (w.vadResult = r),
  (e: unknown) => {
    w.vadError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    show(`error: ${w.vadError}`, true);
  },
);
