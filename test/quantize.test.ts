import { describe, expect, it } from 'vitest';
import {
  type PlaneRanges,
  collectNonFinite,
  dequantizePlane,
  findRanges,
  quantizePlane,
  restoreNonFinite,
  strideOffset,
} from '../src/quantize/uniform.js';
import { NonFiniteWeightError } from '../src/errors.js';
import { markOutliers } from '../src/quantize/outliers.js';
import { symmetricRanges } from '../src/quantize/ranges.js';
import { RowGrid, roundToNearest, gptqQuantize } from '../src/compensate/index.js';
import { dequantizeInto } from '../src/quantize/dequantize.js';
import { planeOffsets } from '../src/layout/planes.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

describe('M1 uniform quantization', () => {
  it('numbers 2^n equal intervals of [min, max] from 0 and decodes to their centres', () => {
    const v = Float32Array.of(0, 0.5, 1, 0.25, 0.999);
    const r = findRanges(v, 1, 5, 'layer', 1);
    expect([r.mins[0], r.maxs[0]]).toEqual([0, 1]);
    const codes = quantizePlane(v, 1, 5, 8, r);
    expect([...codes]).toEqual([0, 128, 255, 64, 255]);
    const back = dequantizePlane(codes, 1, 5, 8, r);
    expect(back[0]).toBeCloseTo(0.5 / 256, 7);
    expect(back[1]).toBeCloseTo(128.5 / 256, 7);
    for (let i = 0; i < 5; i++) expect(Math.abs(back[i] - v[i])).toBeLessThanOrEqual(0.5 / 256 + 1e-7);
  });
  it('16, 24 and 32 bits keep the error within half an interval', () => {
    const v = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
    for (const bits of [16, 24, 32]) {
      const r = findRanges(v, 10, 100, 'layer', 1);
      const back = dequantizePlane(quantizePlane(v, 10, 100, bits, r), 10, 100, bits, r);
      const half = 6 / 2 ** bits / 2;
      for (let i = 0; i < v.length; i++) expect(Math.abs(back[i] - v[i])).toBeLessThanOrEqual(half + 1e-6);
    }
  });
  it('a constant tensor (min == max) decodes exactly', () => {
    const v = new Float32Array(12).fill(0.3);
    const r = findRanges(v, 3, 4, 'layer', 1);
    expect(dequantizePlane(quantizePlane(v, 3, 4, 8, r), 3, 4, 8, r)).toEqual(v);
  });
  it('per-channel ranges are per group of columns', () => {
    const v = Float32Array.of(0, 100, 1, 200, 2, 300); // 2 rows × 3 cols? use 1 row × 6 cols, width 2
    const r = findRanges(v, 1, 6, 'channel', 2);
    expect([...r.mins]).toEqual([0, 1, 2]);
    expect([...r.maxs]).toEqual([100, 200, 300]);
  });
  it('per-channel ranges beat per-layer ranges with an outlier channel', () => {
    const v = Float32Array.from({ length: 64 }, (_, i) => (i % 8 === 0 ? 50 * Math.sin(i) : 0.01 * Math.cos(i)));
    const err = (mode: 'layer' | 'channel'): number => {
      const r = findRanges(v, 8, 8, mode, 1);
      const back = dequantizePlane(quantizePlane(v, 8, 8, 8, r), 8, 8, 8, r);
      // error on the ordinary channels (columns 1…7), which per-layer ranges flatten
      return v.reduce((s, x, i) => (i % 8 === 0 ? s : s + (x - back[i]) ** 2), 0);
    };
    expect(err('channel')).toBeLessThan(err('layer') / 10);
  });
  it('NaN and ±Inf: an error naming file, tensor and index, or exact side storage', () => {
    const v = Float32Array.of(1, NaN, 2, Infinity, -Infinity);
    expect(() => collectNonFinite(v, 'error', 'm.onnx', 'w')).toThrow(NonFiniteWeightError);
    expect(() => collectNonFinite(v, 'error', 'm.onnx', 'w')).toThrow(/file m.onnx, tensor w: weight 1 is NaN/);
    const side = collectNonFinite(v, 'keep', 'm.onnx', 'w')!;
    expect([...side.indices]).toEqual([1, 3, 4]);
    const r = findRanges(v, 1, 5, 'layer', 1);
    expect([r.mins[0], r.maxs[0]]).toEqual([1, 2]);
    const back = dequantizePlane(quantizePlane(v, 1, 5, 8, r), 1, 5, 8, r);
    restoreNonFinite(back, side);
    expect(back[1]).toBeNaN();
    expect(back[3]).toBe(Infinity);
    expect(back[4]).toBe(-Infinity);
  });
});

