/**
 * Small ONNX models built in the test suite (onnx-proto), one per failure class of issue 14, deterministic
 * and with sensible weights:
 *
 * - `stftMelModel`: a mel-spectrogram front end: a 512-tap STFT as a Conv1d (Hann-windowed Fourier bases,
 *   stride 128) over raw audio [1, 1, N], power, a triangular mel filterbank MatMul (≥ 90 % exact zeros) and a
 *   log. It needs N ≥ 512.
 * - `ifBranchModel`: a first stage (Gemm + ReLU + Gemm) whose score decides an `If`; the second-stage network
 *   lives in the then-branch (its weights are the branch's own initializers). Random inputs never fire it;
 *   `ifTriggerInputs` do.
 * - `cascadeModel`: a first stage whose score decides an `If`: the verifier network in the then-branch gives the
 *   output, which every random input reaches; the first stage moves the output only by flipping the decision.
 * - `sparseModel`: an MLP whose first weight [256, 512] is 92 % exact zeros in 8×8 blocks (block-pruned).
 * - `batchNormClassifier`: a MobileNet-like image classifier (depthwise-separable blocks, BatchNorm after every
 *   conv, ~124k weights, a Gemm head of 10 classes) whose BatchNorm statistics and head bias are set from its
 *   own activations on natural-image-like pictures, so that it normalises properly and its classes are balanced.
 *
 * Each returns the model bytes and its weights by initializer name.
 */

import onnxProto, { type onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { naturalImage } from '../../src/calibration/synthetic.js';
import { gaussian, rng } from './random.js';

// the package is CommonJS: a default import works under vitest and plain Node (tsx) alike
const proto = onnxProto.onnx;

const FLOAT = proto.TensorProto.DataType.FLOAT;
const A = proto.AttributeProto.AttributeType;

export interface BuiltModel {
  bytes: Uint8Array;
  weights: Record<string, Float32Array>;
}

type Dim = number | string;

function valueInfo(name: string, dims?: Dim[], elemType = FLOAT): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        ...(dims ? { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}),
      },
    },
  };
}

function tensor(name: string, dims: number[], values: Float32Array): onnx.ITensorProto {
  return {
    name,
    dims,
    dataType: FLOAT,
    rawData: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)),
  };
}

function int64Tensor(name: string, values: number[]): onnx.ITensorProto {
  return {
    name,
    dims: [values.length],
    dataType: proto.TensorProto.DataType.INT64,
    rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
  };
}

type Attr = number | number[] | string | onnx.IGraphProto;

function attribute(name: string, v: Attr): onnx.IAttributeProto {
  if (typeof v === 'number') return Number.isInteger(v) ? { name, i: v, type: A.INT } : { name, f: v, type: A.FLOAT };
  if (typeof v === 'string') return { name, s: new TextEncoder().encode(v), type: A.STRING };
  if (Array.isArray(v)) return { name, ints: v, type: A.INTS };
  return { name, g: v, type: A.GRAPH };
}

/** A graph under construction: weights become initializers, `op` adds a node and returns its output name. */
class Graph {
  readonly nodes: onnx.INodeProto[] = [];
  readonly initializers: onnx.ITensorProto[] = [];
  readonly weights: Record<string, Float32Array> = {};
  private n = 0;

  constructor(readonly name: string) {}

  weight(name: string, dims: number[], values: Float32Array): string {
    this.initializers.push(tensor(name, dims, values));
    this.weights[name] = values;
    return name;
  }

  ints(name: string, values: number[]): string {
    this.initializers.push(int64Tensor(name, values));
    return name;
  }

  op(type: string, inputs: string[], attrs: Record<string, Attr> = {}, output?: string): string {
    const out = output ?? `${this.name}/${type.toLowerCase()}_${this.n++}`;
    this.nodes.push({
      opType: type,
      input: inputs,
      output: [out],
      name: `${this.name}/${type}_${this.n}`,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return out;
  }

  proto(inputs: onnx.IValueInfoProto[], outputs: onnx.IValueInfoProto[]): onnx.IGraphProto {
    return { name: this.name, node: this.nodes, initializer: this.initializers, input: inputs, output: outputs };
  }
}

function encode(graph: onnx.IGraphProto, opset = 17): Uint8Array {
  return proto.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: opset }],
    producerName: 'nnmedia-test',
    graph,
  }).finish();
}

// ---------------------------------------------------------------------------------------------------------------

export const STFT = { taps: 512, stride: 128, bins: 257, mels: 64, rate: 16000 };

/** Triangular mel filters [bins, mels] (HTK mel scale), the layout a MatMul over [.., bins] takes. */
export function melFilterbank(bins = STFT.bins, mels = STFT.mels, rate = STFT.rate): Float32Array {
  const mel = (f: number): number => 2595 * Math.log10(1 + f / 700);
  const hz = (m: number): number => 700 * (10 ** (m / 2595) - 1);
  const top = mel(rate / 2);
  const edges = Array.from({ length: mels + 2 }, (_, i) => hz((top * i) / (mels + 1)));
  const out = new Float32Array(bins * mels);
  for (let m = 0; m < mels; m++) {
    const [lo, mid, hi] = [edges[m], edges[m + 1], edges[m + 2]];
    for (let b = 0; b < bins; b++) {
      const f = (b * rate) / 2 / (bins - 1);
      const w = f <= lo || f >= hi ? 0 : f <= mid ? (f - lo) / (mid - lo) : (hi - f) / (hi - mid);
      out[b * mels + m] = w;
    }
  }
  return out;
}

/** The mel-spectrogram front end (see the module comment): input `audio` [1, 1, N], output `mel` [1, T, 64]. */
export function stftMelModel(): BuiltModel {
  const { taps, stride, bins, mels } = STFT;
  const g = new Graph('stft_mel');
  const basis = new Float32Array(2 * bins * taps);
  for (let k = 0; k < bins; k++)
    for (let t = 0; t < taps; t++) {
      const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * t) / taps);
      basis[k * taps + t] = hann * Math.cos((2 * Math.PI * k * t) / taps);
      basis[(bins + k) * taps + t] = -hann * Math.sin((2 * Math.PI * k * t) / taps);
    }
  const spec = g.op('Conv', ['audio', g.weight('stft_basis', [2 * bins, 1, taps], basis)], {
    strides: [stride],
    kernel_shape: [taps],
  });
  const split = g.ints('split_sizes', [bins, bins]);
  g.nodes.push({ opType: 'Split', input: [spec, split], output: ['re', 'im'], attribute: [attribute('axis', 1)] });
  const power = g.op('Add', [g.op('Mul', ['re', 're']), g.op('Mul', ['im', 'im'])]);
  const frames = g.op('Transpose', [power], { perm: [0, 2, 1] });
  const melPower = g.op('MatMul', [frames, g.weight('mel_filterbank', [bins, mels], melFilterbank())]);
  const eps = g.weight('log_floor', [1], Float32Array.of(1e-6));
  g.op('Log', [g.op('Add', [melPower, eps])], {}, 'mel');
  return {
    bytes: encode(g.proto([valueInfo('audio', [1, 1, 'samples'])], [valueInfo('mel', [1, 'frames', mels])])),
    weights: g.weights,
  };
}

