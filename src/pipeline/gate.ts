/**
 * The quality gate: every compression of a model that can run (ONNX, onnxruntime-node installed) is checked
 * before its archive becomes the output. The archive is decoded as a user would decode it, the rebuilt model
 * and the original run on calibration samples held back from the allocator's probes, and their outputs
 * compared (eval/fidelity.ts). The result is recorded in the manifest (`quality`), printed by `compress` and
 * shown by `inspect`; below the floor (`minFidelity`, default 0.9: docs/calibration.md#fidelity) the run fails
 * with a `QualityError` and leaves no output (with `force`, the archive is kept and the error still raised).
 *
 * The calibration set is the user's (`calibration`), else synthetic inputs made from the graph, which every
 * report names as such. The same set (its probe part) drives the allocator's sensitivity probes, and tells
 * which `If` branches the data never takes: their tensors keep the default grid, and the report names them.
 */

import { Archive } from '../archive/node.js';
import { branchCoverage, branchTensors } from '../calibration/branches.js';
import { describeModel } from '../calibration/model-io.js';
import { detectorOutputs } from '../calibration/decisions.js';
import { parseOnnxGraph } from '../compensate/graph.js';
import {
  buildCalibrationSet,
  fileKind,
  splitCalibrationSet,
  type CalibrationSpec,
  type CalibrationSplit,
} from '../calibration/set.js';
import { findRateInput } from '../calibration/state.js';
import { syntheticCalibrationSet } from '../calibration/synthetic.js';
import type { CalibrationSample, CalibrationSet } from '../calibration/types.js';
import { MissingDependencyError, OptionError } from '../errors.js';
import { measureFidelity, type FidelityReport } from '../eval/fidelity.js';
import { roundSignificant } from '../eval/metrics.js';
import type { ModelReader } from '../formats/model.js';
import { modelBytes, selfContainedModel } from '../formats/registry.js';
import { loadOrt } from '../runtime/optional.js';
import { DEFAULT_SEGMENT_SECONDS } from '../calibration/audio.js';
import { writeModel } from './decompress.js';
import { withTempFile } from '../io/atomic.js';
import type { QualityRecord } from '../archive/manifest.js';

export type { QualityRecord, OutputQuality } from '../archive/manifest.js';

/** Synthetic samples made when no calibration data is given (every 4th held back: 4 for the gate). */
export const SYNTHETIC_SAMPLES = 16;
/**
 * Synthetic samples for a small model (ONNX of at most SMALL_MODEL_BYTES), whose runs cost little: 64, 16 held back.
 * Four held-back samples judge a small output too coarsely: hey_jarvis (one [1, 1] score) at `--target-snr 30` read
 * fidelity 0.983 at the gate and 0.654 on 3 other synthetic inputs, where a score near 0 made one sample's
 * relative error the verdict.
 */
export const SMALL_MODEL_SYNTHETIC_SAMPLES = 64;
export const SMALL_MODEL_BYTES = 8 * 2 ** 20;
/** ONNX models are read whole to run them; protobuf bounds them to 2 GiB. */
const MAX_RUNNABLE_BYTES = 2 ** 31;

/**
 * Fewer held-back samples than this and compress says the gate's verdict rests on too little. Measured: ISNet
 * at `--target-bpw 3 --judge-output output` read fidelity 0.9998 on its 2 held-back photos (of 8) while one of
 * the other photos' masks had IoU 0.73 against the original's.
 */
export const FEW_HELD_BACK = 4;

/** A calibration set opened for one compression: probes, held-back samples, untaken branches. */
export interface Calibration {
  /**
   * The original model's bytes (ONNX, read whole, external data inline), read when asked: the calibration does not
   * hold a large model for the whole compression (the quality gate of a default compress never asks).
   */
  source(): Uint8Array;
  /** The original model's file where it is those bytes (no external data): onnxruntime loads it from there. */
  readonly sourceFile?: string;
  readonly set: CalibrationSet;
  readonly probe: readonly CalibrationSample[];
  readonly heldBack: readonly CalibrationSample[];
  /** One sample only: it is the probes' and the gate's alike (not held back). */
  readonly shared?: boolean;
  /** `node: then|else` for each branch no probe sample took. */
  readonly untakenBranches: readonly string[];
  /** Keys of the tensors inside those branches. */
  readonly untakenTensors: ReadonlySet<string>;
  /** The `If` branches (`node: then|else`) each probe sample takes, by sample index (empty without `If`). */
  readonly probeBranches?: ReadonlyMap<number, ReadonlySet<string>>;
  /**
   * With untaken branches: the model's sample-rate input, when it has one and `--audio-rate` gave one rate only
   * (calibration at several rates would take the branch of each).
   */
  readonly rateInput?: string;
  /** `--judge-output`: the outputs the gate and the probes compare (default: every output). */
  readonly outputs?: readonly string[];
  /** Outputs that pack a detector's class scores after its boxes: the gate compares their confident classes too. */
  readonly detectors: readonly string[];
}