/** A float16-exact value's float16 bits. */
function toBits(x: number): number {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0];
  const exp = ((b >>> 23) & 255) - 127 + 15;
  return ((b >>> 16) & 0x8000) | (exp << 10) | ((b >>> 13) & 0x3ff);
}

describe('weights the decoder does not read from their code take the zero code of a zero-centred grid', () => {
  // a [4, 6] plane, a channel a column: column 1 pruned to zeros, a NaN (side data) in column 0, and (with
  // bounds, as a step grid has them) a weight beyond the grid in column 2
  const plane = gaussian(4 * 6, 5, 0.05);
  for (let r = 0; r < 4; r++) plane[r * 6 + 1] = 0;
  plane[6] = NaN;
  plane[2 * 6 + 2] = 0.5;
  const apart = [1, 7, 13, 19, 6, 14];

  it('on the default grid, a step grid and at a stride: 2^(n−1), which decodes to exactly 0', () => {
    for (const bits of [8, 16]) {
      const { ranges } = symmetricRanges(plane, 4, 6, 1, bits)!;
      const mid = 2 ** (bits - 1);
      expect(ranges.zeroCode).toBe(mid);
      const lo = new Float64Array(6).fill(-0.2);
      const hi = new Float64Array(6).fill(0.2);
      for (const stride of [1, 3]) {
        const codes = quantizePlane(plane, 4, 6, bits, ranges, stride, { lo, hi });
        for (const i of apart) expect(codes[i], `bits ${bits}, stride ${stride}, weight ${i}`).toBe(mid);
      }
    }
  });

  it('min/max ranges (the method as written, interval centres) keep code 0: they have no zero code', () => {
    const r = findRanges(plane, 4, 6, 'channel', 1);
    expect(r.zeroCode).toBeUndefined();
    const codes = quantizePlane(plane, 4, 6, 8, r);
    for (const i of [1, 7, 13, 19, 6]) expect(codes[i]).toBe(0);
  });

  it('round-to-nearest and GPTQ rows: a constant row and fixed weights take the fill code', () => {
    const rows = 3;
    const k = 4;
    const w = Float64Array.from(gaussian(rows * k, 9, 0.1));
    const fixed = new Uint8Array(rows * k);
    fixed[5] = 1;
    const los = Float64Array.of(-0.4, -0.4, 0);
    const spans = Float64Array.of(0.8, 0.8, 0); // row 2: a pruned channel
    const m = { rows, k, w, fixed, los, spans, bits: 8, stride: 1, zeroCode: 128 };
    const h = new Float64Array(k * k);
    for (let i = 0; i < k; i++) h[i * k + i] = 1 + i;
    for (const codes of [roundToNearest(m), gptqQuantize(m, h).codes]) {
      expect(codes[5]).toBe(128);
      expect([...codes.subarray(8, 12)]).toEqual([128, 128, 128, 128]);
    }
    expect(new RowGrid(8, 1).fill).toBe(0);
  });
});