// ---------------------------------------------------------------------------------------------------------------

export const IF_MODEL = { inputs: 64, hidden: 256, second: 512, details: 128, fireAt: 4 };

/**
 * The If-branch model (see the module comment): input `x` [1, 64]; outputs `score` [1, 1] (the first stage's
 * logit) and `detail` [1, 128] (the second stage's output when score > 0, zeros otherwise). Hidden unit 0 of the
 * first stage matches a unit-norm template; the score is 2·(template·x − 4) plus small contributions of the
 * other units, so it fires only when x points along the template by more than 4 (N(0, 1) noise: p ≈ 3e-5).
 * With `sameNames`, the else branch is a second network of the same shape whose weights carry the then branch's
 * names (`stage2.w1`, `stage2.w2`) and other values, as Silero v6 holds its 8 kHz and 16 kHz networks;
 * `thenWeights` are the then branch's own. With `outerWeights`, the then branch's weights are the main graph's
 * initializers, which the branch reads by name (outer scope), as exporters often place them.
 */
export function ifBranchModel(
  seed = 1,
  options: { sameNames?: boolean; outerWeights?: boolean } = {},
): BuiltModel & { template: Float32Array; thenWeights: Record<string, Float32Array> } {
  const { inputs, hidden, second, details, fireAt } = IF_MODEL;
  const g = new Graph('wake');
  const template = gaussian(inputs, seed * 10 + 1, 1);
  const norm = Math.hypot(...template);
  template.forEach((v, i) => (template[i] = v / norm));
  const w1 = gaussian(hidden * inputs, seed * 10 + 2, Math.sqrt(2 / inputs)); // [out, in] with transB
  w1.set(template, 0);
  const w2 = gaussian(hidden, seed * 10 + 3, 0.01);
  w2[0] = 2;
  const h = g.op('Relu', [
    g.op('Gemm', ['x', g.weight('stage1.w', [hidden, inputs], w1), g.weight('stage1.b', [hidden], new Float32Array(hidden))], {
      transB: 1,
    }),
  ]);
  const score = g.op(
    'Gemm',
    [h, g.weight('stage1.head', [1, hidden], w2), g.weight('stage1.head_b', [1], Float32Array.of(-2 * fireAt))],
    { transB: 1 },
    'score',
  );
  const cond = g.op('Greater', [g.op('ReduceMax', [score], { keepdims: 0 }), g.weight('zero', [], Float32Array.of(0))]);
  // the second stage: its weights are the branch graph's own initializers
  const b = new Graph('then');
  const w3 = gaussian(inputs * second, seed * 10 + 4, Math.sqrt(2 / inputs));
  const w4 = gaussian(second * details, seed * 10 + 5, Math.sqrt(1 / second));
  const owner = options.outerWeights ? g : b;
  const bh = b.op('Relu', [b.op('MatMul', ['x', owner.weight('stage2.w1', [inputs, second], w3)])]);
  b.op('MatMul', [bh, owner.weight('stage2.w2', [second, details], w4)], {}, 'detail_then');
  const e = new Graph('else');
  if (options.sameNames) {
    const w5 = gaussian(inputs * second, seed * 10 + 6, Math.sqrt(2 / inputs));
    const w6 = gaussian(second * details, seed * 10 + 7, Math.sqrt(1 / second));
    const eh = e.op('Relu', [e.op('MatMul', ['x', e.weight('stage2.w1', [inputs, second], w5)])]);
    e.op('MatMul', [eh, e.weight('stage2.w2', [second, details], w6)], {}, 'detail_else');
  } else e.op('Identity', [e.weight('no_detail', [1, details], new Float32Array(details))], {}, 'detail_else');
  g.op(
    'If',
    [cond],
    {
      then_branch: b.proto([], [valueInfo('detail_then', [1, details])]),
      else_branch: e.proto([], [valueInfo('detail_else', [1, details])]),
    },
    'detail',
  );
  const bytes = encode(g.proto([valueInfo('x', [1, inputs])], [valueInfo('score', [1, 1]), valueInfo('detail', [1, details])]));
  return { bytes, weights: { ...g.weights, ...b.weights, ...e.weights }, template, thenWeights: { ...b.weights } };
}

/** Inputs that fire the If model's second stage: the template scaled by 5–8 plus N(0, 0.3) noise, [count, 64]. */
export function ifTriggerInputs(template: Float32Array, count = 8, seed = 5): Float32Array {
  const r = rng(seed);
  const noise = gaussian(count * template.length, seed + 1, 0.3);
  const out = new Float32Array(count * template.length);
  for (let k = 0; k < count; k++) {
    const scale = 5 + 3 * r();
    for (let i = 0; i < template.length; i++) out[k * template.length + i] = scale * template[i] + noise[k * template.length + i];
  }
  return out;
}

export const CASCADE_MODEL = { inputs: 64, hidden: 128, second: 256 };

/**
 * A two-stage cascade as wake-word detectors build it (openWakeWord's hey_jarvis): input `x` [1, 64]; a first
 * stage (Gemm + ReLU + Gemm + Sigmoid) scores `p1`; `If p1 ≥ 0.5` a verifier network (MatMul + ReLU + MatMul +
 * Sigmoid, weights in the branch) gives the output, else `p1` itself: output `p` [1, 1]. The first stage's head
 * bias puts p1 well above 0.5 on N(0, 1) inputs (the verifier runs on every one), so the first stage's weights
 * move the output only by flipping the decision: comparing outputs alone, they look inert.
 */
