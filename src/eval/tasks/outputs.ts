/**
 * Any ONNX model: run it on a calibration set — the user's (`calibration`), or SYNTHETIC inputs made from its
 * graph (src/calibration/synthetic.ts; the description and every metric label say so) — and compare every
 * output with the original's: the fidelity number, cosine, relative RMS error, max |Δ| and decision agreement
 * (src/eval/fidelity.ts). The model-agnostic check when no task evaluator fits.
 */

import { calibratorFor, runCalibration } from '../../calibration/runner.js';
import type { CalibrationSet } from '../../calibration/types.js';
import { cachedSyntheticSet } from '../calibrate.js';
import { FidelityAccumulator, type FidelityReport } from '../fidelity.js';
import { detectorOutputs } from '../../calibration/decisions.js';
import { parseOnnxGraph } from '../../compensate/graph.js';
import type { Feed } from '../../calibration/tensor.js';
import type { TaskEvaluator, TaskMetric } from './types.js';

export interface OutputsTaskOptions {
  /** Samples to run (default: 3 synthetic samples). Give the held-back part of a user's set here. */
  calibration?: CalibrationSet;
  /** Synthetic samples when no calibration set is given. */
  count?: number;
  seed?: number;
  /** The outputs compared (`--judge-output`; default: every output). */
  outputs?: readonly string[];
}

/** Each sample's outputs and which of them are recurrent state. */
export interface OutputsRun {
  samples: Array<{ outputs: Feed; state: string[] }>;
  synthetic: boolean;
  /** Outputs that pack a detector's class scores after its boxes (calibration/decisions.ts). */
  detectors: string[];
}

export function outputsTask(options: OutputsTaskOptions = {}): TaskEvaluator<OutputsRun> {
  const count = options.count ?? 3;
  const seed = options.seed ?? 7;
  const setFor = (model: Uint8Array): Promise<CalibrationSet> =>
    options.calibration ? Promise.resolve(options.calibration) : cachedSyntheticSet(model, seed, count);
  const synthetic = !options.calibration || options.calibration.synthetic;
  const note = synthetic ? ' (synthetic inputs)' : '';
  const fetch = options.outputs?.length ? { outputs: options.outputs } : {};
  const judged = options.outputs?.length ? `; judged on ${options.outputs.join(', ')} only` : '';
  const run = async (model: Uint8Array): Promise<OutputsRun> => {
    const set = await setFor(model);
    const results = await runCalibration(model, set.samples, fetch);
    const samples = [];
    for (const r of results) {
      const data = await r.sample.load();
      samples.push({ outputs: r.outputs, state: data.kind === 'sequence' ? data.state.map((l) => l.output) : [] });
    }
    return { samples, synthetic: set.synthetic, detectors: detectorOutputs(parseOnnxGraph(model).main) };
  };
  const report = (a: OutputsRun, b: OutputsRun): FidelityReport => {
    const acc = new FidelityAccumulator(new Set(a.detectors));
    a.samples.forEach((s, i) => acc.add(s.outputs, b.samples[i].outputs, s.state));
    return acc.result();
  };
  const compare = (a: OutputsRun, b: OutputsRun): TaskMetric[] => {
    const r = report(a, b);
    const judged = r.outputs.filter((o) => !o.state);
    const worst = <K extends 'cosine' | 'relRms' | 'maxAbs'>(k: K, lowest: boolean): number =>
      judged.reduce((w, o) => (lowest ? Math.min(w, o[k]) : Math.max(w, o[k])), lowest ? Infinity : 0);
    // (a detector's class agreement at its confident anchors is a decision agreement too)
    const agreements = [
      ...judged.filter((o) => o.agreement !== undefined).map((o) => o.agreement!),
      ...judged.filter((o) => o.scores && !o.scores.fewDecisions).map((o) => o.scores!.agreement),
    ];
    const metrics: TaskMetric[] = [
      { key: 'fidelity', label: `fidelity${note}`, value: r.fidelity, higherIsBetter: true },
      { key: 'maxAbsDiff', label: `output max |Δ|${note}`, value: worst('maxAbs', false), higherIsBetter: false },
      { key: 'relRmse', label: `output relative RMS error${note}`, value: worst('relRms', false), higherIsBetter: false },
      {
        key: 'cosine',
        label: `output cosine similarity${note}`,
        value: judged.length ? worst('cosine', true) : 1,
        higherIsBetter: true,
      },
    ];
    if (agreements.length) {
      // few decisions are a coarse measure: 32 move it by 0.03 each, and its sampling noise is about ±0.06 (a new-user
      // sweep read 0.84 here where 512 fresh inputs gave 0.95): the count is said where it is under a hundred
      const counts = judged.map((o) => o.decisions ?? o.scores?.decisions).filter((n): n is number => n !== undefined);
      const fewest = counts.length ? Math.min(...counts) : undefined;
      metrics.push({
        key: 'agreement',
        label: `decision agreement${fewest !== undefined && fewest < FEW_DECISIONS ? ` (of ${fewest} decisions: coarse, give more inputs)` : ''}${note}`,
        value: Math.min(...agreements),
        higherIsBetter: true,
      });
    }
    return metrics;
  };
  return {
    name: 'outputs',
    description: options.calibration
      ? `any model: outputs on ${options.calibration.samples.length} calibration samples compared with the original model (${options.calibration.description}${judged})`
      : `any model: outputs on ${count} SYNTHETIC inputs (no calibration data given; shapes from the graph) compared with the original model${judged}`,
    run,
    calibrate: async (model) => calibratorFor((await setFor(model)).samples.slice(0, 1), fetch)(model),
    baseline: () => [],
    compare,
    loss: (a, b) => 1 - report(a, b).fidelity,
  };
}

/** Under this many decisions, the agreement's label says how many (see `compare`). */
const FEW_DECISIONS = 100;
