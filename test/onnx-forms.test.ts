/**
 * ONNX tensors keep their data form through compress → decompress: raw_data (float32 / float16),
 * float_data, double_data and int32_data (float16 bit patterns). The decoder writes each tensor's bytes in
 * its file dtype straight from the codes; this checks the rebuilt file against the rebuild from float32
 * values (the slower path it replaced), byte for byte, at one job and on worker threads.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, decompressArchive, decodeAllTensors, openModel } from '../src/index.js';
import { rebuildFromSkeleton } from '../src/formats/registry.js';
import { float16ToFloat32, float32ToFloat16, tensorStorage, type StoredTensor } from '../src/formats/model.js';
import { RangeReader } from '../src/formats/range-reader.js';
import { onnxLayout } from '../src/pipeline/decompress.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { readInt64 } from '../src/formats/onnx/protobuf.js';

const T = onnx.TensorProto.DataType;
const DIMS = [96, 64];

/** Every form; `int32Data: false` leaves out the one whose size does not follow from the shape. */
function formsModel({ int32Data = true } = {}): Uint8Array {
  const n = DIMS[0] * DIMS[1];
  const w = (seed: number): Float32Array => gaussian(n, seed, 0.2);
  const half = (v: Float32Array): Uint16Array => Uint16Array.from(v, (x) => float32ToFloat16(x));
  const sixteen = Float32Array.from(half(w(2)), (h) => float16ToFloat32(h));
  const inits: onnx.ITensorProto[] = [
    { name: 'raw32', dims: DIMS, dataType: T.FLOAT, rawData: new Uint8Array(w(1).buffer) },
    { name: 'raw16', dims: DIMS, dataType: T.FLOAT16, rawData: new Uint8Array(half(w(2)).buffer) },
    { name: 'floats', dims: DIMS, dataType: T.FLOAT, floatData: Array.from(w(3)) },
    { name: 'doubles', dims: DIMS, dataType: T.DOUBLE, doubleData: Array.from(w(4)) },
    ...(int32Data ? [{ name: 'halves', dims: DIMS, dataType: T.FLOAT16, int32Data: Array.from(half(w(5))) }] : []),
    // the float16 tensor's values again as float32: stored once (sameAs), rebuilt in each one's own dtype
    { name: 'same32', dims: DIMS, dataType: T.FLOAT, rawData: new Uint8Array(sixteen.buffer) },
  ];
  const graph: onnx.IGraphProto = {
    name: 'forms',
    initializer: inits,
    node: inits.map((t) => ({ opType: 'MatMul', input: [`x_${t.name}`, t.name!], output: [`y_${t.name}`] })),
    input: inits.map((t) => valueInfo(`x_${t.name}`, [1, DIMS[0]], t.dataType!)),
    output: inits.map((t) => valueInfo(`y_${t.name}`, [1, DIMS[1]], t.dataType!)),
  };
  return modelBytes(graph);
}

