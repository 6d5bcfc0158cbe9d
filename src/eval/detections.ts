/**
 * A detector's detections after non-maximum suppression, matched as sets (eval/fidelity.ts).
 *
 * Such a detector gives its detections as rows in score order: boxes [N, 4] beside scores [N] and classes [N]
 * (torchvision-style exports, a graph with NonMaxSuppression and Gather), or one row per detection
 * [N, 6] / [1, N, 6] = x1, y1, x2, y2, score, class (YOLOv10, ultralytics' end-to-end exports; [N, 7] with a batch
 * index first; [N, 5] "dets" without the class, mmdeploy). One detection that comes or goes, or two of near-equal
 * scores that swap, shifts every row after it, and rows compared in order disagree where the detections do not:
 * a detector was refused at every budget (a new-user sweep). Here each of the original's detections, highest score
 * first, is matched with the candidate's detection of the same class whose box overlaps it most (IoU ≥ 0.5, as
 * detection benchmarks count a hit); the matched rows of every output of the set are compared, in the original's
 * order, and a detection only one model gives (or gives at the threshold) is a changed decision. Where scores are
 * probabilities, detections under SCORE_CONFIDENCE in both models are not decisions (a top-k head's tail of near-zero
 * scores, YOLOv10's 300 rows: they come and go with any change).
 */

import { valueAt, type CalibrationTensor, type Feed, type TensorData } from '../calibration/tensor.js';

/** Output names of boxes (not keypoints or landmarks: a row of those is no detection of its own). */
const BOXES = /(^|[_./-])(b?boxe?s?|bbox(es)?|xyxy|xywh|cxcywh|rois?)[_.\d]*$/i;
/** Names of a detection set's per-row outputs: scores, classes, masks, keypoints, indices. */
const SCORE_NAME = /score|conf|prob/i;
const CLASS_NAME = /label|class|cls|categor/i;
/** Rows packed as x1, y1, x2, y2, score[, class]: a [N, 5] output needs this name ("dets"). */
const DETS_NAME = /det/i;
/** Outputs of indices beside the detections (NMS's selected boxes): no class. */
const INDEX_NAME = /ind(ex|ices)|selected|keep/i;

/**
 * The most rows a detection set has: NMS keeps a few hundred (torchvision 100, YOLOv10 300); thousands of rows are a
 * head's anchors before NMS (SSD's [1, 3000, 4], YOLO's 8400), in a fixed order, compared row by row (and matching
 * them, N × M overlaps a sample, would slow every probe run).
 */
export const MAX_DETECTIONS = 1000;

/** The overlap at which two boxes are one detection (COCO's and VOC's hit). */
export const MATCH_IOU = 0.5;
/** A detection's confidence threshold (YOLO's default): detections under it in both models are no decision. */
export const SCORE_CONFIDENCE = 0.25;
/** How far under the threshold a kept detection's score may read. */
const SCORE_SLACK = 0.05;

/** How the rows of one output are laid out: along `axis` (0 of [N, …], 1 of [1, N, …]), `count` of them. */
interface Rows {
  axis: 0 | 1;
  count: number;
  /** values per row */
  width: number;
}

function rowsOf(t: CalibrationTensor, axis: 0 | 1): Rows | undefined {
  if (axis === 1 && (t.dims.length < 2 || t.dims[0] !== 1)) return undefined;
  if (t.dims.length <= axis) return undefined;
  const count = t.dims[axis];
  const width = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  return { axis, count, width };
}

/** Where a row's box, score and class are found, in the original's and the candidate's outputs. */
interface Source {
  /** the output holding the boxes */
  boxes: string;
  /** offset of x1 in its rows (0, or 1 after a batch index) */
  at: number;
  /** the score: a column of the boxes' output, or another output of one value per row */
  score?: { output: string; column: number };
  cls?: { output: string; column: number };
  axis: 0 | 1;
  /** cx, cy, w, h rather than two corners */
  centre: boolean;
}

const isFloat = (t: CalibrationTensor): boolean => t.type.startsWith('float');
const isInteger = (v: number): boolean => Number.isInteger(v);

