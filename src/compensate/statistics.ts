/**
 * Layer-input statistics from real inference: for every coded weight tensor of
 * an ONNX model, the values it multiplies on calibration data, accumulated as
 * H = XᵀX (per group for grouped convolutions, per direction for recurrent
 * weights). The weight is followed through Cast/Identity/DequantizeLinear,
 * Transpose, Reshape/Unsqueeze/Squeeze and (for recurrent weights) row
 * Slice/Concat chains to the operator that multiplies it:
 *
 * - MatMul/Gemm: the other operand's rows (X, or Bᵀ for a weight on the left);
 * - Conv (1-D and 2-D, grouped, depthwise, strided, padded, dilated, auto_pad): im2col patches;
 * - ConvTranspose: the input pixels of each group (H of the column-space product X·W, which ignores the
 *   overlap-add of neighbouring outputs: a stand-in, flagged `approximate`);
 * - LSTM/GRU: x_t for W; h_{t−1} for R, from the op's Y output shifted by one step plus initial_h (zeros
 *   where absent). GRU's candidate gate multiplies r_t ⊙ h_{t−1}, not h_{t−1} (flagged `approximate`).
 *
 * Those values become graph outputs of a copy of the model (graph-edit.ts), which a caller-supplied
 * runner executes on calibration inputs; each run's outputs are folded into the accumulators and
 * dropped, so memory is one run's activations plus the H matrices.
 */

import { elementCount } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';
import { type MainGraphAdditions, type NamedOutputs, type ValueRequest, exposeValues, freshPrefix } from './graph-edit.js';
import {
  type ConvGramOutputs,
  type ConvGramSpec,
  GRAM_GRAPH_MIN_OPSET,
  blockWidths,
  convGramNodes,
  defaultOpset,
} from './gram-graph.js';
import { type OnnxGraph, type OnnxModelView, type OnnxNode, consumersOf, parseOnnxGraph } from './graph.js';
import { inlineMainGraphFunctions } from './inline.js';
import { type ConvAttrs, GramAccumulator, addConvPatches, convGeometry, patchSize } from './gram.js';

export interface OutputTensor {
  data: Float32Array;
  dims: readonly number[];
}

/**
 * Runs `model` on every calibration input (carrying recurrent state between runs where the model has
 * it) and calls `onRun` with each run's outputs, including the `extraOutputs` by name.
 */
export type RunWithOutputs = (
  model: Uint8Array,
  extraOutputs: string[],
  onRun: (outputs: ReadonlyMap<string, OutputTensor>) => void | Promise<void>,
) => Promise<void>;

/** A tensor to gather statistics for: its key, where it lives (ONNX field path), shape and layout. */
export interface StatisticsTarget {
  key: string;
  location: string;
  shape: readonly number[];
  layout: LayoutSpec;
}

/**
 * How the groups of H map onto the tensor: one H for all rows; per output-channel group (grouped Conv);
 * per input-channel group (grouped ConvTranspose); per direction (recurrent R).
 */
export type Grouping = 'none' | 'output-channels' | 'input-channels' | 'directions';

/**
 * A group's H: float64 from the JavaScript Gram; float32 where onnxruntime computed it in the capture graph (each
 * run's Gram is float32 there already: float64 over runs, then rounded once, half the memory of ISNet's 0.84 GB).
 */
export type HMatrix = Float64Array | Float32Array;

export interface TensorStatistics {
  key: string;
  /** Input features per group: H is K×K. */
  k: number;
  grouping: Grouping;
  /**
   * H = XᵀX per group, row-major K×K, symmetric, summed over runs and over every op that uses the tensor. With
   * `blocks`, only the diagonal blocks of H: block after block, each row-major and symmetric.
   */
  h: HMatrix[];
  /**
   * Block-diagonal H (large K, `CaptureOptions.maxBlock`): the feature widths of the diagonal blocks of every
   * group's H, summing to K. Absent: H is full.
   */
  blocks?: number[];
  /** Rows of X seen per group. */
  rows: number[];
  /** What X is, one line per use. */
  sources: string[];
  /** Why H is a stand-in for the true input statistics, where it is. */
  approximate?: string;
  /** How to compensate with these statistics (damping, column order): the run's `--damp` / `--act-order`. */
  gptq?: { damp?: number; actOrder?: boolean };
}

export interface StatisticsReport {
  stats: Map<string, TensorStatistics>;
  /** Tensors without statistics, with the reason. */
  missing: Map<string, string>;
  runs: number;
  /** Values added as graph outputs. */
  captured: number;
  /** Convolution inputs whose H onnxruntime computed in the capture graph (`gramInGraph`). */
  inGraph: number;
  /** Passes over the probe samples: one, or one per part of the capture graph's Grams (`gramPartBytes`). */
  parts: number;
}

type Site =
  | { kind: 'rows'; x: ValueRequest; desc: string }
  | { kind: 'cols'; x: ValueRequest; desc: string }
  | { kind: 'conv'; x: ValueRequest; attrs: ConvAttrs; kernel: number[]; desc: string }
  | { kind: 'convT'; x: ValueRequest; groups: number; desc: string }
  | {
      kind: 'recurrent';
      node: OnnxNode;
      y: ValueRequest;
      h0?: ValueRequest;
      hidden: number;
      reverse: boolean[];
      batchFirst: boolean;
      desc: string;
    };