describe('quantizePlane at stride > 1: products where safe, the codes of the divisions', () => {
  // the reference: the level from the quotients, as the method states it
  const reference = (v: Float32Array, cols: number, bits: number, ranges: PlaneRanges, stride: number): Uint16Array => {
    const levels = 2 ** bits;
    const half = strideOffset(stride, ranges.zeroCode);
    const topLevel = Math.floor((levels - 1 - half) / stride);
    const out = new Uint16Array(v.length);
    for (let i = 0; i < v.length; i++) {
      const ch = Math.floor((i % cols) / ranges.channelWidth);
      const lo = ranges.mins[ch];
      const span = ranges.maxs[ch] - lo;
      if (!(span > 0) || !Number.isFinite(v[i])) continue;
      const j = Math.round((((v[i] - lo) / span) * levels - 0.5 - half) / stride);
      out[i] = (j < 0 ? 0 : j > topLevel ? topLevel : j) * stride + half;
    }
    return out;
  };
  // strides 49 and 103: 1/stride's rounding puts the product of a level m + ½ just below it (found by search)
  for (const [bits, stride] of [
    [8, 3],
    [8, 49],
    [8, 103],
    [16, 7],
    [16, 49],
  ])
    it(`${bits}-bit codes, stride ${stride}: weights on every rounding boundary and next to it`, () => {
      const cols = 6;
      // spans of powers of two put a boundary exactly on a float32 value (where 1/stride's rounding flips the
      // level); the fourth channel's bounds are float32-subnormal (tiny levels, still a finite reciprocal in float64)
      const mins = Float32Array.of(-0.37, -1e-3, -5, -3e-39, -0.5, 0);
      const maxs = Float32Array.of(0.41, 2e-3, 5, 4e-39, 0.5, 2);
      const ranges: PlaneRanges = { mins, maxs, channelWidth: 1 };
      const levels = 2 ** bits;
      const half = strideOffset(stride, undefined);
      const values: number[] = [];
      for (let m = -1; m * stride < levels + stride; m++)
        for (const d of [-2, -1, 0, 1, 2])
          for (let c = 0; c < cols; c++) {
            // the value whose level is m + ½ exactly, and the float32 values around it
            const x = (m + 0.5) * stride + 0.5 + half;
            const v = Math.fround(mins[c] + (x / levels) * (maxs[c] - mins[c]));
            values.push(v + d * Math.abs(v) * 2 ** -23);
          }
      while (values.length % cols) values.push(0);
      // rows of 6 columns: value i sits in column i % 6, the channel it was made for
      const v = Float32Array.from(values);
      const rows = v.length / cols;
      const got = quantizePlane(v, rows, cols, bits, ranges, stride);
      expect(Array.from(got)).toEqual(Array.from(reference(v, cols, bits, ranges, stride)));
      // and the plane is not trivial: several levels are used
      expect(new Set(got).size).toBeGreaterThan(1);
    });
});

describe('markOutliers', () => {
  // the rule as stated, channel by channel: beyond sigma standard deviations of the channel's finite weights
  const reference = (plane: Float32Array, rows: number, cols: number, width: number, sigma: number): Float32Array => {
    const out = plane.slice();
    for (let ch = 0; ch * width < cols; ch++) {
      let sum = 0;
      let sq = 0;
      let n = 0;
      for (let r = 0; r < rows; r++)
        for (let c = ch * width; c < Math.min(cols, (ch + 1) * width); c++) {
          const v = plane[r * cols + c];
          if (!Number.isFinite(v)) continue;
          sum += v;
          sq += v * v;
          n++;
        }
      if (n < 4) continue;
      const mean = sum / n;
      const sd = Math.sqrt(Math.max(sq / n - mean * mean, 0));
      if (sd === 0) continue;
      for (let r = 0; r < rows; r++)
        for (let c = ch * width; c < Math.min(cols, (ch + 1) * width); c++) {
          const v = plane[r * cols + c];
          if (Number.isFinite(v) && Math.abs(v - mean) > sigma * sd) out[r * cols + c] = NaN;
        }
    }
    return out;
  };
  for (const width of [1, 3])
    it(`marks what the rule says, channels ${width} column${width > 1 ? 's' : ''} wide, non-finite weights left alone`, () => {
      const rows = 50;
      const cols = 9;
      const plane = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 1.7) + (i % 37 === 0 ? 9 : 0));
      plane[3] = NaN;
      plane[cols + 4] = Infinity;
      plane[2 * cols + 4] = -Infinity;
      for (let r = 0; r < rows; r++) plane[r * cols + 8] = 0.25; // a constant channel (width 1): no spread, no marks
      const expected = reference(plane, rows, cols, width, 3);
      const got = plane.slice();
      const marked = markOutliers([got], [{ rows, cols, channelWidth: width, label: '' }], 3);
      expect(Array.from(got)).toEqual(Array.from(expected));
      expect(marked).toBe(expected.filter((v, i) => Number.isNaN(v) && !Number.isNaN(plane[i])).length);
      expect(marked).toBeGreaterThan(3);
      expect([got[cols + 4], got[2 * cols + 4]]).toEqual([Infinity, -Infinity]);
    });
  for (const width of [1, 3])
    it(`a channel pruned to 99 % (${width} column${width > 1 ? 's' : ''} wide): its zeros left out of σ and never marked`, () => {
      const rows = 3000;
      const cols = 2 * width;
      const plane = Float32Array.from(gaussian(rows * cols, 47, 0.05));
      // channel 0's k-th weight (row ⌊k / width⌋, column k mod width): one in a hundred kept, ±0.3, and one 3.0
      const at = (k: number) => Math.floor(k / width) * cols + (k % width);
      for (let k = 0; k < rows * width; k++) plane[at(k)] = k % 100 ? 0 : k % 200 ? 0.3 : -0.35;
      plane[at(500)] = 3;
      const got = plane.slice();
      markOutliers([got], [{ rows, cols, channelWidth: width, label: '' }], 4);
      // counted, the zeros put 4σ at ~0.2 and every kept weight beyond it; left out, only the 3.0 is an outlier
      for (let k = 0; k < rows * width; k++)
        if (k === 500) expect(got[at(k)]).toBeNaN();
        else expect(got[at(k)], `weight ${k}`).toBe(plane[at(k)]);
      // a dense channel: as the rule says
      const dense = plane.slice();
      for (let k = 0; k < rows * width; k++) dense[at(k)] = Math.sin(k) * 0.1 + (k === 77 ? 2 : 0);
      const expected = reference(dense, rows, cols, width, 4);
      markOutliers([dense], [{ rows, cols, channelWidth: width, label: '' }], 4);
      expect(Array.from(dense)).toEqual(Array.from(expected));
      expect(dense[at(77)]).toBeNaN();
    });
});

