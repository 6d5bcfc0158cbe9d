/**
 * A task evaluator is a small plug-in: it runs a model (given as ONNX bytes)
 * on its real data and compares a reconstructed model's result with the
 * original's and with ground truth. Add one for your own model by implementing
 * this interface and passing it to `evaluateModels` (or registering it).
 */

export interface TaskMetric {
  /** Stable key, e.g. "agreement". */
  key: string;
  label: string;
  value: number;
  /** Whether a higher value is better (for tables and pass/fail thresholds). */
  higherIsBetter: boolean;
}

export interface TaskEvaluator<Output = unknown> {
  name: string;
  description: string;
  /** Runs the model on the task's data. */
  run(model: Uint8Array): Promise<Output>;
  /** Metrics of a candidate's output against the reference model's output (and ground truth). */
  compare(reference: Output, candidate: Output): TaskMetric[];
  /** Metrics of the reference alone against ground truth (the baseline row). */
  baseline(reference: Output): TaskMetric[];
  /** One number that grows as the candidate gets worse (VAD: 1 − agreement; OCR: CER − original CER); `--max-loss` bounds it. */
  loss(reference: Output, candidate: Output): number;
  /** A short run on a calibration slice of the data, as a flat vector of outputs (for sensitivity probes). */
  calibrate(model: Uint8Array): Promise<Float32Array>;
}
