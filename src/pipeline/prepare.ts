/**
 * Stage 2, prepare: a tensor's values laid out as working planes (M2–M4), outliers (and non-finite values)
 * marked NaN with their exact values set aside, and each plane rotated when asked (the rotation is undone
 * on decode with the seeds the record keeps).
 */

import { codecMeta } from '../codecs/meta.js';
import { channelView, gatherChannels, keptChannels, withChannels, zeroChannelMask } from '../layout/channels.js';
import { gatherPlanes, planeShapes, sourceIndexFn } from '../layout/planes.js';
import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import type { CodedPlan } from './stages.js';
import type { TensorStatistics } from '../compensate/statistics.js';
import { markOutliers } from '../quantize/outliers.js';
import type { NonFiniteSide } from '../quantize/uniform.js';
import { rotatePlane } from '../transform/hadamard.js';

/** Working planes of a tensor and what was set aside: exact side values, rotation seeds. */
export interface PreparedTensor {
  readonly layout: LayoutSpec;
  readonly planes: Float32Array[];
  readonly shapes: readonly PlaneShape[];
  /** Weights stored exactly (non-finite ones, outliers), in file order. */
  readonly side?: NonFiniteSide;
  /** Per plane: the rotation seed, when the planes were rotated. */
  readonly seeds?: readonly number[];
  /** Per plane, per channel: the step of the model's own grid (model-grid.ts), where the tensor is coded on it. */
  readonly channelSteps?: readonly Float32Array[];
}

/** A unit's values as its planes hold them: its output channels of zeros left out, where it has any to leave out. */
export interface CodedChannels {
  readonly values: Float32Array;
  readonly layout: LayoutSpec;
  /** The output channels left out (layout/channels.ts), absent where none is. */
  readonly zeroChannels?: Uint8Array;
  /** How many weights they held. */
  readonly zeros: number;
}

/**
 * Whether a tensor leaves output channels of zeros out of its planes (layout/channels.ts): a fully connected or
 * conv layout, for codecs other than video (whose blocks are checked on the whole plane when it is planned). The
 * encoder and rate control's measurements ask the same, so what is measured is what is written.
 */
function leavesZeroChannels(plan: CodedPlan): boolean {
  const l = plan.layout;
  return (l.kind === 'fc' || l.kind === 'conv') && plan.codecs.every((c) => codecMeta(c.name)?.media !== 'video');
}

/**
 * A unit's values (a whole tensor, or a slice laid out as `layout`) without its output channels of exact +0.0,
 * where the plan leaves them out: the tensor of the other channels, in order. A kernel whose layer statistics
 * (`stats`, error-compensating rounding) come in several groups of output channels keeps them all: the groups
 * are found by channel index (compensate/planes.ts).
 */
export function withoutZeroChannels(
  plan: CodedPlan,
  values: Float32Array,
  layout: LayoutSpec,
  stats?: TensorStatistics,
): CodedChannels {
  const grouped = stats !== undefined && stats.h.length > 1 && layout.kind === 'conv' && layout.order === 'out_in';
  const view = leavesZeroChannels(plan) && !grouped ? channelView(layout) : undefined;
  // −0.0 counts as zero where the codes cannot carry its sign (a zero code decodes to +0.0: 8 and 16 bits)
  const mask = view && zeroChannelMask(values, view, plan.settings.bits <= 16);
  if (!view || !mask) return { values, layout, zeros: 0 };
  const kept = keptChannels(mask, view.channels);
  return {
    values: gatherChannels(values, view, kept),
    layout: withChannels(layout, kept.length),
    zeroChannels: mask,
    zeros: view.outer * (view.channels - kept.length) * view.inner,
  };
}

/**
 * The positions a working buffer marks (non-finite), in file order, with the exact values at those
 * positions: the weights stored as side data. `marked` and `values` are both in file order.
 */
export function exactSide(marked: Float32Array, values: Float32Array): NonFiniteSide | undefined {
  let count = 0;
  for (let i = 0; i < marked.length; i++) if (!Number.isFinite(marked[i])) count++;
  if (count === 0) return undefined;
  const indices = new Uint32Array(count);
  const exact = new Float32Array(count);
  for (let i = 0, k = 0; i < marked.length; i++)
    if (!Number.isFinite(marked[i])) {
      indices[k] = i;
      exact[k++] = values[i];
    }
  return { indices, values: exact };
}

