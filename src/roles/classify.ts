/**
 * Decides what each float tensor is — fully-connected, convolution, LSTM/GRU
 * or other — from how the graph uses it (ONNX) or from its name and shape
 * (safetensors), and derives the layout (M2–M4) from that. Users override per
 * tensor with name patterns. "other" tensors (biases, norms, small tensors) are
 * kept exact.
 */

import type { ModelFormat, TensorEntry, TensorUse } from '../formats/model.js';
import { elementCount } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';

export type Role = 'fc' | 'conv' | 'lstm' | 'gru' | 'other';
export const ROLES: readonly Role[] = ['fc', 'conv', 'lstm', 'gru', 'other'];

/** Below this many elements a tensor is not worth an image: it is kept exact. */
export const MIN_COMPRESSED_ELEMENTS = 256;

export interface Classification {
  role: Role;
  layout?: LayoutSpec;
  reason: string;
}

const other = (reason: string): Classification => ({ role: 'other', reason });

function convSpec(shape: readonly number[], order: 'out_in' | 'in_out'): LayoutSpec {
  const [a, b, ...k] = shape;
  const kx = k.length ? k[0] : 1;
  const ky = k.length > 1 ? elementCount(k.slice(1)) : 1;
  return order === 'out_in'
    ? { kind: 'conv', nfout: a, nfin: b, kx, ky, order }
    : { kind: 'conv', nfin: a, nfout: b, kx, ky, order };
}

function recurrentSpec(kind: 'lstm' | 'gru', shape: readonly number[]): LayoutSpec | undefined {
  const gates = kind === 'lstm' ? 4 : 3;
  const [directions, rows, nin] = shape.length === 3 ? shape : [1, shape[0], shape[1]];
  if (shape.length < 2 || shape.length > 3 || rows % gates !== 0) return undefined;
  return { kind, gates, directions, hidden: rows / gates, nin };
}

/** A layout for a role forced by the user, from the shape alone. */
export function layoutForRole(role: Role, shape: readonly number[], fcOrder: 'in_out' | 'out_in'): LayoutSpec | undefined {
  if (role === 'fc') {
    if (shape.length < 2) return undefined;
    // Higher ranks are matrices of [prod(leading dims), last dim].
    const last = shape[shape.length - 1];
    const lead = elementCount(shape.slice(0, -1));
    return fcOrder === 'in_out'
      ? { kind: 'fc', nin: lead, nout: last, order: 'in_out' }
      : { kind: 'fc', nout: lead, nin: last, order: 'out_in' };
  }
  if (role === 'conv') return shape.length >= 3 ? convSpec(shape, 'out_in') : undefined;
  if (role === 'lstm' || role === 'gru') return recurrentSpec(role, shape);
  return undefined;
}

/**
 * A MatMul operand's layout: B [.., K, N] (outputs last) of rank 3 or more with more than one matrix is a stack of
 * K × N matrices, a range per column of each (an MoE's experts [E, K, N]: as one [E·K, N] matrix every expert's
 * column j shared a range); otherwise the [leading dims, last] matrix. (A constant A [.., M, K] is [out, in] with a
 * range per row, which already is one per matrix and row.)
 */
function matmulOperandLayout(shape: readonly number[], order: 'in_out' | 'out_in'): LayoutSpec | undefined {
  const batch = elementCount(shape.slice(0, -2));
  if (order === 'in_out' && shape.length >= 3 && batch > 1)
    return { kind: 'stack', batch, nin: shape[shape.length - 2], nout: shape[shape.length - 1], order };
  return layoutForRole('fc', shape, order);
}

/**
 * Whether a use reached through data movement is a batched MatMul's B (rank 3 or more) whose matrices the movement
 * keeps: picked along the first axis by a Gather (routed experts), broadcast, or turned by one Transpose that keeps
 * or swaps the last two axes. A Reshape, Slice or Concat on the way may merge or cut them (`[hidden, heads, dim]`
 * reshaped to `[hidden, heads·dim]` made a stack of `hidden` tiny planes: 7.35 → 10.29 bits/weight): those keep the
 * [leading dims, last] matrix.
 */
