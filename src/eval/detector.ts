/**
 * A detector's class scores packed after its boxes in one output (YOLOv8's [1, 4 + classes, anchors]): where they are
 * (eval/fidelity.ts judges their confident decisions; the sensitivity probes weigh them apart from the boxes,
 * calibration/runner.ts `probeCalibrator`).
 */
/** Box coordinates (the channels before the scores) reach beyond this somewhere: pixels, not probabilities. */
const BOX_MAGNITUDE = 2;

/** A detector output's class-score channels: `from`…C−1 along `axis` (1 or 2) of [B, C, N] or [B, N, C]. */
export interface ScoreBlock {
  axis: 1 | 2;
  from: number;
  channels: number;
  anchors: number;
}

/** Index of (batch b, channel k, anchor n) in a [B, C, N] (axis 1) or [B, N, C] (axis 2) output. */
export const blockIndex = (block: ScoreBlock, b: number, k: number, n: number): number =>
  block.axis === 1 ? (b * block.channels + k) * block.anchors + n : (b * block.anchors + n) * block.channels + k;

/**
 * The class-score block of a detector's output, found on one sample's values: a rank-3 output whose last channels
 * (two or more) along axis 1 or 2 lie in [0, 1] while an earlier one reaches beyond ±2, with at least twice as many
 * anchors as channels (eval/fidelity.ts).
 */
export function scoreBlockOf(x: ArrayLike<number>, dims: readonly number[]): ScoreBlock | undefined {
  if (dims.length !== 3 || !(dims[0] >= 1)) return undefined;
  for (const axis of [1, 2] as const) {
    const channels = dims[axis];
    const anchors = dims[3 - axis];
    if (channels < 3 || anchors < 2 * channels) continue;
    const block = { axis, from: 0, channels, anchors };
    const inUnit = new Array<boolean>(channels).fill(true);
    let wide = new Array<boolean>(channels).fill(false);
    for (let b = 0; b < dims[0]; b++)
      for (let k = 0; k < channels; k++)
        for (let n = 0; n < anchors; n++) {
          const v = x[blockIndex(block, b, k, n)];
          if (!(v >= 0 && v <= 1)) inUnit[k] = false;
          if (Math.abs(v) > BOX_MAGNITUDE) wide[k] = true;
        }
    let from = channels;
    while (from > 0 && inUnit[from - 1]) from--;
    wide = wide.slice(0, from);
    if (from >= 1 && channels - from >= 2 && wide.some(Boolean)) return { ...block, from };
  }
  return undefined;
}

/** Whether an output of these dims has the block's shape (a sample of other sides has its own block). */
export const fitsBlock = (block: ScoreBlock, dims: readonly number[]): boolean =>
  dims.length === 3 && dims[block.axis] === block.channels && dims[3 - block.axis] === block.anchors;

/** Whether element `i` of an output of the block's shape is a class score (its channel is `from` or later). */
export function isScore(block: ScoreBlock, i: number): boolean {
  const k = block.axis === 1 ? Math.floor(i / block.anchors) % block.channels : i % block.channels;
  return k >= block.from;
}
