import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, decompressArchive, openModel } from '../src/index.js';
import { findRanges, quantizePlane } from '../src/quantize/uniform.js';
import { entryBytes, entryNames } from '../src/archive/manifest.js';
import { elementCount } from '../src/formats/model.js';
import { gatherPlanes } from '../src/layout/planes.js';
import { MIXED, mixedModel } from './helpers/onnx-fixtures.js';
import { maxAbsDiff, runMixed } from './helpers/ort.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const { bytes, weights } = mixedModel();
const modelFile = join(dir, 'mixed.onnx');
writeFileSync(modelFile, bytes);

describe('ONNX reader', () => {
  it('finds initializers and Constant tensors inside If subgraphs, with their roles', async () => {
    const r = openModel(modelFile);
    const names = r.tensors.map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining(['W1', 'W2', 'Wc', 'Wd', 'lstmW', 'lstmR', 'then_weight', 'else_weight']));
    const { planTensors } = await import('../src/index.js');
    const roles = Object.fromEntries(
      planTensors(r, {}).map((p) => [p.entry.name, [p.role, p.kind === 'coded' ? p.layout : undefined]]),
    );
    expect(roles.W1).toEqual(['fc', { kind: 'fc', nin: 16, nout: 32, order: 'out_in' }]);
    expect(roles.W2).toEqual(['fc', { kind: 'fc', nin: 32, nout: 24, order: 'in_out' }]);
    expect(roles.Wd).toEqual(['conv', { kind: 'conv', nfin: 1, nfout: 32, kx: 3, ky: 3, order: 'out_in' }]);
    expect(roles.lstmR).toEqual(['lstm', { kind: 'lstm', gates: 4, directions: 2, hidden: 20, nin: 20 }]);
    expect(roles.then_weight[0]).toBe('fc');
    expect(roles.b1[0]).toBe('other');
    expect(r.read('W2')).toEqual(weights.W2);
  });
});

