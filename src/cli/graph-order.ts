/**
 * The order in which an ONNX graph uses its tensors, for showing layers as the network runs them rather
 * than as the file lists them (exporters often sort initializers by name: conv2d_0, conv2d_107, …).
 * Read at the protobuf wire level from a model or an archive's skeleton (tensor data is not needed).
 */

import {
  ATTR_G,
  ATTR_GRAPHS,
  ATTR_NAME,
  ATTR_T,
  GRAPH_NODE,
  MODEL_GRAPH,
  NODE_ATTRIBUTE,
  NODE_INPUT,
  NODE_OUTPUT,
  TENSOR_NAME,
} from '../formats/onnx/rebuild.js';
import { MAX_NESTING, WIRE_LEN, utf8, wireFields } from '../formats/onnx/protobuf.js';

/**
 * For each tensor name: the index of the first node that reads it (nodes numbered in file order, a
 * subgraph's nodes before the node that holds them). A `Constant` node's tensor (some exporters store every
 * weight so, in name order at the top of the graph) counts where its output is first read.
 */
export function onnxGraphOrder(bytes: Uint8Array, file?: string): Map<string, number> {
  const firstRead = new Map<string, number>();
  // a Constant node's outputs and the name of the tensor it holds
  const constants: Array<{ outputs: string[]; tensor?: string }> = [];
  let next = 0;
  const graph = (start: number, end: number, depth: number): void => {
    if (depth > MAX_NESTING) return;
    for (const f of wireFields(bytes, start, end, file))
      if (f.field === GRAPH_NODE && f.wire === WIRE_LEN) node(f.valueStart, f.end, depth);
  };
  const node = (start: number, end: number, depth: number): void => {
    const inputs: string[] = [];
    const outputs: string[] = [];
    let tensor: string | undefined;
    for (const f of wireFields(bytes, start, end, file)) {
      if (f.wire !== WIRE_LEN) continue;
      if (f.field === NODE_INPUT) inputs.push(utf8(bytes, f.valueStart, f.end));
      else if (f.field === NODE_OUTPUT) outputs.push(utf8(bytes, f.valueStart, f.end));
      else if (f.field === NODE_ATTRIBUTE)
        for (const a of wireFields(bytes, f.valueStart, f.end, file)) {
          if (a.wire !== WIRE_LEN || a.field === ATTR_NAME) continue;
          if (a.field === ATTR_G || a.field === ATTR_GRAPHS) graph(a.valueStart, a.end, depth + 1);
          else if (a.field === ATTR_T)
            for (const t of wireFields(bytes, a.valueStart, a.end, file))
              if (t.field === TENSOR_NAME && t.wire === WIRE_LEN) tensor = utf8(bytes, t.valueStart, t.end);
        }
    }
    const index = next++;
    for (const name of inputs) if (name && !firstRead.has(name)) firstRead.set(name, index);
    if (tensor !== undefined) constants.push({ outputs, tensor });
  };
  for (const f of wireFields(bytes, 0, bytes.length, file))
    if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN) graph(f.valueStart, f.end, 0);
  const order = new Map(firstRead);
  for (const c of constants) {
    if (c.tensor === undefined) continue;
    const at = Math.min(...c.outputs.map((o) => firstRead.get(o) ?? Infinity));
    if (Number.isFinite(at) && !order.has(c.tensor)) order.set(c.tensor, at);
  }
  return order;
}
