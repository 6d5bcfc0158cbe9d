/**
 * A detector's class scores packed after its boxes in one output (YOLOv8's [1, 4 + classes, anchors]): judged as
 * values alone, the boxes (pixels) set the spread and the classes go unseen; the gate also compares the classes of
 * the confident anchors (eval/fidelity.ts).
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { compressModel, QualityError } from '../src/index.js';
import { compareOutputs, formatFidelity } from '../src/eval/fidelity.js';
import { outputsTask } from '../src/eval/tasks/outputs.js';
import { detectorOutputs } from '../src/calibration/decisions.js';
import { parseOnnxGraph } from '../src/compensate/graph.js';
import type { CalibrationTensor, Feed } from '../src/calibration/tensor.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { readArchive } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';
import { nmsDetectorModel } from './helpers/onnx-builder.js';
import { alignToReference } from '../src/eval/detections.js';

const dir = tempDir();
const CLASSES = 6;
const ANCHORS = 64;
const CHANNELS = 4 + CLASSES;

const DETECTOR = new Set(['output0']);
const tensor = (data: Float32Array): CalibrationTensor => ({ type: 'float32', dims: [1, CHANNELS, ANCHORS], data });

/** Boxes in pixels (channels 0–3), then class scores whose winner at each anchor is `winner(n)` at `top`. */
function detections(winner: (n: number) => number, top: number, rest = 0.02): Float32Array {
  const out = new Float32Array(CHANNELS * ANCHORS);
  for (let n = 0; n < ANCHORS; n++) {
    for (let k = 0; k < 4; k++) out[k * ANCHORS + n] = 20 + 9 * k + ((n * 37 + k * 11) % 300);
    for (let c = 0; c < CLASSES; c++) out[(4 + c) * ANCHORS + n] = c === winner(n) ? top : rest;
  }
  return out;
}

const int = (name: string, i: number): onnx.IAttributeProto => ({ name, i, type: onnx.AttributeProto.AttributeType.INT });
const ints = (name: string, v: number[]): onnx.IAttributeProto => ({
  name,
  ints: v,
  type: onnx.AttributeProto.AttributeType.INTS,
});

/** A toy detector: a stride-4 conv stem, a box head (pixels) and a sigmoid class head, concatenated as YOLOv8 does. */
function detectorModel(classScale: number): Uint8Array {
  const shape = (name: string, v: number[]): onnx.ITensorProto => ({
    name,
    dims: [v.length],
    dataType: onnx.TensorProto.DataType.INT64,
    int64Data: v,
  });
  return modelBytes({
    name: 'detector',
    node: [
      { opType: 'Conv', input: ['images', 'stem.weight', 'stem.bias'], output: ['s'], attribute: [ints('strides', [4, 4])] },
      { opType: 'Relu', input: ['s'], output: ['f'] },
      { opType: 'Conv', input: ['f', 'box.weight', 'box.bias'], output: ['b'] },
      { opType: 'Reshape', input: ['b', 'box_shape'], output: ['boxes'] },
      { opType: 'Conv', input: ['f', 'cls.weight', 'cls.bias'], output: ['c'] },
      { opType: 'Sigmoid', input: ['c'], output: ['p'] },
      { opType: 'Reshape', input: ['p', 'cls_shape'], output: ['scores'] },
      { opType: 'Concat', input: ['boxes', 'scores'], output: ['output0'], attribute: [int('axis', 1)] },
    ],
    initializer: [
      floatTensor('stem.weight', [64, 3, 4, 4], gaussian(64 * 48, 1, 0.3)),
      floatTensor('stem.bias', [64], gaussian(64, 2, 0.1)),
      floatTensor('box.weight', [4, 64, 1, 1], gaussian(4 * 64, 3, 30)),
      floatTensor('box.bias', [4], Float32Array.of(160, 160, 60, 60)),
      floatTensor('cls.weight', [CLASSES, 64, 1, 1], gaussian(CLASSES * 64, 4, classScale)),
      floatTensor('cls.bias', [CLASSES], new Float32Array(CLASSES).fill(-1)),
      shape('box_shape', [1, 4, ANCHORS]),
      shape('cls_shape', [1, CLASSES, ANCHORS]),
    ],
    input: [valueInfo('images', [1, 3, 32, 32])],
    output: [valueInfo('output0', [1, CHANNELS, ANCHORS])],
  }).slice();
}