function batchedMatMulB(t: TensorEntry, use: TensorUse): boolean {
  if (!((use.op === 'MatMul' || use.op === 'FusedMatMul') && use.inputIndex === 1 && t.shape.length >= 3)) return false;
  const moved = (use.through ?? []).filter((op) => !VALUE_PRESERVING.has(op));
  const transposes = moved.filter((op) => op === 'Transpose').length;
  const keepsLastTwo = (perm: readonly number[]): boolean =>
    perm.length >= 2 && [...perm.slice(-2)].sort((a, b) => a - b).join() === `${perm.length - 2},${perm.length - 1}`;
  return (
    moved.every((op) => op === 'Gather' || op === 'Transpose' || op === 'Unsqueeze' || op === 'Expand') &&
    transposes <= 1 &&
    (transposes === 0 || (use.perms?.length === 1 && keepsLastTwo(use.perms[0])))
  );
}

/** Whether a perm swaps its last two axes and leaves the others in place ([0, 2, 1], [0, 1, 3, 2]). */
function swapsLastTwo(perm: readonly number[]): boolean {
  const n = perm.length;
  return n >= 2 && perm[n - 1] === n - 2 && perm[n - 2] === n - 1 && perm.slice(0, -2).every((a, i) => a === i);
}

/** The classification a single use gives a tensor (a weight input of a layer op), or undefined. */
function classifyUse(t: TensorEntry, use: TensorUse): Classification | undefined {
  if (use.domain === MS) {
    const c = classifyContribUse(t, use);
    if (c) return c;
  }
  if ((use.op === 'Conv' || use.op === 'ConvTranspose') && use.inputIndex === 1 && t.shape.length >= 3) {
    // ConvTranspose's kernel is [C_in, C_out/group, k…]: with groups, output channel (i, j) is group ⌊i·group/C_in⌋'s
    // j-th, so axis 1 alone mixes the groups. Where each group has one output ([C_in, 1, k…]: a depthwise upsampling
    // kernel, which got one range for all its channels), a range per input channel lies inside one output channel.
    const depthwise =
      use.op === 'ConvTranspose' && t.shape[1] === 1 && typeof use.attrs.group === 'number' && use.attrs.group > 1;
    const order = use.op === 'Conv' || depthwise ? 'out_in' : 'in_out';
    return {
      role: 'conv',
      layout: convSpec(t.shape, order),
      reason: depthwise
        ? `ConvTranspose weight (group ${use.attrs.group}, one output each: a range per input channel)`
        : `${use.op} weight`,
    };
  }
  if (use.op === 'Gemm' && t.shape.length === 2 && (use.inputIndex === 1 || use.inputIndex === 0)) {
    const trans = use.attrs[use.inputIndex === 1 ? 'transB' : 'transA'] === 1;
    // B is [K, N] (in × out), or [N, K] when transB; A as a constant is the transposed case.
    const inOut = use.inputIndex === 1 ? !trans : trans;
    const [r, c] = t.shape;
    return {
      role: 'fc',
      layout: inOut ? { kind: 'fc', nin: r, nout: c, order: 'in_out' } : { kind: 'fc', nin: c, nout: r, order: 'out_in' },
      reason: `Gemm input ${use.inputIndex}${trans ? ' (transposed)' : ''}`,
    };
  }
  // MatMul's B [.., K, N]: one range per output column N; a constant A [.., M, K] (y = W·x) is [out, in], one range
  // per row. Batched constants are a stack of matrices (`matmulOperandLayout`).
  if (use.op === 'MatMul' && (use.inputIndex === 1 || use.inputIndex === 0) && t.shape.length >= 2) {
    const operand = use.inputIndex === 1 ? 'B' : 'A';
    return {
      role: 'fc',
      layout: matmulOperandLayout(t.shape, use.inputIndex === 1 ? 'in_out' : 'out_in'),
      reason: t.shape.length === 2 && operand === 'B' ? 'MatMul constant operand' : `MatMul constant operand ${operand}`,
    };
  }
  // a table rows are looked up in (a token embedding, ONNX `Gather` data [vocab, hidden]): one range per row,
  // as GGUF quantizes token_embd and as the safetensors name rule below does; often a transformer's largest
  // tensor (BERT-base: 23 M of 110 M weights), which was kept as float16 when its name did not say "embed"
  if (use.op === 'Gather' && use.inputIndex === 0 && t.shape.length === 2)
    return {
      role: 'fc',
      layout: { kind: 'fc', nout: t.shape[0], nin: t.shape[1], order: 'out_in' },
      reason: GATHER_TABLE,
    };
  // a table added to the activations (a learnt positional embedding: ViT's pos_embed [1, tokens, width], a
  // Slice of [positions, width]; Whisper's sinusoids): one range per row, as a Gather table. Only a table
  // (`isTable`): a broadcast bias stays kept. The plan keeps generated tables too (`generatedTable`: masks, anchors).
  if (use.op === 'Add' && (use.inputIndex === 0 || use.inputIndex === 1) && isTable(t.shape))
    return { role: 'fc', layout: layoutForRole('fc', t.shape, 'out_in'), reason: ADDED_TABLE };
  if ((use.op === 'LSTM' || use.op === 'GRU') && (use.inputIndex === 1 || use.inputIndex === 2)) {
    const kind = use.op === 'LSTM' ? 'lstm' : 'gru';
    const layout = recurrentSpec(kind, t.shape);
    if (layout) return { role: kind, layout, reason: `${use.op} ${use.inputIndex === 1 ? 'W' : 'R'}` };
  }
  // a plain RNN's W [directions, hidden, input] and R [directions, hidden, hidden]: one gate, so each hidden
  // unit's row is a channel (the rows of every direction stacked)
  if (use.op === 'RNN' && (use.inputIndex === 1 || use.inputIndex === 2) && t.shape.length === 3)
    return {
      role: 'fc',
      layout: layoutForRole('fc', t.shape, 'out_in'),
      reason: `RNN ${use.inputIndex === 1 ? 'W' : 'R'} ([directions·hidden, inputs]: one range per hidden unit)`,
    };
  if (use.op === 'Einsum' && t.shape.length >= 2 && typeof use.attrs.equation === 'string') {
    // the operand's subscripts: its channels are the axis that survives into the output (`bi,ij->bj`: j)
    const [lhs, out = ''] = use.attrs.equation.replace(/\s/g, '').split('->');
    const term = lhs.split(',')[use.inputIndex] ?? '';
    const first = term.length === t.shape.length && out.includes(term[0]) && !out.includes(term[term.length - 1]);
    // (`td,edh->teh`, an MoE's experts by einsum: the leading axes and the last survive, the one before the last is
    // summed over: a stack of [d, h] matrices, a range per expert and column)
    const k = term.length;
    const stacked =
      k === t.shape.length &&
      k >= 3 &&
      out.includes(term[k - 1]) &&
      !out.includes(term[k - 2]) &&
      [...term.slice(0, -2)].every((a) => out.includes(a));
    return {
      role: 'fc',
      layout: stacked ? matmulOperandLayout(t.shape, 'in_out') : layoutForRole('fc', t.shape, first ? 'out_in' : 'in_out'),
      reason: `Einsum operand ${term || use.inputIndex}`,
    };
  }
  return undefined;
}

