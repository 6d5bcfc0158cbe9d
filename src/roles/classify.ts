/**
 * Decides what each float tensor is — fully-connected, convolution, LSTM/GRU
 * or other — from how the graph uses it (ONNX) or from its name and shape
 * (safetensors), and derives the layout (M2–M4) from that. Users override per
 * tensor with name patterns. "other" tensors (biases, norms, small tensors) are
 * kept exact.
 */

import type { ModelFormat, TensorEntry } from '../formats/model.js';
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

function classifyOnnx(t: TensorEntry): Classification {
  for (const use of t.uses) {
    if ((use.op === 'Conv' || use.op === 'ConvTranspose') && use.inputIndex === 1 && t.shape.length >= 3) {
      const order = use.op === 'Conv' ? 'out_in' : 'in_out';
      return { role: 'conv', layout: convSpec(t.shape, order), reason: `${use.op} weight` };
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
    // per row. Batched constants are their matrices stacked along the rows (`layoutForRole`'s [leading dims, last]).
    if (use.op === 'MatMul' && (use.inputIndex === 1 || use.inputIndex === 0) && t.shape.length >= 2) {
      const operand = use.inputIndex === 1 ? 'B' : 'A';
      return {
        role: 'fc',
        layout: layoutForRole('fc', t.shape, use.inputIndex === 1 ? 'in_out' : 'out_in'),
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
        reason: 'Gather table ([rows, width]: one range per row, e.g. a token embedding)',
      };
    if ((use.op === 'LSTM' || use.op === 'GRU') && (use.inputIndex === 1 || use.inputIndex === 2)) {
      const kind = use.op === 'LSTM' ? 'lstm' : 'gru';
      const layout = recurrentSpec(kind, t.shape);
      if (layout) return { role: kind, layout, reason: `${use.op} ${use.inputIndex === 1 ? 'W' : 'R'}` };
    }
  }
  return classifyByName(t, t.uses.length ? `used by ${[...new Set(t.uses.map((u) => u.op))].join(', ')}` : 'no direct use');
}

/**
 * Without a graph (safetensors), or where the graph hides the use (weights
 * sliced before use): PyTorch naming and shapes. PyTorch stores Linear as
 * [out, in], Conv as [out, in, k…], LSTM/GRU cells as [gates·H, in].
 */
function classifyByName(t: TensorEntry, fallbackReason: string): Classification {
  const n = t.name.toLowerCase();
  if (/(^|[._])(weight_ih|weight_hh)(_l\d+)?(_reverse)?$/.test(n) && t.shape.length === 2) {
    const kind = /gru/.test(n) ? 'gru' : 'lstm';
    const layout = recurrentSpec(kind, t.shape);
    if (layout) return { role: kind, layout, reason: `${kind.toUpperCase()} weight by name` };
  }
  if (/(weight|kernel)$/.test(n) || /\.w_?\d*$/.test(n)) {
    if (t.shape.length >= 3 && !/embed/.test(n))
      return { role: 'conv', layout: convSpec(t.shape, 'out_in'), reason: 'conv weight by name and rank' };
    // a token embedding [vocab, hidden] is a matrix like any other: one range per token row (as GGUF quantizes
    // token_embd), often the largest tensor of a small LLM (Llama-3.2-1B: 21 % of its weights)
    if (t.shape.length === 2 && /embed/.test(n) && !/norm/.test(n))
      return {
        role: 'fc',
        layout: { kind: 'fc', nout: t.shape[0], nin: t.shape[1], order: 'out_in' },
        reason: 'embedding table by name ([tokens, hidden]: one range per token)',
      };
    if (t.shape.length === 2 && !/norm/.test(n))
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
