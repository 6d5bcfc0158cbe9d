/**
 * Fidelity of a candidate model (a decompressed archive) to the original: both run on the same held-back
 * calibration samples, every output compared (docs/calibration.md#fidelity).
 *
 * Per output (all samples together; a sequence's outputs stacked over its windows):
 *   cosine     Σab / √(Σa² Σb²) of the original's values a and the candidate's b (1 when both are all zero)
 *   relRms     √(Σ(a − b)² / Σ(a − ā)²), the error relative to the output's spread about its mean ā over all its
 *              values (0 when equal; ∞ when a = 0 ≠ b). Not relative to its RMS: an output with an offset (a year,
 *              2000 ± 10; log-probabilities far below 0) read 0.997 while it was off by 96 % of its spread, no
 *              better than predicting the mean. An output whose spread is under 10⁻³ of its RMS (a constant, a
 *              scalar on one sample) is measured against its RMS instead.
 *   maxAbs     max |a − b|
 *   agreement  for outputs that look like decisions: the share of decisions that stay the same
 *   iou        for binary outputs: intersection over union of the rarer decision
 *
 * What looks like a decision (decided on the original's values over all samples):
 *   classes   the last axis has C ≥ 2 entries and either the output is [N, C] (a classifier's logits or
 *             probabilities; not rows of unit length, which are embeddings: their largest component is no
 *             decision) or every row along the last axis is a probability distribution (all ≥ 0, sum 1 ±
 *             1e-3: softmax) or log-probabilities (all ≤ 0, logsumexp 0 ± 1e-3), or the output is [N, T, C]
 *             named as logits (a language model's, a CTC or RNN-T output before its softmax, DETR's per-query
 *             class logits). The decision is the argmax of each row: per example for [N, C], per time step for a
 *             CTC output [N, T, C] (PaddleOCR rec), per position for any [..., C].
 *   classes of a map  an output [N, C, H, W] or [N, C, D, H, W] (2 ≤ C ≤ 1024) whose pixels' C values are a
 *             probability distribution in the original, or named as a segmentation's scores (logits, seg,
 *             semantic, parsing): each pixel's argmax over C; scored as min(pixel agreement, foreground IoU).
 *   binary    every value lies in [0, 1] and the output is not `classes` (a sigmoid: Silero's speech
 *             probability, ISNet's mask): the decision is p > 0.5 per element, and the IoU is taken over the
 *             rarer decision (the foreground of a mask, the speech frames of a VAD).
 *   labels    an output of integers or booleans (an argmax inside the graph, class ids, a yes/no): every
 *             element is a decision, the same only when equal (a class index moved by one is as wrong as one
 *             moved by ten, so its RMS error says nothing).
 *   values    anything else (features, spectrograms, regressions, state).
 *
 * The fidelity number (the floor `--min-fidelity` compares with) is the worst score over the outputs,
 * recurrent-state outputs excepted (their error shows in the next window's outputs, which are compared):
 *
 *   classes:  score = agreement
 *   binary:   score = min(agreement, iou)
 *   labels:   score = agreement; a yes/no label (every value 0 or 1): min(agreement, iou), as binary
 *   values:   score = max(0, 1 − relRms)
 *
 * A detector's class scores packed after its boxes in one output (YOLOv8's [1, 4 + classes, anchors], YOLOv5's
 * [1, anchors, 5 + classes]) are judged as decisions too: where a rank-3 output has a channel axis whose last channels
 * (two or more) lie in [0, 1] on every sample and an earlier one does not (box coordinates in pixels), with at least
 * twice as many anchors as channels, the anchors where either model has a clear confident winner among those
 * channels (top score ≥ 0.25, the detectors' usual confidence threshold, ahead of the second by ≥ 0.1) are
 * compared: the same class, still ≥ 0.25 in both. With MIN_DECISIONS or more such anchors the output's score is the
 * lower of its own and that agreement (`scores`). Judged as values only, the boxes set the spread and the classes
 * went unseen: a 3-bit YOLOv8 passed at 0.932 with 29 % of its detections keeping their class. Scores that barely
 * vary (random weights: every class near 0.5) have no clear winner, and the output is judged as before.
 *
 * Keypoint heatmaps (an output [N, K, H, W] named as heatmaps) are judged by their values and by their clear peaks
 * (`addKeypoints`): the lower of the two where there are MIN_DECISIONS such peaks or more.
 *
 * (classes and binary outputs with fewer than MIN_DECISIONS decisions are scored as values and by their
 * agreement with one changed decision forgiven, whichever is lower: a single changed near-tie among a handful of
 * decisions is noise, not a measurement (random inputs give a classifier many near-ties), but a CNN judged on 16
 * held-back samples by its values alone passed at 13 of 16 decisions kept (86 % on other inputs); labels with
 * fewer have no values to fall back on, and set the number only where no other output is judged)
 *
 * and 0 for a candidate that gives NaN or ±Inf where the original has numbers (the same NaN or infinity where the
 * original has it is no change: a model that passes them through, with `--non-finite keep`). Why: where an output is a
 * decision, changed decisions are what a user sees; they are measured directly, and they can stay put while
 * probabilities move (PaddleOCR's default archive moves its softmax by 27 % RMS and reads the same text). A
 * mostly-background mask would hide a damaged foreground behind a 99 % agreement: hence the IoU. Elsewhere
 * 1 − relRms is linear in the output error and reads the same on every model (0.95 = off by 5 % of the
 * output's RMS), where cosine saturates (≈ 1 − relRms²/2: a 10 % error still reads 0.995). The minimum over
 * outputs means no output may be wrecked for the others' sake. Measured on every model at hand in
 * docs/calibration.md (bench/fidelity.ts).
 */

