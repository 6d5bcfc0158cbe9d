/**
 * Weights as graph inputs: a copy of an ONNX model in which chosen tensors are no longer constants but inputs of
 * the main graph, so that one onnxruntime session runs the model with any values of them. Rate control's
 * sensitivity probes run the model once per tensor and candidate grid with that tensor's values replaced; built
 * and loaded anew each time, the model cost more than its runs (PaddleOCR rec: 0.1 s to rebuild and 0.1–0.2 s to
 * load against 15–25 ms a run; ISNet fp16: 1–1.5 s and 0.7–0.9 s against 1.4 s).
 *
 * A main-graph initializer is replaced by an empty one of another name (onnxruntime drops it unused) and its name
 * becomes a graph input; a Constant node, in the main graph or in any subgraph below it, becomes an Identity of a
 * new graph input (`nnmedia.fed.N`: a subgraph reads it from the outer scope, and two branches' tensors of one
 * name stay apart). Every other byte is copied. Tensors inside model-local functions (which see no outer scope)
 * and tensors of other element types than float32 and float16 are not made inputs.
 */

import { BadModelError } from '../../errors.js';
import { WIRE_LEN, lenField, stringField as str, utf8, varintField as varint, wireFields } from './protobuf.js';
import {
  type Piece,
  ATTR_NAME,
  ATTR_T,
  GRAPH_INPUT,
  GRAPH_NODE,
  MAIN_INITIALIZER_PATH,
  MODEL_GRAPH,
  NODE_ATTRIBUTE,
  NODE_INPUT,
  NODE_NAME,
  NODE_OP_TYPE,
  NODE_OUTPUT,
  TENSOR_DATA_TYPE,
  TENSOR_DIMS,
  TENSOR_NAME,
  rewritePieces,
} from './rebuild.js';
import { concatBytes } from '../../io/bytes.js';
import type { FloatDType, ModelReader } from '../model.js';

const ONNX_ELEMENT: Partial<Record<FloatDType, number>> = { float32: 1, float16: 10 };

/** A tensor made a graph input. */
export interface FedInput {
  /** The graph input that takes its values. */
  name: string;
  dtype: 'float32' | 'float16';
  shape: number[];
}

export interface FedModel {
  /** The model, without the data of the fed tensors. */
  bytes: Uint8Array;
  /** Tensor key → the input that takes its values. */
  inputs: Map<string, FedInput>;
}

/** A Constant node's tensor: its node's path, then the attribute and its `t` field. */
const CONSTANT_TENSOR = /^(7\.0(?:\/.+)?\/1\.\d+)\/5\.\d+\/5\.0$/;

/** AttributeProto.type, and its value for a tensor. */
const ATTR_TYPE = 20;
const ATTR_TYPE_TENSOR = 4;

/** A ValueInfoProto of a tensor of fixed shape. */
function tensorInput(name: string, elemType: number, shape: readonly number[]): Uint8Array[] {
  const dims = shape.flatMap((d) => lenField(1, [concatBytes(varint(1, d))]));
  const tensorType = concatBytes([...varint(1, elemType), ...lenField(2, [concatBytes(dims)])]);
  return [...str(1, name), ...lenField(2, [concatBytes(lenField(1, [tensorType]))])];
}

/** An empty float32 TensorProto ([0]) of this name. */
const emptyTensor = (name: string): Uint8Array[] => [
  ...varint(TENSOR_DIMS, 0),
  ...varint(TENSOR_DATA_TYPE, 1),
  ...str(TENSOR_NAME, name),
];

/** The message at a field path ("7.0/1.3/…": field number and occurrence per level), as its byte range. */
function messageAt(bytes: Uint8Array, path: string, file: string): { start: number; end: number } | undefined {
  let range = { start: 0, end: bytes.length };
  for (const step of path.split('/')) {
    const [field, occurrence] = step.split('.').map(Number);
    let seen = 0;
    let next: { start: number; end: number } | undefined;
    for (const f of wireFields(bytes, range.start, range.end, file))
      if (f.field === field && f.wire === WIRE_LEN && seen++ === occurrence) {
        next = { start: f.valueStart, end: f.end };
        break;
      }
    if (!next) return undefined;
    range = next;
  }
  return range;
}

/** The only output of the node at `path`. */
function nodeOutput(bytes: Uint8Array, path: string, file: string): string | undefined {
  const node = messageAt(bytes, path, file);
  if (!node) return undefined;
  const outputs: string[] = [];
  for (const f of wireFields(bytes, node.start, node.end, file))
    if (f.field === NODE_OUTPUT && f.wire === WIRE_LEN) outputs.push(utf8(bytes, f.valueStart, f.end));
  return outputs.length === 1 ? outputs[0] : undefined;
}

/** The names of the main graph's inputs. */
function graphInputs(bytes: Uint8Array, start: number, end: number, file: string): Set<string> {
  const names = new Set<string>();
  for (const f of wireFields(bytes, start, end, file))
    if (f.field === GRAPH_INPUT && f.wire === WIRE_LEN)
      for (const g of wireFields(bytes, f.valueStart, f.end, file))
        if (g.field === 1 && g.wire === WIRE_LEN) names.add(utf8(bytes, g.valueStart, g.end));
  return names;
}