interface TargetPlan {
  target: StatisticsTarget;
  k: number;
  groups: number;
  grouping: Grouping;
  sites: Site[];
  approximate?: string;
}

/** Ops a weight passes through unchanged in meaning. */
const SAME = new Set(['Cast', 'Identity', 'DequantizeLinear', 'CastLike']);
/** Ops that change a weight's shape but not which input feature each value multiplies (checked at run time). */
const RESHAPE = new Set(['Reshape', 'Unsqueeze', 'Squeeze', 'Flatten']);
/** Ops that select or stack rows (output units) of a recurrent weight. */
const ROWS = new Set(['Slice', 'Concat', 'Split', 'Gather']);

interface Path {
  transposed: boolean;
  reshaped: boolean;
  rowOps: boolean;
}

/** Where the tensor at `location` is referred to: its graph and value name. */
function locate(view: OnnxModelView, location: string): { graph: OnnxGraph; name: string } | undefined {
  for (const g of view.graphs) for (const i of g.initializers) if (i.path === location) return { graph: g, name: i.name };
  for (const n of view.nodes) if (n.constantPath === location) return { graph: n.graph, name: n.outputs[0] };
  return undefined;
}

/** Ops that multiply the weight, with how the weight got there; uses that lead nowhere are listed. */
function sinks(
  graph: OnnxGraph,
  name: string,
): { found: Array<{ node: OnnxNode; index: number; path: Path }>; other: Set<string> } {
  const found: Array<{ node: OnnxNode; index: number; path: Path }> = [];
  const other = new Set<string>();
  const seen = new Set<string>();
  const walk = (g: OnnxGraph, value: string, path: Path, depth: number): void => {
    if (depth > 32 || seen.has(`${g.path}|${value}`)) return;
    seen.add(`${g.path}|${value}`);
    for (const node of consumersOf(g, value)) {
      const index = node.inputs.indexOf(value);
      const next = (p: Path): void => node.outputs.forEach((o) => o && walk(node.graph, o, p, depth + 1));
      if (SAME.has(node.op) && index === 0) next(path);
      else if (node.op === 'Transpose') {
        const perm = node.attrs.perm;
        const swap = !Array.isArray(perm) || (perm.length === 2 && perm[0] === 1);
        if (Array.isArray(perm) && perm.every((p, i) => p === i)) next(path);
        else if (swap) next({ ...path, transposed: !path.transposed });
        else other.add(`Transpose(perm ${JSON.stringify(perm)})`);
      } else if (RESHAPE.has(node.op) && index === 0) next({ ...path, reshaped: true });
      else if (ROWS.has(node.op) && (node.op === 'Concat' || index === 0)) {
        const axis = node.attrs.axis;
        if (axis === undefined || axis === 0) next({ ...path, rowOps: true });
        else other.add(`${node.op}(axis ${String(axis)})`);
      } else if (['MatMul', 'Gemm', 'Conv', 'ConvTranspose', 'LSTM', 'GRU'].includes(node.op)) found.push({ node, index, path });
      else other.add(node.op);
    }
  };
  walk(graph, name, { transposed: false, reshaped: false, rowOps: false }, 0);
  return { found, other };
}

const nodeLabel = (n: OnnxNode): string => `${n.op} ${n.name || n.path}`;

/** How the statistics of one tensor are gathered: every op that multiplies it (they must agree on K), or why not. */
function planTarget(view: OnnxModelView & { functionsKept?: string }, target: StatisticsTarget): TargetPlan | string {
  const where = locate(view, target.location);
  if (!where) return `not found in the graph at ${target.location}`;
  const { found, other } = sinks(where.graph, where.name);
  const called = [...other].filter((op) => view.functionNames?.has(op));
  if (!found.length && called.length)
    return `used inside the model's local function ${called.join(', ')}${view.functionsKept ? ` (${view.functionsKept})` : ' in an If branch'}, whose values are not exposed`;
  if (!found.length) return `no multiplying op found (used by ${[...other].join(', ') || 'nothing'})`;
  const layout = target.layout;
  const plans: TargetPlan[] = [];
  const reasons: string[] = [];
  for (const { node, index, path } of found) {
    const r = planSite(node, index, path, target, layout);
    if (typeof r === 'string') reasons.push(`${nodeLabel(node)}: ${r}`);
    else plans.push(r);
  }
  if (reasons.length) return reasons.join('; ');
  const first = plans[0];
  for (const p of plans)
    if (p.k !== first.k || p.groups !== first.groups || p.grouping !== first.grouping)
      return `used by ops that disagree on its input features (${plans.map((q) => `K ${q.k}×${q.groups}`).join(', ')})`;
  const approximate = [...new Set(plans.map((p) => p.approximate).filter(Boolean))].join('; ') || undefined;
  return { ...first, sites: plans.flatMap((p) => p.sites), approximate };
}

