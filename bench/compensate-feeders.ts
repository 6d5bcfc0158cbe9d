/**
 * Calibration runners over the project's own data, for the compensation tests and benchmark (the
 * user-data CalibrationSet of issue 14 replaces these in the pipeline): PaddleOCR rec on text lines,
 * Silero VAD v4/v6 on the speech recording with recurrent state carried between windows.
 */

import { join } from 'node:path';
import type * as Ort from 'onnxruntime-node';
import type { OutputTensor, RunWithOutputs } from '../src/compensate/statistics.js';
import { lineTensor } from '../src/eval/tasks/ocr.js';
import { readWav16 } from '../src/eval/tasks/wav.js';
import { loadOrt } from '../src/runtime/optional.js';

export const DATA = join(import.meta.dirname, '..', 'data');

function floatOutputs(out: Ort.InferenceSession.OnnxValueMapType, names: readonly string[]): Map<string, OutputTensor> {
  const m = new Map<string, OutputTensor>();
  for (const n of names) {
    const t = out[n] as Ort.Tensor | undefined;
    if (t && t.type === 'float32') m.set(n, { data: t.data as Float32Array, dims: t.dims });
  }
  return m;
}

async function session(model: Uint8Array): Promise<Ort.InferenceSession> {
  const ort = await loadOrt('gathering layer statistics');
  return ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
}

/** PaddleOCR rec on data/ocr lines with the given indices (the `ocr` task's preprocessing). */
export function ocrRunner(indices: readonly number[], dir = join(DATA, 'ocr')): RunWithOutputs {
  return async (model, extra, onRun) => {
    const s = await session(model);
    try {
      for (const i of indices) {
        const x = await lineTensor(await loadOrt(), join(dir, `line${String(i).padStart(3, '0')}.png`));
        const out = await s.run({ [s.inputNames[0]]: x }, extra);
        await onRun(floatOutputs(out, extra));
      }
    } finally {
      await s.release();
    }
  };
}

export interface VadFeed {
  /** Windows [first, last) of the recording at 16 kHz to run (state carried from `first`). */
  first: number;
  last: number;
  /** Also run the same audio decimated to 8 kHz (the model's other branch). */
  with8k?: boolean;
}

/** Silero VAD on data/speech/speech_16k.wav: v4 (h, c) and v5/v6 (state, 64 samples of context). */
export function vadRunner(feed: VadFeed, wav = join(DATA, 'speech', 'speech_16k.wav')): RunWithOutputs {
  const { samples } = readWav16(wav);
  return async (model, extra, onRun) => {
    const ort = await loadOrt('gathering layer statistics');
    const s = await session(model);
    try {
      const v4 = s.inputNames.includes('h');
      const rates = feed.with8k ? [16000, 8000] : [16000];
      for (const rate of rates) {
        const audio = rate === 16000 ? samples : decimate2(samples);
        const scale = rate / 16000;
        const frame = v4 ? 1536 * scale : 512 * scale;
        const context = v4 ? 0 : 64 * scale;
        const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(rate)]), []);
        let h: Ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
        let c: Ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
        let state: Ort.Tensor = new ort.Tensor('float32', new Float32Array(256), [2, 1, 128]);
        const stateNames = v4 ? ['hn', 'cn'] : ['stateN'];
        const fetch = [...new Set([...stateNames, ...extra])];
        const last = Math.min(feed.last, Math.floor(audio.length / frame));
        for (let i = feed.first; i < last; i++) {
          const chunk = new Float32Array(frame + context);
          const start = i * frame - context;
          for (let k = 0; k < frame + context; k++) chunk[k] = start + k >= 0 ? audio[start + k] : 0;
          const input = new ort.Tensor('float32', chunk, [1, frame + context]);
          const out = v4 ? await s.run({ input, sr, h, c }, fetch) : await s.run({ input, state, sr }, fetch);
          if (v4) {
            h = out.hn;
            c = out.cn;
          } else state = out.stateN;
          await onRun(floatOutputs(out, extra));
        }
      }
    } finally {
      await s.release();
    }
  };
}

/** 16 kHz → 8 kHz: a short low-pass (1 2 1)/4 and every second sample. */
function decimate2(x: Float32Array): Float32Array {
  const out = new Float32Array(Math.floor(x.length / 2));
  for (let i = 0; i < out.length; i++) {
    const j = 2 * i;
    out[i] = ((x[j - 1] ?? 0) + 2 * x[j] + (x[j + 1] ?? 0)) / 4;
  }
  return out;
}
