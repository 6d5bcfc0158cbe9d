/**
 * Silero VAD: per-frame speech probability over a real speech recording.
 * Metrics: decision agreement (p > 0.5) with the original model, mean absolute
 * probability difference, and frame accuracy against the labelled speech regions.
 * v4 takes 1536-sample chunks with LSTM state h, c [2,1,64]; v5/v6 take 512
 * samples plus 64 samples of context with state [2,1,128]. The variant is
 * recognised from the model's input names.
 *
 * Beside the decision metrics, a smooth judge (src/eval/judges.ts): the mean KL divergence between the original's
 * and the candidate's Bernoulli speech probability per frame. A second preprocessing of the same recording
 * (`sampleRate: 8000`, the other rate Silero supports; resampled by ffmpeg) checks that an operating point holds
 * on inputs it was not tuned on: windows and context scale with the rate (v4 768 samples, v6 256 + 32), and the
 * labelled regions (given at 16 kHz) with them.
 */

import { readFileSync } from 'node:fs';
import type * as Ort from 'onnxruntime-common';
import { loadOrt } from '../../runtime/optional.js';
import { decodeAudio } from '../../calibration/audio.js';
import { bernoulliKl } from '../judges.js';
import type { TaskEvaluator, TaskMetric } from './types.js';
import { readWav16 } from './wav.js';

export interface VadOutput {
  probs: Float32Array;
  /** Samples per frame at `sampleRate`. */
  frame: number;
  sampleRate: number;
}

export interface VadData {
  wav: string;
  regions: string;
  /** Run at this rate (8000 or 16000); the recording is resampled by ffmpeg when it differs (default: the file's own). */
  sampleRate?: 8000 | 16000;
}

/** The rate the speech regions file counts its samples in. */
const REGIONS_RATE = 16000;
/** Frames of a calibration run: ~20 s of v4 windows (the same count at either rate). */
const CALIBRATION_FRAMES = Math.floor((20 * 16000) / 1536);

const THRESHOLD = 0.5;

async function runVad(model: Uint8Array, samples: Float32Array, sampleRate: number, maxFrames = Infinity): Promise<VadOutput> {
  const ort = await loadOrt('the vad task');
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 4 });
  try {
    const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(sampleRate)]), []);
    const v4 = session.inputNames.includes('h');
    // 16 kHz: v4 1536, v5/v6 512 + 64; 8 kHz: half of each (what the models take at 8 kHz)
    const scale = sampleRate / 16000;
    const frame = (v4 ? 1536 : 512) * scale;
    const context = (v4 ? 0 : 64) * scale;
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
    return { probs, frame, sampleRate };
  } finally {
    await session.release();
  }
}

export function vadTask(data: VadData): TaskEvaluator<VadOutput> {
  const wav = readWav16(data.wav);
  const sampleRate = data.sampleRate ?? wav.sampleRate;
  if (sampleRate !== 8000 && sampleRate !== 16000)
    throw new RangeError(`Expected 8000 or 16000 for the vad task's sample rate but received ${sampleRate}`);
  let resampled: Promise<Float32Array> | undefined;
  const samples = (): Promise<Float32Array> =>
    sampleRate === wav.sampleRate ? Promise.resolve(wav.samples) : (resampled ??= decodeAudio(data.wav, sampleRate));
  const regions = (JSON.parse(readFileSync(data.regions, 'utf8')) as { speech: Array<[number, number]> }).speech;
  const truth = (o: VadOutput, i: number): boolean => {
    const mid = ((i * o.frame + o.frame / 2) * REGIONS_RATE) / o.sampleRate;
    return regions.some(([a, b]) => mid >= a && mid < b);
  };
  const accuracy = (o: VadOutput): number => {
    let ok = 0;
    for (let i = 0; i < o.probs.length; i++) if (o.probs[i] > THRESHOLD === truth(o, i)) ok++;
    return ok / o.probs.length;
  };
  return {
    name: 'vad',
    description: `Silero VAD on data/speech/speech_16k.wav${sampleRate !== wav.sampleRate ? ` resampled to ${sampleRate} Hz` : ''}: decision agreement with the original, mean |Δp|, KL per frame, frame accuracy`,
    run: async (model) => runVad(model, await samples(), sampleRate),
    // the first ~20 s: speech and pauses
    calibrate: async (model) => (await runVad(model, await samples(), sampleRate, CALIBRATION_FRAMES)).probs,
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
      const kl = bernoulliKl(ref.probs, cand.probs);
      return [
        { key: 'agreement', label: 'decision agreement', value: agree / ref.probs.length, higherIsBetter: true },
        { key: 'meanAbsDiff', label: 'mean |Δp|', value: diff / ref.probs.length, higherIsBetter: false },
        { key: 'accuracy', label: 'frame accuracy', value: accuracy(cand), higherIsBetter: true },
        {
          key: 'kl',
          label: 'KL per frame vs original (nats, mean)',
          value: kl.reduce((a, b) => a + b, 0) / Math.max(1, kl.length),
          higherIsBetter: false,
        },
        {
          key: 'klMax',
          label: 'KL per frame vs original (nats, max)',
          value: kl.reduce((a, b) => Math.max(a, b), 0),
          higherIsBetter: false,
        },
      ];
    },
  };
}
