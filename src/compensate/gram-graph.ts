/**
 * H = XᵀX of a convolution's im2col patches computed by onnxruntime inside the capture graph, so that only
 * the (block-diagonal) Gram matrices leave the session, not the layer inputs: for ISNet (1×3×1024×1024,
 * K up to 9216) the JavaScript Gram took ~16 min per photo (gram.ts), and exposing every conv input as a
 * float32 output held gigabytes.
 *
 * Per block of input channels [c0, c1) of one group: Slice the (float32) input to those channels; a depthwise
 * Conv with one-hot kernels (nb·kH·kW outputs, `group` nb, the op's own strides, pads, dilations) gives the
 * im2col patches [N, nb·kH·kW, oH, oW] with features in ONNX weight order (c, kh, kw); Flatten(axis 2) makes it
 * [N·Kb, P] (no copy) and Gemm(F, F, transB) gives [N·Kb, N·Kb], whose N diagonal blocks sum to the block's
 * H. Cast(Shape) of the first block's patches gives N and P (the rows).
 *
 * Optional position subsampling multiplies the strides by `positionStride`: the output positions kept are
 * every positionStride-th row and column of the op's own (the same patches, a regular subset).
 */

import { WIRE_LEN, WIRE_VARINT, utf8, wireFields } from '../formats/onnx/protobuf.js';
import { type ConvAttrs } from './gram.js';
import { castToFloat, constantNode, intAttr, intsAttr, nodeProto, stringAttr } from './graph-edit.js';

/**
 * The default domain's opset the capture graph needs: `Gemm` without C (optional from 11) and `Slice` with its
 * bounds as inputs (from 10). A model of an older opset keeps the JavaScript Gram.
 */
export const GRAM_GRAPH_MIN_OPSET = 11;

/** The model's opset of the default ONNX domain (ModelProto.opset_import), or undefined where none is listed. */
export function defaultOpset(model: Uint8Array): number | undefined {
  const MODEL_OPSET_IMPORT = 8;
  for (const f of wireFields(model, 0, model.length)) {
    if (f.field !== MODEL_OPSET_IMPORT || f.wire !== WIRE_LEN) continue;
    let domain = '';
    let version: number | undefined;
    for (const g of wireFields(model, f.valueStart, f.end)) {
      if (g.field === 1 && g.wire === WIRE_LEN) domain = utf8(model, g.valueStart, g.end);
      else if (g.field === 2 && g.wire === WIRE_VARINT) version = g.value;
    }
    if ((domain === '' || domain === 'ai.onnx') && version !== undefined) return version;
  }
  return undefined;
}

/** What one convolution input's in-graph Gram gives back. */
export interface ConvGramOutputs {
  /** Main-graph output per (group, block), group-major: a [N·Kb, N·Kb] float32 Gram. */
  grams: string[];
  /** Cast(Shape) of the first block's patches: [N, Kb, oH(, oW)] as floats. */
  shape: string;
  /** Feature widths of the diagonal blocks of one group's H (the same for every group); sum = K. */
  blocks: number[];
}

export interface ConvGramSpec {
  /** Name of the convolution's input (in the main graph). */
  x: string;
  attrs: ConvAttrs;
  kernel: readonly number[];
  /** Input channels in total and groups of the convolution. */
  channels: number;
  groups: number;
  /** Largest block of H (features): blocks are whole input channels, at most max(taps, maxBlock) wide. */
  maxBlock: number;
  /** Keep every positionStride-th output row and column (1: every position). */
  positionStride: number;
}

/** Channel counts of the blocks of one group: ⌈cg / per⌉ blocks as equal as possible. */
export function blockChannels(cg: number, taps: number, maxBlock: number): number[] {
  const per = Math.min(cg, Math.max(1, Math.floor(maxBlock / taps)));
  const n = Math.ceil(cg / per);
  return Array.from({ length: n }, (_, b) => Math.floor(((b + 1) * cg) / n) - Math.floor((b * cg) / n));
}