/** The columns of a packed [N, 5–7] row: which hold the box, the score and the class (on the original's values). */
function packedSource(name: string, t: CalibrationTensor, axis: 0 | 1): Source | undefined {
  const rows = rowsOf(t, axis);
  if (!rows || t.dims.length !== axis + 2 || !isFloat(t) || rows.count < 1) return undefined;
  const w = rows.width;
  // (five columns, or a single row, only under a name that says so: a [1, 6] output of six values is no detection)
  if (w < 5 || w > 7 || ((w === 5 || rows.count < 2) && !DETS_NAME.test(name))) return undefined;
  const col = (c: number): number[] => Array.from({ length: rows.count }, (_, r) => valueAt(t, r * w + c));
  // a batch index first where there are 7 columns (integers); the box next
  const at = w === 7 ? 1 : 0;
  if (at === 1 && !col(0).every((v) => isInteger(v) && v >= 0)) return undefined;
  const rest = Array.from({ length: w - at - 4 }, (_, k) => at + 4 + k);
  const unit = rest.filter((c) => col(c).every((v) => v >= 0 && v <= 1) && !col(c).every(isInteger));
  const ints = rest.filter((c) => col(c).every((v) => isInteger(v) && v >= 0));
  const score = unit.length === 1 ? unit[0] : undefined;
  const cls = ints.find((c) => c !== score);
  if (score === undefined || (w - at - 4 === 2 && cls === undefined)) return undefined;
  // corners: x2 ≥ x1 and y2 ≥ y1 on every scored row
  const s = col(score);
  for (let r = 0; r < rows.count; r++) {
    if (!(s[r] > 0)) continue;
    const v = (k: number): number => valueAt(t, r * w + at + k);
    if (!(v(2) >= v(0) && v(3) >= v(1))) return undefined;
  }
  return {
    boxes: name,
    at,
    score: { output: name, column: score },
    ...(cls !== undefined ? { cls: { output: name, column: cls } } : {}),
    axis,
    centre: false,
  };
}

/** A boxes output [N, 4] / [1, N, 4] and the scores and classes beside it (one value per row, by name or type). */
function boxesSource(
  name: string,
  t: CalibrationTensor,
  axis: 0 | 1,
  peers: string[],
  reference: Feed,
  candidate: Feed,
): Source | undefined {
  const rows = rowsOf(t, axis);
  if (!rows || rows.width !== 4 || t.dims.length !== axis + 2 || !isFloat(t) || !BOXES.test(name)) return undefined;
  const single = peers.filter((p) => rowsOf(reference[p], axis)?.width === 1);
  const score =
    single.find((p) => isFloat(reference[p]) && SCORE_NAME.test(p)) ??
    single.find((p) => isFloat(reference[p]) && !CLASS_NAME.test(p));
  const { cls } = classPeer(
    single.filter((p) => p !== score),
    reference,
    axis,
  );
  // boxes with no score of one value a row and a count that stayed are a head's anchors (UltraFace's boxes beside
  // scores [1, N, 2]), compared row by row
  if (!score && rows.count === rowsOf(candidate[name], axis)?.count) return undefined;
  let corners = true;
  for (let r = 0; r < rows.count && corners; r++)
    corners = valueAt(t, r * 4 + 2) >= valueAt(t, r * 4) && valueAt(t, r * 4 + 3) >= valueAt(t, r * 4 + 1);
  return {
    boxes: name,
    at: 0,
    ...(score ? { score: { output: score, column: 0 } } : {}),
    ...(cls ? { cls } : {}),
    axis,
    centre: /xywh/i.test(name) || !corners,
  };
}

/** The classes beside boxes: an output of one value per row named as classes, or else one of integers. */
function classPeer(peers: readonly string[], reference: Feed, axis: 0 | 1): Pick<Source, 'cls'> {
  const single = peers.filter((p) => rowsOf(reference[p], axis)?.width === 1);
  const cls = single.find((p) => CLASS_NAME.test(p)) ?? single.find((p) => !isFloat(reference[p]) && !INDEX_NAME.test(p));
  return cls ? { cls: { output: cls, column: 0 } } : {};
}

/** One detection set of a sample, matched: which rows of each model are the same detections, and how many are not. */
export interface MatchedSet {
  /** the output whose boxes matched the rows */
  boxes: string;
  /** every output whose rows are the detections (the boxes' own included) */
  outputs: string[];
  /** rows of the original and the candidate that are one detection, in the original's order */
  pairs: Array<[number, number]>;
  /** detections that are decisions (see the module comment): matched, and given by one model only */
  decisions: number;
  missed: number;
  /** the original's rows that are decisions the candidate lacks */
  lost: Uint8Array;
}

/** The outputs whose rows are the detections of `boxes`: the same count along the same axis in both models. */
function peersOf(boxes: string, axis: 0 | 1, reference: Feed, candidate: Feed): string[] {
  const n = rowsOf(reference[boxes], axis)!.count;
  const m = rowsOf(candidate[boxes], axis)?.count;
  const out: string[] = [];
  for (const [name, t] of Object.entries(reference)) {
    const c = candidate[name];
    if (name === boxes || !c || c.dims.length !== t.dims.length) continue;
    const a = rowsOf(t, axis);
    const b = rowsOf(c, axis);
    if (!a || !b || a.count !== n || b.count !== m || a.width !== b.width) continue;
    if (t.dims.slice(axis + 1).join() !== c.dims.slice(axis + 1).join()) continue;
    // rows that moved with the boxes are theirs; where the count stayed, a name says so (a [1, 1000] classifier beside
    // one detection is no peer)
    if (
      n !== m ||
      SCORE_NAME.test(name) ||
      CLASS_NAME.test(name) ||
      /mask|kpt|keypoint|landmark|ind(ex|ices)|selected/i.test(name)
    )
      out.push(name);
  }
  return out;
}

