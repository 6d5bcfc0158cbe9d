import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const tiff: Codec = {
  ...CODEC_META.tiff,
  encode: (plane) => runEncode('tiff', sharpFromPlane(plane).tiff({ compression: 'deflate', predictor: 'horizontal' })),
  decode: (bytes, expected) => decodeToCodes('tiff', bytes, expected),
};