function planSite(node: OnnxNode, index: number, path: Path, target: StatisticsTarget, layout: LayoutSpec): TargetPlan | string {
  const req = (name: string | undefined): ValueRequest | undefined => (name ? { graph: node.graph, name } : undefined);
  const a = node.attrs;
  const base = { target, sites: [] as Site[] };
  if (node.op === 'MatMul' || node.op === 'Gemm') {
    if (layout.kind === 'stack') return 'a stack of matrices (each multiplies inputs of its own): no statistics per matrix';
    if (layout.kind !== 'fc') return `a ${layout.kind} layout multiplied by ${node.op}`;
    if (path.rowOps) return 'rows selected before the product';
    const gemm = node.op === 'Gemm';
    const right = index === 1;
    // which axis of the weight as the op sees it is contracted
    const flag = gemm ? (right ? a.transB === 1 : a.transA === 1) : false;
    const contractedAsSeen = right ? (flag ? 1 : 0) : flag ? 0 : 1;
    const contracted = path.transposed ? 1 - contractedAsSeen : contractedAsSeen;
    const kAxis = layout.order === 'in_out' ? 0 : 1;
    if (!path.reshaped && contracted !== kAxis) return 'the graph contracts the axis the layout treats as outputs';
    const other = req(node.inputs[right ? 0 : 1]);
    if (!other) return 'the other operand is missing';
    let kind: 'rows' | 'cols';
    if (right) kind = gemm && a.transA === 1 ? 'cols' : 'rows';
    else kind = gemm && a.transB === 1 ? 'rows' : 'cols';
    const desc = `${nodeLabel(node)} ${right ? 'input A' : 'input B'}${kind === 'cols' ? ' (transposed)' : ''}`;
    return { ...base, k: layout.nin, groups: 1, grouping: 'none', sites: [{ kind, x: other, desc }] };
  }
  if (node.op === 'Conv' || node.op === 'ConvTranspose') {
    if (index !== 1 || layout.kind !== 'conv') return `weight as input ${index} of a ${layout.kind} layout`;
    if (path.transposed || path.rowOps) return 'transposed or sliced before the convolution';
    const groups = typeof a.group === 'number' ? a.group : 1;
    const x = req(node.inputs[0])!;
    if (node.op === 'Conv') {
      const kernel = Array.isArray(a.kernel_shape) ? a.kernel_shape : target.shape.slice(2);
      if (path.reshaped && !Array.isArray(a.kernel_shape)) return 'reshaped weight without kernel_shape';
      if (kernel.length > 2) return `${kernel.length}-D convolution (statistics cover 1-D and 2-D)`;
      const k = layout.nfin * layout.kx * layout.ky;
      if (elementCount(kernel) !== layout.kx * layout.ky) return `kernel ${JSON.stringify(kernel)} does not match the layout`;
      if (layout.nfout % groups !== 0) return `${layout.nfout} outputs not divisible into ${groups} groups`;
      return {
        ...base,
        k,
        groups,
        grouping: groups > 1 ? 'output-channels' : 'none',
        sites: [{ kind: 'conv', x, attrs: a, kernel, desc: `${nodeLabel(node)} input (im2col ${kernel.join('×')})` }],
      };
    }
    // a depthwise ConvTranspose kernel is laid out a range per input channel (classify.ts), not as the column product
    if (layout.order !== 'in_out') return 'depthwise ConvTranspose (a range per input channel): no statistics';
    if (layout.nfin % groups !== 0) return `${layout.nfin} inputs not divisible into ${groups} groups`;
    return {
      ...base,
      k: layout.nfin / groups,
      groups,
      grouping: groups > 1 ? 'input-channels' : 'none',
      sites: [{ kind: 'convT', x, groups, desc: `${nodeLabel(node)} input pixels` }],
      approximate: 'ConvTranspose: H of the input pixels (column-space product, overlap-add of outputs ignored)',
    };
  }
  // LSTM / GRU
  if (layout.kind !== 'lstm' && layout.kind !== 'gru') return `a ${layout.kind} layout used by ${node.op}`;
  if (index !== 1 && index !== 2) return `input ${index} of ${node.op}`;
  if (path.transposed) return 'transposed before the recurrent op';
  const direction = typeof a.direction === 'string' ? a.direction : 'forward';
  const directions = direction === 'bidirectional' ? 2 : 1;
  if (path.rowOps && directions > 1) return 'rows selected before a bidirectional op: directions cannot be told apart';
  const batchFirst = a.layout === 1;
  const gruApprox =
    node.op === 'GRU' && index === 2 && a.linear_before_reset !== 1
      ? 'GRU: the candidate gate multiplies r_t ⊙ h_{t−1}; h_{t−1} stands in for it'
      : undefined;
  // sequence_lens: steps past a sequence's end are zero rows of Y (and of padded x): counted as data
  const padded = node.inputs[4] ? `${node.op} with sequence_lens: padded steps count as rows` : undefined;
  if (index === 1)
    return {
      ...base,
      k: layout.nin,
      groups: 1,
      grouping: 'none',
      sites: [{ kind: 'rows', x: req(node.inputs[0])!, desc: `${nodeLabel(node)} x_t` }],
      approximate: padded,
    };
  const hidden = typeof a.hidden_size === 'number' ? a.hidden_size : layout.nin;
  if (hidden !== layout.nin) return `hidden size ${hidden} differs from R's ${layout.nin} inputs`;
  const reverse = directions === 2 ? [false, true] : [direction === 'reverse'];
  return {
    ...base,
    k: hidden,
    groups: directions,
    grouping: directions > 1 ? 'directions' : 'none',
    sites: [
      {
        kind: 'recurrent',
        node,
        y: { graph: node.graph, name: node.outputs[0] ?? '' },
        h0: req(node.inputs[5]),
        hidden,
        reverse,
        batchFirst,
        desc: `${nodeLabel(node)} h_{t−1} (Y shifted, initial_h)`,
      },
    ],
    approximate: [gruApprox, padded].filter(Boolean).join('; ') || undefined,
  };
}