export function cascadeModel(seed = 1): BuiltModel {
  const { inputs, hidden, second } = CASCADE_MODEL;
  const g = new Graph('cascade');
  const w1 = gaussian(hidden * inputs, seed * 10 + 1, Math.sqrt(2 / inputs));
  const head = gaussian(hidden, seed * 10 + 2, Math.sqrt(1 / hidden));
  const h = g.op('Relu', [
    g.op('Gemm', ['x', g.weight('stage1.w', [hidden, inputs], w1), g.weight('stage1.b', [hidden], new Float32Array(hidden))], {
      transB: 1,
    }),
  ]);
  const p1 = g.op('Sigmoid', [
    g.op('Gemm', [h, g.weight('stage1.head', [1, hidden], head), g.weight('stage1.head_b', [1], Float32Array.of(3))], {
      transB: 1,
    }),
  ]);
  const fired = g.op('Not', [g.op('Less', [p1, g.weight('half', [], Float32Array.of(0.5))])]);
  const cond = g.op('Cast', [g.op('ReduceMax', [g.op('Cast', [fired], { to: FLOAT })], { keepdims: 0 })], {
    to: proto.TensorProto.DataType.BOOL,
  });
  const b = new Graph('verify');
  const v1 = gaussian(inputs * second, seed * 10 + 3, Math.sqrt(2 / inputs));
  const v2 = gaussian(second, seed * 10 + 4, Math.sqrt(1 / second));
  const bh = b.op('Relu', [b.op('MatMul', ['x', b.weight('stage2.w1', [inputs, second], v1)])]);
  b.op('Sigmoid', [b.op('MatMul', [bh, b.weight('stage2.w2', [second, 1], v2)])], {}, 'p_then');
  const e = new Graph('pass');
  e.op('Identity', [p1], {}, 'p_else');
  g.op(
    'If',
    [cond],
    { then_branch: b.proto([], [valueInfo('p_then', [1, 1])]), else_branch: e.proto([], [valueInfo('p_else', [1, 1])]) },
    'p',
  );
  const bytes = encode(g.proto([valueInfo('x', [1, inputs])], [valueInfo('p', [1, 1])]));
  return { bytes, weights: { ...g.weights, ...b.weights } };
}

/**
 * A detector-like model with two heads of very different scales, as BlazeFace and other detectors have (box
 * regressions in pixels beside scores of order 1): input `x` [1, 64]; a trunk (Gemm + ReLU, 256 units); per head
 * a hidden layer (Gemm + ReLU, 256 units) and a Gemm out: `boxes` [1, 16] × 500, `scores` [1, 4]. Compared as
 * one vector, `boxes` outweighs `scores` by ~10⁵ in squared error, so a starved score head goes unseen.
 */
export function twoHeadModel(seed = 1): BuiltModel {
  const { inputs, hidden } = TWO_HEADS;
  const g = new Graph('heads');
  const dense = (x: string, name: string, nin: number, nout: number, k: number): string =>
    g.op('Gemm', [x, g.weight(name, [nout, nin], gaussian(nout * nin, seed * 10 + k, Math.sqrt(2 / nin)))], { transB: 1 });
  const h = g.op('Relu', [dense('x', 'trunk.w', inputs, hidden, 1)]);
  const hb = g.op('Relu', [dense(h, 'boxes.hidden', hidden, hidden, 2)]);
  g.op('Mul', [dense(hb, 'boxes.out', hidden, 16, 3), g.weight('scale', [], Float32Array.of(500))], {}, 'boxes');
  const hs = g.op('Relu', [dense(h, 'scores.hidden', hidden, hidden, 4)]);
  g.op('Identity', [dense(hs, 'scores.out', hidden, 4, 5)], {}, 'scores');
  const bytes = encode(g.proto([valueInfo('x', [1, inputs])], [valueInfo('boxes', [1, 16]), valueInfo('scores', [1, 4])]));
  return { bytes, weights: g.weights };
}

export const TWO_HEADS = { inputs: 64, hidden: 256 };

/**
 * A model that needs more than 8 bits a weight: its output is the small difference of two large products,
 * `y` [1, 256] = x·W1ᵀ − x·W2ᵀ with W2 = W1 + 3 % noise (x [1, 64]), so a weight error of e (relative to the
 * weights) moves `y` by ~e·√2 / 0.03 of itself. Per-channel int8 (~41 dB) leaves `y` ~40 % off; 8-bit steps with
 * exact outliers reach ~51 dB (~13 %); the floor's 10 % needs ≥ ~54 dB, i.e. 16-bit codes.
 */
export function cancellationModel(seed = 1): BuiltModel {
  const g = new Graph('cancel');
  const w1 = gaussian(256 * 64, seed * 10 + 1, 0.1);
  const noise = gaussian(256 * 64, seed * 10 + 2, 0.003);
  const w2 = w1.map((v, i) => v + noise[i]);
  const a = g.op('Gemm', ['x', g.weight('w1', [256, 64], w1)], { transB: 1 });
  const b = g.op('Gemm', ['x', g.weight('w2', [256, 64], w2)], { transB: 1 });
  g.op('Sub', [a, b], {}, 'y');
  return { bytes: encode(g.proto([valueInfo('x', [1, 64])], [valueInfo('y', [1, 256])])), weights: g.weights };
}

// ---------------------------------------------------------------------------------------------------------------

export const SPARSE = { inputs: 256, hidden: 512, classes: 10, block: 8, keep: 0.08 };

/** An MLP `x` [1, 256] → `logits` [1, 10] whose first weight is block-pruned to 92 % exact zeros. */
export function sparseModel(seed = 1): BuiltModel & { zeroFraction: number } {
  const { inputs, hidden, classes, block, keep } = SPARSE;
  const g = new Graph('sparse');
  const w1 = gaussian(inputs * hidden, seed * 10 + 1, Math.sqrt(2 / (inputs * keep)));
  const r = rng(seed * 10 + 2);
  const blocksR = inputs / block;
  const blocksC = hidden / block;
  const kept = new Set<number>();
  while (kept.size < Math.round(blocksR * blocksC * keep)) kept.add(Math.floor(r() * blocksR * blocksC));
  for (let i = 0; i < inputs; i++)
    for (let j = 0; j < hidden; j++)
      if (!kept.has(Math.floor(i / block) * blocksC + Math.floor(j / block))) w1[i * hidden + j] = 0;
  const zeros = w1.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
  const h = g.op('Relu', [
    g.op('Add', [
      g.op('MatMul', ['x', g.weight('fc1.weight', [inputs, hidden], w1)]),
      g.weight('fc1.bias', [hidden], gaussian(hidden, seed * 10 + 3, 0.05)),
    ]),
  ]);
  g.op(
    'Add',
    [
      g.op('MatMul', [
        h,
        g.weight('fc2.weight', [hidden, classes], gaussian(hidden * classes, seed * 10 + 4, Math.sqrt(1 / hidden))),
      ]),
      g.weight('fc2.bias', [classes], gaussian(classes, seed * 10 + 5, 0.05)),
    ],
    {},
    'logits',
  );
  return {
    bytes: encode(g.proto([valueInfo('x', [1, inputs])], [valueInfo('logits', [1, classes])])),
    weights: g.weights,
    zeroFraction: zeros / w1.length,
  };
}

