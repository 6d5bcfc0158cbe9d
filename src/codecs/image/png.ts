import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const png: Codec = {
  ...CODEC_META.png,
  encode: (plane, o) =>
    runEncode(
      'png',
      sharpFromPlane(plane).png({ compressionLevel: o.effort ?? 9, adaptiveFiltering: o.filter ?? false, palette: false }),
    ),
  decode: (bytes, expected) => decodeToCodes('png', bytes, expected),
};
