/**
 * Output channels pruned to zeros (rows of an [out, in] matrix or kernel, columns of an [in, out] one) are left out
 * of its planes and put back by the decoder (format version 5, `zeroChannels`): they cost nothing but their bit in a
 * mask, every other channel is coded exactly as it would be without them, and a mask that is not one is refused.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import {
  Archive,
  CorruptArchiveError,
  NonFiniteWeightError,
  compressModel,
  decodeAllTensors,
  decompressArchive,
  openModel,
} from '../src/index.js';
import {
  type ChannelView,
  expandChannels,
  gatherChannels,
  keptChannels,
  maskKeeps,
  zeroChannelMask,
} from '../src/layout/channels.js';
import type { Manifest } from '../src/archive/manifest.js';
import { planTensors } from '../src/pipeline/plan.js';
import type { CodedPlan } from '../src/pipeline/stages.js';
import { measureToProbe, restoredAtCandidate } from '../src/pipeline/measure.js';
import { buildViewer } from '../src/cli/view.js';
import { inspectPath } from '../src/cli/inspect.js';
import { sharp } from '../src/codecs/image/sharp-io.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';
import { writeSafetensors } from './helpers/safetensors-fixture.js';

const dir = tempDir();

/** `data` (rows × inner) with the rows `pruned` picks set to +0.0. */
function pruneRows(data: Float32Array, rows: number, pruned: (r: number) => boolean): Float32Array {
  return pruneChannels(data, { outer: 1, channels: rows, inner: data.length / rows }, pruned);
}

const bitsOf = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** A tensor of `view` with the channels `pruned` picks set to +0.0 in every outer block. */
function pruneChannels(data: Float32Array, view: ChannelView, pruned: (c: number) => boolean): Float32Array {
  const { outer, channels, inner } = view;
  const out = data.slice();
  for (let a = 0; a < outer; a++)
    for (let c = 0; c < channels; c++) if (pruned(c)) out.fill(0, (a * channels + c) * inner, (a * channels + c + 1) * inner);
  return out;
}

describe('output channels of zeros: the mask and its inverse', () => {
  for (const view of [
    { outer: 1, channels: 37, inner: 5 }, // an [out, in] matrix or kernel
    { outer: 6, channels: 37, inner: 1 }, // an [in, out] matrix
    { outer: 4, channels: 37, inner: 9 }, // an [in, out, 3, 3] kernel
  ])
    it(`finds channels of +0.0 only, and puts kept ones back in place in every output dtype: [${view.outer}, ${view.channels}, ${view.inner}]`, () => {
      const { outer, channels, inner } = view;
      const n = outer * channels * inner;
      const data = pruneChannels(gaussian(n, 3, 1), view, (c) => c % 3 === 0 || c === 36);
      data.fill(-0, 4 * inner, 5 * inner); // a channel holding −0.0 is not a channel of +0.0
      data[(outer - 1) * channels * inner + 4 * inner] = 0;
      data[((outer - 1) * channels + 7) * inner] = 0; // nor is one with a zero
      if (inner > 1) data[7 * inner + 1] = 0;
      const mask = zeroChannelMask(data, view)!;
      const kept = keptChannels(mask, channels);
      expect([...kept].filter((c) => c % 3 === 0 || c === 36)).toEqual([]);
      expect(kept).toContain(4);
      expect(kept).toContain(7);
      expect(maskKeeps(mask, channels)).toBe(kept.length);
      // where −0.0 counts as zero (grids that decode every zero to +0.0), a channel of ±0.0 is left out too
      const signless = zeroChannelMask(data, view, true)!;
      if (outer === 1) expect([...keptChannels(signless, channels)]).toEqual([...kept].filter((c) => c !== 4));
      else expect([...signless]).toEqual([...mask]);
      expect(kept.length).toBe(channels - 13); // channels 0, 3, …, 36
      // the planes' tensor, then put back in place over it: bit for bit the original
      const gathered = gatherChannels(data, view, kept);
      expect(gathered.length).toBe(outer * kept.length * inner);
      const out = new Float32Array(n).fill(Number.NaN); // a reused buffer's leftovers must not survive
      out.set(gathered);
      expandChannels(out, mask, view);
      expect(Buffer.from(out.buffer).equals(Buffer.from(data.buffer))).toBe(true);
      const halves = new Uint16Array(n).fill(0x7e00);
      halves.set(Uint16Array.from(gathered, (_v, i) => i + 1));
      expandChannels(halves, mask, view);
      for (let a = 0; a < outer; a++)
        for (let c = 0; c < channels; c++) {
          const k = kept.indexOf(c);
          for (let i = 0; i < inner; i++)
            expect(halves[(a * channels + c) * inner + i]).toBe(k < 0 ? 0 : (a * kept.length + k) * inner + i + 1);
        }
      // none, or nothing but: no mask (an all-zero tensor codes to next to nothing as it is)
      expect(zeroChannelMask(gaussian(n, 4, 1), view)).toBeUndefined();
      expect(zeroChannelMask(new Float32Array(n), view)).toBeUndefined();
      // a mask that is not one: wrong length, a bit past the last channel, every channel left out
      expect(maskKeeps(mask.subarray(1), channels)).toBeUndefined();
      expect(maskKeeps(Uint8Array.from([...mask.subarray(0, 4), mask[4] | 0x80]), channels)).toBeUndefined();
      expect(maskKeeps(Uint8Array.from([255, 255, 255, 255, 31]), channels)).toBeUndefined();
    });
});

