/**
 * Running a model over calibration samples: one onnxruntime session (loaded with `loadOrt`), samples streamed
 * one at a time, sequences run window by window with their state carried. Each run's raw outputs can go to a
 * callback (`onRun`, e.g. to capture layer inputs added as graph outputs of a copy of the model), and the
 * outputs are kept per sample only when asked (`keep`), so memory follows one sample, not the set.
 */

import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-common';
import { BadCalibrationError, outOfResources, resourceError } from '../errors.js';
import { loadOrt } from '../runtime/optional.js';
import { describeModel } from './model-io.js';
import { scanOnnx } from '../formats/onnx/scan.js';
import { parseOnnxGraph, producers } from '../compensate/graph.js';
import { exposeValues } from '../compensate/graph-edit.js';
import { readFileSync } from 'node:fs';
import { fromOrtTensor, toFloat32, toOrtTensor, type CalibrationTensor, type Feed, type TensorData } from './tensor.js';
import type { CalibrationSample, SampleData } from './types.js';
import { fitsBlock, isScore, scoreBlockOf, type ScoreBlock } from '../eval/detector.js';
import { alignToReference, hasDetections } from '../eval/detections.js';

export interface RunnerOptions {
  /** Outputs to fetch (default: every graph output). State outputs of sequences are fetched in any case. */
  outputs?: readonly string[];
  /** onnxruntime intra-op threads (default: onnxruntime's own choice). */
  threads?: number;
  signal?: AbortSignal;
  /** The model's name in error messages. */
  file?: string;
  /**
   * Inputs that take weights (rate control's probes feed the coded tensors: formats/onnx/inputs.ts): not the data,
   * so they neither make the model's inputs large (`largeInputs`) nor fill a failed run's message.
   */
  weightInputs?: ReadonlySet<string>;
}

/** One run of the model: a feed-sample's only run, or one window of a sequence. */
export interface RunRecord {
  sample: CalibrationSample;
  /** Window index within a sequence (0 for a feed). */
  step: number;
  steps: number;
  feed: Feed;
  /** Every fetched output of this run (state outputs included). */
  outputs: Feed;
}

/** Declared input elements from which a session runs without the CPU memory arena (see `open`). */
const LARGE_INPUT_ELEMENTS = 2 ** 20;

/** Whether an input of the model has a fixed shape of at least LARGE_INPUT_ELEMENTS elements. */
export function largeInputs(model: Uint8Array, except: ReadonlySet<string> = new Set()): boolean {
  let io: ReturnType<typeof describeModel>;
  try {
    io = describeModel(model);
  } catch {
    return false; // onnxruntime names what is wrong with the model
  }
  return io.inputs.some(
    (i) =>
      !except.has(i.name) &&
      i.shape?.every((d) => typeof d === 'number') &&
      i.shape.reduce<number>((n, d) => n * (d as number), 1) >= LARGE_INPUT_ELEMENTS,
  );
}

/** One sample's outputs: a feed's outputs, or a sequence's stacked over its windows ([steps, ...dims]). */
export interface SampleOutputs {
  sample: CalibrationSample;
  outputs: Feed;
}

type Ort = Awaited<ReturnType<typeof loadOrt>>;

/**
 * A copy of the model with the tensors behind its non-tensor outputs as extra outputs (the float inputs of the node
 * that makes each: ZipMap's probabilities, SequenceConstruct's tensors), and their names in results; undefined
 * where no output is a sequence or map, or the model cannot be read whole here (external data).
 */