describe("a detector's class scores beside its boxes", () => {
  it('the classes of confident anchors count: a class flip the values hide sets the score', () => {
    const reference = detections((n) => n % CLASSES, 0.8);
    // a third of the anchors change class; the boxes (most of the spread) stay
    const candidate = detections((n) => (n % 3 === 0 ? (n + 1) % CLASSES : n % CLASSES), 0.8);
    const r = compareOutputs({ output0: tensor(reference) }, { output0: tensor(candidate) }, [], DETECTOR);
    const o = r.outputs[0];
    expect(o.kind).toBe('values');
    expect(1 - o.relRms).toBeGreaterThan(0.99);
    expect(o.scores).toMatchObject({ channels: '4–9 of axis 1', decisions: ANCHORS });
    expect(o.scores!.agreement).toBeCloseTo(42 / 64, 6);
    expect(r.fidelity).toBeCloseTo(42 / 64, 6);
    // a detection that falls well under the threshold is a changed decision too
    const faded = compareOutputs(
      { output0: tensor(reference) },
      { output0: tensor(detections((n) => n % CLASSES, 0.1)) },
      [],
      DETECTOR,
    );
    expect(faded.outputs[0].scores!.agreement).toBe(0);
    // a score read a hair under the threshold (0.26 → 0.24) is noise, not a lost detection
    const hair = compareOutputs(
      { output0: tensor(detections((n) => n % CLASSES, 0.26)) },
      { output0: tensor(detections((n) => n % CLASSES, 0.24)) },
      [],
      DETECTOR,
    );
    expect(hair.outputs[0].scores!.agreement).toBe(1);
    // an output the graph does not make as a detector's is judged by its values alone
    const plain = compareOutputs({ output0: tensor(reference) }, { output0: tensor(candidate) });
    expect(plain.outputs[0].scores).toBeUndefined();
    expect(plain.fidelity).toBeGreaterThan(0.99);
  });

  it('scores without a clear winner (random weights: all near 0.5) are not decisions; the values judge', () => {
    const flat = (seed: number): Float32Array => {
      const v = detections(() => 0, 0.5, 0.5);
      const noise = gaussian(CLASSES * ANCHORS, seed, 1e-3);
      for (let i = 0; i < noise.length; i++) v[4 * ANCHORS + i] += noise[i];
      return v;
    };
    const r = compareOutputs({ output0: tensor(flat(1)) }, { output0: tensor(flat(2)) }, [], DETECTOR);
    expect(r.outputs[0].scores).toMatchObject({ decisions: 0, fewDecisions: true });
    expect(r.fidelity).toBeGreaterThan(0.99);
    // an output all in [0, 1] (no box channels beyond it), or with too few anchors, has no such block
    const ones: CalibrationTensor = { type: 'float32', dims: [1, 10, 64], data: new Float32Array(640).fill(0.3) };
    const unit = compareOutputs({ output0: ones }, { output0: ones }, [], DETECTOR);
    expect(unit.outputs[0].scores).toBeUndefined();
    const few = detections((n) => n % CLASSES, 0.8).subarray(0, CHANNELS * 16);
    const short = compareOutputs(
      { output0: { type: 'float32', dims: [1, CHANNELS, 16], data: few } },
      { output0: { type: 'float32', dims: [1, CHANNELS, 16], data: few } },
      [],
      DETECTOR,
    );
    expect(short.outputs[0].scores).toBeUndefined();
  });

  it('a detector output is a Concat whose last part is a Sigmoid (a spectrogram’s Concat is not)', () => {
    expect(detectorOutputs(parseOnnxGraph(detectorModel(1)).main)).toEqual(['output0']);
    const g = onnx.ModelProto.decode(detectorModel(1));
    const concat = g.graph!.node!.find((n) => n.opType === 'Concat')!;
    concat.input = ['boxes', 'c'];
    expect(detectorOutputs(parseOnnxGraph(onnx.ModelProto.encode(g).finish()).main)).toEqual([]);
  });

  it('eval (the outputs task) counts the confident classes in its decision agreement', async () => {
    const model = detectorModel(1);
    const task = outputsTask({ count: 16 });
    const reference = await task.run(model);
    expect(reference.detectors).toEqual(['output0']);
    // the same run with a third of the classes moved at every anchor
    const moved: typeof reference = {
      ...reference,
      samples: reference.samples.map((sample) => {
        const t = sample.outputs.output0;
        const data = Float32Array.from(t.data as Float32Array);
        for (let n = 0; n < ANCHORS; n += 3) {
          const a = (4 + CLASSES - 1) * ANCHORS + n;
          const b = 4 * ANCHORS + n;
          [data[a], data[b]] = [data[b], data[a]];
        }
        return { ...sample, outputs: { output0: { ...t, data } } };
      }),
    };
    const agreement = task.compare(reference, moved).find((m) => m.key === 'agreement');
    expect(agreement!.value).toBeLessThan(1);
    // (many confident anchors: no caveat)
    expect(agreement!.label).not.toMatch(/coarse/);
    expect(task.compare(reference, reference).find((m) => m.key === 'agreement')!.value).toBe(1);
  }, 60_000);

  it('the gate refuses a detector whose class head was starved, and passes its default', async () => {
    const model = join(dir, 'detector.onnx');
    writeFileSync(model, detectorModel(1));
    const ok = await compressModel(model, join(dir, 'detector.nnm'), { jobs: 1 });
    const out = ok.quality!.outputs!.find((o) => o.name === 'output0')!;
    expect(out.scores!.decisions).toBeGreaterThanOrEqual(20);
    expect(ok.quality!.passed).toBe(true);
    // a step of 1.5 × RMS for the class head (a few levels): the boxes (the spread) do not move, the classes do
    const rules = [{ match: 'cls.weight', relStep: 1.5 }];
    await expect(compressModel(model, join(dir, 'starved.nnm'), { jobs: 1, rules })).rejects.toThrow(QualityError);
    // (kept with force, still refused: its record is in the archive)
    await expect(compressModel(model, join(dir, 'starved.nnm'), { jobs: 1, rules, force: true })).rejects.toThrow(/kept/);
    const quality = readArchive(join(dir, 'starved.nnm')).manifest.quality!;
    const starved = quality.outputs!.find((o) => o.name === 'output0')!;
    // judged as values alone it would pass: the classes set the verdict
    expect(1 - starved.relRms).toBeGreaterThan(0.95);
    expect(starved.scores!.agreement).toBeLessThan(0.9);
    expect(quality.fidelity).toBe(starved.scores!.agreement);
  }, 60_000);
});