/** The detection sets of one sample (outputs of both models by name). */
export function detectionSources(reference: Feed, candidate: Feed): Array<Source & { outputs: string[] }> {
  const sources: Array<Source & { outputs: string[] }> = [];
  const taken = new Set<string>();
  for (const [name, t] of Object.entries(reference)) {
    const c = candidate[name];
    if (!c || taken.has(name) || c.dims.length !== t.dims.length) continue;
    for (const axis of [0, 1] as const) {
      const a = rowsOf(t, axis);
      const b = rowsOf(c, axis);
      if (!a || !b || a.width !== b.width || (axis === 1 && t.dims.length !== 3)) continue;
      if (a.count > MAX_DETECTIONS || b.count > MAX_DETECTIONS) continue;
      const peers = peersOf(name, axis, reference, candidate).filter((p) => !taken.has(p));
      // (an original without rows has no columns to tell: the candidate's tell them)
      const packed = packedSource(name, t, axis) ?? (a.count === 0 ? packedSource(name, c, axis) : undefined);
      const source =
        packed && !packed.cls
          ? { ...packed, ...classPeer(peers, reference, axis) }
          : (packed ?? boxesSource(name, t, axis, peers, reference, candidate));
      if (!source) continue;
      const outputs = [name, ...peers];
      for (const o of outputs) taken.add(o);
      sources.push({ ...source, outputs });
      break;
    }
  }
  return sources;
}

/** A row's box as two corners. */
function corners(t: CalibrationTensor, width: number, at: number, r: number, centre: boolean): [number, number, number, number] {
  const v = (k: number): number => valueAt(t, r * width + at + k);
  if (!centre) return [Math.min(v(0), v(2)), Math.min(v(1), v(3)), Math.max(v(0), v(2)), Math.max(v(1), v(3))];
  const w = Math.abs(v(2)) / 2;
  const h = Math.abs(v(3)) / 2;
  return [v(0) - w, v(1) - h, v(0) + w, v(1) + h];
}

/** Intersection over union of two boxes given as corners (two equal boxes of no area: 1). */
export function boxIou(a: readonly number[], b: readonly number[]): number {
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  if (union > 0) return inter / union;
  return a.every((v, k) => v === b[k]) ? 1 : 0;
}

/** Matches the detections of one source (see the module comment). */
export function matchDetections(source: Source & { outputs: string[] }, reference: Feed, candidate: Feed): MatchedSet {
  const ra = rowsOf(reference[source.boxes], source.axis)!;
  const rb = rowsOf(candidate[source.boxes], source.axis)!;
  const column = (feed: Feed, f: { output: string; column: number } | undefined, count: number): Float64Array | undefined => {
    if (!f) return undefined;
    const t = feed[f.output];
    const w = rowsOf(t, source.axis)!.width;
    return Float64Array.from({ length: count }, (_, r) => valueAt(t, r * w + f.column));
  };
  const sa = column(reference, source.score, ra.count);
  const sb = column(candidate, source.score, rb.count);
  const ca = column(reference, source.cls, ra.count);
  const cb = column(candidate, source.cls, rb.count);
  const boxesA = Array.from({ length: ra.count }, (_, r) =>
    corners(reference[source.boxes], ra.width, source.at, r, source.centre),
  );
  const boxesB = Array.from({ length: rb.count }, (_, r) =>
    corners(candidate[source.boxes], rb.width, source.at, r, source.centre),
  );
  // scores that are probabilities set which detections are decisions; any other score (a logit), every detection
  // (decided on the original's: a candidate score of 1.0000001 made every tail row a decision)
  const probabilities = !!sa && !!sb && sa.every((v) => v >= 0 && v <= 1) && (sa.length > 0 || sb.every((v) => v >= 0 && v <= 1));
  const decides = (s: Float64Array | undefined, r: number): boolean => !probabilities || s![r] >= SCORE_CONFIDENCE;
  const order = Array.from({ length: ra.count }, (_, r) => r);
  if (sa) order.sort((i, j) => sa[j] - sa[i] || i - j);
  const used = new Uint8Array(rb.count);
  const pairs: Array<[number, number]> = [];
  for (const i of order) {
    let best = -1;
    let bestIou = MATCH_IOU;
    for (let j = 0; j < rb.count; j++) {
      if (used[j] || (ca && cb && ca[i] !== cb[j])) continue;
      const iou = boxIou(boxesA[i], boxesB[j]);
      if (iou >= bestIou && (best < 0 || iou > bestIou)) {
        best = j;
        bestIou = iou;
      }
    }
    if (best >= 0) {
      used[best] = 1;
      pairs.push([i, best]);
    }
  }
  pairs.sort((p, q) => p[0] - q[0]);
  const matchedA = new Uint8Array(ra.count);
  for (const [i] of pairs) matchedA[i] = 1;
  let missed = 0;
  let decisions = 0;
  const lost = new Uint8Array(ra.count);
  for (let i = 0; i < ra.count; i++)
    if (!matchedA[i] && decides(sa, i)) {
      missed++;
      lost[i] = 1;
    }
  for (let j = 0; j < rb.count; j++) if (!used[j] && decides(sb, j)) missed++;
  decisions += missed;
  // a matched detection is kept where both models give it at the threshold, give or take SCORE_SLACK (0.26 read as
  // 0.24 is noise; 0.9 read as 0.01 is a detection lost)
  const kept = (s: Float64Array | undefined, r: number): boolean => !probabilities || s![r] >= SCORE_CONFIDENCE - SCORE_SLACK;
  for (const [i, j] of pairs) {
    if (!decides(sa, i) && !decides(sb, j)) continue;
    decisions++;
    if (!kept(sa, i) || !kept(sb, j)) missed++;
  }
  return { boxes: source.boxes, outputs: source.outputs, pairs, decisions, missed, lost };
}