/**
 * `exactSide` of the planes scattered back to file order, without scattering them: the file index of every
 * non-finite plane element, sorted, and the exact values there. The same side to the bit (the layouts are
 * bijections); no tensor-sized buffer and no second transpose for the few marks a tensor has.
 */
export function markedSide(
  planes: readonly Float32Array[],
  shapes: readonly PlaneShape[],
  layout: LayoutSpec,
  values: Float32Array,
): NonFiniteSide | undefined {
  let count = 0;
  for (const plane of planes) for (let i = 0; i < plane.length; i++) if (!Number.isFinite(plane[i])) count++;
  if (count === 0) return undefined;
  const index = sourceIndexFn(layout);
  const indices = new Uint32Array(count);
  let k = 0;
  planes.forEach((plane, p) => {
    const { cols } = shapes[p];
    for (let i = 0; i < plane.length; i++)
      if (!Number.isFinite(plane[i])) {
        const r = Math.floor(i / cols);
        indices[k++] = index(p, r, i - r * cols);
      }
  });
  indices.sort();
  const exact = new Float32Array(count);
  for (let j = 0; j < count; j++) exact[j] = values[indices[j]];
  return { indices, values: exact };
}

/**
 * Exact zeros stay zero in every mode: the positions where an exactly-zero weight does not decode to 0
 * (a min/max grid as written, a lossy codec, a rotation, 24/32-bit codes) join the exact side values, so
 * pruned and structured-sparse weights come back as zeros. Zero-centred grids (the default per-channel
 * grid, the step grid) put zero on a code and need none. Returns the side values to store (merged, in file
 * order) and writes the zeros into `restored`.
 */
export function withExactZeros(
  values: Float32Array,
  restored: Float32Array,
  side: NonFiniteSide | undefined,
): NonFiniteSide | undefined {
  let missed = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === 0 && restored[i] !== 0) missed++;
  if (missed === 0) return side;
  const n = (side?.indices.length ?? 0) + missed;
  const indices = new Uint32Array(n);
  const exact = new Float32Array(n);
  let k = 0;
  let j = 0;
  for (let i = 0; i < values.length; i++) {
    const fromSide = side !== undefined && j < side.indices.length && side.indices[j] === i;
    if (fromSide) {
      indices[k] = i;
      exact[k++] = side.values[j++];
    } else if (values[i] === 0 && restored[i] !== 0) {
      indices[k] = i;
      exact[k++] = values[i];
      restored[i] = values[i];
    }
  }
  return { indices, values: exact };
}

/**
 * Working planes of a tensor: laid out, with outliers (and non-finite values)
 * marked NaN; and the exact side values for every marked position, in file order.
 */
export function preparePlanes(
  values: Float32Array,
  layout: LayoutSpec,
  outlierSigma: number,
): { planes: Float32Array[]; shapes: PlaneShape[]; side?: NonFiniteSide } {
  const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
  const shapes = planeShapes(layout);
  const marked = outlierSigma > 0 ? markOutliers(planes, shapes, outlierSigma) : 0;
  // the marks are in the planes: their positions in file order from the layout's index map
  const side = marked > 0 ? markedSide(planes, shapes, layout, values) : exactSide(values, values);
  return { planes, shapes, side };
}

/** Rotation seed of plane p of tensor i (stored in the manifest; any value works). */
export const rotationSeed = (tensorIndex: number, plane: number): number => ((tensorIndex + 1) * 7919 + plane * 104729) >>> 0;

/** Rotates working planes in place; NaN (side-stored) positions enter the transform as 0. */
export function rotatePlanes(planes: Float32Array[], shapes: readonly PlaneShape[], seeds: readonly number[]): void {
  planes.forEach((pl, p) => {
    for (let i = 0; i < pl.length; i++) if (!Number.isFinite(pl[i])) pl[i] = 0;
    rotatePlane(pl, shapes[p].rows, shapes[p].cols, seeds[p]);
  });
}

/** The prepared tensor: planes laid out, outliers set aside, rotated when `rotate` (seeded by the tensor's index). */
export function prepareTensor(
  values: Float32Array,
  layout: LayoutSpec,
  settings: { outliers: number; rotate?: boolean },
  tensorIndex: number,
): PreparedTensor {
  const { planes, shapes, side } = preparePlanes(values, layout, settings.outliers);
  const seeds = settings.rotate ? shapes.map((_, p) => rotationSeed(tensorIndex, p)) : undefined;
  if (seeds) rotatePlanes(planes, shapes, seeds);
  return { layout, planes, shapes, side, seeds };
}