// ---------------------------------------------------------------------------------------------------------------

export const CLASSIFIER = { size: 32, classes: 10 };

/** Depthwise-separable blocks: [in, out, stride]. */
const BLOCKS: Array<[number, number, number]> = [
  [16, 32, 1],
  [32, 64, 2],
  [64, 64, 1],
  [64, 128, 2],
  [128, 128, 1],
  [128, 128, 1],
  [128, 128, 1],
  [128, 256, 2],
];

/** Construction steps in graph order: convolutions set from their inputs' statistics, then BatchNorm statistics. */
type Step =
  | { kind: 'bn'; name: string; channels: number; input: string }
  | { kind: 'conv'; name: string; input: string; cin: number; cout: number; taps: 1 | 9 };

function classifierGraph(
  values: Record<string, Float32Array>,
  extraOutputs: string[] = [],
): { bytes: Uint8Array; steps: Step[]; weights: Record<string, Float32Array> } {
  const g = new Graph('classifier');
  const steps: Step[] = [{ kind: 'conv', name: 'stem.weight', input: 'image', cin: 3, cout: 16, taps: 9 }];
  const w = (name: string, dims: number[]): string => g.weight(name, dims, values[name]);
  const bn = (x: string, name: string, channels: number): string => {
    steps.push({ kind: 'bn', name, channels, input: x });
    return g.op(
      'BatchNormalization',
      [
        x,
        w(`${name}.gamma`, [channels]),
        w(`${name}.beta`, [channels]),
        w(`${name}.mean`, [channels]),
        w(`${name}.var`, [channels]),
      ],
      { epsilon: 1e-5 },
    );
  };
  let x = g.op('Conv', ['image', w('stem.weight', [16, 3, 3, 3])], { pads: [1, 1, 1, 1], strides: [2, 2] });
  x = g.op('Relu', [bn(x, 'stem.bn', 16)]);
  BLOCKS.forEach(([cin, cout, stride], i) => {
    const skip = cin === cout && stride === 1 ? x : undefined;
    x = g.op('Conv', [x, w(`block${i}.dw.weight`, [cin, 1, 3, 3])], {
      pads: [1, 1, 1, 1],
      strides: [stride, stride],
      group: cin,
    });
    x = g.op('Relu', [bn(x, `block${i}.dw.bn`, cin)]);
    steps.push({ kind: 'conv', name: `block${i}.pw.weight`, input: x, cin, cout, taps: 1 });
    x = g.op('Conv', [x, w(`block${i}.pw.weight`, [cout, cin, 1, 1])]);
    // a residual connection where the shape allows (MobileNetV2-style): errors add up instead of compounding
    x = skip ? g.op('Add', [skip, bn(x, `block${i}.pw.bn`, cout)]) : g.op('Relu', [bn(x, `block${i}.pw.bn`, cout)]);
  });
  x = g.op('Flatten', [g.op('GlobalAveragePool', [x])], {}, 'features');
  x = g.op('Relu', [g.op('Gemm', [x, w('head.fc1.weight', [64, 256]), w('head.fc1.bias', [64])], { transB: 1 })]);
  g.op(
    'Gemm',
    [x, w('head.fc2.weight', [CLASSIFIER.classes, 64]), w('head.fc2.bias', [CLASSIFIER.classes])],
    { transB: 1 },
    'logits',
  );
  const outputs = [valueInfo('logits', ['N', CLASSIFIER.classes]), ...extraOutputs.map((o) => valueInfo(o))];
  return {
    bytes: encode(g.proto([valueInfo('image', ['N', 3, CLASSIFIER.size, CLASSIFIER.size])], outputs), 13),
    steps,
    weights: g.weights,
  };
}

/** Natural-image-like pictures as the classifier's input batch [n, 3, 32, 32], (x/255 − 0.5)/0.5. */
export function classifierImages(n: number, seed = 1000): Float32Array {
  const s = CLASSIFIER.size;
  const out = new Float32Array(n * 3 * s * s);
  for (let k = 0; k < n; k++) {
    // (the pictures the classifier's statistics were set on when it was first built: its weights stay the same)
    const px = naturalImage(s, s, seed + k, 70);
    for (let i = 0; i < s * s; i++)
      for (let c = 0; c < 3; c++) out[k * 3 * s * s + c * s * s + i] = (px[i * 3 + c] / 255 - 0.5) / 0.5;
  }
  return out;
}

let classifierCache: Promise<BuiltModel> | undefined;

/** The BatchNorm-heavy classifier (see the module comment); built once per process (its statistics take ~20 runs). */
export function batchNormClassifier(options: { smallChannels?: boolean } = {}): Promise<BuiltModel> {
  if (options.smallChannels) return (smallChannelsCache ??= buildClassifier(7, true));
  classifierCache ??= buildClassifier();
  return classifierCache;
}
let smallChannelsCache: Promise<BuiltModel> | undefined;

/**
 * `smallChannels`: every fourth output channel of the stem and pointwise convolutions 20× smaller (channel norms of
 * trained BatchNorm networks differ so: BatchNorm scales each channel back, its statistics taken from the
 * activations as before).
 */
