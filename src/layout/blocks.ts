/**
 * M5/M6: a plane as video frames. An FC (or gate) matrix is cut into Bin × Bout
 * blocks; a conv kernel plane (M3) into blocks of Bfin × Bfout whole kernels,
 * i.e. (Bfin·Kx) × (Bfout·Ky) pixels laid out as in M3. Blocks are taken in
 * row-major order, one per frame; edge blocks are padded to the full frame
 * (frame sides rounded up to even numbers, at least MIN_FRAME, for the video codecs), and the true
 * size of every block is recorded.
 */

import { OptionError } from '../errors.js';
import type { LayoutSpec, PlaneShape } from './types.js';

/** Default block side in pixels: small enough for many frames, large enough for the codecs' block tools. */
export const DEFAULT_BLOCK_PIXELS = 64;

/** Block size in plane rows × columns for a layout: `block` is Bin×Bout (fc, gates) or Bfin×Bfout kernels (conv). */
export function blockSize(layout: LayoutSpec, shape: PlaneShape, block?: readonly [number, number]): [number, number] {
  const [unitR, unitC, maxR, maxC] =
    layout.kind === 'conv' ? [layout.kx, layout.ky, layout.nfin, layout.nfout] : [1, 1, shape.rows, shape.cols];
  let [br, bc] = block ?? [
    Math.max(1, Math.floor(DEFAULT_BLOCK_PIXELS / unitR)),
    Math.max(1, Math.floor(DEFAULT_BLOCK_PIXELS / unitC)),
  ];
  if (block) {
    if (!(Number.isInteger(br) && Number.isInteger(bc) && br > 0 && bc > 0))
      throw new OptionError(`Expected positive integers for block but received ${br}×${bc}`);
    const what = layout.kind === 'conv' ? `${maxR}×${maxC} kernel grid` : `${maxR}×${maxC} matrix`;
    if (br > maxR || bc > maxC) throw new OptionError(`block ${br}×${bc} is larger than the ${what}`);
  } else {
    br = Math.min(br, maxR);
    bc = Math.min(bc, maxC);
  }
  return [br * unitR, bc * unitC];
}

/** Smallest frame side: x265 refuses frames under 8 rows; 16 keeps every codec's block tools happy. */
export const MIN_FRAME = 16;

export const evenUp = (n: number): number => n + (n & 1);