import { CalibrationRunner, type RunnerOptions, type SampleOutputs } from '../calibration/runner.js';
import { valueAt, type Feed, type CalibrationTensor } from '../calibration/tensor.js';
import { blockIndex, fitsBlock, scoreBlockOf, type ScoreBlock } from './detector.js';
import { alignDetections, MATCH_IOU, type MatchedSet } from './detections.js';
import type { CalibrationSample } from '../calibration/types.js';
import { elementCount } from '../formats/model.js';

export type OutputKind = 'classes' | 'binary' | 'labels' | 'values';

export interface OutputFidelity {
  name: string;
  kind: OutputKind;
  /** Values compared (all samples). */
  elements: number;
  cosine: number;
  relRms: number;
  maxAbs: number;
  /** classes/binary/labels: share of decisions (rows, or elements for binary and labels) that agree. */
  agreement?: number;
  /** binary: intersection over union of the rarer decision (p > 0.5 or p ≤ 0.5, whichever the original gives less). */
  iou?: number;
  /** Decisions compared. */
  decisions?: number;
  /**
   * Fewer than MIN_DECISIONS decisions: scored as values (1 − relRms) and by the agreement with one changed
   * decision forgiven, the lower of the two (labels: see the module comment).
   */
  fewDecisions?: boolean;
  /**
   * binary: the original makes the rarer decision on fewer than MIN_DECISIONS elements (a text detector on
   * photos without text: p ≤ 0.5 everywhere). Agreement and IoU then only see whether the candidate starts
   * firing, not how far its values moved: the score is weak evidence, and reports say so.
   */
  oneSided?: boolean;
  /** The candidate gives another number of values than the original (a shape changed): scored 0. */
  mismatch?: string;
  /**
   * The original gives one value everywhere on the held-back inputs (a pair model fed the same picture twice: its
   * flow all 0): the comparison only sees whether the candidate departs from it. Reports say so.
   */
  constant?: boolean;
  /** Rows of a [N] or [N, k] output whose row count moved that only one of the two gave, of all rows (`rowsMoved`). */
  countMoved?: { rows: number; missed: number };
  /**
   * A detector's detections after NMS (eval/detections.ts), matched as sets by class and box overlap: the output whose
   * boxes matched them, the detections that are decisions (all samples) and those only one model gave.
   */
  detections?: { boxes: string; decisions: number; missed: number; fewDecisions?: boolean };
  /** A recurrent-state output: reported, not part of the fidelity number. */
  state: boolean;
  /** A detector's class scores inside this output, judged as decisions (see the module comment). */
  scores?: ScoreDecisions;
  /** Keypoint heatmaps: where their peaks are clear, whether they stay in place (see the module comment). */
  keypoints?: KeypointDecisions;
  /** This output's score (see the module comment). */
  score: number;
}

/** The peaks of keypoint heatmaps [N, K, H, W] and how they compare. */
export interface KeypointDecisions {
  /** Heatmaps whose peak in the original is clear (KEYPOINT_PEAK standard deviations above its mean). */
  decisions: number;
  /** Of those, the share whose peak in the candidate lies within `tolerance` pixels (each axis) of the original's. */
  agreement: number;
  tolerance: number;
  /** Fewer than MIN_DECISIONS: reported, not part of the score. */
  fewDecisions?: boolean;
}

/** The class-score channels of a detector's output and how their confident decisions compare. */
export interface ScoreDecisions {
  /** Which channels: "4–83 of axis 1". */
  channels: string;
  /** Anchors where either model has a clear confident winner. */
  decisions: number;
  /** Of those, the share where both have the same class at ≥ 0.25. */
  agreement: number;
  /** Fewer than MIN_DECISIONS: reported, not part of the score. */
  fewDecisions?: boolean;
}

export interface FidelityReport {
  /** The worst score over the non-state outputs (1 = identical). */
  fidelity: number;
  /** The output that sets it. */
  worst: string;
  outputs: OutputFidelity[];
  /** Samples compared. */
  samples: number;
}

/**
 * Decisions below which an output's agreement is not counted: with 4 decisions one changed near-tie costs 0.25,
 * which says nothing about the model. Such an output is scored as values (1 − relRms) and by its agreement with one
 * changed decision forgiven, whichever is lower, and marked `fewDecisions`.
 */
export const MIN_DECISIONS = 20;

/** A detection's confidence threshold (YOLO's default), and how far a winning class must lead the second. */
const SCORE_CONFIDENCE = 0.25;
const SCORE_MARGIN = 0.1;
/** How far under the threshold a kept detection's score may read: crossing 0.25 by a hair is no changed decision. */
const SCORE_SLACK = 0.05;

/** Top score, its channel and the runner-up along one anchor of a score block. */
function topScores(x: ArrayLike<number>, block: ScoreBlock, b: number, n: number): { top: number; second: number; at: number } {
  let top = -Infinity;
  let second = -Infinity;
  let at = -1;
  for (let k = block.from; k < block.channels; k++) {
    const v = x[blockIndex(block, b, k, n)];
    if (v > top) {
      second = top;
      top = v;
      at = k;
    } else if (v > second) second = v;
  }
  return { top, second, at };
}

