import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorSums } from '../src/eval/metrics.js';
import { gatherPlanes, planeShapes, scatterPlanes } from '../src/layout/planes.js';
import type { FcLayoutSpec } from '../src/layout/types.js';
import { compressModel } from '../src/pipeline/compress.js';
import { CODEC_SETS } from '../src/pipeline/plan.js';
import { refineTrigger } from '../src/pipeline/stages.js';
import { refinePays, refineSample } from '../src/pipeline/encode.js';
import { getCodec } from '../src/codecs/registry.js';
import { measureFc, quantizeFc } from '../src/pipeline/fused.js';
import { measureColumnMajor } from '../src/rate/allocate.js';
import { codeEntropyBits, entropyOf } from '../src/rate/entropy.js';
import { exactSide, withExactZeros } from '../src/pipeline/prepare.js';
import { exactStep } from '../src/quantize/step.js';
import { quantizePlanes } from '../src/quantize/tensor.js';
import { dequantizePlane, restoreNonFinite, type RangeMode } from '../src/quantize/uniform.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/**
 * The default grid's step for a channel whose largest weight is 7.77 (8-bit codes): one whose edges a product by
 * 256 / span puts on the other side of 101 of 762 half steps and ulps beside them (a largest weight of 1 puts none).
 */
const EDGE_MAX = Math.fround(7.77);
const EDGE_STEP = exactStep(EDGE_MAX / 127, 8)!;

/** Weights with what the one-pass path must get right: exact zeros, a zero channel, a channel of one value, dust. */
function weights(layout: FcLayoutSpec, seed: number): Float32Array {
  const v = gaussian(layout.nin * layout.nout, seed, 0.05);
  for (let i = 0; i < v.length; i += 7) v[i] = 0;
  // channel 1 all zero, channel 2 one value, channel 3 subnormal dust (in either order of the file)
  for (let r = 0; r < layout.nin; r++) {
    const at = (c: number): number => (layout.order === 'out_in' ? c * layout.nin + r : r * layout.nout + c);
    v[at(1)] = 0;
    v[at(2)] = 0.25;
    v[at(3)] = r % 2 ? 1e-42 : -3e-41;
    // channels 4 and 5: exactly on the default grid's code edges (half steps of the step their largest weight gives;
    // float32 holds them exactly) and a float32 ulp beside them, where a product and a quotient can round to
    // different sides
    const edge = (((r * 37) % 253) - 126 + 0.5) * EDGE_STEP;
    if (layout.nout > 5) {
      v[at(4)] = r === 0 ? EDGE_MAX : edge;
      v[at(5)] = r === 0 ? -EDGE_MAX : Math.fround(edge * (1 + (r % 2 ? 2 ** -23 : -(2 ** -23))));
    }
  }
  return v;
}

/** The general path: planes laid out, quantized, decoded, scattered back, side values and exact zeros put back, measured. */
function generalPath(
  values: Float32Array,
  layout: FcLayoutSpec,
  bits: number,
  stride: number,
  relStep?: number,
  range: RangeMode = 'channel',
) {
  const shapes = planeShapes(layout);
  const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
  const [q] = quantizePlanes(planes, shapes, { bits, range, stride, clip: false, relStep });
  const beyond = q.beyond ? exactSide(scatterPlanes([q.working!], layout, new Float32Array(values.length)), values) : undefined;
  const back = dequantizePlane(q.codes, shapes[0].rows, shapes[0].cols, bits, q.ranges);
  const restored = scatterPlanes([back], layout, new Float32Array(values.length));
  restoreNonFinite(restored, beyond);
  const side = withExactZeros(values, restored, beyond);
  return { q, sums: errorSums(values, restored), side, beyond };
}