export interface CaptureOptions {
  signal?: AbortSignal;
  /**
   * At most this many im2col positions per convolution input and run (every ⌈P/max⌉-th position, the
   * offset moving from run to run): bounds the cost on large images. Unlimited by default.
   */
  maxPositions?: number;
  /** Called after every run with the number of runs so far (the first pass's, where the capture is in parts). */
  progress?: (runs: number) => void;
  /**
   * Convolutions of the main graph get H computed by onnxruntime in the capture graph (gram-graph.ts): only the
   * Gram matrices leave the session. For large inputs (ISNet); H is then summed in float32 per run.
   */
  gramInGraph?: boolean;
  /**
   * With `gramInGraph`: H block-diagonal over blocks of whole input channels at most this many features wide
   * (bounds H's memory and GPTQ's cost: rows·K·B instead of rows·K²). Default: unbounded (full H).
   */
  maxBlock?: number;
  /** With `gramInGraph`: keep every n-th output row and column of each convolution (default 1: all). */
  positionStride?: number;
  /**
   * With `gramInGraph`: at most this many bytes of (float32) Gram outputs per capture graph. The convolutions are
   * split into parts in the order of the targets (the file's tensors), and each part is a pass of its own over the samples: what one run holds of
   * Gram outputs (onnxruntime's, their JavaScript copies, the last run's until collected) and of H summed in
   * float64 is bounded by the part, at one more forward pass per part and sample. Default: one part.
   */
  gramPartBytes?: number;
}

/** What the statistics need of an accumulator: rows seen and H (full, or packed diagonal blocks). */
interface GramLike {
  readonly rows: number;
  finish(): HMatrix;
}

/**
 * H of one group as packed diagonal blocks, summed from the Gram outputs of the capture graph: in float64 while
 * its part of the capture runs (allocated at its first Gram), float32 once sealed after the part's last run.
 */
class BlockGram implements GramLike {
  private sum: Float64Array | undefined;
  private sealed: Float32Array | undefined;
  rows = 0;
  readonly offsets: number[] = [];
  readonly size: number;

  constructor(readonly blocks: readonly number[]) {
    let n = 0;
    for (const b of blocks) {
      this.offsets.push(n);
      n += b * b;
    }
    this.size = n;
  }

  /** Rounds the float64 sum to float32 and lets it go (no more Grams are added after). */
  seal(): void {
    this.sealed ??= this.sum ? Float32Array.from(this.sum) : new Float32Array(this.size);
    this.sum = undefined;
  }

  /** Adds block b's Gram of n stacked samples ([n·w, n·w], float32): the sum of its n diagonal blocks, symmetrized. */
  add(b: number, gram: Float32Array, dim: number): string | undefined {
    const w = this.blocks[b];
    if (dim % w !== 0 || gram.length !== dim * dim) return `a Gram of ${dim}×${dim} for a block of ${w} features`;
    if (this.sealed) return 'a Gram after its part of the capture was sealed';
    const h = (this.sum ??= new Float64Array(this.size));
    const at = this.offsets[b];
    for (let n = 0; n < dim; n += w)
      for (let i = 0; i < w; i++) {
        const ri = (n + i) * dim + n;
        for (let j = i; j < w; j++) {
          const v = 0.5 * (gram[ri + j] + gram[(n + j) * dim + n + i]);
          h[at + i * w + j] += v;
          if (j !== i) h[at + j * w + i] += v;
        }
      }
    return undefined;
  }

  finish(): Float32Array {
    this.seal();
    return this.sealed!;
  }
}

/**
 * Statistics for every target: plans the values to capture, exposes them, runs the model through
 * `run`, accumulates H per tensor and group. Targets the graph does not let us reach are in `missing`
 * with the reason, as are those whose op never ran on the calibration data.
 */