describe('kept tensors as float16 (where the cast is safe)', () => {
  it('casts values within 2^-11 of themselves or of the tensor RMS, and reads them back', async () => {
    const { toHalfIfSafe, fromHalf } = await import('../src/quantize/half.js');
    const v = Float32Array.of(0.5, -1.25, 3e-7, 0, 1234.5, -0.0001);
    const bytes = toHalfIfSafe(v)!;
    expect(bytes.length).toBe(12);
    const back = fromHalf(bytes, 0, v.length);
    let sq = 0;
    for (const x of v) sq += x * x;
    const rms = Math.sqrt(sq / v.length);
    v.forEach((x, i) => expect(Math.abs(back[i] - x)).toBeLessThanOrEqual(Math.max(2 ** -11 * Math.abs(x), 2 ** -11 * rms)));
  });
  it('refuses what float16 cannot hold: beyond 65504, NaN, Inf, and tiny values in a tiny tensor', async () => {
    const { toHalfIfSafe } = await import('../src/quantize/half.js');
    expect(toHalfIfSafe(Float32Array.of(1, 70000))).toBeUndefined();
    expect(toHalfIfSafe(Float32Array.of(1, NaN))).toBeUndefined();
    expect(toHalfIfSafe(Float32Array.of(1, -Infinity))).toBeUndefined();
    expect(toHalfIfSafe(Float32Array.of(3e-7, 2e-7))).toBeUndefined(); // subnormal steps are large against an RMS of 2.5e-7
  });
  it('kept values are rounded to 7 mantissa bits: within 2^-8 + 2^-11 of themselves, to nearest, never to infinity', async () => {
    const { keptHalf, fromHalf, roundHalfMantissa, toHalfIfSafe } = await import('../src/quantize/half.js');
    const v = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i * 12.9898) * 10 ** ((i % 9) - 4));
    const back = fromHalf(keptHalf(v)!, 0, v.length);
    let sq = 0;
    for (const x of v) sq += x * x;
    const floor = 2 ** -11 * Math.sqrt(sq / v.length);
    let coarse = 0;
    v.forEach((x, i) => {
      expect(Math.abs(back[i] - x)).toBeLessThanOrEqual(Math.max((2 ** -8 + 2 ** -11) * Math.abs(x), floor));
      // the low 3 mantissa bits of a normal value are zero
      if (Math.abs(back[i]) < 2 ** -14 || (toBits(back[i]) & 7) === 0) coarse++;
    });
    expect(coarse).toBe(v.length);
    // below half a step, above it, ties to even (down and up), and ±65504 (would round to infinity: kept)
    const edge = toHalfIfSafe(
      Float32Array.of(1 + 2 ** -10, 1 + 2 ** -8 + 2 ** -10, 1 + 2 ** -8, 1 + 2 ** -7 + 2 ** -8, 65504, -65504),
    )!;
    expect([...fromHalf(roundHalfMantissa(edge, 7), 0, 6)]).toEqual([1, 1 + 2 ** -7, 1, 1 + 2 ** -6, 65504, -65504]);
    // the input is not modified
    expect([...fromHalf(edge, 0, 1)]).toEqual([1 + 2 ** -10]);
  });
});