/** Why a model cannot be run here, or undefined when it can. */
export async function whyNotRunnable(input: string, reader: ModelReader): Promise<string | undefined> {
  if (reader.format !== 'onnx') return `${reader.format} files hold no graph to run`;
  if (modelBytes(input, reader) >= MAX_RUNNABLE_BYTES) return 'ONNX model of 2 GiB or more: not run';
  try {
    await loadOrt('the quality gate');
  } catch (e) {
    if (e instanceof MissingDependencyError)
      return 'neither onnxruntime-node nor onnxruntime-web is installed (npm install onnxruntime-node)';
    throw e;
  }
  return undefined;
}

/**
 * Opens the calibration set: the user's files, else synthetic inputs; split into probe and held-back samples;
 * the `If` branches the probe samples never take, and their tensors.
 */
export async function openCalibration(
  input: string,
  reader: ModelReader,
  spec: CalibrationSpec | undefined,
  log?: (message: string) => void,
  signal?: AbortSignal,
  /**
   * Whether tensors of untaken branches keep the default grid: at the default, and under rate control (which leaves
   * them out of its allocation); a grid the user fixed (`--step`, `--target-snr`, `--bits`, …) is theirs too.
   */
  keepsDefault = true,
): Promise<Calibration> {
  const source = selfContainedModel(input, reader);
  const outputs = spec?.outputs?.length ? checkJudgedOutputs(source, spec.outputs, input) : undefined;
  const set = spec?.paths.length
    ? await buildCalibrationSet(source, spec)
    : await syntheticCalibrationSet(source, {
        count: source.length <= SMALL_MODEL_BYTES ? SMALL_MODEL_SYNTHETIC_SAMPLES : SYNTHETIC_SAMPLES,
        inputs: spec?.inputs,
        image: spec?.image,
        audio: spec?.audio,
        file: input,
      });
  let split = splitCalibrationSet(set);
  log?.(
    set.synthetic
      ? `calibration: ${set.description}; the fidelity is measured on generated data: give real inputs with --calibration`
      : `calibration: ${set.description}; ${split.rule}`,
  );
  if (!set.synthetic && split.shared)
    log?.(
      `one calibration sample: the probes and the quality gate both use it, so the gate's verdict is not on unseen data; give at least ${FEW_HELD_BACK * 4} calibration inputs (every 4th is held back) for a verdict that carries over to other inputs`,
    );
  else if (!set.synthetic && split.heldBack.length < FEW_HELD_BACK)
    log?.(
      `only ${split.heldBack.length} held-back calibration sample${split.heldBack.length === 1 ? '' : 's'}: the quality gate's verdict rests on ${split.heldBack.length === 1 ? 'it' : 'them'} alone; give at least ${FEW_HELD_BACK * 4} calibration inputs (every 4th is held back) for a verdict that carries over to other inputs` +
        // a long recording is cut into segments: shorter ones make more samples of the same file
        (set.source.some((f) => fileKind(f) === 'audio')
          ? `, or cut the recordings into shorter segments (--segment SECONDS; ${spec?.audio?.segment ?? DEFAULT_SEGMENT_SECONDS} s now)`
          : ''),
    );
  const untakenBranches: string[] = [];
  const probeBranches = new Map<number, Set<string>>();
  let rateInput: string | undefined;
  const untakenTensors = new Set<string>();
  const untakenPaths: string[] = [];
  const branches = branchTensors(source);
  if (branches.length) {
    const coverage = await branchCoverage(source, split.probe, { file: input, signal, taken: probeBranches });
    if (!split.shared) {
      const probes = split.probe.length;
      split = heldBackOnEveryBranch(split, probeBranches, await heldBackBranches(source, split, input, signal), log);
      // the branches the probe samples take, counted again without the samples held back since
      if (split.probe.length !== probes)
        for (const c of coverage)
          for (const branch of ['then', 'else'] as const)
            c[branch] = split.probe.filter((x) => probeBranches.get(x.index)?.has(`${c.node}: ${branch}`)).length;
    }
    for (const c of coverage) {
      const b = branches.find((x) => x.node === c.node);
      for (const [branch, taken, path] of [
        ['then', c.then, b?.thenPath],
        ['else', c.else, b?.elsePath],
      ] as const) {
        if (taken > 0) continue;
        untakenBranches.push(`${c.node}: ${branch}`);
        // by where the tensor sits, not by name: both branches may hold tensors of the same name (Silero v6)
        if (path) for (const t of reader.tensors) if (t.location.startsWith(`${path}/`)) untakenTensors.add(t.key);
        if (path) untakenPaths.push(path);
      }
    }
    // a graph-level tensor that only an untaken branch reads (the exporter keeps weights at the top and the
    // branch refers to them by name: openWakeWord's verifier network) is that branch's as much as its own are
    for (const t of reader.tensors) {
      const uses = t.consumers ?? t.uses;
      if (uses.length && uses.every((u) => u.node !== undefined && untakenPaths.some((p) => u.node!.startsWith(`${p}/`))))
        untakenTensors.add(t.key);
    }
    if (untakenBranches.length) {
      // a model that branches on its sample rate (Silero VAD) takes one branch per rate (not said where the
      // calibration was made at several rates already, asked for or synthetic)
      rateInput =
        (!spec?.audio?.rates && !(set.rates && set.rates.length > 1) && findRateInput(describeModel(source, input))?.name) ||
        undefined;
      log?.(
        `branches no calibration sample takes (${untakenWording(untakenTensors.size, keepsDefault)}): ${untakenBranches.join(', ')}${rateInput ? `; the model has a rate input (${rateInput}): --audio-rate with several rates (e.g. 16000,8000) calibrates the branch of each` : ''}`,
      );
    }
  }
  if (outputs) log?.(`judged on ${outputs.length === 1 ? 'output' : 'outputs'} ${outputs.join(', ')} only (--judge-output)`);
  // a sequence or a map (skl2onnx's ZipMap) cannot be fetched from onnxruntime-node: the tensors it is made from are
  // compared in its place (calibration/runner.ts), said once
  const notTensors = describeModel(source, input)
    .outputs.filter((o) => o.type === 'non-tensor')
    .map((o) => o.name);
  if (notTensors.length && !outputs)
    log?.(
      `${notTensors.length === 1 ? 'output' : 'outputs'} ${notTensors.join(', ')} ${notTensors.length === 1 ? 'is not a tensor' : 'are not tensors'} (a sequence or a map, as skl2onnx's ZipMap): the tensors made into ${notTensors.length === 1 ? 'it' : 'them'} are compared in ${notTensors.length === 1 ? 'its' : 'their'} place (where the model loads from memory)`,
    );
  return {
    source: () => selfContainedModel(input, reader),
    ...(reader.externalFiles?.length ? {} : { sourceFile: input }),
    set,
    probe: split.probe,
    heldBack: split.heldBack,
    ...(split.shared ? { shared: true } : {}),
    untakenBranches,
    untakenTensors,
    probeBranches,
    ...(rateInput ? { rateInput } : {}),
    ...(outputs ? { outputs } : {}),
    detectors: detectorOutputs(parseOnnxGraph(source, input).main),
  };
}

