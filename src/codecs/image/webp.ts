import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const webp: Codec = {
  name: 'webp',
  media: 'image',
  mime: 'image/webp',
  ext: 'webp',
  description: 'WebP through libvips: 8-bit only (stored as RGB); lossless, or lossy with quality 1–100',
  bits: [8],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: true,
  maxWidth: 16383,
  maxHeight: 16383,
  quality: { min: 1, max: 100, default: 90, meaning: 'higher is better and larger' },
  effort: { min: 0, max: 6, default: 6, meaning: 'encoder effort (higher: smaller, slower)' },
  encode: (plane, o) =>
    runEncode(
      'webp',
      sharpFromPlane(plane).webp(
        o.lossless
          ? { lossless: true, effort: o.effort ?? 6, exact: true }
          : { quality: o.quality ?? 90, effort: o.effort ?? 6, smartSubsample: false },
      ),
    ),
  decode: (bytes, expected) => decodeToCodes('webp', bytes, expected),
};
