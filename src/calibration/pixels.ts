/**
 * A model that rescales its own pixels: Keras's `Rescaling(1/255)` or `Rescaling(1/127.5, offset=−1)` layer, exported
 * by tf2onnx as a `Mul` by a constant right after the image input (through a `Transpose` to NCHW or a `Cast`), or a
 * `Div` by 255 or 127.5. Such a model takes pixels in [0, 255]: pictures in [−1, 1] or [0, 1] become nearly constant
 * inside it (every synthetic sample gave the same class, and the gate refused a healthy default, found by a
 * new-user sweep).
 */

import { elementCount, type ModelReader } from '../formats/model.js';
import { OnnxReader } from '../formats/onnx/reader.js';
import type { ImageSpecInput } from './image.js';
import type { ModelIo, ValueInfo } from './model-io.js';

/** What a description adds where pictures go in as 0–255 for that reason. */
export const PIXELS_NOTE = ', pixels 0–255: the graph rescales them itself';

/** Whether the user gave how pixels map to values (a range, scale, mean or std): then nothing is assumed. */
export function valuesGiven(image: ImageSpecInput | undefined): boolean {
  return [image?.range, image?.scale, image?.mean, image?.std].some((v) => v !== undefined);
}

/**
 * Whether the float image input `input` of this ONNX model (its bytes) takes pixels as they are, 0–255, where the
 * user gave no mapping of their own (`rescalesPixels`).
 */
export function takesPixels(
  io: ModelIo,
  model: Uint8Array,
  input: ValueInfo | undefined,
  image: ImageSpecInput | undefined,
  file = '<model>',
): boolean {
  return (
    input !== undefined &&
    input.type !== 'uint8' &&
    !valuesGiven(image) &&
    rescalesPixels(io, new OnnxReader(file, model), input.name)
  );
}

/** Ops that carry the input's values unchanged to where they are scaled. */
const PASS_THROUGH = new Set(['Transpose', 'Cast', 'Identity', 'Reshape']);
/** The factors a pixel rescaling multiplies by, and the divisors it divides by. */
const FACTORS = [1 / 255, 1 / 127.5];
const DIVISORS = [255, 127.5];

const near = (v: number, targets: readonly number[]): boolean => targets.some((t) => Math.abs(v - t) <= 1e-3 * t);

/** Whether the image input `input` is scaled by 1/255 or 1/127.5 by the graph's first arithmetic on it. */
export function rescalesPixels(io: ModelIo, reader: Pick<ModelReader, 'tensors' | 'read'>, input: string): boolean {
  const constant = (name: string): Float32Array | undefined => {
    const t = reader.tensors.find((x) => x.name === name);
    return t && elementCount(t.shape) <= 4 ? reader.read(t.key) : undefined;
  };
  let value = input;
  for (let depth = 0; depth < 4; depth++) {
    const uses = io.nodes.filter((n) => n.inputs.includes(value));
    if (uses.length !== 1) return false;
    const node = uses[0];
    if (PASS_THROUGH.has(node.op) && node.inputs[0] === value) {
      value = node.outputs[0];
      continue;
    }
    const other = node.inputs.find((x) => x !== value);
    const c = other === undefined ? undefined : constant(other);
    if (!c?.length) return false;
    if (node.op === 'Mul') return [...c].every((v) => near(v, FACTORS));
    if (node.op === 'Div' && node.inputs[0] === value) return [...c].every((v) => near(v, DIVISORS));
    return false;
  }
  return false;
}