async function buildClassifier(seed = 7, smallChannels = false): Promise<BuiltModel> {
  const values: Record<string, Float32Array> = {};
  let s = seed * 1000;
  const he = (name: string, n: number, fanIn: number): void => void (values[name] = gaussian(n, s++, Math.sqrt(2 / fanIn)));
  he('stem.weight', 16 * 27, 27);
  const bnInit = (name: string, c: number): void => {
    values[`${name}.gamma`] = gaussian(c, s++, 0.1).map((v) => 1 + v);
    values[`${name}.beta`] = gaussian(c, s++, 0.1);
    values[`${name}.mean`] = new Float32Array(c);
    values[`${name}.var`] = new Float32Array(c).fill(1);
  };
  bnInit('stem.bn', 16);
  BLOCKS.forEach(([cin, cout], i) => {
    // depthwise kernels: a smoothing part (as trained ones mostly are) plus a random part; zero-mean random kernels
    // would cancel smooth image content and amplify anything else layer after layer
    values[`block${i}.dw.weight`] = gaussian(cin * 9, s++, 0.12).map((v) => v + 1 / 9);
    bnInit(`block${i}.dw.bn`, cin);
    he(`block${i}.pw.weight`, cout * cin, cin);
    bnInit(`block${i}.pw.bn`, cout);
  });
  he('head.fc1.weight', 64 * 256, 256);
  values['head.fc1.bias'] = gaussian(64, s++, 0.05);
  he('head.fc2.weight', CLASSIFIER.classes * 64, 64);
  values['head.fc2.bias'] = new Float32Array(CLASSIFIER.classes);
  // Layer by layer (each depends on the ones before), from the network's own activations on natural-image-like
  // pictures: the stem and pointwise convolutions read the principal directions of their inputs (random mixes of
  // the top half; a zero-mean random mix would cancel the correlated content of real activations and leave
  // channels whose faint variance BatchNorm scales up, weight errors included), and every BatchNorm gets the
  // mean and variance its input has.
  const n = 32;
  const pixels = classifierImages(n);
  const images = new ort.Tensor('float32', pixels, [n, 3, CLASSIFIER.size, CLASSIFIER.size]);
  for (const step of classifierGraph(values).steps) {
    let act: Float32Array;
    let dims: number[];
    if (step.input === 'image') {
      act = pixels;
      dims = [n, 3, CLASSIFIER.size, CLASSIFIER.size];
    } else {
      const session = await ort.InferenceSession.create(classifierGraph(values, [step.input]).bytes);
      const out = (await session.run({ image: images }))[step.input];
      await session.release();
      act = out.data as Float32Array;
      dims = out.dims as number[];
    }
    const [N, C, H, W] = dims;
    if (step.kind === 'conv') {
      // input vectors: channels at each position (1×1), or 3×3 patches at the stem's stride-2 positions
      const D = step.cin * step.taps;
      const vectors: Float64Array[] = [];
      for (let b = 0; b < N; b++)
        for (let y = 0; y < H; y += step.taps === 9 ? 2 : 1)
          for (let x = 0; x < W; x += step.taps === 9 ? 2 : 1) {
            const v = new Float64Array(D);
            for (let c = 0; c < C; c++)
              for (let t = 0; t < step.taps; t++) {
                const yy = step.taps === 9 ? y + Math.floor(t / 3) - 1 : y;
                const xx = step.taps === 9 ? x + (t % 3) - 1 : x;
                if (yy >= 0 && yy < H && xx >= 0 && xx < W) v[c * step.taps + t] = act[((b * C + c) * H + yy) * W + xx];
              }
            vectors.push(v);
          }
      const mu = new Float64Array(D);
      for (const v of vectors) for (let d = 0; d < D; d++) mu[d] += v[d] / vectors.length;
      const cov = new Float64Array(D * D);
      for (const v of vectors)
        for (let i = 0; i < D; i++)
          for (let j = 0; j < D; j++) cov[i * D + j] += ((v[i] - mu[i]) * (v[j] - mu[j])) / vectors.length;
      const { values: lambda, vectors: u } = symmetricEigen(cov, D);
      const order = Array.from({ length: D }, (_, i) => i).sort((p, q) => lambda[q] - lambda[p]);
      // the stem's patches of smooth pictures have few strong directions: a quarter; the rest: half
      const m = Math.max(4, Math.floor(step.taps === 9 ? D / 4 : D / 2));
      const mix = gaussian(step.cout * m, s++, 1);
      const weight = new Float32Array(step.cout * D);
      for (let o = 0; o < step.cout; o++) {
        let norm = 0;
        for (let d = 0; d < D; d++) {
          let v = 0;
          for (let k = 0; k < m; k++) v += mix[o * m + k] * u[d * D + order[k]];
          weight[o * D + d] = v;
          norm += v * v;
        }
        const size = smallChannels && o % 4 === 0 ? 0.05 : 1;
        for (let d = 0; d < D; d++) weight[o * D + d] *= size * Math.sqrt(2 / norm);
      }
      values[step.name] = weight;
      continue;
    }
    const mean = new Float32Array(C);
    const variance = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      let sum = 0;
      let sq = 0;
      for (let b = 0; b < N; b++)
        for (let i = 0; i < H * W; i++) {
          const v = act[(b * C + c) * H * W + i];
          sum += v;
          sq += v * v;
        }
      const mm = sum / (N * H * W);
      mean[c] = mm;
      variance[c] = Math.max(sq / (N * H * W) - mm * mm, 1e-4);
    }
    values[`${step.name}.mean`] = mean;
    values[`${step.name}.var`] = variance;
  }
  // The head reads the features' principal directions (random mixes of the top half), for the reason the
  // pointwise convolutions do.
  const pictures = 256;
  const many = new ort.Tensor('float32', classifierImages(pictures, 20000), [pictures, 3, CLASSIFIER.size, CLASSIFIER.size]);
  const withFeatures = classifierGraph(values, ['features']).bytes;
  let session = await ort.InferenceSession.create(withFeatures);
  const feats = (await session.run({ image: many })).features.data as Float32Array;
  await session.release();
  const D = 256;
  const H = 64;
  const mu = new Float64Array(D);
  for (let b = 0; b < pictures; b++) for (let d = 0; d < D; d++) mu[d] += feats[b * D + d] / pictures;
  const cov = new Float64Array(D * D);
  for (let b = 0; b < pictures; b++)
    for (let i = 0; i < D; i++) {
      const xi = feats[b * D + i] - mu[i];
      for (let j = 0; j < D; j++) cov[i * D + j] += (xi * (feats[b * D + j] - mu[j])) / pictures;
    }
  const { values: lambda, vectors } = symmetricEigen(cov, D);
  const order = Array.from({ length: D }, (_, i) => i).sort((p, q) => lambda[q] - lambda[p]);
  const w1 = values['head.fc1.weight'];
  const b1 = values['head.fc1.bias'];
  const top = D / 2;
  const mix = gaussian(H * top, s++, 1);
  for (let h = 0; h < H; h++) {
    const row = new Float64Array(D);
    for (let k = 0; k < top; k++) for (let d = 0; d < D; d++) row[d] += mix[h * top + k] * vectors[d * D + order[k]];
    const norm = Math.hypot(...row);
    let dot = 0;
    let spread = 0;
    for (let d = 0; d < D; d++) {
      w1[h * D + d] = row[d] / norm;
      dot += (row[d] / norm) * mu[d];
    }
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) spread += ((row[i] * row[j]) / (norm * norm)) * cov[i * D + j];
    // centred on the pictures, half a standard deviation up: the ReLU passes about two thirds
    b1[h] = 0.5 * Math.sqrt(spread) - dot;
  }
  values['head.fc2.weight'] = gaussian(CLASSIFIER.classes * H, s++, Math.sqrt(1 / H));
  // logits centred over the pictures and scaled to a spread of 3, so the classes are balanced
  session = await ort.InferenceSession.create(classifierGraph(values).bytes);
  const logits = (await session.run({ image: many })).logits.data as Float32Array;
  await session.release();
  const K = CLASSIFIER.classes;
  const w2 = values['head.fc2.weight'];
  for (let k = 0; k < K; k++) {
    let sum = 0;
    let sq = 0;
    for (let b = 0; b < pictures; b++) sum += logits[b * K + k];
    const m = sum / pictures;
    for (let b = 0; b < pictures; b++) sq += (logits[b * K + k] - m) ** 2;
    const scale = 3 / Math.max(Math.sqrt(sq / pictures), 1e-3);
    for (let j = 0; j < H; j++) w2[k * H + j] *= scale;
    values['head.fc2.bias'][k] = -m * scale;
  }
  const built = classifierGraph(values);
  return { bytes: built.bytes, weights: built.weights };
}