describe('eval on few decisions', () => {
  it('says how many decisions the agreement counts where they are under a hundred', async () => {
    const model = modelBytes({
      name: 'tiny-classifier',
      node: [
        {
          opType: 'Gemm',
          input: ['x', 'W'],
          output: ['z'],
          attribute: [{ name: 'transB', i: 1, type: 2 }],
        },
        { opType: 'Softmax', input: ['z'], output: ['probs'] },
      ],
      initializer: [floatTensor('W', [10, 16], gaussian(160, 3, 1))],
      input: [valueInfo('x', [1, 16])],
      output: [valueInfo('probs', [1, 10])],
    });
    const task = outputsTask({ count: 40 });
    const reference = await task.run(model);
    const agreement = task.compare(reference, reference).find((m) => m.key === 'agreement');
    expect(agreement!.label).toMatch(/decision agreement \(of 40 decisions: coarse, give more inputs\) \(synthetic inputs\)$/);
  }, 60_000);
});

describe('a detector with NMS in its graph: boxes, and a count that moves', () => {
  const f32 = (dims: number[], values: ArrayLike<number>): CalibrationTensor => ({
    type: 'float32',
    dims,
    data: Float32Array.from(values),
  });
  const boxes = [10, 20, 110, 220, 300, 40, 380, 90, 50, 60, 70, 95];

  it('judges [N, 4] boxes by their values, not by which coordinate is largest (boxes 1.65× too large passed at 1)', () => {
    const big = boxes.map((v) => v * 1.65);
    const r = compareOutputs({ det_boxes: f32([3, 4], boxes) }, { det_boxes: f32([3, 4], big) });
    expect(r.outputs[0].kind).toBe('values');
    expect(r.fidelity).toBeLessThan(0.5);
    // a classifier's [N, 4] logits are still judged as classes
    expect(compareOutputs({ logits: f32([3, 4], boxes) }, { logits: f32([3, 4], big) }).outputs[0].kind).toBe('classes');
  });

  it('a row that comes or goes costs its row, not the whole output (it scored 0 and the detector was refused)', () => {
    // (rows that are no detections, keypoints here: compared in order, the rows only one model gives counted)
    const r = compareOutputs({ det_points: f32([3, 4], boxes) }, { det_points: f32([2, 4], boxes.slice(0, 8)) });
    expect(r.outputs[0].mismatch).toBeUndefined();
    expect(r.outputs[0].countMoved).toEqual({ rows: 3, missed: 1 });
    expect(r.fidelity).toBeCloseTo(2 / 3, 6);
    // another axis moving too is another shape: nothing compared
    const other = compareOutputs({ det_points: f32([3, 4], boxes) }, { det_points: f32([2, 6], boxes) });
    expect(other.outputs[0].mismatch).toBeDefined();
    expect(other.fidelity).toBe(0);
  });
});

