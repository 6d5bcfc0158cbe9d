import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const png: Codec = {
  name: 'png',
  media: 'image',
  mime: 'image/png',
  ext: 'png',
  description:
    'PNG through libvips: lossless, 8 and 16-bit grey; effort = zlib level 0–9 (default 9); rows unfiltered (PNG filter type None: adaptive filtering measured larger on weight codes)',
  bits: [8, 16],
  losslessBits: [8, 16],
  lossless: 'always',
  defaultLossless: true,
  maxWidth: 2 ** 31 - 1,
  maxHeight: 2 ** 31 - 1,
  effort: { min: 0, max: 9, default: 9, meaning: 'zlib compression level (higher: smaller, slower)' },
  encode: (plane, o) =>
    runEncode(
      'png',
      sharpFromPlane(plane).png({ compressionLevel: o.effort ?? 9, adaptiveFiltering: o.filter ?? false, palette: false }),
    ),
  decode: (bytes, expected) => decodeToCodes('png', bytes, expected),
};
