import { UnsupportedError } from '../../errors.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

/**
 * AVIF (AV1 intra) through libvips/libheif. 8-bit codes: lossy or lossless.
 * 16-bit codes go in at 12-bit sample depth, so the 4 low bits are lost: lossy only.
 */
export const avif: Codec = {
  name: 'avif',
  media: 'image',
  mime: 'image/avif',
  ext: 'avif',
  description: 'AVIF through libvips: 8-bit (lossy or lossless) or 16-bit codes at 12-bit depth (lossy); quality 1–100',
  bits: [8, 16],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: false,
  maxWidth: 16384,
  maxHeight: 16384,
  quality: { min: 1, max: 100, default: 80, meaning: 'higher is better and larger' },
  effort: { min: 0, max: 9, default: 4, meaning: 'encoder effort (higher: smaller, slower)' },
  encode: (plane, o) => {
    if (o.lossless && plane.bits !== 8) throw new UnsupportedError('avif is lossless only for 8-bit codes');
    return runEncode(
      'avif',
      sharpFromPlane(plane).avif({
        quality: o.quality ?? 80,
        lossless: o.lossless ?? false,
        effort: o.effort ?? 4,
        chromaSubsampling: '4:4:4',
        bitdepth: plane.bits === 16 ? 12 : 8,
      }),
    );
  },
  decode: (bytes, expected) => decodeToCodes('avif', bytes, expected),
};
