/**
 * The allocation's measurements of one tensor: its working planes (laid out, outliers set aside, rotated when
 * asked) and the bits and squared error of every candidate grid (rate/allocate.ts). A tensor of a model that
 * cannot run is measured slice by slice and nothing is kept, here or on a worker thread (the same numbers to
 * the last bit: the same code in the same order); a model that runs keeps its planes for the probes.
 */

import type { ModelReader } from '../formats/model.js';
import { elementCount } from '../formats/model.js';
import { channelView, expandChannels } from '../layout/channels.js';
import { planeShapes, scatterPlanes, sliceLayout } from '../layout/planes.js';
import { compensatePlanes } from '../compensate/planes.js';
import { quantizePlanes } from '../quantize/tensor.js';
import { restoreNonFinite } from '../quantize/uniform.js';
import { unrotatePlane } from '../transform/hadamard.js';
import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import { ALLOCATION_STEPS, measureCandidates, measureColumnMajor, type Candidate, type TensorRate } from '../rate/allocate.js';
import { compensationRatios, type CompensationRatio } from '../rate/compensated.js';
import type { TensorStatistics } from '../compensate/statistics.js';
import { columnPower, type MeasuredScales } from '../quantize/step.js';
import type { NonFiniteSide, RangeMode } from '../quantize/uniform.js';
import { generalPathOnly } from './fused.js';
import { slicesOf } from './plan.js';
import { preparePlanes, rotatePlanes, rotationSeed, withoutZeroChannels } from './prepare.js';
import type { CodedPlan } from './stages.js';

/** Sums of squares and count of a tensor's finite working values, added to slice by slice. */
export interface PowerSums {
  sq: number;
  n: number;
}

export interface MeasuredPart {
  prepared: { planes: Float32Array[]; shapes: PlaneShape[]; side?: NonFiniteSide };
  seeds?: number[];
  rate: TensorRate;
}

/** The output channels of zeros a measured tensor's planes leave out, as its encode will (prepare.ts withoutZeroChannels), and their layout. */
export interface LeftOut {
  layout: LayoutSpec;
  zeroChannels: Uint8Array;
}

/** A measured tensor's working planes, as the probes keep them: what `restoredAtCandidate` restores values from. */
export type ProbePlanes = MeasuredPart['prepared'] & { leftOut?: LeftOut };

/**
 * A measurement of the channels a tensor's planes hold, counted as the whole tensor: the channels of zeros left out
 * add their weights (rate per weight and the tensor's mean square are those of all its weights, as before they
 * were left out) and nothing else (no bits: their codes are not written; no error).
 */
function countLeftOut(rate: TensorRate, power: PowerSums, zeros: number): void {
  rate.weights += zeros;
  power.n += zeros;
}

/** One tensor (or slice of it): its working planes and their candidates; its power added to `power`. */
export function measurePart(
  plan: CodedPlan,
  values: Float32Array,
  layout: LayoutSpec,
  modes: readonly RangeMode[],
  power: PowerSums,
  fine: readonly number[] = [],
): MeasuredPart {
  const prepared = preparePlanes(values, layout, plan.settings.outliers);
  const seeds = plan.settings.rotate ? prepared.shapes.map((_, k) => rotationSeed(plan.index, k)) : undefined;
  if (seeds) rotatePlanes(prepared.planes, prepared.shapes, seeds);
  const rate = measureCandidates(
    plan.entry.key,
    prepared.planes,
    prepared.shapes,
    { bits: plan.settings.bits, clip: plan.settings.clip },
    ALLOCATION_STEPS,
    modes,
    // 16-bit candidates where a codec set can carry them (a codec the user named may not), and not on rotated
    // planes (weights beyond a fine grid there cost whole rotation segments stored exactly)
    plan.auto && !seeds ? fine : [],
  );
  addSideBits(rate, prepared.side?.indices.length ?? 0);
  prepared.planes.forEach((pl, p) => addPower(power, columnPower(pl, prepared.shapes[p].rows, prepared.shapes[p].cols)));
  return { prepared, ...(seeds ? { seeds } : {}), rate };
}

/** What `measureToProbe` is asked: the range modes and fine steps measured, and the layer statistics to model compensation with. */
export interface PrepareRequest {
  modes: RangeMode[];
  fine: readonly number[];
  /** Layer statistics (the compensated candidates' error model, rate/compensated.ts) and the range mode it is measured in. */
  compensation?: { stats: TensorStatistics; range: RangeMode };
}

/** A tensor of a model that runs, measured for the probes: its working planes kept, its power, its compensation ratios. */
export interface ProbeMeasure extends MeasuredPart {
  power: PowerSums;
  /** The error model's anchors (absent: no statistics, or rotated planes, which are not compensated). */
  ratios?: CompensationRatio[];
  /** The planes' output channels of zeros left out (absent: they hold every channel, laid out as the plan's layout). */
  leftOut?: LeftOut;
}

/**
 * One tensor of a model that runs, whole: measurePart, then, with layer statistics and unrotated planes, the
 * compensated/round-to-nearest error ratios at the anchors. Independent per tensor, so it runs on the worker
 * threads (the same numbers to the last bit: the same code in the same order).
 */
