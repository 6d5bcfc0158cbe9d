/**
 * PaddleOCR v4 text recognition on 200 real text-line images: character error
 * rate (CER) against ground truth. Input [1, 3, 48, W] BGR scaled to 48 px
 * high, (x/255 − 0.5)/0.5; output CTC over the dictionary (0 = blank, then the
 * dictionary's lines, then space), decoded greedily.
 *
 * Beside CER, two smooth judges (src/eval/judges.ts): the mean KL divergence of the candidate's per-step
 * distribution over the CTC classes from the original's, and the CTC log-likelihood of the ground truth in nats
 * per character. The line ends may read as a space (the rendering's margins): the likelihood is that of the
 * truth with or without one space at either end, the four texts the greedy decoding trims to the truth.
 *
 * A second preprocessing of the same lines (`resize`: nearest-neighbour or bilinear instead of sharp's default
 * lanczos3) checks that an operating point holds on inputs it was not tuned on.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sharp } from '../../codecs/image/sharp-io.js';
import type * as Ort from 'onnxruntime-common';
import { loadOrt, type Ort as OrtModule } from '../../runtime/optional.js';
import type { ResizeKernel } from '../../calibration/image.js';
import { categoricalKl, ctcLogLikelihood, logSumExp } from '../judges.js';
import type { TaskEvaluator, TaskMetric } from './types.js';

export interface OcrData {
  /** Folder with lineNNN.png and labels.json. */
  dir: string;
  /** Dictionary file (one character per line). */
  dictionary: string;
  /** Evaluate only the first `limit` lines (all by default). */
  limit?: number;
  /** Resize kernel for the lines (sharp's; default lanczos3, sharp's own default, what the task was tuned on). */
  resize?: ResizeKernel;
}