/** The least spread, relative to its RMS, an output's error is measured against (below it: against the RMS). */
const SPREAD_FLOOR = 1e-3;

/** Tolerance of "sums to 1" / "logsumexp is 0" for probability rows, and of unit length for embedding rows. */
const ROW_TOLERANCE = 1e-3;

interface Sums {
  n: number;
  aa: number;
  /** Σa: the original's mean, for its spread */
  sa: number;
  /** elements where both are finite (what the sums and the binary decisions count) */
  finite: number;
  bb: number;
  ab: number;
  dd: number;
  maxAbs: number;
  nonFinite: boolean;
  /** the candidate's output had another size (see OutputFidelity.mismatch) */
  mismatch?: string;
  /** rows of the last axis, for the classes kind */
  lastDim: number;
  rank: number;
  rows: number;
  argmaxAgree: number;
  probRows: boolean;
  logProbRows: boolean;
  /** every row along the last axis of L2 norm 1 (± 1e-3): an embedding */
  unitRows: boolean;
  unit: boolean;
  binaryAgree: number;
  /** integer or boolean elements, and how many are equal */
  labels: boolean;
  equal: number;
  /** p > 0.5 in the original, in the candidate, in both */
  posA: number;
  posB: number;
  posAB: number;
  /** a detector's class scores in this output (found on the first sample; dropped when a later one breaks it) */
  scoreBlock?: ScoreBlock;
  scoreBroken?: boolean;
  scoreDecisions: number;
  scoreAgree: number;
  /** Rows of a [N] or [N, k] output (`rowsMoved`): in every sample (the longer side's where they differ), and given
   * by one side only. */
  countRows: number;
  countMissed: number;
  /** the rows are detections matched as sets by this boxes output (countRows: decisions, countMissed: one side only) */
  matchedBy?: string;
  /** every value of the original is 0 or 1 (a yes/no label) */
  zeroOne: boolean;
  /**
   * A map of class scores along axis 1 ([N, C, H, W] or [N, C, D, H, W], 2 ≤ C ≤ MAX_MAP_CLASSES; -1 where not, or
   * where samples disagree): its pixels' argmax over C in both models, how many the same, and whether every pixel's
   * scores in the original are a probability distribution (a softmax over the classes).
   */
  mapClasses: number;
  mapPixels: number;
  mapAgree: number;
  mapProb: boolean;
  /** pixels of class i in the original and j in the candidate at i·C + j (C ≤ MAP_CONFUSION_CLASSES) */
  mapConfusion?: Float64Array;
  /** keypoint heatmaps (an output named as heatmaps, [N, K, H, W]): clear peaks, and those that stay in place */
  heatmaps: boolean;
  keypointDecisions: number;
  keypointAgree: number;
  keypointTolerance?: number;
  /** the original's least and largest finite value */
  minA: number;
  maxA: number;
  isBool: boolean;
}

/** Accumulates output comparisons over samples, one output at a time, without keeping the values. */
export class FidelityAccumulator {
  private readonly sums = new Map<string, Sums>();
  private readonly stateOutputs = new Set<string>();
  private samples = 0;

  /** `detectors`: outputs that may pack a detector's class scores after its boxes (calibration/decisions.ts). */
  constructor(private readonly detectors: ReadonlySet<string> = new Set()) {}

  /** Compares one sample's outputs. `state` names recurrent-state outputs. */
  add(reference: Feed, candidate: Feed, state: Iterable<string> = []): void {
    for (const s of state) this.stateOutputs.add(s);
    for (const name of Object.keys(reference)) if (!candidate[name]) throw new Error(`candidate gives no output ${name}`);
    // a detector's detections after NMS: their rows matched as sets, not in order (eval/detections.ts)
    const aligned = alignDetections(reference, candidate);
    const sets = new Map<string, MatchedSet>();
    for (const set of aligned.sets) for (const o of set.outputs) sets.set(o, set);
    for (const [name, a] of Object.entries(aligned.reference)) this.addOutput(name, a, aligned.candidate[name], sets.get(name));
    this.samples++;
  }

