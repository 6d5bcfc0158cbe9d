import { CODEC_META } from '../meta.js';
import type { Codec } from '../types.js';
import { entropyPng } from './png-entropy.js';
import { decodeToCodes, runEncode, sharpFromPlane } from './sharp-io.js';

export const png: Codec = {
  ...CODEC_META.png,
  // 8-bit codes with rows unfiltered: entropy coding, matches where they pay (png-entropy.ts); filtered rows and
  // 16-bit codes: libvips at zlib level `effort`
  encode: (plane, o) =>
    plane.bits === 8 && !o.filter
      ? entropyPng(plane, { matches: o.matches })
      : runEncode(
          'png',
          sharpFromPlane(plane).png({ compressionLevel: o.effort ?? 9, adaptiveFiltering: o.filter ?? false, palette: false }),
        ),
  decode: (bytes, expected) => decodeToCodes('png', bytes, expected),
};
