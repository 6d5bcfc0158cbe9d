/**
 * Writes a synthetic safetensors model of transformer blocks with realistic
 * layer shapes (Llama-3.2-3B: hidden 3072, 8 KV heads of 128, MLP 8192) and
 * Gaussian weights (σ = 0.02, a few heavy-tailed outliers per row as real
 * models have), streamed tensor by tensor so it never holds more than one
 * tensor. Deterministic for a given seed.
 *
 *   tsx bench/synth.ts <out.safetensors> [--gb 8] [--dtype F32|BF16|F16] [--seed 1] [--vocab 128256]
 *   tsx bench/synth.ts <out.onnx> [--gb 1.5] [--dtype F32|BF16|F16] [--seed 1]
 *
 * --vocab adds a token embedding [vocab, 3072] in front (Llama 3's is 128256 rows: 394 M weights in one tensor).
 */

import { closeSync, openSync } from 'node:fs';
import { parseArgs } from 'node:util';
import onnxProto, { type onnx } from 'onnx-proto';
import { writeAll } from '../src/io/atomic.js';
import { encodeFloats, type FloatDType } from '../src/formats/model.js';

export interface SynthTensor {
  name: string;
  shape: [number, number] | [number];
}

const HIDDEN = 3072;
const KV = 1024;
const MLP = 8192;

function blockTensors(layer: number): SynthTensor[] {
  const p = `model.layers.${layer}`;
  return [
    { name: `${p}.input_layernorm.weight`, shape: [HIDDEN] },
    { name: `${p}.self_attn.q_proj.weight`, shape: [HIDDEN, HIDDEN] },
    { name: `${p}.self_attn.k_proj.weight`, shape: [KV, HIDDEN] },
    { name: `${p}.self_attn.v_proj.weight`, shape: [KV, HIDDEN] },
    { name: `${p}.self_attn.o_proj.weight`, shape: [HIDDEN, HIDDEN] },
    { name: `${p}.post_attention_layernorm.weight`, shape: [HIDDEN] },
    { name: `${p}.mlp.gate_proj.weight`, shape: [MLP, HIDDEN] },
    { name: `${p}.mlp.up_proj.weight`, shape: [MLP, HIDDEN] },
    { name: `${p}.mlp.down_proj.weight`, shape: [HIDDEN, MLP] },
  ];
}

const DTYPES: Record<string, [FloatDType, number]> = { F32: ['float32', 4], BF16: ['bfloat16', 2], F16: ['float16', 2] };
/** ONNX TensorProto data types of the same. */
const ONNX_TYPES: Record<string, number> = { F32: 1, F16: 10, BF16: 16 };

/** Layers needed for at least `gb` GB (10^9 bytes) of weights. */
export function layersFor(gb: number, dtype: string): number {
  const perLayer = blockTensors(0).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0) * DTYPES[dtype][1];
  return Math.max(1, Math.ceil((gb * 1e9) / perLayer));
}

/** xoshiro128** (seeded by splitmix32) → uniform → Box–Muller: fast, seeded, period 2^128 − 1. */
function gaussian(seed: number): () => number {
  let x = seed >>> 0;
  const splitmix = (): number => {
    x = (x + 0x9e3779b9) >>> 0;
    let z = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const rotl = (v: number, k: number): number => (v << k) | (v >>> (32 - k));
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const next = (): number => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return r / 4294967296;
  };
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const v = spare;
      spare = undefined;
      return v;
    }
    const u = next() || 1e-12;
    const r = Math.sqrt(-2 * Math.log(u));
    const a = 2 * Math.PI * next();
    spare = r * Math.sin(a);
    return r * Math.cos(a);
  };
}

export function writeSynthetic(
  out: string,
  gb: number,
  dtypeName = 'F32',
  seed = 1,
  vocab = 0,
): { bytes: number; weights: number } {
  const [dtype, width] = DTYPES[dtypeName] ?? [];
  if (!dtype || !width) throw new Error(`dtype ${dtypeName}: use F32, BF16 or F16`);
  const tensors = modelTensors(gb, dtypeName, vocab);
  const header: Record<string, unknown> = {
    __metadata__: { format: 'pt', generator: 'nnmedia bench/synth.ts', seed: String(seed) },
  };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * width;
    header[t.name] = { dtype: dtypeName, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = openSync(out, 'w');
  const put = (b: Uint8Array): void => writeAll(fd, b);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  put(len);
  put(Buffer.from(json));
  const rand = gaussian(seed);
  let weights = 0;
  for (const t of tensors) {
    put(encodeFloats(tensorValues(t, rand), dtype));
    if (t.shape.length === 2) weights += t.shape[0] * t.shape[1];
  }
  closeSync(fd);
  return { bytes: 8 + json.length + offset, weights };
}

function modelTensors(gb: number, dtypeName: string, vocab: number): SynthTensor[] {
  return [
    ...(vocab > 0 ? [{ name: 'model.embed_tokens.weight', shape: [vocab, HIDDEN] as [number, number] }] : []),
    ...Array.from({ length: layersFor(gb, dtypeName) }, (_, l) => blockTensors(l)).flat(),
  ];
}

/** A tensor's values: norms near 1, matrices Gaussian (σ = 0.02) with a few heavy-tailed weights per row. */
function tensorValues(t: SynthTensor, rand: () => number): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  if (t.shape.length === 1) for (let i = 0; i < n; i++) v[i] = 1 + 0.05 * rand();
  else {
    for (let i = 0; i < n; i++) v[i] = 0.02 * rand();
    // a few heavy-tailed weights per row (about 1 in 2000, at 6–12 σ)
    for (let i = 0; i < n; i += 1 + Math.floor(4000 * Math.abs(rand()) + 1))
      v[i] = 0.02 * (6 + 6 * Math.abs(rand())) * Math.sign(rand());
  }
  return v;
}

