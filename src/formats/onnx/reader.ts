/**
 * ONNX model files, read and rebuilt at the protobuf wire level.
 *
 * Float tensors are found in graph initializers, in `Constant` nodes and in
 * subgraphs (If/Loop/Scan bodies), at any depth. Each is located by its field
 * path from the ModelProto root ("7.0/1.12/5.0/5.0" = graph → node #12 →
 * attribute #0 → t), which is how the writer finds it again. Everything that is
 * not the data of a compressed tensor is copied byte for byte.
 */

import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, resolve, isAbsolute, relative } from 'node:path';
import { BadModelError, IoError } from '../../errors.js';
import { fsError, fsReason } from '../../io/files.js';
import { MODEL_FUNCTIONS, add as addFunction, inlineCalls, readLocalFunction, type LocalFunction } from './functions.js';
import {
  MODEL_GRAPH,
  GRAPH_NODE,
  GRAPH_INITIALIZER,
  GRAPH_INPUT,
  MAIN_INITIALIZER_PATH,
  NODE_INPUT,
  NODE_OUTPUT,
  NODE_OP_TYPE,
  NODE_ATTRIBUTE,
  NODE_DOMAIN,
  NODE_OVERLOAD,
  ATTR_NAME,
  ATTR_F,
  ATTR_I,
  ATTR_S,
  ATTR_T,
  ATTR_G,
  ATTR_INTS,
  ATTR_GRAPHS,
  TENSOR_DIMS,
  TENSOR_DATA_TYPE,
  TENSOR_FLOAT_DATA,
  TENSOR_INT32_DATA,
  TENSOR_NAME,
  TENSOR_RAW_DATA,
  TENSOR_DOUBLE_DATA,
  TENSOR_EXTERNAL_DATA,
  TENSOR_DATA_LOCATION,
  ONNX_FLOAT_TYPES,
  pathJoin,
  occurrenceCounter,
  rewriteMessage,
  replaceTensorData,
  withRawData,
  type DataForm,
} from './rebuild.js';
export { rebuildOnnx, type RestoredTensor } from './rebuild.js';
import { type ScannedOnnx, scanOnnx } from './scan.js';
import { MAX_NESTING, WIRE_I32, WIRE_LEN, WIRE_VARINT, readVarint, int64Values, utf8, wireFields } from './protobuf.js';
import {
  BYTES_PER_ELEMENT,
  type DataRange,
  type ModelReader,
  type OnnxStorage,
  type TensorEntry,
  type TensorUse,
  decodeFloats,
  elementCount,
  rowsRange,
} from '../model.js';

/**
 * Ops that move or reshape their first input's values (Concat: any input's) without computing on them. Cast
 * (to a float type: `carries`) changes only the dtype: a model that stores its weights as float16 and casts them to float32
 * before each Conv (weights halved for delivery, compute in float32) has every kernel behind one. A
 * QuantizeLinear → DequantizeLinear pair keeps shape and order and rounds the values onto the model's own grid:
 * a model exported from quantization-aware training (PyTorch, TensorRT's toolkit) holds its float weights behind
 * one, quantized at run time.
 */
const DATA_MOVES = new Set([
  'Slice',
  'Split',
  'Reshape',
  'Squeeze',
  'Unsqueeze',
  'Transpose',
  'Identity',
  'Flatten',
  'Concat',
  'Cast',
  'QuantizeLinear',
  'DequantizeLinear',
]);
/** ONNX float element types (FLOAT, FLOAT16, DOUBLE, BFLOAT16): a Cast to one of them keeps a weight's values. */
const FLOAT_TYPES = new Set([1, 10, 11, 16]);
/**
 * Whether a node carries its input on as the same values: a data move's data input; a Cast only to a float type
 * (a Cast to an integer truncates: float → int → float is a rounding of its own). CastLike is not carried: its
 * target type is another tensor's.
 */
const carriesValues = (op: string, inputIndex: number, attrs: Record<string, unknown> = {}): boolean =>
  DATA_MOVES.has(op) && (op !== 'Cast' || FLOAT_TYPES.has(attrs.to as number)) && (inputIndex === 0 || op === 'Concat');

/**
 * Elementwise arithmetic that `reaches` walks through: a constant's values computed on before they decide
 * something (T5's relative-position buckets: `Cast<int64>(Log(n / 8) / ln 16 · 8)`, where `ln 16` rounded to float16
 * moved 616 of 19,600 bucket indices by one).
 */
const ARITHMETIC = new Set([
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Pow',
  'Log',
  'Exp',
  'Sqrt',
  'Neg',
  'Abs',
  'Reciprocal',
  'Min',
  'Max',
  'Clip',
  'Where',
]);
/** `reaches`: at most this many arithmetic or data-movement steps, this many values, tensors of this many weights. */
const REACH_DEPTH = 8;
const REACH_VALUES = 256;
const REACH_MAX_WEIGHTS = 1 << 16;

/** ONNX itself refuses protobufs over 2 GiB; larger weights live in external data. */
const MAX_ONNX_BYTES = 2 ** 31;
/** Far more dimensions than any real tensor has; a bound against crafted dims. */
const MAX_RANK = 16;

