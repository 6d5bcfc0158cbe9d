/**
 * A model file with some tensors' values replaced, in the model's own format,
 * built through the same skeleton/rebuild path as decompression. Used to run
 * peers (int8/int4 round-to-nearest) and per-layer sensitivity probes.
 */

import type { ModelReader } from '../formats/model.js';
import { rebuildFromSkeleton } from '../formats/registry.js';

export function substituteTensors(reader: ModelReader, values: ReadonlyMap<string, Float32Array>): Uint8Array {
  const keys = new Set(values.keys());
  const tensors = reader.tensors
    .filter((t) => keys.has(t.key))
    .map((t) => ({ storage: reader.storage(t.key), dtype: t.dtype, values: values.get(t.key)! }));
  return rebuildFromSkeleton(reader.format, reader.skeleton(keys), tensors, reader.file);
}
