import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const jpeg: Codec = {
  ...CODEC_META.jpeg,
  encode: (plane, o) =>
    runEncode('jpeg', sharpFromPlane(plane).jpeg({ quality: o.quality ?? 90, mozjpeg: true, chromaSubsampling: '4:4:4' })),
  decode: (bytes, expected) => decodeToCodes('jpeg', bytes, expected),
};
