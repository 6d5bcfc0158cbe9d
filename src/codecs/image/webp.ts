import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const webp: Codec = {
  ...CODEC_META.webp,
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