describe('quantizer registry', () => {
  it('a registered quantizer is dispatched by its id, receives calibration statistics, and its codes decode like any', async () => {
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { registerQuantizer, getQuantizer, compressModel, decodeAllTensors, openModel, planTensors } =
      await import('../src/index.js');
    const { encodeUnit } = await import('../src/pipeline/encode.js');
    const { mixedModel } = await import('./helpers/onnx-fixtures.js');
    const dir = tempDir();
    const model = join(dir, 'q.onnx');
    writeFileSync(model, mixedModel().bytes);
    const seen: Array<{ planes: number; hessians?: number }> = [];
    const rtn = getQuantizer('rtn');
    registerQuantizer({
      id: 'test-recording',
      description: 'round to nearest, recording what it was given',
      quantize: (planes, shapes, settings, stats) => {
        seen.push({ planes: planes.length, hessians: stats?.hessians?.length });
        return rtn.quantize(planes, shapes, settings, stats);
      },
    });
    expect(() => registerQuantizer({ ...rtn })).toThrow(/registered already/);
    // by id, from the options: the archive is the one round to nearest makes, and decodes
    const a = await compressModel(model, join(dir, 'a.nnm'), { quantizer: 'test-recording', jobs: 1 });
    const b = await compressModel(model, join(dir, 'b.nnm'), { jobs: 1 });
    expect(seen.length).toBe(a.manifest.tensors.filter((t) => t.codec).length);
    expect(a.manifest.tensors.map((t) => t.stats)).toEqual(b.manifest.tensors.map((t) => t.stats));
    expect(a.manifest.options.quantizer).toBe('test-recording');
    expect((await decodeAllTensors(join(dir, 'a.nnm'))).size).toBeGreaterThan(0);
    // the calibration hook: statistics handed to the unit reach the quantizer
    const reader = openModel(model);
    const plan = planTensors(reader, { quantizer: 'test-recording' }).find((p) => p.entry.name === 'W1');
    if (plan?.kind !== 'coded') throw new Error('W1 is coded');
    seen.length = 0;
    const rows = 16;
    await encodeUnit(reader, { plan, stats: { hessians: [new Float64Array(rows * rows)], samples: 1 } });
    expect(seen).toEqual([{ planes: 1, hessians: 1 }]);
    reader.close();
  });
});

describe('dequantizeInto an fc plane of an [out, in] matrix (what the encoder restores in file order)', () => {
  it('is dequantizePlane then a transpose, to the bit, on planes not a multiple of its blocks (zero-span channels too)', () => {
    for (const [rows, cols] of [
      [1, 1],
      [3, 200],
      [130, 67],
      [64, 64],
    ]) {
      const v = gaussian(rows * cols, rows + cols, 0.1);
      for (let r = 0; r < rows; r++) v[r * cols] = 0.5; // a channel of one value: span 0
      for (const bits of [8, 16]) {
        const ranges = findRanges(v, rows, cols, 'channel', 1);
        const codes = quantizePlane(v, rows, cols, bits, ranges);
        const plane = dequantizePlane(codes, rows, cols, bits, ranges);
        const expected = new Float32Array(rows * cols);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expected[c * rows + r] = plane[r * cols + c];
        const out = new Float32Array(rows * cols).fill(NaN);
        const offsets = planeOffsets({ kind: 'fc', nin: rows, nout: cols, order: 'out_in' }, 0);
        dequantizeInto(codes, rows, cols, bits, ranges, offsets.rows, offsets.cols, { dtype: 'float32', data: out });
        expect(out).toEqual(expected);
      }
    }
  });
});