/** The branches each held-back sample takes (by sample index). */
async function heldBackBranches(
  source: Uint8Array,
  split: CalibrationSplit,
  file: string,
  signal?: AbortSignal,
): Promise<Map<number, Set<string>>> {
  const taken = new Map<number, Set<string>>();
  await branchCoverage(source, split.heldBack, { file, signal, taken });
  return taken;
}

/**
 * A branch the probe samples take and no held-back sample does would be judged by nobody: the quality gate runs the
 * held-back samples only. A probe sample taking it is held back instead (a merged decoder calibrated on prefills and
 * decoding steps in turn held back only decoding steps, and the gate passed a model whose prefill branch was
 * damaged) where every branch it takes another probe sample takes too; where none is, the log says so.
 * `probeBranches` loses the moved samples.
 */
export function heldBackOnEveryBranch(
  split: CalibrationSplit,
  probeBranches: Map<number, Set<string>>,
  heldTaken: ReadonlyMap<number, ReadonlySet<string>>,
  log?: (message: string) => void,
): CalibrationSplit {
  const judged = new Set([...heldTaken.values()].flatMap((b) => [...b]));
  let { probe, heldBack } = split;
  const unjudged: string[] = [];
  for (const branch of new Set([...probeBranches.values()].flatMap((b) => [...b]))) {
    if (judged.has(branch)) continue;
    // a sample whose every other branch another probe sample takes too (no branch left without probes), the one
    // taking the most branches no held-back sample takes yet; the last of those
    const others = (x: CalibrationSample, b: string): boolean => probe.some((y) => y !== x && probeBranches.get(y.index)?.has(b));
    const takers = probe.filter(
      (x) => probeBranches.get(x.index)?.has(branch) && [...probeBranches.get(x.index)!].every((b) => others(x, b)),
    );
    if (!takers.length) {
      unjudged.push(branch);
      continue;
    }
    const gain = (x: CalibrationSample): number => [...probeBranches.get(x.index)!].filter((b) => !judged.has(b)).length;
    const moved = takers.reduce((best, x) => (gain(x) >= gain(best) ? x : best));
    for (const b of probeBranches.get(moved.index) ?? []) judged.add(b);
    probeBranches.delete(moved.index);
    probe = probe.filter((s) => s !== moved);
    heldBack = [...heldBack, moved].sort((a, b) => a.index - b.index);
    log?.(`held back ${moved.label} instead of probing with it: no other held-back sample takes ${branch}`);
  }
  if (unjudged.length)
    log?.(
      `no held-back sample takes ${unjudged.join(', ')}: the quality gate does not judge ${unjudged.length === 1 ? 'that branch' : 'those branches'}; give more calibration inputs that take ${unjudged.length === 1 ? 'it' : 'them'}`,
    );
  return { ...split, probe, heldBack };
}

