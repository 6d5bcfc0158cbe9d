/**
 * Input shapes: the `NAME=SHAPE` syntax (`--input x=1,3,224,224`, `--input sequence=1536` to bind a symbolic
 * dimension), and fitting data to a model input: fixed dimensions must match, a symbolic dimension takes its size
 * from the data and must keep it across the inputs of one run, and data without the batch axis gets one.
 */

import { BadCalibrationError, OptionError } from '../errors.js';
import type { Dim, ValueInfo } from './model-io.js';
import { formatShape } from './model-io.js';
import { MAX_RANK, type CalibrationTensor } from './tensor.js';

/** Larger than any real dimension; a bound on what `NAME=SHAPE` accepts. */
const MAX_DIM = 2 ** 31 - 1;

/** A shape given by the user for one input (or, with a single size, a symbolic dimension's size). */
export interface InputShape {
  name: string;
  shape: number[];
}

/**
 * Parses `NAME=SHAPE`. SHAPE is sizes separated by `,` or `x` (`1,3,48,320`, `1x3x48x320`, `[1,3,48,320]`);
 * `[]` is a scalar. NAME is an input name, or the name of a symbolic dimension with a single size
 * (`batch=1`). The last `=` separates them, so input names may contain `=`.
 */
export function parseInputShape(text: string, flag = '--input'): InputShape {
  const bad = (): never => {
    throw new OptionError(`Expected NAME=SHAPE (e.g. x=1,3,224,224) for ${flag} but received ${JSON.stringify(text)}`);
  };
  if (typeof text !== 'string') bad();
  const at = text.lastIndexOf('=');
  if (at <= 0) bad();
  const name = text.slice(0, at).trim();
  let body = text.slice(at + 1).trim();
  if (!name) bad();
  if (body.startsWith('[') && body.endsWith(']')) body = body.slice(1, -1).trim();
  else if (body === '') bad();
  const shape = body === '' ? [] : body.split(/\s*[,x×]\s*/).map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (shape.length > MAX_RANK)
    throw new OptionError(`Expected at most ${MAX_RANK} dimensions for ${flag} ${name} but received ${shape.length}`);
  for (const d of shape)
    if (!Number.isSafeInteger(d) || d < 1 || d > MAX_DIM)
      throw new OptionError(
        `Expected sizes between 1 and ${MAX_DIM} in ${flag} ${name}=SHAPE but received ${JSON.stringify(text)}`,
      );
  return { name, shape };
}

export const isFixedDim = (d: Dim): d is number => typeof d === 'number' && d >= 1 && d <= MAX_DIM;

/** Sizes given for symbolic dimensions, by name, and the per-input shapes; checked against the model. */
export interface ShapeOverrides {
  inputs: Map<string, number[]>;
  dims: Map<string, number>;
}

/** Splits `NAME=SHAPE` values into input shapes and symbolic-dimension sizes, naming what the model has. */
export function resolveShapeOverrides(given: readonly InputShape[], inputs: readonly ValueInfo[]): ShapeOverrides {
  const out: ShapeOverrides = { inputs: new Map(), dims: new Map() };
  const symbols = new Set(inputs.flatMap((i) => (i.shape ?? []).filter((d): d is string => typeof d === 'string' && d !== '')));
  for (const g of given) {
    const input = inputs.find((i) => i.name === g.name);
    if (input) {
      if (input.shape) {
        const fits = input.shape.length === g.shape.length && input.shape.every((d, k) => !isFixedDim(d) || d === g.shape[k]);
        if (!fits)
          throw new OptionError(
            `--input ${g.name}=${g.shape.join(',')} does not fit the model's input ${g.name} ${formatShape(input.shape)}`,
          );
      }
      out.inputs.set(g.name, g.shape);
    } else if (symbols.has(g.name) && g.shape.length === 1) out.dims.set(g.name, g.shape[0]);
    else
      throw new OptionError(
        `--input ${g.name}: the model has no input or symbolic dimension of that name; inputs: ${inputs
          .map((i) => `${i.name}${formatShape(i.shape)}`)
          .join(', ')}`,
      );
  }
  return out;
}

/**
 * The batch an input takes where it is more than one: its first dimension fixed by the model, by `--input NAME=SHAPE`
 * or by `--input DIM=N` for a symbolic one; 1 otherwise. Pictures are made and read one at a time and stacked to it.
 */
export function fixedBatch(input: ValueInfo, overrides: ShapeOverrides): number {
  // (a rank-3 picture [3, H, W] or [H, W, 3] has no batch axis)
  if ((overrides.inputs.get(input.name) ?? input.shape)?.length !== 4) return 1;
  const given = overrides.inputs.get(input.name)?.[0];
  const d = input.shape?.[0];
  const n = given ?? (typeof d === 'number' ? d : typeof d === 'string' && d !== '' ? overrides.dims.get(d) : undefined);
  return n !== undefined && Number.isSafeInteger(n) && n > 1 ? n : 1;
}

/**
 * Fits data to a model input: the same rank (or one less, when the input's first dimension is 1 or symbolic:
 * a batch axis of 1 is added), fixed dimensions equal, symbolic ones bound in `bindings` (shared by the inputs of
 * one run, so `batch` or `sequence` must agree between them). Returns the dimensions to feed.
 */
export function fitDims(
  data: readonly number[],
  input: ValueInfo,
  bindings: Map<string, number>,
  context: { file?: string },
): number[] {
  const shape = input.shape;
  if (!shape) return [...data];
  let dims = [...data];
  if (dims.length === shape.length - 1 && (shape[0] === 1 || !isFixedDim(shape[0]))) dims = [1, ...dims];
  const mismatch = (why: string): never => {
    throw new BadCalibrationError(
      `data of shape [${data.join(',')}] does not fit input ${input.name} ${formatShape(shape)}: ${why}; give data of that shape or --input ${input.name}=SHAPE`,
      { ...context, tensor: input.name },
    );
  };
  if (dims.length !== shape.length) mismatch(`rank ${data.length}, the input takes rank ${shape.length}`);
  shape.forEach((d, k) => {
    if (isFixedDim(d)) {
      if (dims[k] !== d) mismatch(`dimension ${k} is ${dims[k]}, the model fixes it at ${d}`);
    } else if (typeof d === 'string' && d !== '') {
      const bound = bindings.get(d);
      if (bound !== undefined && bound !== dims[k])
        mismatch(`dimension ${k} (${d}) is ${dims[k]} but another input of the same run gives ${d} = ${bound}`);
      bindings.set(d, dims[k]);
    }
  });
  return dims;
}

/** Fits a tensor (see `fitDims`); the data is shared, only the dimensions may gain the batch axis. */
export function fitTensor(
  t: CalibrationTensor,
  input: ValueInfo,
  bindings: Map<string, number>,
  context: { file?: string },
): CalibrationTensor {
  const dims = fitDims(t.dims, input, bindings, context);
  return dims.length === t.dims.length ? t : { ...t, dims };
}
