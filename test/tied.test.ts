/**
 * A tied output head exported as a transposed copy of the token embedding (torch.onnx.export of GPT-2: `wte`
 * [vocab, width] read by Gather, `onnx::MatMul_…` [width, vocab] its transpose read by MatMul): stored once
 * (`sameAs` with `transposed`, format version 6), written back transposed by every decoder, bit for bit.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { bytesSource, compressModel, decodeArchiveSource, decompressArchive, nodeBackend, openModel } from '../src/index.js';
import { Archive } from '../src/archive/node.js';
import { decodeAllTensors, rebuildModel } from '../src/pipeline/decompress.js';
import { withDuplicates } from '../src/pipeline/allocate.js';
import { float16ToFloat32, float32ToFloat16 } from '../src/formats/model.js';
import { transposeBlockInto, transposedValues } from '../src/layout/transpose.js';
import type { Manifest } from '../src/archive/manifest.js';
import { archiveTotals } from '../src/cli/totals.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const VOCAB = 300;
const WIDTH = 48;
const INT64 = onnx.TensorProto.DataType.INT64;

type Dtype = 'float32' | 'float16' | 'float64';
const DATA_TYPE: Record<Dtype, number> = { float32: 1, float16: onnx.TensorProto.DataType.FLOAT16, float64: 11 };

/** A tensor of `dtype` holding `v` (rounded to it). */
function typedTensor(name: string, dims: number[], v: Float32Array, dtype: Dtype): onnx.ITensorProto {
  if (dtype === 'float32') return floatTensor(name, dims, v);
  const data = dtype === 'float16' ? Uint16Array.from(v, (x) => float32ToFloat16(x)) : Float64Array.from(v);
  return { name, dims, dataType: DATA_TYPE[dtype], rawData: new Uint8Array(data.buffer) };
}

/** Embedding → one hidden MatMul → the head (the embedding's transpose, or `head` given), in `dtypes` [table, head]. */
function tiedModel(options: { dtypes?: [Dtype, Dtype]; head?: (embed: Float32Array) => Float32Array } = {}): {
  bytes: Uint8Array;
  embed: Float32Array;
} {
  const [table, copy] = options.dtypes ?? ['float32', 'float32'];
  // (tensors of two dtypes hold the same values where those are float16's)
  const drawn = gaussian(VOCAB * WIDTH, 11, 0.3);
  const embed = table === copy ? drawn : drawn.map((x) => float16ToFloat32(float32ToFloat16(x)));
  const head = options.head ? options.head(embed) : transposedValues(embed, VOCAB, WIDTH);
  const nodes: onnx.INodeProto[] = [
    { opType: 'Gather', input: ['transformer.wte.weight', 'input_ids'], output: ['e'] },
    { opType: 'MatMul', input: ['e', 'transformer.h.0.mlp.weight'], output: ['h'] },
    { opType: 'MatMul', input: ['h', 'onnx::MatMul_999'], output: ['logits'] },
  ];
  const bytes = modelBytes({
    name: 'tied',
    node: nodes,
    initializer: [
      typedTensor('transformer.wte.weight', [VOCAB, WIDTH], embed, table),
      typedTensor('transformer.h.0.mlp.weight', [WIDTH, WIDTH], gaussian(WIDTH * WIDTH, 12, 0.2), table),
      typedTensor('onnx::MatMul_999', [WIDTH, VOCAB], head, copy),
    ],
    input: [valueInfo('input_ids', ['batch_size', 'sequence_length'], INT64)],
    output: [valueInfo('logits', ['batch_size', 'sequence_length', VOCAB], DATA_TYPE[copy])],
  });
  return { bytes: bytes.slice(), embed };
}

/** The restored head against the restored embedding, transposed: bit for bit. */
function expectTransposed(embed: Float32Array, head: Float32Array): void {
  expect(new Uint32Array(transposedValues(embed, VOCAB, WIDTH).buffer)).toEqual(
    new Uint32Array(head.buffer, head.byteOffset, head.length),
  );
}