describe('one-pass encoder path for fc layers (fused.ts)', () => {
  const layouts: FcLayoutSpec[] = [
    { kind: 'fc', nin: 130, nout: 71, order: 'out_in' },
    { kind: 'fc', nin: 130, nout: 71, order: 'in_out' },
    { kind: 'fc', nin: 3, nout: 200, order: 'out_in' },
    { kind: 'fc', nin: 200, nout: 5, order: 'in_out' },
    // [out, in] in blocks of 32 channels (the last one 8), written to the plane four channels a word
    { kind: 'fc', nin: 4000, nout: 40, order: 'out_in' },
  ];
  const grids: Array<{ stride: number; relStep?: number; range?: RangeMode }> = [
    { stride: 1 },
    { stride: 3 },
    // step grids: one that holds every weight, and one so fine that 256 levels span ±1.3 RMS (weights beyond
    // it are stored exactly)
    { stride: 1, relStep: 0.25 },
    { stride: 1, relStep: 0.01 },
    // a step grid codes with every code whatever the stride
    { stride: 3, relStep: 0.25 },
    // one step for the layer: its scale summed per plane column whichever way the file holds the matrix
    { stride: 1, relStep: 0.25, range: 'layer' },
    { stride: 1, relStep: 0.01, range: 'layer' },
  ];
  for (const layout of layouts)
    for (const bits of [8, 16])
      for (const { stride, relStep, range } of grids)
        it(`gives the general path's codes, ranges and error sums: ${layout.order} ${layout.nin}×${layout.nout}, ${bits}-bit, ${relStep ? `step ${relStep}, ` : ''}${range ? `${range} range, ` : ''}stride ${stride}`, () => {
          const values = weights(layout, layout.nin + bits + stride);
          const { plane: fused, beyond, measured } = quantizeFc(values, layout, bits, stride, relStep, range)!;
          const general = generalPath(values, layout, bits, stride, relStep, range);
          expect(Buffer.from(fused.codes.buffer).equals(Buffer.from(general.q.codes.buffer))).toBe(true);
          expect(fused.ranges.mins).toEqual(general.q.ranges.mins);
          expect(fused.ranges.maxs).toEqual(general.q.ranges.maxs);
          expect(fused.rangeDtype).toBe(general.q.rangeDtype);
          expect(fused.stepBytes && Array.from(fused.stepBytes)).toEqual(general.q.stepBytes && Array.from(general.q.stepBytes));
          expect(fused.restored).toEqual(general.q.restored);
          expect(Array.from(beyond)).toEqual(Array.from(general.beyond?.indices ?? []));
          if (relStep === 0.01 && bits === 8) expect(beyond.length).toBeGreaterThan(values.length / 10);
          const m = measureFc(values, fused.codes, layout, bits, fused.ranges, beyond);
          // to the last bit: the sums are summed in the same (file) order
          expect(m.sums).toEqual(general.sums);
          const sideAfter = Array.from(general.side?.indices ?? []).filter((i) => !beyond.includes(i));
          expect(Array.from(m.zeros)).toEqual(sideAfter);
          // [out, in] at 8 bits: measured in the pass that found the codes, the same to the bit, with their histogram
          expect(Boolean(measured)).toBe(layout.order === 'out_in' && bits === 8);
          if (measured) {
            expect(measured.sums).toEqual(general.sums);
            expect(Array.from(measured.zeros)).toEqual(sideAfter);
            const counts = new Float64Array(256);
            for (const c of fused.codes) counts[c]++;
            expect(Array.from(measured.histogram)).toEqual(Array.from(counts));
            expect(entropyOf(measured.histogram, values.length)).toBe(codeEntropyBits(fused.codes));
          }
        });

  it('counts every code of a step grid whose range overflows float32 (NaN codes stored as 0) as measureFc does', () => {
    const nin = 64;
    const layout: FcLayoutSpec = { kind: 'fc', nin, nout: 2, order: 'out_in' };
    const values = new Float32Array(2 * nin);
    for (let i = 0; i < nin; i++) {
      values[i] = Math.fround(Math.sin(i * 7.1));
      values[nin + i] = Math.fround(3e38 * Math.sin(i * 3.3));
    }
    const q = quantizeFc(values, layout, 8, 1, 0.5, 'channel')!;
    expect(q.plane.ranges.mins[1]).toBe(-Infinity);
    const m = measureFc(values, q.plane.codes, layout, 8, q.plane.ranges, q.beyond);
    expect(q.measured!.histogram.reduce((a, b) => a + b, 0)).toBe(values.length);
    expect(entropyOf(q.measured!.histogram, values.length)).toBe(codeEntropyBits(q.plane.codes));
    expect([q.measured!.sums.se, q.measured!.sums.maxAbs, q.measured!.sums.sp]).toEqual([m.sums.se, m.sums.maxAbs, m.sums.sp]);
  });

  it('a step grid from the scales rate control measured is the one it finds itself, to the bit', () => {
    const layout: FcLayoutSpec = { kind: 'fc', nin: 130, nout: 71, order: 'out_in' };
    const values = weights(layout, 11);
    values[5] = 3; // a weight beyond the grid
    const { scales } = measureColumnMajor(
      'w',
      values,
      planeShapes(layout)[0],
      { bits: 8, clip: false },
      [0.25],
      ['channel', 'layer'],
    );
    for (const range of ['channel', 'layer'] as const) {
      const own = quantizeFc(values, layout, 8, 1, 0.25, range)!;
      const given = quantizeFc(values, layout, 8, 1, 0.25, range, scales)!;
      expect(Buffer.from(given.plane.codes).equals(Buffer.from(own.plane.codes)), range).toBe(true);
      expect(given.plane.ranges).toEqual(own.plane.ranges);
      expect(given.beyond).toEqual(own.beyond);
      expect(given.beyond.length).toBeGreaterThan(0);
    }
    // scales of another matrix are a bug, not a grid
    const other = { channel: { rms: new Float64Array(70), width: 1 } };
    expect(() => quantizeFc(values, layout, 8, 1, 0.25, 'channel', other)).toThrow(/70 channels/);
  });

  it('leaves a tensor with a non-finite weight to the general path', () => {
    const layout: FcLayoutSpec = { kind: 'fc', nin: 20, nout: 10, order: 'out_in' };
    const values = weights(layout, 3);
    values[37] = NaN;
    expect(quantizeFc(values, layout, 8, 1)).toBeUndefined();
    values[37] = Infinity;
    expect(quantizeFc(values, layout, 8, 1)).toBeUndefined();
    // found in the channel's own row, the last one too (the default grid is made row by row as it is quantized)
    values[37] = 0.5;
    expect(quantizeFc(values, layout, 8, 1)).toBeDefined();
    values[values.length - 1] = NaN;
    expect(quantizeFc(values, layout, 8, 1)).toBeUndefined();
    values[values.length - 1] = -Infinity;
    expect(quantizeFc(values, layout, 8, 1)).toBeUndefined();
    values[values.length - 1] = 0.5;
    // a row whose step has no exact range (its grid would overflow float32): the general path's, as before
    const big = values.slice();
    big.fill(3.4e38, 5 * layout.nin, 6 * layout.nin);
    expect(quantizeFc(big, layout, 8, 1)).toBeUndefined();
    // a step grid of an [out, in] matrix finds them while it sums its scales, in either range mode
    for (const range of ['channel', 'layer'] as const) {
      values[37] = -Infinity;
      expect(quantizeFc(values, layout, 8, 1, 0.25, range)).toBeUndefined();
      values[37] = NaN;
      expect(quantizeFc(values, layout, 8, 1, 0.25, range)).toBeUndefined();
      values[37] = 0.5;
      expect(quantizeFc(values, layout, 8, 1, 0.25, range)).toBeDefined();
    }
  });
});

