import type { FormatMeta } from '../model.js';

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** safetensors as the manifest and the validator know it (isomorphic). */
export const safetensorsMeta: FormatMeta = {
  name: 'safetensors',
  extension: '.safetensors',
  isStorage: (s) => isCount(s.begin) && isCount(s.end) && s.end >= s.begin,
};
