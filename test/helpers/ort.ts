import * as ort from 'onnxruntime-node';
import { mixedInputs } from './onnx-fixtures.js';

/** Runs a model on the mixed fixture's inputs and returns every output as float32. */
export async function runMixed(model: Uint8Array, cond = true): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(model);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(mixedInputs())) {
    feeds[k] =
      v.type === 'bool'
        ? new ort.Tensor('bool', Uint8Array.of(cond ? 1 : 0), v.dims)
        : new ort.Tensor('float32', v.data as Float32Array, v.dims);
  }
  const out = await session.run(feeds);
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
