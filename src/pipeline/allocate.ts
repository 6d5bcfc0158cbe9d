/**
 * Allocation across layers (`targetBpw` / `maxLoss`): measures per tensor the bits and error of every
 * candidate step grid (rate/allocate.ts) and, where a model can run, its sensitivity on calibration data
 * (each tensor substituted at a probe grid); then chooses a grid per tensor for a bit budget or a task
 * loss. The result is a function from a budget scale to the grid of every tensor: plans are not changed.
 */

import { availableParallelism } from 'node:os';
import type { ModelReader } from '../formats/model.js';
import type { MeasuredScales } from '../quantize/step.js';
import type { RangeMode } from '../quantize/uniform.js';
import { FINE_STEPS, PROBE_STEP, allocateForBudget, allocateForLoss, type Candidate, type TensorRate } from '../rate/allocate.js';
import { addCompensatedCandidates, COMPENSATION_ANCHORS } from '../rate/compensated.js';
import type { TensorStatistics } from '../compensate/statistics.js';
import { randomInputOutputs } from '../eval/calibrate.js';
import { probeCalibrator, type OpenCalibration, type OpeningCalibrator } from '../calibration/runner.js';
import type { Feed } from '../calibration/tensor.js';
import { weightsAsInputs, type FedInput } from '../formats/onnx/inputs.js';
import { encodeFloats } from '../formats/model.js';
import { exposeDecisions } from '../calibration/decisions.js';
import { openOnnx } from '../formats/onnx/reader.js';
import type { Calibration } from './gate.js';
import type { ResolvedOptions } from './options.js';
import {
  measureTensor,
  measureToProbe,
  restoredAtCandidate,
  type ProbePlanes,
  type PowerSums,
  type PrepareRequest,
  type ProbeMeasure,
} from './measure.js';
import { runOrdered } from './pool.js';
import { poolFor, sourceRange, type MeasureJob, type MeasureReply, type PrepareJob, type WorkerPool } from './workers.js';
import type { CodedPlan } from './stages.js';
import { substituteTensors } from './substitute.js';
import { channelNormalizedWeights } from './normalized.js';
import { transposedValues } from '../layout/transpose.js';

/** Samples a sensitivity probe runs (evenly spaced over the probe part): each tensor is probed once or twice. */
const PROBE_SAMPLES = 8;
/** Synthetic samples a probe runs: generated data says little per sample, and costs as much. */
const SYNTHETIC_PROBE_SAMPLES = 2;

/**
 * `n` probe samples evenly spaced over the probe part, plus, for each `If` branch some probe sample takes and none
 * of those does, the first sample that takes it: a network behind a branch the picked samples miss would measure
 * nothing (the built If-branch model with `--probe-samples 1`: the one evenly spaced sample is noise; test/gate.test.ts).
 */
export function probeSamples(cal: Pick<Calibration, 'probe' | 'probeBranches'>, n: number): Calibration['probe'] {
  const p = cal.probe;
  if (p.length <= n) return p;
  const picked = Array.from({ length: n }, (_, k) => p[Math.floor((k * p.length) / n)]);
  const taken = cal.probeBranches;
  if (!taken?.size) return picked;
  const covered = new Set(picked.flatMap((s) => [...(taken.get(s.index) ?? [])]));
  for (const s of p) {
    const missing = [...(taken.get(s.index) ?? [])].filter((b) => !covered.has(b));
    if (!missing.length || picked.includes(s)) continue;
    picked.push(s);
    for (const b of missing) covered.add(b);
  }
  return picked;
}

/** The step grid allocation chose for a tensor. */
export interface GridChoice {
  readonly relStep: number;
  readonly range: RangeMode;
  /** With layer statistics: whether the tensor's codes are error-compensated on this grid. */
  readonly compensate?: boolean;
  /** Code bits where the allocation chose a width other than the tensor's own (16-bit fine candidates). */
  readonly bits?: number;
}

/** The grid of every allocated tensor (by key) for a budget scale (1: the target as given). */
/** The grids for a budget scale; `quiet` when the caller only compares grids (nothing is logged). */
export type Allocation = ((budgetScale: number, quiet?: boolean) => ReadonlyMap<string, GridChoice>) & {
  /**
   * A budget allocation only: corrects the rate model with an archive written at `budgetScale` (see
   * `measuredRates`); later calls allocate on the corrected bits.
   */
  observe?: (budgetScale: number, written: WrittenRates) => void;
  /**
   * Per tensor key, each slice's scales as the measurements found them (a model that cannot run: measureTensor),
   * for the encoder to take instead of finding them again.
   */
  scales?: ReadonlyMap<string, ReadonlyArray<MeasuredScales | undefined>>;
};