/** A safetensors file of float32 tensors. */
function writeSafetensors(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...Object.values(tensors).map((t) => Buffer.from(t.data.buffer))]));
}

describe('identical tensors', () => {
  it('are found when only tensors alike in kind and first row are hashed whole', async () => {
    const shape = [300, 256]; // above the size hashed whole at once
    const a = gaussian(300 * 256, 1, 0.05);
    const lastRowOff = Float32Array.from(a);
    lastRowOff[lastRowOff.length - 1] += 0.01; // same first row, not the same tensor
    const other = gaussian(300 * 256, 2, 0.05);
    const small = gaussian(64 * 16, 3, 0.05);
    const file = join(dir, 'twins.safetensors');
    writeSafetensors(file, {
      'a.weight': { shape, data: a },
      'b.weight': { shape, data: Float32Array.from(a) },
      'c.weight': { shape, data: lastRowOff },
      'd.weight': { shape, data: other },
      'e.weight': { shape: [64, 16], data: small },
      'f.weight': { shape: [64, 16], data: Float32Array.from(small) },
      'g.weight': { shape, data: Float32Array.from(lastRowOff) },
    });
    const r = await compressModel(file, join(dir, 'twins.nnm'), {});
    const same = r.manifest.tensors.filter((t) => t.sameAs).map((t) => [t.name, t.sameAs]);
    expect(same).toEqual([
      ['b.weight', 'a.weight'],
      ['f.weight', 'e.weight'],
      ['g.weight', 'c.weight'],
    ]);
  });
});

