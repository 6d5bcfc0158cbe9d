/**
 * A calibrator for any ONNX model: fixed pseudo-random inputs built from the
 * model's input metadata (symbolic dimensions: 1 leading, 64 elsewhere), all float outputs
 * concatenated. Used for sensitivity probes when no task evaluator fits.
 */
import type * as Ort from 'onnxruntime-node';
import { loadOrt } from '../runtime/optional.js';

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** One vector from several. */
export function concatFloat32(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export async function randomInputOutputs(model: Uint8Array, seed = 7): Promise<Float32Array> {
  const ort = await loadOrt('calibrating on random inputs');
  const session = await ort.InferenceSession.create(model);
  try {
    const rnd = seeded(seed);
    const feeds: Record<string, Ort.Tensor> = {};
    for (const meta of session.inputMetadata) {
      if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
      // symbolic dimensions: 1 for the leading (batch) one, 64 for the others (sequence, width…)
      const dims = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : 64));
      const n = dims.reduce((a, b) => a * b, 1);
      if (meta.type === 'float32')
        feeds[meta.name] = new ort.Tensor(
          'float32',
          Float32Array.from({ length: n }, () => rnd() * 2 - 1),
          dims,
        );
      else if (meta.type === 'int64') feeds[meta.name] = new ort.Tensor('int64', new BigInt64Array(n), dims);
      else if (meta.type === 'int32') feeds[meta.name] = new ort.Tensor('int32', new Int32Array(n), dims);
      else if (meta.type === 'bool') feeds[meta.name] = new ort.Tensor('bool', new Uint8Array(n), dims);
      else throw new Error(`input ${meta.name} has unsupported type ${meta.type}`);
    }
    const out = await session.run(feeds);
    const parts = Object.values(out)
      .filter((t) => t.type === 'float32')
      .map((t) => t.data as Float32Array);
    return concatFloat32(parts);
  } finally {
    await session.release();
  }
}
