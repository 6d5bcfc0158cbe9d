/**
 * A copy of a model whose main-graph calls of model-local functions are replaced by the functions' bodies, for the
 * statistics capture: the values a layer inside a function multiplies exist in the copy's graph, so they can be
 * exposed as outputs like any other (a function's own values cannot be). The copy runs as the model does; its
 * nodes are written at the call's place (the graph's order stays topological), named `CALL/k`, with the function's
 * values renamed under the call as src/formats/onnx/functions.ts does for the analyses. Calls inside If branches
 * are left as they are. Every byte that is not a call is copied.
 */

import { concatBytes } from '../io/bytes.js';
import {
  MODEL_FUNCTIONS,
  MODEL_OPSET_IMPORT,
  add as addFunction,
  calledFunction,
  inlineCalls,
  readLocalFunction,
  readModelOpsets,
  readNodeProto,
  type CallableNode,
  type LocalFunction,
} from '../formats/onnx/functions.js';
import { WIRE_LEN, WIRE_VARINT, encodeVarint, lenField, wireFields } from '../formats/onnx/protobuf.js';
import {
  GRAPH_NODE,
  MODEL_GRAPH,
  NODE_ATTRIBUTE,
  NODE_DOMAIN,
  NODE_INPUT,
  NODE_NAME,
  NODE_OP_TYPE,
  NODE_OUTPUT,
  NODE_OVERLOAD,
  pathJoin,
} from '../formats/onnx/rebuild.js';

export interface InlinedModel {
  bytes: Uint8Array;
  /** A field path of the model (an initializer's, a node's) as the copy spells it. */
  location: (path: string) => string;
}

interface CallNode extends CallableNode {
  name: string;
  path: string;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function writeNode(n: CallableNode & { name: string }): Uint8Array {
  return concatBytes(
    lenField(GRAPH_NODE, [
      ...n.inputs.flatMap((i) => lenField(NODE_INPUT, [text(i)])),
      ...n.outputs.flatMap((o) => lenField(NODE_OUTPUT, [text(o)])),
      ...lenField(NODE_NAME, [text(n.name)]),
      ...lenField(NODE_OP_TYPE, [text(n.op)]),
      ...(n.raw ?? []).flatMap((a) => lenField(NODE_ATTRIBUTE, [a.bytes])),
      ...(n.domain ? lenField(NODE_DOMAIN, [text(n.domain)]) : []),
      ...(n.overload ? lenField(NODE_OVERLOAD, [text(n.overload)]) : []),
    ]),
  );
}

const opsetField = (domain: string, version: number): Uint8Array =>
  concatBytes(
    lenField(MODEL_OPSET_IMPORT, [...lenField(1, [text(domain)]), encodeVarint(2 * 8 + WIRE_VARINT), encodeVarint(version)]),
  );

/**
 * The model with its main graph's function calls inlined, or why not: undefined where it has no local function its
 * main graph calls, a string where a function's body is written against another version of an operator set than
 * the model imports (inlined, its nodes would run as the model's version defines them) or holds subgraphs (their
 * references to the function's values would have to be renamed inside them: not done).
 */
export function inlineMainGraphFunctions(bytes: Uint8Array, file = '<model>'): InlinedModel | string | undefined {
  const functions = new Map<string, LocalFunction>();
  let graph: { start: number; valueStart: number; end: number; occ: number } | undefined;
  let graphs = 0;
  for (const f of wireFields(bytes, 0, bytes.length, file)) {
    if (f.field === MODEL_FUNCTIONS && f.wire === WIRE_LEN)
      addFunction(functions, readLocalFunction(bytes, f.valueStart, f.end, file));
    else if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN)
      graph = { start: f.start, valueStart: f.valueStart, end: f.end, occ: graphs++ };
  }
  if (!functions.size || !graph) return undefined;
  const graphPath = pathJoin('', MODEL_GRAPH, graph.occ);
  const pieces: Uint8Array[] = [];
  const newIndex: number[] = [];
  const used = new Set<LocalFunction>();
  let nodes = 0;
  let calls = 0;
  let old = 0;
  for (const f of wireFields(bytes, graph.valueStart, graph.end, file)) {
    const whole = bytes.subarray(f.start, f.end);
    if (f.field !== GRAPH_NODE || f.wire !== WIRE_LEN) {
      pieces.push(whole);
      continue;
    }
    const path = pathJoin(graphPath, GRAPH_NODE, old);
    newIndex[old++] = nodes;
    const node: CallNode = { ...readNodeProto(bytes, f.valueStart, f.end, file), path };
    if (!calledFunction(functions, node)) {
      pieces.push(whole);
      nodes++;
      continue;
    }
    calls++;
    const body = inlineCalls(
      [node],
      functions,
      (call, b, k) => ({ ...b, name: `${call.name || call.path}/${k}`, path: call.path }),
      file,
    );
    // (every function a call reaches, for their operator sets)
    const reach = (n: CallableNode): void => {
      const fn = calledFunction(functions, n);
      if (!fn || used.has(fn)) return;
      used.add(fn);
      fn.nodes.forEach(reach);
    };
    reach(node);
    for (const n of body) pieces.push(writeNode(n));
    nodes += body.length;
  }
  if (!calls) return undefined;
  // a body's If/Loop/Scan would keep references to the function's own values that the inlining renames
  const nested = [...used].find((fn) => fn.nodes.some((n) => n.subgraphs));
  if (nested) return `its function ${nested.name} holds subgraphs (${nested.nodes.find((n) => n.subgraphs)!.op})`;
  const opsets = new Map(readModelOpsets(bytes, file).map((o) => [o.domain, o.version]));
  // (the local functions' own domains name calls, which the inlining removes: their versions do not matter)
  const local = new Set([...functions.values()].map((fn) => fn.domain));
  const added = new Map<string, number>();
  for (const fn of used)
    for (const o of fn.opsets) {
      if (local.has(o.domain)) continue;
      const have = opsets.get(o.domain) ?? added.get(o.domain);
      if (have === undefined) added.set(o.domain, o.version);
      else if (have !== o.version)
        return `its function ${fn.name} is written against ${o.domain || 'ai.onnx'} version ${o.version}, the model imports version ${have}`;
    }
  const graphBytes = concatBytes(lenField(MODEL_GRAPH, pieces));
  const out: Uint8Array[] = [];
  for (const f of wireFields(bytes, 0, bytes.length, file))
    out.push(f.start === graph.start ? graphBytes : bytes.subarray(f.start, f.end));
  for (const [domain, version] of added) out.push(opsetField(domain, version));
  const prefix = `${graphPath}/${GRAPH_NODE}.`;
  return {
    bytes: concatBytes(out),
    location: (p) => {
      if (!p.startsWith(prefix)) return p;
      const rest = p.slice(prefix.length);
      const cut = rest.indexOf('/');
      const i = Number(cut < 0 ? rest : rest.slice(0, cut));
      return newIndex[i] === undefined ? p : `${prefix}${newIndex[i]}${cut < 0 ? '' : rest.slice(cut)}`;
    },
  };
}
