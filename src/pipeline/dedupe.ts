/**
 * Identical tensors (a model's branches that share weights) are encoded once: the others' records point
 * to the first (`sameAs`). Identical means the same values, shape, layout and settings.
 */

import { createHash } from 'node:crypto';
import type { ModelReader } from '../formats/model.js';
import { slicesOf } from './plan.js';
import type { CodedPlan } from './stages.js';

/** Hash of a tensor's values, shape, layout and settings. A large tensor is read slice by slice. */
function contentHash(reader: ModelReader, plan: CodedPlan, sliceWeights: number): string {
  const h = createHash('sha256').update(JSON.stringify([plan.entry.shape, plan.layout, plan.settings]));
  const { key } = plan.entry;
  const add = (v: Float32Array): void => void h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  const slices = slicesOf(plan, sliceWeights);
  if (!slices) add(reader.read(key));
  else for (const s of slices) add(reader.readRows(key, s.row, s.rows));
  return h.digest('hex');
}

/** The tensors to encode (each first of its kind), and every duplicate's key → the key of its first. */
export function findDuplicates(
  reader: ModelReader,
  coded: readonly CodedPlan[],
  sliceWeights: number,
): { unique: CodedPlan[]; sameAs: Map<string, string> } {
  const firstByHash = new Map<string, CodedPlan>();
  const unique: CodedPlan[] = [];
  const sameAs = new Map<string, string>();
  for (const p of coded) {
    const h = contentHash(reader, p, sliceWeights);
    const first = firstByHash.get(h);
    if (first) sameAs.set(p.entry.key, first.entry.key);
    else {
      firstByHash.set(h, p);
      unique.push(p);
    }
  }
  return { unique, sameAs };
}