/** Why a tensor added to activations is coded (`planTensors` keeps it when a value is not finite). */
export const GATHER_TABLE = 'Gather table ([rows, width]: one range per row, e.g. a token embedding)';
export const ADDED_TABLE = 'Add table ([rows, width]: one range per row, e.g. a positional embedding)';

/**
 * A table: past its leading 1s, at least two axes and none of length 1 ([1, tokens, width], [positions, width]);
 * not a bias broadcast along some axes ([1, C], [1, C, 1, 1], [1, C, H, 1], a per-head [heads, 1, N]).
 */
const isTable = (shape: readonly number[]): boolean => {
  const rest = shape.slice(shape.findIndex((d) => d !== 1));
  return rest.length >= 2 && rest.every((d) => d > 1);
};

/** onnxruntime's contrib operator domain. */
const MS = 'com.microsoft';

/**
 * Weights of onnxruntime's contrib ops (domain com.microsoft), which models saved after onnxruntime's graph
 * optimizations or its transformer optimizer hold instead of the standard ops they fuse: FusedConv (a Conv's
 * [M, C/group, kH, kW] kernel), NhwcConv and NhwcFusedConv (channels last, [M, kH, kW, C/group]), FusedGemm (Gemm's), FusedMatMul (MatMul's, with transA/transB),
 * Attention's packed QKV projection ([input hidden, 3·hidden]) and EmbedLayerNormalization's word, position and
 * segment tables. Their weights were kept whole as unknown uses.
 */
