/**
 * Kept tensors (biases, norm scales, anything not laid out as media) as
 * float16 instead of float32 in the skeleton: half the bytes, and a cast that
 * every inference runtime's fp16 mode makes. Only where the cast is safe:
 * every value finite and ≤ 65504, and each value's error at most 2^−11 of
 * itself (float16's normal range) or of the tensor's RMS (tiny values, which
 * float16 holds as subnormals). Otherwise the tensor stays exact.
 */

import { decodeFloats, encodeFloats } from '../formats/model.js';

/** The entry holding every half-stored tensor, one after another (little-endian float16). */
export const HALF_ENTRY = 'model/half.bin';

const TOLERANCE = 2 ** -11;
const MAX_HALF = 65504;

/** float16 bytes of the values, or undefined where the cast would be unsafe (see above). */
export function toHalfIfSafe(values: Float32Array): Uint8Array | undefined {
  let sq = 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (!(a <= MAX_HALF)) return undefined; // also NaN
    sq += a * a;
  }
  const floor = TOLERANCE * Math.sqrt(sq / Math.max(1, values.length));
  const bytes = encodeFloats(values, 'float16');
  const back = decodeFloats(bytes, 'float16');
  for (let i = 0; i < values.length; i++)
    if (Math.abs(back[i] - values[i]) > Math.max(TOLERANCE * Math.abs(values[i]), floor)) return undefined;
  return bytes;
}

/**
 * Mantissa bits a kept recurrent-layer bias keeps: 7, bfloat16's precision (each value within 2^−8 of itself,
 * plus the float16 cast's 2^−11). Measured on Silero VAD v4's kept tensors (4,463 values): deflated 8,345 B at
 * 10 bits, 7,032 B at 7, 6,583 B at 6. Only where `keptMantissaBits` says so.
 */
export const KEPT_MANTISSA_BITS = 7;

/** float16's own mantissa: what every other kept tensor keeps. */
export const HALF_MANTISSA_BITS = 10;

/** ONNX uses whose kept tensors take 7 mantissa bits, op → input indices: the biases of recurrent layers. */
const SEVEN_BIT_INPUTS: Readonly<Record<string, readonly number[]>> = {
  LSTM: [3],
  GRU: [3],
  RNN: [3],
};

/**
 * Mantissa bits of a kept tensor from how the graph uses it: 7 where every use is a recurrent layer's bias
 * (added to gate pre-activations of their own scale), float16's full 10 anywhere else. Measured on two models
 * the project had never seen (PaddleOCR's text detector and text-line classifier, calibrated on the OCR lines):
 * rounding their kept tensors to 7 bits cost fidelity that float16's 10 do not — classifier output error 0.046
 * (all at 7), 0.058 (only its small conv kernels at 7), 0.029 (all at 10, = exact); detector gate fidelity 0.975–0.976
 * with conv biases, norms or adds at 7 against 0.979 at 10 (= exact, = per-channel int8). A kept weight is a small
 * first or last layer; a conv bias often holds a folded BatchNorm (β − μγ/σ, large against the output's spread);
 * a norm's mean is divided by σ. Tensors without uses (safetensors) keep 10 bits.
 */
export function keptMantissaBits(uses: ReadonlyArray<{ op: string; inputIndex: number }>): number {
  return uses.length > 0 && uses.every((u) => SEVEN_BIT_INPUTS[u.op]?.includes(u.inputIndex))
    ? KEPT_MANTISSA_BITS
    : HALF_MANTISSA_BITS;
}

/**
 * ONNX uses, op → input indices, whose values decide a shape, a count, an index or a decision rather than scale
 * an activation: rounded to float16, a Resize scale of 1.2497 became 1.25 and the output one row larger; a Range
 * delta of 0.1 gave 11 elements instead of 10; a float index table cast to int64 moved every odd index above
 * 2048 by one; a threshold moves the decisions next to it (found by a new-user sweep, 2026-12-06). A kept tensor
 * with any such use stays exact, also where it is computed on first (`reaches`: T5's `ln 16` in its bucket formula).
 * Cast: its target is often an integer type (indices, sizes).
 */
