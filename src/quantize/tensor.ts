/**
 * Quantization of one tensor's planes: ranges (min/max or clipped, stored as
 * float16 when that is exact enough), codes on the chosen grid, and the values
 * those codes decode to. Shared by the encoder and the rate allocator, so what
 * the allocator measures is exactly what gets stored.
 */

import { float16ToFloat32, float32ToFloat16 } from '../formats/model.js';
import type { PlaneShape } from '../layout/types.js';
import { storageRanges, searchClipRanges, symmetricFromMaxAbs, symmetricRanges } from './ranges.js';
import {
  byteToStep,
  channelScales,
  rangeOfStep,
  stepGrid,
  stepsFrom20,
  stepsFrom24,
  stepsTo20,
  stepsTo24,
  weightsBeyond,
} from './step.js';
import { type CodeArray, type PlaneRanges, type RangeMode, dequantizePlane, findRanges, quantizePlane } from './uniform.js';

/**
 * How ranges are stored: float16 or float32 [mins…, maxs…]; or a step per channel of a zero-centred grid,
 * range [−(2^(bits−1) + ½)Δ, (2^(bits−1) − ½)Δ]: one byte (`step8`: Δ = m·2^e, the step grid) or the top
 * three bytes of Δ's float32 (`step24`: the symmetric per-channel grid, see ranges.ts symmetricRanges), or
 * its top 20 bits (`step20`, format version 4: the same steps, whose low 12 bits are zero; step.ts stepsTo20).
 */
export const RANGE_DTYPES = ['float16', 'float32', 'step8', 'step24', 'step20'] as const;
export type RangeDtype = (typeof RANGE_DTYPES)[number];

/** Bytes one channel's range takes in each storage dtype (a min and a max, or one step); `step20` 2.5. */
export const RANGE_BYTES: Record<RangeDtype, number> = { float16: 4, float32: 8, step8: 1, step24: 3, step20: 2.5 };

/** Bytes the ranges of `channels` channels take (`step20`: two steps share their last byte). */
export function rangeByteLength(dtype: RangeDtype, channels: number): number {
  return Math.ceil(channels * RANGE_BYTES[dtype]);
}

/** Whether `length` bytes are the ranges of a whole number of channels (at least one) in this dtype. */
export function wholeRanges(dtype: RangeDtype, length: number): boolean {
  if (length === 0) return false;
  return dtype === 'step20' ? rangeByteLength(dtype, Math.floor((2 * length) / 5)) === length : length % RANGE_BYTES[dtype] === 0;
}

/** The symmetric grid's steps as stored: `step20` when every step fits it (always, for exactStep's steps), else `step24`. */
export function storedSteps(steps: Float32Array): { rangeDtype: RangeDtype; stepBytes: Uint8Array } {
  const b20 = stepsTo20(steps);
  return b20 ? { rangeDtype: 'step20', stepBytes: b20 } : { rangeDtype: 'step24', stepBytes: stepsTo24(steps) };
}

export interface QuantizeSettings {
  bits: number;
  range: RangeMode;
  /** Use every k-th code only (1 = all 2^bits codes). */
  stride: number;
  /** Search clipping ranges per channel instead of min/max. */
  clip: boolean;
  /** Step grid (see step.ts): the step as a fraction of each channel's (or layer's) RMS; replaces min/max ranges and stride. */
  relStep?: number;
  /** Step grid: clamp weights beyond the grid instead of marking them for exact storage (used under rotation). */
  clampBeyond?: boolean;
  /**
   * Per plane, per channel: the step of the symmetric per-channel grid, given (the model's own scales,
   * pipeline/model-grid.ts) rather than found from each channel's largest |w|.
   */
  channelSteps?: readonly Float32Array[];
}

export interface PlaneQuantization {
  codes: CodeArray;
  ranges: PlaneRanges;
  rangeDtype: RangeDtype;
  /** Step dtypes (`step8`, `step24`, `step20`): the stored bytes of the steps, per channel. */
  stepBytes?: Uint8Array;
  /** What the codes decode to (before any lossy codec), with weights beyond a step grid restored exactly. */
  restored: Float32Array;
  /** Step grid only: the plane with weights beyond the grid marked NaN (they go to the exact side entry). */
  working?: Float32Array;
  /** Step grid only: how many weights are beyond the grid. */
  beyond?: number;
}