function classifyContribUse(t: TensorEntry, use: TensorUse): Classification | undefined {
  const { op, inputIndex } = use;
  const rank = t.shape.length;
  if (op === 'FusedConv' && inputIndex === 1 && rank >= 3)
    return { role: 'conv', layout: convSpec(t.shape, 'out_in'), reason: `${op} weight` };
  // channels-last kernels [M, kH, kW, C/group] (the transformer optimizer's NhwcConv with its weights updated):
  // a row of kH·kW·C/group weights per output channel
  if ((op === 'NhwcConv' || op === 'NhwcFusedConv') && inputIndex === 1 && rank >= 3)
    return {
      role: 'fc',
      layout: { kind: 'fc', nout: t.shape[0], nin: elementCount(t.shape.slice(1)), order: 'out_in' },
      reason: `${op} weight ([M, kH, kW, C]: one range per output channel)`,
    };
  if (op === 'FusedGemm') {
    const c = classifyUse(t, { ...use, op: 'Gemm', domain: undefined });
    return c && { ...c, reason: `Fused${c.reason}` };
  }
  if (op === 'FusedMatMul' && (inputIndex === 0 || inputIndex === 1) && rank >= 2) {
    // B [.., K, N] (or [.., N, K] with transB); A [.., M, K] (or [.., K, M] with transA): the output axis
    const trans = use.attrs[inputIndex === 1 ? 'transB' : 'transA'] === 1;
    const outLast = inputIndex === 1 ? !trans : trans;
    return {
      role: 'fc',
      layout: matmulOperandLayout(t.shape, outLast ? 'in_out' : 'out_in'),
      reason: `FusedMatMul constant operand ${inputIndex === 1 ? 'B' : 'A'}${trans ? ' (transposed)' : ''}`,
    };
  }
  if (op === 'Attention' && inputIndex === 1 && rank === 2)
    return {
      role: 'fc',
      layout: { kind: 'fc', nin: t.shape[0], nout: t.shape[1], order: 'in_out' },
      reason: 'Attention QKV weights ([input hidden, 3·hidden])',
    };
  if (op === 'EmbedLayerNormalization' && inputIndex >= 2 && inputIndex <= 4 && rank === 2)
    return {
      role: 'fc',
      layout: { kind: 'fc', nout: t.shape[0], nin: t.shape[1], order: 'out_in' },
      reason: `EmbedLayerNormalization ${['word', 'position', 'segment'][inputIndex - 2]} table ([rows, width]: one range per row)`,
    };
  return undefined;
}

/**
 * Data movement that leaves a tensor's values in their shape and order (only the dtype may change, or the values
 * be rounded onto a quantization grid at run time: QuantizeLinear → DequantizeLinear, fake quantization).
 */
const VALUE_PRESERVING = new Set(['Identity', 'Cast', 'QuantizeLinear', 'DequantizeLinear']);