/** What an archive spent: each coded tensor's media bytes (by key) and the whole archive's bytes. */
export interface WrittenRates {
  tensorBytes: ReadonlyMap<string, number>;
  archiveBytes: number;
}

/**
 * The rate model corrected by what was written. The candidates' bits are the codes' order-0 entropy plus
 * records; a codec spends more or less than that (PNG's filters on planes too large for WebP: +8 % on a 0.4 GB
 * model; a small tensor's pack member and records), and the archive's other bytes (manifest, kept tensors,
 * skeleton, branches no sample takes) are only estimated. Each tensor's candidates move by what it wrote beyond
 * (or under) the estimate at the candidate written, one amount for all of them, and the archive's bytes beyond
 * the allocated tensors' replace the estimated overhead. An amount the same at every candidate leaves each
 * tensor's choice at a given λ as it was (bits may go below 0: the allocation uses only sums and differences):
 * the Lagrangian's choice stays one of the family the probes and errors define, and only the λ that meets the
 * budget moves, predicted from the archive as written (the remainder spent after it, `spendRemainder`, weighs only
 * differences between a tensor's candidates, which the amount leaves as they were). (Scaling each tensor's
 * candidates by its written/estimated ratio converged in fewer encodes but traded bits between tensors against
 * the probes: PaddleOCR rec on the OCR lines at `--target-bpw 4` went 3.918 bits/weight at fidelity 0.967, CER
 * 0.19 % → 3.982 at 0.951, CER 0.24 %.)
 */
export function measuredRates(
  rates: readonly TensorRate[],
  keys: readonly string[],
  choice: readonly number[],
  offsets: Float64Array,
  written: WrittenRates,
): { rates: TensorRate[]; overheadBits: number } {
  let tensorBits = 0;
  rates.forEach((r, i) => {
    const bytes = written.tensorBytes.get(keys[i]);
    if (bytes === undefined) return;
    tensorBits += 8 * bytes;
    offsets[i] = 8 * bytes - r.candidates[choice[i]].bits;
  });
  return {
    rates: rates.map((r, i) =>
      offsets[i] ? { ...r, candidates: r.candidates.map((c) => ({ ...c, bits: c.bits + offsets[i] })) } : r,
    ),
    overheadBits: Math.max(0, 8 * written.archiveBytes - tensorBits),
  };
}

/**
 * How much a tensor's output channels differ in size: mean(m) · mean(1/m) over its channels' mean squares m (1 when
 * all are alike; channels 20× apart in size, a quarter of them small: ~100). Channels of zeros are left out.
 */
export function channelSpread(planes: Pick<ProbePlanes, 'planes' | 'shapes'>): number {
  let n = 0;
  let sum = 0;
  let inverse = 0;
  planes.planes.forEach((plane, k) => {
    const { rows, cols, channelWidth } = planes.shapes[k];
    const width = Math.max(1, channelWidth);
    for (let c0 = 0; c0 < cols; c0 += width) {
      let sq = 0;
      let count = 0;
      for (let r = 0; r < rows; r++)
        for (let c = c0; c < Math.min(cols, c0 + width); c++) {
          const v = plane[r * cols + c];
          if (Number.isFinite(v)) {
            sq += v * v;
            count++;
          }
        }
      const m = count ? sq / count : 0;
      if (!(m > 0)) continue;
      n++;
      sum += m;
      inverse += 1 / m;
    }
  });
  return n ? (sum / n) * (inverse / n) : 1;
}

/**
 * A channel spread from which a tensor is probed with one range for the layer as well. Alike channels (spread
 * below 1.5: the sampling spread of Gaussian channels of 9 weights is ~1.3) put their error alike either way.
 */
export const LAYER_PROBE_SPREAD = 1.5;

/**
 * The sensitivity is probed on a range per channel, which makes each channel's error follow its own size. One
 * range for the layer makes every channel's error the same: the small channels' relative error grows, and where
 * the network sees each channel at its own scale (a BatchNorm folded into the convolution, a GroupNorm, a
 * depthwise convolution whose few large channels read dead inputs) the outputs move far more per squared error
 * than the probe said (helper-90: a folded-BatchNorm MobileNetV2 refused at every budget up to 17 bits/weight,
 * 371 of a depthwise kernel's 384 channels rounded to zero at 93 dB). So those tensors are probed on the layer's
 * range too, at the same step, and the layer-range candidates' errors are weighed by how much more they move the
 * outputs (never less: a layer range found harmless is counted as the per-channel probe says, as before).
 * Returns the weight. `sensitivity` is the per-channel probe's; unmeasured (NaN) or zero leaves everything as it is.
 */