export interface OcrOutput {
  texts: string[];
  truth: string[];
  /** Per line: the softmax output, steps × `classes` (row-major), kept for the KL divergence. */
  probs: Float32Array[];
  classes: number;
  /** Per line: the CTC log-likelihood of the ground truth (nats; −∞ when a character is not in the dictionary). */
  logLikelihood: Float64Array;
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
/** The CTC classes of a PaddleOCR dictionary file: 0 = blank, then the dictionary's lines, then space. */
export function ocrAlphabet(dictionary: string): string[] {
  const dict = readFileSync(dictionary, 'utf8').split(/\r?\n/);
  if (dict[dict.length - 1] === '') dict.pop();
  return ['', ...dict, ' '];
}

/**
 * Greedy CTC decoding of one line's output (steps × classes, row-major): the best class per step, repeats
 * merged, blanks dropped; trimmed, as the padding at the line ends reads as spaces.
 */
export function greedyCtcDecode(probs: Float32Array, steps: number, classes: number, alphabet: readonly string[]): string {
  let text = '';
  let last = 0;
  for (let t = 0; t < steps; t++) {
    let best = 0;
    for (let k = 1; k < classes; k++) if (probs[t * classes + k] > probs[t * classes + best]) best = k;
    if (best !== 0 && best !== last) text += alphabet[best] ?? '';
    last = best;
  }
  return text.trim();
}

export async function lineTensor(ort: OrtModule, file: string, kernel?: ResizeKernel): Promise<Ort.Tensor> {
  const img = sharp(file).removeAlpha().toColourspace('srgb');
  const meta = await sharp(file).metadata();
  const width = Math.max(8, Math.round((48 * (meta.width ?? 48)) / (meta.height ?? 48)));
  const { data } = await img
    .resize(width, 48, { fit: 'fill', ...(kernel ? { kernel } : {}) })
    .raw()
    .toBuffer({ resolveWithObject: true });
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
  const alphabet = ocrAlphabet(data.dictionary);
  const classOf = new Map<string, number>();
  alphabet.forEach((c, i) => {
    if (i > 0 && !classOf.has(c)) classOf.set(c, i);
  });
  /** The truth of each line as the four label sequences it may be read as (optional space at either end), or undefined when a character is not in the dictionary. */
  const targets = labels.map(({ text }) => {
    const variants = [text, ` ${text}`, `${text} `, ` ${text} `].map((v) => [...v].map((c) => classOf.get(c)));
    return variants.every((v) => v.every((c) => c !== undefined))
      ? variants.map((v) => Int32Array.from(v as number[]))
      : undefined;
  });
  const chars = (o: OcrOutput): number => o.truth.reduce((s, t, i) => s + (targets[i] ? [...t].length : 0), 0);
  /** Ground-truth log-likelihood in nats per character, over the lines whose characters are all in the dictionary. */
  const logLikelihoodPerChar = (o: OcrOutput): number => {
    let sum = 0;
    for (let i = 0; i < o.logLikelihood.length; i++) if (targets[i]) sum += o.logLikelihood[i];
    return chars(o) ? sum / chars(o) : 0;
  };
  let inputs: Promise<Ort.Tensor[]> | undefined;
  const tensors = (ort: OrtModule): Promise<Ort.Tensor[]> =>
    (inputs ??= Promise.all(labels.map((l) => lineTensor(ort, join(data.dir, l.file), data.resize))));
  /** Lines used for calibration: every 10th, a fixed slice. */
  const CALIBRATION_STEP = 10;
  return {
    name: 'ocr',
    description: `PaddleOCR rec on ${labels.length} text lines${data.resize ? ` (resized with ${data.resize})` : ''}: character error rate against ground truth, CTC log-likelihood of the truth, KL divergence per step`,
    async run(model) {
      const ort = await loadOrt('the ocr task');
      const xs = await tensors(ort);
      const session = await ort.InferenceSession.create(model, { logSeverityLevel: 4 });
      const texts: string[] = [];
      const lines: Float32Array[] = [];
      const logLikelihood = new Float64Array(xs.length).fill(-Infinity);
      let classCount = 0;
      try {
        for (const [line, x] of xs.entries()) {
          const out = await session.run({ [session.inputNames[0]]: x });
          const y = out[session.outputNames[0]];
          const [, steps, classes] = y.dims as number[];
          const probs = y.data as Float32Array;
          lines.push(probs);
          classCount = classes;
          const target = targets[line];
          if (target) logLikelihood[line] = logSumExp(target.map((l) => ctcLogLikelihood(probs, classes, l)));
          texts.push(greedyCtcDecode(probs, steps, classes, alphabet));
        }
      } finally {
        await session.release();
      }
      return { texts, truth: labels.map((l) => l.text), probs: lines, classes: classCount, logLikelihood };
    },
    async calibrate(model) {
      const ort = await loadOrt('the ocr task');
      const xs = (await tensors(ort)).filter((_, i) => i % CALIBRATION_STEP === 0);
      const session = await ort.InferenceSession.create(model, { logSeverityLevel: 4 });
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
      {
        key: 'ctcLogLik',
        label: 'CTC log-likelihood of the truth (nats/char)',
        value: logLikelihoodPerChar(ref),
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
      ...smoothMetrics(ref, cand, logLikelihoodPerChar),
    ],
  };
}

/** KL per step and the ground truth's log-likelihood, candidate against original (see the module comment). */
function smoothMetrics(ref: OcrOutput, cand: OcrOutput, perChar: (o: OcrOutput) => number): TaskMetric[] {
  let sum = 0;
  let max = 0;
  let steps = 0;
  for (let i = 0; i < ref.probs.length; i++) {
    const kl = categoricalKl(ref.probs[i], cand.probs[i], ref.classes);
    for (const v of kl) {
      sum += v;
      if (v > max) max = v;
    }
    steps += kl.length;
  }
  const ll = perChar(cand);
  return [
    { key: 'kl', label: 'KL per step vs original (nats, mean)', value: steps ? sum / steps : 0, higherIsBetter: false },
    { key: 'klMax', label: 'KL per step vs original (nats, max)', value: max, higherIsBetter: false },
    { key: 'ctcLogLik', label: 'CTC log-likelihood of the truth (nats/char)', value: ll, higherIsBetter: true },
    {
      key: 'ctcLogLikDelta',
      label: 'Δ CTC log-likelihood vs original (nats/char)',
      value: ll - perChar(ref),
      higherIsBetter: true,
    },
  ];
}