interface OnnxTensor extends TensorEntry {
  form: DataForm;
  /** Where the data lives: [start, end) in the model file, or in an external file. */
  dataStart: number;
  dataEnd: number;
  externalFile?: string;
  /** For float_data/int32_data/double_data stored unpacked, values are gathered on read. */
  unpacked?: boolean;
  /** The name the graph refers to it by (a Constant node's output name). */
  ref: string;
  /** raw_data left in the model file by the scan (scan.ts): [dataStart, dataEnd) are offsets in the file. */
  inFile?: boolean;
  /** raw_data copied by the scan: its offset in the model file ([dataStart, dataEnd) are in the copy). */
  fileStart?: number;
}

/**
 * Bytes per element of the non-float ONNX types, to size an external tensor whose record gives no length
 * (INT4/UINT4 pack two to a byte and are sized from the length field or the rest of the file).
 */
/** The most zero points a QuantizeLinear's weight is looked at with (one per output channel of a large layer). */
const MAX_ZERO_POINTS = 1 << 16;

const OTHER_TYPE_BYTES: Readonly<Record<number, number>> = {
  2: 1, // UINT8
  3: 1, // INT8
  4: 2, // UINT16
  5: 2, // INT16
  6: 4, // INT32
  7: 8, // INT64
  9: 1, // BOOL
  12: 4, // UINT32
  13: 8, // UINT64
  14: 8, // COMPLEX64
  15: 16, // COMPLEX128
  17: 1, // FLOAT8E4M3FN
  18: 1, // FLOAT8E4M3FNUZ
  19: 1, // FLOAT8E5M2
  20: 1, // FLOAT8E5M2FNUZ
};

/** A tensor of any type whose data lives in an external file: [start, end) of it (end undefined: to its end). */
interface ExternalRef {
  /** The tensor's field path (as OnnxTensor.location). */
  path: string;
  name: string;
  file: string;
  start: number;
  end?: number;
}

interface RawNode {
  op: string;
  /** The operator set's domain where it is not the default one (`com.microsoft` for onnxruntime's contrib ops). */
  domain?: string;
  /** Which of a local function's overloads it calls (NodeProto.overload, IR 10). */
  overload?: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, number | string | number[]>;
  /** The node's field path (`7.0/1.12`; a subgraph's nodes below their If's attribute). */
  path: string;
  /** Path of the `value` tensor attribute of a Constant node. */
  constantTensorPath?: string;
  constantTensorRange?: [number, number];
}

/** ModelProto's first field (onnx.proto3): every ONNX file starts with it. */
const MODEL_IR_VERSION = 1;

export class OnnxReader implements ModelReader {
  readonly format = 'onnx' as const;
  readonly tensors: OnnxTensor[] = [];
  private readonly byKey = new Map<string, OnnxTensor>();
  private readonly nodes: RawNode[] = [];
  /** The model's local functions (PyTorch's dynamo exporter writes a module as one): calls are looked through. */
  private readonly functions = new Map<string, LocalFunction>();
  private inlined?: RawNode[];
  /** Every tensor with external data, float or not: the skeleton places their data inline. */
  private readonly externals: ExternalRef[] = [];
  /** The main graph's input names, and its initializers' names (float or not), for `markDefaults`. */
  private readonly mainInputs = new Set<string>();
  private readonly mainInitializers = new Set<string>();
  private irVersion = 0;
  /** Where small int8/uint8 initializers lie inline (a QuantizeLinear's zero points, `attachQuantizers`), by name. */
  private readonly smallInts = new Map<string, { signed: boolean; start: number; end: number }>();

  private readonly elided: ReadonlyMap<string, readonly [number, number]>;
  private readonly at: ReadonlyMap<string, number>;
  private readonly scanned?: { fileBytes: number; mtimeMs: number };

  /**
   * `bytes` is the model, or (with `scan`) a copy of it in which the raw_data of the tensors named in `elided` by
   * field path is empty and lives at the given offsets of the model file (`scanOnnx`).
   */
  constructor(
    readonly file: string,
    readonly bytes: Uint8Array,
    scan?: Pick<ScannedOnnx, 'elided' | 'at' | 'fileBytes' | 'mtimeMs'>,
  ) {
    this.elided = scan?.elided ?? new Map();
    this.at = scan?.at ?? new Map();
    if (scan) this.scanned = { fileBytes: scan.fileBytes, mtimeMs: scan.mtimeMs };
    const fileBytes = scan?.fileBytes ?? bytes.length;
    if (fileBytes > MAX_ONNX_BYTES) throw new BadModelError(`ONNX file larger than 2 GiB`, { file });
    let sawGraph = false;
    let first: number | undefined;
    const count = occurrenceCounter();
    try {
      for (const f of wireFields(bytes, 0, bytes.length, file)) {
        first ??= f.field;
        const occ = count(f.field);
        if (f.field === MODEL_IR_VERSION && f.wire === WIRE_VARINT) this.irVersion = f.value;
        else if (f.field === MODEL_GRAPH && f.wire === WIRE_LEN) {
          sawGraph = true;
          this.walkGraph(f.valueStart, f.end, pathJoin('', f.field, occ), 0);
        } else if (f.field === MODEL_FUNCTIONS && f.wire === WIRE_LEN)
          addFunction(this.functions, readLocalFunction(bytes, f.valueStart, f.end, file));
      }
    } catch (e) {
      // an ONNX file starts with its ir_version (field 1): one that does and then breaks is damaged, anything else is
      // no ONNX model at all (a text file parses as a field or two of protobuf before it breaks)
      if (sawGraph || !(e instanceof BadModelError) || e.tensor) throw e;
      const detail = e.message.startsWith(`file ${file}: `) ? e.message.slice(`file ${file}: `.length) : e.message;
      throw new BadModelError(
        first === MODEL_IR_VERSION ? `truncated or damaged ONNX model (${detail})` : `not an ONNX model (${detail})`,
        {
          file,
        },
      );
    }
    if (!sawGraph) throw new BadModelError('not an ONNX model: no graph field found', { file });
    this.attachUses();
    this.markDefaults();
  }