describe('the one-pass path in the encoder', () => {
  it('writes the archive the general path writes (NNMEDIA_GENERAL_PATH=1), in every mode it takes, rate control measured either way', async () => {
    const file = join(dir, 'fc.safetensors');
    const wide = gaussian(96 * 300, 11, 0.05);
    for (let i = 0; i < wide.length; i += 5) wide[i] = 0;
    wide[7] = -0;
    // output channels pruned to zeros (rows of an [out, in] matrix): both paths give them the fill code
    const pruned = gaussian(300 * 96, 12, 0.02);
    for (let row = 0; row < 300; row += 7) pruned.fill(0, row * 96, row * 96 + 96);
    writeSafetensors(file, {
      'layers.0.q_proj.weight': { shape: [96, 300], data: wide },
      'layers.0.o_proj.weight': { shape: [300, 96], data: pruned },
      'layers.0.mlp.weight': { shape: [200, 96], data: gaussian(200 * 96, 13, 3) },
    });
    const modes: Array<Record<string, unknown>> = [
      {},
      { stride: 3 },
      { bits: 16 },
      { relStep: 0.25 },
      { relStep: 0.01 },
      { relStep: 0.25, stride: 3 },
      { relStep: 0.25, sliceWeights: 8192 },
      { relStep: 0.25, range: 'layer' },
      { relStep: 0.01, range: 'layer', sliceWeights: 8192 },
      // rate control: its measurements of [out, in] matrices taken as the file holds them (pipeline/measure.ts)
      { targetBpw: 4 },
      { targetBpw: 2.5, sliceWeights: 8192 },
      // modes the one-pass path must leave to the general one (a wrong fusedFits shows here)
      { clip: true, stride: 16 },
      { range: 'layer' },
      { outliers: 3 },
      { relStep: 0.25, rotate: true },
      // 16-bit codes on a step grid fine enough to leave weights beyond it (the transposed path with bounds)
      { bits: 16, relStep: 1e-4 },
    ];
    let coded = 0;
    for (const [k, mode] of modes.entries()) {
      const one = join(dir, `fused-${k}.nnm`);
      const general = join(dir, `general-${k}.nnm`);
      const r = await compressModel(file, one, mode);
      process.env.NNMEDIA_GENERAL_PATH = '1';
      try {
        await compressModel(file, general, mode);
      } finally {
        delete process.env.NNMEDIA_GENERAL_PATH;
      }
      expect(readFileSync(one).equals(readFileSync(general)), JSON.stringify(mode)).toBe(true);
      coded += r.manifest.tensors.filter((t) => t.role === 'fc').length;
    }
    expect(coded).toBe(3 * modes.length);
  });
});