/**
 * The model of `reader` with the tensors of `keys` that can be (see the module comment) made graph inputs, or
 * undefined where none can. Built from the reader's skeleton without those tensors' data.
 */
export function weightsAsInputs(reader: ModelReader, keys: Iterable<string>): FedModel | undefined {
  if (reader.format !== 'onnx') return undefined;
  const file = reader.file;
  const chosen = new Map<string, { path: string; entry: (typeof reader.tensors)[number] }>();
  const byKey = new Map(reader.tensors.map((t) => [t.key, t]));
  for (const key of keys) {
    const t = byKey.get(key);
    const storage = t && reader.storage(key);
    if (!t || !storage || storage.format !== 'onnx' || ONNX_ELEMENT[t.dtype] === undefined) continue;
    if (MAIN_INITIALIZER_PATH.test(storage.path) || CONSTANT_TENSOR.test(storage.path))
      chosen.set(key, { path: storage.path, entry: t });
  }
  if (!chosen.size) return undefined;
  const bytes = reader.skeleton(new Set(chosen.keys()));
  let graph: { start: number; end: number } | undefined;
  for (const f of wireFields(bytes, 0, bytes.length, file))
    if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN) graph ??= { start: f.valueStart, end: f.end };
  if (!graph) throw new BadModelError('not an ONNX model: no graph field found', { file });
  const declared = graphInputs(bytes, graph.start, graph.end, file);
  // edits of single fields (initializers, Constant nodes), and per graph the nodes put before its own
  const edits = new Map<string, (s: number, e: number) => Piece[]>();
  const first = new Map<string, Uint8Array[]>();
  const added: Uint8Array[] = [];
  const inputs = new Map<string, FedInput>();
  let n = 0;
  for (const [key, { path, entry }] of chosen) {
    const dtype = entry.dtype as FedInput['dtype'];
    const elemType = ONNX_ELEMENT[dtype]!;
    const constant = CONSTANT_TENSOR.exec(path);
    const unused = `nnmedia.unused.${n}`;
    let name: string;
    if (constant) {
      name = `nnmedia.fed.${n}`;
      // the Constant node gives an empty tensor of an unused name (onnxruntime drops it), and an Identity of the new
      // input, first in the node's graph (a Constant may come after its users: onnxruntime reads Constants first),
      // gives the values under the Constant's output name
      const node = constant[1];
      const graphPath = node.slice(0, node.lastIndexOf('/'));
      // the node's output, which its users read (the tensor's own name may differ: Silero v6's branches)
      const output = nodeOutput(bytes, node, file);
      if (output === undefined) continue;
      edits.set(node, () => [
        ...str(NODE_OUTPUT, unused),
        ...str(NODE_NAME, unused),
        ...str(NODE_OP_TYPE, 'Constant'),
        ...lenField(NODE_ATTRIBUTE, [
          concatBytes([
            ...str(ATTR_NAME, 'value'),
            ...lenField(ATTR_T, [concatBytes(emptyTensor(unused))]),
            ...varint(ATTR_TYPE, ATTR_TYPE_TENSOR),
          ]),
        ]),
      ]);
      const list = first.get(graphPath) ?? [];
      const identity = [
        ...str(NODE_INPUT, name),
        ...str(NODE_OUTPUT, output),
        ...str(NODE_NAME, `${name}.identity`),
        ...str(NODE_OP_TYPE, 'Identity'),
      ];
      list.push(...lenField(GRAPH_NODE, [concatBytes(identity)]));
      first.set(graphPath, list);
    } else {
      name = entry.name;
      // an empty initializer of an unused name in its place (onnxruntime drops it)
      edits.set(path, () => emptyTensor(unused));
    }
    n++;
    if (!declared.has(name)) added.push(...lenField(GRAPH_INPUT, [concatBytes(tensorInput(name, elemType, entry.shape))]));
    // an initializer an old exporter also listed as a graph input (IR < 4, where every initializer must be one) keeps
    // that declaration, and its empty stand-in gets one of its own
    else if (!constant) added.push(...lenField(GRAPH_INPUT, [concatBytes(tensorInput(unused, 1, [0]))]));
    inputs.set(key, { name, dtype, shape: [...entry.shape] });
  }
  // each graph that gains nodes (or, the main graph, inputs) is rewritten whole: its new fields around its edited
  // content, which holds the edits below it (a deeper graph's own rewrite included)
  const graphs = new Set([...first.keys(), '7.0']);
  const fieldEdits = new Map(edits);
  for (const g of graphs) {
    const below = (): Map<string, (s: number, e: number) => Piece[]> =>
      new Map([...fieldEdits].filter(([k]) => k.startsWith(`${g}/`)));
    edits.set(g, (s, e) => [
      ...(first.get(g) ?? []),
      ...rewritePieces(bytes, s, e, g, below(), file),
      ...(g === '7.0' ? added : []),
    ]);
    fieldEdits.set(g, edits.get(g)!);
  }
  const top = new Map([['7.0', edits.get('7.0')!]]);
  return { bytes: concatBytes(rewritePieces(bytes, 0, bytes.length, '', top, file) as Uint8Array[]), inputs };
}
