/**
 * The model-agnostic calibrator used when no task evaluator or calibration data fits: synthetic inputs
 * (src/calibration/synthetic.ts: shapes and types from the graph, dynamic dimensions grown until the model
 * accepts them, values typical of each input's kind), every float output concatenated. Kept under its old name
 * for the pipeline's sensitivity probes; new code should build a `CalibrationSet` and use `calibratorFor`.
 */

import { calibratorFor } from '../calibration/runner.js';
import { syntheticCalibrationSet } from '../calibration/synthetic.js';
import type { CalibrationSet } from '../calibration/types.js';
import { describeModel } from '../calibration/model-io.js';
import type { SampleData } from '../calibration/types.js';

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

/**
 * Synthetic sets by model interface and seed: probes call the calibrator with many copies of one model (the
 * same inputs and outputs, other weights), which must see the same inputs without repeating the trial runs.
 */
const cache = new Map<string, Promise<CalibrationSet>>();
const MAX_CACHED = 8;

/** The synthetic set of `count` samples from `seed` for this model's interface (cached, data kept in memory). */
export function cachedSyntheticSet(model: Uint8Array, seed: number, count = 1): Promise<CalibrationSet> {
  const io = describeModel(model);
  const key = JSON.stringify([io.inputs, io.outputs.map((o) => o.name), seed, count]);
  let set = cache.get(key);
  if (!set) {
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
    set = syntheticCalibrationSet(model, { seed, count }).then((s) => {
      // keep each sample's data once generated: the calibrator runs the same inputs many times
      const memo = new Map<number, Promise<SampleData>>();
      return {
        ...s,
        samples: s.samples.map((x) => ({
          ...x,
          load: () => {
            let d = memo.get(x.index);
            if (!d) memo.set(x.index, (d = x.load()));
            return d;
          },
        })),
      };
    });
    set.catch(() => cache.delete(key));
    cache.set(key, set);
  }
  return set;
}

/**
 * The model's float outputs on one synthetic sample (seeded), concatenated; the pipeline's default calibrator.
 * Formerly fixed uniform noise with every dynamic dimension at 64, which failed on models needing longer inputs.
 */
export async function randomInputOutputs(model: Uint8Array, seed = 7): Promise<Float32Array> {
  const set = await cachedSyntheticSet(model, seed);
  return calibratorFor(set.samples)(model);
}