describe('compress → decompress on a model with every layer role', () => {
  it('8-bit PNG: loads in onnxruntime, outputs close, graph bytes unchanged', async () => {
    const archive = join(dir, 'mixed.nnm');
    const out = join(dir, 'mixed.out.onnx');
    const res = await compressModel(modelFile, archive, { codec: 'png', bits: 8, halfKept: false });
    expect(res.manifest.tensors.filter((t) => t.layout)).toHaveLength(8);
    await decompressArchive(archive, out);
    const restored = readFileSync(out);
    expect(restored.length).toBe(bytes.length); // raw_data keeps its size; everything else is copied
    const a = await runMixed(bytes);
    const b = await runMixed(restored);
    for (const k of Object.keys(a)) expect(maxAbsDiff(a[k], b[k])).toBeLessThan(0.1);
    const b2 = await runMixed(restored, false); // the else branch's Constant was restored too
    const a2 = await runMixed(bytes, false);
    expect(maxAbsDiff(a2.yD, b2.yD)).toBeLessThan(0.05);
    // Untouched tensors (the bias) are byte-identical
    expect(openModel(out).read('b1')).toEqual(weights.b1);
  });

  it('force: an existing output is refused (OutputExistsError) unless forced; the source model never', async () => {
    const { OutputExistsError } = await import('../src/index.js');
    const archive = join(dir, 'force.nnm');
    await compressModel(modelFile, archive, {});
    await expect(compressModel(modelFile, archive, {})).rejects.toBeInstanceOf(OutputExistsError);
    await compressModel(modelFile, archive, { force: true, codec: 'webp' });
    const copy = join(dir, 'force-source.onnx');
    writeFileSync(copy, bytes);
    await expect(decompressArchive(archive, copy, { force: true })).rejects.toThrow(/original model the archive was made from/);
    expect(readFileSync(copy)).toEqual(Buffer.from(bytes));
  });

  it('16-bit PNG: outputs within 1e-3', async () => {
    const archive = join(dir, 'mixed16.nnm');
    const out = join(dir, 'mixed16.onnx');
    await compressModel(modelFile, archive, { codec: 'png', bits: 16 });
    await decompressArchive(archive, out);
    const a = await runMixed(bytes);
    const b = await runMixed(readFileSync(out));
    for (const k of Object.keys(a)) expect(maxAbsDiff(a[k], b[k])).toBeLessThan(1e-3);
  });

  it('golden: the LSTM image in the archive holds exactly the SPEC M4 codes', async () => {
    const archivePath = join(dir, 'golden.nnm');
    await compressModel(modelFile, archivePath, { codec: 'png', bits: 8, range: 'layer' });
    const a = new Archive(archivePath);
    const rec = a.manifest.tensors.find((t) => t.name === 'lstmW')!;
    expect(rec.planes).toHaveLength(8);
    const [D, G, H, I] = [2, 4, 20, 12];
    const W = weights.lstmW;
    for (let p = 0; p < 8; p++) {
      const png = a.entry(rec.planes![p].tiles[0].entry);
      const meta = await sharp(png).metadata();
      expect([meta.width, meta.height, meta.channels, meta.depth]).toEqual([H, I, 1, 'uchar']); // one grey channel
      const { data } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
      // independent computation of the expected code of W[d, g·H + h, i] with the plane's own range
      const d = Math.floor(p / G);
      const g = p % G;
      let lo = Infinity;
      let hi = -Infinity;
      for (let h = 0; h < H; h++)
        for (let i = 0; i < I; i++) {
          const w = W[(d * G * H + g * H + h) * I + i];
          lo = Math.min(lo, w);
          hi = Math.max(hi, w);
        }
      for (let h = 0; h < H; h++)
        for (let i = 0; i < I; i++) {
          const w = W[(d * G * H + g * H + h) * I + i];
          const code = Math.min(255, Math.floor(((w - lo) / (hi - lo)) * 256));
          expect(data[i * H + h]).toBe(code);
        }
    }
    // and the same codes through the library's own layout and quantizer, plane by plane
    const planes = gatherPlanes(W, { kind: 'lstm', gates: 4, directions: D, hidden: H, nin: I }, (n) => new Float32Array(n));
    expect(MIXED.lstmW).toEqual([D, G * H, I]);
    for (let p = 0; p < 8; p++) {
      const ranges = findRanges(planes[p], I, H, 'layer', H);
      const codes = quantizePlane(planes[p], I, H, 8, ranges);
      const { data } = await sharp(a.entry(rec.planes![p].tiles[0].entry))
        .extractChannel(0)
        .raw()
        .toBuffer({ resolveWithObject: true });
      expect(Buffer.from(codes)).toEqual(data);
    }
    a.close();
  });

  it('identical tensors are stored once', async () => {
    const twin = join(dir, 'twin.onnx');
    const m = mixedModel(1, { sameBranches: true });
    writeFileSync(twin, m.bytes);
    const single = await compressModel(modelFile, join(dir, 'single.nnm'), {});
    const r = await compressModel(twin, join(dir, 'twin.nnm'), {});
    const dups = r.manifest.tensors.filter((t) => t.sameAs);
    expect(dups.map((t) => [t.name, t.sameAs])).toEqual([['else_weight', 'then_weight']]);
    expect(entryNames(r.manifest).length).toBe(entryNames(single.manifest).length - 1);
    await decompressArchive(join(dir, 'twin.nnm'), join(dir, 'twin.out.onnx'));
    const back = openModel(join(dir, 'twin.out.onnx'));
    const then = back.tensors.find((t) => t.name === 'then_weight')!;
    const other = back.tensors.find((t) => t.name === 'else_weight')!;
    expect(back.read(other.key)).toEqual(back.read(then.key));
  });
});

