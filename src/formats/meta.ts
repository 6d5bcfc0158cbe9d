/**
 * The model formats as an archive knows them, shared by Node and the browser (no Node module): the name a
 * manifest stores, the file extension, and what a tensor's storage record must hold. The Node side adds
 * readers and writers (registry.ts). A new format (GGUF…) is a folder with its meta.ts and index.ts, a
 * name in `ModelFormat` and its storage in `TensorStorage` (model.ts), and a line here and in registry.ts.
 */

import type { FormatMeta } from './model.js';
import { onnxMeta } from './onnx/meta.js';
import { safetensorsMeta } from './safetensors/meta.js';

export type { FormatMeta } from './model.js';

export const FORMAT_META: readonly FormatMeta[] = [onnxMeta, safetensorsMeta];

/** A format by the name a manifest stores, or undefined for one this build does not know. */
export function formatMeta(name: string): FormatMeta | undefined {
  return FORMAT_META.find((f) => f.name === name);
}
