/**
 * The model's own grid: a weight the graph rounds onto int8/uint8 at run time (every use a QuantizeLinear with a
 * constant scale: a model of quantization-aware training, `TensorEntry.quantizedBy`) is coded as the integers that
 * QuantizeLinear makes of it, on the symmetric 8-bit grid whose step per output channel is the model's scale.
 *
 * Coded on a grid of its own (Δ = max|w| / 127 per channel), a third of such a model's integers moved after its
 * QuantizeLinear (a QAT MLP whose scales clip at 0.6 of max|w|: 31,359 of 84,480), and with its activations
 * quantized too the logits moved by up to 0.1. Here each weight becomes (q − z)·s, q = QuantizeLinear(w), and the
 * plane channel's step is s (rounded up to an exact step, at most 2^−11 larger): code k + 2^7 with k = q − z decodes
 * to k·Δ, which the model's QuantizeLinear rounds back to q exactly (|k·(Δ/s − 1)| ≤ 128 · 2^−11 < ½). The
 * decompressed model computes what the original computes; the decoder is the plain M1 one.
 *
 * Used on the default grid only (8-bit codes, per-channel symmetric, every code, no rotation, outliers,
 * compensation or per-tensor target); elsewhere such a weight is quantized as any other, and its QuantizeLinear
 * rounds what it decodes to. Not used where a plane channel would need two scales (the QuantizeLinear's axis is
 * not the layout's output channel), where k leaves −128…127 (uint8 with a zero point far from 128), or where a
 * weight or scale is not finite.
 */

import { rowElements, type ModelReader } from '../formats/model.js';
import { channelView, gatherChannels, keptChannels } from '../layout/channels.js';
import { gatherPlanes, planeShapes } from '../layout/planes.js';
import type { LayoutSpec } from '../layout/types.js';
import { roundToNearest } from '../quantize/registry.js';
import { withoutZeroChannels, type CodedChannels } from './prepare.js';
import type { EncodeUnit } from './stages.js';

/** A unit on the model's grid: its values as the model's QuantizeLinear leaves them, and each plane channel's step. */
export interface ModelGridUnit extends CodedChannels {
  /** Per plane, per channel: the model's scale. */
  readonly channelSteps: Float32Array[];
}

/** Whether a tensor's settings are those of the default grid (see the module comment). */
function onDefaultGrid(unit: EncodeUnit): boolean {
  const s = unit.plan.settings;
  return (
    s.bits === 8 &&
    s.range === 'channel' &&
    s.relStep === undefined &&
    !s.clip &&
    s.stride === 1 &&
    !s.outliers &&
    !s.rotate &&
    s.targetSnr === undefined &&
    s.quantizer === roundToNearest.id &&
    unit.compensation === undefined
  );
}

/** QuantizeLinear's rounding: to nearest, ties to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The unit's values on the model's grid (zero channels left out as `withoutZeroChannels` does), or undefined where
 * the tensor has no such grid or the default grid is not asked for (see the module comment).
 */
export function modelGridUnit(
  reader: ModelReader,
  unit: EncodeUnit,
  read: Float32Array,
  layout: LayoutSpec,
): ModelGridUnit | undefined {
  const { plan, slice } = unit;
  const q = plan.entry.quantizedBy;
  if (!q || !onDefaultGrid(unit)) return undefined;
  const scales = reader.read(q.scale);
  const shape = plan.entry.shape;
  const inner = q.axis < 0 ? 1 : shape.slice(q.axis + 1).reduce((a, b) => a * b, 1);
  const dim = q.axis < 0 ? 1 : shape[q.axis];
  const offset = slice ? slice.row * rowElements(shape) : 0;
  const [lo, hi] = q.signed ? [-128, 127] : [0, 255];
  const snapped = new Float32Array(read.length);
  const steps = new Float32Array(read.length);
  for (let i = 0; i < read.length; i++) {
    const a = q.axis < 0 ? 0 : Math.floor((offset + i) / inner) % dim;
    const s = scales[scales.length === 1 ? 0 : a];
    const z = q.zeroPoints[q.zeroPoints.length === 1 ? 0 : a];
    const w = read[i];
    if (!(s > 0) || !Number.isFinite(s) || !Number.isFinite(w)) return undefined;
    // (the quotient in float32, as onnxruntime divides: in float64, 83 of 200 near-ties rounded the other way)
    const k = Math.min(hi, Math.max(lo, roundHalfEven(Math.fround(w / s)) + z)) - z;
    if (k < -128 || k > 127) return undefined;
    snapped[i] = k * s;
    steps[i] = s;
  }
  // output channels all zero on the grid are left out, as anywhere: the steps of the others, in the same order
  const coded = withoutZeroChannels(plan, snapped, layout);
  const view = coded.zeroChannels && channelView(layout);
  const kept = view ? gatherChannels(steps, view, keptChannels(coded.zeroChannels!, view.channels)) : steps;
  // each plane channel's step: the one scale all its weights share (or no model grid)
  const shapes = planeShapes(coded.layout);
  const planes = gatherPlanes(kept, coded.layout, (n) => new Float32Array(n));
  const channelSteps: Float32Array[] = [];
  for (const [p, plane] of planes.entries()) {
    const { rows, cols, channelWidth } = shapes[p];
    const out = new Float32Array(Math.ceil(cols / channelWidth)).fill(NaN);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const ch = Math.floor(c / channelWidth);
        const v = plane[r * cols + c];
        if (Number.isNaN(out[ch])) out[ch] = v;
        else if (out[ch] !== v) return undefined;
      }
    channelSteps.push(out);
  }
  return { ...coded, channelSteps };
}
