/**
 * Model-local functions (ModelProto.functions): the graph calls them like ops, by domain and name. PyTorch's
 * dynamo exporter (and `export_modules_as_functions`) writes one per module, so a Linear's weight goes into a node
 * of op `torch_nn_modules_linear_Linear_fc1_1`, and only the function's body says it is a Gemm's second operand.
 * For finding how weights are used, each call is inlined into the body's nodes, its values renamed: the function's
 * formal inputs and outputs to the call's actual ones, its own values to names under the call. Attributes the body
 * takes from the call (`ref_attr_name`) get the call's value, or the function's default. The files are never
 * changed: this is a view.
 */

import { BadModelError } from '../../errors.js';
import { concatBytes } from '../../io/bytes.js';
import { WIRE_I32, WIRE_LEN, WIRE_VARINT, lenField, int64Values, utf8, wireFields } from './protobuf.js';
import {
  ATTR_F,
  ATTR_G,
  ATTR_GRAPHS,
  ATTR_I,
  ATTR_INTS,
  ATTR_NAME,
  ATTR_S,
  NODE_ATTRIBUTE,
  NODE_DOMAIN,
  NODE_INPUT,
  NODE_NAME,
  NODE_OP_TYPE,
  NODE_OUTPUT,
  NODE_OVERLOAD,
} from './rebuild.js';

/** ModelProto.functions (onnx.proto3). */
export const MODEL_FUNCTIONS = 25;
const FUNCTION_NAME = 1;
const FUNCTION_INPUT = 4;
const FUNCTION_OUTPUT = 5;
const FUNCTION_NODE = 7;
const FUNCTION_OPSET_IMPORT = 9;
/** ModelProto.opset_import. */
export const MODEL_OPSET_IMPORT = 8;
const FUNCTION_DOMAIN = 10;
const FUNCTION_ATTRIBUTE_PROTO = 11;
const FUNCTION_OVERLOAD = 13;
const ATTR_REF_ATTR_NAME = 21;
/** Calls inside functions followed this deep; a function that calls itself stops here. */
const MAX_CALL_DEPTH = 16;
/** Inlined nodes at most (a bound against functions that call each other many times over). */
const MAX_INLINED = 1_000_000;

export type FunctionAttr = number | string | number[];

/** An attribute as its AttributeProto bytes (a view into the model's). */
export interface RawAttribute {
  name: string;
  bytes: Uint8Array;
}

/** What the analyses need of a node: its op, operands, results and attributes. */
export interface CallableNode {
  op: string;
  /** The op's domain where it is not the default one (`''` and `ai.onnx` are the default). */
  domain?: string;
  overload?: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, FunctionAttr>;
  /** Every attribute as bytes, where the caller wants nodes to write (an inlined node's resolved ones). */
  raw?: RawAttribute[];
}

interface BodyNode extends CallableNode {
  /** Attribute name → the calling node's attribute it takes its value from. */
  refs: Record<string, string>;
  raw: Array<RawAttribute & { ref?: string }>;
  /** It holds subgraphs (If, Loop, Scan): their references to the function's values are not renamed. */
  subgraphs?: boolean;
}

export interface LocalFunction {
  name: string;
  domain: string;
  overload: string;
  inputs: string[];
  outputs: string[];
  /** Defaults of attributes the body refers to (FunctionProto.attribute_proto), as values and as bytes. */
  defaults: Record<string, FunctionAttr>;
  rawDefaults: Record<string, Uint8Array>;
  /** The operator sets its body is written against (FunctionProto.opset_import). */
  opsets: Array<{ domain: string; version: number }>;
  nodes: BodyNode[];
}

export type LocalFunctions = ReadonlyMap<string, LocalFunction>;

const defaultDomain = (d: string | undefined): string => (d === undefined || d === 'ai.onnx' ? '' : d);
const functionKey = (domain: string | undefined, name: string, overload = ''): string =>
  `${defaultDomain(domain)}\u0000${name}\u0000${overload}`;

function readAttribute(
  bytes: Uint8Array,
  start: number,
  end: number,
  file: string,
): { name: string; value?: FunctionAttr; ref?: string; graph?: boolean } {
  let name = '';
  let value: FunctionAttr | undefined;
  let ref: string | undefined;
  let graph = false;
  const ints: number[] = [];
  for (const f of wireFields(bytes, start, end, file)) {
    if (f.field === ATTR_NAME && f.wire === WIRE_LEN) name = utf8(bytes, f.valueStart, f.end);
    else if (f.field === ATTR_I && f.wire === WIRE_VARINT) value = int64Values(bytes, f, file)[0];
    else if (f.field === ATTR_F && f.wire === WIRE_I32)
      value = new DataView(bytes.buffer, bytes.byteOffset + f.valueStart, 4).getFloat32(0, true);
    else if (f.field === ATTR_S && f.wire === WIRE_LEN) value = utf8(bytes, f.valueStart, f.end);
    else if (f.field === ATTR_INTS) {
      ints.push(...int64Values(bytes, f, file));
    } else if (f.field === ATTR_REF_ATTR_NAME && f.wire === WIRE_LEN) ref = utf8(bytes, f.valueStart, f.end);
    else if ((f.field === ATTR_G || f.field === ATTR_GRAPHS) && f.wire === WIRE_LEN) graph = true;
  }
  if (ints.length) value = ints;
  return { name, value, ref, ...(graph ? { graph } : {}) };
}