function tensorsBehind(
  model: Uint8Array | string,
  graph: Uint8Array,
  file?: string,
): { model: Uint8Array; names: Map<string, string> } | undefined {
  let io: ReturnType<typeof describeModel>;
  try {
    io = describeModel(graph, file);
  } catch {
    return undefined; // onnxruntime names what is wrong with the model
  }
  const notTensors = io.outputs.filter((o) => o.type === 'non-tensor').map((o) => o.name);
  if (!notTensors.length) return undefined;
  const bytes = typeof model === 'string' ? readFileSync(model) : model;
  const view = parseOnnxGraph(bytes, file);
  const made = producers(view.main);
  const requests: Array<{ value: string; output: string }> = [];
  for (const output of notTensors) {
    const node = made.get(output)?.node;
    for (const value of node?.inputs ?? []) {
      const src = made.get(value);
      // computed in the graph (not a weight or a graph input), and not already an output
      if (value && src?.node && !view.main.outputs.includes(value) && !requests.some((r) => r.value === value))
        requests.push({ value, output });
    }
  }
  if (!requests.length) return undefined;
  const exposed = exposeValues(
    view,
    requests.map((r) => ({ graph: view.main, name: r.value })),
  );
  return {
    model: exposed.model,
    names: new Map(requests.map((r, i) => [exposed.outputs[i], `${r.value} (→ ${r.output})`])),
  };
}

/** The session's outputs that are not tensors (sequences, maps), from onnxruntime's output metadata. */
function nonTensorOutputs(session: InferenceSession): string[] {
  const meta = (session as { outputMetadata?: ReadonlyArray<{ name: string; isTensor: boolean }> }).outputMetadata;
  return (meta ?? []).filter((m) => !m.isTensor).map((m) => m.name);
}

export class CalibrationRunner {
  private constructor(
    private readonly ort: Ort,
    private readonly session: InferenceSession,
    private readonly options: RunnerOptions,
    /** The model's outputs that are tensors (a sequence or a map, skl2onnx's ZipMap, cannot be fetched here). */
    private readonly tensorOutputs: readonly string[],
    /** Whether some output is not a tensor: then only the tensors are fetched. */
    private readonly someNotTensors: boolean,
    /** Outputs added for the tensors behind a non-tensor output → their names in results ("probs (→ output_probability)"). */
    private readonly standIns: ReadonlyMap<string, string>,
  ) {}

