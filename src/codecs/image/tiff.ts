import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const tiff: Codec = {
  name: 'tiff',
  media: 'image',
  mime: 'image/tiff',
  ext: 'tif',
  description: 'TIFF through libvips: lossless deflate with horizontal predictor, 8 and 16-bit grey',
  bits: [8, 16],
  losslessBits: [8, 16],
  lossless: 'always',
  defaultLossless: true,
  maxWidth: 2 ** 31 - 1,
  maxHeight: 2 ** 31 - 1,
  encode: (plane) => runEncode('tiff', sharpFromPlane(plane).tiff({ compression: 'deflate', predictor: 'horizontal' })),
  decode: (bytes, expected) => decodeToCodes('tiff', bytes, expected),
};
