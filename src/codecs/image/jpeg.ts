import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const jpeg: Codec = {
  name: 'jpeg',
  media: 'image',
  mime: 'image/jpeg',
  ext: 'jpg',
  description: 'baseline JPEG (mozjpeg) through libvips: 8-bit grey, lossy, quality 1–100',
  bits: [8],
  losslessBits: [],
  lossless: 'never',
  defaultLossless: false,
  maxWidth: 65535,
  maxHeight: 65535,
  quality: { min: 1, max: 100, default: 90, meaning: 'higher is better and larger' },
  encode: (plane, o) =>
    runEncode('jpeg', sharpFromPlane(plane).jpeg({ quality: o.quality ?? 90, mozjpeg: true, chromaSubsampling: '4:4:4' })),
  decode: (bytes, expected) => decodeToCodes('jpeg', bytes, expected),
};