  /**
   * Loads the model (its bytes, or its file: onnxruntime reads it, and no copy is kept here) into a session. A
   * model whose declared inputs are large (`largeInputs`) runs without onnxruntime's CPU memory arena: the arena
   * keeps a run's peak activations for the session's life. ISNet (1×3×1024×1024): two sessions run side by side
   * peaked at 4.4 GB with the arena, 1.9 GB without, at the same speed (7.4 / 6.9 s a run). On small inputs the
   * arena pays (PaddleOCR rec 1×3×48×320: 44–56 ms a run with it, 55–72 without), so it stays. Such a model also
   * runs without the memory pattern (one block planned for a run's activations): ISNet's default compress with the
   * gate peaked at 2.28–2.39 GB with it, 1.98–2.23 GB without, 17.3–19.7 s either way, the same gate numbers.
   */
  static async open(model: Uint8Array | string, options: RunnerOptions = {}): Promise<CalibrationRunner> {
    const ort = await loadOrt('running a model on calibration data');
    let session: InferenceSession;
    // a file's graph from its scan (its weights left in the file)
    const graph = typeof model === 'string' ? scanOnnx(model).bytes : model;
    // outputs that are not tensors, made from tensors (skl2onnx's ZipMap of the class probabilities): those are
    // fetched and compared in their place
    let stand = options.outputs ? undefined : tensorsBehind(model, graph, options.file);
    const sessionOptions: InferenceSession.SessionOptions = {
      // failures come back as exceptions with the same message; onnxruntime's own log would print them twice
      logSeverityLevel: 4,
      ...(largeInputs(graph, options.weightInputs) ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
      ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
    };
    try {
      // (the copy with stand-ins is loaded from memory: a model whose weights lie in external files cannot be, and
      // is loaded as it is, its non-tensor outputs left out)
      const withStandIns =
        stand &&
        (await ort.InferenceSession.create(stand.model, sessionOptions).catch((e: unknown) => {
          // (out of memory is the machine's: said as such, not hidden by a second load)
          if (outOfResources(e)) throw e;
          return undefined;
        }));
      if (!withStandIns) stand = undefined;
      session =
        withStandIns ??
        (typeof model === 'string'
          ? await ort.InferenceSession.create(model, sessionOptions)
          : await ort.InferenceSession.create(model, sessionOptions));
    } catch (e) {
      // a model too large for the memory left is the machine's problem, not the data's
      if (outOfResources(e)) throw resourceError(e, undefined, { file: options.file });
      throw new BadCalibrationError(`onnxruntime cannot load the model: ${(e as Error).message}`, { file: options.file }, e);
    }
    for (const name of options.outputs ?? [])
      if (!session.outputNames.includes(name))
        throw new BadCalibrationError(`the model has no output ${name}; outputs: ${session.outputNames.join(', ')}`, {
          file: options.file,
        });
    // a sequence or a map (skl2onnx's ZipMap of class probabilities) is not a tensor: onnxruntime-node cannot give
    // it back ("Non tensor type is temporarily not supported"), so the tensors are fetched and compared without it
    const notTensors = new Set(nonTensorOutputs(session));
    const tensors = session.outputNames.filter((n) => !notTensors.has(n));
    for (const name of options.outputs ?? [])
      if (notTensors.has(name))
        throw new BadCalibrationError(
          `output ${name} is not a tensor (a sequence or a map, as skl2onnx's ZipMap): it cannot be compared; judge the tensor outputs (${tensors.join(', ') || 'none'}) with --judge-output, or export the model without it (skl2onnx: options={'zipmap': False})`,
          { file: options.file },
        );
    if (!options.outputs && !tensors.length)
      throw new BadCalibrationError(
        `the model has no tensor output to compare (${[...notTensors].join(', ')}: sequences or maps): the quality gate and rate control cannot run it; --no-check compresses it unchecked at a fixed grid (skl2onnx: export with options={'zipmap': False})`,
        { file: options.file },
      );
    return new CalibrationRunner(ort, session, options, tensors, notTensors.size > 0, stand?.names ?? new Map());
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.options.outputs ?? this.tensorOutputs.map((n) => this.standIns.get(n) ?? n);
  }

  /** Runs one feed and returns its outputs (those asked for, plus `extra`). */
  async runFeed(feed: Feed, what: { label: string; file?: string }, extra: readonly string[] = []): Promise<Feed> {
    this.options.signal?.throwIfAborted();
    const feeds: Record<string, OrtTensor> = {};
    for (const name of this.session.inputNames) {
      const t = feed[name];
      if (!t) throw new BadCalibrationError(`sample ${what.label} gives no input ${name}`, { file: what.file, tensor: name });
      feeds[name] = toOrtTensor(this.ort, t);
    }
    const asked = this.options.outputs ?? (this.someNotTensors ? this.tensorOutputs : undefined);
    const fetch = asked ? [...new Set([...asked, ...extra])] : undefined;
    let out: InferenceSession.ReturnType;
    try {
      out = fetch ? await this.session.run(feeds, fetch) : await this.session.run(feeds);
    } catch (e) {
      if (outOfResources(e)) throw resourceError(e, undefined, { file: what.file });
      // (the data's inputs: weights fed as inputs are not the sample's)
      const shapes = Object.entries(feed)
        .filter(([k]) => !this.options.weightInputs?.has(k))
        .map(([k, t]) => `${k} ${t.type}[${t.dims.join(',')}]`)
        .join(', ');
      throw new BadCalibrationError(
        `running the model on ${what.label} (${shapes}) failed: ${(e as Error).message}`,
        { file: what.file },
        e,
      );
    }
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [this.standIns.get(k) ?? k, fromOrtTensor(t, k)]));
  }

  /**
   * Runs one sample (every window of a sequence, state carried); `onRun` sees every run; the outputs are returned
   * stacked over windows when `keep` (default true).
   */
  async run(
    sample: CalibrationSample,
    options: {
      onRun?: (r: RunRecord) => void | Promise<void>;
      keep?: boolean;
      data?: SampleData;
      /** Inputs fed besides the sample's, to every run (weights made graph inputs: formats/onnx/inputs.ts). */
      with?: Feed;
    } = {},
  ): Promise<SampleOutputs> {
    const data = options.data ?? (await sample.load());
    const keep = options.keep ?? true;
    const what = { label: sample.label, file: sample.source };
    const extra = options.with ?? {};
    if (data.kind === 'feed') {
      const outputs = await this.runFeed({ ...data.feed, ...extra }, what);
      await options.onRun?.({ sample, step: 0, steps: 1, feed: data.feed, outputs });
      return { sample, outputs: keep ? this.pick(outputs) : {} };
    }
    const stateOut = data.state.map((l) => l.output);
    let state: Feed = { ...data.initial };
    const collected = new Map<string, CalibrationTensor[]>();
    for (let step = 0; step < data.steps.length; step++) {
      const feed = { ...data.steps[step], ...state, ...extra };
      const outputs = await this.runFeed(feed, what, stateOut);
      await options.onRun?.({ sample, step, steps: data.steps.length, feed, outputs });
      state = {};
      for (const l of data.state) {
        const t = outputs[l.output];
        if (!t)
          throw new BadCalibrationError(`state output ${l.output} missing from the run on ${sample.label}`, {
            file: sample.source,
          });
        state[l.input] = t;
      }
      if (keep)
        for (const [k, t] of Object.entries(this.pick(outputs))) {
          let list = collected.get(k);
          if (!list) collected.set(k, (list = []));
          list.push(t);
        }
    }
    return { sample, outputs: keep ? Object.fromEntries([...collected].map(([k, ts]) => [k, stack(ts)])) : {} };
  }

  private pick(outputs: Feed): Feed {
    if (!this.options.outputs) return outputs;
    return Object.fromEntries(this.options.outputs.map((k) => [k, outputs[k]]));
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Tensors of equal shape stacked along a new first axis; of unequal shapes, concatenated flat. */
export function stack(ts: readonly CalibrationTensor[]): CalibrationTensor {
  const first = ts[0];
  const same = ts.every(
    (t) => t.type === first.type && t.dims.length === first.dims.length && t.dims.every((d, k) => d === first.dims[k]),
  );
  const total = ts.reduce((s, t) => s + t.data.length, 0);
  const Ctor = first.data.constructor as new (n: number) => TensorData;
  const data = new Ctor(total);
  let off = 0;
  for (const t of ts) {
    (data as Float32Array).set(t.data as Float32Array, off);
    off += t.data.length;
  }
  return { type: first.type, dims: same ? [ts.length, ...first.dims] : [total], data };
}

/**
 * Runs a model over samples in order. With `onRun`, every run's inputs and raw outputs go to the callback; the
 * per-sample outputs are kept unless `keep: false` (default: kept when there is no callback).
 */
export async function runCalibration(
  model: Uint8Array,
  samples: readonly CalibrationSample[],
  options: RunnerOptions & { onRun?: (r: RunRecord) => void | Promise<void>; keep?: boolean } = {},
): Promise<SampleOutputs[]> {
  const runner = await CalibrationRunner.open(model, options);
  const keep = options.keep ?? !options.onRun;
  const out: SampleOutputs[] = [];
  try {
    for (const s of samples) {
      const r = await runner.run(s, { onRun: options.onRun, keep });
      if (keep) out.push(r);
    }
  } finally {
    await runner.close();
  }
  return out;
}

/** A calibrator: a model (its bytes) → its outputs on the samples as one float vector. */
export type Calibrator = (model: Uint8Array) => Promise<Float32Array>;

/**
 * A model opened once, run on the samples with more inputs fed each time (weights made graph inputs,
 * formats/onnx/inputs.ts): the same vector as the calibrator gives for the model with those values.
 */
export interface OpenCalibration {
  run(feed: Feed): Promise<Float32Array>;
  close(): Promise<void>;
}

/** A calibrator that can also open a model once and run it with more inputs (`OpenCalibration`). */
export type OpeningCalibrator = Calibrator & {
  /** `fed`: the inputs that take weights (not the model's data: they do not make its inputs large, `largeInputs`). */
  open(model: Uint8Array, fed?: ReadonlySet<string>): Promise<OpenCalibration>;
};

/**
 * A calibrator for sensitivity probes (the pipeline's `Calibrator`): the model's outputs on the samples as one
 * float vector (every requested output of every sample, in order; state outputs of sequences excluded unless
 * named in `outputs`).
 */
export function calibratorFor(
  samples: readonly CalibrationSample[],
  options: RunnerOptions & {
    transform?: (output: string, values: Float32Array, dims: readonly number[]) => Float32Array;
    /** Align detection sets to the first run's (that run is the reference: the probes'). */
    alignDetections?: boolean;
  } = {},
): OpeningCalibrator {
  // a detector's detections after NMS (eval/detections.ts), per sample as the first run gave them: later runs' rows
  // are put where the same detections are, so that one detection that comes or goes, or two near-ties that swap, do
  // not move every row after them (a probe read a detector's every tensor as very sensitive)
  const firstDetections = new Map<number, Feed | null>();
  const collect = async (runner: CalibrationRunner, extra: Feed | undefined): Promise<Float32Array> => {
    const parts: Float32Array[] = [];
    for (const [k, s] of samples.entries()) {
      const data = await s.load();
      const skip = new Set(data.kind === 'sequence' && !options.outputs ? data.state.map((l) => l.output) : []);
      let { outputs } = await runner.run(s, { data, with: extra });
      if (options.alignDetections) {
        const first = firstDetections.get(k);
        if (first === undefined) firstDetections.set(k, hasDetections(outputs) ? outputs : null);
        else if (first) outputs = alignToReference(first, outputs);
      }
      for (const [k, t] of Object.entries(outputs)) {
        if (skip.has(k) || t.type === 'bool' || !t.type.startsWith('float')) continue;
        const v = toFloat32(t);
        parts.push(options.transform ? options.transform(k, v, t.dims) : v);
      }
    }
    const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  };
  const calibrate = async (model: Uint8Array): Promise<Float32Array> => {
    const runner = await CalibrationRunner.open(model, options);
    try {
      return await collect(runner, undefined);
    } finally {
      await runner.close();
    }
  };
  return Object.assign(calibrate, {
    open: async (model: Uint8Array, fed?: ReadonlySet<string>): Promise<OpenCalibration> => {
      const runner = await CalibrationRunner.open(model, { ...options, weightInputs: fed });
      return { run: (feed: Feed) => collect(runner, feed), close: () => runner.close() };
    },
  });
}

/**
 * The sensitivity probes' calibrator (model bytes → one float vector): the outputs compared (`outputs`, default
 * every float output but recurrent state) and the decision outputs (src/calibration/decisions.ts), scaled on the
 * first model run (the reference), whose parts are scaled afterwards (no second run):
 * - where two or more outputs are compared, each to an equal share of their energy together about their means (an
 *   output of less than 10⁻⁶ of its share weighs as if it had that much), so a squared difference weighs its
 *   output's error relative to its spread, as the quality gate judges each output (src/eval/fidelity.ts: an
 *   output's offset, a year of 2000 ± 10, does not make its error small). Unscaled, the largest
 *   output decided alone: BlazeFace's box regressions (values in the hundreds) drowned its scores, whose heads
 *   got too coarse grids, and the gate, judging the scores, refused;
 * - each decision value so that its root mean square equals that of the outputs together: a relative change of
 *   a decision value weighs as much as the same relative change of the outputs.
 * One compared output and no decisions: the outputs as they are.
 */
export function probeCalibrator(
  samples: readonly CalibrationSample[],
  outputs: readonly string[] | undefined,
  decisionOutputs: readonly string[] = [],
  detectorOutputs: readonly string[] = [],
): OpeningCalibrator {
  const decisions = new Set(decisionOutputs);
  let scale: Map<string, number> | undefined;
  // a detector's class scores beside its boxes (eval/detector.ts): weighed as an output of their own ("NAME#scores"),
  // where the boxes' spread (pixels) made their error nothing and rate control starved the class head
  const detectors = new Set(detectorOutputs);
  const blocks = new Map<string, ScoreBlock>();
  const blockOf = (name: string, values: Float32Array, dims: readonly number[]): ScoreBlock | undefined => {
    if (!detectors.has(name)) return undefined;
    if (!blocks.has(name)) {
      const b = scoreBlockOf(values, dims);
      if (b) blocks.set(name, b);
      else detectors.delete(name);
    }
    const b = blocks.get(name);
    return b && fitsBlock(b, dims) ? b : undefined;
  };
  const partOf = (name: string, block: ScoreBlock | undefined, i: number): string =>
    block && isScore(block, i) ? `${name}#scores` : name;
  // the reference run: each output's part of the vector, in order (with its score block), and each part's sums
  const parts: Array<{ name: string; length: number; block?: ScoreBlock }> = [];
  const sums = new Map<string, { sq: number; sum: number; n: number }>();
  const inner = calibratorFor(samples, {
    ...(outputs ? { outputs: [...outputs, ...decisionOutputs] } : {}),
    alignDetections: true,
    transform: (name, values, dims) => {
      const block = blockOf(name, values, dims);
      if (scale) {
        if (block) return values.map((v, i) => v * (scale!.get(partOf(name, block, i)) ?? 1));
        const f = scale.get(name);
        return f === undefined ? values : values.map((v) => v * f);
      }
      parts.push({ name, length: values.length, block });
      values.forEach((v, i) => {
        if (!Number.isFinite(v)) return;
        const part = partOf(name, block, i);
        const s = sums.get(part) ?? { sq: 0, sum: 0, n: 0 };
        s.sq += v * v;
        s.sum += v;
        s.n++;
        sums.set(part, s);
      });
      return values;
    },
  });
  // the first run is the reference: the scales come from it, and it is scaled afterwards
  const scaled = async (first: () => Promise<Float32Array>): Promise<Float32Array> => {
    if (scale) return first();
    const reference = await first();
    const compared = [...sums].filter(([name]) => !decisions.has(name));
    scale = new Map();
    // each output's energy about its mean; an output all but constant on these samples weighs at most 1000× its
    // share: float noise must not decide
    const spread = (s: { sq: number; sum: number; n: number }): number => Math.max(0, s.sq - (s.n ? (s.sum * s.sum) / s.n : 0));
    const share = compared.reduce((t, [, s]) => t + spread(s), 0) / compared.length;
    if (compared.length > 1 && share > 0)
      for (const [name, s] of compared) scale.set(name, Math.sqrt(share / Math.max(spread(s), 1e-6 * share)));
    // what the decision values are scaled to: the compared outputs' mean square, about their means where they
    // were scaled to their spreads (an offset there is not what their probes compare)
    let sq = 0;
    let n = 0;
    for (const [name, s] of compared) {
      const f = scale.get(name);
      sq += f === undefined ? s.sq : f * f * spread(s);
      n += s.n;
    }
    const ms = n ? sq / n : 1;
    for (const [name, s] of sums) if (decisions.has(name) && s.sq > 0) scale.set(name, Math.sqrt(ms / (s.sq / s.n)));
    let at = 0;
    for (const { name, length, block } of parts) {
      for (let k = 0; k < length; k++) {
        const f = scale.get(partOf(name, block, k));
        if (f !== undefined) reference[at + k] *= f;
      }
      at += length;
    }
    return reference;
  };
  return Object.assign((model: Uint8Array) => scaled(() => inner(model)), {
    open: async (model: Uint8Array, fed?: ReadonlySet<string>): Promise<OpenCalibration> => {
      const opened = await inner.open(model, fed);
      return { run: (feed: Feed) => scaled(() => opened.run(feed)), close: () => opened.close() };
    },
  });
}
