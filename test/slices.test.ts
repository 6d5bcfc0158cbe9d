/**
 * Slices: a tensor larger than `sliceWeights` is coded as blocks of its leading dimension, each read by
 * offset and coded on its own, so memory follows the slice, not the tensor. With per-channel ranges an
 * [out, in] matrix sliced by output rows quantizes exactly as it does whole.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  Archive,
  compressModel,
  CorruptArchiveError,
  decodeAllTensors,
  decompressArchive,
  openModel,
  rebuildModel,
} from '../src/index.js';
import { SafetensorsReader } from '../src/formats/safetensors/reader.js';
import { sliceLayout } from '../src/layout/planes.js';
import { buildViewer } from '../src/cli/view.js';
import { classifyTensor } from '../src/roles/classify.js';
import type { Manifest } from '../src/archive/manifest.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { tempDir } from './helpers/tmp.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { gaussian } from './helpers/random.js';

const dir = tempDir();
const model = join(dir, 'm.safetensors');
writeSafetensorsFixture(model);
const MATRICES = [
  'encoder.layers.0.attn.q_proj.weight',
  'encoder.layers.0.mlp.fc1.weight',
  'encoder.layers.0.mlp.fc2.weight',
  'encoder.conv.weight',
];

describe('slices', () => {
  it('every matrix of more weights than sliceWeights is sliced by rows, and decodes to exactly the whole-coded values', async () => {
    const sliced = await compressModel(model, join(dir, 's.nnm'), { sliceWeights: 1024, jobs: 1 });
    const whole = await compressModel(model, join(dir, 'w.nnm'), { jobs: 1 });
    for (const name of MATRICES) {
      const t = sliced.manifest.tensors.find((x) => x.name === name)!;
      expect(t.slices?.length, name).toBeGreaterThan(1);
      expect(t.planes).toBeUndefined();
      expect(t.codec).toBeUndefined();
      // contiguous from row 0 to the end, none over 1024 weights
      let next = 0;
      const rowWeights = t.shape.slice(1).reduce((a, b) => a * b, 1);
      for (const s of t.slices!) {
        expect(s.row).toBe(next);
        expect(s.rows * rowWeights).toBeLessThanOrEqual(1024);
        next += s.rows;
      }
      expect(next).toBe(t.shape[0]);
      // the merged statistics are the whole tensor's (the same errors, summed over slices)
      const w = whole.manifest.tensors.find((x) => x.name === name)!;
      expect(w.slices).toBeUndefined();
      expect(t.stats!.maxAbs).toBe(w.stats!.maxAbs);
      expect(t.stats!.snrDb).toBeCloseTo(w.stats!.snrDb, 9);
    }
    const a = await decodeAllTensors(new Archive(join(dir, 's.nnm')));
    const b = await decodeAllTensors(new Archive(join(dir, 'w.nnm')));
    for (const name of MATRICES) expect(a.get(name)).toEqual(b.get(name));
    // so the streamed safetensors written slice by slice is the whole-coded archive's, byte for byte
    await decompressArchive(join(dir, 's.nnm'), join(dir, 's.safetensors'), { jobs: 2 });
    await decompressArchive(join(dir, 'w.nnm'), join(dir, 'w.safetensors'), { jobs: 1 });
    expect(readFileSync(join(dir, 's.safetensors')).equals(readFileSync(join(dir, 'w.safetensors')))).toBe(true);
    // and the in-memory rebuild agrees with the streamed one
    expect(
      Buffer.from(await rebuildModel(new Archive(join(dir, 's.nnm')))).equals(readFileSync(join(dir, 's.safetensors'))),
    ).toBe(true);
  });

  it('slices are jobs of their own and the archive is byte-identical for any job count', async () => {
    await compressModel(model, join(dir, 'j1.nnm'), { sliceWeights: 1024, jobs: 1, codec: 'webp', lossless: true });
    await compressModel(model, join(dir, 'j2.nnm'), { sliceWeights: 1024, jobs: 2, codec: 'webp', lossless: true });
    expect(readFileSync(join(dir, 'j1.nnm')).equals(readFileSync(join(dir, 'j2.nnm')))).toBe(true);
    // the workers collect their garbage through a V8 flag set and cleared at once: the host never gets `gc`
    expect(runInNewContext('typeof gc')).toBe('undefined');
  });

  it('each slice keeps a per-tensor SNR target, so the whole tensor does', async () => {
    const r = await compressModel(model, join(dir, 'snr.nnm'), { sliceWeights: 1024, targetSnr: 30, jobs: 1 });
    for (const name of MATRICES) {
      const t = r.manifest.tensors.find((x) => x.name === name)!;
      for (const s of t.slices!) expect(s.stats!.snrDb).toBeGreaterThanOrEqual(30);
      expect(t.stats!.snrDb).toBeGreaterThanOrEqual(30);
    }
    await decompressArchive(join(dir, 'snr.nnm'), join(dir, 'snr.safetensors'));
    const back = new SafetensorsReader(join(dir, 'snr.safetensors'));
    const orig = new SafetensorsReader(model);
    for (const name of MATRICES) {
      const [x, y] = [orig.read(name), back.read(name)];
      let se = 0;
      let sp = 0;
      for (let i = 0; i < x.length; i++) {
        se += (x[i] - y[i]) ** 2;
        sp += x[i] ** 2;
      }
      expect(10 * Math.log10(sp / se)).toBeGreaterThanOrEqual(30);
    }
    back.close();
    orig.close();
  });

  it('--target-bpw on safetensors measures candidates slice by slice and meets the budget', async () => {
    const r = await compressModel(model, join(dir, 'bpw.nnm'), { sliceWeights: 3000, targetBpw: 6, jobs: 1 });
    expect(r.manifest.tensors.filter((t) => t.slices)).toHaveLength(3);
    // on this 20 k-weight fixture each extra slice costs ~0.1 bits/weight of entries and ranges; the budget still holds
    expect(r.bitsPerWeight).toBeLessThanOrEqual(6);
    expect(r.bitsPerWeight).toBeGreaterThan(5.5);
    for (const name of MATRICES) expect(r.manifest.tensors.find((t) => t.name === name)!.stats!.snrDb, name).toBeGreaterThan(15);
  });

  it('ONNX tensors slice too (rows copied out of the in-memory model), in_out matrices by input rows', async () => {
    const f = join(dir, 'm.onnx');
    writeFileSync(f, mixedModel().bytes);
    const r = await compressModel(f, join(dir, 'o.nnm'), { sliceWeights: 256, codec: 'png', jobs: 1 });
    const sliced = r.manifest.tensors.filter((t) => t.slices);
    expect(sliced.some((t) => t.layout!.kind === 'fc' && t.layout!.order === 'in_out')).toBe(true);
    const reader = openModel(f);
    const values = await decodeAllTensors(new Archive(join(dir, 'o.nnm')));
    for (const t of sliced) {
      const x = reader.read(t.key);
      const y = values.get(t.key)!;
      expect(y.length).toBe(x.length);
      let worst = 0;
      for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
      expect(worst).toBeLessThanOrEqual(t.stats!.maxAbs * (1 + 1e-6));
      expect(t.stats!.snrDb).toBeGreaterThan(30);
    }
    // the rebuilt ONNX model reads back
    await decompressArchive(join(dir, 'o.nnm'), join(dir, 'o.onnx'));
    expect(openModel(join(dir, 'o.onnx')).tensors.length).toBe(reader.tensors.length);
  });

  it('a large skeleton (kept tensors) is written and read in parts, one part in memory at a time', async () => {
    // q_proj kept by a rule: 12 KB of kept float32 in a skeleton cut into 2 KB parts
    const rules = [{ match: '*q_proj*', role: 'other' as const }];
    const r = await compressModel(model, join(dir, 'parts.nnm'), { rules, skeletonPartBytes: 2048, halfKept: false, jobs: 1 });
    const parts = r.manifest.skeletonParts!;
    expect(parts.length).toBeGreaterThan(6);
    expect(parts[0]).toBe(r.manifest.skeleton);
    for (const p of parts.slice(0, -1)) expect(r.manifest.entries[p].bytes).toBe(2048);
    await compressModel(model, join(dir, 'one.nnm'), { rules, halfKept: false, jobs: 1 });
    expect(new Archive(join(dir, 'one.nnm')).manifest.skeletonParts).toBeUndefined();
    // the model rebuilt from parts (streamed and in memory) is the one rebuilt from a single skeleton entry
    await decompressArchive(join(dir, 'parts.nnm'), join(dir, 'parts.safetensors'), { jobs: 2 });
    await decompressArchive(join(dir, 'one.nnm'), join(dir, 'one.safetensors'), { jobs: 1 });
    const one = readFileSync(join(dir, 'one.safetensors'));
    expect(readFileSync(join(dir, 'parts.safetensors')).equals(one)).toBe(true);
    expect(Buffer.from(await rebuildModel(new Archive(join(dir, 'parts.nnm')))).equals(one)).toBe(true);
    // and the kept tensor is exact
    const back = new SafetensorsReader(join(dir, 'parts.safetensors'));
    const orig = new SafetensorsReader(model);
    expect(back.read(MATRICES[0])).toEqual(orig.read(MATRICES[0]));
    back.close();
    orig.close();
  });

  it('inspect and view show a sliced tensor slice by slice, each with its error map', async () => {
    const files = await buildViewer(join(dir, 's.nnm'), { model });
    const page = Buffer.from(files.get('/')!.body).toString('utf8');
    const q = new Archive(join(dir, 's.nnm')).manifest.tensors.find((t) => t.name === MATRICES[0])!;
    expect(q.slices).toHaveLength(4);
    // one card per slice, named by its rows, and one error map per slice plane
    for (const sl of q.slices!) expect(page).toContain(`${MATRICES[0]} [rows ${sl.row}–${sl.row + sl.rows - 1}]`);
    const maps = [...files.keys()].filter((k) => k.startsWith('/error/'));
    expect(maps.length).toBe(4 + 6 + 7 + 2);
  });

  it('a duplicate of a sliced tensor is stored once and written back from the slices of the first', async () => {
    const values = gaussian(40 * 64, 77, 0.05);
    const f = join(dir, 'dup.safetensors');
    const tensors: Array<[string, number[], Float32Array]> = [
      ['a.weight', [40, 64], values],
      ['b.bias', [7], gaussian(7, 78, 0.1)],
      ['c.weight', [40, 64], values],
    ];
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [name, shape, v] of tensors) {
      header[name] = { dtype: 'F32', shape, data_offsets: [off, off + v.byteLength] };
      off += v.byteLength;
    }
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(f, Buffer.concat([len, json, ...tensors.map(([, , v]) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))]));
    const r = await compressModel(f, join(dir, 'dup.nnm'), { sliceWeights: 1024, halfKept: false, jobs: 1 });
    const [a, , c] = r.manifest.tensors;
    expect(a.slices).toHaveLength(3);
    expect(c.sameAs).toBe('a.weight');
    expect(c.slices).toBeUndefined();
    await decompressArchive(join(dir, 'dup.nnm'), join(dir, 'dup-back.safetensors'), { jobs: 2 });
    const back = new SafetensorsReader(join(dir, 'dup-back.safetensors'));
    expect(back.read('c.weight')).toEqual(back.read('a.weight'));
    expect(back.read('b.bias')).toEqual(tensors[1][2]);
    expect(statSync(join(dir, 'dup-back.safetensors')).size).toBe(statSync(f).size);
    back.close();
  });

  it('readRows reads only the rows asked for, and refuses rows outside the tensor', () => {
    const r = new SafetensorsReader(model);
    for (const name of MATRICES) {
      const t = r.tensors.find((x) => x.name === name)!;
      const w = t.shape.slice(1).reduce((a, b) => a * b, 1);
      expect(r.readRows(name, 3, 5)).toEqual(r.read(name).subarray(3 * w, 8 * w));
    }
    expect(() => r.readRows(MATRICES[0], 60, 5)).toThrow(/rows 60\+5 outside/);
    expect(() => r.readRows(MATRICES[0], -1, 1)).toThrow(/outside/);
    r.close();
  });

  it('sliceLayout: a block of output channels of [out, in], of input rows of [in, out], of kernels', () => {
    expect(sliceLayout({ kind: 'fc', nout: 64, nin: 48, order: 'out_in' }, [64, 48], 10)).toEqual({
      kind: 'fc',
      nout: 10,
      nin: 48,
      order: 'out_in',
    });
    expect(sliceLayout({ kind: 'fc', nin: 64, nout: 48, order: 'in_out' }, [64, 48], 10)).toEqual({
      kind: 'fc',
      nin: 10,
      nout: 48,
      order: 'in_out',
    });
    // rank 3 [a, b, c] as an fc matrix of a·b rows: a row block of a is a block of b·rows matrix rows
    expect(sliceLayout({ kind: 'fc', nout: 12, nin: 5, order: 'out_in' }, [4, 3, 5], 2)).toMatchObject({ nout: 6 });
    expect(sliceLayout({ kind: 'conv', nfout: 16, nfin: 8, kx: 3, ky: 3, order: 'out_in' }, [16, 8, 3, 3], 4)).toMatchObject({
      nfout: 4,
      nfin: 8,
    });
    expect(sliceLayout({ kind: 'conv', nfin: 16, nfout: 8, kx: 3, ky: 3, order: 'in_out' }, [16, 8, 3, 3], 4)).toMatchObject({
      nfin: 4,
      nfout: 8,
    });
    // a stack of matrices by whole matrices ([8, 32, 16] experts, two at a time; [2, 4, 32, 16] by the first axis)
    expect(sliceLayout({ kind: 'stack', batch: 8, nin: 32, nout: 16, order: 'in_out' }, [8, 32, 16], 2)).toEqual({
      kind: 'stack',
      batch: 2,
      nin: 32,
      nout: 16,
      order: 'in_out',
    });
    expect(sliceLayout({ kind: 'stack', batch: 8, nin: 32, nout: 16, order: 'in_out' }, [2, 4, 32, 16], 1)).toMatchObject({
      batch: 4,
    });
    // recurrent layouts are not sliced; nor is a row count outside the tensor
    expect(sliceLayout({ kind: 'lstm', gates: 4, directions: 1, hidden: 8, nin: 4 }, [1, 32, 4], 1)).toBeUndefined();
    expect(sliceLayout({ kind: 'fc', nout: 64, nin: 48, order: 'out_in' }, [64, 48], 65)).toBeUndefined();
  });

  it('a token embedding is a matrix coded with one range per token', () => {
    const c = classifyTensor(
      { key: 'e', name: 'model.embed_tokens.weight', dtype: 'float32', shape: [1000, 64], uses: [], location: '' },
      'safetensors',
    );
    expect(c.role).toBe('fc');
    expect(c.layout).toEqual({ kind: 'fc', nout: 1000, nin: 64, order: 'out_in' });
    expect(
      classifyTensor(
        { key: 'n', name: 'embed.norm.weight', dtype: 'float32', shape: [64, 64], uses: [], location: '' },
        'safetensors',
      ).role,
    ).toBe('other');
  });

  it('in an ONNX graph, a Gather table is an embedding whatever its name: one range per row', () => {
    const gather = { op: 'Gather', inputIndex: 0, attrs: {} };
    const c = classifyTensor(
      { key: 't', name: 'onnx::Gather_17', dtype: 'float32', shape: [30522, 64], uses: [gather], location: '' },
      'onnx',
    );
    expect(c.role).toBe('fc');
    expect(c.layout).toEqual({ kind: 'fc', nout: 30522, nin: 64, order: 'out_in' });
    // the indices side of a Gather, or a vector table, is not
    const idx = { op: 'Gather', inputIndex: 1, attrs: {} };
    expect(
      classifyTensor({ key: 'i', name: 'pos', dtype: 'float32', shape: [64, 64], uses: [idx], location: '' }, 'onnx').role,
    ).toBe('other');
    expect(
      classifyTensor({ key: 'v', name: 'emb', dtype: 'float32', shape: [4096], uses: [gather], location: '' }, 'onnx').role,
    ).toBe('other');
  });

  it('hostile slice records: gaps, overlaps, missing slices and bad fields are typed errors', async () => {
    const { manifest, entries } = readArchive(join(dir, 's.nnm'));
    const withSlices = (edit: (m: Manifest) => void): string => {
      const m = structuredClone(manifest);
      edit(m);
      const f = join(dir, 'hostile.nnm');
      writeArchive(f, entries, m);
      return f;
    };
    const first = (m: Manifest) => m.tensors.find((t) => t.slices)!;
    // a ZIP entry of the archive (version 4: a small skeleton is a pack member), one that is not a pack if any
    const zipEntry = (m: Manifest): string => {
      const names = Object.keys(m.entries);
      return names.find((n) => !m.packs || !Object.hasOwn(m.packs, n)) ?? names[0];
    };
    const cases: Array<[string, (m: Manifest) => void, RegExp]> = [
      ['a gap', (m) => (first(m).slices![1].row += 1), /slices do not tile/],
      ['an overlap', (m) => (first(m).slices![1].row -= 1), /slices do not tile/],
      ['a missing last slice', (m) => first(m).slices!.pop(), /slices do not tile/],
      ['rows past the end', (m) => (first(m).slices!.at(-1)!.rows += 1), /slices do not tile/],
      ['a slice layout of the wrong size', (m) => ((first(m).slices![0].layout as { nout: number }).nout += 1), /layout/],
      ['slices next to planes', (m) => (first(m).planes = first(m).slices![0].planes), /bad slices/],
      ['slices that are not a list', (m) => ((first(m) as unknown as { slices: unknown }).slices = { 0: 1 }), /bad slices/],
      ['a tile entry that is not listed', (m) => (first(m).slices![0].planes[0].tiles[0].entry = 'nope.png'), /not listed/],
    ];
    cases.push(
      ['skeleton parts that do not start with the skeleton', (m) => (m.skeletonParts = ['x']), /bad skeleton parts/],
      ['an entry record without a size', (m) => delete (m.entries[zipEntry(m)] as { bytes?: number }).bytes, /bad entry record/],
      // (a pack's size is also the sum of its members')
      ['an entry whose size is not its data', (m) => (m.entries[zipEntry(m)].bytes += 1), /size mismatch|add up/],
    );
    for (const [what, edit, message] of cases) {
      const f = withSlices(edit);
      const err = await decompressArchive(f, join(dir, 'hostile.safetensors')).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(CorruptArchiveError);
      expect((err as Error).message, what).toMatch(message);
    }
    // a slice cannot smuggle in fields of a tensor record: sameAs inside a slice is not read
    const f = withSlices((m) => ((first(m).slices![0] as unknown as Record<string, unknown>).sameAs = 'encoder.conv.weight'));
    await decompressArchive(f, join(dir, 'smuggled.safetensors'));
    expect(readFileSync(join(dir, 'smuggled.safetensors')).equals(readFileSync(join(dir, 's.safetensors')))).toBe(true);
  });
});