  private addOutput(name: string, a: CalibrationTensor, b: CalibrationTensor, set?: MatchedSet): void {
    const C = a.dims.length ? a.dims[a.dims.length - 1] : 1;
    let s = this.sums.get(name);
    if (!s) {
      s = {
        n: 0,
        aa: 0,
        sa: 0,
        finite: 0,
        bb: 0,
        ab: 0,
        dd: 0,
        maxAbs: 0,
        nonFinite: false,
        lastDim: C,
        rank: a.dims.length,
        rows: 0,
        argmaxAgree: 0,
        probRows: C >= 2,
        logProbRows: C >= 2,
        unitRows: C >= 2,
        unit: true,
        binaryAgree: 0,
        // ids and booleans; 8- and 16-bit integers (pixels, masks) are values
        labels: ['bool', 'int32', 'int64', 'uint32', 'uint64'].includes(a.type),
        isBool: a.type === 'bool',
        equal: 0,
        posA: 0,
        posB: 0,
        posAB: 0,
        scoreDecisions: 0,
        scoreAgree: 0,
        zeroOne: true,
        countRows: 0,
        countMissed: 0,
        mapClasses: mapClassesOf(a.dims),
        mapPixels: 0,
        mapAgree: 0,
        mapProb: true,
        heatmaps: a.dims.length === 4 && HEATMAP_NAME.test(name) && a.dims[2] > 1 && a.dims[3] > 1,
        keypointDecisions: 0,
        keypointAgree: 0,
        minA: Infinity,
        maxA: -Infinity,
      };
      this.sums.set(name, s);
    }
    if (set) {
      // rows matched as detections: those both give, in the original's order (the same shape); the detections only
      // one gives are changed decisions
      s.matchedBy ??= set.boxes;
      s.countRows += set.decisions;
      s.countMissed += set.missed;
    } else if (a.data.length !== b.data.length || a.dims.join() !== b.dims.join()) {
      // a count moved along one axis (a detector with NMS in its graph: 6 detections for 7): the rows both give are
      // compared, and the rows only one gives count as changed (`countRows`); a detector was refused at every
      // budget where one detection near its threshold came or went (a new-user sweep)
      if (!rowsMoved(a.dims, b.dims) || s.mismatch !== undefined) {
        // a shape moved otherwise (a size computed from a changed value): nothing to compare element by element
        s.mismatch ??= `the original gives [${a.dims.join(', ')}], the candidate [${b.dims.join(', ')}]`;
        return;
      }
      const m = Math.min(a.dims[0], b.dims[0]);
      s.countRows += Math.max(a.dims[0], b.dims[0]);
      s.countMissed += Math.abs(a.dims[0] - b.dims[0]);
      if (m === 0) return;
      a = firstRows(a, m);
      b = firstRows(b, m);
    } else if (a.dims.length === 1 || a.dims.length === 2) s.countRows += a.dims[0];
    if (s.lastDim !== C) s.lastDim = -1; // shapes differ between samples: no rows
    const n = a.data.length;
    const x = a.type === 'float32' ? (a.data as Float32Array) : Float64Array.from({ length: n }, (_, i) => valueAt(a, i));
    const y = b.type === 'float32' ? (b.data as Float32Array) : Float64Array.from({ length: n }, (_, i) => valueAt(b, i));
    // (a detector's score channels are found on the first sample compared)
    if (s.n === 0 && !s.labels && this.detectors.has(name)) s.scoreBlock = scoreBlockOf(x, a.dims);
    for (let i = 0; i < n; i++) {
      const p = x[i];
      const q = y[i];
      if (!Number.isFinite(p) || !Number.isFinite(q)) {
        // (NaN where the original has NaN is no change)
        s.nonFinite ||= !Object.is(p, q);
        continue;
      }
      if (p === q) s.equal++;
      if (p < s.minA) s.minA = p;
      if (p > s.maxA) s.maxA = p;
      const d = p - q;
      s.aa += p * p;
      s.sa += p;
      s.finite++;
      s.bb += q * q;
      s.ab += p * q;
      s.dd += d * d;
      if (Math.abs(d) > s.maxAbs) s.maxAbs = Math.abs(d);
      if (p < 0 || p > 1) s.unit = false;
      if (p !== 0 && p !== 1) s.zeroOne = false;
      if (p > 0.5 === q > 0.5) s.binaryAgree++;
      if (p > 0.5) s.posA++;
      if (q > 0.5) s.posB++;
      if (p > 0.5 && q > 0.5) s.posAB++;
    }
    s.n += n;
    if (s.scoreBlock && !s.scoreBroken) this.addScores(s, s.scoreBlock, x, y, a.dims);
    if (s.mapClasses !== -1 && mapClassesOf(a.dims) !== s.mapClasses) s.mapClasses = -1;
    if (s.mapClasses !== -1 && !s.labels) addMapDecisions(s, x, y, a.dims);
    if (s.heatmaps && !s.labels && a.dims.length === 4) addKeypoints(s, x, y, a.dims);
    if (s.lastDim >= 2) {
      const rows = n / C;
      for (let r = 0; r < rows; r++) {
        let ia = 0;
        let ib = 0;
        let sum = 0;
        let max = -Infinity;
        let allPos = true;
        let allNeg = true;
        let sq = 0;
        for (let k = 0; k < C; k++) {
          const p = x[r * C + k];
          if (p > x[r * C + ia]) ia = k;
          if (y[r * C + k] > y[r * C + ib]) ib = k;
          sum += p;
          sq += p * p;
          if (p > max) max = p;
          if (p < -1e-6) allPos = false;
          if (p > 1e-6) allNeg = false;
        }
        if (ia === ib) s.argmaxAgree++;
        if (s.probRows && (!allPos || Math.abs(sum - 1) > ROW_TOLERANCE)) s.probRows = false;
        if (s.unitRows && !(Math.abs(Math.sqrt(sq) - 1) <= ROW_TOLERANCE)) s.unitRows = false;
        if (s.logProbRows) {
          let lse = 0;
          for (let k = 0; k < C; k++) lse += Math.exp(x[r * C + k] - max);
          if (!allNeg || Math.abs(max + Math.log(lse)) > ROW_TOLERANCE) s.logProbRows = false;
        }
      }
      s.rows += rows;
    }
  }