/** Eigenvalues and eigenvectors (columns of `vectors`, row-major n×n) of a symmetric matrix: cyclic Jacobi. */
export function symmetricEigen(matrix: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-30) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - sn * vkq;
          v[k * n + q] = sn * vkp + c * vkq;
        }
      }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => a[i * n + i]), vectors: v };
}

// ---------------------------------------------------------------------------------------------------------------

export const FUNCTION_MODEL = { size: 16, classes: 10, domain: 'pkg.test.modules' };

/**
 * A small CNN written the way PyTorch's dynamo exporter writes modules: every layer is a call of a model-local
 * function (`ModelProto.functions`), its weights passed in from uninformative initializer names (`p0`, `p1`, …).
 * `Block` calls `ConvBnRelu` (a function calling a function) and pools; `Linear` is a Gemm whose `transB` the
 * call sets through a `ref_attr_name` (its body written against `linearOpset`, 17 as the model by default).
 * `input` [1, 3, 16, 16] → `logits` [1, 10].
 */
export function localFunctionModel(seed = 1, options: { linearOpset?: number } = {}): BuiltModel {
  const { size, classes, domain } = FUNCTION_MODEL;
  const ints = (name: string, v: number[]): onnx.IAttributeProto => ({ name, ints: v, type: A.INTS });
  const convBnRelu: onnx.IFunctionProto = {
    name: 'ConvBnRelu',
    domain,
    input: ['X', 'W', 'G', 'B', 'M', 'V'],
    output: ['Y'],
    node: [
      { opType: 'Conv', input: ['X', 'W'], output: ['c'], attribute: [ints('pads', [1, 1, 1, 1])] },
      { opType: 'BatchNormalization', input: ['c', 'G', 'B', 'M', 'V'], output: ['n'] },
      { opType: 'Relu', input: ['n'], output: ['Y'] },
    ],
    opsetImport: [{ domain: '', version: 17 }],
  };
  const block: onnx.IFunctionProto = {
    name: 'Block',
    domain,
    input: ['X', 'W', 'G', 'B', 'M', 'V'],
    output: ['Y'],
    node: [
      { opType: 'ConvBnRelu', domain, input: ['X', 'W', 'G', 'B', 'M', 'V'], output: ['r'] },
      { opType: 'MaxPool', input: ['r'], output: ['Y'], attribute: [ints('kernel_shape', [2, 2]), ints('strides', [2, 2])] },
    ],
    opsetImport: [
      { domain: '', version: 17 },
      { domain, version: 1 },
    ],
  };
  const linear: onnx.IFunctionProto = {
    name: 'Linear',
    domain,
    input: ['X', 'W', 'B'],
    output: ['Y'],
    attribute: ['trans'],
    node: [
      {
        opType: 'Gemm',
        input: ['X', 'W', 'B'],
        output: ['Y'],
        attribute: [{ name: 'transB', refAttrName: 'trans', type: A.INT }],
      },
    ],
    opsetImport: [{ domain: '', version: options.linearOpset ?? 17 }],
  };
  const g = new Graph('main');
  let p = 0;
  const param = (dims: number[], scale: number, offset = 0): string => {
    const n = dims.reduce((a, b) => a * b, 1);
    const v = gaussian(n, seed * 100 + p, scale).map((x) => x + offset);
    return g.weight(`p${p++}`, dims, v);
  };
  const call = (fn: string, inputs: string[], attrs: onnx.IAttributeProto[] = []): string => {
    const out = `v${g.nodes.length}`;
    g.nodes.push({ opType: fn, domain, name: `/${fn}_${g.nodes.length}`, input: inputs, output: [out], attribute: attrs });
    return out;
  };
  let x = 'input';
  let cin = 3;
  for (const cout of [16, 32]) {
    const w = param([cout, cin, 3, 3], Math.sqrt(2 / (cin * 9)));
    const variance = g.weight(`p${p++}`, [cout], new Float32Array(cout).fill(1));
    x = call('Block', [x, w, param([cout], 0.1, 1), param([cout], 0.1), param([cout], 0.1), variance]);
    cin = cout;
  }
  const features = cin * (size / 4) ** 2;
  const flat = g.op('Flatten', [x]);
  const transB: onnx.IAttributeProto = { name: 'trans', i: 1, type: A.INT };
  const h = g.op('Relu', [call('Linear', [flat, param([64, features], Math.sqrt(2 / features)), param([64], 0.05)], [transB])]);
  const logits = call('Linear', [h, param([classes, 64], Math.sqrt(1 / 64)), param([classes], 0.05)], [transB]);
  const graph = g.proto([valueInfo('input', [1, 3, size, size])], [valueInfo(logits, [1, classes])]);
  const bytes = proto.ModelProto.encode({
    irVersion: 8,
    opsetImport: [
      { domain: '', version: 17 },
      { domain, version: 1 },
    ],
    producerName: 'nnmedia-test',
    graph,
    functions: [convBnRelu, block, linear],
  }).finish();
  return { bytes, weights: g.weights };
}

