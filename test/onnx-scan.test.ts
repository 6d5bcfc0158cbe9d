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

  /** One tensor [64, 64] whose TensorProto gets `extra` fields after its raw_data. */
  function trailing(extra: onnx.ITensorProto): Uint8Array {
    const w = gaussian(64 * 64, 3, 0.1);
    const head = onnx.TensorProto.encode({
      name: 'W',
      dims: [64, 64],
      dataType: onnx.TensorProto.DataType.FLOAT,
      rawData: new Uint8Array(w.buffer),
    }).finish();
    const tail = onnx.TensorProto.encode(extra).finish();
    const tensor = Buffer.concat([head, tail]);
    const graph = onnx.GraphProto.encode({
      name: 'g',
      node: [{ opType: 'MatMul', input: ['x', 'W'], output: ['y'] }],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y', [1, 64])],
    }).finish();
    // the initializer (graph field 5) appended to the graph's fields, the graph (model field 7) to the model's
    const init = Buffer.concat([Buffer.from([0x2a]), varint(tensor.length), tensor]);
    const model = onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }] }).finish();
    return Buffer.concat([model, Buffer.from([0x3a]), varint(graph.length + init.length), graph, init]);
  }

  function varint(v: number): Buffer {
    const out: number[] = [];
    for (; v >= 128; v = Math.floor(v / 128)) out.push((v % 128) | 0x80);
    out.push(v);
    return Buffer.from(out);
  }

  it('a tensor whose raw_data or data_type comes again after its data is read whole: the same as the whole file', () => {
    const again = write('again.onnx', trailing({ rawData: new Uint8Array(gaussian(64 * 64, 4, 0.1).buffer) }));
    const retyped = write('retyped.onnx', trailing({ dataType: onnx.TensorProto.DataType.INT32 }));
    for (const file of [again, retyped]) {
      expect(() => scanOnnx(file, 1)).toThrow(/after its raw_data/);
      const whole = new OnnxReader(file, readFileSync(file));
      expectSameReader(openOnnx(file), whole);
    }
    // protobuf's last raw_data wins: the second one's values
    expect(openOnnx(again).read('W')).toEqual(gaussian(64 * 64, 4, 0.1));
    // an INT32 tensor is not a float tensor at all
    expect(openOnnx(retyped).tensors).toEqual([]);
  });

  it('a damaged file is read whole and named as before', () => {
    const file = write('cut.onnx', mixedModel().bytes.subarray(0, 3000));
    expect(() => openOnnx(file)).toThrow(/truncated or damaged ONNX model/);
  });
});