describe('channelScales', () => {
  it('leaves exact zeros out: a channel pruned to 99 % has the scale of the weights it kept, in every path', async () => {
    const { channelScales, columnMajorScales } = await import('../src/quantize/step.js');
    const rows = 2000;
    const kept = gaussian(rows, 43, 0.05);
    // column 0: 1 % of its weights kept (the largest), the rest exact zeros (−0 among them); column 1: the kept ones alone
    const limit = [...kept].map(Math.abs).sort((a, b) => a - b)[Math.floor(0.99 * rows)];
    const pruned = Float32Array.from(kept, (v, i) => (Math.abs(v) >= limit ? v : i % 2 ? 0 : -0));
    const alone = Float32Array.from([...pruned].filter((v) => v !== 0));
    const plane = new Float32Array(2 * rows);
    for (let r = 0; r < rows; r++) [plane[2 * r], plane[2 * r + 1]] = [pruned[r], r < alone.length ? alone[r] : 0];
    const shape = { rows, cols: 2, channelWidth: 1, label: 'm' };
    const aloneScale = channelScales(alone, { rows: alone.length, cols: 1, channelWidth: 1, label: 'a' }, 'channel').rms[0];
    expect(aloneScale).toBeGreaterThan(2 * 0.05); // the kept weights lie beyond 2.5σ
    const rms = channelScales(plane, shape, 'channel').rms;
    expect(rms[0]).toBe(aloneScale);
    expect(rms[1]).toBe(aloneScale);
    // the [out, in] file order (the one-pass path's) and layer mode: the same numbers
    const fileOrder = Float32Array.from([...pruned, ...Array.from({ length: rows }, (_, r) => plane[2 * r + 1])]);
    const both = columnMajorScales(fileOrder, rows, 2, true, true);
    expect([...both.channel!.rms]).toEqual([...rms]);
    expect(both.layer!.rms[0]).toBe(channelScales(plane, shape, 'layer').rms[0]);
    expect(both.finite[1]).toBe(2 * rows);
  });

  it('is the RMS about zero of each channel after two 3σ clips, per channel of several columns and per layer', async () => {
    const { channelScales } = await import('../src/quantize/step.js');
    const rows = 40;
    const width = 3;
    const cols = 5 * width;
    const plane = Float32Array.from(gaussian(rows * cols, 41, 0.1));
    plane[7] = NaN;
    plane[20] = Infinity;
    plane[33] = 5; // clipped away
    // the rule written out, column by column
    const expected = (ofChannel: (c: number) => number, channels: number): number[] =>
      Array.from({ length: channels }, (_, ch) => {
        const vs: number[] = [];
        for (let r = 0; r < rows; r++)
          for (let c = 0; c < cols; c++)
            if (ofChannel(c) === ch && Number.isFinite(plane[r * cols + c])) vs.push(plane[r * cols + c]);
        let kept = vs;
        let ms = vs.reduce((s, v) => s + v * v, 0) / vs.length;
        for (let pass = 0; pass < 2; pass++) {
          const bound = 9 * ms;
          kept = vs.filter((v) => v * v <= bound);
          ms = kept.reduce((s, v) => s + v * v, 0) / kept.length;
        }
        return Math.sqrt(ms);
      });
    const shape = { rows, cols, channelWidth: width, label: 'conv' };
    const perChannel = channelScales(plane, shape, 'channel');
    expect(perChannel.width).toBe(width);
    Array.from(perChannel.rms).forEach((v, ch) => expect(v).toBeCloseTo(expected((c) => Math.floor(c / width), 5)[ch], 12));
    const perLayer = channelScales(plane, shape, 'layer');
    expect(perLayer.rms).toHaveLength(1);
    expect(perLayer.rms[0]).toBeCloseTo(expected(() => 0, 1)[0], 12);
  });

  it('gives both modes from shared sweeps to the bit, and the layer scale summed per column (any storage order)', async () => {
    const { channelScales, planeScales } = await import('../src/quantize/step.js');
    for (const width of [1, 3]) {
      const rows = 50;
      const cols = 4 * width + (width > 1 ? 0 : 3);
      const plane = Float32Array.from(gaussian(rows * cols, 40 + width, 0.1));
      plane[5] = NaN;
      plane[17] = -Infinity;
      plane[18] = Infinity;
      plane[29] = -7; // clipped away
      plane[40] = 1e-42;
      plane[41] = 3e38; // its square is finite in float64: counted, then clipped
      const shape = { rows, cols, channelWidth: width, label: 'matrix' };
      const both = planeScales(plane, shape, true, true);
      expect(Array.from(both.channel!.rms)).toEqual(Array.from(channelScales(plane, shape, 'channel').rms));
      expect(Array.from(both.layer!.rms)).toEqual(Array.from(channelScales(plane, shape, 'layer').rms));
      // the layer's rule, with each pass's sums taken down each column and then added in column order
      const finite = (v: number): boolean => Number.isFinite(v);
      let bound = Infinity;
      let rms = 0;
      for (let pass = 0; pass < 3; pass++) {
        let q = 0;
        let n = 0;
        for (let c = 0; c < cols; c++) {
          let cq = 0;
          let cn = 0;
          for (let r = 0; r < rows; r++) {
            const v = plane[r * cols + c];
            if (finite(v) && v * v <= bound) {
              cq += v * v;
              cn++;
            }
          }
          q += cq;
          n += cn;
        }
        bound = 9 * (q / n);
        rms = Math.sqrt(q / n);
      }
      expect(both.layer!.rms[0]).toBe(rms);
      expect(both.layer!.width).toBe(cols);
    }
  });
});