export async function captureStatistics(
  source: Uint8Array,
  sourceTargets: readonly StatisticsTarget[],
  run: RunWithOutputs,
  options: CaptureOptions = {},
): Promise<StatisticsReport> {
  // layers inside the model's local functions: captured on a copy with the main graph's calls inlined
  const inlined = inlineMainGraphFunctions(source);
  const model = typeof inlined === 'object' ? inlined.bytes : source;
  const targets =
    typeof inlined === 'object' ? sourceTargets.map((t) => ({ ...t, location: inlined.location(t.location) })) : sourceTargets;
  const view = { ...parseOnnxGraph(model), ...(typeof inlined === 'string' ? { functionsKept: inlined } : {}) };
  const missing = new Map<string, string>();
  const plans: TargetPlan[] = [];
  for (const t of targets) {
    const p = planTarget(view, t);
    if (typeof p === 'string') missing.set(t.key, p);
    else plans.push(p);
  }
  // recurrent ops whose Y output is unnamed get a name
  const rename: NamedOutputs = new Map();
  const yPrefix = freshPrefix(view, 'nnm_stat_y');
  for (const p of plans)
    for (const s of p.sites)
      if (s.kind === 'recurrent' && !s.y.name) {
        const name = `${yPrefix}${s.node.path.replace(/[^0-9]/g, '_')}`;
        rename.set(s.node.path, new Map([[0, name]]));
        s.y = { graph: s.node.graph, name };
      }
  // every value once, in a stable order; requests that cannot be exposed (Loop bodies) drop their targets
  const requests: ValueRequest[] = [];
  const requestIndex = new Map<string, number>();
  const need = (r: ValueRequest): number => {
    const key = `${r.graph.path}|${r.name}`;
    let i = requestIndex.get(key);
    if (i === undefined) {
      i = requests.length;
      requests.push(r);
      requestIndex.set(key, i);
    }
    return i;
  };
  const reachable: TargetPlan[] = [];
  // convolutions of the main graph whose H onnxruntime computes (gramInGraph): their geometry per input, the
  // capture graph's nodes built per part below
  const inGraphSpecs = new Map<string, ConvGramSpec>();
  const inGraph = new Map<string, ConvGramOutputs>();
  const planInGraph = new Set<TargetPlan>();
  const gramInGraph = options.gramInGraph && (defaultOpset(view.bytes) ?? 0) >= GRAM_GRAPH_MIN_OPSET;
  for (const p of plans) {
    const blocked = p.sites.map((s) => bodyOwner(s.kind === 'recurrent' ? s.y.graph : s.x.graph)).find(Boolean);
    if (blocked) {
      missing.set(p.target.key, `inside a ${blocked.op} body (${blocked.name || blocked.path}): only If branches are exposed`);
      continue;
    }
    if (gramInGraph && p.sites.every((s) => s.kind === 'conv' && s.x.graph === view.main)) {
      for (const s of p.sites) {
        if (s.kind !== 'conv') continue;
        const key = convKey(s.x.name, s);
        if (inGraphSpecs.has(key)) continue;
        const taps = elementCount(s.kernel);
        inGraphSpecs.set(key, {
          x: s.x.name,
          attrs: s.attrs,
          kernel: s.kernel,
          channels: (p.k / taps) * p.groups,
          groups: p.groups,
          maxBlock: options.maxBlock ?? Infinity,
          positionStride: options.positionStride ?? 1,
        });
      }
      planInGraph.add(p);
      reachable.push(p);
      continue;
    }
    for (const s of p.sites) {
      if (s.kind === 'recurrent') {
        need(s.y);
        if (s.h0) need(s.h0);
      } else need(s.x);
    }
    reachable.push(p);
  }
  // the capture graph's Grams in parts of at most gramPartBytes (the targets' order), each part a pass of its own; the
  // values exposed for the JavaScript Gram go with the first
  const partOf = new Map<string, number>();
  const partKeys = gramParts(inGraphSpecs, options.gramPartBytes ?? Infinity);
  const gramPrefix = freshPrefix(view, 'nnm_gram');
  let gramCounter = 0;
  const partAdditions = (keys: readonly string[], part: number): MainGraphAdditions => {
    const additions: MainGraphAdditions = { nodes: [], outputs: [] };
    const shared = new Map<string, string>();
    for (const key of keys) {
      const out = convGramNodes(
        inGraphSpecs.get(key)!,
        (suffix) => `${gramPrefix}${gramCounter++}_${suffix}`,
        shared,
        additions.nodes,
      );
      additions.outputs.push(...out.grams, out.shape);
      inGraph.set(key, out);
      partOf.set(key, part);
    }
    return additions;
  };
  const partsAdded = partKeys.map(partAdditions);
  const additions = partsAdded[0];
  // the first pass's model is let go once its pass is done (the later parts' passes build their own copies)
  let exposed: { model?: Uint8Array; outputs: string[] } = exposeValues(view, requests, rename, additions);
  const exposedOutputs = exposed.outputs;
  const takeModel = (): Uint8Array => {
    const model = exposed.model!;
    exposed = { outputs: exposedOutputs };
    return model;
  };
  const outName = (r: ValueRequest): string => exposedOutputs[requestIndex.get(`${r.graph.path}|${r.name}`)!];
  let runs = 0;
  // one accumulator set per distinct (value, geometry): weights sharing an input share its H
  const accumulators = new Map<
    string,
    { grams: GramLike[]; blocks?: number[]; add: (o: ReadonlyMap<string, OutputTensor>) => string | undefined }
  >();
  // the pass that feeds each in-graph accumulator (the JavaScript Gram's: the first)
  const accPart = new Map<string, number>();
  const siteAccs = new Map<TargetPlan, string[]>();
  for (const p of reachable) {
    const keys: string[] = [];
    if (planInGraph.has(p)) {
      for (const s of p.sites) {
        if (s.kind !== 'conv') continue;
        const key = `graph|${convKey(s.x.name, s)}`;
        if (!accumulators.has(key)) {
          accumulators.set(key, inGraphAccumulator(inGraph.get(convKey(s.x.name, s))!, p.groups, s.desc));
          accPart.set(key, partOf.get(convKey(s.x.name, s))!);
        }
        keys.push(key);
      }
      siteAccs.set(p, keys);
      continue;
    }
    for (const s of p.sites) {
      const key = siteKey(s, outName, p);
      if (!accumulators.has(key))
        accumulators.set(
          key,
          makeAccumulator(s, p, outName, options.maxPositions, () => runs),
        );
      keys.push(key);
    }
    siteAccs.set(p, keys);
  }
  const failed = new Map<string, string>();
  const pass = async (model: Uint8Array, outputs: readonly string[], part: number): Promise<void> => {
    const live = [...accumulators].filter(([key]) => (accPart.get(key) ?? 0) === part);
    await run(model, [...new Set(outputs)], (o) => {
      options.signal?.throwIfAborted();
      for (const [key, acc] of live) {
        if (failed.has(key)) continue;
        const err = acc.add(o);
        if (err) failed.set(key, err);
      }
      if (part === 0) {
        runs++;
        options.progress?.(runs);
      }
    });
    // this part's H to float32 (no more Grams come), before the next part's are summed
    for (const [, acc] of live) for (const g of acc.grams) if (g instanceof BlockGram) g.seal();
  };
  if (requests.length || additions.outputs.length) await pass(takeModel(), [...exposedOutputs, ...additions.outputs], 0);
  else takeModel();
  for (let part = 1; part < partKeys.length; part++) {
    const more = partsAdded[part];
    await pass(exposeValues(view, [], new Map(), more).model, more.outputs, part);
  }
  const stats = new Map<string, TensorStatistics>();
  for (const p of reachable) {
    const keys = siteAccs.get(p)!;
    const err = keys.map((k) => failed.get(k)).find(Boolean);
    if (err) {
      missing.set(p.target.key, err);
      continue;
    }
    const sets = keys.map((k) => accumulators.get(k)!.grams);
    const blocks = accumulators.get(keys[0])!.blocks;
    const rows = Array.from({ length: p.groups }, (_, g) => sets.reduce((s, grams) => s + grams[g].rows, 0));
    if (rows.every((r) => r === 0)) {
      missing.set(p.target.key, 'its op never ran on the calibration data');
      continue;
    }
    const h = Array.from({ length: p.groups }, (_, g) => {
      if (sets.length === 1) return sets[0][g].finish();
      const sum = new Float64Array(sets[0][g].finish().length);
      for (const grams of sets) {
        const m = grams[g].finish();
        for (let i = 0; i < sum.length; i++) sum[i] += m[i];
      }
      return sum;
    });
    stats.set(p.target.key, {
      key: p.target.key,
      k: p.k,
      grouping: p.grouping,
      h,
      rows,
      sources: p.sites.map((s) => s.desc),
      ...(blocks && blocks.length > 1 ? { blocks } : {}),
      ...(p.approximate ? { approximate: p.approximate } : {}),
    });
  }
  return {
    stats,
    missing,
    runs,
    captured: new Set(exposedOutputs).size + inGraph.size,
    inGraph: inGraph.size,
    parts: partKeys.length,
  };
}