describe('ONNX data forms through the one-pass decoder', () => {
  const dir = tempDir();
  const model = join(dir, 'forms.onnx');
  writeFileSync(model, formsModel());

  it('reads every form as a compressible tensor', () => {
    const reader = openModel(model);
    const forms = Object.fromEntries(reader.tensors.map((t) => [t.key, (reader.storage(t.key) as { form: string }).form]));
    reader.close();
    expect(forms).toEqual({
      raw32: 'raw',
      raw16: 'raw',
      floats: 'float_data',
      doubles: 'double_data',
      halves: 'int32_data',
      same32: 'raw',
    });
  });

  it('a worker reads a raw tensor from its byte range alone, the same values; typed fields open the model', () => {
    const reader = openModel(model);
    const ranged: string[] = [];
    for (const t of reader.tensors) {
      const range = reader.dataRange?.(t.key);
      if (!range) continue;
      ranged.push(t.key);
      const r = new RangeReader('onnx', model, t.key, range);
      expect(r.read(t.key)).toEqual(reader.read(t.key));
      expect(r.readRows(t.key, 5, 7)).toEqual(reader.readRows(t.key, 5, 7));
    }
    reader.close();
    expect(ranged.sort()).toEqual(['raw16', 'raw32', 'same32']);
    // a model file replaced since it was opened is refused, not read at the old offsets
    const copy = join(dir, 'forms-copy.onnx');
    writeFileSync(copy, readFileSync(model));
    const opened = openModel(copy);
    const range = opened.dataRange!('raw32')!;
    opened.close();
    writeFileSync(copy, Buffer.concat([Buffer.alloc(16), readFileSync(model)]));
    expect(() => new RangeReader('onnx', copy, 'raw32', range).read('raw32')).toThrow(
      /changed while the model was being compressed/,
    );
  });

  it('an archive made on worker threads (tensors read by range) is the one made in one thread', async () => {
    await compressModel(model, join(dir, 'j1.nnm'), { force: true, check: false, jobs: 1 });
    await compressModel(model, join(dir, 'j2.nnm'), { force: true, check: false, jobs: 2 });
    expect(readFileSync(join(dir, 'j2.nnm'))).toEqual(readFileSync(join(dir, 'j1.nnm')));
  }, 60_000);

  for (const jobs of [1, 2])
    it(`decompress (--jobs ${jobs}) writes the same bytes as the rebuild from float32 values`, async () => {
      const archive = join(dir, `forms-${jobs}.nnm`);
      await compressModel(model, archive, { check: false, force: true });
      const a = new Archive(archive);
      try {
        expect(
          a.manifest.tensors
            .filter((t) => t.layout)
            .map((t) => t.key)
            .sort(),
        ).toEqual(['doubles', 'floats', 'halves', 'raw16', 'raw32', 'same32']);
        expect(a.manifest.tensors.find((t) => t.key === 'same32')!.sameAs).toBe('raw16');
        const values = await decodeAllTensors(a, { jobs: 1 });
        const restored = a.manifest.tensors
          .filter((t) => values.has(t.key))
          .map((t): StoredTensor => ({ storage: tensorStorage('onnx', t.storage), dtype: t.dtype, values: values.get(t.key)! }));
        const want = rebuildFromSkeleton('onnx', a.skeleton(), restored, archive);
        const out = join(dir, `forms-${jobs}.onnx`);
        await decompressArchive(archive, out, { jobs, force: true });
        expect(Buffer.compare(readFileSync(out), Buffer.from(want))).toBe(0);
      } finally {
        a.close();
      }
    });

  // without int32_data every tensor's size follows from its shape: the model is written streamed, in file order,
  // a few tensors in memory (the in-memory rebuild is the reference); slices of a tensor are written one by one
  for (const [name, options] of [
    ['whole tensors', {}],
    ['sliced (1,000 weights a slice)', { sliceWeights: 1000 }],
  ] as const)
    it(`streamed: ${name}, at one job and on worker threads, the bytes of the rebuild in memory`, async () => {
      const streamedModel = join(dir, 'forms-streamed.onnx');
      writeFileSync(streamedModel, formsModel({ int32Data: false }));
      const archive = join(dir, 'forms-streamed.nnm');
      await compressModel(streamedModel, archive, { check: false, force: true, ...options });
      const a = new Archive(archive);
      try {
        const layout = onnxLayout(a, join(dir, 'x.onnx'))!;
        expect(layout).toBeDefined();
        expect(layout.parts.length).toBeGreaterThan('sliceWeights' in options ? 5 : 4);
        const values = await decodeAllTensors(a, { jobs: 1 });
        const restored = a.manifest.tensors
          .filter((t) => values.has(t.key))
          .map((t): StoredTensor => ({ storage: tensorStorage('onnx', t.storage), dtype: t.dtype, values: values.get(t.key)! }));
        const want = Buffer.from(rebuildFromSkeleton('onnx', a.skeleton(), restored, archive));
        for (const jobs of [1, 2]) {
          const out = join(dir, `forms-streamed-${jobs}.onnx`);
          await decompressArchive(archive, out, { jobs, force: true });
          expect(Buffer.compare(readFileSync(out), want)).toBe(0);
        }
      } finally {
        a.close();
      }
    }, 60_000);

  it('the archive with int32_data is rebuilt in memory (its layout is not streamed)', async () => {
    const archive = join(dir, 'forms-1.nnm');
    await compressModel(model, archive, { check: false, force: true });
    const a = new Archive(archive);
    try {
      expect(onnxLayout(a, join(dir, 'x.onnx'))).toBeUndefined();
    } finally {
      a.close();
    }
  });

  it('a manifest whose tensor places do not match the skeleton: a typed error before anything is written, no output', async () => {
    const source = join(dir, 'forms-places.onnx');
    writeFileSync(source, formsModel({ int32Data: false }));
    const archive = join(dir, 'forms-places.nnm');
    await compressModel(source, archive, { check: false, force: true });
    const { manifest, entries } = readArchive(archive);
    const place = (key: string): { path: string } => manifest.tensors.find((t) => t.key === key)!.storage as { path: string };
    for (const [what, path] of [
      ['a place not in the skeleton', '7.0/5.99'],
      ['the place of another tensor', place('raw16').path],
    ]) {
      const bad = join(dir, 'forms-places-bad.nnm');
      const m = structuredClone(manifest);
      (m.tensors.find((t) => t.key === 'raw32')!.storage as { path: string }).path = path;
      writeArchive(bad, entries, m);
      const out = join(dir, 'forms-places-bad.onnx');
      await expect(decompressArchive(bad, out, { force: true }), what).rejects.toThrow(/does not match the skeleton/);
      expect(existsSync(out)).toBe(false);
    }
  });
});

describe('int64 attributes', () => {
  it('a negative value comes back exactly (−1 read as 0 made axis −1 axis 0)', () => {
    for (const v of [-1n, -2n, -128n, -100000n, 0n, 5n, 2n ** 40n]) {
      let u = BigInt.asUintN(64, v);
      const bytes: number[] = [];
      while (u >= 128n) {
        bytes.push(Number(u & 127n) | 128);
        u >>= 7n;
      }
      bytes.push(Number(u));
      expect(readInt64(Uint8Array.from(bytes), 0, bytes.length)).toEqual([Number(v), bytes.length]);
    }
  });
});