function classifyOnnx(t: TensorEntry): Classification {
  // a layer's use first: a tensor also added to activations is laid out for its layer, whatever the node order
  for (const use of [...t.uses.filter((u) => u.op !== 'Add'), ...t.uses.filter((u) => u.op === 'Add')]) {
    const c = classifyUse(t, use);
    if (c) return c;
  }
  // a weight that reaches its layer through data movement: PyTorch's Identity of a shared weight, or a Cast of a
  // weight stored in another float type (values and shape as they are), first; then the name rules (Silero's LSTM weights, sliced into gates, are named weight_ih / weight_hh); then a Transpose or
  // Reshape left in the graph (TensorFlow exports keep conv kernels HWIO and transpose them for Conv)
  const through = (t.consumers ?? []).filter((u) => u.through?.length);
  for (const use of through.filter((u) => u.through!.every((op) => VALUE_PRESERVING.has(op)))) {
    const c = classifyThrough(t, use);
    if (c) return c;
  }
  // a kernel transposed for its Conv by a perm the graph gives: where its output channels are, known
  for (const use of through) {
    const c = classifyTransposedKernel(t, use);
    if (c) return c;
  }
  // a batched MatMul's B through data movement (experts picked by a Gather of routed ids): a stack, before the name
  // rules (`experts.w1` read as a kernel got one range per expert)
  for (const use of through.filter((u) => batchedMatMulB(t, u))) {
    const c = classifyThrough(t, use);
    if (c) return c;
  }
  const byName = classifyByName(
    t,
    t.uses.length ? `used by ${[...new Set(t.uses.map((u) => u.op))].join(', ')}` : 'no direct use',
  );
  if (byName.role !== 'other') return byName;
  for (const use of through) {
    const c = classifyThrough(t, use);
    if (c) return c;
  }
  return byName;
}

/** The inputs of layer ops that take weights (any rank: reshaped on the way, the rank the op sees is another). */
const WEIGHT_INPUTS: Readonly<Record<string, readonly number[]>> = {
  Conv: [1],
  ConvTranspose: [1],
  Gemm: [0, 1],
  MatMul: [0, 1],
  Einsum: [0, 1, 2, 3],
  Gather: [0],
  Add: [0, 1],
  LSTM: [1, 2],
  GRU: [1, 2],
  // onnxruntime's contrib ops (com.microsoft)
  FusedConv: [1],
  // (not NhwcConv: behind a Transpose its stored kernel is OIHW, which the [leading dims, last] guess gets wrong)
  FusedGemm: [0, 1],
  FusedMatMul: [0, 1],
};

/**
 * A Conv kernel stored in another axis order and transposed for the Conv by one Transpose (TensorFlow's HWIO
 * kernels, perm [3, 2, 0, 1]; its depthwise HWCM kernels, perm [2, 3, 0, 1]): the Conv's output channels are the
 * stored axis perm[0]. Where that is the first stored axis, or the last one but for axes of size 1, the kernel is a
 * matrix with a range per output channel as stored; elsewhere undefined (the general rule then guesses). A
 * depthwise HWCM kernel [3, 3, 64, 1] was laid out by its name as [3, 3·64·1] with a range per kernel row.
 */
function classifyTransposedKernel(t: TensorEntry, use: TensorUse): Classification | undefined {
  if ((use.op !== 'Conv' && use.op !== 'FusedConv') || use.inputIndex !== 1 || t.shape.length < 3) return undefined;
  const moved = (use.through ?? []).filter((op) => !VALUE_PRESERVING.has(op));
  const perm = use.perms?.length === 1 ? use.perms[0] : undefined;
  if (moved.length !== 1 || moved[0] !== 'Transpose' || !perm || perm.length !== t.shape.length) return undefined;
  const axis = perm[0];
  const product = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);
  const reason = `${use.op} weight (through Transpose [${perm.join(', ')}]: output channels on stored axis ${axis})`;
  if (axis === 0)
    return { role: 'fc', layout: { kind: 'fc', nout: t.shape[0], nin: product(t.shape.slice(1)), order: 'out_in' }, reason };
  if (t.shape.slice(axis + 1).every((d) => d === 1))
    return {
      role: 'fc',
      layout: { kind: 'fc', nin: product(t.shape.slice(0, axis)), nout: product(t.shape.slice(axis)), order: 'in_out' },
      reason,
    };
  return undefined;
}