describe('safetensors', () => {
  it('F32/F16/BF16 compressed; header, metadata and int tensors byte-identical', async () => {
    const file = join(dir, 'model.safetensors');
    const { header, ints } = writeSafetensorsFixture(file);
    const archive = join(dir, 'st.nnm');
    const out = join(dir, 'st.out.safetensors');
    const res = await compressModel(file, archive, { bits: 16 });
    const roles = Object.fromEntries(res.manifest.tensors.map((t) => [t.name, t.role]));
    expect(roles).toMatchObject({
      'encoder.layers.0.attn.q_proj.weight': 'fc',
      'encoder.conv.weight': 'conv',
      'encoder.layers.0.mlp.fc1.bias': 'other',
    });
    await decompressArchive(archive, out);
    const restored = readFileSync(out);
    const original = readFileSync(file);
    expect(restored.length).toBe(original.length);
    expect(restored.subarray(0, header.length)).toEqual(header);
    const a = openModel(file);
    const b = openModel(out);
    for (const t of a.tensors) {
      const x = a.read(t.key);
      const y = b.read(t.key);
      // 16-bit codes, then the file's own dtype: error within that dtype's rounding; kept float32 tensors are
      // stored as float16 rounded to 7 mantissa bits by default (within 2^-8 + 2^-11 of their largest value)
      const half = res.manifest.tensors.find((r) => r.key === t.key)?.half;
      const tol = half
        ? maxAbsDiff(x, new Float32Array(x.length)) * 2 ** -7
        : t.dtype === 'bfloat16'
          ? 2e-3
          : t.dtype === 'float16'
            ? 2e-4
            : 1e-5;
      expect(maxAbsDiff(x, y)).toBeLessThan(tol);
    }
    expect(restored.subarray(restored.length - ints.length)).toEqual(Buffer.from(ints));
  });
});

