/**
 * What a model takes and gives: input and output names, element types and shapes with symbolic dimensions,
 * read from the ONNX graph itself (no inference package needed, no session built), plus the top-level nodes and
 * initializer shapes that the synthetic inputs consult (an id input's vocabulary is the row count of the table
 * it gathers from).
 */

import { BadCalibrationError } from '../errors.js';
import {
  MODEL_FUNCTIONS,
  add as addFunction,
  inlineCalls,
  readLocalFunction,
  readNodeProto,
  type CallableNode,
  type LocalFunction,
} from '../formats/onnx/functions.js';
import { WIRE_LEN, WIRE_VARINT, readVarint, utf8, wireFields } from '../formats/onnx/protobuf.js';
import { isElementType, type ElementType } from './tensor.js';

/** A dimension: a size, or the name of a symbolic one ('' when the graph leaves it unnamed). */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  /** Element type; a type this module cannot feed (string, complex, bfloat16) keeps its ONNX name. */
  type: ElementType | string;
  /** Undefined when the graph gives no shape (rank unknown); [] for a scalar. */
  shape: Dim[] | undefined;
}

export interface GraphNode {
  /** The node's name ('' when the graph gives none). */
  name: string;
  op: string;
  inputs: string[];
  outputs: string[];
  /** A node of a local function's body, listed in place of its call (its values renamed under the call's). */
  inlined?: boolean;
  /** Its `axis` attribute, where it has one (a Gather's or a scatter's: synthetic.ts `nodeInputs`). */
  axis?: number;
}

export interface ModelIo {
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  /**
   * Top-level nodes, in graph order (subgraph bodies are not listed); a call of one of the model's local functions
   * is listed as the function's body, its values renamed into the call's.
   */
  nodes: GraphNode[];
  /** Top-level initializers' shapes by name. */
  initializers: Map<string, number[]>;
  /**
   * Inputs with a default value (an initializer of the same name, IR ≥ 4, where not every initializer is listed as
   * an input: see `overridable` in formats/model.ts). None is needed; onnxruntime-node takes no other value for them
   * (it lists and feeds only the other inputs), so a calibration file that names one is refused with that reason.
   */
  defaults?: ValueInfo[];
}

// onnx.proto3 field numbers
const MODEL_IR_VERSION = 1;
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const VALUE_NAME = 1;
const VALUE_TYPE = 2;
const TYPE_TENSOR = 1;
const TENSOR_TYPE_ELEM = 1;
const TENSOR_TYPE_SHAPE = 2;
const SHAPE_DIM = 1;
const DIM_VALUE = 1;
const DIM_PARAM = 2;
const INIT_DIMS = 1;
const INIT_NAME = 8;

/** ONNX TensorProto.DataType codes. */
const ONNX_TYPES: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  14: 'complex64',
  15: 'complex128',
  16: 'bfloat16',
};

