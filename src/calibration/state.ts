/**
 * Recurrent state and side inputs, found from the model's input and output names and shapes.
 *
 * A state link pairs an input with the output that carries its next value: the output is named after the input
 * (`h` → `hn`, `c` → `cn`, `state` → `stateN`, `h_in` → `h_out`, `past_x` → `present_x`, `x` → `x_out`/`next_x`…)
 * and, where both shapes are known, has the same rank and the same fixed sizes. Stateful models run a sample as
 * a sequence of windows, each window's state inputs taking the previous window's state outputs (zeros at the
 * start). `--state IN=OUT` (`StateLink`s in the spec) replaces the detected links.
 *
 * A rate input is a scalar or one-element integer or float input named `sr`, `rate`, `sample_rate`,
 * `sampling_rate` or `sample_rate_hz`: it is fed the audio rate.
 */

import { BadCalibrationError } from '../errors.js';
import type { ModelIo, ValueInfo } from './model-io.js';
import { isFixedDim } from './shape.js';

export interface StateLink {
  input: string;
  output: string;
}

/** Output names that carry an input's next value, in order of preference. */
function successorNames(input: string): string[] {
  const names = [
    `${input}n`,
    `${input}N`,
    `${input}_n`,
    `${input}_out`,
    `${input}out`,
    `${input}_next`,
    `${input}_new`,
    `next_${input}`,
    `new_${input}`,
  ];
  if (/_?in$/i.test(input)) names.push(input.replace(/in$/i, 'out'));
  if (/^in_/i.test(input)) names.push(input.replace(/^in_/i, 'out_'));
  if (/past/i.test(input)) names.push(input.replace(/past/i, 'present'));
  if (/_?prev$/i.test(input)) names.push(input.replace(/prev$/i, 'next'));
  return names;
}

function shapesCompatible(a: ValueInfo, b: ValueInfo): boolean {
  if (a.type !== b.type) return false;
  if (!a.shape || !b.shape || b.shape.every((d) => !isFixedDim(d))) return true;
  return (
    a.shape.length === b.shape.length && a.shape.every((d, k) => !isFixedDim(d) || !isFixedDim(b.shape![k]) || d === b.shape![k])
  );
}

/** The state links of a model: float inputs whose next value an output carries (see the module comment). */
export function findStateLinks(io: Pick<ModelIo, 'inputs' | 'outputs'>): StateLink[] {
  const links: StateLink[] = [];
  const used = new Set<string>();
  for (const input of io.inputs) {
    if (!String(input.type).startsWith('float') || !input.shape || input.shape.length < 1) continue;
    for (const name of successorNames(input.name)) {
      const out = io.outputs.find((o) => o.name === name);
      if (out && !used.has(out.name) && shapesCompatible(input, out)) {
        links.push({ input: input.name, output: out.name });
        used.add(out.name);
        break;
      }
    }
  }
  return links;
}

/** Checks user-given links against the model. */
export function checkStateLinks(links: readonly StateLink[], io: Pick<ModelIo, 'inputs' | 'outputs'>): StateLink[] {
  for (const l of links) {
    if (!io.inputs.some((i) => i.name === l.input))
      throw new BadCalibrationError(`--state ${l.input}=${l.output}: the model has no input ${l.input}`);
    if (!io.outputs.some((o) => o.name === l.output))
      throw new BadCalibrationError(`--state ${l.input}=${l.output}: the model has no output ${l.output}`);
  }
  return [...links];
}

const RATE_NAMES = /^(sr|rate|sample_?rate|sampling_?rate|sample_rate_hz)$/i;

/** The input that takes the sample rate, if any (see the module comment). */
export function findRateInput(io: Pick<ModelIo, 'inputs'>): ValueInfo | undefined {
  return io.inputs.find(
    (i) =>
      RATE_NAMES.test(i.name) && (i.shape === undefined || i.shape.length === 0 || (i.shape.length === 1 && i.shape[0] === 1)),
  );
}