/**
 * The in-graph convolutions (by key, in the targets' order) in parts of at most `budget` bytes of float32 Gram outputs a
 * run (one sample); a convolution larger than the budget is a part of its own. None: one empty part.
 */
function gramParts(specs: ReadonlyMap<string, ConvGramSpec>, budget: number): string[][] {
  const parts: string[][] = [];
  let bytes = 0;
  for (const [key, spec] of specs) {
    const b = 4 * spec.groups * blockWidths(spec).reduce((s, w) => s + w * w, 0);
    if (!parts.length || bytes + b > budget) {
      parts.push([]);
      bytes = 0;
    }
    parts[parts.length - 1].push(key);
    bytes += b;
  }
  return parts.length ? parts : [[]];
}

/** A convolution input and geometry (weights sharing both share one H). */
function convKey(x: string, s: Extract<Site, { kind: 'conv' }>): string {
  return `${x}|${JSON.stringify([s.attrs.strides, s.attrs.pads, s.attrs.dilations, s.attrs.group, s.attrs.auto_pad, s.kernel])}`;
}

/** The accumulator of one convolution input whose block Grams onnxruntime computes. */
function inGraphAccumulator(
  out: ConvGramOutputs,
  groups: number,
  desc: string,
): { grams: BlockGram[]; blocks: number[]; add: (o: ReadonlyMap<string, OutputTensor>) => string | undefined } {
  const grams = Array.from({ length: groups }, () => new BlockGram(out.blocks));
  return {
    grams,
    blocks: out.blocks,
    add: (o) => {
      const shape = o.get(out.shape);
      // the main graph's values are there after every run: a missing one is the capture graph's fault
      if (!shape) return `${desc}: no patch shape from the capture graph`;
      if (isEmpty(shape)) return undefined;
      const d = shape.data;
      // [N, Kb, spatial…]: rows are N × positions
      let rows = d[0];
      for (let i = 2; i < d.length; i++) rows *= d[i];
      let at = 0;
      for (let g = 0; g < groups; g++) {
        for (let b = 0; b < out.blocks.length; b++) {
          const t = o.get(out.grams[at++]);
          if (!t || t.dims.length !== 2) return `${desc}: no Gram from the capture graph`;
          if (t.dims[0] !== d[0] * out.blocks[b])
            return `${desc}: a Gram of ${t.dims[0]} rows for ${d[0]} samples of ${out.blocks[b]} features`;
          const err = grams[g].add(b, t.data, t.dims[0]);
          if (err) return `${desc}: ${err}`;
        }
        grams[g].rows += rows;
      }
      return undefined;
    },
  };
}

