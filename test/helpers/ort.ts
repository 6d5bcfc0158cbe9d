import * as ort from 'onnxruntime-node';
import type { OutputTensor, RunWithOutputs } from '../../src/compensate/index.js';
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

/** A statistics runner (compensate/statistics.ts): the model once per feed in onnxruntime, the extra outputs as float32. */
export function feedsRunner(feeds: Array<Record<string, ort.Tensor>>): RunWithOutputs {
  return async (model, extra, onRun) => {
    const s = await ort.InferenceSession.create(model);
    try {
      for (const f of feeds) {
        const out = await s.run(f, extra);
        const m = new Map<string, OutputTensor>();
        for (const n of extra) m.set(n, { data: out[n].data as Float32Array, dims: out[n].dims });
        await onRun(m);
      }
    } finally {
      await s.release();
    }
  };
}
