/**
 * A Keras model that rescales its own pixels (a `Rescaling(1/255)` layer: tf2onnx writes a Mul by a constant right
 * after the NHWC image input): synthetic pictures and image files go in as 0–255, where [−1, 1] pictures came out of
 * the Mul nearly constant (every synthetic sample the same class; found by a new-user sweep).
 */

import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { syntheticCalibrationSet } from '../src/calibration/synthetic.js';
import { buildCalibrationSet } from '../src/calibration/set.js';
import { describeModel } from '../src/calibration/model-io.js';
import { rescalesPixels } from '../src/calibration/pixels.js';
import { OnnxReader } from '../src/formats/onnx/reader.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';

/** NHWC input → (op by `factor`) → Transpose to NCHW → Conv → GlobalAveragePool → Flatten. */
function kerasLike(op: 'Mul' | 'Div' | 'Add', factor: number): Uint8Array {
  return modelBytes({
    name: 'keras',
    node: [
      { opType: op, input: ['input_1', 'rescaling/scale'], output: ['scaled'] },
      {
        opType: 'Transpose',
        input: ['scaled'],
        output: ['nchw'],
        attribute: [{ name: 'perm', ints: [0, 3, 1, 2], type: onnx.AttributeProto.AttributeType.INTS }],
      },
      { opType: 'Conv', input: ['nchw', 'model/conv2d/Conv2D/ReadVariableOp:0'], output: ['c'] },
      { opType: 'GlobalAveragePool', input: ['c'], output: ['p'] },
      { opType: 'Flatten', input: ['p'], output: ['predictions'] },
    ],
    initializer: [
      floatTensor('rescaling/scale', [], Float32Array.of(factor)),
      floatTensor('model/conv2d/Conv2D/ReadVariableOp:0', [8, 3, 3, 3], gaussian(8 * 27, 1, 0.3)),
    ],
    input: [valueInfo('input_1', ['unk__612', 32, 32, 3])],
    output: [valueInfo('predictions', ['unk__613', 8])],
  }).slice();
}

const rescales = (bytes: Uint8Array): boolean =>
  rescalesPixels(describeModel(bytes), new OnnxReader('<model>', bytes), 'input_1');

describe('a model that rescales its own pixels', () => {
  it('is found by a Mul by 1/255 or 1/127.5, or a Div by 255, on the input (through a Transpose)', () => {
    expect(rescales(kerasLike('Mul', 1 / 255))).toBe(true);
    expect(rescales(kerasLike('Mul', 1 / 127.5))).toBe(true);
    expect(rescales(kerasLike('Div', 255))).toBe(true);
    expect(rescales(kerasLike('Mul', 2))).toBe(false);
    expect(rescales(kerasLike('Add', 1 / 255))).toBe(false);
  });

  it('gets synthetic pictures of 0–255, and says so; another model keeps [−1, 1]', async () => {
    const set = await syntheticCalibrationSet(kerasLike('Mul', 1 / 255), { count: 2 });
    expect(set.description).toMatch(/pixels 0–255: the graph rescales them itself/);
    const data = await set.samples[0].load();
    if (data.kind !== 'feed') throw new Error('a feed sample');
    const x = data.feed.input_1.data as Float32Array;
    expect(Math.max(...x)).toBeGreaterThan(100);
    expect(Math.min(...x)).toBeGreaterThanOrEqual(0);
    const other = await syntheticCalibrationSet(kerasLike('Mul', 2), { count: 2 });
    const y = await other.samples[0].load();
    if (y.kind !== 'feed') throw new Error('a feed sample');
    expect(Math.max(...(y.feed.input_1.data as Float32Array))).toBeLessThanOrEqual(1);
    expect(other.description).not.toMatch(/rescales/);
  }, 60_000);

  it('gets image files as 0–255 unless a range, scale, mean or std is given', async () => {
    const model = kerasLike('Mul', 1 / 255);
    const set = await buildCalibrationSet(model, { paths: ['data/images/brick.png'], image: { width: 32, height: 32 } });
    expect(set.description).toMatch(/brick|image/);
    expect(set.description).toMatch(/pixels 0–255: the graph rescales them itself/);
    const data = await set.samples[0].load();
    if (data.kind !== 'feed') throw new Error('a feed sample');
    expect(Math.max(...(data.feed.input_1.data as Float32Array))).toBeGreaterThan(100);
    const told = await buildCalibrationSet(model, {
      paths: ['data/images/brick.png'],
      image: { width: 32, height: 32, range: [0, 1] },
    });
    expect(told.description).not.toMatch(/rescales/);
  }, 60_000);
});