export async function layerRangeProbe(
  rate: TensorRate,
  sensitivity: number,
  probe: (c: Candidate) => Promise<number>,
  compensated = false,
): Promise<number> {
  // the same kind of codes as the per-channel probe's (error-compensated or rounded), at the same step
  const at =
    rate.candidates.find(
      (c) => c.relStep === PROBE_STEP && c.range === 'layer' && Boolean(c.compensated) === compensated && !c.codeBits,
    ) ?? rate.candidates.find((c) => c.relStep === PROBE_STEP && c.range === 'layer' && !c.compensated && !c.codeBits);
  // (a per-channel probe of no error, 1e-30, or none measured: nothing to compare with)
  if (!at || !(sensitivity > MIN_PROBED) || !Number.isFinite(sensitivity)) return 1;
  const s = await probe(at);
  const ratio = Number.isFinite(s) ? Math.min(MAX_LAYER_WEIGHT, Math.max(1, s / sensitivity)) : 1;
  if (ratio > 1) for (const c of rate.candidates) if (c.range === 'layer') c.sse *= ratio;
  return ratio;
}

/** A sensitivity at or below this is the probe's placeholder for a candidate of no error, not a measurement. */
const MIN_PROBED = 1e-30;
/** The most a layer range's error is weighed: its candidates stay comparable with the other tensors' (λ's search). */
const MAX_LAYER_WEIGHT = 1e4;

function mse(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += Number.isFinite(d) ? d * d : 0;
  }
  return s / Math.max(1, a.length);
}

/**
 * Raw sensitivities with the unmeasured ones (NaN: the tensor moved no probed output at all) set to the median of
 * the measured ones, and which those were. A tensor the probe samples never reach (a network of a branch that only
 * other calibration samples take: Silero v5's 8 kHz network under `--audio-rate 16000,8000`, probed by the vad
 * task on its own 16 kHz speech) measured exactly nothing, got the coarsest grid at every budget, and wrecked the
 * held-back samples that do reach it (fidelity 0.62 at any budget). Not measured is not insensitive; the median spends on it what a typical tensor
 * gets. (With nothing measured at all, every tensor counts the same.) Under `--judge-output` (`judgedOnly`) such a
 * tensor moves none of the outputs the user cares about, which the gate judges alike: it keeps the floor.
 */
export function unseen(raw: readonly number[], judgedOnly = false): number[] & { missed: Set<number> } {
  const seen = raw.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  // with --judge-output, a tensor that moves none of the judged outputs does not matter to them: the floor
  const median = judgedOnly ? 1e-30 : seen.length ? seen[Math.floor((seen.length - 1) / 2)] : 1;
  const missed = new Set<number>();
  const out = raw.map((v, i) => {
    if (!Number.isNaN(v)) return v;
    missed.add(i);
    return median;
  });
  return Object.assign(out, { missed });
}

type Calibrate = (model: Uint8Array) => Promise<Float32Array>;

/** The probes' model opened once with its coded tensors as graph inputs (`fedProbes`). */
interface FedProbes {
  /** Tensor key → the graph input that takes its values. */
  inputs: ReadonlyMap<string, FedInput>;
  /** Every fed input at the original values. */
  originals: Feed;
  opened: OpenCalibration;
  /** The outputs at the original values, from this session (its kernels, not the plain model's). */
  reference: Float32Array;
}

/** A tensor's values (float32, file order) as the input that takes them. */
function fedValues(input: FedInput, values: Float32Array): Feed[string] {
  const data = input.dtype === 'float16' ? new Uint16Array(encodeFloats(values, 'float16').buffer, 0, values.length) : values;
  return { type: input.dtype, dims: input.shape, data };
}

/**
 * The probes' model with the tensors of `keys` as graph inputs (formats/onnx/inputs.ts), opened once: a probe then
 * runs the samples with one tensor's values fed instead of rebuilding and loading the whole model (PaddleOCR rec:
 * 0.1 s to rebuild and 0.1–0.2 s to load against 15–25 ms a run). Undefined, and the log says why, where the model
 * cannot be made so or onnxruntime will not run it (an op of onnxruntime's that wants constant weights): the
 * probes then rebuild the model each time, as before.
 */