/**
 * A use reached through data-movement ops. Through Identity alone the values are the layer's as stored; through
 * one Transpose a matrix is the layer's transposed (its orientation flips); through anything else the output
 * channels' axis is not known for sure, and the tensor is coded as a [leading dims, last dim] matrix with a range
 * per last-dim column (a transposed HWIO kernel's output channels). The gate judges the result either way.
 */
function classifyThrough(t: TensorEntry, use: TensorUse): Classification | undefined {
  const through = use.through ?? [];
  const path = `through ${through.join(', ')}`;
  if (through.every((op) => VALUE_PRESERVING.has(op))) {
    const c = classifyUse(t, use);
    return c && { ...c, reason: `${c.reason} (${path})` };
  }
  const moved = through.filter((op) => !VALUE_PRESERVING.has(op));
  if (t.shape.length === 2 && moved.length === 1 && moved[0] === 'Transpose') {
    const c = classifyUse({ ...t, shape: [t.shape[1], t.shape[0]] }, use);
    if (c?.layout?.kind === 'fc') {
      const { nin, nout, order } = c.layout;
      return {
        role: 'fc',
        layout: { kind: 'fc', nin, nout, order: order === 'in_out' ? 'out_in' : 'in_out' },
        reason: `${c.reason} (${path})`,
      };
    }
  }
  if (!WEIGHT_INPUTS[use.op]?.includes(use.inputIndex) || t.shape.length < 2) return undefined;
  if (use.op === 'Add') {
    // a table's rows stay rows through a Slice or a Reshape: laid out as added
    const c = classifyUse(t, use);
    return c && { ...c, reason: `${c.reason} (${path})` };
  }
  // a batched MatMul's B reached so (an MoE's experts picked by a Gather of the routed ids): a stack, whose ranges per
  // matrix and column refine the matrix's per column whatever the movement did
  const batchedB = batchedMatMulB(t, use);
  // (stored [E, out, in] and turned into B by one Transpose of its last two axes: a range per expert and row)
  const swapped = moved.filter((op) => op === 'Transpose').length === 1 && use.perms?.length === 1 && swapsLastTwo(use.perms[0]);
  const layout = batchedB ? matmulOperandLayout(t.shape, swapped ? 'out_in' : 'in_out') : layoutForRole('fc', t.shape, 'in_out');
  return {
    role: 'fc',
    layout,
    reason: `${use.op} weight (${path}; ${batchedB ? (swapped ? 'stacked [N, K] matrices, transposed for the product: a range per matrix and row' : 'a stack of [K, N] matrices') : 'a matrix of [leading dims, last dim]'})`,
  };
}

/** Kernel taps wider than this along a Conv1d weight's last axis are not a kernel (wav2vec2's widest: 128). */
const WIDEST_KERNEL = 256;

/**
 * Without a graph (safetensors), or where the graph hides the use (weights
 * sliced before use): PyTorch naming and shapes. PyTorch stores Linear as
 * [out, in], Conv as [out, in, k…], LSTM/GRU cells as [gates·H, in].
 */
