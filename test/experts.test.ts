/**
 * Stacked matrices (format version 7, the `stack` layout): a batched MatMul constant B [E, K, N] — an MoE's stacked
 * experts — is E planes of K × N with a range per column of each, not one [E·K, N] matrix whose column j shares one
 * range across experts (experts of scales 0.25–2.8 ran at 22.8–43.7 dB, the model's output 8 % off against 4.6 %).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it, vi } from 'vitest';
import { inspectPath } from '../src/cli/inspect.js';
import { Archive, CorruptArchiveError, compressModel, decodeAllTensors, decompressArchive, openModel } from '../src/index.js';
import { classifyTensor } from '../src/roles/classify.js';
import { MOE, moeModel } from './helpers/onnx-builder.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { writeSafetensors } from './helpers/safetensors-fixture.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** `inspect --json` of an archive, as printed. */
async function inspectJson(file: string): Promise<string> {
  const printed: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void printed.push(String(line)));
  try {
    await inspectPath(file, { json: true });
  } finally {
    spy.mockRestore();
  }
  return printed.join('');
}
const { experts: E, width: D, hidden: H } = MOE;

/** SNR (dB) of `q` against `w` over elements [from, to). */
function snr(w: Float32Array, q: Float32Array, from = 0, to = w.length): number {
  let s = 0;
  let e = 0;
  for (let i = from; i < to; i++) {
    s += w[i] * w[i];
    e += (w[i] - q[i]) ** 2;
  }
  return 10 * Math.log10(s / e);
}

/** Per-output-channel int8 round to nearest of a stack [E, K, N]: a symmetric scale per expert and column. */
function int8PerExpertColumn(w: Float32Array, experts: number, k: number, n: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let e = 0; e < experts; e++)
    for (let c = 0; c < n; c++) {
      let max = 0;
      for (let r = 0; r < k; r++) max = Math.max(max, Math.abs(w[(e * k + r) * n + c]));
      const scale = max / 127;
      for (let r = 0; r < k; r++) {
        const i = (e * k + r) * n + c;
        out[i] = scale ? Math.round(w[i] / scale) * scale : 0;
      }
    }
  return out;
}