/**
 * One NodeProto as the functions' bodies and their callers need it: op, domain, overload, operands, results, name,
 * attribute values (subgraphs only flagged) and every attribute's bytes.
 */
export function readNodeProto(bytes: Uint8Array, start: number, end: number, file: string): BodyNode & { name: string } {
  const node: BodyNode & { name: string } = { op: '', name: '', inputs: [], outputs: [], attrs: {}, refs: {}, raw: [] };
  for (const f of wireFields(bytes, start, end, file)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === NODE_INPUT) node.inputs.push(utf8(bytes, f.valueStart, f.end));
    else if (f.field === NODE_NAME) node.name = utf8(bytes, f.valueStart, f.end);
    else if (f.field === NODE_OUTPUT) node.outputs.push(utf8(bytes, f.valueStart, f.end));
    else if (f.field === NODE_OP_TYPE) node.op = utf8(bytes, f.valueStart, f.end);
    else if (f.field === NODE_DOMAIN) node.domain = defaultDomain(utf8(bytes, f.valueStart, f.end)) || undefined;
    else if (f.field === NODE_OVERLOAD) node.overload = utf8(bytes, f.valueStart, f.end) || undefined;
    else if (f.field === NODE_ATTRIBUTE) {
      const a = readAttribute(bytes, f.valueStart, f.end, file);
      if (a.graph) node.subgraphs = true;
      if (a.ref !== undefined) node.refs[a.name] = a.ref;
      else if (a.value !== undefined) node.attrs[a.name] = a.value;
      node.raw.push({ name: a.name, bytes: bytes.subarray(f.valueStart, f.end), ...(a.ref !== undefined ? { ref: a.ref } : {}) });
    }
  }
  return node;
}

/** An OperatorSetIdProto: domain (1), version (2). */
function readOpset(bytes: Uint8Array, start: number, end: number, file: string): { domain: string; version: number } {
  let domain = '';
  let version = 0;
  for (const f of wireFields(bytes, start, end, file))
    if (f.field === 1 && f.wire === WIRE_LEN) domain = defaultDomain(utf8(bytes, f.valueStart, f.end));
    else if (f.field === 2 && f.wire === WIRE_VARINT) version = f.value;
  return { domain, version };
}

/** The model's operator sets (ModelProto.opset_import). */
export function readModelOpsets(bytes: Uint8Array, file = '<model>'): Array<{ domain: string; version: number }> {
  const out: Array<{ domain: string; version: number }> = [];
  for (const f of wireFields(bytes, 0, bytes.length, file))
    if (f.field === MODEL_OPSET_IMPORT && f.wire === WIRE_LEN) out.push(readOpset(bytes, f.valueStart, f.end, file));
  return out;
}

/** AttributeProto bytes under another name, the reference to the caller's attribute dropped. */
function renamed(bytes: Uint8Array, name: string): Uint8Array {
  const parts: Uint8Array[] = [...lenField(ATTR_NAME, [new TextEncoder().encode(name)])];
  for (const f of wireFields(bytes, 0, bytes.length))
    if (f.field !== ATTR_NAME && f.field !== ATTR_REF_ATTR_NAME) parts.push(bytes.subarray(f.start, f.end));
  return concatBytes(parts);
}

/** One FunctionProto, from its bytes. */
export function readLocalFunction(bytes: Uint8Array, start: number, end: number, file: string): LocalFunction {
  const fn: LocalFunction = {
    name: '',
    domain: '',
    overload: '',
    inputs: [],
    outputs: [],
    defaults: {},
    rawDefaults: {},
    opsets: [],
    nodes: [],
  };
  for (const f of wireFields(bytes, start, end, file)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === FUNCTION_NAME) fn.name = utf8(bytes, f.valueStart, f.end);
    else if (f.field === FUNCTION_DOMAIN) fn.domain = defaultDomain(utf8(bytes, f.valueStart, f.end));
    else if (f.field === FUNCTION_OVERLOAD) fn.overload = utf8(bytes, f.valueStart, f.end);
    else if (f.field === FUNCTION_INPUT) fn.inputs.push(utf8(bytes, f.valueStart, f.end));
    else if (f.field === FUNCTION_OUTPUT) fn.outputs.push(utf8(bytes, f.valueStart, f.end));
    else if (f.field === FUNCTION_NODE) fn.nodes.push(readNodeProto(bytes, f.valueStart, f.end, file));
    else if (f.field === FUNCTION_ATTRIBUTE_PROTO) {
      const a = readAttribute(bytes, f.valueStart, f.end, file);
      if (a.value !== undefined) fn.defaults[a.name] = a.value;
      fn.rawDefaults[a.name] = bytes.subarray(f.valueStart, f.end);
    } else if (f.field === FUNCTION_OPSET_IMPORT) fn.opsets.push(readOpset(bytes, f.valueStart, f.end, file));
  }
  return fn;
}