const EXACT_INPUTS: Readonly<Record<string, readonly number[]>> = {
  Resize: [1, 2],
  Upsample: [1],
  Range: [0, 1, 2],
  Cast: [0],
  CastLike: [0],
  OneHot: [1],
  TopK: [1],
  NonMaxSuppression: [2, 3, 4],
  Less: [0, 1],
  LessOrEqual: [0, 1],
  Greater: [0, 1],
  GreaterOrEqual: [0, 1],
  Equal: [0, 1],
  Floor: [0],
  Ceil: [0],
  Round: [0],
  // a phase: a value's rounding is multiplied by what it scales (a diffusion model's timestep frequencies, f·t for t
  // up to 999: float16's 2^−11 became 4 % of the [cos, sin] embedding at t = 999)
  Sin: [0],
  Cos: [0],
};

/** Whether a kept tensor must stay exact because some use of it decides a shape, an index or a decision (EXACT_INPUTS). */
export function exactUse(
  uses: ReadonlyArray<{ op: string; inputIndex: number; attrs?: Record<string, number | string | number[]> }>,
): boolean {
  // a Cast to a float type (float, float16, double, bfloat16) moves values, it does not index with them
  const toFloat = (u: { op: string; attrs?: Record<string, unknown> }): boolean =>
    (u.op === 'Cast' || u.op === 'CastLike') && [1, 10, 11, 16].includes(u.attrs?.to as number);
  return uses.some((u) => EXACT_INPUTS[u.op]?.includes(u.inputIndex) && !toFloat(u));
}

/**
 * float16 bytes (little-endian) with each value rounded to `keep` mantissa bits, to nearest, ties to even;
 * a value that would round up to infinity keeps its bits. A new array; `bytes` is not modified.
 */
export function roundHalfMantissa(bytes: Uint8Array, keep: number): Uint8Array {
  const drop = 10 - keep;
  const out = Uint8Array.from(bytes);
  if (drop <= 0) return out;
  const half = 1 << (drop - 1);
  for (let i = 0; i + 1 < out.length; i += 2) {
    const x = out[i] | (out[i + 1] << 8);
    const mag = x & 0x7fff;
    if (mag >= 0x7c00) continue; // inf / NaN (not written by toHalfIfSafe)
    const rounded = ((mag + half - 1 + ((mag >> drop) & 1)) >> drop) << drop;
    if (rounded >= 0x7c00) continue;
    const y = (x & 0x8000) | rounded;
    out[i] = y & 255;
    out[i + 1] = y >> 8;
  }
  return out;
}

/**
 * Ops that round activations to integers while the model runs: quantization of activations (QDQ's
 * QuantizeLinear, dynamic quantization's DynamicQuantizeLinear) and the ops that requantize their own output.
 * In such a graph a change of 2^−11 in a scale or a bias moves some roundings by a whole step, and those steps
 * compound layer by layer: ISNet quantized to uint8 (onnxruntime's dynamic quantization, 119 ConvInteger) with
 * its float scales and biases as float16 read fidelity 0.715 (mask IoU 0.895) against 1.0 exact, for 20 kB of
 * a 30.6 MB archive. There, kept tensors stay exact.
 */
const ACTIVATION_ROUNDING_OPS: ReadonlySet<string> = new Set([
  'QuantizeLinear',
  'DynamicQuantizeLinear',
  'DynamicQuantizeMatMul',
  'DynamicQuantizeLSTM',
  'QAttention',
  'QGemm',
]);

/** The first op of the graph that rounds activations at run time (see ACTIVATION_ROUNDING_OPS), if any. */
export function activationRoundingOp(opTypes: ReadonlySet<string> | undefined): string | undefined {
  for (const op of opTypes ?? []) if (ACTIVATION_ROUNDING_OPS.has(op) || op.startsWith('QLinear')) return op;
  return undefined;
}

/** A kept tensor's stored float16 bytes: the safe cast (toHalfIfSafe), rounded to `bits` mantissa bits (see keptMantissaBits). */
export function keptHalf(values: Float32Array, bits: number = KEPT_MANTISSA_BITS): Uint8Array | undefined {
  const bytes = toHalfIfSafe(values);
  return bytes && (bits >= HALF_MANTISSA_BITS ? bytes : roundHalfMantissa(bytes, bits));
}

/** `count` float16 values at element `offset` of the half entry, as float32. */
export function fromHalf(entry: Uint8Array, offset: number, count: number): Float32Array {
  return decodeFloats(entry.subarray(offset * 2, (offset + count) * 2), 'float16');
}