async function fedProbes(
  reader: ModelReader,
  keys: Iterable<string>,
  calibrate: Calibrate,
  log: (message: string) => void,
  signal?: AbortSignal,
): Promise<FedProbes | undefined> {
  const opening = (calibrate as Partial<OpeningCalibrator>).open;
  // NNMEDIA_REBUILT_PROBES=1: every probe rebuilds the model (the path before; tests compare the two)
  if (!opening || reader.format !== 'onnx' || process.env.NNMEDIA_REBUILT_PROBES === '1') return undefined;
  let opened: OpenCalibration | undefined;
  try {
    const fed = weightsAsInputs(reader, keys);
    if (!fed) return undefined;
    const originals: Feed = {};
    for (const [key, input] of fed.inputs) originals[input.name] = fedValues(input, reader.read(key));
    opened = await opening(fed.bytes, new Set([...fed.inputs.values()].map((i) => i.name)));
    const reference = await opened.run(originals);
    return { inputs: fed.inputs, originals, opened, reference };
  } catch (e) {
    await opened?.close().catch(() => {});
    signal?.throwIfAborted();
    log(
      `sensitivity probes rebuild the model for each probe: it could not run with its weights as inputs (${(e as Error).message})`,
    );
    return undefined;
  }
}

/**
 * What the sensitivity probes run and compare: where a top-level `If` is decided by a computed value (a
 * first-stage score) and the probes run calibration samples, a copy of the model with those values as extra
 * outputs and a calibrator that compares them too (`probeCalibrator` in src/calibration/runner.ts; the values:
 * src/calibration/decisions.ts): weights feeding only a decision otherwise look inert. A refinement: where that copy cannot be made or run, the plain model and calibrator, and
 * the log says so. Returns the model to substitute tensors into, the calibrator and its reference outputs.
 */
async function probeTarget(
  reader: ModelReader,
  source: Uint8Array,
  plain: Calibrate,
  probeSet: Calibration['probe'] | undefined,
  judged: readonly string[] | undefined,
  log: (message: string) => void,
  signal?: AbortSignal,
  detectors: readonly string[] = [],
): Promise<{ reader: ModelReader; calibrate: Calibrate; reference: Float32Array }> {
  if (probeSet && reader.format === 'onnx')
    try {
      const decisions = exposeDecisions(source, reader.file);
      if (decisions) {
        const probeReader = openOnnx(reader.file, decisions.model);
        const calibrate = probeCalibrator(probeSet, judged, decisions.outputs, detectors);
        const reference = await calibrate(decisions.model);
        const one = decisions.values.length === 1;
        log(
          `sensitivity probes also compare ${one ? 'the value' : 'the values'} ${decisions.values.join(', ')} that ${one ? 'decides' : 'decide'} which If branch runs`,
        );
        return { reader: probeReader, calibrate, reference };
      }
    } catch (e) {
      signal?.throwIfAborted();
      log(
        `sensitivity probes compare the outputs only: the values deciding If branches could not be exposed (${(e as Error).message})`,
      );
    }
  return { reader, calibrate: plain, reference: await plain(source) };
}

/**
 * A tensor's values with its duplicates' (what a probe substitutes): the same array for an identical one, the
 * transpose for a transposed copy (`transposed`).
 */
export function withDuplicates(
  entry: { key: string; shape: readonly number[] },
  values: Float32Array,
  sameAs: ReadonlyMap<string, string>,
  transposed: ReadonlySet<string>,
): Map<string, Float32Array> {
  const out = new Map([[entry.key, values]]);
  for (const [dup, first] of sameAs)
    if (first === entry.key)
      out.set(dup, transposed.has(dup) ? transposedValues(values, entry.shape[0], entry.shape[1]) : values);
  return out;
}

/** What `allocate` works on. */
interface AllocateParts {
  reader: ModelReader;
  /** The model file's bytes (read only when a model must run). */
  source: () => Uint8Array;
  /** The tensors to allocate (duplicates left out: they share their first's grid and cost their bits once). */
  unique: readonly CodedPlan[];
  /** Every duplicate's key → its first's key. */
  sameAs: ReadonlyMap<string, string>;
  /** The duplicates that hold their first's transpose. */
  transposed: ReadonlySet<string>;
  /** Weights in all coded tensors: the denominator of bits per weight. */
  weights: number;
  /** Bits the archive costs beyond the tensors' codes (skeleton, manifest, directory). */
  overheadBits: number;
  options: ResolvedOptions;
  /** The calibration set (pipeline/gate.ts): its probe samples are what sensitivities are measured on. */
  calibration?: Calibration;
  /**
   * `compensate`: layer-input statistics per tensor key. Those tensors are probed with compensated codes and
   * their candidates' errors follow the compensated layer-output error (rate/compensated.ts).
   */
  statistics?: ReadonlyMap<string, TensorStatistics>;
}

export async function allocate(parts: AllocateParts): Promise<Allocation> {
  // the probes' session (weights as inputs) lives as long as the probes: closed however the allocation ends
  const sessions: Array<() => Promise<void>> = [];
  try {
    return await allocateWith(parts, sessions);
  } finally {
    // (a session that fails to close must not hide what ended the allocation)
    for (const close of sessions) await close().catch(() => {});
  }
}

