/**
 * A light, read-only view of an ONNX graph for finding how weights are used:
 * every node (op, inputs, outputs, attributes, subgraphs) with its protobuf
 * field path, graph inputs/outputs/initializers, nested If/Loop/Scan bodies.
 * Paths are those of src/formats/onnx.ts ("7.0/1.12/5.0/6.0" = graph → node
 * #12 → attribute #0 → g), so the editor (graph-edit.ts) finds them again.
 */

import { BadModelError } from '../errors.js';
import {
  ATTR_F,
  ATTR_G,
  ATTR_GRAPHS,
  ATTR_I,
  ATTR_INTS,
  ATTR_NAME,
  ATTR_S,
  ATTR_T,
  GRAPH_INITIALIZER,
  GRAPH_INPUT,
  GRAPH_NODE,
  GRAPH_OUTPUT,
  MODEL_GRAPH,
  NODE_ATTRIBUTE,
  NODE_DOMAIN,
  NODE_INPUT,
  NODE_NAME,
  NODE_OP_TYPE,
  NODE_OUTPUT,
  NODE_OVERLOAD,
  TENSOR_DATA_TYPE,
  TENSOR_DIMS,
  TENSOR_NAME,
  occurrenceCounter,
  pathJoin,
} from '../formats/onnx/rebuild.js';
import {
  MODEL_FUNCTIONS,
  add as addFunction,
  inlineCalls,
  readLocalFunction,
  type LocalFunction,
} from '../formats/onnx/functions.js';
import {
  MAX_NESTING,
  WIRE_I32,
  WIRE_LEN,
  WIRE_VARINT,
  readVarint,
  int64Values,
  utf8,
  wireFields,
} from '../formats/onnx/protobuf.js';

export { GRAPH_INPUT, GRAPH_OUTPUT };
export { NODE_NAME };

export type AttrValue = number | string | number[];

export interface OnnxNode {
  op: string;
  /** The op's domain where it is not the default one. */
  domain?: string;
  /** Which of a local function's overloads it calls. */
  overload?: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  /** Subgraph attributes (If: then_branch/else_branch; Loop/Scan: body). */
  subgraphs: Record<string, OnnxGraph>;
  /** Field path of the NodeProto. */
  path: string;
  /** Field path of every `output` string, in order (for renaming an unnamed optional output). */
  outputPaths: string[];
  graph: OnnxGraph;
  /** Constant nodes: field path of the `value` TensorProto. */
  constantPath?: string;
}

export interface Initializer {
  name: string;
  path: string;
  dims: number[];
  dataType: number;
}

export interface OnnxGraph {
  path: string;
  nodes: OnnxNode[];
  inputs: string[];
  outputs: string[];
  initializers: Initializer[];
  /** The node holding this graph as an attribute (undefined for the main graph). */
  owner?: OnnxNode;
  /** The attribute name under the owner ("then_branch", "body"). */
  ownerAttr?: string;
}

export interface OnnxModelView {
  bytes: Uint8Array;
  main: OnnxGraph;
  /** Every graph, main first, then subgraphs depth-first. */
  graphs: OnnxGraph[];
  /** Every node of every graph. */
  nodes: OnnxNode[];
  /** The names of the model's local functions (ops a node may call). */
  functionNames?: ReadonlySet<string>;
}

/**
 * The model's graphs. With `inlineFunctions`, each call of a model-local function is replaced in its graph by the
 * function's body (src/formats/onnx/functions.ts), every inlined node at the call's path + `#k`: a view for
 * following values through, not one to edit the file by.
 */
