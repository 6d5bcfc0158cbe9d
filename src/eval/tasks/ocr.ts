/**
 * PaddleOCR v4 text recognition on 200 real text-line images: character error
 * rate (CER) against ground truth. Input [1, 3, 48, W] BGR scaled to 48 px
 * high, (x/255 − 0.5)/0.5; output CTC over the dictionary (0 = blank, then the
 * dictionary's lines, then space), decoded greedily.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type * as Ort from 'onnxruntime-node';
import { loadOrt, type Ort as OrtModule } from '../../runtime/optional.js';
import type { TaskEvaluator, TaskMetric } from './types.js';

export interface OcrData {
  /** Folder with lineNNN.png and labels.json. */
  dir: string;
  /** Dictionary file (one character per line). */
  dictionary: string;
  /** Evaluate only the first `limit` lines (all by default). */
  limit?: number;
}

export interface OcrOutput {
  texts: string[];
  truth: string[];
}

/** Levenshtein distance over Unicode code points. */
export function editDistance(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  let prev = new Uint32Array(y.length + 1).map((_, j) => j);
  let cur = new Uint32Array(y.length + 1);
  for (let i = 1; i <= x.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= y.length; j++)
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    [prev, cur] = [cur, prev];
  }
  return prev[y.length];
}

/** Character error rate: total edits over total reference characters. */
export function characterErrorRate(predicted: readonly string[], truth: readonly string[]): number {
  let edits = 0;
  let chars = 0;
  for (let i = 0; i < truth.length; i++) {
    edits += editDistance(predicted[i] ?? '', truth[i]);
    chars += [...truth[i]].length;
  }
  return chars ? edits / chars : 0;
}

/** One text-line image as the model input [1, 3, 48, W] (the task's preprocessing, shared with calibration feeders). */
export async function lineTensor(ort: OrtModule, file: string): Promise<Ort.Tensor> {
  const img = sharp(file).removeAlpha().toColourspace('srgb');
  const meta = await sharp(file).metadata();
  const width = Math.max(8, Math.round((48 * (meta.width ?? 48)) / (meta.height ?? 48)));
  const { data } = await img.resize(width, 48, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  const chw = new Float32Array(3 * 48 * width);
  const plane = 48 * width;
  for (let i = 0; i < plane; i++) for (let ch = 0; ch < 3; ch++) chw[ch * plane + i] = (data[i * 3 + (2 - ch)] / 255 - 0.5) / 0.5; // RGB → BGR
  return new ort.Tensor('float32', chw, [1, 3, 48, width]);
}

export function ocrTask(data: OcrData): TaskEvaluator<OcrOutput> {
  const labels = (JSON.parse(readFileSync(join(data.dir, 'labels.json'), 'utf8')) as Array<{ file: string; text: string }>).slice(
    0,
    data.limit,
  );
  const dict = readFileSync(data.dictionary, 'utf8').split(/\r?\n/);
  if (dict[dict.length - 1] === '') dict.pop();
  const alphabet = ['', ...dict, ' '];
  let inputs: Promise<Ort.Tensor[]> | undefined;
  const tensors = (ort: OrtModule): Promise<Ort.Tensor[]> =>
    (inputs ??= Promise.all(labels.map((l) => lineTensor(ort, join(data.dir, l.file)))));
  /** Lines used for calibration: every 10th, a fixed slice. */
  const CALIBRATION_STEP = 10;
  return {
    name: 'ocr',
    description: `PaddleOCR rec on ${labels.length} text lines: character error rate against ground truth`,
    async run(model) {
      const ort = await loadOrt('the ocr task');
      const xs = await tensors(ort);
      const session = await ort.InferenceSession.create(model);
      const texts: string[] = [];
      try {
        for (const x of xs) {
          const out = await session.run({ [session.inputNames[0]]: x });
          const y = out[session.outputNames[0]];
          const [, steps, classes] = y.dims as number[];
          const probs = y.data as Float32Array;
          let text = '';
          let last = 0;
          for (let t = 0; t < steps; t++) {
            let best = 0;
            for (let k = 1; k < classes; k++) if (probs[t * classes + k] > probs[t * classes + best]) best = k;
            if (best !== 0 && best !== last) text += alphabet[best] ?? '';
            last = best;
          }
          texts.push(text.trim()); // padding at the line ends reads as spaces
        }
      } finally {
        await session.release();
      }
      return { texts, truth: labels.map((l) => l.text) };
    },
    async calibrate(model) {
      const ort = await loadOrt('the ocr task');
      const xs = (await tensors(ort)).filter((_, i) => i % CALIBRATION_STEP === 0);
      const session = await ort.InferenceSession.create(model);
      const parts: Float32Array[] = [];
      try {
        for (const x of xs)
          parts.push((await session.run({ [session.inputNames[0]]: x }))[session.outputNames[0]].data as Float32Array);
      } finally {
        await session.release();
      }
      const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      let off = 0;
      // log-probabilities floored at 1e-3: a flipped character shows as a large change even where softmax saturates, while the 6 000 classes that never matter stay flat
      for (const p of parts) {
        for (let i = 0; i < p.length; i++) out[off + i] = Math.log(p[i] + 1e-3);
        off += p.length;
      }
      return out;
    },
    loss: (ref, cand) => characterErrorRate(cand.texts, cand.truth) - characterErrorRate(ref.texts, ref.truth),
    baseline: (ref): TaskMetric[] => [
      { key: 'cer', label: 'CER', value: characterErrorRate(ref.texts, ref.truth), higherIsBetter: false },
      {
        key: 'exact',
        label: 'lines exact',
        value: ref.texts.filter((t, i) => t === ref.truth[i]).length / ref.truth.length,
        higherIsBetter: true,
      },
    ],
    compare: (ref, cand): TaskMetric[] => [
      { key: 'cer', label: 'CER', value: characterErrorRate(cand.texts, cand.truth), higherIsBetter: false },
      {
        key: 'cerDelta',
        label: 'ΔCER vs original',
        value: characterErrorRate(cand.texts, cand.truth) - characterErrorRate(ref.texts, ref.truth),
        higherIsBetter: false,
      },
      {
        key: 'exact',
        label: 'lines exact',
        value: cand.texts.filter((t, i) => t === cand.truth[i]).length / cand.truth.length,
        higherIsBetter: true,
      },
    ],
  };
}