  /** A detector's confident class decisions on one sample (see the module comment). */
  private addScores(s: Sums, first: ScoreBlock, x: ArrayLike<number>, y: ArrayLike<number>, dims: readonly number[]): void {
    // (a sample of another size, a picture of other sides: its block found again, on its own values)
    const block = fitsBlock(first, dims) ? first : scoreBlockOf(x, dims);
    if (!block) {
      s.scoreBroken = true;
      return;
    }
    for (let b = 0; b < dims[0]; b++)
      for (let k = block.from; k < block.channels; k++)
        for (let n = 0; n < block.anchors; n++) {
          const v = x[blockIndex(block, b, k, n)];
          if (!(v >= 0 && v <= 1)) {
            s.scoreBroken = true;
            return;
          }
        }
    const clear = (t: { top: number; second: number }): boolean => t.top >= SCORE_CONFIDENCE && t.top - t.second >= SCORE_MARGIN;
    for (let b = 0; b < dims[0]; b++)
      for (let n = 0; n < block.anchors; n++) {
        const p = topScores(x, block, b, n);
        const q = topScores(y, block, b, n);
        if (!clear(p) && !clear(q)) continue;
        s.scoreDecisions++;
        // the same class, both at the threshold give or take SCORE_SLACK (a score of 0.26 read as 0.24 is noise)
        if (p.at === q.at && Math.min(p.top, q.top) >= SCORE_CONFIDENCE - SCORE_SLACK) s.scoreAgree++;
      }
  }