describe("a detector's detections after NMS, matched as sets", () => {
  const COUNT = 24;
  /** COUNT detections: 3 classes, scores falling from 0.9 in steps of 0.02 within each class, boxes on a grid. */
  function detectionRows(): { boxes: number[][]; scores: number[]; labels: number[] } {
    const boxes: number[][] = [];
    const scores: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < COUNT; i++) {
      const x = (i % 6) * 50;
      const y = Math.floor(i / 6) * 50;
      boxes.push([x, y, x + 30 + (i % 5), y + 40 - (i % 3)]);
      labels.push(Math.floor(i / 8));
      scores.push(0.9 - (i % 8) * 0.02);
    }
    return { boxes, scores, labels };
  }
  const feed = (d: { boxes: number[][]; scores: number[]; labels: number[] }): Feed => ({
    det_boxes: { type: 'float32', dims: [d.boxes.length, 4], data: Float32Array.from(d.boxes.flat()) },
    det_scores: { type: 'float32', dims: [d.scores.length], data: Float32Array.from(d.scores) },
    det_labels: { type: 'int64', dims: [d.labels.length], data: BigInt64Array.from(d.labels.map(BigInt)) },
  });
  /** The same detections with the rows in `order` (indices into `d`). */
  const reorder = (d: ReturnType<typeof detectionRows>, order: number[]): ReturnType<typeof detectionRows> => ({
    boxes: order.map((i) => d.boxes[i].map((v) => v + 0.1)),
    scores: order.map((i) => d.scores[i] + 1e-4),
    labels: order.map((i) => d.labels[i]),
  });

  it('one detection gone and two near-ties swapped cost one detection, not every row after them', () => {
    const d = detectionRows();
    // detection 3 gone, 5 and 6 swapped (scores 0.80 and 0.78: a near-tie read the other way)
    const order = [0, 1, 2, 4, 6, 5, ...Array.from({ length: COUNT - 7 }, (_, k) => k + 7)];
    const r = compareOutputs(feed(d), feed(reorder(d, order)));
    const boxes = r.outputs.find((o) => o.name === 'det_boxes')!;
    expect(boxes.detections).toEqual({ boxes: 'det_boxes', decisions: COUNT, missed: 1 });
    // the rows matched are the same detections: their values agree closely
    expect(boxes.relRms).toBeLessThan(0.01);
    expect(r.outputs.find((o) => o.name === 'det_labels')!.agreement).toBe(1);
    expect(r.fidelity).toBeCloseTo((COUNT - 1) / COUNT, 6);
    expect(formatFidelity(r).join('\n')).toMatch(
      /detections matched by class and det_boxes overlap ≥ 0.5: 1 of 24 given by one model only/,
    );
  });

  it('a detection whose class changed is two changed decisions; a box moved off its object one', () => {
    const d = detectionRows();
    const relabelled = reorder(
      d,
      d.boxes.map((_, i) => i),
    );
    relabelled.labels[10] = 2;
    const r = compareOutputs(feed(d), feed(relabelled));
    expect(r.outputs[0].detections).toEqual({ boxes: 'det_boxes', decisions: COUNT + 1, missed: 2 });
    expect(r.fidelity).toBeCloseTo((COUNT - 1) / (COUNT + 1), 6);
    const moved = reorder(
      d,
      d.boxes.map((_, i) => i),
    );
    moved.boxes[4] = moved.boxes[4].map((v, k) => v + (k % 2 === 0 ? 20 : 0));
    const m = compareOutputs(feed(d), feed(moved));
    expect(m.outputs[0].detections).toMatchObject({ decisions: COUNT + 1, missed: 2 });
  });

  it('among fewer than 20 detections one that comes or goes is forgiven, two are not', () => {
    const d = detectionRows();
    const few = reorder(d, [0, 1, 2, 3]);
    const one = compareOutputs(feed(few), feed(reorder(few, [0, 1, 3])));
    expect(one.outputs[0].detections).toEqual({ boxes: 'det_boxes', decisions: 4, missed: 1, fewDecisions: true });
    expect(one.fidelity).toBeGreaterThan(0.99);
    const two = compareOutputs(feed(few), feed(reorder(few, [0, 3])));
    expect(two.fidelity).toBeCloseTo(3 / 4, 6);
  });

  it("one row per detection (YOLOv10's [1, 300, 6]): a tail of low scores reordered is no change", () => {
    const rows = 300;
    const packed = (order: number[], jitter: number): CalibrationTensor => {
      const data = new Float32Array(rows * 6);
      order.forEach((i, r) => {
        const x = (i % 20) * 16;
        const y = Math.floor(i / 20) * 16;
        // 20 confident detections, then scores under 0.05
        const score = i < 20 ? 0.9 - i * 0.01 : 0.05 - i * 1e-4;
        data.set([x + jitter, y, x + 12, y + 12 + jitter, score + jitter * 1e-3, i % 4], r * 6);
      });
      return { type: 'float32', dims: [1, rows, 6], data };
    };
    const identity = Array.from({ length: rows }, (_, i) => i);
    // the tail in another order, as any change of the weights gives it
    const shuffled = [...identity.slice(0, 20), ...identity.slice(20).reverse()];
    const r = compareOutputs({ output0: packed(identity, 0) }, { output0: packed(shuffled, 0.1) });
    expect(r.outputs[0].detections).toEqual({ boxes: 'output0', decisions: 20, missed: 0 });
    expect(r.fidelity).toBeGreaterThan(0.99);
    // one confident candidate score a hair over 1 does not make the tail decisions (it read 0.05)
    const over = packed(shuffled, 0.1);
    over.data[4] = 1.0000001;
    expect(compareOutputs({ output0: packed(identity, 0) }, { output0: over }).fidelity).toBeGreaterThan(0.99);
    // one row of six values under another name is no detection; the only detection lost is no near-tie
    const six = (v: number): CalibrationTensor => ({ type: 'float32', dims: [1, 6], data: Float32Array.of(3, 1, 4, 1, 0.5, v) });
    expect(compareOutputs({ logits: six(0) }, { logits: six(0.02) }).outputs[0].detections).toBeUndefined();
    const one = (rows: number): CalibrationTensor => ({
      type: 'float32',
      dims: [rows, 6],
      data: Float32Array.of(10, 10, 50, 50, 0.9, 2).subarray(0, rows * 6),
    });
    const gone = compareOutputs({ dets: one(1) }, { dets: one(0) });
    expect(gone.outputs[0].detections).toEqual({ boxes: 'dets', decisions: 1, missed: 1, fewDecisions: true });
    expect(gone.fidelity).toBe(0);
    // an original without detections: the candidate's one is a changed decision, not another shape
    const came = compareOutputs({ dets: one(0) }, { dets: one(1) });
    expect(came.outputs[0].mismatch).toBeUndefined();
    expect(came.fidelity).toBe(0);
    // a head's anchors before NMS (thousands of rows in a fixed order) are compared row by row
    const anchors = (shift: number): CalibrationTensor => ({
      type: 'float32',
      dims: [1, 2000, 4],
      data: Float32Array.from({ length: 8000 }, (_, i) => (i % 4 < 2 ? i % 97 : (i % 97) + 10) + shift),
    });
    expect(compareOutputs({ boxes: anchors(0) }, { boxes: anchors(0.1) }).outputs[0].detections).toBeUndefined();
    // the rows matched are the same detections: their values agree closely (in order, the tail's did not)
    expect(r.outputs[0].relRms).toBeLessThan(0.01);
    // a confident detection that falls under the threshold is lost, though its box is still there
    const faded = packed(identity, 0);
    faded.data[4] = 0.01;
    const lost = compareOutputs({ output0: packed(identity, 0) }, { output0: faded });
    expect(lost.outputs[0].detections).toEqual({ boxes: 'output0', decisions: 20, missed: 1 });
  });

  it('a probe run is compared detection by detection: its rows put where the reference has them', () => {
    const d = detectionRows();
    const reference = feed(d);
    const run = feed(reorder(d, [1, 0, ...Array.from({ length: COUNT - 3 }, (_, k) => k + 3)]));
    const aligned = alignToReference(reference, run);
    expect(aligned.det_boxes.dims).toEqual([COUNT, 4]);
    const boxes = aligned.det_boxes.data as Float32Array;
    // rows 0 and 1 back in the reference's order; row 2 (a detection the run lacks) zero
    expect(Array.from(boxes.subarray(0, 4))).toEqual(d.boxes[0].map((v) => Math.fround(v + 0.1)));
    expect(Array.from(boxes.subarray(4, 8))).toEqual(d.boxes[1].map((v) => Math.fround(v + 0.1)));
    expect(Array.from(boxes.subarray(8, 12))).toEqual([0, 0, 0, 0]);
    expect(Array.from(aligned.det_labels.data as BigInt64Array).slice(0, 4)).toEqual([0n, 0n, 0n, 0n]);
    expect(Array.from(aligned.det_scores.data as Float32Array).slice(0, 3)).toEqual([
      Math.fround(d.scores[0] + 1e-4),
      Math.fround(d.scores[1] + 1e-4),
      0,
    ]);
  });

  it('a detector with NonMaxSuppression in its graph passes at the default grid (it escalated to 14.3 bits/weight)', async () => {
    const model = join(dir, 'nms.onnx');
    writeFileSync(model, nmsDetectorModel().bytes);
    const r = await compressModel(model, join(dir, 'nms.nnm'), { jobs: 1, escalate: false });
    expect(r.quality!.passed).toBe(true);
    const boxes = r.quality!.outputs!.find((o) => o.name === 'det_boxes')!;
    expect(boxes.detections).toMatchObject({ boxes: 'det_boxes' });
    expect(boxes.detections!.decisions).toBeGreaterThanOrEqual(100);
    // (its scores are judged by the detections matched, not as a mask that never reaches 0.5: no weak-evidence note)
    expect(r.quality!.outputs!.find((o) => o.name === 'det_scores')!.oneSided).toBeUndefined();
    expect(r.quality!.fidelity).toBeGreaterThanOrEqual(0.9);
  }, 120_000);
});
