import type { FormatMeta } from '../model.js';

/** ONNX as the manifest and the validator know it (isomorphic). */
export const onnxMeta: FormatMeta = {
  name: 'onnx',
  extension: '.onnx',
  isStorage: (s) => typeof s.path === 'string' && typeof s.form === 'string',
};
