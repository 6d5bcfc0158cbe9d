/**
 * Which `If` branches a calibration set takes. A copy of the model gets each top-level `If` node's condition
 * as an extra graph output (a wire-level edit: the graph message gains `output` fields, every other byte is
 * copied), the copy runs over the samples, and each condition's values are counted. A branch no sample takes
 * is one the probes never exercised: its tensors must not be starved, and a report should name it.
 *
 * Limits: top-level `If` nodes only (an `If` nested in a subgraph has its condition in the subgraph's scope);
 * `Loop` bodies are not tracked.
 */

import { concatBytes } from '../io/bytes.js';
import { BadCalibrationError } from '../errors.js';
import { WIRE_LEN, encodeVarint, lenField, utf8, wireFields } from '../formats/onnx/protobuf.js';
import { occurrenceCounter, pathJoin } from '../formats/onnx/rebuild.js';
import { describeModel } from './model-io.js';
import { CalibrationRunner, type RunnerOptions } from './runner.js';
import type { CalibrationSample } from './types.js';

export interface BranchCoverage {
  /** The If node's name (or its first output's name when unnamed). */
  node: string;
  /** The tensor that decides (a bool scalar). */
  condition: string;
  /** Runs that took each branch. */
  then: number;
  else: number;
}

const MODEL_GRAPH = 7;
const GRAPH_OUTPUT = 12;
const ONNX_BOOL = 9;

/** A ValueInfoProto for a bool tensor of unknown shape. */
function boolValueInfo(name: string): Uint8Array {
  const tensorType = concatBytes([encodeVarint((1 << 3) | 0), encodeVarint(ONNX_BOOL)]);
  const type = concatBytes(lenField(1, [tensorType]));
  return concatBytes(
    lenField(GRAPH_OUTPUT, [concatBytes(lenField(1, [new TextEncoder().encode(name)])), concatBytes(lenField(2, [type]))]),
  );
}

/** The model with extra bool graph outputs (names already among the outputs are skipped). */
export function withBoolOutputs(model: Uint8Array, names: readonly string[]): Uint8Array {
  const io = describeModel(model);
  const add = [...new Set(names)].filter((n) => !io.outputs.some((o) => o.name === n));
  if (!add.length) return model;
  const parts: Uint8Array[] = [];
  let seen = false;
  for (const f of wireFields(model, 0, model.length)) {
    if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN && !seen) {
      seen = true;
      parts.push(...lenField(MODEL_GRAPH, [model.subarray(f.valueStart, f.end), ...add.map(boolValueInfo)]));
    } else parts.push(model.subarray(f.start, f.end));
  }
  return concatBytes(parts);
}

/**
 * Counts, over every run of the samples, which branch each top-level `If` takes. `taken`, when given, gets for
 * each sample (by index) the branches any of its runs took, as `node: then|else`.
 */
export async function branchCoverage(
  model: Uint8Array,
  samples: readonly CalibrationSample[],
  options: Pick<RunnerOptions, 'threads' | 'signal' | 'file'> & { taken?: Map<number, Set<string>> } = {},
): Promise<BranchCoverage[]> {
  const io = describeModel(model, options.file);
  // (an If inside a local function decides on the function's own values, which no graph output can name)
  const ifs = io.nodes.filter((n) => n.op === 'If' && !n.inlined);
  if (!ifs.length) return [];
  const coverage: BranchCoverage[] = ifs.map((n) => ({ node: n.name || n.outputs[0], condition: n.inputs[0], then: 0, else: 0 }));
  const fromInputs = new Set(io.inputs.map((i) => i.name));
  const constant = coverage.find((c) => io.initializers.has(c.condition));
  if (constant)
    throw new BadCalibrationError(`If node ${constant.node} has a constant condition ${constant.condition}`, {
      file: options.file,
    });
  const probe = withBoolOutputs(
    model,
    coverage.filter((c) => !fromInputs.has(c.condition)).map((c) => c.condition),
  );
  const { taken, ...runnerOptions } = options;
  const runner = await CalibrationRunner.open(probe, runnerOptions);
  try {
    for (const sample of samples)
      await runner.run(sample, {
        keep: false,
        onRun: ({ feed, outputs }) => {
          for (const c of coverage) {
            const t = outputs[c.condition] ?? feed[c.condition];
            if (!t) continue;
            if (t.data[0]) c.then++;
            else c.else++;
            if (taken) {
              let set = taken.get(sample.index);
              if (!set) taken.set(sample.index, (set = new Set()));
              set.add(`${c.node}: ${t.data[0] ? 'then' : 'else'}`);
            }
          }
        },
      });
  } finally {
    await runner.close();
  }
  return coverage;
}