/**
 * The same tensors as one single-file ONNX model (raw_data initializers), streamed tensor by tensor: each
 * matrix W [out, in] is a `Gemm(x_in, W, transB=1)` of its own and each norm a `Mul(x_3072, norm)`, every result
 * a graph output, so the model runs (inputs x_3072 [1, 3072] and x_8192 [1, 8192]). ONNX bounds a single file to
 * 2 GiB.
 */
export function writeSyntheticOnnx(out: string, gb: number, dtypeName = 'F32', seed = 1): { bytes: number; weights: number } {
  const [dtype, width] = DTYPES[dtypeName] ?? [];
  if (!dtype || !width) throw new Error(`dtype ${dtypeName}: use F32, BF16 or F16`);
  const proto = onnxProto.onnx;
  const tensors = modelTensors(gb, dtypeName, 0);
  const elem = ONNX_TYPES[dtypeName];
  const info = (name: string, dims: number[]): onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: elem, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  const nodes: onnx.INodeProto[] = tensors.map((t, i) =>
    t.shape.length === 2
      ? {
          opType: 'Gemm',
          input: [`x_${t.shape[1]}`, t.name],
          output: [`y_${i}`],
          attribute: [{ name: 'transB', i: 1, type: proto.AttributeProto.AttributeType.INT }],
        }
      : { opType: 'Mul', input: [`x_${HIDDEN}`, t.name], output: [`y_${i}`] },
  );
  const graphHead = proto.GraphProto.encode({
    name: 'synthetic',
    node: nodes,
    input: [info(`x_${HIDDEN}`, [1, HIDDEN]), info(`x_${MLP}`, [1, MLP])],
    output: tensors.map((t, i) => info(`y_${i}`, [1, t.shape[0]])),
  }).finish();
  const tensorHeads = tensors.map((t) => proto.TensorProto.encode({ dims: t.shape, dataType: elem, name: t.name }).finish());
  const varint = (v: number): Uint8Array => {
    const b: number[] = [];
    for (; v >= 128; v = Math.floor(v / 128)) b.push((v % 128) | 0x80);
    b.push(v);
    return Uint8Array.from(b);
  };
  const dataBytes = (t: SynthTensor): number => t.shape.reduce((a, b) => a * b, 1) * width;
  // TensorProto = head + raw_data (field 9); an initializer (graph field 5) = tag + length + TensorProto
  const tensorLength = (i: number): number =>
    tensorHeads[i].length + 1 + varint(dataBytes(tensors[i])).length + dataBytes(tensors[i]);
  const graphLength = tensors.reduce((s, _, i) => s + 1 + varint(tensorLength(i)).length + tensorLength(i), graphHead.length);
  const modelHead = proto.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'nnmedia bench/synth.ts',
  }).finish();
  const fd = openSync(out, 'w');
  let bytes = 0;
  const put = (b: Uint8Array): void => {
    writeAll(fd, b);
    bytes += b.length;
  };
  put(modelHead);
  put(Uint8Array.of(0x3a)); // field 7 (graph), length-delimited
  put(varint(graphLength));
  put(graphHead);
  const rand = gaussian(seed);
  let weights = 0;
  for (const [i, t] of tensors.entries()) {
    put(Uint8Array.of(0x2a)); // field 5 (initializer)
    put(varint(tensorLength(i)));
    put(tensorHeads[i]);
    put(Uint8Array.of(0x4a)); // field 9 (raw_data)
    put(varint(dataBytes(t)));
    put(encodeFloats(tensorValues(t, rand), dtype));
    if (t.shape.length === 2) weights += t.shape[0] * t.shape[1];
  }
  closeSync(fd);
  return { bytes, weights };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values: flag, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      gb: { type: 'string', default: '8' },
      dtype: { type: 'string', default: 'F32' },
      seed: { type: 'string', default: '1' },
      vocab: { type: 'string', default: '0' },
    },
  });
  const out = positionals[0];
  if (!out) {
    console.error('usage: tsx bench/synth.ts <out.safetensors|out.onnx> [--gb 8] [--dtype F32|BF16|F16] [--seed 1] [--vocab N]');
    process.exit(2);
  }
  const t0 = performance.now();
  const r = out.endsWith('.onnx')
    ? writeSyntheticOnnx(out, Number(flag.gb), flag.dtype, Number(flag.seed))
    : writeSynthetic(out, Number(flag.gb), flag.dtype, Number(flag.seed), Number(flag.vocab));
  console.log(
    `${out}: ${(r.bytes / 1e9).toFixed(2)} GB, ${(r.weights / 1e9).toFixed(2)} G weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