  result(): FidelityReport {
    const outputs: OutputFidelity[] = [];
    for (const [name, s] of this.sums) {
      const broken = s.nonFinite || s.mismatch !== undefined;
      // the error against the output's spread about its mean (see the module comment); an output without a spread
      // of its own (a constant, a scalar on one sample) against its RMS, as before
      const centred = s.aa - (s.finite ? (s.sa * s.sa) / s.finite : 0);
      const spread = centred >= SPREAD_FLOOR ** 2 * s.aa ? centred : s.aa;
      const relRms = broken ? Infinity : s.aa > 0 ? Math.sqrt(s.dd / spread) : s.dd > 0 ? Infinity : 0;
      const cosine = broken ? 0 : s.aa > 0 && s.bb > 0 ? s.ab / Math.sqrt(s.aa * s.bb) : s.aa === 0 && s.bb === 0 ? 1 : 0;
      // (rows of coordinates, a detector's [N, 4] boxes or keypoints, are not class scores: the argmax of a box is
      // its largest coordinate, and boxes 1.65× too large kept it)
      // (a quantity's name never hides probability rows, nor a name that says logits, probabilities, classes or scores:
      // a two-stream action model's `rgb_probs` and `flow_logits` are classes)
      const quantity = COORDINATES.test(name) && !DECISION_NAME.test(name);
      // (a sequence's logits [N, T, C] named as such — a language model's next-token logits, a CTC or RNN-T output before
      // its softmax — are decided per position: judged as values, an RNN-T at 4.48 bits/weight passed at 0.924 keeping
      // 70 % of its per-frame top-1)
      const sequenceLogits = s.rank === 3 && LOGITS_NAME.test(name) && !quantity;
      // (a map of class scores along axis 1, a segmentation's [N, C, H, W]: softmax probabilities, or logits named as
      // such — `logits`, `seg…`, `semantic`, `parsing` —, decided per pixel by the argmax over C)
      const map = s.mapClasses >= 2 && s.mapPixels > 0 && !quantity && (s.mapProb || SEGMENTATION_NAME.test(name));
      const classes =
        map ||
        (s.lastDim >= 2 && (((s.rank === 2 || sequenceLogits) && !s.unitRows && !quantity) || s.probRows || s.logProbRows));
      // (rows of unit length are embeddings, even where all their values lie in [0, 1])
      const embedding = s.lastDim >= 2 && s.unitRows && !s.probRows;
      const kind: OutputKind = s.labels ? 'labels' : classes ? 'classes' : s.unit && s.n > 0 && !embedding ? 'binary' : 'values';
      const decisions =
        kind === 'classes' ? (map ? s.mapPixels : s.rows) : kind === 'binary' ? s.finite : kind === 'labels' ? s.n : undefined;
      const agreement =
        kind === 'classes'
          ? map
            ? s.mapAgree / s.mapPixels
            : s.argmaxAgree / s.rows
          : kind === 'binary'
            ? s.finite
              ? s.binaryAgree / s.finite
              : 1
            : kind === 'labels'
              ? s.n
                ? s.equal / s.n
                : 1
              : undefined;
      let iou: number | undefined;
      let oneSided = false;
      // a yes/no label is a binary decision already made: booleans, or integers all 0 or 1 where both answers come up
      // often enough to say so (class ids that happened to be all 0, or one class of two, on the inputs are no yes/no)
      const yesNo =
        kind === 'labels' && s.zeroOne && s.finite > 0 && (s.isBool || Math.min(s.posA, s.finite - s.posA) >= MIN_DECISIONS);
      if (map && s.mapConfusion) {
        // a class map: its foreground's IoU, unless the foreground is too small to measure
        const fg = foregroundIou(s.mapConfusion, s.mapClasses);
        iou = fg.iou;
        oneSided = fg.pixels < MIN_DECISIONS;
      }
      if (kind === 'binary' || yesNo) {
        // the rarer decision's intersection over union (a mask's foreground, a VAD's speech frames, the anomalies)
        const rarePositive = s.posA <= s.finite / 2;
        // (a detection set's scores: its decisions are the detections matched, not p > 0.5)
        oneSided = Math.min(s.posA, s.finite - s.posA) < MIN_DECISIONS && !s.matchedBy;
        const a = rarePositive ? s.posA : s.finite - s.posA;
        const b = rarePositive ? s.posB : s.finite - s.posB;
        const ab = rarePositive ? s.posAB : s.finite - s.posA - s.posB + s.posAB;
        iou = a + b - ab > 0 ? ab / (a + b - ab) : 1;
      }
      const linear = Math.max(0, 1 - relRms);
      // too few decisions to count (one changed near-tie among 4 would read 0.75): judged by the values
      const fewDecisions = decisions !== undefined && decisions < MIN_DECISIONS;
      // with few decisions the values are judged as well, and one changed decision is forgiven (a near-tie)
      const forgiving =
        fewDecisions && kind !== 'labels' && decisions! > 0 ? Math.min(1, (agreement! * decisions! + 1) / decisions!) : 1;
      const block = s.scoreBlock && !s.scoreBroken && !broken ? s.scoreBlock : undefined;
      const scores: ScoreDecisions | undefined = block && {
        channels: `${block.from}–${block.channels - 1} of axis ${block.axis}`,
        decisions: s.scoreDecisions,
        agreement: s.scoreDecisions ? s.scoreAgree / s.scoreDecisions : 1,
        ...(s.scoreDecisions < MIN_DECISIONS ? { fewDecisions: true } : {}),
      };
      const judged =
        kind === 'labels'
          ? yesNo && !fewDecisions
            ? Math.min(agreement!, iou!)
            : agreement!
          : fewDecisions
            ? Math.min(linear, forgiving)
            : kind === 'values'
              ? linear
              : kind === 'binary' || (map && iou !== undefined && !oneSided)
                ? Math.min(agreement!, iou!)
                : agreement!;
      const keypoints: KeypointDecisions | undefined =
        s.heatmaps && s.keypointDecisions > 0 && !broken
          ? {
              decisions: s.keypointDecisions,
              agreement: s.keypointAgree / s.keypointDecisions,
              tolerance: s.keypointTolerance ?? 1,
              ...(s.keypointDecisions < MIN_DECISIONS ? { fewDecisions: true } : {}),
            }
          : undefined;
      // a detector's confident classes must hold as well as its values, and so must clear keypoints
      const scored = Math.min(
        scores && !scores.fewDecisions ? Math.min(judged, scores.agreement) : judged,
        keypoints && !keypoints.fewDecisions ? keypoints.agreement : 1,
      );
      // rows one model gives and the other does not are changed decisions; among fewer than MIN_DECISIONS detections
      // matched as sets, one is forgiven (a detection at its threshold, as one changed near-tie of few decisions)
      const fewDetections = s.matchedBy !== undefined && s.countRows < MIN_DECISIONS;
      const kept = s.countRows - s.countMissed;
      // (never the only detection: losing it is no near-tie)
      const counted =
        s.countMissed > 0 ? (fewDetections && kept >= 1 ? Math.min(1, (kept + 1) / s.countRows) : kept / s.countRows) : 1;
      const score = Math.min(scored, counted);
      outputs.push({
        name,
        kind,
        elements: s.n,
        cosine,
        relRms,
        maxAbs: broken ? Infinity : s.maxAbs,
        agreement,
        iou,
        decisions,
        ...(fewDecisions ? { fewDecisions } : {}),
        ...(oneSided && !fewDecisions ? { oneSided } : {}),
        ...(s.mismatch ? { mismatch: s.mismatch } : {}),
        ...(s.finite > 1 && s.minA === s.maxA ? { constant: true } : {}),
        ...(keypoints ? { keypoints } : {}),
        ...(s.countMissed > 0 && !s.matchedBy ? { countMoved: { rows: s.countRows, missed: s.countMissed } } : {}),
        ...(s.matchedBy
          ? {
              detections: {
                boxes: s.matchedBy,
                decisions: s.countRows,
                missed: s.countMissed,
                ...(fewDetections ? { fewDecisions: true } : {}),
              },
            }
          : {}),
        state: this.stateOutputs.has(name),
        ...(scores ? { scores } : {}),
        // a candidate that gives NaN or ±Inf where the original has numbers, or another shape, is broken,
        // whatever else agrees
        score: s.nonFinite || s.mismatch || Number.isNaN(score) ? 0 : score,
      });
    }
    const judged = outputs.filter((o) => !o.state);
    // labels of a handful of decisions set the number only where nothing else is judged
    const counted = judged.filter((o) => !(o.kind === 'labels' && o.fewDecisions && !o.mismatch));
    const worst = (counted.length ? counted : judged.length ? judged : outputs).reduce<OutputFidelity | undefined>(
      (w, o) => (!w || o.score < w.score ? o : w),
      undefined,
    );
    return { fidelity: worst?.score ?? 1, worst: worst?.name ?? '', outputs, samples: this.samples };
  }
}

/** Compares one set of outputs (e.g. two vectors as one output each) — for tests and single runs. */
export function compareOutputs(
  reference: Feed,
  candidate: Feed,
  state: Iterable<string> = [],
  detectors: ReadonlySet<string> = new Set(),
): FidelityReport {
  const acc = new FidelityAccumulator(detectors);
  acc.add(reference, candidate, state);
  return acc.result();
}

/**
 * Runs the original and the candidate on the samples (each sample loaded once, both models in step, nothing
 * kept beyond the running sums) and compares their outputs.
 */