async function allocateWith(parts: AllocateParts, sessions: Array<() => Promise<void>>): Promise<Allocation> {
  const { reader, unique, options, weights, overheadBits } = parts;
  // the model's bytes, made once for the graph's reading and the probes' reference (a model with external data is
  // put together in memory), then let go
  let sourceBytes: Uint8Array | undefined;
  const source = (): Uint8Array => (sourceBytes ??= parts.source());
  const log = options.onLog ?? (() => {});
  const debug = options.onDebug;
  const rates: TensorRate[] = [];
  const planesOf = new Map<string, ProbePlanes>();
  const seedsOf = new Map<string, number[] | undefined>();
  // Without a graph to run (safetensors) and no calibrator, every tensor counts the same per unit of error.
  const canRun = reader.format === 'onnx' || options.calibrate !== undefined || options.task !== undefined;
  // the range mode is a candidate too unless the user fixed it: per-channel ranges cost bits of their own
  const fixedRange = options.asked.range;
  const modes: RangeMode[] = fixedRange ? [fixedRange] : ['channel', 'layer'];
  // a layer whose output channels a BatchNormalization rescales keeps a range per channel (pipeline/normalized.ts):
  // its sensitivity, probed on per-channel grids, does not carry over to one range for the layer
  const normalized = fixedRange || !canRun ? new Set<string>() : channelNormalizedWeights(reader, source);
  const modesOf = (p: CodedPlan): RangeMode[] => (normalized.has(p.entry.key) ? ['channel'] : modes);
  const normalizedCount = unique.filter((p) => normalized.has(p.entry.key)).length;
  if (normalizedCount)
    log(
      `${normalizedCount} tensor${normalizedCount === 1 ? ' feeds' : 's feed'} a per-channel normalization (BatchNormalization, InstanceNormalization): a range per channel only`,
    );
  // mean square of each tensor's weights, the scale its sensitivity is damped on
  const powers: number[] = [];
  // tensors whose codes will be error-compensated: their statistics (rotated planes are not compensated)
  const compensated = new Map<string, TensorStatistics>();
  let modelled = 0;
  const modelStart = Date.now();
  const record = (rate: TensorRate, power: PowerSums): void => {
    rates.push(rate);
    powers.push(Math.max(power.sq / Math.max(power.n, 1), 1e-30));
  };
  const measuredScales = new Map<string, ReadonlyArray<MeasuredScales | undefined>>();
  // each tensor measured on the worker threads where there are several cores, else here; results in order
  // (`job`: what the worker is asked besides the tensor itself, its file and its byte range)
  type TensorFields = 'file' | 'plan' | 'range';
  const measureEach = async <R extends MeasureReply | ProbeMeasure>(
    job: (p: CodedPlan) => Omit<MeasureJob, TensorFields> | Omit<PrepareJob, TensorFields>,
    here: (p: CodedPlan) => R,
    commit: (result: R, p: CodedPlan) => void,
  ): Promise<void> => {
    const pool = poolFor(options.jobs, unique.length, weights);
    const onWorker = (w: WorkerPool, p: CodedPlan): Promise<R> =>
      w.run<R>({ ...job(p), file: reader.file, plan: p, ...sourceRange(reader, p.entry.key) } as MeasureJob | PrepareJob);
    try {
      await runOrdered(
        unique,
        pool ? 2 * Math.max(1, options.jobs ?? availableParallelism()) : 1,
        (p) => (pool ? onWorker(pool, p) : Promise.resolve(here(p))),
        commit,
      );
    } finally {
      await pool?.close();
    }
  };
  if (!canRun) {
    // Nothing to run: each tensor measured slice by slice (as they will be coded), keeping nothing, so memory
    // follows the slice
    const both = [...modes];
    await measureEach<MeasureReply>(
      () => ({ kind: 'measure', sliceWeights: options.sliceWeights, modes: both }),
      (p) => measureTensor(reader, p, options.sliceWeights, both),
      ({ rate, power, scales }, p) => {
        record(rate, power);
        if (scales) measuredScales.set(p.entry.key, scales);
      },
    );
  }
  // To probe, substitutions need every tensor's working planes: the model is in memory then anyway. Each tensor
  // is measured and its compensation modelled.
  if (canRun) {
    // 16-bit candidates only where probes can say a tensor needs them: a model that cannot run weighs every
    // tensor alike, where they pay only at budgets near 16 bits/weight, and its measurements (large
    // safetensors files, on the workers) stay as fast as they were
    const requestOf = (p: CodedPlan): PrepareRequest => {
      const stats = parts.statistics?.get(p.entry.key);
      return {
        modes: modesOf(p),
        fine: FINE_STEPS,
        ...(stats ? { compensation: { stats, range: fixedRange ?? 'channel' } } : {}),
      };
    };
    await measureEach<ProbeMeasure>(
      (p) => ({ kind: 'prepare', ...requestOf(p) }),
      (p) => measureToProbe(p, reader.read(p.entry.key), requestOf(p)),
      ({ prepared, seeds, rate, power, ratios, leftOut }, p) => {
        seedsOf.set(p.entry.key, seeds);
        planesOf.set(p.entry.key, { ...prepared, ...(leftOut ? { leftOut } : {}) });
        if (ratios) {
          addCompensatedCandidates(rate, ratios);
          compensated.set(p.entry.key, parts.statistics!.get(p.entry.key)!);
          modelled++;
          debug?.(
            `  ${p.entry.name}: compensated/nearest layer error ${ratios.map((x) => x.ratio.toFixed(3)).join(', ')}, ` +
              `extra code bits ${ratios.map((x) => x.extraBits.toFixed(0)).join(', ')} at steps ${COMPENSATION_ANCHORS.map((x) => x.toFixed(3)).join(', ')}`,
          );
        }
        record(rate, power);
      },
    );
  }
  if (parts.statistics)
    log(
      `compensate: the error model of ${modelled} of ${unique.length} tensors from compensated codes at ` +
        `${COMPENSATION_ANCHORS.length} steps (${((Date.now() - modelStart) / 1000).toFixed(1)} s)`,
    );
  // values of a tensor (and its duplicates) at a given candidate, in file order
  const restoredAt = (i: number, c: Candidate): Map<string, Float32Array> => {
    const p = unique[i];
    // the codes that will be written: compensated where the candidate says so
    const layer = c.compensated ? compensated.get(p.entry.key) : undefined;
    const v = restoredAtCandidate(p, planesOf.get(p.entry.key)!, seedsOf.get(p.entry.key), c, layer);
    return withDuplicates(p.entry, v, parts.sameAs, parts.transposed);
  };
  let probeAt: ((i: number, c: Candidate) => Promise<number>) | undefined;
  // --judge-output: the probes and the gate compare only the named outputs
  const judgedOnly = Boolean(parts.calibration?.outputs);
  if (canRun) {
    const task = options.task;
    const cal = parts.calibration;
    // the user's calibration data first, then a task's own data, then the synthetic probe samples (the
    // generic `outputs` task has no data of its own: its probes run the gate's synthetic probe part)
    const probeSet =
      options.calibrate || !cal
        ? undefined
        : !cal.set.synthetic
          ? probeSamples(cal, options.probeSamples ?? PROBE_SAMPLES)
          : task && task.name !== 'outputs'
            ? undefined
            : probeSamples(cal, options.probeSamples ?? SYNTHETIC_PROBE_SAMPLES);
    const plain =
      options.calibrate ??
      (probeSet ? probeCalibrator(probeSet, cal?.outputs, [], cal?.detectors) : undefined) ??
      (task ? (m: Uint8Array) => task.calibrate(m) : undefined) ??
      randomInputOutputs;
    // what the probes will cost, so a user with a large model knows why it takes long and what to change
    if (probeSet) {
      const n = probeSet.length;
      const passes = options.targetBpw !== undefined && options.reprobe ? 2 : 1;
      log(
        `sensitivity probes: ${unique.length} tensors × ${n} sample${n === 1 ? '' : 's'}${passes > 1 ? ' × 2 passes' : ''} = ${unique.length * n * passes} model runs (--probe-samples, --no-reprobe: fewer)`,
      );
    }
    // the model the probes substitute into: the source, or its copy with decision values as outputs
    const {
      reader: probeReader,
      calibrate,
      reference,
    } = await probeTarget(reader, source(), plain, probeSet, cal?.outputs, log, options.signal, cal?.detectors);
    sourceBytes = undefined; // (not kept past the probes' reference: the allocation lives through every encode)
    // one session for every probe, the coded tensors (and their duplicates) fed as inputs, where it can be made and
    // each probe sample is one run. Not for sequences (windows with state carried: hundreds of runs a probe), where
    // a run with its weights fed costs more than the load saved (Silero v6: 0.15 → 0.3 ms a window, the model
    // without its weights' constant folding and packing, against 0.1 s to rebuild and load it)
    const fed =
      probeSet && probeSet.every((s) => s.kind === 'feed')
        ? await fedProbes(
            probeReader,
            [...unique.map((p) => p.entry.key), ...parts.sameAs.keys()],
            calibrate,
            log,
            options.signal,
          )
        : undefined;
    if (fed) {
      sessions.push(() => fed.opened.close());
      debug?.(`probes: one session, ${fed.inputs.size} tensors fed as graph inputs`);
    }
    // output distortion per unit of squared weight error with tensor i at candidate c
    // (duplicates are substituted together and cost their bits once, so no correction is needed)
    probeAt = async (i, c) => {
      options.signal?.throwIfAborted();
      const values = restoredAt(i, c);
      let out: Float32Array;
      let against = reference;
      if (fed && [...values.keys()].every((k) => fed.inputs.has(k))) {
        const feed = { ...fed.originals };
        for (const [k, v] of values) feed[fed.inputs.get(k)!.name] = fedValues(fed.inputs.get(k)!, v);
        out = await fed.opened.run(feed);
        against = fed.reference;
      } else out = await calibrate(substituteTensors(probeReader, values));
      if (!(c.sse > 0)) return 1e-30;
      const d = mse(out, against);
      // no probed output moved at all: the probe samples do not reach this tensor (see `unseen`)
      return d > 0 ? d / c.sse : NaN;
    };
    log(`probing the sensitivity of ${unique.length} tensors on calibration data`);
    // tensors whose channels differ in size, where one range for the layer puts the error elsewhere than a range
    // per channel does: probed on both (layerRangeProbe)
    // (not where the probes are not to be trusted at all, --sensitivity-weight 0: equal relative precision everywhere.
    // Where they are, the ratio is applied in full, not damped: it says where in the tensor the error falls, not how
    // far one tensor's probe is trusted against another's)
    const spread = unique.map((p, i) =>
      !fixedRange && options.sensitivityWeight > 0 && rates[i].candidates.some((c) => c.range === 'layer')
        ? channelSpread(planesOf.get(p.entry.key)!)
        : 1,
    );
    const twoModes = spread.filter((h) => h >= LAYER_PROBE_SPREAD).length;
    if (twoModes)
      log(
        `${twoModes} of them with channels of different sizes: probed with one range for the layer too (up to ${twoModes * (probeSet?.length ?? 1)} model runs more)`,
      );
    const weighed: string[] = [];
    for (let i = 0; i < unique.length; i++) {
      // with statistics, the compensated candidate: its error model is scaled to match (rate/compensated.ts)
      const probe = rates[i].candidates.find(
        (c) => c.relStep === PROBE_STEP && c.range === (fixedRange ?? 'channel') && c.compensated !== false,
      )!;
      rates[i].sensitivity = await probeAt(i, probe);
      debug?.(`  ${unique[i].entry.name}: sensitivity ${rates[i].sensitivity.toExponential(2)}`);
      if (spread[i] >= LAYER_PROBE_SPREAD) {
        const ratio = await layerRangeProbe(rates[i], rates[i].sensitivity, (c) => probeAt!(i, c), Boolean(probe.compensated));
        debug?.(
          `  ${unique[i].entry.name}: channel spread ${spread[i].toFixed(2)}, one range for the layer ×${ratio.toFixed(2)}`,
        );
        if (ratio > 1) weighed.push(unique[i].entry.name);
      }
    }
    if (weighed.length)
      log(
        `${weighed.length} tensor${weighed.length === 1 ? '' : 's'} move${weighed.length === 1 ? 's' : ''} the outputs more per squared error with one range for the layer than with a range per channel (${weighed.slice(0, 4).join(', ')}${weighed.length > 4 ? ', …' : ''}): those grids weighed by it`,
      );
    const filled = unseen(
      rates.map((r) => r.sensitivity),
      judgedOnly,
    );
    filled.forEach((v, i) => (rates[i].sensitivity = v));
    const missed = unique.filter((_, i) => filled.missed.has(i));
    const names = `${missed
      .slice(0, 4)
      .map((p) => p.entry.name)
      .join(', ')}${missed.length > 4 ? ', …' : ''}`;
    if (missed.length)
      log(
        judgedOnly
          ? `${missed.length} tensor${missed.length === 1 ? '' : 's'} moved none of the judged outputs (${names}): the coarsest grids`
          : `${missed.length} tensor${missed.length === 1 ? '' : 's'} moved no probed output at all (the probe samples do not reach ${missed.length === 1 ? 'it' : 'them'}; ${names}): given the median sensitivity of the others, not starved`,
      );
  }
  // Damped sensitivities: s_t^γ on the scale of each tensor's own weight power. γ = 0 spends bits for equal
  // relative precision everywhere; γ = 1 trusts the probes fully (measured to over-commit on PaddleOCR).
  const gamma = options.sensitivityWeight;
  const damp = (raw: number, i: number): number => (raw * powers[i]) ** gamma / powers[i];
  rates.forEach((r, i) => (r.sensitivity = damp(r.sensitivity, i)));
  const gridOf = (choice: readonly number[]): ReadonlyMap<string, GridChoice> =>
    new Map(
      unique.map((p, i) => {
        const c = rates[i].candidates[choice[i]];
        return [
          p.entry.key,
          {
            relStep: c.relStep!,
            range: c.range,
            ...(c.compensated !== undefined ? { compensate: c.compensated } : {}),
            ...(c.codeBits !== undefined ? { bits: c.codeBits } : {}),
          },
        ];
      }),
    );
  const estimate = (choice: readonly number[], on: readonly TensorRate[] = rates): string =>
    (on.reduce((s, t, i) => s + t.candidates[choice[i]].bits, 0) / weights).toFixed(3);
  if (options.targetBpw !== undefined) {
    const target = options.targetBpw;
    if (options.reprobe && probeAt) {
      // The linear model is measured at one step; most tensors land elsewhere. Measure again where the
      // first allocation put each tensor, then allocate with those (PaddleOCR at 4 bits/weight: CER 0.30 → 0.19 %).
      const first = allocateForBudget(rates, target * weights - overheadBits);
      log(`probing again at the allocated grids`);
      const again: number[] = [];
      for (let i = 0; i < unique.length; i++) again.push(await probeAt(i, rates[i].candidates[first[i]]));
      unseen(again, judgedOnly).forEach((v, i) => (rates[i].sensitivity = damp(v, i)));
    }
    // the rate model, corrected by each archive observed (measuredRates)
    let current: readonly TensorRate[] = rates;
    let overhead = overheadBits;
    const offsets = new Float64Array(rates.length);
    const keys = unique.map((p) => p.entry.key);
    const choiceAt = (budgetScale: number): number[] => allocateForBudget(current, target * weights * budgetScale - overhead);
    const allocation: Allocation = (budgetScale, quiet) => {
      const choice = choiceAt(budgetScale);
      // (a budget the rest of the archive leaves too little of: the coarsest grids, and the sum over the target)
      const left = target * budgetScale - overhead / weights;
      const over = Number(estimate(choice, current)) > left + 5e-4;
      if (!quiet)
        log(
          `allocated ${estimate(choice, current)} bits/weight (estimate${current === rates ? '' : ', rates as written'}) to the grids it chooses, ${(overhead / weights).toFixed(3)} to the rest of the archive, for ${budgetScale === 1 ? `a target of ${target}` : `${+budgetScale.toFixed(3)}× the target of ${target}`}${over ? `: over it, since the rest leaves ${Math.max(0, left).toFixed(3)} for the weights, less than the coarsest grids cost by this estimate` : ''}`,
        );
      return gridOf(choice);
    };
    allocation.observe = (budgetScale, written) => {
      const chosen = choiceAt(budgetScale);
      const measured = measuredRates(rates, keys, chosen, offsets, written);
      debug?.(
        `rates as written: overhead ${(overhead / weights).toFixed(3)} → ${(measured.overheadBits / weights).toFixed(3)} bits/weight; tensors ${estimate(chosen, current)} → ${(keys.reduce((a, k) => a + 8 * (written.tensorBytes.get(k) ?? 0), 0) / weights).toFixed(3)}`,
      );
      current = measured.rates;
      overhead = measured.overheadBits;
    };
    if (measuredScales.size) allocation.scales = measuredScales;
    return allocation;
  }
  const task = options.task!;
  const ref = await task.run(source());
  const result = await allocateForLoss(rates, options.maxLoss!, async (c) => {
    debug?.(
      c
        .map((k, i) => {
          const g = rates[i].candidates[k];
          return `${unique[i].entry.name}:${g.range[0]}${(1 / g.relStep!).toFixed(1)}${g.codeBits ? `@${g.codeBits}` : ''}`;
        })
        .join(' '),
    );
    const all = new Map<string, Float32Array>();
    c.forEach((k, i) => restoredAt(i, rates[i].candidates[k]).forEach((v, key) => all.set(key, v)));
    const loss = task.loss(ref, await task.run(substituteTensors(reader, all)));
    log(`  ${estimate(c)} bits/weight (estimate): loss ${loss.toFixed(5)}`);
    return loss;
  });
  log(
    `chose ${estimate(result.choice)} bits/weight (estimate): loss ${result.loss.toFixed(5)} ${result.loss <= options.maxLoss! ? '≤' : '>'} --max-loss ${options.maxLoss}${result.loss <= options.maxLoss! ? '' : ' (the finest grids tried)'}`,
  );
  const grids = gridOf(result.choice);
  const allocation: Allocation = () => grids;
  if (measuredScales.size) allocation.scales = measuredScales;
  return allocation;
}
