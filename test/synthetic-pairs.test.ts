/**
 * Synthetic inputs for a model that takes two pictures (a stereo or optical-flow pair) and for one that takes frames
 * (video [1, C, T, H, W], a volume): a new-user sweep found the pair fed the same picture twice (a flow model's output
 * all zero: `--target-bpw 2` passed at 1.0 while fresh pairs were off by 59 %) and the frames white noise.
 */

import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { syntheticCalibrationSet } from '../src/calibration/synthetic.js';
import type { CalibrationTensor, Feed } from '../src/calibration/tensor.js';
import { modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { compareOutputs } from '../src/eval/fidelity.js';
import { oneSidedWarning } from '../src/pipeline/gate.js';

/** A model whose every input (name → shape) is averaged into an output of its own: only its inputs matter here. */
function meanOfEach(name: string, inputs: Record<string, Array<number | string>>): Uint8Array {
  const names = Object.keys(inputs);
  return modelBytes({
    name,
    node: names.map((i) => ({ opType: 'ReduceMean', input: [i], output: [`${i}_mean`] })),
    input: names.map((i) => valueInfo(i, inputs[i])),
    output: names.map((i) =>
      valueInfo(
        `${i}_mean`,
        inputs[i].map(() => 1),
      ),
    ),
  });
}

const feedOf = async (set: Awaited<ReturnType<typeof syntheticCalibrationSet>>, k: number): Promise<Feed> => {
  const d = await set.samples[k].load();
  if (d.kind !== 'feed') throw new Error(d.kind);
  return d.feed;
};

describe('synthetic pictures for two image inputs and for frames', () => {
  it("the second of two image inputs of one shape is the first's picture shifted a few pixels", async () => {
    const model = modelBytes({
      name: 'pair',
      node: [{ opType: 'Sub', input: ['image1', 'image2'], output: ['flow'] }],
      input: [valueInfo('image1', [1, 3, 32, 32]), valueInfo('image2', [1, 3, 32, 32])],
      output: [valueInfo('flow', [1, 3, 32, 32])],
    });
    const set = await syntheticCalibrationSet(model, { count: 8 });
    expect(set.description).toMatch(
      /image2 float32\[1,3,32,32\]: natural-image-like pictures .*image1's picture shifted 2–5 pixels in half the samples/,
    );
    const { image1, image2 } = await feedOf(set, 0);
    const a = image1.data as Float32Array;
    const b = image2.data as Float32Array;
    let differ = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differ++;
    // not the same picture (it was, element for element) ...
    expect(differ).toBeGreaterThan(a.length / 4);
    // ... but the same scene moved: some shift of image1 matches image2 inside the picture
    const at = (x: Float32Array, c: number, y: number, xx: number): number => x[(c * 32 + y) * 32 + xx];
    let best = Infinity;
    for (let dy = 0; dy <= 3; dy++)
      for (let dx = 2; dx <= 5; dx++) {
        let e = 0;
        for (let c = 0; c < 3; c++)
          for (let y = 8; y < 24; y++) for (let x = 8; x < 24; x++) e += Math.abs(at(b, c, y, x) - at(a, c, y - dy, x - dx));
        best = Math.min(best, e);
      }
    expect(best).toBe(0);
    // samples 4–7 (one of them held back) are another picture: a siamese network's "different" pair
    const other = await feedOf(set, 4);
    const c = other.image1.data as Float32Array;
    const e = other.image2.data as Float32Array;
    let near = 0;
    for (let i = 0; i < c.length; i++) if (Math.abs(c[i] - e[i]) < 0.05) near++;
    expect(near).toBeLessThan(c.length / 2);
  });

  it('frames of a rank-5 input are pictures moving a pixel or two a frame, not white noise', async () => {
    const model = meanOfEach('video', { video: [1, 3, 4, 24, 24] });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/video float32\[1,3,4,24,24\]: natural-image-like pictures moving/);
    const v = (await feedOf(set, 0)).video.data as Float32Array;
    // in [−1, 1] as pictures are, and each frame close to the one before (white noise: unrelated)
    expect(v.every((x) => x >= -1 && x <= 1)).toBe(true);
    const plane = 24 * 24;
    let step = 0;
    let spread = 0;
    for (let i = 0; i < plane; i++) {
      step += Math.abs(v[plane + i] - v[i]);
      spread += Math.abs(v[i] - v[(i * 7919) % plane]);
    }
    expect(step).toBeLessThan(spread / 2);
  });
});