describe('a tied head stored once as the transpose of the embedding', () => {
  it('is stored once, in format version 6, and every decoder writes it back transposed', async () => {
    const { bytes, embed } = tiedModel();
    const model = join(dir, 'tied.onnx');
    writeFileSync(model, bytes);
    const file = join(dir, 'tied.nnm');
    const r = await compressModel(model, file, { jobs: 1 });
    const head = r.manifest.tensors.find((t) => t.key === 'onnx::MatMul_999')!;
    expect([head.sameAs, head.transposed, head.bytes]).toEqual(['transformer.wte.weight', true, 0]);
    expect(r.manifest.version).toBe(6);
    expect(r.quality?.passed).toBe(true);
    expect(archiveTotals(r.manifest, r.archiveBytes)).toMatchObject({ duplicates: 1, transposed: 1 });
    // the same model without the tie: the head's codes are the embedding's again
    const untied = join(dir, 'untied.onnx');
    writeFileSync(
      untied,
      tiedModel({
        head: (e) =>
          transposedValues(
            e.map((x, i) => (i === 5 ? x * 1.5 : x)),
            VOCAB,
            WIDTH,
          ),
      }).bytes,
    );
    const u = await compressModel(untied, join(dir, 'untied.nnm'), { jobs: 1 });
    expect(u.manifest.tensors.find((t) => t.key === 'onnx::MatMul_999')!.sameAs).toBeUndefined();
    expect(u.manifest.version).toBeLessThan(6);
    expect(r.archiveBytes).toBeLessThan(u.archiveBytes * 0.75);

    // the Node decoder (values), the isomorphic core (the browser's) and the streamed model file
    const a = new Archive(file);
    const values = await decodeAllTensors(a);
    a.close();
    expectTransposed(values.get('transformer.wte.weight')!, values.get('onnx::MatMul_999')!);
    const core = await decodeArchiveSource(bytesSource(readFileSync(file), file), nodeBackend);
    for (const [k, v] of values) expect(core.tensors.get(k)).toEqual(v);
    const back = join(dir, 'tied-back.onnx');
    await decompressArchive(file, back, { jobs: 2 });
    const restored = openModel(back);
    expectTransposed(restored.read('transformer.wte.weight'), restored.read('onnx::MatMul_999'));
    expect(restored.read('transformer.wte.weight')).toEqual(values.get('transformer.wte.weight'));
    // close to the original, and it runs
    const diff = restored.read('transformer.wte.weight').reduce((m, x, i) => Math.max(m, Math.abs(x - embed[i])), 0);
    expect(diff).toBeLessThan(0.01);
    const session = await ort.InferenceSession.create(back);
    const ids = new ort.Tensor('int64', BigInt64Array.from([3n, 77n, 299n]), [1, 3]);
    expect((await session.run({ input_ids: ids })).logits.dims).toEqual([1, 3, VOCAB]);
  }, 60_000);

  it('a sliced embedding: each slice is a block of the copy’s columns, streamed and in memory, in every dtype', async () => {
    const pairs: Array<[Dtype, Dtype]> = [
      ['float32', 'float32'],
      ['float16', 'float16'],
      ['float64', 'float64'],
      ['float16', 'float32'],
      ['float32', 'float16'],
    ];
    for (const dtypes of pairs) {
      const { bytes } = tiedModel({ dtypes });
      const tag = dtypes.join('-');
      const model = join(dir, `sliced-${tag}.onnx`);
      writeFileSync(model, bytes);
      const file = join(dir, `sliced-${tag}.nnm`);
      const r = await compressModel(model, file, { jobs: 1, sliceWeights: 2000, check: false });
      const embed = r.manifest.tensors.find((t) => t.key === 'transformer.wte.weight')!;
      expect(embed.slices!.length).toBeGreaterThan(3);
      expect([tag, r.manifest.tensors.find((t) => t.key === 'onnx::MatMul_999')!.transposed]).toEqual([tag, true]);
      // streamed (two jobs), and the in-memory rebuild: the same file
      const back = join(dir, `sliced-${tag}-back.onnx`);
      await decompressArchive(file, back, { jobs: 2 });
      const a = new Archive(file);
      const rebuilt = await rebuildModel(a, { jobs: 1 });
      const values = await decodeAllTensors(a);
      a.close();
      expect(Buffer.compare(Buffer.from(rebuilt), readFileSync(back))).toBe(0);
      const restored = openModel(back);
      // (of two dtypes: the same values in the narrower one)
      const narrow = (v: Float32Array): Float32Array =>
        dtypes[0] === dtypes[1] ? v : v.map((x) => float16ToFloat32(float32ToFloat16(x)));
      expectTransposed(narrow(restored.read('transformer.wte.weight')), narrow(restored.read('onnx::MatMul_999')));
      // the values decoded, in the file's dtype
      const inFile = (v: Float32Array): Float32Array =>
        dtypes[1] === 'float16' ? v.map((x) => float16ToFloat32(float32ToFloat16(x))) : v;
      expect(restored.read('onnx::MatMul_999')).toEqual(inFile(values.get('onnx::MatMul_999')!));
    }
  }, 120_000);

  it('a probe substitutes the copy transposed, an identical duplicate as it is', () => {
    const v = gaussian(VOCAB * WIDTH, 5, 1);
    const out = withDuplicates(
      { key: 'wte', shape: [VOCAB, WIDTH] },
      v,
      new Map([
        ['head', 'wte'],
        ['same', 'wte'],
        ['other', 'x'],
      ]),
      new Set(['head']),
    );
    expect([...out.keys()]).toEqual(['wte', 'head', 'same']);
    expect(out.get('same')).toBe(v);
    expect(out.get('head')).toEqual(transposedValues(v, VOCAB, WIDTH));
    expect(out.get('head')![1]).toBe(v[WIDTH]);
  });

  it('rate control probes the embedding and its copy together (the copy fed transposed)', async () => {
    const { bytes } = tiedModel();
    const model = join(dir, 'tied-rate.onnx');
    writeFileSync(model, bytes);
    const r = await compressModel(model, join(dir, 'tied-rate.nnm'), { jobs: 1, targetBpw: 4 });
    const head = r.manifest.tensors.find((t) => t.key === 'onnx::MatMul_999')!;
    expect(head.transposed).toBe(true);
    expect(r.quality?.passed).toBe(true);
  }, 120_000);

  it('the reader refuses a transposed copy of the wrong shape, without a first, or in an older version', async () => {
    const { bytes } = tiedModel();
    const model = join(dir, 'tied-bad.onnx');
    writeFileSync(model, bytes);
    const file = join(dir, 'tied-bad.nnm');
    await compressModel(model, file, { jobs: 1, check: false });
    const { entries, manifest } = readArchive(file);
    const cases: Array<[string, (m: Manifest) => void, RegExp]> = [
      ['shape', (m) => (m.tensors.find((t) => t.transposed)!.shape = [VOCAB, WIDTH]), /bad transposed copy/],
      ['alone', (m) => delete m.tensors.find((t) => t.transposed)!.sameAs, /bad transposed/],
      ['not true', (m) => ((m.tensors.find((t) => t.transposed) as { transposed: unknown }).transposed = 1), /bad transposed/],
      ['version', (m) => (m.version = 5), /bad transposed copy/],
    ];
    for (const [name, change, error] of cases) {
      const m = structuredClone(manifest);
      change(m);
      const bad = join(dir, `tied-bad-${name}.nnm`);
      writeArchive(bad, entries, m);
      await expect(decompressArchive(bad, join(dir, `tied-bad-${name}.onnx`))).rejects.toThrow(error);
    }
  }, 60_000);

  it('transposeBlockInto puts a block of rows into the columns of the transpose, for 1- to 8-byte elements', () => {
    for (const width of [1, 2, 4, 8]) {
      const rows = 70;
      const cols = 9;
      const all = Uint8Array.from({ length: rows * cols * width }, (_, i) => (i * 37) % 251);
      const out = new Uint8Array(all.length);
      // two blocks of rows, the second written first
      transposeBlockInto(all.slice(40 * cols * width), rows - 40, cols, width, out, rows, 40);
      transposeBlockInto(all.slice(0, 40 * cols * width), 40, cols, width, out, rows, 0);
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++)
          for (let b = 0; b < width; b++) expect(out[(c * rows + r) * width + b]).toBe(all[(r * cols + c) * width + b]);
      expect(() => transposeBlockInto(all, rows, cols, width, out, rows, 1)).toThrow(RangeError);
    }
  });
});