  /**
   * Initializers that are also inputs of the main graph are defaults a caller may override (IR ≥ 4), except where
   * every initializer is listed: the convention of IR < 4, which some exporters keep (`keep_initializers_as_inputs`),
   * where the list says nothing about any one of them.
   */
  private markDefaults(): void {
    if (this.irVersion < 4) return;
    const listed = [...this.mainInitializers].filter((n) => this.mainInputs.has(n));
    if (!listed.length || listed.length === this.mainInitializers.size) return;
    const names = new Set(listed);
    for (const t of this.tensors) if (MAIN_INITIALIZER_PATH.test(t.location) && names.has(t.ref)) t.overridable = true;
  }

  private walkGraph(start: number, end: number, path: string, depth: number): void {
    if (depth > MAX_NESTING) throw new BadModelError(`subgraphs nested deeper than ${MAX_NESTING}`, { file: this.file });
    const count = occurrenceCounter();
    for (const f of wireFields(this.bytes, start, end, this.file)) {
      const occ = count(f.field);
      if (f.wire !== WIRE_LEN) continue;
      const p = pathJoin(path, f.field, occ);
      if (f.field === GRAPH_INITIALIZER) {
        if (depth === 0) this.mainInitializers.add(this.fieldName(f.valueStart, f.end, TENSOR_NAME));
        this.addTensor(f.valueStart, f.end, p, undefined);
      } else if (f.field === GRAPH_NODE) this.walkNode(f.valueStart, f.end, p, depth);
      else if (f.field === GRAPH_INPUT && depth === 0) this.mainInputs.add(this.fieldName(f.valueStart, f.end, 1));
    }
  }

  /** The string field `field` of the message in [start, end) ('' where it has none). */
  private fieldName(start: number, end: number, field: number): string {
    let name = '';
    for (const f of wireFields(this.bytes, start, end, this.file))
      if (f.field === field && f.wire === WIRE_LEN) name = utf8(this.bytes, f.valueStart, f.end);
    return name;
  }

  private walkNode(start: number, end: number, path: string, depth: number): void {
    const node: RawNode = { op: '', inputs: [], outputs: [], attrs: {}, path };
    const count = occurrenceCounter();
    for (const f of wireFields(this.bytes, start, end, this.file)) {
      const occ = count(f.field);
      if (f.wire !== WIRE_LEN) continue;
      if (f.field === NODE_INPUT) node.inputs.push(utf8(this.bytes, f.valueStart, f.end));
      else if (f.field === NODE_OUTPUT) node.outputs.push(utf8(this.bytes, f.valueStart, f.end));
      else if (f.field === NODE_OP_TYPE) node.op = utf8(this.bytes, f.valueStart, f.end);
      else if (f.field === NODE_DOMAIN) {
        const domain = utf8(this.bytes, f.valueStart, f.end);
        if (domain && domain !== 'ai.onnx') node.domain = domain;
      } else if (f.field === NODE_OVERLOAD) node.overload = utf8(this.bytes, f.valueStart, f.end) || undefined;
      else if (f.field === NODE_ATTRIBUTE) this.walkAttribute(f.valueStart, f.end, pathJoin(path, f.field, occ), node, depth);
    }
    this.nodes.push(node);
    if (node.op === 'Constant' && node.constantTensorPath && node.constantTensorRange) {
      const [ts, te] = node.constantTensorRange;
      this.addTensor(ts, te, node.constantTensorPath, node.outputs[0]);
    }
  }

