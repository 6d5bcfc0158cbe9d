/**
 * Outliers kept exact: per output channel, weights farther than `sigma`
 * standard deviations from the channel mean are taken out of the grid (marked
 * NaN in the working planes, so ranges and codes ignore them) and stored
 * exactly as sparse side data. Real models need this: one large weight in a
 * channel otherwise stretches the channel's range and coarsens every other
 * weight in it (PaddleOCR collapses at 7-bit without it).
 */

import type { PlaneShape } from '../layout/types.js';

/** Marks outliers NaN in place; returns how many were marked. */
export function markOutliers(planes: Float32Array[], shapes: readonly PlaneShape[], sigma: number): number {
  let marked = 0;
  planes.forEach((plane, p) => {
    const { rows, cols, channelWidth } = shapes[p];
    const channels = Math.ceil(cols / channelWidth);
    for (let ch = 0; ch < channels; ch++) {
      const c0 = ch * channelWidth;
      const c1 = Math.min(cols, c0 + channelWidth);
      let sum = 0;
      let sq = 0;
      let n = 0;
      for (let r = 0; r < rows; r++)
        for (let c = c0; c < c1; c++) {
          const v = plane[r * cols + c];
          if (!Number.isFinite(v)) continue;
          sum += v;
          sq += v * v;
          n++;
        }
      if (n < 4) continue;
      const mean = sum / n;
      const sd = Math.sqrt(Math.max(sq / n - mean * mean, 0));
      if (sd === 0) continue;
      for (let r = 0; r < rows; r++)
        for (let c = c0; c < c1; c++) {
          const i = r * cols + c;
          if (Number.isFinite(plane[i]) && Math.abs(plane[i] - mean) > sigma * sd) {
            plane[i] = NaN;
            marked++;
          }
        }
    }
  });
  return marked;
}
