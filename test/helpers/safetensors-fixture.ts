import { writeFileSync } from 'node:fs';
import { encodeFloats, type FloatDType } from '../../src/formats/model.js';
import { gaussian } from './random.js';

/** A safetensors file with F32, F16 and BF16 weights, an I64 tensor, a bias and metadata. */
export function writeSafetensorsFixture(file: string): { header: Buffer; ints: Uint8Array } {
  const tensors: Array<[string, string, number[], Uint8Array]> = [];
  const add = (name: string, dtype: 'F32' | 'F16' | 'BF16', shape: number[], seed: number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const map = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' } as const;
    tensors.push([name, dtype, shape, encodeFloats(gaussian(n, seed, 0.05), map[dtype])]);
  };
  add('encoder.layers.0.attn.q_proj.weight', 'F32', [64, 48], 1);
  add('encoder.layers.0.mlp.fc1.weight', 'F16', [96, 64], 2);
  add('encoder.layers.0.mlp.fc2.weight', 'BF16', [64, 96], 3);
  add('encoder.conv.weight', 'F32', [16, 8, 3, 3], 4);
  add('encoder.layers.0.mlp.fc1.bias', 'F32', [96], 5);
  const ints = new Uint8Array(new BigInt64Array([1n, 2n, 3n, -4n]).buffer);
  tensors.push(['position_ids', 'I64', [4], ints]);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', note: 'nnmedia fixture' } };
  let off = 0;
  for (const [name, dtype, shape, bytes] of tensors) {
    header[name] = { dtype, shape, data_offsets: [off, off + bytes.length] };
    off += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const headerBytes = Buffer.concat([len, Buffer.from(json)]);
  writeFileSync(file, Buffer.concat([headerBytes, ...tensors.map((t) => t[3])]));
  return { header: headerBytes, ints };
}

/** A safetensors file of these tensors, each stored as its dtype (float32 unless given; F16 or BF16 otherwise), unpadded. */
export function writeSafetensors(
  file: string,
  tensors: Record<string, { shape: number[]; data: Float32Array; dtype?: FloatDType }>,
): void {
  const names = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as Record<FloatDType, string>;
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let off = 0;
  for (const [name, { shape, data, dtype = 'float32' }] of Object.entries(tensors)) {
    const b = encodeFloats(data, dtype);
    header[name] = { dtype: names[dtype], shape, data_offsets: [off, off + b.length] };
    off += b.length;
    blobs.push(b);
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, ...blobs]));
}