/** `--judge-output` names, each checked against the model's outputs (an unknown one names the ones there are). */
export function checkJudgedOutputs(model: Uint8Array, names: readonly string[], file?: string): readonly string[] {
  const outputs = describeModel(model, file).outputs;
  const have = outputs.map((o) => o.name);
  for (const n of names)
    if (!have.includes(n))
      throw new OptionError(`--judge-output ${JSON.stringify(n)}: the model has no such output; its outputs: ${have.join(', ')}`);
  // a sequence or a map cannot be fetched; without --judge-output the tensors it is made from are compared for it
  for (const n of names)
    if (outputs.find((o) => o.name === n)!.type === 'non-tensor')
      throw new OptionError(
        `--judge-output ${JSON.stringify(n)}: that output is not a tensor (a sequence or a map, as skl2onnx's ZipMap) and cannot be judged by name; leave --judge-output out to judge every output (the tensors it is made from stand in for it), or name tensor outputs: ${outputs
          .filter((o) => o.type !== 'non-tensor')
          .map((o) => o.name)
          .join(', ')}`,
      );
  return names;
}

const r4 = (v: number): number => roundSignificant(v, 4);

/** The gate's record of a fidelity report against a floor. */
export function qualityRecord(report: FidelityReport, cal: Calibration, minFidelity: number): QualityRecord {
  return {
    checked: true,
    fidelity: r4(report.fidelity),
    minFidelity,
    passed: report.fidelity >= minFidelity,
    worst: report.worst,
    samples: report.samples,
    ...(cal.shared ? { shared: true } : {}),
    ...(cal.set.synthetic ? { synthetic: true } : {}),
    calibration: cal.set.description,
    outputs: report.outputs.map((o) => ({
      name: o.name,
      kind: o.kind,
      score: r4(o.score),
      cosine: r4(o.cosine),
      relRms: r4(o.relRms),
      maxAbs: r4(o.maxAbs),
      ...(o.agreement !== undefined ? { agreement: r4(o.agreement) } : {}),
      ...(o.iou !== undefined ? { iou: r4(o.iou) } : {}),
      ...(o.decisions !== undefined ? { decisions: o.decisions } : {}),
      ...(o.oneSided ? { oneSided: true } : {}),
      ...(o.constant ? { constant: true } : {}),
      ...(o.state ? { state: true } : {}),
      ...(o.scores ? { scores: { ...o.scores, agreement: r4(o.scores.agreement) } } : {}),
      ...(o.keypoints ? { keypoints: { ...o.keypoints, agreement: r4(o.keypoints.agreement) } } : {}),
      ...(o.detections ? { detections: { ...o.detections } } : {}),
    })),
    ...(cal.untakenBranches.length ? { untakenBranches: [...cal.untakenBranches] } : {}),
    ...(cal.outputs ? { judged: [...cal.outputs] } : {}),
  };
}