describe('output channels pruned to zeros', () => {
  const out = 192;
  const inn = 96;
  const dense = gaussian(out * inn, 21, 0.02);
  const pruned = pruneRows(dense, out, (r) => (r * 7919) % 10 < 3); // 30 % of the rows, spread
  const file = join(dir, 'pruned.safetensors');
  const denseFile = join(dir, 'dense.safetensors');
  writeSafetensors(file, {
    'layers.0.fc.weight': { shape: [out, inn], data: pruned },
    'layers.0.half.weight': { shape: [out, inn], data: pruned, dtype: 'float16' },
  });
  writeSafetensors(denseFile, {
    'layers.0.fc.weight': { shape: [out, inn], data: dense },
    'layers.0.half.weight': { shape: [out, inn], data: dense, dtype: 'float16' },
  });

  for (const [label, options] of [
    ['default', {}],
    ['step grid', { relStep: 0.25 }],
    ['16-bit codes', { bits: 16 }],
    ['sliced', { sliceWeights: 4096 }],
  ] as const)
    it(`${label}: are left out of the planes, come back as +0.0, and leave every other row's values as they were`, async () => {
      const a = join(dir, `pruned-${label}.nnm`);
      const r = await compressModel(file, a, { jobs: 1, ...options });
      const d = await compressModel(denseFile, join(dir, `dense-${label}.nnm`), { jobs: 1, ...options });
      expect(r.manifest.version).toBe(5);
      for (const t of r.manifest.tensors) {
        const parts = t.slices ?? [t];
        expect(
          parts.every((p) => typeof p.zeroChannels === 'string'),
          t.name,
        ).toBe(true);
        // the planes hold the kept rows only
        const planeColumns = parts.reduce((n, p) => n + p.planes![0].cols, 0);
        expect(planeColumns, t.name).toBeLessThan(0.75 * out);
      }
      const restored = await decodeAllTensors(a);
      const reference = await decodeAllTensors(join(dir, `dense-${label}.nnm`));
      for (const key of ['layers.0.fc.weight', 'layers.0.half.weight']) {
        const got = bitsOf(restored.get(key)!);
        const ref = bitsOf(reference.get(key)!);
        for (let row = 0; row < out; row++) {
          const zero = pruned[row * inn] === 0 && pruned.subarray(row * inn, (row + 1) * inn).every((v) => v === 0);
          for (let i = row * inn; i < (row + 1) * inn; i++)
            if (got[i] !== (zero ? 0 : ref[i])) expect([key, row, i]).toBe('equal');
        }
      }
      // the pruned model's archive costs ~70 % of the dense one's (its rows' share), not what a column of
      // zero codes costs
      expect(statSizes(a)).toBeLessThan(0.76 * statSizes(join(dir, `dense-${label}.nnm`)));
      expect(d.manifest.version).toBeLessThan(5);
    });

  it('a layer grid and rate control measure and code the same rows: zeros exact, the budget met', async () => {
    for (const [label, options] of [
      ['layer', { range: 'layer' }],
      ['layer step', { range: 'layer', relStep: 0.25 }],
      ['budget', { targetBpw: 4 }],
    ] as const) {
      const a = join(dir, `pruned-${label}.nnm`);
      const r = await compressModel(file, a, { jobs: 1, ...options });
      const d = await compressModel(denseFile, join(dir, `dense-${label}.nnm`), { jobs: 1, ...options });
      expect(r.manifest.version, label).toBe(5);
      const restored = await decodeAllTensors(a);
      for (const [key, v] of restored)
        for (let row = 0; row < out; row++)
          if (pruned.subarray(row * inn, (row + 1) * inn).every((x) => x === 0))
            expect(
              bitsOf(v.subarray(row * inn, (row + 1) * inn)).every((b) => b === 0),
              `${label} ${key} ${row}`,
            ).toBe(true);
      const bpw = (m: typeof r) => (statSizes(m === r ? a : join(dir, `dense-${label}.nnm`)) * 8) / (2 * out * inn);
      if (label === 'budget') {
        // both at the budget; the pruned model's rows get the bits its rows of zeros no longer take
        expect(bpw(r)).toBeLessThanOrEqual(4);
        expect(bpw(r)).toBeGreaterThan(3.8);
        for (const t of r.manifest.tensors) {
          const dense = d.manifest.tensors.find((x) => x.key === t.key)!;
          expect(t.stats!.snrDb, t.name).toBeGreaterThan(dense.stats!.snrDb + 5);
        }
      } else expect(bpw(r), label).toBeLessThan(0.76 * bpw(d));
    }
  });

  it('decompress writes the model file with its zeros, in both dtypes, whole and sliced', async () => {
    for (const label of ['default', 'sliced']) {
      const a = join(dir, `pruned-${label}.nnm`);
      const restoredFile = join(dir, `restored-${label}.safetensors`);
      await decompressArchive(a, restoredFile, { jobs: 2 });
      const decoded = await decodeAllTensors(a);
      const model = openModel(restoredFile);
      try {
        for (const key of ['layers.0.fc.weight', 'layers.0.half.weight']) {
          const v = model.read(key);
          for (let row = 0; row < out; row++)
            if (pruned.subarray(row * inn, (row + 1) * inn).every((x) => x === 0))
              expect(
                bitsOf(v.subarray(row * inn, (row + 1) * inn)).every((b) => b === 0),
                `${key} row ${row}`,
              ).toBe(true);
          // the file's float32 values are the decoder's
          if (key === 'layers.0.fc.weight')
            expect(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(decoded.get(key)!.buffer))).toBe(true);
        }
      } finally {
        model.close();
      }
    }
  });

  it('inspect says how many output channels of zeros each tensor left out (human and --json)', async () => {
    const a = join(dir, 'pruned-sliced.nnm');
    const printed: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void printed.push(args.join(' ')));
    try {
      await inspectPath(a, { json: true });
      await inspectPath(a);
    } finally {
      spy.mockRestore();
    }
    const info = JSON.parse(printed[0]) as { tensors: Array<{ name: string; zeroChannels?: number }> };
    const zeros = [...Array(out).keys()].filter((r) => pruned.subarray(r * inn, (r + 1) * inn).every((v) => v === 0)).length;
    expect(zeros).toBeGreaterThan(0.2 * out);
    expect(info.tensors.map((t) => t.zeroChannels)).toEqual([zeros, zeros]);
    expect(printed.slice(1).join('\n')).toContain(`(${zeros} output channels of zeros left out)`);
  });

  it("the viewer's error maps are of the channels the planes hold", async () => {
    const files = await buildViewer(join(dir, 'pruned-default.nnm'), { model: file });
    const maps = [...files.keys()].filter((k) => k.startsWith('/error/'));
    expect(maps.length).toBe(2);
    for (const k of maps) {
      const { data, info } = await sharp(Buffer.from(files.get(k)!.body))
        .raw()
        .toBuffer({ resolveWithObject: true });
      expect(info.width).toBeLessThan(0.75 * out);
      // every column is a kept row, whose weights all have some error: a row of zeros shown there would be black
      for (let c = 0; c < info.width; c++) {
        let max = 0;
        for (let r = 0; r < info.height; r++) max = Math.max(max, data[(r * info.width + c) * info.channels]);
        expect(max, `${k} column ${c}`).toBeGreaterThan(0);
      }
    }
    // and each card says how many channels its planes leave out
    const zeros = [...Array(out).keys()].filter((r) => pruned.subarray(r * inn, (r + 1) * inn).every((v) => v === 0)).length;
    const html = new TextDecoder().decode(files.get('/')!.body);
    expect(html.split(`${zeros} output channels of zeros left out of the planes`).length - 1).toBe(2);
  });

  it('a mask that is not one, or one in an archive before version 5, is refused as corrupt', () => {
    const a = join(dir, 'pruned-default.nnm');
    const { manifest, entries } = readArchive(a);
    const bad = (edit: (m: Manifest) => void, why: RegExp): void => {
      const m = JSON.parse(JSON.stringify(manifest)) as Manifest;
      edit(m);
      const f = join(dir, 'hostile.nnm');
      writeArchive(f, entries, m);
      expect(() => new Archive(f).close()).toThrow(CorruptArchiveError);
      expect(() => new Archive(f).close()).toThrow(why);
    };
    const fc = (m: Manifest) => m.tensors.find((t) => t.key === 'layers.0.fc.weight')!;
    const mask = /tensor layers\.0\.fc\.weight: manifest: bad zero channels/;
    bad((m) => void (fc(m).zeroChannels = fc(m).zeroChannels!.slice(4)), mask); // too short
    bad((m) => void (fc(m).zeroChannels = Buffer.alloc(out / 8, 255).toString('base64')), mask); // every channel
    bad((m) => void (fc(m).zeroChannels = Buffer.alloc(out / 8, 0).toString('base64')), mask); // none: the layout no longer fits
    bad((m) => void (fc(m).zeroChannels = 'not base64!'), mask);
    bad((m) => void (m.version = 4), /zero channels in an archive before version 5/);
    bad((m) => void ((m.tensors[0] as unknown as Record<string, unknown>).zeroChannels = 7), /bad zero channels/);
    // a slice's mask is checked on its own
    const sliced = readArchive(join(dir, 'pruned-sliced.nnm'));
    const m = JSON.parse(JSON.stringify(sliced.manifest)) as Manifest;
    const slice = m.tensors[0].slices![1];
    slice.zeroChannels = Buffer.alloc(Math.ceil(slice.rows / 8), 255).toString('base64');
    writeArchive(join(dir, 'hostile-slice.nnm'), sliced.entries, m);
    expect(() => new Archive(join(dir, 'hostile-slice.nnm')).close()).toThrow(/slice at row \d+: bad zero channels/);
  });

  it('a convolution pruned by output channels, through the quality gate', async () => {
    // two convolutions of an ONNX model, each with output channels pruned
    const w1 = pruneRows(gaussian(32 * 16 * 9, 31, 0.1), 32, (r) => r % 4 === 1);
    const w2 = pruneRows(gaussian(24 * 32 * 9, 32, 0.06), 24, (r) => r % 5 === 2);
    const model = join(dir, 'convs.onnx');
    writeFileSync(model, twoConvs('convs', { data: w1, shape: [32, 16, 3, 3] }, { data: w2, shape: [24, 32, 3, 3] }));
    const a = join(dir, 'convs.nnm');
    const r = await compressModel(model, a);
    expect(r.manifest.version).toBe(5);
    expect(r.manifest.quality?.checked).toBe(true);
    expect(r.manifest.quality?.passed).toBe(true);
    const coded = r.manifest.tensors.filter((t) => t.layout?.kind === 'conv');
    expect(coded.map((t) => t.planes![0].cols)).toEqual([24 * 3, 19 * 3]);
    const restoredFile = join(dir, 'convs-restored.onnx');
    await decompressArchive(a, restoredFile);
    const restored = openModel(restoredFile);
    try {
      const v1 = restored.read('w1');
      for (let row = 1; row < 32; row += 4)
        expect(bitsOf(v1.subarray(row * 144, (row + 1) * 144)).every((b) => b === 0)).toBe(true);
      expect(v1.subarray(0, 144).some((v) => v !== 0)).toBe(true);
    } finally {
      restored.close();
    }
  });
});

