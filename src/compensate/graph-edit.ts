/**
 * Exposing intermediate values of an ONNX model as graph outputs, at the
 * protobuf wire level (every byte that is not edited is copied): each value is
 * cast to float32 in the graph that defines or sees it and, where that graph is
 * an If branch, carried out through an extra output of the If node (the other
 * branch gives an empty float tensor), level by level up to the main graph.
 * A branch that did not run therefore shows its values as empty tensors.
 * Loop/Scan bodies are not handled: their values are reported as unreachable.
 */

import { concatBytes } from '../io/bytes.js';
import { UnsupportedError } from '../errors.js';
import { GRAPH_NODE, NODE_OUTPUT, rewriteMessage } from '../formats/onnx/rebuild.js';
import { lenField, stringField as str, varintField as varint } from '../formats/onnx/protobuf.js';
import { GRAPH_OUTPUT, type OnnxGraph, type OnnxModelView, type OnnxNode } from './graph.js';

const ATTR_TYPE = 20;
const ATTR_TYPE_INT = 2;
const ATTR_TYPE_TENSOR = 4;
const ATTR_TYPE_INTS = 7;
const ONNX_FLOAT = 1;
const ONNX_INT64 = 7;

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const msg = (field: number, parts: Uint8Array[]): Uint8Array => concatBytes(lenField(field, parts));

/** A float32 ValueInfoProto with unknown shape. */
function floatValueInfo(name: string): Uint8Array[] {
  const tensorType = concatBytes(varint(1, ONNX_FLOAT));
  const typeProto = msg(1, [tensorType]);
  return [...str(1, name), ...lenField(2, [typeProto])];
}

export function nodeProto(op: string, name: string, inputs: string[], outputs: string[], attrs: Uint8Array[][]): Uint8Array[] {
  return [
    ...inputs.flatMap((i) => str(1, i)),
    ...outputs.flatMap((o) => str(2, o)),
    ...str(3, name),
    ...str(4, op),
    ...attrs.flatMap((a) => lenField(5, a)),
  ];
}

export const castToFloat = (input: string, output: string): Uint8Array[] =>
  nodeProto(
    'Cast',
    `${output}__cast`,
    [input],
    [output],
    [[...str(1, 'to'), ...varint(3, ONNX_FLOAT), ...varint(ATTR_TYPE, ATTR_TYPE_INT)]],
  );

/** A Constant node giving an empty float tensor of shape [0]. */
function emptyFloat(output: string): Uint8Array[] {
  const tensor = concatBytes([...varint(1, 0), ...varint(2, ONNX_FLOAT), ...lenField(9, [])]);
  return nodeProto(
    'Constant',
    `${output}__empty`,
    [],
    [output],
    [[...str(1, 'value'), ...lenField(5, [tensor]), ...varint(ATTR_TYPE, ATTR_TYPE_TENSOR)]],
  );
}

/** An int attribute. */
export const intAttr = (name: string, v: number): Uint8Array[] => [
  ...str(1, name),
  ...varint(3, v),
  ...varint(ATTR_TYPE, ATTR_TYPE_INT),
];

/** An ints attribute (values ≥ 0, not packed). */
export const intsAttr = (name: string, v: readonly number[]): Uint8Array[] => [
  ...str(1, name),
  ...v.flatMap((x) => varint(8, x)),
  ...varint(ATTR_TYPE, ATTR_TYPE_INTS),
];

/** A string attribute. */
export const stringAttr = (name: string, v: string): Uint8Array[] => [...str(1, name), ...str(4, v), ...varint(ATTR_TYPE, 3)];

/** A Constant node with a float32 or int64 tensor (raw little-endian data). */
export function constantNode(output: string, dims: readonly number[], data: Float32Array | BigInt64Array): Uint8Array[] {
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const tensor = concatBytes([
    ...dims.flatMap((d) => varint(1, d)),
    ...varint(2, data instanceof Float32Array ? ONNX_FLOAT : ONNX_INT64),
    ...lenField(9, [raw]),
  ]);
  return nodeProto(
    'Constant',
    `${output}__const`,
    [],
    [output],
    [[...str(1, 'value'), ...lenField(5, [tensor]), ...varint(ATTR_TYPE, ATTR_TYPE_TENSOR)]],
  );
}

/** Nodes to add to the main graph and the float32 values among them to make graph outputs. */
export interface MainGraphAdditions {
  nodes: Uint8Array[][];
  outputs: string[];
}

/** A value to expose: its name as seen in `graph` (defined there or in an enclosing graph). */
export interface ValueRequest {
  graph: OnnxGraph;
  name: string;
}

/** Appended fields per message path, and replaced payloads per field path. */
interface Edits {
  append: Map<string, Uint8Array[]>;
  replace: Map<string, Uint8Array>;
}

/** Output names given to unnamed optional node outputs (e.g. an LSTM's Y), per node path and output index. */
export type NamedOutputs = Map<string, Map<number, string>>;

export interface ExposedModel {
  model: Uint8Array;
  /** Main-graph output name of each request, in request order. */
  outputs: string[];
}