describe('synthetic point clouds', () => {
  it('an input named as points [1, P, 3] gets 1,024 points on the surfaces of shapes, not 64 Gaussian ones', async () => {
    const model = modelBytes({
      name: 'pointnet',
      node: [{ opType: 'ReduceMax', input: ['points'], output: ['feature'] }],
      input: [valueInfo('points', [1, 'num_points', 3])],
      output: [valueInfo('feature', [1, 1, 1])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/points float32\[1,1024,3\]: points on the surfaces of random shapes/);
    const p = (await feedOf(set, 0)).points.data as Float32Array;
    const norms = Array.from({ length: 1024 }, (_, i) => Math.hypot(p[i * 3], p[i * 3 + 1], p[i * 3 + 2]));
    // in the unit sphere, and on a surface: no point near the centre (a Gaussian blob's are)
    expect(Math.max(...norms)).toBeLessThanOrEqual(1 + 1e-6);
    expect(Math.min(...norms)).toBeGreaterThan(0.1);
  });

  it("a SIREN's coordinates [N, 2] are 1,024 query points uniform in [−1, 1]², not one Gaussian point", async () => {
    const model = modelBytes({
      name: 'siren',
      node: [{ opType: 'Sin', input: ['coords'], output: ['rgb'] }],
      input: [valueInfo('coords', ['N', 2])],
      output: [valueInfo('rgb', ['N', 2])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/coords float32\[1024,2\]: coordinates uniform in \[−1, 1\]/);
    const c = (await feedOf(set, 0)).coords.data as Float32Array;
    expect(c.length).toBe(2048);
    expect(Math.max(...c.map(Math.abs))).toBeLessThanOrEqual(1);
    // spread over the domain, not a blob at the centre
    expect(c.filter((v) => Math.abs(v) > 0.5).length).toBeGreaterThan(0.4 * c.length);
  });
});

describe('synthetic spectrograms', () => {
  it("a keyword spotter's log-mel [1, 1, 64, 101] gets log-mels of speech-like sound, not a grey picture in [−1, 1]", async () => {
    const model = meanOfEach('kws', { logmel: [1, 1, 64, 101] });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/logmel float32\[1,1,64,101\]: log-mels \(or MFCCs\) of speech-like sound/);
    const v = (await feedOf(set, 0)).logmel.data as Float32Array;
    // natural logs of mel energies: well below −1 in quiet bands, above it where the voice is
    expect(Math.min(...v)).toBeLessThan(-5);
    expect(Math.max(...v)).toBeGreaterThan(-1);
    // time runs along the last axis (101 frames): neighbouring frames closer than neighbouring bands far apart
    let along = 0;
    let across = 0;
    for (let m = 0; m < 64; m++)
      for (let t = 0; t + 1 < 101; t++) {
        along += Math.abs(v[m * 101 + t + 1] - v[m * 101 + t]);
        across += Math.abs(v[((m + 32) % 64) * 101 + t] - v[m * 101 + t]);
      }
    expect(along).toBeLessThan(across);
  });

  it('MFCCs [1, 1, 49, 10] and a vocoder mel [1, 80, T] are spectrograms too; a picture input is still a picture', async () => {
    const model = meanOfEach('speech', { mfcc: [1, 1, 49, 10], mel: [1, 80, 'frames'], image: [1, 1, 32, 32] });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/mfcc float32\[1,1,49,10\]: log-mels/);
    expect(set.description).toMatch(/mel float32\[1,80,64\]: log-mels/);
    expect(set.description).toMatch(/image float32\[1,1,32,32\]: natural-image-like pictures/);
  });
});

describe('inputs that only look like spectrograms, points or node indices (a review)', () => {
  it("a waveform named speech, an encoder's image_features, aspect and perspective are no spectrograms", async () => {
    const model = meanOfEach('lookalikes', {
      speech: [1, 1, 'samples'],
      image_features: [1, 257, 1024],
      aspect: [1, 1, 32, 32],
      input_features: [1, 80, 300],
      prompts: [1, 'n', 3],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).not.toMatch(/log-mels/);
    expect(set.description).not.toMatch(/points on the surfaces/);
    expect(set.description).toMatch(/speech float32\[1,1,\d+\]: speech-like sound/);
    expect(set.description).toMatch(/aspect float32\[1,1,32,32\]: natural-image-like pictures/);
  });

  it('a Gather along axis 1 (a batch of 20 features) is no node index: the batch stays 1 and the model runs', async () => {
    const INT64 = onnx.TensorProto.DataType.INT64;
    const model = modelBytes({
      name: 'pick',
      node: [{ opType: 'Gather', input: ['x', 'idx'], output: ['y'], attribute: [{ name: 'axis', i: 1, type: 2 }] }],
      input: [valueInfo('x', ['batch', 20]), valueInfo('idx', [4], INT64)],
      output: [valueInfo('y', ['batch', 4])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/x float32\[1,20\]/);
  });

  it('points [N, 3] bind N before other inputs take it as a batch, and not where an image shares it', async () => {
    const nerf = modelBytes({
      name: 'nerf2',
      node: [{ opType: 'Add', input: ['viewdirs', 'pts'], output: ['y'] }],
      input: [valueInfo('viewdirs', ['N', 3]), valueInfo('pts', ['N', 3])],
      output: [valueInfo('y', ['N', 3])],
    });
    expect((await syntheticCalibrationSet(nerf, { count: 2 })).description).toMatch(/pts float32\[1024,3\]/);
    const camera = meanOfEach('camera', { image: ['batch', 3, 32, 32], cam_xyz: ['batch', 3] });
    expect((await syntheticCalibrationSet(camera, { count: 2 })).description).toMatch(/cam_xyz float32\[1,3\]/);
  });
});

describe("a graph network's edges into its nodes", () => {
  it('node features are 32 nodes, not a batch of 1, and edge ids stay below them (it ran only with --input)', async () => {
    const INT64 = onnx.TensorProto.DataType.INT64;
    const model = modelBytes({
      name: 'gnn',
      node: [
        { opType: 'Gather', input: ['edge_index', 'zero'], output: ['src'], attribute: [{ name: 'axis', i: 0, type: 2 }] },
        { opType: 'MatMul', input: ['x', 'w'], output: ['h'] },
        { opType: 'Gather', input: ['h', 'src'], output: ['messages'], attribute: [{ name: 'axis', i: 0, type: 2 }] },
      ],
      initializer: [
        { name: 'zero', dims: [], dataType: INT64, int64Data: [0] },
        { name: 'w', dims: [16, 8], dataType: onnx.TensorProto.DataType.FLOAT, floatData: new Array(128).fill(0.1) },
      ],
      input: [valueInfo('x', ['num_nodes', 16]), valueInfo('edge_index', [2, 'num_edges'], INT64)],
      output: [valueInfo('messages', ['num_edges', 8])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/x float32\[32,16\]/);
    expect(set.description).toMatch(/edge_index int64\[2,\d+\]: ids 0–31 \(rows of x: 32 of them\)/);
    const ids = [...((await feedOf(set, 0)).edge_index.data as BigInt64Array)].map(Number);
    expect(Math.max(...ids)).toBeLessThan(32);
    expect(Math.max(...ids)).toBeGreaterThan(16);
  });
});

describe('a NeRF: points without a batch, and colour and density outputs', () => {
  it('pts [N, 3] are 1,024 points, not one; rgb_sigma [N, 4] is judged by its values, not its largest component', async () => {
    const model = modelBytes({
      name: 'nerf',
      node: [{ opType: 'Concat', input: ['pts', 'pts'], output: ['six'], attribute: [{ name: 'axis', i: 1, type: 2 }] }],
      input: [valueInfo('pts', ['N', 3])],
      output: [valueInfo('six', ['N', 6])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/pts float32\[1024,3\]: points on the surfaces/);
    const f32 = (values: number[]): CalibrationTensor => ({
      type: 'float32',
      dims: [values.length / 4, 4],
      data: Float32Array.from(values),
    });
    const a = [0.2, 0.5, 0.3, 4, 0.1, 0.6, 0.2, 2, 0.9, 0.1, 0.2, 7];
    const r = compareOutputs({ rgb_sigma: f32(a) }, { rgb_sigma: f32(a.map((v) => v * 1.3)) });
    expect(r.outputs[0].kind).toBe('values');
    expect(r.fidelity).toBeLessThan(0.8);
    // a quantity's word does not hide probability rows or a name that says logits (a two-stream model's rgb_probs)
    const rows = (shift: number): CalibrationTensor => ({
      type: 'float32',
      dims: [40, 4],
      data: Float32Array.from({ length: 160 }, (_, i) => ((i + shift) % 4 === 0 ? 0.7 : 0.1)),
    });
    expect(compareOutputs({ rgb_probs: rows(0) }, { rgb_probs: rows(1) }).outputs[0].kind).toBe('classes');
    expect(compareOutputs({ flow_logits: rows(0) }, { flow_logits: rows(1) }).fidelity).toBe(0);
  });
});

describe('an output of one value everywhere', () => {
  it('is said to be constant, not a detector that never fires', () => {
    const zeros = { type: 'float32' as const, dims: [1, 2, 4, 4], data: new Float32Array(32) };
    const r = compareOutputs({ flow: zeros }, { flow: zeros });
    expect(r.outputs[0].constant).toBe(true);
    const varied = { ...zeros, data: Float32Array.from({ length: 32 }, (_, i) => i / 64) };
    expect(compareOutputs({ flow: varied }, { flow: varied }).outputs[0].constant).toBeUndefined();
    const o = r.outputs[0];
    const warning = oneSidedWarning({
      checked: true,
      outputs: [
        { name: 'flow', kind: o.kind, score: o.score, cosine: 1, relRms: 0, maxAbs: 0, oneSided: o.oneSided, constant: true },
      ],
    });
    expect(warning).toMatch(/^flow: the original gives one value on every element/);
    expect(warning).not.toMatch(/text detector/);
  });
});