export function parseOnnxGraph(bytes: Uint8Array, file = '<model>', options: { inlineFunctions?: boolean } = {}): OnnxModelView {
  const graphs: OnnxGraph[] = [];
  const nodes: OnnxNode[] = [];
  let main: OnnxGraph | undefined;
  const count = occurrenceCounter();
  const functions = new Map<string, LocalFunction>();
  const readGraph = (start: number, end: number, path: string, depth: number, owner?: OnnxNode, attr?: string): OnnxGraph => {
    if (depth > MAX_NESTING) throw new BadModelError(`subgraphs nested deeper than ${MAX_NESTING}`, { file });
    const g: OnnxGraph = { path, nodes: [], inputs: [], outputs: [], initializers: [], owner, ownerAttr: attr };
    graphs.push(g);
    const c = occurrenceCounter();
    for (const f of wireFields(bytes, start, end, file)) {
      const occ = c(f.field);
      if (f.wire !== WIRE_LEN) continue;
      const p = pathJoin(path, f.field, occ);
      if (f.field === GRAPH_NODE) g.nodes.push(readNode(f.valueStart, f.end, p, g, depth));
      else if (f.field === GRAPH_INITIALIZER) g.initializers.push({ ...readTensorHeader(f.valueStart, f.end), path: p });
      else if (f.field === GRAPH_INPUT) g.inputs.push(valueInfoName(f.valueStart, f.end));
      else if (f.field === GRAPH_OUTPUT) g.outputs.push(valueInfoName(f.valueStart, f.end));
    }
    return g;
  };
  const valueInfoName = (start: number, end: number): string => {
    for (const f of wireFields(bytes, start, end, file))
      if (f.field === 1 && f.wire === WIRE_LEN) return utf8(bytes, f.valueStart, f.end);
    return '';
  };
  const readTensorHeader = (start: number, end: number): { name: string; dims: number[]; dataType: number } => {
    const dims: number[] = [];
    let name = '';
    let dataType = 0;
    for (const f of wireFields(bytes, start, end, file)) {
      if (f.field === TENSOR_DIMS) {
        if (f.wire === WIRE_VARINT) dims.push(f.value);
        else if (f.wire === WIRE_LEN) for (const v of packedVarints(f.valueStart, f.end)) dims.push(v);
      } else if (f.field === TENSOR_DATA_TYPE && f.wire === WIRE_VARINT) dataType = f.value;
      else if (f.field === TENSOR_NAME && f.wire === WIRE_LEN) name = utf8(bytes, f.valueStart, f.end);
    }
    return { name, dims, dataType };
  };
  const packedVarints = (start: number, end: number): number[] => {
    const out: number[] = [];
    let p = start;
    while (p < end) {
      const [v, np] = readVarint(bytes, p, end, file);
      out.push(v);
      p = np;
    }
    return out;
  };
  const readNode = (start: number, end: number, path: string, graph: OnnxGraph, depth: number): OnnxNode => {
    const node: OnnxNode = {
      op: '',
      name: '',
      inputs: [],
      outputs: [],
      attrs: {},
      subgraphs: {},
      path,
      outputPaths: [],
      graph,
    };
    const c = occurrenceCounter();
    const pendingGraphs: Array<{ name: string; start: number; end: number; path: string }> = [];
    for (const f of wireFields(bytes, start, end, file)) {
      const occ = c(f.field);
      if (f.wire !== WIRE_LEN) continue;
      const p = pathJoin(path, f.field, occ);
      if (f.field === NODE_INPUT) node.inputs.push(utf8(bytes, f.valueStart, f.end));
      else if (f.field === NODE_OUTPUT) {
        node.outputs.push(utf8(bytes, f.valueStart, f.end));
        node.outputPaths.push(p);
      } else if (f.field === NODE_OP_TYPE) node.op = utf8(bytes, f.valueStart, f.end);
      else if (f.field === NODE_NAME) node.name = utf8(bytes, f.valueStart, f.end);
      else if (f.field === NODE_DOMAIN) {
        const domain = utf8(bytes, f.valueStart, f.end);
        if (domain && domain !== 'ai.onnx') node.domain = domain;
      } else if (f.field === NODE_OVERLOAD) node.overload = utf8(bytes, f.valueStart, f.end) || undefined;
      else if (f.field === NODE_ATTRIBUTE) {
        let name = '';
        let value: AttrValue | undefined;
        const ints: number[] = [];
        let tensorPath: string | undefined;
        const graphsHere: Array<{ start: number; end: number; path: string }> = [];
        const ca = occurrenceCounter();
        for (const a of wireFields(bytes, f.valueStart, f.end, file)) {
          const aocc = ca(a.field);
          if (a.field === ATTR_NAME && a.wire === WIRE_LEN) name = utf8(bytes, a.valueStart, a.end);
          else if (a.field === ATTR_I && a.wire === WIRE_VARINT) value = int64Values(bytes, a, file)[0];
          else if (a.field === ATTR_F && a.wire === WIRE_I32)
            value = new DataView(bytes.buffer, bytes.byteOffset + a.valueStart, 4).getFloat32(0, true);
          else if (a.field === ATTR_S && a.wire === WIRE_LEN) value = utf8(bytes, a.valueStart, a.end);
          else if (a.field === ATTR_INTS) {
            ints.push(...int64Values(bytes, a, file));
          } else if (a.field === ATTR_T && a.wire === WIRE_LEN) tensorPath = pathJoin(p, a.field, aocc);
          else if ((a.field === ATTR_G || a.field === ATTR_GRAPHS) && a.wire === WIRE_LEN)
            graphsHere.push({ start: a.valueStart, end: a.end, path: pathJoin(p, a.field, aocc) });
        }
        if (ints.length) value = ints;
        if (value !== undefined) node.attrs[name] = value;
        if (tensorPath && name === 'value') node.constantPath = tensorPath;
        for (const g of graphsHere) pendingGraphs.push({ name, ...g });
      }
    }
    // subgraphs after the node itself, so nodes[] lists a parent before its children
    nodes.push(node);
    for (const g of pendingGraphs) node.subgraphs[g.name] = readGraph(g.start, g.end, g.path, depth + 1, node, g.name);
    if (node.op !== 'Constant') node.constantPath = undefined;
    return node;
  };
  for (const f of wireFields(bytes, 0, bytes.length, file)) {
    const occ = count(f.field);
    if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN) main = readGraph(f.valueStart, f.end, pathJoin('', f.field, occ), 0);
    else if (f.field === MODEL_FUNCTIONS && f.wire === WIRE_LEN)
      addFunction(functions, readLocalFunction(bytes, f.valueStart, f.end, file));
  }
  if (!main) throw new BadModelError('not an ONNX model: no graph field found', { file });
  if (!functions.size) return { bytes, main, graphs, nodes };
  const functionNames = new Set([...functions.values()].map((fn) => fn.name));
  if (!options.inlineFunctions) return { bytes, main, graphs, nodes, functionNames };
  const expansion = new Map<OnnxNode, OnnxNode[]>();
  for (const n of nodes)
    expansion.set(
      n,
      inlineCalls(
        [n],
        functions,
        (call, body, k): OnnxNode => ({
          ...body,
          name: call.name,
          subgraphs: {},
          path: `${call.path}#${k}`,
          outputPaths: [],
          graph: call.graph,
        }),
        file,
      ),
    );
  for (const g of graphs) g.nodes = g.nodes.flatMap((n) => expansion.get(n) ?? [n]);
  return { bytes, main, graphs, nodes: nodes.flatMap((n) => expansion.get(n) ?? [n]), functionNames };
}