/** A name prefix no value of the model starts with (new values must not collide with the model's own). */
export function freshPrefix(view: OnnxModelView, base = 'nnm_stat'): string {
  const names = new Set<string>();
  for (const g of view.graphs) {
    for (const n of [...g.inputs, ...g.outputs, ...g.initializers.map((i) => i.name)]) names.add(n);
    for (const node of g.nodes) for (const n of [...node.inputs, ...node.outputs]) names.add(n);
  }
  for (let k = 0; ; k++) {
    const prefix = k ? `${base}${k}_` : `${base}_`;
    if (![...names].some((n) => n.startsWith(prefix))) return prefix;
  }
}

/**
 * The model with every requested value as an extra float32 main-graph output; `rename` names unnamed
 * optional node outputs first (the names then resolve like any value).
 */
export function exposeValues(
  view: OnnxModelView,
  requests: readonly ValueRequest[],
  rename: NamedOutputs = new Map(),
  additions?: MainGraphAdditions,
): ExposedModel {
  const edits: Edits = { append: new Map(), replace: new Map() };
  const add = (path: string, parts: Uint8Array[]): void => {
    const list = edits.append.get(path);
    if (list) list.push(...parts);
    else edits.append.set(path, [...parts]);
  };
  for (const [nodePath, outs] of rename) {
    const node = view.nodes.find((n) => n.path === nodePath);
    if (!node) throw new UnsupportedError(`no node at ${nodePath}`);
    for (const [index, name] of outs) {
      if (index < node.outputPaths.length) edits.replace.set(node.outputPaths[index], text(name));
      else {
        // missing trailing outputs: pad with empty names, then the new one
        for (let k = node.outputs.length; k < index; k++) add(nodePath, str(NODE_OUTPUT, ''));
        add(nodePath, str(NODE_OUTPUT, name));
      }
    }
  }
  let counter = 0;
  const prefix = freshPrefix(view);
  const fresh = (): string => `${prefix}${counter++}`;
  // one exposure per (graph, value): requests often repeat a value
  const done = new Map<string, string>();
  const extraIfOutputs = new Map<OnnxNode, number>();
  const expose = (graph: OnnxGraph, name: string): string => {
    const key = `${graph.path}|${name}`;
    const known = done.get(key);
    if (known) return known;
    const out = fresh();
    add(graph.path, lenField(GRAPH_NODE, castToFloat(name, out)));
    let result: string;
    if (!graph.owner) {
      add(graph.path, lenField(GRAPH_OUTPUT, floatValueInfo(out)));
      result = out;
    } else {
      const owner = graph.owner;
      if (owner.op !== 'If')
        throw new UnsupportedError(
          `value ${name} lies inside a ${owner.op} body (${owner.name || owner.path}); only If branches are exposed`,
        );
      add(graph.path, lenField(GRAPH_OUTPUT, floatValueInfo(out)));
      for (const [attr, sibling] of Object.entries(owner.subgraphs)) {
        if (sibling === graph) continue;
        const empty = `${out}__${attr}`;
        add(sibling.path, lenField(GRAPH_NODE, emptyFloat(empty)));
        add(sibling.path, lenField(GRAPH_OUTPUT, floatValueInfo(empty)));
      }
      const ifOut = fresh();
      add(owner.path, str(NODE_OUTPUT, ifOut));
      extraIfOutputs.set(owner, (extraIfOutputs.get(owner) ?? 0) + 1);
      result = expose(owner.graph, ifOut);
    }
    done.set(key, result);
    return result;
  };
  const outputs = requests.map((r) => expose(r.graph, r.name));
  if (additions) {
    for (const n of additions.nodes) add(view.main.path, lenField(GRAPH_NODE, n));
    for (const o of additions.outputs) add(view.main.path, lenField(GRAPH_OUTPUT, floatValueInfo(o)));
  }
  return { model: applyEdits(view.bytes, edits), outputs };
}

function applyEdits(bytes: Uint8Array, edits: Edits): Uint8Array {
  // one edit function per touched message: its inner edits (by rewriteMessage) plus its appended fields
  const touched = new Set<string>([...edits.append.keys(), ...edits.replace.keys()]);
  const fns = new Map<string, (s: number, e: number) => Uint8Array[]>();
  const make =
    (path: string) =>
    (s: number, e: number): Uint8Array[] => {
      const replaced = edits.replace.get(path);
      if (replaced) return [replaced];
      const inner = new Map<string, (s: number, e: number) => Uint8Array[]>();
      for (const p of touched) if (p.startsWith(path + '/') && !hasTouchedAncestor(p, path, touched)) inner.set(p, make(p));
      const body = inner.size ? rewriteMessage(bytes, s, e, path, inner, '<model>') : bytes.subarray(s, e);
      return [body, ...(edits.append.get(path) ?? [])];
    };
  for (const p of touched) if (!hasTouchedAncestor(p, '', touched)) fns.set(p, make(p));
  return rewriteMessage(bytes, 0, bytes.length, '', fns, '<model>');
}

/** Is some strict ancestor of `p` (below `root`) itself touched? Then that ancestor's edit handles p. */
function hasTouchedAncestor(p: string, root: string, touched: ReadonlySet<string>): boolean {
  const parts = p.split('/');
  for (let k = parts.length - 1; k > 0; k--) {
    const a = parts.slice(0, k).join('/');
    if (a.length <= root.length) break;
    if (touched.has(a)) return true;
  }
  return false;
}