  private walkAttribute(start: number, end: number, path: string, node: RawNode, depth: number): void {
    let name = '';
    let value: number | string | number[] | undefined;
    const ints: number[] = [];
    let tensor: { path: string; range: [number, number] } | undefined;
    const count = occurrenceCounter();
    for (const f of wireFields(this.bytes, start, end, this.file)) {
      const occ = count(f.field);
      if (f.field === ATTR_NAME && f.wire === WIRE_LEN) name = utf8(this.bytes, f.valueStart, f.end);
      else if (f.field === ATTR_I && f.wire === WIRE_VARINT) value = int64Values(this.bytes, f, this.file)[0];
      else if (f.field === ATTR_F && f.wire === WIRE_I32)
        value = new DataView(this.bytes.buffer, this.bytes.byteOffset + f.valueStart, 4).getFloat32(0, true);
      else if (f.field === ATTR_S && f.wire === WIRE_LEN) value = utf8(this.bytes, f.valueStart, f.end);
      else if (f.field === ATTR_INTS) ints.push(...int64Values(this.bytes, f, this.file));
      else if (f.field === ATTR_T && f.wire === WIRE_LEN)
        tensor = { path: pathJoin(path, f.field, occ), range: [f.valueStart, f.end] };
      else if ((f.field === ATTR_G || f.field === ATTR_GRAPHS) && f.wire === WIRE_LEN)
        this.walkGraph(f.valueStart, f.end, pathJoin(path, f.field, occ), depth + 1);
    }
    if (ints.length) value = ints;
    if (value !== undefined) node.attrs[name] = value;
    if (tensor && node.op === 'Constant' && name === 'value') {
      node.constantTensorPath = tensor.path;
      node.constantTensorRange = tensor.range;
    }
    // Constant's op_type may come after its attributes in the byte stream; remember the tensor anyway.
    if (tensor && name === 'value' && !node.op) {
      node.constantTensorPath = tensor.path;
      node.constantTensorRange = tensor.range;
    }
  }

  private addTensor(start: number, end: number, path: string, fallbackName: string | undefined): void {
    const file = this.file;
    const dims: number[] = [];
    let dataType = 0;
    let name = '';
    let form: DataForm | undefined;
    let dataStart = 0;
    let dataEnd = 0;
    let unpacked = false;
    let location = 0;
    const external: Record<string, string> = {};
    for (const f of wireFields(this.bytes, start, end, file)) {
      switch (f.field) {
        case TENSOR_DIMS:
          if (f.wire === WIRE_VARINT) dims.push(f.value);
          else if (f.wire === WIRE_LEN) {
            let p = f.valueStart;
            while (p < f.end) {
              const [v, np] = readVarint(this.bytes, p, f.end, file);
              dims.push(v);
              p = np;
            }
          }
          break;
        case TENSOR_DATA_TYPE:
          dataType = f.value;
          break;
        case TENSOR_NAME:
          name = utf8(this.bytes, f.valueStart, f.end);
          break;
        case TENSOR_RAW_DATA: {
          form = 'raw';
          const inFile = this.elided.get(path);
          [dataStart, dataEnd] = inFile ?? [f.valueStart, f.end];
          break;
        }
        case TENSOR_FLOAT_DATA:
        case TENSOR_INT32_DATA:
        case TENSOR_DOUBLE_DATA: {
          const kind =
            f.field === TENSOR_FLOAT_DATA ? 'float_data' : f.field === TENSOR_INT32_DATA ? 'int32_data' : 'double_data';
          if (f.wire === WIRE_LEN && form === undefined) {
            form = kind;
            dataStart = f.valueStart;
            dataEnd = f.end;
          } else {
            form = kind;
            unpacked = true;
            if (!dataStart) dataStart = f.start;
            dataEnd = f.end;
          }
          break;
        }
        case TENSOR_EXTERNAL_DATA:
          if (f.wire === WIRE_LEN) {
            let k = '';
            let v = '';
            for (const e of wireFields(this.bytes, f.valueStart, f.end, file)) {
              if (e.field === 1) k = utf8(this.bytes, e.valueStart, e.end);
              if (e.field === 2) v = utf8(this.bytes, e.valueStart, e.end);
            }
            external[k] = v;
          }
          break;
        case TENSOR_DATA_LOCATION:
          location = f.value;
          break;
      }
    }
    const dtype = ONNX_FLOAT_TYPES[dataType];
    const tensorName = name || fallbackName || path;
    const ext = location === 1 ? this.externalRef(external, path, tensorName) : undefined;
    if (!dtype) {
      // (a QuantizeLinear's zero points: small int8/uint8 raw data inline, read for `attachQuantizers`)
      if ((dataType === 2 || dataType === 3) && form === 'raw' && !ext && !this.elided.has(path)) {
        const n = elementCount(dims);
        if (n <= MAX_ZERO_POINTS && dataEnd - dataStart === n)
          this.smallInts.set(tensorName, { signed: dataType === 3, start: dataStart, end: dataEnd });
      }
      // integer, bool and string tensors stay in the skeleton untouched, except that external data is placed inline
      if (ext) {
        const size = OTHER_TYPE_BYTES[dataType];
        if (ext.end === undefined && size !== undefined) ext.end = ext.start + elementCount(dims) * size;
        this.externals.push(ext);
      }
      return;
    }
    if (dims.length > MAX_RANK) throw new BadModelError(`rank ${dims.length} exceeds ${MAX_RANK}`, { file, tensor: tensorName });
    const n = elementCount(dims);
    if (!Number.isSafeInteger(n)) throw new BadModelError(`shape [${dims}] is too large`, { file, tensor: tensorName });
    const entry: OnnxTensor = {
      key: tensorName,
      name: tensorName,
      dtype,
      shape: dims,
      uses: [],
      location: path,
      form: form ?? 'raw',
      ref: fallbackName ?? tensorName,
      dataStart,
      dataEnd,
      unpacked,
      ...(form === 'raw' && this.elided.has(path) ? { inFile: true } : {}),
      ...(form === 'raw' && this.at.has(path) ? { fileStart: this.at.get(path) } : {}),
    };
    if (ext) {
      // data in an external file, whatever raw_data the scan saw
      delete entry.inFile;
      delete entry.fileStart;
      entry.form = 'external';
      entry.externalFile = ext.file;
      entry.dataStart = ext.start;
      ext.end ??= ext.start + n * BYTES_PER_ELEMENT[dtype];
      entry.dataEnd = ext.end;
      this.externals.push(ext);
    }
    this.checkSize(entry, n);
    if (this.byKey.has(entry.key)) entry.key = `${entry.name}@${path}`;
    this.byKey.set(entry.key, entry);
    this.tensors.push(entry);
  }