/** The nearest enclosing Loop/Scan of a graph, if any (their values cannot be graph outputs here). */
function bodyOwner(g: OnnxGraph): OnnxNode | undefined {
  for (let cur: OnnxGraph | undefined = g; cur?.owner; cur = cur.owner.graph) if (cur.owner.op !== 'If') return cur.owner;
  return undefined;
}

function siteKey(s: Site, outName: (r: ValueRequest) => string, p: TargetPlan): string {
  switch (s.kind) {
    case 'rows':
    case 'cols':
      return `${s.kind}|${outName(s.x)}|${p.k}`;
    case 'conv':
      return `conv|${outName(s.x)}|${JSON.stringify([s.attrs.strides, s.attrs.pads, s.attrs.dilations, s.attrs.group, s.attrs.auto_pad, s.kernel])}`;
    case 'convT':
      return `convT|${outName(s.x)}|${s.groups}`;
    case 'recurrent':
      return `rec|${outName(s.y)}|${s.h0 ? outName(s.h0) : ''}|${s.reverse.join()}|${s.batchFirst}`;
  }
}

/** Real data only: an empty tensor is a branch that did not run. */
const isEmpty = (t: OutputTensor | undefined): boolean => !t || t.data.length === 0;

function makeAccumulator(
  s: Site,
  p: TargetPlan,
  outName: (r: ValueRequest) => string,
  maxPositions = Infinity,
  run: () => number = () => 0,
): { grams: GramAccumulator[]; add: (o: ReadonlyMap<string, OutputTensor>) => string | undefined } {
  const grams = Array.from({ length: p.groups }, () => new GramAccumulator(p.k));
  const { k } = p;
  switch (s.kind) {
    case 'rows': {
      const name = outName(s.x);
      return {
        grams,
        add: (o) => {
          const t = o.get(name);
          if (isEmpty(t)) return undefined;
          const last = t!.dims[t!.dims.length - 1];
          if (last !== k) return `${s.desc}: last dimension ${last}, expected ${k} input features`;
          grams[0].addRows(t!.data, t!.data.length / k);
          return undefined;
        },
      };
    }
    case 'cols': {
      const name = outName(s.x);
      return {
        grams,
        add: (o) => {
          const t = o.get(name);
          if (isEmpty(t)) return undefined;
          const d = t!.dims;
          if (d.length < 2 || d[d.length - 2] !== k)
            return `${s.desc}: dims [${d.join(', ')}], expected ${k} input features second to last`;
          const n = d[d.length - 1];
          for (let off = 0; off < t!.data.length; off += k * n) grams[0].addFeatureMajor(t!.data, n, n, off);
          return undefined;
        },
      };
    }
    case 'conv': {
      const name = outName(s.x);
      return {
        grams,
        add: (o) => {
          const t = o.get(name);
          if (isEmpty(t)) return undefined;
          const d = t!.dims;
          const rank = s.kernel.length;
          if (d.length < rank + 2) return `${s.desc}: input of rank ${d.length}`;
          const spatial = d.slice(d.length - rank);
          const channels = d[d.length - rank - 1];
          const geom = convGeometry(s.attrs, channels, spatial, s.kernel);
          if (!geom || channels % geom.groups !== 0 || patchSize(geom) !== k || geom.groups !== p.groups)
            return `${s.desc}: input [${d.join(', ')}] gives patches of ${geom ? patchSize(geom) : '?'} features, expected ${k}`;
          if (geom.outH <= 0 || geom.outW <= 0) return undefined;
          const per = channels * elementCount(spatial);
          const positions = geom.outH * geom.outW;
          const step = positions > maxPositions ? Math.ceil(positions / maxPositions) : 1;
          for (let off = 0, n = 0; off < t!.data.length; off += per, n++)
            addConvPatches(t!.data, off, geom, grams, step, (run() + n) % step);
          return undefined;
        },
      };
    }
    case 'convT': {
      const name = outName(s.x);
      return {
        grams,
        add: (o) => {
          const t = o.get(name);
          if (isEmpty(t)) return undefined;
          const d = t!.dims;
          // [N, C, spatial…]: the spatial rank is whatever follows C
          if (d.length < 3) return `${s.desc}: input of rank ${d.length}`;
          const channels = d[1];
          if (channels !== k * s.groups) return `${s.desc}: ${channels} input channels, expected ${k * s.groups}`;
          const plane = elementCount(d.slice(2));
          for (let n = 0; n < d[0]; n++)
            for (let g = 0; g < s.groups; g++) grams[g].addFeatureMajor(t!.data, plane, plane, (n * channels + g * k) * plane);
          return undefined;
        },
      };
    }
    case 'recurrent': {
      const yName = outName(s.y);
      const hName = s.h0 ? outName(s.h0) : undefined;
      return {
        grams,
        add: (o) => {
          const y = o.get(yName);
          if (isEmpty(y)) return undefined;
          const d = y!.dims; // [seq, dirs, batch, H] or, batch-first, [batch, seq, dirs, H]
          if (d.length !== 4 || d[3] !== k) return `${s.desc}: Y dims [${d.join(', ')}], expected hidden ${k}`;
          const [seq, dirs, batch] = s.batchFirst ? [d[1], d[2], d[0]] : [d[0], d[1], d[2]];
          if (dirs !== s.reverse.length) return `${s.desc}: ${dirs} directions, expected ${s.reverse.length}`;
          const h0 = hName ? o.get(hName) : undefined;
          const yAt = (t: number, dir: number, b: number): number =>
            (s.batchFirst ? (b * seq + t) * dirs + dir : (t * dirs + dir) * batch + b) * k;
          const hAt = (dir: number, b: number): number => (s.batchFirst ? b * dirs + dir : dir * batch + b) * k;
          const rows = new Float32Array(seq * batch * k);
          for (let dir = 0; dir < dirs; dir++) {
            let n = 0;
            for (let b = 0; b < batch; b++) {
              // h_{t−1} over the steps in processing order: initial_h, then Y of every step but the last processed
              if (h0 && !isEmpty(h0)) rows.set(h0.data.subarray(hAt(dir, b), hAt(dir, b) + k), n * k);
              else rows.fill(0, n * k, (n + 1) * k);
              n++;
              for (let step = 0; step < seq - 1; step++) {
                const t = s.reverse[dir] ? seq - 1 - step : step;
                rows.set(y!.data.subarray(yAt(t, dir, b), yAt(t, dir, b) + k), n * k);
                n++;
              }
            }
            grams[dir].addRows(rows, n);
          }
          return undefined;
        },
      };
    }
  }
}

