import { UnsupportedError } from '../../errors.js';
import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

/**
 * AVIF (AV1 intra) through libvips/libheif. 8-bit codes: lossy or lossless.
 * 16-bit codes go in at 12-bit sample depth, so the 4 low bits are lost: lossy only.
 */
export const avif: Codec = {
  ...CODEC_META.avif,
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