/** Reads the model's interface from its graph. `file` names the model in errors. */
export function describeModel(bytes: Uint8Array, file = 'model'): ModelIo {
  let graph: { start: number; end: number } | undefined;
  const functions = new Map<string, LocalFunction>();
  let irVersion = 0;
  for (const f of wireFields(bytes, 0, bytes.length, file))
    if (f.field === MODEL_IR_VERSION && f.wire === WIRE_VARINT) irVersion = f.value;
    else if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN) graph = { start: f.valueStart, end: f.end };
    else if (f.field === MODEL_FUNCTIONS && f.wire === WIRE_LEN)
      addFunction(functions, readLocalFunction(bytes, f.valueStart, f.end, file));
  if (!graph) throw new BadCalibrationError('not an ONNX model: no graph', { file });
  const inputs: ValueInfo[] = [];
  const outputs: ValueInfo[] = [];
  const nodes: Array<GraphNode & CallableNode> = [];
  const initializers = new Map<string, number[]>();
  for (const f of wireFields(bytes, graph.start, graph.end, file)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === GRAPH_INPUT) inputs.push(valueInfo(bytes, f.valueStart, f.end, file));
    else if (f.field === GRAPH_OUTPUT) outputs.push(valueInfo(bytes, f.valueStart, f.end, file));
    else if (f.field === GRAPH_NODE) nodes.push(readNodeProto(bytes, f.valueStart, f.end, file));
    else if (f.field === GRAPH_INITIALIZER) {
      let name = '';
      const dims: number[] = [];
      for (const g of wireFields(bytes, f.valueStart, f.end, file)) {
        if (g.field === INIT_NAME && g.wire === WIRE_LEN) name = utf8(bytes, g.valueStart, g.end);
        else if (g.field === INIT_DIMS) dims.push(...varints(bytes, g, file));
      }
      initializers.set(name, dims);
    }
  }
  // IR < 4 lists initializers among the inputs too: those are weights, not inputs; so are they where every
  // initializer is listed (exporters that keep that convention); otherwise a listed initializer is a default
  const listedInits = inputs.filter((i) => initializers.has(i.name));
  const defaults = irVersion >= 4 && listedInits.length < initializers.size ? listedInits : [];
  const listed = inlineCalls(
    nodes.map((n, i) => ({ ...n, path: `${i}` })),
    functions,
    (call, body) => ({ ...body, name: call.name, path: call.path, inlined: true }),
    file,
  ).map(({ name, op, inputs, outputs, inlined, attrs }): GraphNode => ({
    name,
    op,
    inputs,
    outputs,
    ...(inlined ? { inlined } : {}),
    ...(typeof attrs?.axis === 'number' ? { axis: attrs.axis } : {}),
  }));
  return {
    inputs: inputs.filter((i) => !initializers.has(i.name)),
    outputs,
    nodes: listed,
    initializers,
    ...(defaults.length ? { defaults } : {}),
  };
}

function varints(bytes: Uint8Array, f: { wire: number; value: number; valueStart: number; end: number }, file: string): number[] {
  if (f.wire === WIRE_VARINT) return [f.value];
  const out: number[] = [];
  let p = f.valueStart;
  while (p < f.end) {
    const [v, np] = readVarint(bytes, p, f.end, file);
    out.push(v);
    p = np;
  }
  return out;
}

function valueInfo(bytes: Uint8Array, start: number, end: number, file: string): ValueInfo {
  const v: ValueInfo = { name: '', type: 'unknown', shape: undefined };
  for (const f of wireFields(bytes, start, end, file)) {
    if (f.field === VALUE_NAME && f.wire === WIRE_LEN) v.name = utf8(bytes, f.valueStart, f.end);
    else if (f.field === VALUE_TYPE && f.wire === WIRE_LEN)
      for (const t of wireFields(bytes, f.valueStart, f.end, file)) {
        if (t.field !== TYPE_TENSOR || t.wire !== WIRE_LEN) {
          if (t.wire === WIRE_LEN) v.type = 'non-tensor';
          continue;
        }
        for (const g of wireFields(bytes, t.valueStart, t.end, file)) {
          if (g.field === TENSOR_TYPE_ELEM && g.wire === WIRE_VARINT) v.type = ONNX_TYPES[g.value] ?? `onnx type ${g.value}`;
          else if (g.field === TENSOR_TYPE_SHAPE && g.wire === WIRE_LEN) {
            v.shape = [];
            for (const d of wireFields(bytes, g.valueStart, g.end, file)) {
              if (d.field !== SHAPE_DIM || d.wire !== WIRE_LEN) continue;
              let dim: Dim = '';
              for (const x of wireFields(bytes, d.valueStart, d.end, file)) {
                if (x.field === DIM_VALUE && x.wire === WIRE_VARINT) dim = x.value;
                else if (x.field === DIM_PARAM && x.wire === WIRE_LEN) dim = utf8(bytes, x.valueStart, x.end);
              }
              v.shape.push(dim);
            }
          }
        }
      }
  }
  return v;
}

/** Whether a model input can be fed by this module (numeric tensor). */
export function isFeedable(v: ValueInfo): v is ValueInfo & { type: ElementType } {
  return isElementType(v.type);
}

export function formatShape(shape: readonly Dim[] | undefined): string {
  if (!shape) return '[?]';
  return `[${shape.map((d) => (typeof d === 'number' ? String(d) : d || '?')).join(',')}]`;
}

export function formatValueInfo(v: ValueInfo): string {
  return `${v.name} ${v.type}${formatShape(v.shape)}`;
}
