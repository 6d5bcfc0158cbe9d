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
  const [br, bc] = block ?? [
    Math.max(1, Math.floor(DEFAULT_BLOCK_PIXELS / unitR)),
    Math.max(1, Math.floor(DEFAULT_BLOCK_PIXELS / unitC)),
  ];
  if (block && !(Number.isInteger(br) && Number.isInteger(bc) && br > 0 && bc > 0))
    throw new OptionError(`Expected positive integers for block but received ${br}×${bc}`);
  // a block larger than a tensor's grid takes the whole grid on that side: one --block applies to tensors of every
  // size (it was refused, and on Silero VAD v4, whose kernel grids are 258 × 1, only blocks of 1 × ≤16 fitted all)
  return [Math.min(br, maxR) * unitR, Math.min(bc, maxC) * unitC];
}

/** Smallest frame side: x265 refuses frames under 8 rows; 16 keeps every codec's block tools happy. */
export const MIN_FRAME = 16;

export const evenUp = (n: number): number => n + (n & 1);

/** A video plane's frames are blocks of its plane, padded: more area than this is not one we wrote (the reader's bound). */
export const MAX_FRAME_AREA = (planeArea: number): number => 4 * planeArea + 1e6;

/**
 * The pixels a plane takes as video frames at this block: one padded frame a block. A plane thinner than a frame
 * (a 200000 × 1 vector: 3,125 frames of 16 × 64 for 64 weights each) pads past MAX_FRAME_AREA, and the planner
 * codes such a tensor as an image instead.
 */
export function videoFrameArea(layout: LayoutSpec, shape: PlaneShape, block?: readonly [number, number]): number {
  const [br, bc] = blockSize(layout, shape, block);
  const count = Math.ceil(shape.rows / br) * Math.ceil(shape.cols / bc);
  return Math.max(MIN_FRAME, evenUp(br)) * Math.max(MIN_FRAME, evenUp(bc)) * count;
}