function classifyByName(t: TensorEntry, fallbackReason: string): Classification {
  const n = t.name.toLowerCase();
  // a norm's scale or shift: a vector stored as a matrix ([1, hidden]), or a norm module's own parameter (per-head
  // norms [heads, head_dim]: `q_norm.weight`); a matrix whose name merely holds "norm" (`denorm.weight`,
  // `normalizer.proj.weight`) is a weight like any other
  const normVector =
    /norm/.test(n) && (Math.min(...t.shape) === 1 || /(^|[._])(q_|k_)?(layer|rms|group|batch)?norm\d*\.(weight|bias)$/.test(n));
  if (/(^|[._])(weight_ih|weight_hh)(_l\d+)?(_reverse)?$/.test(n) && t.shape.length === 2) {
    const kind = /gru/.test(n) ? 'gru' : 'lstm';
    const layout = recurrentSpec(kind, t.shape);
    if (layout) return { role: kind, layout, reason: `${kind.toUpperCase()} weight by name` };
  }
  // an MoE's experts stacked in one tensor [E, ·, ·]: as PyTorch parameters named `weight`, E Linear weights
  // [out, in] (a range per expert and row); otherwise as Llama 4 and gpt-oss store them (`experts.gate_up_proj`,
  // `experts.down_proj`), the right operand of a batched product [E, in, out] (a stack, a range per expert and
  // column). A Conv1d kernel [out, in, k] named `weight` stays a kernel: only a name saying experts is read so.
  // (a graph's use, even through data movement, says more: only where there is none)
  const noUse = !t.uses.length && !t.consumers?.length;
  if (noUse && t.shape.length === 3 && /(^|[._])experts?([._]|$)/.test(n) && !normVector && !/(bias|scales?|norm)$/.test(n)) {
    const linear = /(weight|kernel)$/.test(n);
    return {
      role: 'fc',
      layout: matmulOperandLayout(t.shape, linear ? 'out_in' : 'in_out'),
      reason: linear
        ? 'stacked experts by name ([experts, out, in] Linear weights: one range per expert and row)'
        : 'stacked experts by name ([experts, in, out] of a batched product: one range per expert and column)',
    };
  }
  if (/(weight|kernel)$/.test(n) || /\.w_?\d*$/.test(n)) {
    // rank 3 with both trailing axes wider than any kernel (gpt-oss's `mlp.mlp1_weight` [E, 2H, D]): E Linear
    // weights [out, in], a range per matrix and row (read as a Conv1d kernel, one range per expert: 32–36 dB
    // against int8's 43.8)
    if (t.shape.length === 3 && t.shape[1] > WIDEST_KERNEL && t.shape[2] > WIDEST_KERNEL && !normVector)
      return {
        role: 'fc',
        layout: layoutForRole('fc', t.shape, 'out_in'),
        reason: 'stacked Linear weights by name and shape ([n, out, in], no kernel that wide: one range per matrix and row)',
      };
    if (t.shape.length >= 3 && !/embed/.test(n))
      return { role: 'conv', layout: convSpec(t.shape, 'out_in'), reason: 'conv weight by name and rank' };
    // a token embedding [vocab, hidden] is a matrix like any other: one range per token row (as GGUF quantizes
    // token_embd), often the largest tensor of a small LLM (Llama-3.2-1B: 21 % of its weights)
    if (t.shape.length === 2 && /embed/.test(n) && !normVector)
      return {
        role: 'fc',
        layout: { kind: 'fc', nout: t.shape[0], nin: t.shape[1], order: 'out_in' },
        reason: 'embedding table by name ([tokens, hidden]: one range per token)',
      };
    if (t.shape.length === 2 && !normVector)
      return {
        role: 'fc',
        layout: { kind: 'fc', nout: t.shape[0], nin: t.shape[1], order: 'out_in' },
        reason: 'linear weight by name (PyTorch [out, in])',
      };
  }
  return other(fallbackReason);
}

export function classifyTensor(t: TensorEntry, format: ModelFormat): Classification {
  if (elementCount(t.shape) < MIN_COMPRESSED_ELEMENTS) return other(`small (${elementCount(t.shape)} elements)`);
  if (t.shape.length < 2) return other('rank < 2 (bias or norm)');
  return format === 'onnx' ? classifyOnnx(t) : classifyByName(t, 'no rule matched');
}
