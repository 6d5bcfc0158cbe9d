/**
 * A model file with some tensors' values replaced, in the model's own format,
 * built through the same skeleton/rebuild path as decompression. Used to run
 * peers (int8/int4 round-to-nearest) and per-layer sensitivity probes.
 */

import type { ModelReader } from '../formats/model.js';
import { rebuildOnnx } from '../formats/onnx.js';
import { rebuildSafetensors } from '../formats/safetensors.js';

export function substituteTensors(reader: ModelReader, values: ReadonlyMap<string, Float32Array>): Uint8Array {
  const keys = new Set(values.keys());
  const skeleton = reader.skeleton(keys);
  const entries = reader.tensors.filter((t) => keys.has(t.key));
  if (reader.format === 'onnx')
    return rebuildOnnx(
      skeleton,
      entries.map((t) => {
        const s = reader.storage(t.key);
        return { path: String(s.path), form: String(s.form), dtype: t.dtype, values: values.get(t.key)! };
      }),
      reader.file,
    );
  return rebuildSafetensors(
    skeleton,
    entries.map((t) => {
      const s = reader.storage(t.key);
      return { begin: Number(s.begin), end: Number(s.end), dtype: t.dtype, values: values.get(t.key)! };
    }),
    reader.file,
  );
}