/** The float tensors (initializers and Constant values, at any depth) inside each top-level `If` node's branches. */
export interface BranchTensors {
  node: string;
  then: string[];
  else: string[];
  /**
   * Where each branch's graph sits in the file, as the ONNX reader's tensor locations spell it (protobuf field
   * path, `7.0/1.12/5.0/6.0`): the tensors of a branch are those whose `location` starts with it and a `/`.
   * Names alone do not tell the branches apart: Silero v6 holds `encoder.0.reparam_conv.weight` in both.
   */
  thenPath: string;
  elsePath: string;
}

const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const NODE_OUTPUT = 2;
const NODE_NAME = 3;
const NODE_OP = 4;
const NODE_ATTRIBUTE = 5;
const ATTR_NAME = 1;
const ATTR_T = 5;
const ATTR_G = 6;
const ATTR_GRAPHS = 11;
const TENSOR_NAME = 8;

/** The names of the tensors a subgraph holds (its initializers, its Constant nodes' outputs), nested ones too. */
function subgraphTensors(model: Uint8Array, start: number, end: number, into: string[]): void {
  for (const f of wireFields(model, start, end)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === GRAPH_INITIALIZER)
      for (const t of wireFields(model, f.valueStart, f.end))
        if (t.field === TENSOR_NAME && t.wire === WIRE_LEN) into.push(utf8(model, t.valueStart, t.end));
    if (f.field !== GRAPH_NODE) continue;
    let op = '';
    const outputs: string[] = [];
    for (const n of wireFields(model, f.valueStart, f.end)) {
      if (n.wire !== WIRE_LEN) continue;
      if (n.field === NODE_OP) op = utf8(model, n.valueStart, n.end);
      else if (n.field === NODE_OUTPUT) outputs.push(utf8(model, n.valueStart, n.end));
      else if (n.field === NODE_ATTRIBUTE)
        for (const a of wireFields(model, n.valueStart, n.end)) {
          if (a.wire !== WIRE_LEN) continue;
          if (a.field === ATTR_G || a.field === ATTR_GRAPHS) subgraphTensors(model, a.valueStart, a.end, into);
          else if (a.field === ATTR_T)
            for (const t of wireFields(model, a.valueStart, a.end))
              if (t.field === TENSOR_NAME && t.wire === WIRE_LEN) into.push(utf8(model, t.valueStart, t.end));
        }
    }
    if (op === 'Constant') into.push(...outputs);
  }
}

/** For each top-level `If` node (named as in `branchCoverage`), the tensors of its then and else branches. */
export function branchTensors(model: Uint8Array): BranchTensors[] {
  const out: BranchTensors[] = [];
  // occurrences counted per field number over every field, as the ONNX reader counts them for its locations
  const modelCount = occurrenceCounter();
  for (const m of wireFields(model, 0, model.length)) {
    const modelOcc = modelCount(m.field);
    if (m.field !== MODEL_GRAPH || m.wire !== WIRE_LEN) continue;
    const graphPath = pathJoin('', m.field, modelOcc);
    const graphCount = occurrenceCounter();
    for (const f of wireFields(model, m.valueStart, m.end)) {
      const nodeOcc = graphCount(f.field);
      if (f.field !== GRAPH_NODE || f.wire !== WIRE_LEN) continue;
      const nodePath = pathJoin(graphPath, f.field, nodeOcc);
      const nodeCount = occurrenceCounter();
      let op = '';
      let name = '';
      let firstOutput = '';
      const branches: Record<string, string[]> = { then_branch: [], else_branch: [] };
      const paths: Record<string, string> = { then_branch: '', else_branch: '' };
      for (const n of wireFields(model, f.valueStart, f.end)) {
        const attrOcc = nodeCount(n.field);
        if (n.wire !== WIRE_LEN) continue;
        if (n.field === NODE_OP) op = utf8(model, n.valueStart, n.end);
        else if (n.field === NODE_NAME) name = utf8(model, n.valueStart, n.end);
        else if (n.field === NODE_OUTPUT && !firstOutput) firstOutput = utf8(model, n.valueStart, n.end);
        else if (n.field === NODE_ATTRIBUTE) {
          let attr = '';
          let graph: [number, number, string] | undefined;
          const attrCount = occurrenceCounter();
          for (const a of wireFields(model, n.valueStart, n.end)) {
            const occ = attrCount(a.field);
            if (a.field === ATTR_NAME && a.wire === WIRE_LEN) attr = utf8(model, a.valueStart, a.end);
            else if (a.field === ATTR_G && a.wire === WIRE_LEN)
              graph = [a.valueStart, a.end, pathJoin(pathJoin(nodePath, n.field, attrOcc), a.field, occ)];
          }
          if (graph && attr in branches) {
            subgraphTensors(model, graph[0], graph[1], branches[attr]);
            paths[attr] = graph[2];
          }
        }
      }
      if (op === 'If')
        out.push({
          node: name || firstOutput,
          then: branches.then_branch,
          else: branches.else_branch,
          thenPath: paths.then_branch,
          elsePath: paths.else_branch,
        });
    }
    break;
  }
  return out;
}
