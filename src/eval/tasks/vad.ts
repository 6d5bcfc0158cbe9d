/**
 * Silero VAD: per-frame speech probability over a real speech recording.
 * Metrics: decision agreement (p > 0.5) with the original model, mean absolute
 * probability difference, and frame accuracy against the labelled speech regions.
 * v4 takes 1536-sample chunks with LSTM state h, c [2,1,64]; v5/v6 take 512
 * samples plus 64 samples of context with state [2,1,128]. The variant is
 * recognised from the model's input names.
 */

import { readFileSync } from 'node:fs';
import type * as Ort from 'onnxruntime-node';
import { loadOrt } from '../../runtime/optional.js';
import type { TaskEvaluator, TaskMetric } from './types.js';
import { readWav16 } from './wav.js';

export interface VadOutput {
  probs: Float32Array;
  frame: number;
}

export interface VadData {
  wav: string;
  regions: string;
}

const THRESHOLD = 0.5;

async function runVad(model: Uint8Array, samples: Float32Array, sampleRate: number, maxFrames = Infinity): Promise<VadOutput> {
  const ort = await loadOrt('the vad task');
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(sampleRate)]), []);
    const v4 = session.inputNames.includes('h');
    const frame = v4 ? 1536 : 512;
    const context = v4 ? 0 : 64;
    const n = Math.min(maxFrames, Math.floor(samples.length / frame));
    const probs = new Float32Array(n);
    let h: Ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
    let c: Ort.Tensor = new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]);
    let state: Ort.Tensor = new ort.Tensor('float32', new Float32Array(256), [2, 1, 128]);
    for (let i = 0; i < n; i++) {
      const chunk = new Float32Array(frame + context);
      const start = i * frame - context;
      for (let k = 0; k < frame + context; k++) chunk[k] = start + k >= 0 ? samples[start + k] : 0;
      const input = new ort.Tensor('float32', chunk, [1, frame + context]);
      if (v4) {
        const out = await session.run({ input, sr, h, c });
        probs[i] = (out.output.data as Float32Array)[0];
        h = out.hn;
        c = out.cn;
      } else {
        const out = await session.run({ input, state, sr });
        probs[i] = (out.output.data as Float32Array)[0];
        state = out.stateN;
      }
    }
    return { probs, frame };
  } finally {
    await session.release();
  }
}

export function vadTask(data: VadData): TaskEvaluator<VadOutput> {
  const { sampleRate, samples } = readWav16(data.wav);
  const regions = (JSON.parse(readFileSync(data.regions, 'utf8')) as { speech: Array<[number, number]> }).speech;
  const truth = (frame: number, i: number): boolean => {
    const mid = i * frame + frame / 2;
    return regions.some(([a, b]) => mid >= a && mid < b);
  };
  const accuracy = (o: VadOutput): number => {
    let ok = 0;
    for (let i = 0; i < o.probs.length; i++) if (o.probs[i] > THRESHOLD === truth(o.frame, i)) ok++;
    return ok / o.probs.length;
  };
  return {
    name: 'vad',
    description: 'Silero VAD on data/speech/speech_16k.wav: decision agreement with the original, mean |Δp|, frame accuracy',
    run: (model) => runVad(model, samples, sampleRate),
    // the first ~20 s: speech and pauses
    calibrate: async (model) => (await runVad(model, samples, sampleRate, Math.floor((20 * sampleRate) / 1536))).probs,
    loss(ref, cand) {
      let agree = 0;
      for (let i = 0; i < ref.probs.length; i++) if (ref.probs[i] > THRESHOLD === cand.probs[i] > THRESHOLD) agree++;
      return 1 - agree / ref.probs.length;
    },
    baseline: (ref): TaskMetric[] => [{ key: 'accuracy', label: 'frame accuracy', value: accuracy(ref), higherIsBetter: true }],
    compare(ref, cand): TaskMetric[] {
      let agree = 0;
      let diff = 0;
      for (let i = 0; i < ref.probs.length; i++) {
        if (ref.probs[i] > THRESHOLD === cand.probs[i] > THRESHOLD) agree++;
        diff += Math.abs(ref.probs[i] - cand.probs[i]);
      }
      return [
        { key: 'agreement', label: 'decision agreement', value: agree / ref.probs.length, higherIsBetter: true },
        { key: 'meanAbsDiff', label: 'mean |Δp|', value: diff / ref.probs.length, higherIsBetter: false },
        { key: 'accuracy', label: 'frame accuracy', value: accuracy(cand), higherIsBetter: true },
      ];
    },
  };
}
