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

/** Ops that only move or reshape values on the way from a score activation to a detector's output. */
const SHAPE_ONLY = new Set(['Reshape', 'Transpose', 'Identity', 'Flatten', 'Squeeze', 'Unsqueeze', 'Cast']);

/**
 * Graph outputs that pack a detector's class scores after its boxes: made by a `Concat` (then perhaps reshaped or
 * transposed) whose last input is a `Sigmoid`'s or `Softmax`'s output, through reshapes and transposes (YOLOv8: `Concat(boxes · strides,
 * Sigmoid(classes))` along the channels). The quality gate compares their confident class decisions
 * (eval/fidelity.ts); the values alone are dominated by the boxes. Other outputs whose channels happen to end in
 * [0, 1] (a spectrogram's high bins) are not such outputs.
 */
export function detectorOutputs(graph: OnnxGraph): string[] {
  const made = producers(graph);
  const activation = (name: string, depth = 0): boolean => {
    const node = made.get(name)?.node;
    if (!node || depth > MAX_DEPTH) return false;
    if (node.op === 'Sigmoid' || node.op === 'Softmax') return true;
    return SHAPE_ONLY.has(node.op) && activation(node.inputs[0], depth + 1);
  };
  // the output's Concat, through reshapes and transposes after it ([1, anchors, channels] exports)
  const concat = (name: string, depth = 0): OnnxGraph['nodes'][number] | undefined => {
    const node = made.get(name)?.node;
    if (!node || depth > MAX_DEPTH) return undefined;
    if (node.op === 'Concat') return node;
    return SHAPE_ONLY.has(node.op) ? concat(node.inputs[0], depth + 1) : undefined;
  };
  return graph.outputs.filter((o) => {
    const node = concat(o);
    return node !== undefined && node.inputs.length >= 2 && activation(node.inputs[node.inputs.length - 1]);
  });
}
