/**
 * Decision values: the float values whose comparison picks a top-level `If` branch (a wake-word detector's
 * first-stage score, `p1 ≥ 0.5`, that decides whether a verifier network runs). A weight that feeds only such a
 * value moves the model's outputs only when a decision flips, so a probe that compares outputs sees nothing
 * until it sees a jump: hey_jarvis's first stage (62 % of its weights) measured a sensitivity of exactly 0 and
 * was given the coarsest grid at every budget, and every `--target-bpw` was refused (docs/generalization.md).
 * The sensitivity probes therefore compare these values too, exposed as extra graph outputs of a copy of the
 * model (a wire-level edit: a Cast node and a graph output are appended, every other byte is copied).
 *
 * Found by walking each top-level `If` condition back through boolean plumbing (Cast, Not, And, Or, Xor,
 * Identity, ReduceMax/ReduceMin as any/all, reshapes, Gather/Slice of the data) to comparisons (Greater,
 * GreaterOrEqual, Less, LessOrEqual, Equal); their operands that are computed in the graph (not graph inputs,
 * initializers or Constant nodes) are the decision values.
 * Conditions inside subgraphs and `Loop` conditions are not followed.
 */

import { parseOnnxGraph, producers, type OnnxGraph } from '../compensate/graph.js';
import { exposeValues } from '../compensate/graph-edit.js';
import { calibratorFor } from './runner.js';
import type { CalibrationSample } from './types.js';

const COMPARISONS = new Set(['Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual', 'Equal']);
/** Ops that carry a condition through (any of a vector: ReduceMax of its 0/1 cast; all: ReduceMin). */
const BOOLEAN_PLUMBING = new Set([
  'Cast',
  'Not',
  'And',
  'Or',
  'Xor',
  'Identity',
  'ReduceMax',
  'ReduceMin',
  'Squeeze',
  'Unsqueeze',
  'Flatten',
]);
/** Plumbing whose later inputs are shapes or indices: only the data (first input) is followed. */
const DATA_FIRST = new Set(['Reshape', 'Gather', 'Slice', 'Expand']);
/** How far back a condition is followed through plumbing. */
const MAX_DEPTH = 16;

/** The names of the computed float values that decide top-level `If` conditions (empty when there are none). */
export function decisionValues(graph: OnnxGraph): string[] {
  const made = producers(graph);
  const out = new Set<string>();
  const visit = (name: string, depth: number): void => {
    const node = made.get(name)?.node;
    if (!node || depth > MAX_DEPTH) return;
    if (COMPARISONS.has(node.op)) {
      for (const x of node.inputs) {
        const src = made.get(x);
        // computed here, not a constant (a Constant node's output, an initializer) or a graph input
        if (src?.node && src.node.op !== 'Constant') out.add(x);
      }
    } else if (DATA_FIRST.has(node.op)) visit(node.inputs[0], depth + 1);
    else if (BOOLEAN_PLUMBING.has(node.op)) for (const x of node.inputs) if (x) visit(x, depth + 1);
  };
  for (const n of graph.nodes) if (n.op === 'If' && n.inputs[0]) visit(n.inputs[0], 0);
  return [...out];
}

export interface DecisionProbe {
  /** The model with every decision value as an extra float32 graph output. */
  model: Uint8Array;
  /** The decision values' names in the model. */
  values: string[];
  /** Their graph output names in `model`, in the same order. */
  outputs: string[];
}

/** The model with its decision values exposed as outputs, or undefined when no `If` is decided by one. */
export function exposeDecisions(model: Uint8Array, file?: string): DecisionProbe | undefined {
  const view = parseOnnxGraph(model, file);
  const values = decisionValues(view.main);
  if (!values.length) return undefined;
  const exposed = exposeValues(
    view,
    values.map((name) => ({ graph: view.main, name })),
  );
  return { model: exposed.model, values, outputs: exposed.outputs };
}

/**
 * A probe calibrator (model bytes → one float vector) over a model with decision outputs: the outputs compared
 * (`outputs`, default every float output but recurrent state) and the decision outputs, each decision scaled so
 * that its root mean square on the first model run (the reference) equals that of the other outputs together:
 * a relative change of a decision value weighs as much as the same relative change of the outputs. The scales
 * are found on the reference run itself, whose decision parts are scaled afterwards (no second run).
 */
export function decisionCalibrator(
  samples: readonly CalibrationSample[],
  outputs: readonly string[] | undefined,
  decisionOutputs: readonly string[],
): (model: Uint8Array) => Promise<Float32Array> {
  const decisions = new Set(decisionOutputs);
  let scale: Map<string, number> | undefined;
  // the reference run: each output's part of the vector, in order, and its sum of squares
  const parts: Array<{ name: string; length: number }> = [];
  const sums = new Map<string, { sq: number; n: number }>();
  const inner = calibratorFor(samples, {
    ...(outputs ? { outputs: [...outputs, ...decisionOutputs] } : {}),
    transform: (name, values) => {
      if (scale) {
        const f = scale.get(name);
        return f === undefined ? values : values.map((v) => v * f);
      }
      parts.push({ name, length: values.length });
      const s = sums.get(name) ?? { sq: 0, n: 0 };
      for (const v of values) if (Number.isFinite(v)) s.sq += v * v;
      s.n += values.length;
      sums.set(name, s);
      return values;
    },
  });
  return async (model) => {
    if (scale) return inner(model);
    const reference = await inner(model);
    let sq = 0;
    let n = 0;
    for (const [name, s] of sums)
      if (!decisions.has(name)) {
        sq += s.sq;
        n += s.n;
      }
    const ms = n ? sq / n : 1;
    scale = new Map(
      [...sums].filter(([name, s]) => decisions.has(name) && s.sq > 0).map(([name, s]) => [name, Math.sqrt(ms / (s.sq / s.n))]),
    );
    let at = 0;
    for (const { name, length } of parts) {
      const f = scale.get(name);
      if (f !== undefined) for (let k = at; k < at + length; k++) reference[k] *= f;
      at += length;
    }
    return reference;
  };
}
