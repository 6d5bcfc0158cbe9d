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
import { decodeAllTensors } from '../src/pipeline/decompress.js';
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
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16;

/** Embedding → one hidden MatMul → the head (the embedding's transpose, or `head` given). */
function tiedModel(options: { half?: boolean; head?: (embed: Float32Array) => Float32Array } = {}): {
  bytes: Uint8Array;
  embed: Float32Array;
} {
  const embed = gaussian(VOCAB * WIDTH, 11, 0.3);
  const head = options.head ? options.head(embed) : transposedValues(embed, VOCAB, WIDTH);
  const tensor = (name: string, dims: number[], v: Float32Array): onnx.ITensorProto =>
    options.half
      ? { name, dims, dataType: FLOAT16, rawData: new Uint8Array(Uint16Array.from(v, (x) => float32ToFloat16(x)).buffer) }
      : floatTensor(name, dims, v);
  const nodes: onnx.INodeProto[] = [
    { opType: 'Gather', input: ['transformer.wte.weight', 'input_ids'], output: ['e'] },
    { opType: 'MatMul', input: ['e', 'transformer.h.0.mlp.weight'], output: ['h'] },
    { opType: 'MatMul', input: ['h', 'onnx::MatMul_999'], output: ['logits'] },
  ];
  const bytes = modelBytes({
    name: 'tied',
    node: nodes,
    initializer: [
      tensor('transformer.wte.weight', [VOCAB, WIDTH], embed),
      tensor('transformer.h.0.mlp.weight', [WIDTH, WIDTH], gaussian(WIDTH * WIDTH, 12, 0.2)),
      tensor('onnx::MatMul_999', [WIDTH, VOCAB], head),
    ],
    input: [valueInfo('input_ids', ['batch_size', 'sequence_length'], INT64)],
    output: [valueInfo('logits', ['batch_size', 'sequence_length', VOCAB], options.half ? FLOAT16 : 1)],
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

  it('a sliced embedding: each slice is a block of the copy’s columns (streamed and in memory), float16 too', async () => {
    for (const half of [false, true]) {
      const { bytes } = tiedModel({ half });
      const model = join(dir, `sliced-${half}.onnx`);
      writeFileSync(model, bytes);
      const file = join(dir, `sliced-${half}.nnm`);
      const r = await compressModel(model, file, { jobs: 1, sliceWeights: 2000, check: false });
      const embed = r.manifest.tensors.find((t) => t.key === 'transformer.wte.weight')!;
      expect(embed.slices!.length).toBeGreaterThan(3);
      expect(r.manifest.tensors.find((t) => t.key === 'onnx::MatMul_999')!.transposed).toBe(true);
      const back = join(dir, `sliced-${half}-back.onnx`);
      await decompressArchive(file, back, { jobs: 2 });
      const restored = openModel(back);
      expectTransposed(restored.read('transformer.wte.weight'), restored.read('onnx::MatMul_999'));
      const a = new Archive(file);
      const values = await decodeAllTensors(a);
      a.close();
      // (the file holds them in its own dtype)
      const inFile = (v: Float32Array): Float32Array => (half ? v.map((x) => float16ToFloat32(float32ToFloat16(x))) : v);
      expect(restored.read('onnx::MatMul_999')).toEqual(inFile(values.get('onnx::MatMul_999')!));
    }
  }, 60_000);

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

  it('transposeBlockInto puts a block of rows into the columns of the transpose, for 2- and 4-byte elements', () => {
    for (const width of [2, 4]) {
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