/** Feature widths of the diagonal blocks of one group's H for a convolution input (whole channels, sum = K). */
export function blockWidths(spec: Pick<ConvGramSpec, 'kernel' | 'channels' | 'groups' | 'maxBlock'>): number[] {
  const taps = spec.kernel.reduce((a, b) => a * b, 1);
  return blockChannels(spec.channels / spec.groups, taps, spec.maxBlock).map((nb) => nb * taps);
}

/**
 * Nodes computing the block Grams of one convolution input; `name(suffix)` gives fresh value names, `shared`
 * caches constants (one-hot kernels, slice bounds) across calls.
 */
export function convGramNodes(
  spec: ConvGramSpec,
  name: (suffix: string) => string,
  shared: Map<string, string>,
  nodes: Uint8Array[][],
): ConvGramOutputs {
  const { attrs, kernel, channels, groups } = spec;
  const rank = kernel.length;
  const taps = kernel.reduce((a, b) => a * b, 1);
  const cg = channels / groups;
  const autoPad = typeof attrs.auto_pad === 'string' ? attrs.auto_pad : 'NOTSET';
  // subsampling by stride needs the op's own begin pads: not with SAME_* auto padding
  const sub = autoPad === 'NOTSET' || autoPad === 'VALID' ? Math.max(1, Math.floor(spec.positionStride)) : 1;
  const list = (key: string, fill: number, n = rank): number[] => {
    const v = attrs[key];
    return Array.isArray(v) && v.length === n ? v : new Array<number>(n).fill(fill);
  };
  const strides = list('strides', 1).map((s) => s * sub);
  const pads = list('pads', 0, 2 * rank);
  const dilations = list('dilations', 1);
  const identity = taps === 1 && strides.every((s) => s === 1) && (autoPad === 'VALID' || pads.every((p) => p === 0));
  const xf = name('x');
  nodes.push(castToFloat(spec.x, xf));
  const constant = (key: string, dims: number[], make: () => Float32Array | BigInt64Array): string => {
    let out = shared.get(key);
    if (!out) {
      out = name('c');
      nodes.push(constantNode(out, dims, make()));
      shared.set(key, out);
    }
    return out;
  };
  const int64 = (v: number): string => constant(`i64|${v}`, [1], () => BigInt64Array.of(BigInt(v)));
  const sizes = blockChannels(cg, taps, spec.maxBlock);
  const grams: string[] = [];
  let shape = '';
  for (let g = 0; g < groups; g++) {
    let c0 = g * cg;
    for (const nb of sizes) {
      const c1 = c0 + nb;
      let xs = xf;
      if (c0 !== 0 || c1 !== channels) {
        xs = name('s');
        nodes.push(nodeProto('Slice', `${xs}__slice`, [xf, int64(c0), int64(c1), int64(1)], [xs], []));
      }
      let y = xs;
      if (!identity) {
        y = name('p');
        const w = constant(`onehot|${nb}|${kernel.join('x')}`, [nb * taps, 1, ...kernel], () => {
          const d = new Float32Array(nb * taps * taps);
          for (let o = 0; o < nb * taps; o++) d[o * taps + (o % taps)] = 1;
          return d;
        });
        const convAttrs: Uint8Array[][] = [
          intAttr('group', nb),
          intsAttr('kernel_shape', kernel),
          intsAttr('strides', strides),
          intsAttr('dilations', dilations),
        ];
        if (autoPad !== 'NOTSET') convAttrs.push(stringAttr('auto_pad', autoPad));
        else convAttrs.push(intsAttr('pads', pads));
        nodes.push(nodeProto('Conv', `${y}__im2col`, [xs, w], [y], convAttrs));
      }
      if (!shape) {
        const s = name('shape');
        shape = name('shapef');
        nodes.push(nodeProto('Shape', `${s}__shape`, [y], [s], []));
        nodes.push(castToFloat(s, shape));
      }
      const f = name('f');
      nodes.push(nodeProto('Flatten', `${f}__flatten`, [y], [f], [intAttr('axis', 2)]));
      const gram = name('g');
      nodes.push(nodeProto('Gemm', `${gram}__gemm`, [f, f], [gram], [intAttr('transB', 1)]));
      grams.push(gram);
      c0 = c1;
    }
  }
  return { grams, shape, blocks: blockWidths(spec) };
}