export function quantizePlanes(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  s: QuantizeSettings,
): PlaneQuantization[] {
  return planes.map((plane, p) => {
    const { rows, cols } = shapes[p];
    if (s.relStep !== undefined) {
      const grid = stepGrid(channelScales(plane, shapes[p], s.range), s.relStep, s.bits);
      const { ranges, f16, stepBytes } = grid;
      // weights beyond the grid are marked NaN in a copy of the plane; with none (the usual case at the
      // grids chosen) the plane itself is the working plane: a plane's worth of memory less per job
      const marked = s.clampBeyond ? 0 : weightsBeyond(plane, shapes[p], grid, s.bits, false);
      const working = marked ? Float32Array.from(plane) : plane;
      if (marked) weightsBeyond(working, shapes[p], grid, s.bits, true);
      const codes = quantizePlane(working, rows, cols, s.bits, ranges, 1);
      const rangeDtype: RangeDtype = stepBytes ? 'step8' : f16 ? 'float16' : 'float32';
      return lazyRestored({ codes, ranges, rangeDtype, stepBytes, working, beyond: marked }, () => {
        const restored = dequantizePlane(codes, rows, cols, s.bits, ranges);
        for (let i = 0; i < plane.length; i++) if (Number.isNaN(working[i]) && Number.isFinite(plane[i])) restored[i] = plane[i];
        return restored;
      });
    }
    const { ranges, rangeDtype, stepBytes } = planeRanges(plane, shapes[p], s, s.channelSteps?.[p]);
    const codes = quantizePlane(plane, rows, cols, s.bits, ranges, s.stride);
    return lazyRestored({ codes, ranges, rangeDtype, ...(stepBytes ? { stepBytes } : {}) }, () =>
      dequantizePlane(codes, rows, cols, s.bits, ranges),
    );
  });
}

/** The ranges a plane off the step grid is quantized on, how they are stored, and whether `stride` chose them. */
export interface PlaneGrid {
  ranges: PlaneRanges;
  rangeDtype: RangeDtype;
  stepBytes?: Uint8Array;
  /** Whether other strides would give other ranges (a clipping search off the symmetric grid). */
  byStride: boolean;
}

/**
 * The ranges `quantizePlanes` uses for a plane when there is no step grid (settings without relStep); `steps`: each
 * channel's step of the symmetric grid, given.
 */
export function planeRanges(plane: Float32Array, shape: PlaneShape, s: QuantizeSettings, steps?: Float32Array): PlaneGrid {
  const { rows, cols, channelWidth } = shape;
  // per output channel: the zero-centred grid of symmetric round-to-nearest (zero exact, extremes on the grid)
  const half = 2 ** (s.bits - 1) - 1;
  const sym =
    s.range !== 'channel'
      ? undefined
      : steps
        ? symmetricFromMaxAbs(
            Float64Array.from(steps, (v) => v * half),
            channelWidth,
            s.bits,
          )
        : symmetricRanges(plane, rows, cols, channelWidth, s.bits, s.clip);
  if (sym) return { ranges: sym.ranges, ...storedSteps(sym.steps), byStride: false };
  // per layer (M1 as written: [min, max], interval centres), or per channel where no exact step exists
  const raw = s.clip
    ? searchClipRanges(plane, rows, cols, s.range, channelWidth, s.bits, s.stride)
    : findRanges(plane, rows, cols, s.range, channelWidth);
  // Per-channel ranges of 8-bit codes are stored as float16 (rounded outward): they are many, and
  // half precision costs 8-bit codes nothing. Per-layer ranges (M1 as written) and wider codes keep float32.
  const { ranges, dtype } =
    s.bits <= 8 && s.range === 'channel' ? storageRanges(raw) : { ranges: raw, dtype: 'float32' as const };
  return { ranges, rangeDtype: dtype, byStride: s.clip };
}

/** `restored` computed on first use: the encoder's plain path never needs it, and it is as large as the plane. */
function lazyRestored(q: Omit<PlaneQuantization, 'restored'>, make: () => Float32Array): PlaneQuantization {
  let cached: Float32Array | undefined;
  return Object.defineProperty(q, 'restored', { get: () => (cached ??= make()), enumerable: true }) as PlaneQuantization;
}

/** Ranges as stored in the manifest: base64 of [mins…, maxs…] in the given dtype, little-endian. */
export function encodeRanges(r: PlaneRanges, dtype: RangeDtype, stepBytes?: Uint8Array): string {
  if (dtype === 'step8' || dtype === 'step24' || dtype === 'step20') return Buffer.from(stepBytes!).toString('base64');
  const n = r.mins.length;
  const buf = Buffer.alloc(n * 2 * (dtype === 'float16' ? 2 : 4));
  const all = [...r.mins, ...r.maxs];
  all.forEach((v, i) => (dtype === 'float16' ? buf.writeUInt16LE(f16bits(v), i * 2) : buf.writeFloatLE(v, i * 4)));
  return buf.toString('base64');
}

function f16bits(v: number): number {
  return float32ToFloat16(v);
}

/** Stored ranges → [mins…, maxs…] as float32, exactly as the encoder used them. */
export function decodeRangeBytes(bytes: Uint8Array, dtype: RangeDtype, bits = 8): Float32Array {
  if (dtype === 'step8' || dtype === 'step24' || dtype === 'step20') {
    const steps =
      dtype === 'step8' ? Float64Array.from(bytes, byteToStep) : dtype === 'step24' ? stepsFrom24(bytes) : stepsFrom20(bytes);
    const out = new Float32Array(steps.length * 2);
    steps.forEach((step, ch) => {
      const [lo, hi] = rangeOfStep(step, bits);
      out[ch] = lo;
      out[steps.length + ch] = hi;
    });
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = dtype === 'float16' ? 2 : 4;
  const out = new Float32Array(bytes.length / width);
  for (let i = 0; i < out.length; i++)
    out[i] = dtype === 'float16' ? float16ToFloat32(view.getUint16(i * 2, true)) : view.getFloat32(i * 4, true);
  return out;
}
