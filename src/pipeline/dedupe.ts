/**
 * Identical tensors (a model's branches that share weights) are encoded once: the others' records point
 * to the first (`sameAs`). Identical means the same values, shape, layout and settings.
 */

import { createHash } from 'node:crypto';
import { elementCount, type ModelReader } from '../formats/model.js';
import { slicesOf } from './plan.js';
import type { CodedPlan } from './stages.js';

/** What tensors must share to be identical: shape, layout and settings. */
const sameKind = (plan: CodedPlan): string => JSON.stringify([plan.entry.shape, plan.layout, plan.settings]);

const bytesOf = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/** Hash of a tensor's values, shape, layout and settings. A large tensor is read slice by slice. */
function contentHash(reader: ModelReader, plan: CodedPlan, sliceWeights: number): string {
  const h = createHash('sha256').update(sameKind(plan));
  const { key } = plan.entry;
  const slices = slicesOf(plan, sliceWeights);
  if (!slices) h.update(bytesOf(reader.read(key)));
  else for (const s of slices) h.update(bytesOf(reader.readRows(key, s.row, s.rows)));
  return h.digest('hex');
}

/** Tensors larger than this are told apart by their first row before their whole content is hashed. */
const WHOLE_BELOW = 1 << 16;

/** Hash of a tensor's first row (of its leading dimension): equal for identical tensors, cheap to find. */
function firstRowHash(reader: ModelReader, plan: CodedPlan): string {
  return createHash('sha256')
    .update(bytesOf(reader.readRows(plan.entry.key, 0, 1)))
    .digest('hex');
}

/** Groups of `items` by `keyOf`, in first-seen order, of two or more only. */
function groupsOf<T>(items: readonly T[], keyOf: (t: T) => string): T[][] {
  const groups = new Map<string, T[]>();
  for (const t of items) {
    const k = keyOf(t);
    const g = groups.get(k);
    if (g) g.push(t);
    else groups.set(k, [t]);
  }
  return [...groups.values()].filter((g) => g.length > 1);
}

/**
 * The tensors to encode (each first of its kind), and every duplicate's key → the key of its first. Only
 * tensors that could be identical are hashed whole: those of the same shape, layout and settings whose
 * first rows are the same too (before, every tensor of a model was read and hashed once more, a whole pass
 * over the file before the first tensor was encoded; the result is the same).
 */
export function findDuplicates(
  reader: ModelReader,
  coded: readonly CodedPlan[],
  sliceWeights: number,
): { unique: CodedPlan[]; sameAs: Map<string, string> } {
  const candidates = new Set<CodedPlan>();
  for (const group of groupsOf(coded, sameKind)) {
    const small = group.filter((p) => p.entry.shape.length < 2 || elementCount(p.entry.shape) <= WHOLE_BELOW);
    small.forEach((p) => candidates.add(p));
    const large = group.filter((p) => !small.includes(p));
    for (const same of groupsOf(large, (p) => firstRowHash(reader, p))) same.forEach((p) => candidates.add(p));
  }
  const firstByHash = new Map<string, CodedPlan>();
  const unique: CodedPlan[] = [];
  const sameAs = new Map<string, string>();
  for (const p of coded) {
    const h = candidates.has(p) ? contentHash(reader, p, sliceWeights) : undefined;
    const first = h === undefined ? undefined : firstByHash.get(h);
    if (first) sameAs.set(p.entry.key, first.entry.key);
    else {
      if (h !== undefined) firstByHash.set(h, p);
      unique.push(p);
    }
  }
  return { unique, sameAs };
}