export async function measureFidelity(
  original: Uint8Array | string,
  candidate: Uint8Array | string,
  samples: readonly CalibrationSample[],
  options: Pick<RunnerOptions, 'outputs' | 'threads' | 'signal'> & { detectors?: readonly string[] } = {},
): Promise<FidelityReport> {
  const { detectors, ...runner } = options;
  // One model in onnxruntime at a time: the original's outputs on every sample first (they are small beside a
  // large model), then the candidate's. Each sample is loaded again for the candidate (loads regenerate it).
  const a = await CalibrationRunner.open(original, { ...runner, file: 'original model' });
  const want: SampleOutputs[] = [];
  try {
    for (const sample of samples) want.push(await a.run(sample));
  } finally {
    await a.close();
  }
  const b = await CalibrationRunner.open(candidate, { ...runner, file: 'candidate model' });
  try {
    const acc = new FidelityAccumulator(new Set(detectors));
    for (const [i, sample] of samples.entries()) {
      const data = await sample.load();
      const rb = await b.run(sample, { data });
      acc.add(want[i].outputs, rb.outputs, data.kind === 'sequence' ? data.state.map((l) => l.output) : []);
    }
    return acc.result();
  } finally {
    await b.close();
  }
}

/** One line per output and the overall number, for reports. */
export function formatFidelity(r: FidelityReport): string[] {
  const f = (v: number, d = 4): string => (Number.isFinite(v) ? v.toFixed(d) : String(v));
  return [
    `fidelity ${f(r.fidelity)} (worst output: ${r.worst}; ${r.samples} held-back sample${r.samples === 1 ? '' : 's'})`,
    ...r.outputs.map(
      (o) =>
        `  ${o.name}${o.state ? ' (state)' : ''} [${o.kind}]: cosine ${f(o.cosine, 6)}, relative RMS error ${f(o.relRms)}, max |Δ| ${f(o.maxAbs, 6)}${o.agreement !== undefined ? `, agreement ${f(o.agreement)} of ${o.decisions}` : ''}${o.iou !== undefined ? `, IoU ${f(o.iou)}` : ''}${o.scores ? `, classes of confident detections (channels ${o.scores.channels}) ${f(o.scores.agreement)} of ${o.scores.decisions}${o.scores.fewDecisions ? ' (too few to count)' : ''}` : ''}${o.keypoints ? `, clear keypoints within ${o.keypoints.tolerance} px ${f(o.keypoints.agreement)} of ${o.keypoints.decisions}${o.keypoints.fewDecisions ? ' (too few to count)' : ''}` : ''}${o.constant ? ' (constant: the original gives one value here; weak evidence)' : o.oneSided ? ' (one-sided: the original never makes the rarer decision here; weak evidence)' : ''}${o.mismatch ? ` (another shape: ${o.mismatch})` : ''}${o.countMoved ? ` (${o.countMoved.missed} of ${o.countMoved.rows} rows given by one model only: a count that moved)` : ''}${o.detections ? ` (detections matched by class and ${o.detections.boxes} overlap ≥ ${MATCH_IOU}: ${o.detections.missed} of ${o.detections.decisions} given by one model only${o.detections.fewDecisions ? ', one forgiven among so few' : ''})` : ''}`,
    ),
  ];
}

/**
 * Output names of coordinates (boxes, keypoints, landmarks) and other quantities (colour, density, depth, flow,
 * normals, offsets), whose rows are not class scores: a NeRF's `rgb_sigma` [N, 4] judged by its largest component
 * passed at 0.923 where its values were off by 13 % (a new-user sweep).
 */
/** Names that say an output is decisions, whatever else they say. */
const DECISION_NAME = /logit|prob|class|score/i;

/** Classes of a segmentation map along axis 1 at most (a class map of more is read as features). */
const MAX_MAP_CLASSES = 1024;
/** Classes up to which a map's confusion counts are kept (for its foreground IoU). */
const MAP_CONFUSION_CLASSES = 256;

/**
 * The foreground's intersection over union of a class map: the original's most frequent class is the background;
 * the pixels where both models give the same other class, over those where either gives another class. (Pixel
 * agreement alone would hide a damaged small object behind the background, as a mask's agreement would.) Also how
 * many pixels the original gives to the foreground.
 */
function foregroundIou(confusion: Float64Array, C: number): { iou: number; pixels: number } {
  let bg = 0;
  let bgCount = -1;
  let total = 0;
  for (let i = 0; i < C; i++) {
    let row = 0;
    for (let j = 0; j < C; j++) row += confusion[i * C + j];
    total += row;
    if (row > bgCount) [bg, bgCount] = [i, row];
  }
  let same = 0;
  for (let c = 0; c < C; c++) if (c !== bg) same += confusion[c * C + c];
  const union = total - confusion[bg * C + bg];
  return { iou: union > 0 ? same / union : 1, pixels: total - bgCount };
}

/** A segmentation's scores by name: logits, `seg`, `segmentation`, `semantic`, `parsing` (words of the name). */
const SEGMENTATION_NAME = /(^|[^a-z])(logits?|seg|segm|segmentation|semantic|parsing)($|[^a-z])/i;

/** C of an [N, C, H, W] or [N, C, D, H, W] output that could be a map of class scores, or -1. */
function mapClassesOf(dims: readonly number[]): number {
  if (dims.length !== 4 && dims.length !== 5) return -1;
  const c = dims[1];
  return c >= 2 && c <= MAX_MAP_CLASSES && dims.slice(2).every((d) => d > 1) ? c : -1;
}

