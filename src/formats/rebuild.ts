/**
 * The model file from its skeleton and restored tensors, in either format: one
 * dispatch for decompression and for substitution (peers, sensitivity probes).
 * Each tensor comes with the storage record its reader gave (`storage()`).
 */

import type { FloatDType, ModelFormat } from './model.js';
import { rebuildOnnx } from './onnx/reader.js';
import { rebuildSafetensors } from './safetensors/reader.js';

export interface StoredTensor {
  storage: Record<string, string | number>;
  dtype: FloatDType;
  values: Float32Array;
}

export function rebuildFromSkeleton(
  format: ModelFormat,
  skeleton: Uint8Array,
  tensors: readonly StoredTensor[],
  file: string,
): Uint8Array {
  if (format === 'onnx')
    return rebuildOnnx(
      skeleton,
      tensors.map((t) => ({ path: String(t.storage.path), form: String(t.storage.form), dtype: t.dtype, values: t.values })),
      file,
    );
  return rebuildSafetensors(
    skeleton,
    tensors.map((t) => ({ begin: Number(t.storage.begin), end: Number(t.storage.end), dtype: t.dtype, values: t.values })),
    file,
  );
}