/**
 * Decodes the archive at `file` as a user would (`decompress`, into a scratch file beside it: a large model is not
 * held in memory for it), and measures the decompressed model against the original.
 */
export async function measureArchive(file: string, cal: Calibration, signal?: AbortSignal): Promise<FidelityReport> {
  return withTempFile(file, async (fd, candidate) => {
    const archive = new Archive(file);
    try {
      await writeModel(archive, fd, { jobs: 1, signal }, candidate);
    } finally {
      archive.close();
    }
    return measureFidelity(cal.sourceFile ?? cal.source(), candidate, cal.heldBack, {
      signal,
      detectors: cal.detectors,
      ...(cal.outputs ? { outputs: cal.outputs } : {}),
    });
  });
}

/**
 * The warning for judged outputs that never make their rarer decision on the held-back inputs (a detector that
 * finds nothing, a VAD on silence): undefined when there are none.
 */
export function oneSidedWarning(q: QualityRecord): string | undefined {
  const judged = (q.outputs ?? []).filter((o) => !o.state && (!q.judged || q.judged.includes(o.name)));
  // an output of one value everywhere (a pair model fed one picture twice: its flow all 0) is said to be constant,
  // not to be a detector that never fires
  const constant = judged.filter((o) => o.constant);
  const names = judged.filter((o) => o.oneSided && !o.constant);
  const still = constant.length
    ? `${constant.map((o) => o.name).join(', ')}: the original gives one value on every element of the held-back inputs, so the comparison only shows whether the compressed model departs from it, not how it would move where the output varies; give inputs on which it varies (for a model of two pictures, a real pair), or judge only the outputs that matter with --judge-output`
    : undefined;
  if (!names.length) return still;
  // (a yes/no label has no values to have moved: its answers are all there is)
  const valued = names.filter((o) => o.kind !== 'labels');
  const how = names.every((o) => o.kind === 'labels') ? 'the same answer' : 'all p > 0.5 or all ≤ 0.5';
  const moved = valued.length
    ? `, not how far its values moved (relative RMS error ${valued.map((o) => o.relRms).join(', ')})`
    : '';
  const fires = `${names.map((o) => o.name).join(', ')}: the original decides the same way (${how}) on nearly every element of the held-back inputs, so agreement and IoU only show whether the compressed model starts firing${moved}; give inputs on which the model fires (images with text for a text detector, with faces for a face detector), or judge only the outputs that matter with --judge-output`;
  return still ? `${still}; ${fires}` : fires;
}

/** One line for reports: `fidelity 0.9984 ≥ 0.9 (worst output: y; 4 held-back synthetic samples)`. */
export function describeQuality(q: QualityRecord): string {
  if (!q.checked) return `quality not checked: ${q.reason}`;
  const rel = q.passed ? '≥' : '<';
  const judged = q.judged ? `; judged on ${q.judged.join(', ')} only` : '';
  return `fidelity ${q.fidelity!.toFixed(4)} ${rel} ${q.minFidelity} (worst output: ${q.worst}; ${samplesWording(q)}${judged})`;
}

/** What a gate record was measured on: "16 held-back synthetic samples", or the one sample the probes used too. */
export function samplesWording(q: QualityRecord): string {
  const kind = q.synthetic ? ' synthetic' : '';
  return q.shared
    ? `${q.samples}${kind} sample, the probes' too (not held back)`
    : `${q.samples} held-back${kind} sample${q.samples === 1 ? '' : 's'}`;
}

/** What the untaken-branch line says of the branches' coded tensors (none: the branches hold no weight). */
export function untakenWording(tensors: number, keepsDefault = true): string {
  if (!tensors) return 'no weight of their own';
  if (!keepsDefault)
    return `their ${tensors} tensor${tensors > 1 ? 's are' : ' is'} on the grid asked for, and the gate cannot judge ${tensors > 1 ? 'them' : 'it'}`;
  return `their ${tensors} tensor${tensors > 1 ? 's keep' : ' keeps'} the default grid`;
}