async function run(model: string, x: Float32Array, tokens: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model);
  try {
    const out = await session.run({ x: new ort.Tensor('float32', x, [tokens, D]) });
    return out.y.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('stacked experts: a plane and ranges per matrix', () => {
  it('a batched MatMul constant B [E, K, N] is a stack; a [1, K, N] one and a constant A stay matrices', () => {
    const entry = (shape: number[], inputIndex: number) => ({
      key: 'w',
      name: 'w',
      dtype: 'float32' as const,
      shape,
      uses: [{ op: 'MatMul', inputIndex, attrs: {} }],
      location: '',
    });
    expect(classifyTensor(entry([8, 64, 128], 1), 'onnx').layout).toEqual({
      kind: 'stack',
      batch: 8,
      nin: 64,
      nout: 128,
      order: 'in_out',
    });
    expect(classifyTensor(entry([2, 4, 64, 128], 1), 'onnx').layout).toMatchObject({ kind: 'stack', batch: 8 });
    expect(classifyTensor(entry([1, 64, 128], 1), 'onnx').layout).toEqual({ kind: 'fc', nin: 64, nout: 128, order: 'in_out' });
    // experts by einsum: `td,edh->teh` (leading and last axes survive, the one before the last is summed over)
    const einsum = (equation: string, shape: number[]) =>
      classifyTensor({ ...entry(shape, 1), uses: [{ op: 'Einsum', inputIndex: 1, attrs: { equation } }] }, 'onnx').layout;
    expect(einsum('td,edh->teh', [8, 64, 128])).toEqual({ kind: 'stack', batch: 8, nin: 64, nout: 128, order: 'in_out' });
    // `td,ehd->teh`: the last axis is summed over, rows (e, h) are the channels, as before
    expect(einsum('td,ehd->teh', [8, 128, 64])).toEqual({ kind: 'fc', nout: 1024, nin: 64, order: 'out_in' });
    // stored [E, out, in] and transposed for the product (through a Gather of routed ids, or not): a range per row
    for (const [through, perm] of [
      [
        ['Gather', 'Transpose'],
        [0, 1, 3, 2],
      ],
      [['Transpose'], [0, 2, 1]],
    ] as const)
      expect(
        classifyTensor(
          {
            ...entry([8, 192, 64], 1),
            uses: [],
            consumers: [{ op: 'MatMul', inputIndex: 1, attrs: {}, through: [...through], perms: [[...perm]] }],
          },
          'onnx',
        ).layout,
      ).toEqual({ kind: 'fc', nout: 8 * 192, nin: 64, order: 'out_in' });
    // a Reshape on the way may merge the matrices ([hidden, heads, dim] → [hidden, heads·dim]): the plain matrix
    expect(
      classifyTensor(
        { ...entry([256, 8, 32], 1), uses: [], consumers: [{ op: 'MatMul', inputIndex: 1, attrs: {}, through: ['Reshape'] }] },
        'onnx',
      ).layout,
    ).toEqual({ kind: 'fc', nin: 2048, nout: 32, order: 'in_out' });
    // A [E, M, K] (y = A·x): its rows are outputs, a range each, which already is one per expert and row
    expect(classifyTensor(entry([8, 128, 64], 0), 'onnx').layout).toEqual({ kind: 'fc', nout: 1024, nin: 64, order: 'out_in' });
  });

  for (const routed of [false, true])
    it(`the default codes every expert at least as well as int8 per expert and column, and the model runs${routed ? ': experts picked by a Gather of the top-2 ids' : ''}`, async () => {
      const built = moeModel(undefined, 1, { routed });
      const model = join(dir, `moe-${routed}.onnx`);
      writeFileSync(model, built.bytes);
      const out = join(dir, `moe-${routed}.nnm`);
      const r = await compressModel(model, out);
      expect(r.quality).toMatchObject({ checked: true, passed: true });
      const a = new Archive(out);
      expect(a.manifest.version).toBe(7);
      const rec = a.manifest.tensors.find((t) => t.name === 'experts.w1')!;
      expect(rec.layout).toEqual({ kind: 'stack', batch: E, nin: D, nout: H, order: 'in_out' });
      // (routed: found past the Gather, where the name `experts.w1` had made it a kernel with one range per expert)
      if (routed) expect(rec.reason).toBe('MatMul weight (through Gather; a stack of [K, N] matrices)');
      // inspect --json says so
      const rows = JSON.parse(await inspectJson(out)) as { tensors: Array<{ name: string; layout?: unknown }> };
      expect(rows.tensors.find((t) => t.name === 'experts.w1')!.layout).toEqual(rec.layout);
      expect(rec.planes).toHaveLength(E);
      const decoded = await decodeAllTensors(a);
      a.close();
      for (const [name, k, n] of [
        ['experts.w1', D, H],
        ['experts.w2', H, D],
      ] as const) {
        const w = built.weights[name];
        const q = decoded.get(name)!;
        const int8 = int8PerExpertColumn(w, E, k, n);
        // every expert, the smallest (scale 0.25) too: one range per column across experts left it ~20 dB short
        for (let e = 0; e < E; e++) {
          const [from, to] = [e * k * n, (e + 1) * k * n];
          expect(snr(w, q, from, to), `${name} expert ${e}`).toBeGreaterThanOrEqual(snr(w, int8, from, to) - 0.1);
        }
      }
      // the decompressed model's outputs on tokens it never saw
      const back = join(dir, `moe-back-${routed}.onnx`);
      await decompressArchive(out, back);
      const tokens = 32;
      const x = gaussian(tokens * D, 77, 1);
      const [want, got] = [await run(model, x, tokens), await run(back, x, tokens)];
      expect(snr(want, got)).toBeGreaterThan(30);
      const restored = openModel(back);
      expect(restored.tensors.find((t) => t.name === 'experts.w1')!.shape).toEqual([E, D, H]);
      restored.close();
    });

  it('a reader refuses a stack in an archive before version 7, or one whose matrices do not fill the shape', async () => {
    const model = join(dir, 'moe2.onnx');
    writeFileSync(model, moeModel().bytes);
    const good = join(dir, 'moe2.nnm');
    await compressModel(model, good, { check: false });
    const { manifest, entries } = readArchive(good);
    const older = join(dir, 'older.nnm');
    writeArchive(older, entries, { ...manifest, version: 6 });
    expect(() => new Archive(older)).toThrow(CorruptArchiveError);
    expect(() => new Archive(older)).toThrow(/stack of matrices needs version 7/);
    const tensors = manifest.tensors.map((t) =>
      t.name === 'experts.w1'
        ? { ...t, layout: { kind: 'stack' as const, batch: 1e9, nin: D, nout: H, order: 'in_out' as const } }
        : t,
    );
    const huge = join(dir, 'huge.nnm');
    writeArchive(huge, entries, { ...manifest, tensors });
    expect(() => new Archive(huge)).toThrow(/layout does not match the shape/);
    // a stack of 64M 1 × 1 matrices that does fill its shape: refused on its plane count, before 64M plane shapes
    const many = 2 ** 26;
    const crafted = manifest.tensors.map((t) =>
      t.name === 'experts.w1'
        ? {
            ...t,
            shape: [many, 1, 1],
            layout: { kind: 'stack' as const, batch: many, nin: 1, nout: 1, order: 'in_out' as const },
          }
        : t,
    );
    const hostile = join(dir, 'hostile.nnm');
    writeArchive(hostile, entries, { ...manifest, tensors: crafted });
    expect(() => new Archive(hostile)).toThrow(/a stack of 67108864 matrices with 8 planes/);
  });

  it('safetensors: experts stacked by name, as Llama 4 stores them ([E, in, out]) or as Linear weights ([E, out, in])', async () => {
    const named = (name: string, shape: number[]) =>
      classifyTensor({ key: name, name, dtype: 'float32', shape, uses: [], location: '' }, 'safetensors');
    expect(named('model.layers.0.feed_forward.experts.gate_up_proj', [16, 512, 2048]).layout).toEqual({
      kind: 'stack',
      batch: 16,
      nin: 512,
      nout: 2048,
      order: 'in_out',
    });
    expect(named('layers.0.moe.experts.w1.weight', [8, 256, 64]).layout).toEqual({
      kind: 'fc',
      nout: 8 * 256,
      nin: 64,
      order: 'out_in',
    });
    // not named as experts, but no kernel is that wide (gpt-oss's original `mlp.mlp1_weight` [E, 2H, D]): E Linear weights
    expect(named('block.0.mlp.mlp1_weight', [8, 768, 384]).layout).toEqual({
      kind: 'fc',
      nout: 8 * 768,
      nin: 384,
      order: 'out_in',
    });
    // a Conv1d kernel stays a kernel; an expert's bias or norm is not a matrix
    expect(named('encoder.conv1.weight', [256, 80, 3]).layout?.kind).toBe('conv');
    expect(named('mlp.experts.gate_up_proj_bias', [32, 5760]).role).toBe('other');
    expect(named('mlp.experts.norm', [8, 64, 1]).role).toBe('other');

    // end to end: four experts of scales 0.3…3, each at least as good as int8 per expert and column
    const [experts, k, n] = [4, 128, 96];
    const data = new Float32Array(experts * k * n);
    for (let e = 0; e < experts; e++) data.set(gaussian(k * n, 300 + e, 0.3 * 10 ** (e / 3) * 0.05), e * k * n);
    const file = join(dir, 'experts.safetensors');
    writeSafetensors(file, { 'model.layers.0.feed_forward.experts.down_proj': { shape: [experts, k, n], data } });
    const out = join(dir, 'experts.nnm');
    await compressModel(file, out);
    const a = new Archive(out);
    expect(a.manifest.tensors[0].layout).toMatchObject({ kind: 'stack', batch: experts });
    const q = [...(await decodeAllTensors(a)).values()][0];
    a.close();
    const int8 = int8PerExpertColumn(data, experts, k, n);
    for (let e = 0; e < experts; e++)
      expect(snr(data, q, e * k * n, (e + 1) * k * n), `expert ${e}`).toBeGreaterThanOrEqual(
        snr(data, int8, e * k * n, (e + 1) * k * n) - 0.1,
      );
  });
});
