/**
 * An ONNX model opened from its file without its weights in memory (src/formats/onnx/scan.ts): the reader of the
 * scanned copy must see the same tensors, read the same values and write the same skeletons as the reader of the
 * whole file; a file whose later fields would change a left-out tensor is read whole instead.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { OnnxReader, openOnnx } from '../src/formats/onnx/reader.js';
import { scanOnnx } from '../src/formats/onnx/scan.js';
import { layoutOnnx, rebuildOnnx } from '../src/formats/onnx/rebuild.js';
import { RangeReader } from '../src/formats/range-reader.js';
import { elementCount } from '../src/formats/model.js';
import { mixedModel, valueInfo } from './helpers/onnx-fixtures.js';
import { ifBranchModel, sparseModel } from './helpers/onnx-builder.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';
import { MODELS } from '../bench/models.js';

const dir = tempDir();

function write(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** Everything a reader tells about a model: tensors, values, rows, ranges and skeletons. */
function expectSameReader(scanned: OnnxReader, whole: OnnxReader): void {
  // (where the data is read from differs: in the copy or the file; the range a worker reads is the file's)
  const describe = (r: OnnxReader): unknown =>
    r.tensors.map((t) => ({
      key: t.key,
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      uses: t.uses,
      consumers: t.consumers,
      storage: r.storage(t.key),
      range: r.dataRange(t.key) && { ...r.dataRange(t.key), mtimeMs: 0 },
    }));
  expect(describe(scanned)).toEqual(describe(whole));
  for (const t of whole.tensors) {
    expect(scanned.read(t.key)).toEqual(whole.read(t.key));
    if (t.shape.length >= 2 && t.shape[0] > 2) expect(scanned.readRows(t.key, 1, 2)).toEqual(whole.readRows(t.key, 1, 2));
  }
  const keys = whole.tensors.map((t) => t.key);
  for (const stripped of [keys, [], keys.filter((_, i) => i % 2 === 0)]) {
    const set = new Set(stripped);
    expect(Buffer.compare(scanned.skeleton(set), whole.skeleton(set))).toBe(0);
  }
}