/** The rows `rows` of a tensor along `axis`, in that order (a copy). */
export function pickRows(t: CalibrationTensor, axis: 0 | 1, rows: readonly number[]): CalibrationTensor {
  const { tensor, width } = emptyRows(t, axis, rows.length);
  rows.forEach((r, k) => copyRow(tensor.data, k, t.data, r, width));
  return tensor;
}

/** A tensor of `t`'s type and shape with `count` rows along `axis`, all zero, and the values a row holds. */
function emptyRows(t: CalibrationTensor, axis: 0 | 1, count: number): { tensor: CalibrationTensor; width: number } {
  const width = rowsOf(t, axis)!.width;
  const dims = [...t.dims];
  dims[axis] = count;
  return {
    tensor: { type: t.type, dims, data: new (t.data.constructor as new (n: number) => TensorData)(count * width) },
    width,
  };
}

/** Row `r` of `from` into row `k` of `to` (rows of `width` values). */
const copyRow = (to: TensorData, k: number, from: TensorData, r: number, width: number): void =>
  to.set(from.subarray(r * width, (r + 1) * width) as never, k * width);

/**
 * One sample's outputs with every detection set's rows matched: the matched rows of each of its outputs, in the
 * original's order, in both models, and the sets (for their counts).
 */
export function alignDetections(reference: Feed, candidate: Feed): { reference: Feed; candidate: Feed; sets: MatchedSet[] } {
  const sets: MatchedSet[] = [];
  const a: Feed = { ...reference };
  const b: Feed = { ...candidate };
  for (const source of detectionSources(reference, candidate)) {
    const set = matchDetections(source, reference, candidate);
    for (const o of set.outputs) {
      a[o] = pickRows(
        reference[o],
        source.axis,
        set.pairs.map((p) => p[0]),
      );
      b[o] = pickRows(
        candidate[o],
        source.axis,
        set.pairs.map((p) => p[1]),
      );
    }
    sets.push(set);
  }
  return { reference: a, candidate: b, sets };
}

/**
 * A run's outputs with every detection set's rows put where the reference run has the same detections (the
 * reference's detections that this run lacks are zero rows, its rows that are no decisions its own; the run's extra
 * ones are left out): outputs of the reference's
 * shape whose differences are the detections' own (the sensitivity probes compare runs element by element,
 * calibration/runner.ts).
 */
export function alignToReference(reference: Feed, run: Feed): Feed {
  const out: Feed = { ...run };
  for (const source of detectionSources(reference, run)) {
    const set = matchDetections(source, reference, run);
    const at = new Int32Array(rowsOf(reference[source.boxes], source.axis)!.count).fill(-1);
    for (const [i, j] of set.pairs) at[i] = j;
    for (const o of set.outputs) {
      const { tensor, width } = emptyRows(run[o], source.axis, at.length);
      // (a row of the reference that is no decision and this run lacks is the reference's own: a top-k tail's churn
      // is no error; a lost decision is a zero row)
      at.forEach((j, i) => {
        if (j >= 0) copyRow(tensor.data, i, run[o].data, j, width);
        else if (!set.lost[i]) copyRow(tensor.data, i, reference[o].data, i, width);
      });
      out[o] = tensor;
    }
  }
  return out;
}

/** Whether a run's outputs hold a detection set (`alignToReference` has something to do). */
export const hasDetections = (outputs: Feed): boolean => detectionSources(outputs, outputs).length > 0;