  /** Where a tensor's external data is (the `location` key, relative to the model's folder and inside it). */
  private externalRef(kv: Record<string, string>, path: string, name: string): ExternalRef {
    const loc = kv.location;
    if (!loc || isAbsolute(loc) || relative(dirname(this.file), resolve(dirname(this.file), loc)).startsWith('..'))
      throw new BadModelError(`external data location ${JSON.stringify(loc)} is missing or outside the model folder`, {
        file: this.file,
        tensor: name,
      });
    const start = Number(kv.offset ?? 0);
    const end = kv.length !== undefined ? start + Number(kv.length) : undefined;
    if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start)))
      throw new BadModelError(`external data offset ${kv.offset} / length ${kv.length} is not a byte range`, {
        file: this.file,
        tensor: name,
      });
    return { path, name, file: resolve(dirname(this.file), loc), start, end };
  }

  /** The external data files this model refers to (each once), in the order first referred to. */
  get externalFiles(): readonly string[] {
    return [...new Set(this.externals.map((x) => x.file))];
  }

  /** A tensor's bytes from its external file, read by offset (not the whole file: one file often holds them all). */
  private readExternal(x: { file: string; start: number; end?: number; name: string }): Uint8Array {
    let fd: number;
    try {
      fd = openSync(x.file, 'r');
    } catch (e) {
      throw new IoError(`cannot read tensor ${x.name}'s external data: ${fsReason(e)}`, { file: x.file }, e);
    }
    try {
      const size = fstatSync(fd).size;
      const end = x.end ?? size;
      if (end > size || x.start > end)
        throw new BadModelError(`external data ends at ${end} past the end of ${x.file} (${size})`, {
          file: this.file,
          tensor: x.name,
        });
      const out = new Uint8Array(end - x.start);
      let done = 0;
      while (done < out.length) {
        const n = readSync(fd, out, done, out.length - done, x.start + done);
        if (n === 0)
          throw new BadModelError(`external data ends at byte ${x.start + done} of ${x.file}: truncated while it was read`, {
            file: this.file,
            tensor: x.name,
          });
        done += n;
      }
      return out;
    } catch (e) {
      if (e instanceof BadModelError) throw e;
      throw new IoError(`cannot read tensor ${x.name}'s external data: ${fsReason(e)}`, { file: x.file }, e);
    } finally {
      closeSync(fd);
    }
  }

  private checkSize(t: OnnxTensor, n: number): void {
    const bytes = t.dataEnd - t.dataStart;
    const ctx = { file: this.file, tensor: t.name };
    if (t.form === 'raw' || t.form === 'external') {
      if (bytes !== n * BYTES_PER_ELEMENT[t.dtype])
        throw new BadModelError(
          `holds ${bytes} data bytes but shape [${t.shape}] of ${t.dtype} needs ${n * BYTES_PER_ELEMENT[t.dtype]}`,
          ctx,
        );
    } else if (!t.unpacked) {
      const expected = t.form === 'float_data' ? n * 4 : t.form === 'double_data' ? n * 8 : -1;
      if (expected >= 0 && bytes !== expected)
        throw new BadModelError(`holds ${bytes} bytes of ${t.form} but shape [${t.shape}] needs ${expected}`, ctx);
    }
  }

  get opTypes(): ReadonlySet<string> {
    return new Set(this.analysed().map((n) => n.op));
  }

  /** The nodes, with calls of the model's local functions replaced by their bodies (at the call's place). */
  private analysed(): RawNode[] {
    return (this.inlined ??= inlineCalls(
      this.nodes,
      this.functions,
      (call, body, k) => ({ ...body, path: `${call.path}#${k}` }),
      this.file,
    ));
  }

  private attachUses(): void {
    const uses = new Map<string, TensorUse[]>();
    // a stack of matrices picked along its first axis by a Gather (an MoE's experts, `w[topk_ids]`): carried on to
    // the product that takes the picked matrices, as a Slice would be (a table of rows, rank 2, is a Gather's own use)
    const stacks = new Set(this.tensors.filter((t) => t.shape.length >= 3).map((t) => t.ref));
    const carries = (op: string, inputIndex: number, attrs: Record<string, unknown> = {}, input = ''): boolean =>
      carriesValues(op, inputIndex, attrs) ||
      (op === 'Gather' && inputIndex === 0 && (attrs.axis ?? 0) === 0 && stacks.has(input));
    // the data-movement nodes that take a value as their data input: their outputs carry it on
    const carriedTo = new Map<string, Array<{ output: string; op: string; perm?: number[] }>>();
    // the outputs of every data move and elementwise arithmetic node a value enters (for `reaches`)
    const flowsTo = new Map<string, string[]>();
    for (const node of this.analysed()) {
      node.inputs.forEach((input, inputIndex) => {
        if (!input) return;
        if (ARITHMETIC.has(node.op) || carries(node.op, inputIndex, node.attrs, input)) {
          const to = flowsTo.get(input);
          if (to) to.push(...node.outputs);
          else flowsTo.set(input, [...node.outputs]);
        }
        let list = uses.get(input);
        if (!list) uses.set(input, (list = []));
        list.push({
          op: node.op,
          inputIndex,
          attrs: node.attrs,
          node: node.path,
          ...(node.domain ? { domain: node.domain } : {}),
        });
        if (carries(node.op, inputIndex, node.attrs, input))
          carriedTo.set(input, [
            ...(carriedTo.get(input) ?? []),
            ...node.outputs.map((output) => ({
              output,
              op: node.op,
              ...(node.op === 'Transpose' && Array.isArray(node.attrs.perm) ? { perm: node.attrs.perm } : {}),
            })),
          ]);
      });
    }
    // (the perm of each Transpose passed, in order, where every one gives it)
    const consumers = (value: string, seen: Set<string>, through: readonly string[], perms: readonly number[][]): TensorUse[] =>
      (uses.get(value) ?? [])
        .flatMap((u) =>
          carries(u.op, u.inputIndex, u.attrs, value)
            ? []
            : [through.length ? { ...u, through, ...(perms.length ? { perms } : {}) } : u],
        )
        .concat(
          (carriedTo.get(value) ?? [])
            .filter(({ output }) => !seen.has(output) && seen.add(output))
            .flatMap(({ output, op, perm }) => consumers(output, seen, [...through, op], perm ? [...perms, perm] : perms)),
        );
    // the uses past data moves and elementwise arithmetic, a bounded walk (kept tensors are what asks)
    const reaches = (start: string): TensorUse[] => {
      const seen = new Set([start]);
      const found: TensorUse[] = [];
      let level = [start];
      for (let depth = 0; depth <= REACH_DEPTH && level.length && seen.size <= REACH_VALUES; depth++) {
        const next: string[] = [];
        for (const value of level) {
          for (const u of uses.get(value) ?? [])
            if (!ARITHMETIC.has(u.op) && !carries(u.op, u.inputIndex, u.attrs, value)) found.push(u);
          for (const output of flowsTo.get(value) ?? []) if (!seen.has(output) && seen.add(output)) next.push(output);
        }
        level = next;
      }
      return found;
    };
    for (const t of this.tensors) {
      t.uses = uses.get(t.ref) ?? [];
      t.consumers = consumers(t.ref, new Set([t.ref]), [], []);
      if (elementCount(t.shape) <= REACH_MAX_WEIGHTS) t.reaches = reaches(t.ref);
    }
    this.attachQuantizers();
  }

  /**
   * Weights the graph itself rounds onto an int8/uint8 grid at run time (`quantizedBy`): every use of the tensor is
   * the data input of a QuantizeLinear of the default domain with the same constant scale (one, or one per index of
   * its axis) and constant (or absent) zero points, no block size. A model exported from quantization-aware training
   * (TensorRT's toolkit, PyTorch's fake quantization) holds its float weights so.
   */
  private attachQuantizers(): void {
    const byRef = new Map<
      string,
      Array<{ scale: string; zeroPoint?: string; axis: number; outputType?: number; block: number }>
    >();
    for (const node of this.analysed()) {
      if (node.op !== 'QuantizeLinear' || node.domain || !node.inputs[0] || !node.inputs[1]) continue;
      const list = byRef.get(node.inputs[0]) ?? [];
      list.push({
        scale: node.inputs[1],
        ...(node.inputs[2] ? { zeroPoint: node.inputs[2] } : {}),
        axis: typeof node.attrs.axis === 'number' ? node.attrs.axis : 1,
        ...(typeof node.attrs.output_dtype === 'number' ? { outputType: node.attrs.output_dtype } : {}),
        block: typeof node.attrs.block_size === 'number' ? node.attrs.block_size : 0,
      });
      byRef.set(node.inputs[0], list);
    }
    if (!byRef.size) return;
    const floats = new Map(this.tensors.map((t) => [t.ref, t]));
    for (const t of this.tensors) {
      const qs = byRef.get(t.ref);
      if (
        !qs ||
        qs.length !== t.uses.length ||
        !t.uses.every((u) => u.op === 'QuantizeLinear' && u.inputIndex === 0 && !u.domain)
      )
        continue;
      const q = qs[0];
      if (qs.some((o) => o.scale !== q.scale || o.zeroPoint !== q.zeroPoint || o.axis !== q.axis) || q.block > 0) continue;
      const scale = floats.get(q.scale);
      const at = q.zeroPoint === undefined ? undefined : this.smallInts.get(q.zeroPoint);
      const bytes = at && this.bytes.subarray(at.start, at.end);
      const zp = at &&
        bytes && {
          signed: at.signed,
          values: Array.from(at.signed ? new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length) : bytes),
        };
      // (no zero point: uint8 zeros, or the type output_dtype names)
      const signed = zp ? zp.signed : q.outputType === 3;
      if (
        !scale ||
        (q.zeroPoint !== undefined && !zp) ||
        (!zp && q.outputType !== undefined && q.outputType !== 2 && q.outputType !== 3)
      )
        continue;
      const count = elementCount(scale.shape);
      const axis = q.axis < 0 ? q.axis + t.shape.length : q.axis;
      if (count !== 1 && !(scale.shape.length === 1 && axis >= 0 && axis < t.shape.length && t.shape[axis] === count)) continue;
      const zeroPoints = zp ? zp.values : [0];
      if (zeroPoints.length !== count && zeroPoints.length !== 1) continue;
      t.quantizedBy = { scale: scale.key, zeroPoints, signed, axis: count === 1 ? -1 : axis };
    }
  }

  private get(key: string): OnnxTensor {
    const t = this.byKey.get(key);
    if (!t) throw new BadModelError(`no float tensor named ${key}`, { file: this.file, tensor: key });
    return t;
  }

  readRows(key: string, row: number, rows: number): Float32Array {
    const t = this.get(key);
    const [start, end] = rowsRange(t.shape, row, rows, { file: this.file, tensor: key });
    const width = BYTES_PER_ELEMENT[t.dtype];
    if (t.inFile) return decodeFloats(this.readFile(t, t.dataStart + start * width, t.dataStart + end * width), t.dtype);
    // external data: the rows' bytes alone (each slice of a 1 GiB tensor read the whole tensor: 3.2 GB peak for 2 GiB)
    // (its size was checked against the shape when the model was opened: checkSize)
    if (t.form === 'external')
      return decodeFloats(
        this.readExternal({
          file: t.externalFile!,
          start: t.dataStart + start * width,
          end: t.dataStart + end * width,
          name: t.name,
        }),
        t.dtype,
      );
    // the model is in memory already: a copy of the rows, not a view of the whole
    return this.read(key).slice(start, end);
  }

  /** Bytes [start, end) of the model file: data the scan left there. */
  private readFile(t: OnnxTensor, start: number, end: number): Uint8Array {
    return this.readFileRange(start, end, t.name);
  }

  /** Bytes [start, end) of the model file, which must be the file the scan read (not one put in its place since). */
  private readFileRange(start: number, end: number, name: string): Uint8Array {
    const ctx = { file: this.file, tensor: name };
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch (e) {
      throw new IoError(`cannot read tensor ${name}: ${fsReason(e)}`, { file: this.file }, e);
    }
    try {
      const now = fstatSync(fd);
      if (now.size !== this.scanned?.fileBytes || now.mtimeMs !== this.scanned.mtimeMs)
        throw new BadModelError('the file changed since the model was opened', ctx);
      const out = new Uint8Array(end - start);
      let done = 0;
      while (done < out.length) {
        const n = readSync(fd, out, done, out.length - done, start + done);
        if (n === 0) throw new BadModelError(`tensor data ends past the end of the file (${now.size} bytes)`, ctx);
        done += n;
      }
      return out;
    } catch (e) {
      if (e instanceof BadModelError) throw e;
      throw new IoError(`cannot read tensor ${name}: ${fsReason(e)}`, { file: this.file }, e);
    } finally {
      closeSync(fd);
    }
  }

  read(key: string): Float32Array {
    const t = this.get(key);
    const n = elementCount(t.shape);
    if (t.form === 'external')
      return decodeFloats(
        this.readExternal({ file: t.externalFile!, start: t.dataStart, end: t.dataEnd, name: t.name }),
        t.dtype,
      );
    if (t.inFile) return decodeFloats(this.readFile(t, t.dataStart, t.dataEnd), t.dtype);
    if (t.form === 'raw') return decodeFloats(this.bytes.subarray(t.dataStart, t.dataEnd), t.dtype);
    // Typed repeated fields: float_data (float32), double_data, int32_data (float16/bfloat16 bit patterns).
    const out = new Float32Array(n);
    let i = 0;
    const put = (v: number): void => {
      if (i >= n) throw new BadModelError(`holds more values than shape [${t.shape}]`, { file: this.file, tensor: t.name });
      out[i++] = v;
    };
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset);
    const half = (bits: number): number => decodeFloats(Uint8Array.of(bits & 0xff, (bits >> 8) & 0xff), t.dtype)[0];
    const readPacked = (s: number, e: number): void => {
      if (t.form === 'float_data') for (let p = s; p < e; p += 4) put(view.getFloat32(p, true));
      else if (t.form === 'double_data') for (let p = s; p < e; p += 8) put(view.getFloat64(p, true));
      else {
        let p = s;
        while (p < e) {
          const [v, np] = readVarint(this.bytes, p, e, this.file);
          put(half(v));
          p = np;
        }
      }
    };
    if (!t.unpacked) readPacked(t.dataStart, t.dataEnd);
    else {
      const field =
        t.form === 'float_data' ? TENSOR_FLOAT_DATA : t.form === 'double_data' ? TENSOR_DOUBLE_DATA : TENSOR_INT32_DATA;
      for (const f of wireFields(this.bytes, t.dataStart, t.dataEnd, this.file)) {
        if (f.field !== field) continue;
        if (f.wire === WIRE_LEN) readPacked(f.valueStart, f.end);
        else if (t.form === 'float_data') put(view.getFloat32(f.valueStart, true));
        else if (t.form === 'double_data') put(view.getFloat64(f.valueStart, true));
        else put(half(f.value));
      }
    }
    if (i !== n)
      throw new BadModelError(`holds ${i} values but shape [${t.shape}] needs ${n}`, { file: this.file, tensor: t.name });
    return out;
  }

  dataRange(key: string): DataRange | undefined {
    const t = this.get(key);
    const file = t.form === 'raw' ? this.file : t.form === 'external' ? t.externalFile! : undefined;
    if (file === undefined) return undefined;
    let stat = this.stats.get(file);
    if (!stat) {
      try {
        const s = statSync(file);
        stat = { fileBytes: s.size, mtimeMs: s.mtimeMs };
      } catch {
        return undefined; // read by the model's own reader, as before: its error names the file
      }
      this.stats.set(file, stat);
    }
    // raw_data the scan copied is at its own offset in the file
    const start = t.fileStart ?? t.dataStart;
    return { file, start, end: start + t.dataEnd - t.dataStart, dtype: t.dtype, shape: t.shape, ...stat };
  }

  /** Size and modification time of the files data ranges point into (DataRange). */
  private readonly stats = new Map<string, { fileBytes: number; mtimeMs: number }>();

  storage(key: string): OnnxStorage {
    return { format: 'onnx', form: this.get(key).form, path: this.get(key).location };
  }

  /** The model (or its scanned copy) is in memory: nothing to release. */
  close(): void {}

  /** The skeleton is small once the tensors' data is out (protobuf bounds the whole to 2 GB): one part. */
  skeletonParts(stripped: ReadonlySet<string>): Iterable<Uint8Array> {
    return [this.skeleton(stripped)];
  }

  /**
   * The model without the stripped tensors' data. Every other tensor with external data (float or not) has its
   * data placed inline: the skeleton, and so the decompressed model, is one file that needs no other next to it,
   * and `skeleton(new Set())` is the whole model as one file a runtime can load from memory.
   */
  skeleton(stripped: ReadonlySet<string>): Uint8Array {
    const edits = new Map<string, (s: number, e: number) => Uint8Array[]>();
    // data the scan left in the file goes back in, unless stripped or external: every tensor's the scan left out
    // (an attribute tensor of a node other than Constant is no tensor of the reader's, and keeps its data all the same)
    for (const [path, [start, end]] of this.elided)
      edits.set(path, (s, e) => withRawData(this.bytes, s, e, this.readFileRange(start, end, path), this.file));
    for (const x of this.externals)
      edits.set(x.path, (s, e) => replaceTensorData(this.bytes, s, e, this.readExternal(x), this.file));
    for (const key of stripped) {
      const t = this.get(key);
      edits.set(t.location, (s, e) => replaceTensorData(this.bytes, s, e, new Uint8Array(0), this.file));
    }
    return rewriteMessage(this.bytes, 0, this.bytes.length, '', edits, this.file);
  }
}

/**
 * Opens an ONNX model: from `bytes`, or from its file without reading the data of large float tensors into memory
 * (`scanOnnx`). A file the scan cannot parse is read whole, so that its reader names the problem.
 */
export function openOnnx(file: string, bytes?: Uint8Array): OnnxReader {
  if (!bytes) {
    let scanned: ScannedOnnx | undefined;
    try {
      scanned = scanOnnx(file);
    } catch (e) {
      if (!(e instanceof BadModelError)) throw e;
    }
    // a model the reader of the copy finds damaged is read whole: its errors then name the file's own offsets
    if (scanned)
      try {
        return new OnnxReader(file, scanned.bytes, scanned);
      } catch (e) {
        if (!(e instanceof BadModelError)) throw e;
      }
  }
  let data: Uint8Array;
  try {
    data = bytes ?? readFileSync(file);
  } catch (e) {
    throw fsError('cannot read the model', file, e);
  }
  return new OnnxReader(file, data);
}