describe('output channels pruned to zeros in an [in, out] matrix (ONNX MatMul)', () => {
  // x [1, 64] → MatMul [64, 96] → Relu → MatMul [96, 40]: PyTorch's Linear as ONNX stores it, [in, out]
  const views = { w1: { outer: 64, channels: 96, inner: 1 }, w2: { outer: 96, channels: 40, inner: 1 } };
  const dense = { w1: gaussian(64 * 96, 41, 0.15), w2: gaussian(96 * 40, 42, 0.1) };
  const pruned = {
    w1: pruneChannels(dense.w1, views.w1, (c) => (c * 31) % 10 < 3),
    w2: pruneChannels(dense.w2, views.w2, (c) => c % 4 === 1),
  };
  const onnxModel = (w: typeof dense): Uint8Array =>
    modelBytes({
      name: 'mlp',
      initializer: [floatTensor('w1', [64, 96], w.w1), floatTensor('w2', [96, 40], w.w2)],
      node: [
        { opType: 'MatMul', input: ['x', 'w1'], output: ['h'] },
        { opType: 'Relu', input: ['h'], output: ['r'] },
        { opType: 'MatMul', input: ['r', 'w2'], output: ['y'] },
      ],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y', [1, 40])],
    });
  const model = join(dir, 'mlp.onnx');
  const denseModel = join(dir, 'mlp-dense.onnx');
  writeFileSync(model, onnxModel(pruned));
  writeFileSync(denseModel, onnxModel(dense));
  const zeroColumns = (key: 'w1' | 'w2'): number[] =>
    [...Array(views[key].channels).keys()].filter((c) => pruned[key].every((v, i) => i % views[key].channels !== c || v === 0));

  it('are left out of the planes as columns, through the quality gate; every other column as without them', async () => {
    const a = join(dir, 'mlp.nnm');
    const r = await compressModel(model, a, { jobs: 1 });
    await compressModel(denseModel, join(dir, 'mlp-dense.nnm'), { jobs: 1 });
    expect(r.manifest.version).toBe(5);
    expect(r.manifest.quality?.checked).toBe(true);
    expect(r.manifest.quality?.passed).toBe(true);
    for (const key of ['w1', 'w2'] as const) {
      const t = r.manifest.tensors.find((x) => x.key === key)!;
      expect(t.layout).toMatchObject({ kind: 'fc', order: 'in_out' });
      expect(t.planes![0].cols).toBe(views[key].channels - zeroColumns(key).length);
    }
    const got = await decodeAllTensors(a);
    const ref = await decodeAllTensors(join(dir, 'mlp-dense.nnm'));
    for (const key of ['w1', 'w2'] as const) {
      const zeros = new Set(zeroColumns(key));
      const g = bitsOf(got.get(key)!);
      const d = bitsOf(ref.get(key)!);
      const c = views[key].channels;
      for (let i = 0; i < g.length; i++) if (g[i] !== (zeros.has(i % c) ? 0 : d[i])) expect([key, i]).toBe('equal');
    }
  });

  it("the probes' restored values put every column back in its place (measureToProbe → restoredAtCandidate)", async () => {
    const reader = await openModel(model);
    try {
      const plan = planTensors(reader, { targetBpw: 5 }).find((p): p is CodedPlan => p.kind === 'coded' && p.entry.key === 'w1')!;
      const values = reader.read('w1');
      const measured = measureToProbe(plan, values, { modes: ['channel'], fine: [] });
      expect(measured.leftOut?.layout).toMatchObject({ kind: 'fc', nout: 96 - zeroColumns('w1').length });
      // the rate counts every weight of the tensor, the rows of zeros too
      expect(measured.rate.weights).toBe(64 * 96);
      const fine = measured.rate.candidates.reduce((a, b) => ((b.relStep ?? 1) < (a.relStep ?? 1) ? b : a));
      const restored = restoredAtCandidate(plan, { ...measured.prepared, leftOut: measured.leftOut }, measured.seeds, fine);
      const zeros = new Set(zeroColumns('w1'));
      let se = 0;
      let sp = 0;
      for (let i = 0; i < values.length; i++) {
        if (zeros.has(i % 96)) expect(bitsOf(restored.subarray(i, i + 1))[0]).toBe(0);
        se += (restored[i] - values[i]) ** 2;
        sp += values[i] ** 2;
      }
      expect(10 * Math.log10(sp / se)).toBeGreaterThan(30);
    } finally {
      reader.close();
    }
  });

  it('rate control probes the model with the columns put back in place, and meets its budget', async () => {
    const a = join(dir, 'mlp-budget.nnm');
    await compressModel(model, a, { jobs: 1, targetBpw: 5 });
    const archive = new Archive(a);
    const manifest = archive.manifest;
    archive.close();
    expect(manifest.version).toBe(5);
    expect(manifest.quality?.passed).toBe(true);
    const got = await decodeAllTensors(a);
    for (const key of ['w1', 'w2'] as const) {
      const c = views[key].channels;
      const zeros = new Set(zeroColumns(key));
      const g = bitsOf(got.get(key)!);
      for (let i = 0; i < g.length; i++) if (zeros.has(i % c) && g[i] !== 0) expect([key, i]).toBe('a zero');
      // the probes measured the restored model: a tensor whose probe saw its columns misplaced would have scored as
      // wrecked and been given the finest grid, not a grid near the budget
      const t = manifest.tensors.find((x) => x.key === key)!;
      expect(t.stats!.snrDb, key).toBeGreaterThan(10);
      expect(t.stats!.snrDb, key).toBeLessThan(40);
    }
    expect(readFileSync(a).length * 8).toBeLessThanOrEqual(5 * (64 * 96 + 96 * 40));
  });
});

