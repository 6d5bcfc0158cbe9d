/**
 * ISNet background removal on real photos (data/images): the candidate's mask against the original model's.
 * Input [1, 3, 1024, 1024] RGB resized (bilinear) to 1024×1024, x/255 − 0.5, NCHW — through the calibration
 * image loader, so `--calibration data/images` with `ISNET_IMAGE_SPEC`'s flags gives the same tensors. Output:
 * the first graph output, a [1, 1, 1024, 1024] mask in [0, 1] (the other outputs are side outputs and features,
 * not fetched).
 *
 * Metrics: mask IoU at threshold 0.5 against the original's mask (mean and worst over the photos, the worst named;
 * two empty masks count as IoU 1; and over every photo's pixels pooled), mean |Δ| of the mask values. No ground
 * truth: the baseline is the share of foreground.
 */

import { readdirSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { IMAGE_EXTENSIONS, loadImage, resolveImageSpec, type ImageSpecInput } from '../../calibration/image.js';
import { describeModel } from '../../calibration/model-io.js';
import { CalibrationRunner } from '../../calibration/runner.js';
import { toFloat32 } from '../../calibration/tensor.js';
import type { CalibrationSample } from '../../calibration/types.js';
import type { TaskEvaluator, TaskMetric } from './types.js';

/** ISNet's preprocessing (`--image-size 1024x1024 --resize-kernel linear --image-mean 0.5`). */
export const ISNET_IMAGE_SPEC: ImageSpecInput = {
  width: 1024,
  height: 1024,
  fit: 'fill',
  kernel: 'linear',
  range: [0, 1],
  mean: [0.5],
  std: [1],
  order: 'rgb',
  layout: 'nchw',
};

const THRESHOLD = 0.5;

export interface IsnetData {
  /** Folder of photos. */
  dir: string;
  /** Only the first `limit` photos (sorted by name). */
  limit?: number;
}

export interface IsnetOutput {
  files: string[];
  masks: Float32Array[];
}

/** Intersection over union of the masks thresholded at 0.5 (1 when both are empty). */
export function maskIoU(a: Float32Array, b: Float32Array, threshold = THRESHOLD): number {
  return iouOf(maskOverlap(a, b, threshold));
}

/** Intersection over union from the two pixel counts (1 when both masks are empty). */
function iouOf([inter, union]: readonly [number, number]): number {
  return union ? inter / union : 1;
}

/** Pixels in both masks thresholded at 0.5, and in either. */
export function maskOverlap(a: Float32Array, b: Float32Array, threshold = THRESHOLD): [number, number] {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] > threshold;
    const y = b[i] > threshold;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return [inter, union];
}

/** The share of a mask's pixels above the threshold. */
function foreground(m: Float32Array): number {
  let n = 0;
  for (let i = 0; i < m.length; i++) if (m[i] > THRESHOLD) n++;
  return m.length ? n / m.length : 0;
}

function percent(x: number): string {
  const p = 100 * x;
  return `${p >= 10 ? p.toFixed(0) : p.toPrecision(2)} %`;
}

export function meanAbsDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return a.length ? s / a.length : 0;
}

export function isnetTask(data: IsnetData): TaskEvaluator<IsnetOutput> {
  const files = readdirSync(data.dir)
    .filter((f) => (IMAGE_EXTENSIONS as readonly string[]).includes(extname(f).toLowerCase()))
    .sort()
    .slice(0, data.limit)
    .map((f) => join(data.dir, f));
  const masksOf = async (model: Uint8Array, which: readonly string[]): Promise<Float32Array[]> => {
    const io = describeModel(model);
    const input = io.inputs[0];
    const spec = resolveImageSpec(ISNET_IMAGE_SPEC, input);
    const output = io.outputs[0].name;
    const runner = await CalibrationRunner.open(model, { outputs: [output] });
    const masks: Float32Array[] = [];
    try {
      for (const [index, file] of which.entries()) {
        const sample: CalibrationSample = {
          index,
          label: file,
          source: file,
          kind: 'feed',
          load: async () => ({ kind: 'feed', feed: { [input.name]: await loadImage(file, spec) } }),
        };
        masks.push(toFloat32((await runner.run(sample)).outputs[output]).slice());
      }
    } finally {
      await runner.close();
    }
    return masks;
  };
  const ious = (ref: IsnetOutput, cand: IsnetOutput): number[] => ref.masks.map((m, i) => maskIoU(m, cand.masks[i]));
  return {
    name: 'isnet',
    description: `ISNet on ${files.length} photos: mask IoU (threshold 0.5) and mean |Δ| against the original model's masks`,
    run: async (model) => ({ files, masks: await masksOf(model, files) }),
    // a calibration slice: every 4th photo
    calibrate: async (model) => {
      const masks = await masksOf(
        model,
        files.filter((_, i) => i % 4 === 0),
      );
      const out = new Float32Array(masks.reduce((s, m) => s + m.length, 0));
      let off = 0;
      for (const m of masks) {
        out.set(m, off);
        off += m.length;
      }
      return out;
    },
    loss: (ref, cand) => {
      const v = ious(ref, cand);
      return 1 - v.reduce((a, b) => a + b, 0) / v.length;
    },
    baseline: (ref): TaskMetric[] => [
      {
        key: 'foreground',
        label: 'foreground share',
        value: ref.masks.reduce((s, m) => s + foreground(m), 0) / ref.masks.length,
        higherIsBetter: true,
      },
    ],
    compare: (ref, cand): TaskMetric[] => {
      const counts = ref.masks.map((m, i) => maskOverlap(m, cand.masks[i]));
      const v = counts.map(iouOf);
      const worst = v.indexOf(Math.min(...v));
      const pooled: [number, number] = [counts.reduce((s, c) => s + c[0], 0), counts.reduce((s, c) => s + c[1], 0)];
      return [
        { key: 'iou', label: 'mask IoU (mean)', value: v.reduce((a, b) => a + b, 0) / v.length, higherIsBetter: true },
        {
          key: 'iouMin',
          label:
            worst < 0
              ? 'mask IoU (worst photo)'
              : `mask IoU (worst photo: ${basename(ref.files[worst])}, foreground ${percent(foreground(ref.masks[worst]))})`,
          value: worst < 0 ? 1 : v[worst],
          higherIsBetter: true,
        },
        // every photo's pixels in one count: a photo with a few hundred foreground pixels (a star field) weighs
        // by its pixels, where the mean gives its IoU, which a handful of pixels moves, an eighth of the result
        {
          key: 'iouPooled',
          label: "mask IoU (all photos' pixels pooled)",
          value: iouOf(pooled),
          higherIsBetter: true,
        },
        {
          key: 'meanAbsDiff',
          label: 'mean |Δ| of the mask',
          value: ref.masks.reduce((s, m, i) => s + meanAbsDiff(m, cand.masks[i]), 0) / ref.masks.length,
          higherIsBetter: false,
        },
      ];
    },
  };
}