/** Where each value name is produced: a node output, a graph input or an initializer (innermost graph wins). */
export interface ValueSource {
  graph: OnnxGraph;
  node?: OnnxNode;
  outputIndex?: number;
  initializer?: Initializer;
}

/** Nodes consuming `name` inside `graph` and its subgraphs (names resolve lexically; shadowing stops the search). */
export function consumersOf(graph: OnnxGraph, name: string): OnnxNode[] {
  const out: OnnxNode[] = [];
  const visit = (g: OnnxGraph): void => {
    for (const n of g.nodes) {
      if (n.inputs.includes(name)) out.push(n);
      for (const sub of Object.values(n.subgraphs)) {
        const shadowed =
          sub.inputs.includes(name) ||
          sub.initializers.some((i) => i.name === name) ||
          sub.nodes.some((m) => m.outputs.includes(name));
        if (!shadowed) visit(sub);
      }
    }
  };
  visit(graph);
  return out;
}

/** The producer of every value in a graph (node outputs, inputs, initializers). */
export function producers(graph: OnnxGraph): Map<string, ValueSource> {
  const m = new Map<string, ValueSource>();
  for (const i of graph.inputs) m.set(i, { graph });
  for (const i of graph.initializers) m.set(i.name, { graph, initializer: i });
  for (const n of graph.nodes) n.outputs.forEach((o, k) => o && m.set(o, { graph, node: n, outputIndex: k }));
  return m;
}

/** Is `name` defined in graph `g` itself (not in an enclosing graph)? */
export function definedIn(g: OnnxGraph, name: string): boolean {
  return g.inputs.includes(name) || g.initializers.some((i) => i.name === name) || g.nodes.some((n) => n.outputs.includes(name));
}