describe('ONNX models scanned from their file', () => {
  const models: Array<[string, string]> = [
    ['mixed (initializers, Constant tensors in If branches, LSTM)', write('mixed.onnx', mixedModel().bytes)],
    ['If-branch (a subgraph with initializers of its own)', write('if.onnx', ifBranchModel().bytes)],
    ['sparse', write('sparse.onnx', sparseModel().bytes)],
    ['Silero VAD v4', MODELS.find((m) => m.id === 'silero-v4')!.file],
    ['PaddleOCR rec', MODELS.find((m) => m.id === 'paddleocr-v4-rec')!.file],
  ];

  for (const [name, file] of models)
    it(`${name}: the same tensors, values and skeletons as the whole file's reader, every raw_data left out`, () => {
      const whole = new OnnxReader(file, readFileSync(file));
      const scan = scanOnnx(file, 1);
      // every raw float tensor's data left out (and attribute tensors of nodes other than Constant: Silero's
      // ConstantOfShape values, which the skeleton must put back)
      const raw = whole.tensors.filter((t) => whole.storage(t.key).form === 'raw').map((t) => whole.storage(t.key).path);
      expect(raw.every((p) => scan.elided.has(p))).toBe(true);
      expectSameReader(new OnnxReader(file, scan.bytes, scan), whole);
      // as opened by default: tensors of 64 KiB and more left in the file
      expectSameReader(openOnnx(file), whole);
    });

  it('holds a few KB of a model of MB: the copy without the large tensors', () => {
    const file = write('big.onnx', sparseModel().bytes);
    const scan = scanOnnx(file);
    expect(scan.fileBytes).toBeGreaterThan(500_000);
    expect(scan.bytes.length).toBeLessThan(scan.fileBytes - 500_000);
    expect(scan.elided.size).toBeGreaterThan(0);
  });

  it('a model whose nothing is left out is copied byte for byte', () => {
    const file = write('mixed-copy.onnx', mixedModel().bytes);
    const scan = scanOnnx(file, 2 ** 40);
    expect(scan.elided.size).toBe(0);
    expect(Buffer.compare(scan.bytes, readFileSync(file))).toBe(0);
  });

  function varint(v: number): Buffer {
    const out: number[] = [];
    for (; v >= 128; v = Math.floor(v / 128)) out.push((v % 128) | 0x80);
    out.push(v);
    return Buffer.from(out);
  }

  /** A varint one byte longer than it need be (valid protobuf, which the skeleton's writer never writes). */
  function padded(v: number): Buffer {
    const b = varint(v);
    b[b.length - 1] |= 0x80;
    return Buffer.concat([b, Buffer.from([0])]);
  }

  const W = gaussian(64 * 64, 3, 0.1);
  const RAW = Buffer.from(W.buffer);
  const fields = (t: onnx.ITensorProto): Buffer => Buffer.from(onnx.TensorProto.encode(t).finish());
  const rawField = (data: Buffer, len = varint): Buffer => Buffer.concat([Buffer.from([0x4a]), len(data.length), data]);

  /** A model of one MatMul whose weight W's TensorProto is `tensor` (its fields as bytes, in the order given). */
  function modelOf(tensor: Buffer, initLength = varint): Buffer {
    const graph = onnx.GraphProto.encode({
      name: 'g',
      node: [{ opType: 'MatMul', input: ['x', 'W'], output: ['y'] }],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y', [1, 64])],
    }).finish();
    // the initializer (graph field 5) appended to the graph's fields, the graph (model field 7) to the model's
    const init = Buffer.concat([Buffer.from([0x2a]), initLength(tensor.length), tensor]);
    const model = onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }] }).finish();
    return Buffer.concat([model, Buffer.from([0x3a]), varint(graph.length + init.length), graph, init]);
  }

  const head = fields({ name: 'W', dims: [64, 64], dataType: onnx.TensorProto.DataType.FLOAT });
  const odd: Array<[string, Buffer]> = [
    [
      'a second raw_data (the last wins)',
      modelOf(Buffer.concat([head, rawField(RAW), rawField(Buffer.from(gaussian(64 * 64, 4, 0.1).buffer))])),
    ],
    ['a small raw_data, then a large one', modelOf(Buffer.concat([head, rawField(Buffer.alloc(8)), rawField(RAW)]))],
    [
      'data_type after raw_data',
      modelOf(Buffer.concat([fields({ name: 'W', dims: [64, 64] }), rawField(RAW), fields({ dataType: 1 })])),
    ],
    ['raw_data, then data_type INT32', modelOf(Buffer.concat([head, rawField(RAW), fields({ dataType: 6 })]))],
    ['float_data, then raw_data', modelOf(Buffer.concat([head, fields({ floatData: [1, 2] }), rawField(RAW)]))],
    ['raw_data with data_location DEFAULT after it', modelOf(Buffer.concat([head, rawField(RAW), fields({ dataLocation: 0 })]))],
    ['a raw_data length one byte longer than need be', modelOf(Buffer.concat([head, rawField(RAW, padded)]))],
    ['an initializer length one byte longer than need be', modelOf(Buffer.concat([head, rawField(RAW)]), padded)],
  ];
  for (const [name, bytes] of odd)
    it(`${name}: the reader sees what the whole file's reader sees, and a worker reads the same bytes`, () => {
      const file = write('odd.onnx', bytes);
      const whole = new OnnxReader(file, readFileSync(file));
      for (const scanned of [
        openOnnx(file),
        (() => {
          try {
            const scan = scanOnnx(file, 1);
            return new OnnxReader(file, scan.bytes, scan);
          } catch {
            return openOnnx(file); // refused by the scan: read whole
          }
        })(),
      ]) {
        expectSameReader(scanned, whole);
        for (const t of whole.tensors) {
          const range = scanned.dataRange(t.key);
          if (range) expect(new RangeReader('onnx', file, t.key, range).read(t.key)).toEqual(whole.read(t.key));
        }
      }
    });

  it('an attribute tensor with external data and raw_data (of a node other than Constant) keeps both in the skeleton', () => {
    const attrTensor = Buffer.concat([
      head,
      rawField(RAW),
      fields({ externalData: [{ key: 'location', value: 'x.bin' }], dataLocation: 1 }),
    ]);
    const attr = Buffer.concat([
      fields({}),
      Buffer.from(onnx.AttributeProto.encode({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR }).finish()),
      Buffer.from([0x2a]),
      varint(attrTensor.length),
      attrTensor,
    ]);
    const node = Buffer.concat([
      Buffer.from(onnx.NodeProto.encode({ opType: 'Custom', output: ['c'] }).finish()),
      Buffer.from([0x2a]),
      varint(attr.length),
      attr,
    ]);
    const graph = Buffer.concat([Buffer.from([0x0a]), varint(node.length), node]);
    const model = onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }] }).finish();
    const file = write('attr-external.onnx', Buffer.concat([model, Buffer.from([0x3a]), varint(graph.length), graph]));
    const whole = new OnnxReader(file, readFileSync(file));
    expect(Buffer.compare(openOnnx(file).skeleton(new Set()), whole.skeleton(new Set()))).toBe(0);
  });

  it('a model of 20,000 tensors: every skeleton and layout is built (no call of that many arguments)', () => {
    const n = 20_000;
    const inits = Array.from({ length: n }, (_, i) => ({
      name: `b${i}`,
      dims: [1],
      dataType: onnx.TensorProto.DataType.FLOAT,
      rawData: new Uint8Array(4),
    }));
    const bytes = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'g',
        initializer: inits,
        node: inits.map((t, i) => ({ opType: 'Add', input: [i ? `y${i - 1}` : 'x', t.name], output: [`y${i}`] })),
        input: [valueInfo('x', [1])],
        output: [valueInfo(`y${n - 1}`, [1])],
      },
    }).finish();
    const file = write('many.onnx', bytes);
    const reader = openOnnx(file);
    const keys = new Set(reader.tensors.map((t) => t.key));
    expect(keys.size).toBe(n);
    const skeleton = reader.skeleton(keys);
    const tensors = reader.tensors.map((t) => ({ path: t.location, form: 'raw', length: 4 }));
    const pieces = layoutOnnx(skeleton, tensors, file);
    expect(pieces.filter((p) => !(p instanceof Uint8Array)).length).toBe(n);
    const rebuilt = rebuildOnnx(
      skeleton,
      reader.tensors.map((t) => ({ path: t.location, form: 'raw', dtype: 'float32' as const, values: new Float32Array(1) })),
      file,
    );
    expect(Buffer.compare(Buffer.from(rebuilt), Buffer.from(bytes))).toBe(0);
  }, 60_000);

  it('a model file replaced after it was opened is not read at the old offsets', () => {
    const file = write('replaced.onnx', sparseModel().bytes);
    const reader = openOnnx(file);
    const key = reader.tensors.find((t) => elementCount(t.shape) * 4 >= 65536)!.key;
    writeFileSync(file, Buffer.concat([Buffer.alloc(16), readFileSync(file)]));
    expect(() => reader.read(key)).toThrow(/changed since the model was opened/);
  });

  it('a damaged file is read whole and named as before', () => {
    const file = write('cut.onnx', mixedModel().bytes.subarray(0, 3000));
    expect(() => openOnnx(file)).toThrow(/truncated or damaged ONNX model/);
  });
});