/** Each pixel's argmax over axis 1 in both models; whether the original's scores there sum to 1 (all ≥ 0). */
function addMapDecisions(s: Sums, x: ArrayLike<number>, y: ArrayLike<number>, dims: readonly number[]): void {
  const C = dims[1];
  if (s.mapPixels === 0 && C <= MAP_CONFUSION_CLASSES) s.mapConfusion = new Float64Array(C * C);
  const pixels = elementCount(dims.slice(2));
  for (let b = 0; b < dims[0]; b++) {
    const base = b * C * pixels;
    for (let p = 0; p < pixels; p++) {
      let ia = 0;
      let ib = 0;
      let sum = 0;
      let positive = true;
      for (let c = 0; c < C; c++) {
        const i = base + c * pixels + p;
        if (x[i] > x[base + ia * pixels + p]) ia = c;
        if (y[i] > y[base + ib * pixels + p]) ib = c;
        sum += x[i];
        if (x[i] < -1e-6) positive = false;
      }
      if (ia === ib) s.mapAgree++;
      if (s.mapConfusion) s.mapConfusion[ia * C + ib]++;
      if (s.mapProb && (!positive || Math.abs(sum - 1) > ROW_TOLERANCE)) s.mapProb = false;
    }
  }
  s.mapPixels += dims[0] * pixels;
}

/** Keypoint heatmaps by name: `heatmaps`, `heatmap`, `hm`, `heat` (words of the name). */
const HEATMAP_NAME = /(^|[^a-z])(heat_?maps?|hms?|heat)($|[^a-z])/i;
/** A heatmap's peak is clear where it stands this many standard deviations above the heatmap's mean. */
const KEYPOINT_PEAK = 6;
/** A clear peak leads every value outside its tolerance window by this share of its height above the mean. */
const KEYPOINT_MARGIN = 0.1;
/** A keypoint stays in place within this share of the heatmap's larger side (at least a pixel): PCK's 0.05. */
const KEYPOINT_TOLERANCE = 0.05;

/**
 * Keypoint heatmaps [N, K, H, W] (a pose model's): each heatmap's peak is a keypoint; where the original's is clear
 * (KEYPOINT_PEAK standard deviations above the heatmap's mean: a trained model's Gaussian blob, not a random field's
 * bump), it is a decision, kept where the candidate's peak lies within the tolerance on each axis. Judged as values
 * alone, a heatmap's RMS error says little about where its peak went.
 */
function addKeypoints(s: Sums, x: ArrayLike<number>, y: ArrayLike<number>, dims: readonly number[]): void {
  const [N, K, H, W] = dims;
  const area = H * W;
  const tolerance = Math.max(1, Math.round(KEYPOINT_TOLERANCE * Math.max(H, W)));
  s.keypointTolerance = tolerance;
  for (let m = 0; m < N * K; m++) {
    const base = m * area;
    let ia = 0;
    let ib = 0;
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < area; i++) {
      const v = x[base + i];
      sum += v;
      sq += v * v;
      if (v > x[base + ia]) ia = i;
      if (y[base + i] > y[base + ib]) ib = i;
    }
    const mean = sum / area;
    const sd = Math.sqrt(Math.max(0, sq / area - mean * mean));
    if (!(sd > 0) || x[base + ia] - mean < KEYPOINT_PEAK * sd) continue;
    const [ra, ca] = [Math.floor(ia / W), ia % W];
    // (a map of several instances — CenterNet's, a bottom-up pose model's — whose second peak is near the first has
    // no one keypoint: two near-equal peaks that trade places are no changed decision)
    let rival = -Infinity;
    for (let i = 0; i < area; i++)
      if (Math.abs(Math.floor(i / W) - ra) > tolerance || Math.abs((i % W) - ca) > tolerance)
        rival = Math.max(rival, x[base + i]);
    if (rival >= x[base + ia] - KEYPOINT_MARGIN * (x[base + ia] - mean)) continue;
    s.keypointDecisions++;
    const [rb, cb] = [Math.floor(ib / W), ib % W];
    if (Math.abs(ra - rb) <= tolerance && Math.abs(ca - cb) <= tolerance) s.keypointAgree++;
  }
}

/** An output named as logits (`logits`, `lm_logits`, `output_logits`, `joint_logits`; not `logitech`). */
const LOGITS_NAME = /(^|[^a-z])logits?($|[^a-z])/i;

const COORDINATES =
  /(^|[_./-])(b?boxe?s?|coords?|coordinates|keypoints?|kpts?|landmarks?|points?|xyxy|xywh|cxcywh|rgba?|colou?rs?|sigma|density|depths?|disparity|flows?|normals?|sdf|offsets?|deltas?)($|[_./\d-])/i;

/**
 * Whether two shapes differ only in a count of rows: the first axis of a [N] or [N, k] output whose other axis agrees
 * (a detector's boxes, scores and classes after its NMS); anything else (a feature map a row or a column larger, a
 * size computed from a changed value) stays another shape.
 */
function rowsMoved(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && (a.length === 1 || (a.length === 2 && a[1] === b[1])) && a[0] !== b[0];
}

/** The first `m` rows of a [N] or [N, k] tensor (a view of its data). */
function firstRows(t: CalibrationTensor, m: number): CalibrationTensor {
  const k = t.dims.length === 2 ? t.dims[1] : 1;
  return { type: t.type, dims: t.dims.length === 2 ? [m, k] : [m], data: t.data.subarray(0, m * k) as typeof t.data };
}