describe('a model that takes a fixed batch of pictures', () => {
  /** x [2, 3, 32, 32] → Conv → GlobalAveragePool → Flatten → Gemm: torch.onnx.export with a batch-2 dummy input. */
  const batchOfTwo = (): Uint8Array =>
    modelBytes({
      name: 'batch2',
      node: [
        { opType: 'Conv', input: ['x', 'conv.weight'], output: ['c'] },
        { opType: 'GlobalAveragePool', input: ['c'], output: ['p'] },
        { opType: 'Flatten', input: ['p'], output: ['f'] },
        {
          opType: 'Gemm',
          input: ['f', 'fc.weight'],
          output: ['logits'],
          attribute: [{ name: 'transB', i: 1, type: onnx.AttributeProto.AttributeType.INT }],
        },
      ],
      initializer: [
        floatTensor('conv.weight', [8, 3, 3, 3], gaussian(8 * 27, 1, 0.3)),
        floatTensor('fc.weight', [4, 8], gaussian(32, 2, 0.3)),
      ],
      input: [valueInfo('x', [2, 3, 32, 32])],
      output: [valueInfo('logits', [2, 4])],
    }).slice();

  it('gets two different synthetic pictures a sample (one picture labelled as two crashed)', async () => {
    const set = await syntheticCalibrationSet(batchOfTwo(), { count: 2 });
    const data = await set.samples[0].load();
    if (data.kind !== 'feed') throw new Error('a feed sample');
    const x = data.feed.x;
    expect(x.dims).toEqual([2, 3, 32, 32]);
    const v = x.data as Float32Array;
    const half = v.length / 2;
    expect(v.subarray(0, half)).not.toEqual(v.subarray(half));
  }, 60_000);

  it('gets image files two a sample, the last batch filled from the first files', async () => {
    const paths = ['data/images/brick.png', 'data/images/chelsea.png', 'data/images/horse.png'];
    const set = await buildCalibrationSet(batchOfTwo(), { paths, image: { width: 32, height: 32 } });
    expect(set.samples.length).toBe(2);
    expect(set.description).toMatch(/in batches of 2/);
    const last = await set.samples[1].load();
    const first = await set.samples[0].load();
    if (last.kind !== 'feed' || first.kind !== 'feed') throw new Error('feed samples');
    expect(last.feed.x.dims).toEqual([2, 3, 32, 32]);
    // the second sample is the third file, then the first again
    const n = 3 * 32 * 32;
    expect((last.feed.x.data as Float32Array).subarray(n)).toEqual((first.feed.x.data as Float32Array).subarray(0, n));
  });
});

describe('photos run at their own size', () => {
  it('a model with dynamic height and width: the description names the largest and --image-size past 1024²', async () => {
    const model = modelBytes({
      name: 'dynamic',
      node: [{ opType: 'Conv', input: ['x', 'w'], output: ['y'] }],
      initializer: [floatTensor('w', [4, 3, 3, 3], gaussian(108, 5, 0.3))],
      input: [valueInfo('x', [1, 3, 'h', 'w'])],
      output: [valueInfo('y', [1, 4, 'h2', 'w2'])],
    }).slice();
    const big = await buildCalibrationSet(model, { paths: ['data/images/retina.jpg', 'data/images/brick.png'] });
    expect(big.description).toMatch(/at their own sizes, up to 1411×1411: --image-size WxH bounds the time and memory/);
    const small = await buildCalibrationSet(model, { paths: ['data/images/brick.png'] });
    expect(small.description).not.toMatch(/their own sizes/);
    // a size given: no note
    const sized = await buildCalibrationSet(model, { paths: ['data/images/retina.jpg'], image: { width: 64, height: 64 } });
    expect(sized.description).not.toMatch(/their own sizes/);
  });
});