/**
 * Statistics of one stored tensor that serves several places (identical tensors stored once, e.g.
 * Silero v4's 16 kHz and 8 kHz branches): H and rows summed, since the shared codes must serve every
 * use. Undefined when the parts disagree on K, groups or grouping.
 */
export function mergeStatistics(key: string, parts: readonly TensorStatistics[]): TensorStatistics | undefined {
  if (!parts.length) return undefined;
  const [first] = parts;
  const sameBlocks = (p: TensorStatistics): boolean => (p.blocks ?? [p.k]).join() === (first.blocks ?? [first.k]).join();
  if (parts.some((p) => p.k !== first.k || p.h.length !== first.h.length || p.grouping !== first.grouping || !sameBlocks(p)))
    return undefined;
  if (parts.length === 1) return { ...first, key };
  const h = first.h.map((_, g) => {
    const sum = new Float64Array(first.h[g].length);
    for (const p of parts) for (let i = 0; i < sum.length; i++) sum[i] += p.h[g][i];
    return sum;
  });
  const approximate = [...new Set(parts.map((p) => p.approximate).filter(Boolean))].join('; ');
  return {
    key,
    k: first.k,
    grouping: first.grouping,
    h,
    rows: first.rows.map((_, g) => parts.reduce((s, p) => s + p.rows[g], 0)),
    sources: parts.flatMap((p) => p.sources),
    ...(first.blocks ? { blocks: first.blocks } : {}),
    ...(approximate ? { approximate } : {}),
  };
}

/**
 * Rows of input per input feature below which a tensor's statistics are looked at before they are used: H from
 * fewer rows than inputs has directions no probe sample took. Where the rows' energy lies in a few directions
 * (PaddleOCR's squeeze-and-excitation convolutions read pooled features: 150 rows for 240 inputs, effective rank
 * 1.0), those are what other inputs take too, and compensating pays (KL per step 0.044 against 0.078 rounded);
 * where every row adds a direction of its own (a generator's latent Gemm: 48 Gaussian rows for 64 inputs,
 * effective rank 27), the directions left out are as large as the ones seen, and the compensation, which pushes
 * the rounding error into them, made the output worse than rounding to nearest (gate 0.710 against 0.741).
 */
const MIN_ROWS_PER_INPUT = 2;
/** The effective rank per row (see MIN_ROWS_PER_INPUT) above which such statistics are not used. */
const SPREAD_PER_ROW = 0.25;

/**
 * The effective rank (participation ratio) of a tensor's full H, (tr H)² / tr(H²), the least over its groups: the
 * number of directions its rows' energy is spread over (1 when one direction holds it all, K when all hold alike).
 */
function effectiveRank(s: TensorStatistics): number {
  let least = Infinity;
  for (const h of s.h) {
    let tr = 0;
    let tr2 = 0;
    for (let i = 0; i < s.k; i++) tr += h[i * s.k + i];
    for (let i = 0; i < s.k * s.k; i++) tr2 += h[i] * h[i];
    if (tr2 > 0) least = Math.min(least, (tr * tr) / tr2);
  }
  return Number.isFinite(least) ? least : 0;
}

/**
 * Why a tensor's statistics are not to be used, where they come from too few rows: H from fewer rows than a few
 * per input is mostly the probe samples' own subspace, and the compensation would push the rounding error into the
 * directions they happen not to span, which other inputs do (a generator's latent Gemm, 64 inputs seen 48 times:
 * its output moved more than rounded to nearest). Block-diagonal H leaves out the blocks' correlation, which an
 * effective rank needs: not looked at.
 */
export function tooFewRows(s: TensorStatistics): string | undefined {
  const fewest = Math.min(...s.rows);
  const spread = fewest < MIN_ROWS_PER_INPUT * s.k && !s.blocks ? effectiveRank(s) : 0;
  return spread > SPREAD_PER_ROW * fewest
    ? `its statistics saw ${fewest} row${fewest === 1 ? '' : 's'} of input for ${s.k} inputs, spread over ~${Math.round(spread)} directions (compensating would fit the probe samples: more calibration samples allow it)`
    : undefined;
}