describe('kept tensors as float16 (--half-kept)', () => {
  it('strips them from the skeleton, restores them within 2^-11, and is smaller', async () => {
    const { mixedModel } = await import('./helpers/onnx-fixtures.js');
    const { writeFileSync, statSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { compressModel, decompressArchive, openModel, Archive } = await import('../src/index.js');
    const dir = tempDir();
    const src = join(dir, 'm.onnx');
    writeFileSync(src, mixedModel().bytes);
    await compressModel(src, join(dir, 'exact.nnm'), { halfKept: false });
    const r = await compressModel(src, join(dir, 'half.nnm'), {}); // the default
    const halves = r.manifest.tensors.filter((t) => t.half);
    expect(halves.length).toBeGreaterThan(0);
    expect(statSync(join(dir, 'half.nnm')).size).toBeLessThan(statSync(join(dir, 'exact.nnm')).size);
    await decompressArchive(join(dir, 'half.nnm'), join(dir, 'back.onnx'));
    const a = openModel(src);
    const b = openModel(join(dir, 'back.onnx'));
    for (const t of halves) {
      const x = a.read(t.key);
      const y = b.read(t.key);
      let sq = 0;
      for (const v of x) sq += v * v;
      const floor = 2 ** -11 * Math.sqrt(sq / x.length);
      // the float16 cast (2^-11) and the rounding to 7 mantissa bits (2^-8)
      x.forEach((v, i) => expect(Math.abs(y[i] - v)).toBeLessThanOrEqual(Math.max((2 ** -8 + 2 ** -11) * Math.abs(v), floor)));
    }
    const archive = new Archive(join(dir, 'half.nnm'));
    // an entry of its own, or (small) a member of a deflated pack
    expect(entryBytes(archive.manifest, 'model/half.bin')).toBe(
      2 * Math.max(...halves.map((t) => t.half!.offset + elementCount(t.shape))),
    );
    archive.close();
  });
});

describe('options resolved once', () => {
  it('the manifest echoes the resolved options: { targetSnr: 30 } records codec smallest, outliers 4 and float16 kept tensors, as coded', async () => {
    const { resolveOptions } = await import('../src/index.js');
    const r = await compressModel(modelFile, join(dir, 'echo.nnm'), { targetSnr: 30 });
    expect(r.manifest.options).toMatchObject({ codec: 'smallest', outliers: 4, targetSnr: 30, halfKept: true });
    const coded = r.manifest.tensors.filter((t) => t.codec);
    expect(coded.length).toBeGreaterThan(0);
    for (const t of coded) {
      expect(['webp', 'png', 'zstd', 'zstd-sign', 'brotli', 'brotli-sign']).toContain(t.codec!.name);
      expect(t.quant!.outlierSigma).toBe(4);
    }
    expect(r.manifest.tensors.some((t) => t.half)).toBe(true);
    // a medium without a codec: its own default codec, not PNG's
    expect(resolveOptions({ media: 'video' }).echo.codec).toBe('ffv1');
    expect(resolveOptions({ media: 'audio', targetSnr: 20 }).echo.codec).toBe('flac');
    // nothing asked: the plain defaults, nothing more
    expect(resolveOptions({}).echo).toEqual({
      media: 'image',
      codec: 'auto',
      bits: 8,
      range: 'channel',
      halfKept: true,
      nonFinite: 'error',
      rules: [],
    });
  });

  it('one complete settings object per tensor: a rule over the options over the defaults', async () => {
    const { planTensors, openModel: open } = await import('../src/index.js');
    const plans = planTensors(open(modelFile), {
      bits: 16,
      rules: [{ match: 'W*', codec: 'tiff', relStep: 0.25 }],
    });
    const w1 = plans.find((p) => p.entry.name === 'W1')!;
    const lstm = plans.find((p) => p.entry.name === 'lstmW')!;
    expect(w1.kind === 'coded' && w1.settings).toMatchObject({
      codec: 'tiff',
      bits: 16,
      relStep: 0.25,
      quantizer: 'step',
      range: 'channel',
    });
    expect(lstm.kind === 'coded' && lstm.settings).toMatchObject({
      codec: 'auto',
      bits: 16,
      quantizer: 'rtn',
      stride: 1,
      clip: false,
    });
    expect(lstm.kind === 'coded' && lstm.settings.relStep).toBeUndefined();
  });

  it('a tensor rule that matches no tensor is said (a mistyped name was silently a no-op)', async () => {
    const logs: string[] = [];
    await compressModel(modelFile, join(dir, 'rules.nnm'), {
      check: false,
      force: true,
      rules: [
        { match: 'W*', bits: 8 },
        { match: 'w1', bits: 16 },
        { match: '/^lstm$/', role: 'other' },
      ],
      onLog: (m) => logs.push(m),
    });
    expect(logs.filter((m) => /rule/.test(m))).toEqual([
      expect.stringMatching(/^2 tensor rules match no tensor of the model: "w1", "\/\^lstm\$\/" \(names look like "/),
    ]);
    logs.length = 0;
    await compressModel(modelFile, join(dir, 'rules.nnm'), {
      check: false,
      force: true,
      rules: [{ match: 'W1', bits: 8 }],
      onLog: (m) => logs.push(m),
    });
    expect(logs.filter((m) => /rule/.test(m))).toEqual([]);
  });

  it('archive-wide settings a rule inherits are not refused where the rules name the codecs they are for', async () => {
    // each of these ran before the checks of settings that change nothing, and must still run
    const runs: Array<Parameters<typeof compressModel>[2]> = [
      { effort: 5, rules: [{ match: '*', codec: 'png' }] },
      { codec: 'zstd', effort: 9, rules: [{ match: 'W*', codec: 'auto' }] },
      { codec: 'webp', quality: 90, rules: [{ match: 'W1', lossless: true }] },
      { media: 'video', codec: 'h264', gop: 'inter', rules: [{ match: 'W1', codec: 'ffv1' }] },
    ];
    for (const [i, options] of runs.entries()) {
      const r = await compressModel(modelFile, join(dir, `inherit${i}.nnm`), { ...options, check: false, force: true });
      expect(
        r.manifest.tensors.some((t) => t.codec),
        JSON.stringify(options),
      ).toBe(true);
    }
  });

  it('every option is checked when the call is made, with one message format', async () => {
    const { OptionError } = await import('../src/index.js');
    const out = join(dir, 'never.nnm');
    const cases: Array<[Parameters<typeof compressModel>[2], string]> = [
      [{ codec: 'png', effort: 12 }, 'Expected integer between 0 and 9 for effort but received 12'],
      [{ codec: 'zstd', effort: 23 }, 'Expected integer between 1 and 22 for effort but received 23'],
      [{ effort: 1.5 }, 'Expected non-negative integer for effort but received 1.5'],
      // a codec set tries its codecs at their own settings: a quality or an effort given with it changed nothing
      [{ effort: 9 }, 'effort needs a named codec: codec auto (chosen when no codec is named)'],
      [{ targetSnr: 30, quality: 90 }, 'quality needs a named codec: codec smallest (chosen when no codec is named)'],
      [{ codec: 'smallest', quality: 90 }, 'quality needs a named codec: codec smallest tries'],
      [{ rules: [{ match: 'W*', codec: 'auto', quality: 50 }] }, 'quality needs a named codec (rules[0]): codec auto'],
      // a codec set codes images and raw codes: --media video with it wrote no video, without a word
      [
        { media: 'video', codec: 'auto' },
        'codec auto picks among image and raw codecs, not video ones: name a video codec (--codec ffv1)',
      ],
      [{ media: 'audio', codec: 'smallest' }, 'name an audio codec (--codec flac)'],
      // the lossless mode has no quality: it was dropped without a word
      [{ codec: 'webp', lossless: true, quality: 80 }, 'codec webp: give a quality (lossy) or lossless, not both'],
      // FFV1 has no inter prediction: --gop inter changed nothing
      [{ media: 'video', gop: 'inter' }, 'codec ffv1 codes every frame on its own: --gop inter applies to h264, h265, vp9, av1'],
      [{ block: [0, 4] }, 'Expected two positive integers [rows, columns] (at most 65536) for block but received [0,4]'],
      [{ block: [4] as unknown as [number, number] }, 'for block but received [4]'],
      [{ rotate: 'yes' as unknown as boolean }, 'Expected boolean for rotate but received "yes"'],
      [{ gop: 'some' as 'inter' }, `Expected 'intra' or 'inter' for gop but received "some"`],
      [{ sensitivityWeight: 2 }, 'Expected number between 0 and 1 for sensitivityWeight but received 2'],
      [{ quantizer: 'gptq' }, 'unknown quantizer "gptq"'],
      [{ quantizer: 'step' }, 'quantizer step needs a step'],
      [{ rules: [{ match: 'W*', clip: true } as never] }, 'rules[0]: unknown setting "clip"'],
      [{ rules: [{ match: 'W*', stride: 0 }] }, 'Expected integer between 1 and 65536 for stride (rules[0]) but received 0'],
      // a misspelt option was ignored without a word: the run used the default it was meant to change
      [{ targetBPW: 4 } as never, 'compress: unknown option "targetBPW" (did you mean targetBpw?)'],
      [{ target_snr: 30 } as never, 'unknown option "target_snr" (did you mean targetSnr?)'],
      [{ colour: 'red' } as never, 'unknown option "colour"; the options are media, codec'],
      // alternatives given together: the allocation chose the grids and the SNR target was dropped
      [{ targetSnr: 30, targetBpw: 4 }, 'give targetSnr (--target-snr: one SNR for every tensor) or targetBpw'],
      // video settings where nothing is coded as video were accepted and ignored
      [{ gop: 'inter' }, 'gop (--gop) sets how video is coded, and no tensor is coded as video (media image)'],
      [{ block: [4, 4], media: 'audio' }, 'block (--block) sets how video is coded'],
    ];
    for (const [options, message] of cases) {
      const err = await compressModel(modelFile, out, options).catch((e: unknown) => e);
      expect(err, message).toBeInstanceOf(OptionError);
      expect((err as Error).message).toContain(message);
    }
  });

  it('decompress options are checked when the call is made: names and values', async () => {
    const { OptionError } = await import('../src/index.js');
    const out = join(dir, 'never.onnx');
    const cases: Array<[object, string]> = [
      [{ job: 2 }, 'decompress: unknown option "job" (did you mean jobs?)'],
      [{ jobs: 0 }, 'Expected an integer ≥ 1 for jobs but received 0'],
      [{ force: 'yes' }, 'Expected true or false for force but received "yes"'],
      [{ signal: {} }, 'Expected an AbortSignal for signal'],
    ];
    for (const [options, message] of cases) {
      // the archive need not exist: the options are refused before it is opened
      const err = await decompressArchive(join(dir, 'absent.nnm'), out, options as never).catch((e: unknown) => e);
      expect(err, message).toBeInstanceOf(OptionError);
      expect((err as Error).message).toContain(message);
    }
    expect(existsSync(out)).toBe(false);
  });
});