export function measureToProbe(plan: CodedPlan, values: Float32Array, request: PrepareRequest): ProbeMeasure {
  const power = { sq: 0, n: 0 };
  const coded = withoutZeroChannels(plan, values, plan.layout, request.compensation?.stats);
  const part = measurePart(plan, coded.values, coded.layout, request.modes, power, request.fine);
  countLeftOut(part.rate, power, coded.zeros);
  const c = request.compensation;
  const ratios =
    c && !part.seeds
      ? compensationRatios(
          part.prepared.planes,
          part.prepared.shapes,
          coded.layout,
          { bits: plan.settings.bits, clip: plan.settings.clip },
          c.range,
          c.stats,
        )
      : undefined;
  return {
    ...part,
    power,
    ...(coded.zeroChannels ? { leftOut: { layout: coded.layout, zeroChannels: coded.zeroChannels } } : {}),
    ...(ratios ? { ratios } : {}),
  };
}

/**
 * A measured tensor's values at a candidate grid, in file order, as the encoder would write them: its planes
 * quantized (compensated with `layer` where given), rotations undone, laid back into the tensor of the channels
 * they hold, side values restored, and the output channels of zeros left out put back in place.
 */
export function restoredAtCandidate(
  plan: CodedPlan,
  measured: ProbePlanes,
  seeds: readonly number[] | undefined,
  c: Candidate,
  layer?: TensorStatistics,
): Float32Array {
  const { planes, shapes, side, leftOut } = measured;
  const layout = leftOut?.layout ?? plan.layout;
  const settings = {
    bits: c.codeBits ?? plan.settings.bits,
    range: c.range,
    clip: plan.settings.clip,
    stride: c.stride,
    relStep: c.relStep,
    clampBeyond: Boolean(seeds),
  };
  const q = layer ? compensatePlanes(planes, shapes, layout, settings, layer) : quantizePlanes(planes, shapes, settings);
  if (seeds) q.forEach((x, k) => unrotatePlane(x.restored, shapes[k].rows, shapes[k].cols, seeds[k]));
  const v = scatterPlanes(
    q.map((x) => x.restored),
    layout,
    new Float32Array(elementCount(plan.entry.shape)),
  );
  restoreNonFinite(v, side);
  if (leftOut) expandChannels(v, leftOut.zeroChannels, channelView(plan.layout)!);
  return v;
}

/** Exact side values (non-finite weights, outliers) cost the same at every grid: ~8 bytes each before deflate. */
function addSideBits(rate: TensorRate, count: number): void {
  const bits = count * 64;
  rate.candidates.forEach((c) => (c.bits += bits));
}

/** A plane's finite values' squares and count (columnPower's order: per column, then over the columns) added to `power`. */
function addPower(power: PowerSums, [sq, n]: [number, number]): void {
  power.sq += sq;
  power.n += n;
}

/**
 * One slice's rate, and its power added to `power`: a PyTorch [out, in] matrix measured as the file holds it (each
 * file row a plane column: no plane laid out; rate/allocate.ts measureColumnMajor) where nothing is set aside or
 * rotated, else through measurePart. The same numbers either way. The matrix's scales come with it where every
 * weight is finite (the encoder's fused path then takes them instead of finding them again).
 */
function measureSlice(
  plan: CodedPlan,
  values: Float32Array,
  layout: LayoutSpec,
  modes: readonly RangeMode[],
  power: PowerSums,
): { rate: TensorRate; scales?: MeasuredScales } {
  const s = plan.settings;
  if (!generalPathOnly() && layout.kind === 'fc' && layout.order === 'out_in' && s.bits === 8 && s.outliers === 0 && !s.rotate) {
    const shape = planeShapes(layout)[0];
    const { rate, finite, scales } = measureColumnMajor(
      plan.entry.key,
      values,
      shape,
      { bits: s.bits, clip: s.clip },
      ALLOCATION_STEPS,
      modes,
    );
    addPower(power, finite);
    // its non-finite weights are its side values
    addSideBits(rate, values.length - finite[1]);
    return finite[1] === values.length ? { rate, scales } : { rate };
  }
  return { rate: measurePart(plan, values, layout, modes, power).rate };
}

/** The rate of a tensor measured slice by slice: bits and squared errors add up per candidate. */
export function addRates(a: TensorRate, b: TensorRate): TensorRate {
  return {
    ...a,
    weights: a.weights + b.weights,
    candidates: a.candidates.map((c, i) => ({ ...c, bits: c.bits + b.candidates[i].bits, sse: c.sse + b.candidates[i].sse })),
  };
}

/**
 * A tensor's rate and power, measured slice by slice as it will be coded, keeping nothing (memory follows the
 * slice) but each slice's scales where measureSlice gives them (`scales[k]`: slice k, or the whole tensor at 0).
 */
export function measureTensor(
  reader: ModelReader,
  plan: CodedPlan,
  sliceWeights: number,
  modes: readonly RangeMode[],
): { rate: TensorRate; power: PowerSums; scales?: Array<MeasuredScales | undefined> } {
  const power = { sq: 0, n: 0 };
  let rate: TensorRate | undefined;
  const scales: Array<MeasuredScales | undefined> = [];
  for (const part of slicesOf(plan, sliceWeights) ?? [undefined]) {
    const read = part ? reader.readRows(plan.entry.key, part.row, part.rows) : reader.read(plan.entry.key);
    const sliced = part ? sliceLayout(plan.layout, plan.entry.shape, part.rows)! : plan.layout;
    // what the encoder will code: its output channels of zeros left out
    const { values, layout, zeros } = withoutZeroChannels(plan, read, sliced);
    const r = measureSlice(plan, values, layout, modes, power);
    countLeftOut(r.rate, power, zeros);
    rate = rate ? addRates(rate, r.rate) : r.rate;
    scales.push(r.scales && { ...r.scales, row: part?.row ?? 0, rows: part?.rows ?? plan.entry.shape[0] });
  }
  return { rate: rate!, power, ...(scales.some(Boolean) ? { scales } : {}) };
}
