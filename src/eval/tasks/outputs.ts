/**
 * Any ONNX model: run it on fixed pseudo-random inputs (from its input
 * metadata, symbolic dimensions = 1) and compare every float output with the
 * original's: max abs difference, relative RMS error, and cosine similarity.
 * The model-agnostic check when no task evaluator fits.
 */
import { concatFloat32, randomInputOutputs } from '../calibrate.js';
import type { TaskEvaluator, TaskMetric } from './types.js';

export function outputsTask(seeds = [7, 8, 9]): TaskEvaluator<Float32Array> {
  const run = async (model: Uint8Array): Promise<Float32Array> => {
    const parts = await Promise.all(seeds.map((s) => randomInputOutputs(model, s)));
    return concatFloat32(parts);
  };
  const compare = (a: Float32Array, b: Float32Array): TaskMetric[] => {
    let max = 0;
    let se = 0;
    let sa = 0;
    let dot = 0;
    let sb = 0;
    for (let i = 0; i < a.length; i++) {
      const d = a[i] - b[i];
      max = Math.max(max, Math.abs(d));
      se += d * d;
      sa += a[i] * a[i];
      sb += b[i] * b[i];
      dot += a[i] * b[i];
    }
    return [
      { key: 'maxAbsDiff', label: 'output max |Δ|', value: max, higherIsBetter: false },
      { key: 'relRmse', label: 'output relative RMS error', value: sa ? Math.sqrt(se / sa) : 0, higherIsBetter: false },
      { key: 'cosine', label: 'output cosine similarity', value: sa && sb ? dot / Math.sqrt(sa * sb) : 1, higherIsBetter: true },
    ];
  };
  return {
    name: 'outputs',
    description: 'any model: outputs on fixed pseudo-random inputs compared with the original model',
    run,
    calibrate: (model) => randomInputOutputs(model, seeds[0]),
    baseline: () => [],
    compare,
    loss: (a, b) => compare(a, b)[1].value,
  };
}