export const NMS_DETECTOR = { size: 32, stride: 4, classes: 3, maxPerClass: 10, scoreThreshold: 0.3 };

/**
 * A detector with its NMS in the graph, as torchvision-style and hand-made exports give it: input `images`
 * [1, 3, 32, 32]; a stride-4 conv stem (Conv + ReLU, 32 channels) and a 3×3 conv (64 channels) over an 8×8 grid of anchors; a box head whose
 * |values| set each anchor's half-sizes (3 px per unit, corners x1, y1, x2, y2 in pixels around the anchor's centre)
 * and a sigmoid class head (3 classes); `NonMaxSuppression` (at most 10 per class, IoU 0.5, score ≥ 0.3); then
 * `det_boxes` [K, 4], `det_scores` [K] and `det_labels` [K] (int64) gathered from what it selected, per class in
 * score order. K moves with the inputs and the weights.
 */
export function nmsDetectorModel(seed = 1): BuiltModel {
  const { size, stride, classes, maxPerClass, scoreThreshold } = NMS_DETECTOR;
  const grid = size / stride;
  const anchors = grid * grid;
  const g = new Graph('nms');
  const stem = g.op('Relu', [
    g.op(
      'Conv',
      [
        'images',
        g.weight('stem.weight', [32, 3, stride, stride], gaussian(32 * 3 * stride * stride, seed * 10 + 1, Math.sqrt(2 / 48))),
        g.weight('stem.bias', [32], gaussian(32, seed * 10 + 2, 0.05)),
      ],
      { strides: [stride, stride] },
    ),
  ]);
  const trunk = g.op('Relu', [
    g.op(
      'Conv',
      [
        stem,
        g.weight('trunk.weight', [64, 32, 3, 3], gaussian(64 * 32 * 9, seed * 10 + 5, Math.sqrt(2 / 288))),
        g.weight('trunk.bias', [64], gaussian(64, seed * 10 + 6, 0.05)),
      ],
      { pads: [1, 1, 1, 1] },
    ),
  ]);
  // boxes: anchor centres ± 3·|head| (corners), [1, anchors, 4]
  const head = g.op('Conv', [
    trunk,
    g.weight('box.weight', [4, 64, 1, 1], gaussian(4 * 64, seed * 10 + 3, Math.sqrt(1 / 64))),
    g.weight('box.bias', [4], Float32Array.of(1, 1, 1, 1)),
  ]);
  const rows = g.op('Transpose', [g.op('Reshape', [head, g.ints('box_shape', [1, 4, anchors])])], { perm: [0, 2, 1] });
  const centres = new Float32Array(anchors * 4);
  for (let a = 0; a < anchors; a++) {
    const cx = (a % grid) * stride + stride / 2;
    const cy = Math.floor(a / grid) * stride + stride / 2;
    centres.set([cx, cy, cx, cy], a * 4);
  }
  const sign = g.weight('corner_sign', [1, 1, 4], Float32Array.of(-3, -3, 3, 3));
  const boxes = g.op('Add', [g.op('Mul', [g.op('Abs', [rows]), sign]), g.weight('anchor_centres', [1, anchors, 4], centres)]);
  const scores = g.op('Reshape', [
    g.op('Sigmoid', [
      g.op('Conv', [
        trunk,
        g.weight('cls.weight', [classes, 64, 1, 1], gaussian(classes * 64, seed * 10 + 4, Math.sqrt(1 / 64))),
        g.weight('cls.bias', [classes], new Float32Array(classes).fill(-1)),
      ]),
    ]),
    g.ints('cls_shape', [1, classes, anchors]),
  ]);
  const selected = g.op('NonMaxSuppression', [
    boxes,
    scores,
    g.ints('max_per_class', [maxPerClass]),
    g.weight('iou_threshold', [1], Float32Array.of(0.5)),
    g.weight('score_threshold', [1], Float32Array.of(scoreThreshold)),
  ]);
  const column = (k: number): string => g.op('Gather', [selected, g.ints(`column_${k}`, [k])], { axis: 1 });
  const flat = (x: string, name: string): string => g.op('Reshape', [x, g.ints(`${name}_shape`, [-1])]);
  g.op(
    'Gather',
    [g.op('Reshape', [boxes, g.ints('boxes_shape', [anchors, 4])]), flat(column(2), 'anchor')],
    { axis: 0 },
    'det_boxes',
  );
  g.op('GatherND', [scores, selected], {}, 'det_scores');
  g.op('Identity', [flat(column(1), 'class')], {}, 'det_labels');
  const bytes = encode(
    g.proto(
      [valueInfo('images', [1, 3, size, size])],
      [
        valueInfo('det_boxes', ['K', 4]),
        valueInfo('det_scores', ['K']),
        valueInfo('det_labels', ['K'], proto.TensorProto.DataType.INT64),
      ],
    ),
  );
  return { bytes, weights: g.weights };
}

/**
 * A model of quantization-aware training as TensorRT's toolkit and PyTorch's fake quantization export it: input
 * `x` [1, 64]; three MatMul layers (64 → 256 → 256 → 10, ReLU between) whose float weights [in, out] each pass a
 * QuantizeLinear → DequantizeLinear (int8, zero point 0, a scale per output channel, axis 1, at `clip` × the
 * channel's max|w| / 127: learned scales clip) and whose activations are quantized too (a scale of 0.05): output
 * `logits` [1, 10]. With `uint8`, the weights' grid is uint8 with one scale for the tensor and zero point 128; with
 * `twin`, a plain MatMul beside the first layer holds the same weights again (no QuantizeLinear); `axis` is the
 * QuantizeLinear's (1, or −1: the same axis counted from the end).
 */
