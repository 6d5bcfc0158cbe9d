/**
 * The per-tensor SNR search (`--target-snr`) reads every stride's error off one histogram pass and measures a
 * stride exactly only where the target lies within the estimate's bound. Its decisions are the exact search's
 * only if the exact error sums always lie within that bound: checked here on planes of every kind the search
 * meets, including the hard ones (an offset range far from zero, weights already on the grid, clipping).
 */
import { describe, expect, it } from 'vitest';
import type { PlaneShape } from '../src/layout/types.js';
import { SNR_STRIDES, coarsestStride } from '../src/pipeline/quantize.js';
import { addToErrorHistogram, histogramError, newErrorHistogram } from '../src/quantize/error-histogram.js';
import { planeRanges } from '../src/quantize/tensor.js';
import { addPlaneError } from '../src/quantize/uniform.js';
import { gaussian, rng } from './helpers/random.js';

const shape = (rows: number, cols: number, channelWidth: number): PlaneShape => ({ rows, cols, channelWidth, label: 'plane' });

/** Planes the search meets, by name. */
function planes(): Array<[string, Float32Array, PlaneShape]> {
  const out: Array<[string, Float32Array, PlaneShape]> = [];
  out.push(['gaussian fc', gaussian(64 * 48, 1, 0.1), shape(64, 48, 1)]);
  out.push(['gaussian conv', gaussian(36 * 40, 2, 0.05), shape(36, 40, 4)]);
  const heavy = gaussian(50 * 30, 3, 0.02);
  const r = rng(4);
  for (let i = 0; i < heavy.length; i += 97) heavy[i] *= 40 * r();
  out.push(['heavy-tailed', heavy, shape(50, 30, 1)]);
  // all values near 100: the decoded values' float32 rounding is large against the error
  out.push(['offset', gaussian(40 * 20, 5, 0.01).map((v) => 100 + v), shape(40, 20, 1)]);
  // weights already on a grid (a dequantized int8 model): x lands on the bin edges of even strides
  const step = 0.1 / 127;
  out.push(['on the grid', gaussian(48 * 32, 6, 0.03).map((v) => Math.fround(Math.round(v / step) * step)), shape(48, 32, 1)]);
  const sparse = gaussian(40 * 40, 7, 0.1).map((v, i) => (i % 3 ? 0 : v));
  out.push(['two-thirds zeros', sparse, shape(40, 40, 1)]);
  out.push(['a constant column', gaussian(20 * 16, 8, 0.1).map((v, i) => (i % 16 === 3 ? 0.25 : v)), shape(20, 16, 1)]);
  return out;
}

describe('the error histogram of a code grid', () => {
  it('bounds the exact error sums of every stride, tightly', () => {
    let measured = 0;
    for (const [name, plane, s] of planes())
      for (const bits of [8, 16])
        for (const range of ['channel', 'layer'] as const)
          for (const clip of [false, true]) {
            const grid = planeRanges(plane, s, { bits, range, clip, stride: 1 });
            if (grid.byStride) continue; // quantized in full per stride, not measured from a histogram
            const h = newErrorHistogram(bits, grid.ranges.zeroCode);
            const signal = addToErrorHistogram(h, plane, s.cols, grid.ranges);
            for (const stride of SNR_STRIDES) {
              const exact = { signal: 0, error: 0 };
              addPlaneError(plane, s.cols, bits, grid.ranges, stride, exact);
              const estimate = histogramError(h, stride);
              const what = `${name}, ${bits} bits, ${range}${clip ? ', clip' : ''}, stride ${stride}`;
              expect(signal, what).toBe(exact.signal);
              expect(Math.abs(estimate.error - exact.error), what).toBeLessThanOrEqual(estimate.bound);
              // tight: a bound of a millionth of the error leaves almost every decision to the histogram
              // tight, so that nearly every decision is the histogram's: within 0.005 dB at 8 bits, 0.2 dB at 16 (the
              // float32 rounding of the decoded values is larger against a 256× finer grid); an offset range's error
              // is float32 rounding itself at 16 bits, and each of its strides is measured exactly
              if (exact.error > 0 && name !== 'offset')
                expect(estimate.bound / exact.error, what).toBeLessThan(bits === 8 ? 1e-3 : 0.05);
              measured++;
            }
          }
    expect(measured).toBeGreaterThan(300);
  });

  it('the search picks the stride the exact search picks, also for targets on a stride’s exact SNR', () => {
    for (const [name, plane, s] of planes()) {
      const settings = { bits: 8, range: 'channel', clip: false, quantizer: 'rtn', stride: 1 } as never;
      const prepared = { planes: [plane], shapes: [s] } as never;
      const grid = planeRanges(plane, s, { bits: 8, range: 'channel', clip: false, stride: 1 });
      const snr = (k: number): number => {
        const sums = { signal: 0, error: 0 };
        addPlaneError(plane, s.cols, 8, grid.ranges, k, sums);
        return sums.error === 0 ? Infinity : 10 * Math.log10(sums.signal / sums.error);
      };
      const exactSearch = (target: number): number => {
        let stride = 1;
        for (const k of SNR_STRIDES) {
          if (!(snr(k) >= target)) break;
          stride = k;
        }
        return stride;
      };
      // targets at each stride's exact SNR (the pass/miss edge), a hair either side, and in between
      const targets = SNR_STRIDES.slice(0, 8).flatMap((k) => {
        const t = snr(k);
        return Number.isFinite(t) ? [t, t + 1e-12, t - 1e-12, t + 0.5] : [];
      });
      for (const target of [...targets, 20, 30, 45])
        expect(coarsestStride(prepared, settings, target), `${name}, target ${target}`).toBe(exactSearch(target));
    }
  });
});