describe('output channels of zeros beside other features', () => {
  it('a non-finite weight is named by its index in the file, not among the channels coded', async () => {
    const values = pruneRows(gaussian(64 * 64, 51, 0.05), 64, (r) => r === 0);
    values[133] = Number.NaN;
    const f = join(dir, 'nan.safetensors');
    writeSafetensors(f, { 'layers.0.fc.weight': { shape: [64, 64], data: values } });
    const err = await compressModel(f, join(dir, 'nan.nnm')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteWeightError);
    expect((err as Error).message).toMatch(/weight 133 is NaN/);
  });

  it('channels pruned by multiplying with a mask (±0.0, as torch.nn.utils.prune leaves them) are left out where zeros decode to +0.0', async () => {
    const values = gaussian(96 * 64, 52, 0.05);
    for (let r = 0; r < 96; r += 3) for (let i = r * 64; i < (r + 1) * 64; i++) values[i] *= 0; // −0.0 where negative
    expect(values.some((v) => Object.is(v, -0))).toBe(true);
    const f = join(dir, 'mulzero.safetensors');
    writeSafetensors(f, { 'layers.0.fc.weight': { shape: [96, 64], data: values } });
    for (const bits of [8, 16] as const) {
      const a = join(dir, `mulzero-${bits}.nnm`);
      const r = await compressModel(f, a, { bits });
      expect(r.manifest.tensors[0].planes![0].cols, `${bits} bits`).toBe(64);
      const got = bitsOf((await decodeAllTensors(a)).get('layers.0.fc.weight')!);
      for (let r2 = 0; r2 < 96; r2 += 3) expect(got.subarray(r2 * 64, (r2 + 1) * 64).every((b) => b === 0)).toBe(true);
    }
  });

  it('a grouped kernel with compensation keeps its channels (its statistics are grouped by channel), and is compensated', async () => {
    // a depthwise convolution (32 groups) with two channels of zeros, after a dense one with one
    const w1 = pruneRows(gaussian(32 * 8 * 9, 61, 0.15), 32, (r) => r === 2);
    const w2 = pruneRows(gaussian(32 * 9, 62, 0.3), 32, (r) => r === 3 || r === 7);
    const model = join(dir, 'dw.onnx');
    writeFileSync(model, twoConvs('dw', { data: w1, shape: [32, 8, 3, 3] }, { data: w2, shape: [32, 1, 3, 3] }, 32));
    const r = await compressModel(model, join(dir, 'dw.nnm'), { compensate: true, relStep: 0.5, minFidelity: 0, jobs: 1 });
    const rec = (key: string) => r.manifest.tensors.find((t) => t.key === key)!;
    expect(rec('w1').zeroChannels).toBeDefined();
    expect(rec('w2').zeroChannels).toBeUndefined();
    expect(rec('w2').planes![0].cols).toBe(32 * 3);
    // compensated, not rounded to nearest for statistics that "do not fit"
    expect(r.compensation?.fallback.map((f) => `${f.tensor}: ${f.reason}`)).not.toContainEqual(
      expect.stringMatching(/^w2: .*do not fit/),
    );
    expect(r.compensation?.compensated).toContain('w2');
    const got = await decodeAllTensors(join(dir, 'dw.nnm'));
    for (const c of [3, 7]) expect(bitsOf(got.get('w2')!.subarray(c * 9, c * 9 + 9)).every((b) => b === 0)).toBe(true);
  });
});

/**
 * An ONNX model of two 3×3 convolutions (padding 1) with a Relu between: img [1, cin, 12, 12] → w1 → w2, the second
 * in `group` groups.
 */
function twoConvs(
  name: string,
  w1: { data: Float32Array; shape: number[] },
  w2: { data: Float32Array; shape: number[] },
  group = 1,
): Uint8Array {
  const pads = { name: 'pads', ints: [1, 1, 1, 1], type: 7 };
  return modelBytes({
    name,
    initializer: [floatTensor('w1', w1.shape, w1.data), floatTensor('w2', w2.shape, w2.data)],
    node: [
      { opType: 'Conv', input: ['img', 'w1'], output: ['c1'], attribute: [pads] },
      { opType: 'Relu', input: ['c1'], output: ['r1'] },
      {
        opType: 'Conv',
        input: ['r1', 'w2'],
        output: ['y'],
        attribute: group > 1 ? [pads, { name: 'group', i: group, type: 2 }] : [pads],
      },
    ],
    input: [valueInfo('img', [1, w1.shape[1], 12, 12])],
    output: [valueInfo('y', [1, w2.shape[0], 12, 12])],
  });
}

function statSizes(file: string): number {
  return readFileSync(file).length;
}