export function qatModel(options: { clip?: number; uint8?: boolean; twin?: boolean; axis?: number } = {}): BuiltModel {
  const { clip = 0.6, uint8 = false, twin = false, axis = 1 } = options;
  const g = new Graph('qat');
  const int8 = (name: string, values: number[], signed: boolean): string => {
    g.initializers.push({
      name,
      dims: values.length === 1 ? [] : [values.length],
      dataType: signed ? proto.TensorProto.DataType.INT8 : proto.TensorProto.DataType.UINT8,
      rawData: signed ? new Uint8Array(Int8Array.from(values).buffer) : Uint8Array.from(values),
    });
    return name;
  };
  const fake = (x: string, scale: string, zero: string, axis?: number): string => {
    const attrs: Record<string, Attr> = axis === undefined ? {} : { axis };
    return g.op('DequantizeLinear', [g.op('QuantizeLinear', [x, scale, zero], attrs), scale, zero], attrs);
  };
  let x = 'x';
  const layers = [
    [64, 256],
    [256, 256],
    [256, 10],
  ];
  layers.forEach(([nin, nout], l) => {
    const w = gaussian(nin * nout, 10 + l, Math.sqrt(2 / nin));
    const maxAbs = new Float32Array(nout);
    for (let i = 0; i < w.length; i++) maxAbs[i % nout] = Math.max(maxAbs[i % nout], Math.abs(w[i]));
    const weight = g.weight(`w${l}`, [nin, nout], w);
    const wq = uint8
      ? fake(
          weight,
          g.weight(`w${l}.scale`, [], Float32Array.of((clip * Math.max(...maxAbs)) / 127)),
          int8(`w${l}.zero`, [128], false),
        )
      : fake(
          weight,
          g.weight(
            `w${l}.scale`,
            [nout],
            maxAbs.map((m) => (clip * m) / 127),
          ),
          int8(`w${l}.zero`, new Array<number>(nout).fill(0), true),
          axis,
        );
    const xq = fake(x, g.weight(`x${l}.scale`, [], Float32Array.of(0.05)), int8(`x${l}.zero`, [0], true));
    let y = g.op('Add', [g.op('MatMul', [xq, wq]), g.weight(`b${l}`, [nout], gaussian(nout, 50 + l, 0.05))]);
    // (`twin`: the first layer's weights again, bit for bit, in a plain MatMul beside it)
    if (twin && l === 0) y = g.op('Add', [y, g.op('MatMul', [x, g.weight('w0.twin', [nin, nout], Float32Array.from(w))])]);
    x = l < layers.length - 1 ? g.op('Relu', [y]) : y;
  });
  g.op('Identity', [x], {}, 'logits');
  return { bytes: encode(g.proto([valueInfo('x', [1, 64])], [valueInfo('logits', [1, 10])])), weights: g.weights };
}

export const MOE = { tokens: 16, width: 64, hidden: 128, experts: 8 };

/**
 * A soft mixture of experts with its experts stacked, as MoE exports and checkpoints store them: `x` [tokens, 64];
 * a router (MatMul [64, 8] + Softmax) weighs every expert; `experts.w1` [8, 64, 128] and `experts.w2` [8, 128, 64]
 * are batched MatMul constants (x broadcast over the experts), ReLU between; the weighted sum over experts is `y`
 * [tokens, 64]. Expert e's w1 is scaled by `scales[e]` (log-spaced 0.25…2.8 by default) and its w2 by the inverse,
 * so every expert contributes alike while one range per column across experts would starve the small ones.
 */
export function moeModel(
  scales: readonly number[] = logSpaced(0.25, 2.8, MOE.experts),
  seed = 1,
  options: { routed?: boolean } = {},
): BuiltModel {
  const { width: D, hidden: H } = MOE;
  const E = scales.length;
  const g = new Graph('moe');
  const w1 = new Float32Array(E * D * H);
  const w2 = new Float32Array(E * H * D);
  scales.forEach((s, e) => {
    w1.set(gaussian(D * H, seed * 100 + e, s * Math.sqrt(2 / D)), e * D * H);
    w2.set(gaussian(H * D, seed * 100 + 50 + e, Math.sqrt(1 / H) / s), e * H * D);
  });
  if (options.routed) return routedMoe(g, w1, w2, E, seed);
  const gate = g.op('Softmax', [g.op('MatMul', ['x', g.weight('router.w', [D, E], gaussian(D * E, seed * 100 + 99, 0.3))])], {
    axis: -1,
  });
  const weights = g.op('Unsqueeze', [g.op('Transpose', [gate], { perm: [1, 0] }), g.ints('axis2', [2])]);
  const h = g.op('Relu', [g.op('MatMul', ['x', g.weight('experts.w1', [E, D, H], w1)])]);
  const o = g.op('MatMul', [h, g.weight('experts.w2', [E, H, D], w2)]);
  g.op('ReduceSum', [g.op('Mul', [o, weights]), g.ints('axis0', [0])], { keepdims: 0 }, 'y');
  return { bytes: encode(g.proto([valueInfo('x', ['tokens', D])], [valueInfo('y', ['tokens', D])])), weights: g.weights };
}

/**
 * The same experts routed as an export of `w[topk_ids]` writes it: the router's top 2 of E per token (TopK), their
 * weights a softmax of the two scores; each token's two experts' matrices gathered from the stack (Gather along axis
 * 0: [tokens, 2, 64, 128]) and multiplied by the token, ReLU, then [tokens, 2, 128, 64]; the weighted sum is `y`.
 */
function routedMoe(g: Graph, w1: Float32Array, w2: Float32Array, E: number, seed: number): BuiltModel {
  const { width: D, hidden: H } = MOE;
  const scores = g.op('MatMul', ['x', g.weight('router.w', [D, E], gaussian(D * E, seed * 100 + 99, 0.3))]);
  const top = `${g.name}/topk`;
  g.nodes.push({
    opType: 'TopK',
    input: [scores, g.ints('k', [2])],
    output: [`${top}_values`, `${top}_ids`],
    name: top,
    attribute: [attribute('axis', -1)],
  });
  const weights = g.op('Unsqueeze', [g.op('Softmax', [`${top}_values`], { axis: -1 }), g.ints('axis_last', [-1])]);
  // x [T, D] → [T, 1, 1, D]: each token a row vector against its two experts' matrices
  const xs = g.op('Unsqueeze', ['x', g.ints('axes12', [1, 2])]);
  const picked1 = g.op('Gather', [g.weight('experts.w1', [E, D, H], w1), `${top}_ids`], { axis: 0 });
  const h = g.op('Relu', [g.op('MatMul', [xs, picked1])]);
  const picked2 = g.op('Gather', [g.weight('experts.w2', [E, H, D], w2), `${top}_ids`], { axis: 0 });
  const o = g.op('Squeeze', [g.op('MatMul', [h, picked2]), g.ints('axis2', [2])]);
  g.op('ReduceSum', [g.op('Mul', [o, weights]), g.ints('axis1', [1])], { keepdims: 0 }, 'y');
  return { bytes: encode(g.proto([valueInfo('x', ['tokens', D])], [valueInfo('y', ['tokens', D])])), weights: g.weights };
}

function logSpaced(lo: number, hi: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => lo * (hi / lo) ** (i / (n - 1)));
}