/** The model's local functions, by domain, name and overload (empty for a model without any). */
export function readLocalFunctions(bytes: Uint8Array, file = '<model>'): Map<string, LocalFunction> {
  const out = new Map<string, LocalFunction>();
  for (const f of wireFields(bytes, 0, bytes.length, file))
    if (f.field === MODEL_FUNCTIONS && f.wire === WIRE_LEN) add(out, readLocalFunction(bytes, f.valueStart, f.end, file));
  return out;
}

/** Adds a function to the map (the first of a repeated key wins, as ONNX requires keys to be unique). */
export function add(map: Map<string, LocalFunction>, fn: LocalFunction): void {
  const key = functionKey(fn.domain, fn.name, fn.overload);
  if (!map.has(key)) map.set(key, fn);
}

/** The function a node calls, if it calls one of the model's. */
export function calledFunction(functions: LocalFunctions, node: CallableNode): LocalFunction | undefined {
  return functions.size ? functions.get(functionKey(node.domain, node.op, node.overload)) : undefined;
}

/**
 * The nodes with every call of a local function replaced by the function's body (calls in bodies too), renamed
 * into the caller's values. `inlined(call, body, k)` makes the call's k-th inlined node from the call (to keep the
 * caller's fields, such as where it sits in the file) and the body node with its names and attributes resolved.
 */
export function inlineCalls<N extends CallableNode & { path: string }>(
  nodes: readonly N[],
  functions: LocalFunctions,
  inlined: (call: N, body: CallableNode, k: number) => N,
  file = '<model>',
): N[] {
  if (!functions.size) return [...nodes];
  const out: N[] = [];
  let k = 0;
  const expand = (call: N, node: CallableNode, scope: string, depth: number): void => {
    const fn = calledFunction(functions, node);
    if (!fn) {
      if (out.length >= MAX_INLINED) throw new BadModelError('local functions expand to too many nodes', { file });
      out.push(node === call ? call : inlined(call, node, k++));
      return;
    }
    if (depth >= MAX_CALL_DEPTH)
      throw new BadModelError(`local function ${fn.name} calls functions more than ${MAX_CALL_DEPTH} deep`, { file });
    const rename = new Map<string, string>();
    // (an optional input the call leaves out stays out; an output it leaves unnamed is still the body's value)
    fn.inputs.forEach((formal, i) => rename.set(formal, node.inputs[i] ?? ''));
    fn.outputs.forEach((formal, i) => rename.set(formal, node.outputs[i] || `${scope}/${formal}`));
    const local = (v: string): string => (v === '' ? '' : (rename.get(v) ?? `${scope}/${v}`));
    fn.nodes.forEach((b, i) => {
      const attrs = { ...b.attrs };
      for (const [name, ref] of Object.entries(b.refs)) {
        const v = node.attrs[ref] ?? fn.defaults[ref];
        if (v !== undefined) attrs[name] = v;
      }
      // as bytes, where the caller gave its own (a reference the call does not set takes the default, or is left out)
      const raw = node.raw
        ? b.raw.flatMap(({ name, bytes, ref }) => {
            if (ref === undefined) return [{ name, bytes }];
            const given = node.raw!.find((a) => a.name === ref)?.bytes ?? fn.rawDefaults[ref];
            return given ? [{ name, bytes: renamed(given, name) }] : [];
          })
        : undefined;
      const body: CallableNode = {
        op: b.op,
        ...(b.domain ? { domain: b.domain } : {}),
        ...(b.overload ? { overload: b.overload } : {}),
        inputs: b.inputs.map(local),
        outputs: b.outputs.map(local),
        attrs,
        ...(raw ? { raw } : {}),
      };
      // (a nested call's scope cannot be spelled as one of this call's values: those are `${scope}/NAME`)
      expand(call, body, `${scope}#${i}`, depth + 1);
    });
  };
  for (const n of nodes) {
    k = 0;
    expand(n, n, `nnm_fn:${n.path}`, 0);
  }
  return out;
}