describe('tensors of mostly exact zeros (pruned)', () => {
  it("take zstd-19 where zstd-3's literal coder spends well over the codes' entropy; dense tensors do not pay for it", async () => {
    const file = join(dir, 'pruned.safetensors');
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [name, share] of [
      ['layers.0.dense.weight', 0],
      ['layers.0.half.weight', 0.5],
      ['layers.0.sparse.weight', 0.9],
    ] as const) {
      // (1.5 M weights: above the model size that tries brotli on every tensor, plan.ts BROTLI_SMALL_MODEL)
      const data = gaussian(1024 * 512, name.length, 0.02);
      // magnitude pruning: the smallest `share` of the weights set to exact zeros
      const limit = [...data].map(Math.abs).sort((a, b) => a - b)[Math.floor(share * data.length)];
      if (share > 0) for (let i = 0; i < data.length; i++) if (Math.abs(data[i]) < limit) data[i] = 0;
      tensors[name] = { shape: [1024, 512], data };
    }
    writeSafetensors(file, tensors);
    const r = await compressModel(file, join(dir, 'pruned.nnm'));
    const codec = (key: string) => r.manifest.tensors.find((t) => t.key === key)!.codec!;
    for (const key of ['layers.0.half.weight', 'layers.0.sparse.weight']) {
      expect(codec(key).name, key).toMatch(/^zstd/);
      expect(codec(key).effort, key).toBe(19);
    }
  });

  it('a retry of many codes is decided on a sample: dense codes that level 19 does not shrink are not coded again, pruned ones are', async () => {
    // 1024 × 512 weights, Gaussian with one weight of 10 σ a row, on the default grid (the row's max at code ±127)
    const rows = 1024;
    const cols = 512;
    const w = gaussian(rows * cols, 7, 1);
    const dense = new Uint8Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      w[r * cols + ((r * 37) % cols)] = r % 2 ? 10 : -10;
      const step = 10 / 127;
      for (let c = 0; c < cols; c++) dense[r * cols + c] = 128 + Math.round(w[r * cols + c] / step);
    }
    const candidate = { codec: getCodec('zstd-sign'), options: { lossless: true, effort: 3 } };
    const plane = { width: cols, height: rows, bits: 8, data: dense };
    // the whole at level 19 is not 1 % smaller, and the sample says so
    const level3 = (await candidate.codec.encode(plane, candidate.options)).length;
    const level19 = (await candidate.codec.encode(plane, { ...candidate.options, effort: 19 })).length;
    expect(level19).toBeGreaterThan(0.99 * level3);
    expect(await refinePays(candidate, [dense], 8, 19, level3, Infinity, () => 1)).toBe(false);
    // the same codes with 90 % of them the zero code (magnitude pruning): the sample shrinks at level 19
    const pruned = dense.map((c) => (Math.abs(c - 128) < 21 ? 128 : c));
    expect(pruned.filter((c) => c === 128).length / pruned.length).toBeGreaterThan(0.8);
    const prunedBytes = (await candidate.codec.encode({ ...plane, data: pruned }, candidate.options)).length;
    expect(await refinePays(candidate, [pruned], 8, 19, prunedBytes, Infinity, () => 0.9)).toBe(true);
    // ... unless a candidate before it (PNG) is already smaller than it would come out
    expect(await refinePays(candidate, [pruned], 8, 19, prunedBytes, 0.7 * prunedBytes, () => 0.9)).toBe(false);
    // ... and where no code takes a good part of them (dense codes of many weights), not even sampled
    expect(await refinePays(candidate, [pruned], 8, 19, prunedBytes, Infinity, () => 0.05)).toBe(false);
    // spread over several planes (an LSTM's gates, an empty one among them): the same sample as from one plane,
    // whether a plane ends inside a run (at 75,000: the second run is 73,728–81,919) or between runs
    const one = refineSample([pruned], 8, pruned.length);
    for (const at of [75_000, 100_000])
      expect(
        Buffer.from(refineSample([pruned.subarray(0, 0), pruned.subarray(0, at), pruned.subarray(at)], 8, pruned.length)),
      ).toEqual(Buffer.from(one));
    // no more than REFINE_SAMPLE_ABOVE (262,144) codes: no sample, the whole retry decides
    expect(await refinePays(candidate, [dense.subarray(0, 200_000)], 8, 19, level3, Infinity, () => 0.05)).toBe(true);
  });

  it('the rule, on the measured ratios: dense 8-bit codes, small excesses and 16-bit codes are not tried again', () => {
    const rule = CODEC_SETS.auto.refine!;
    const h = 1e6; // the codes' entropy in bits
    expect(refineTrigger(rule, 1.007 * h, h, 8)).toBeUndefined(); // dense weight codes (zstd-3 within 1 %)
    expect(refineTrigger(rule, 1.11 * h, h, 8)).toBe('skewed'); // half the weights exact zeros
    expect(refineTrigger(rule, 1.48 * h, h, 8)).toBe('skewed'); // 90 %
    expect(refineTrigger(rule, 0.9 * h, h, 8)).toBe('structure'); // structure (a Fourier basis)
    expect(refineTrigger(rule, 0.9 * h, h, 16)).toBe('structure');
    expect(refineTrigger(rule, 1.25 * h, h, 16)).toBeUndefined(); // zstd's usual on 16-bit codes, at any level
    expect(refineTrigger(rule, 441 * 8, 383 * 8, 8)).toBeUndefined(); // a small tensor: its headers are the excess
    // the rate-control modes' set: structure only (their coarse grids would retry nearly every tensor)
    expect(refineTrigger(CODEC_SETS.smallest.refine!, 1.48 * h, h, 8)).toBeUndefined();
  });
});
