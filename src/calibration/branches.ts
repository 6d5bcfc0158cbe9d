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
import { WIRE_LEN, encodeVarint, lenField, wireFields } from '../formats/onnx/protobuf.js';
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

/** Counts, over every run of the samples, which branch each top-level `If` takes. */
export async function branchCoverage(
  model: Uint8Array,
  samples: readonly CalibrationSample[],
  options: Pick<RunnerOptions, 'threads' | 'signal' | 'file'> = {},
): Promise<BranchCoverage[]> {
  const io = describeModel(model, options.file);
  const ifs = io.nodes.filter((n) => n.op === 'If');
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
  const runner = await CalibrationRunner.open(probe, { ...options });
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
          }
        },
      });
  } finally {
    await runner.close();
  }
  return coverage;
}
