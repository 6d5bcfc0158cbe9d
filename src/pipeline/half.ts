/**
 * Kept float32/float64 tensors whose float16 cast is safe (quantize/half.ts; biases rounded to bfloat16's mantissa), stored one after another in
 * one entry instead of exactly in the skeleton. Biases and norms: a kept tensor larger than a slice stays
 * exact in the skeleton, which is streamed.
 */

import { createHash } from 'node:crypto';
import { errorStats } from '../eval/metrics.js';
import { elementCount, type ModelReader } from '../formats/model.js';
import { concatBytes } from '../io/bytes.js';
import { HALF_ENTRY, activationRoundingOp, exactUse, fromHalf, keptHalf, keptMantissaBits } from '../quantize/half.js';
import type { TensorOutcome, TensorPlan } from './stages.js';

export interface HalfKept {
  /** The entry's bytes: every tensor's float16 values, one after another. */
  readonly data: Uint8Array;
  /** What happened to each of those tensors (by key). */
  readonly outcomes: ReadonlyMap<string, Extract<TensorOutcome, { kind: 'half' }>>;
}

export function halfKept(reader: ModelReader, plans: readonly TensorPlan[], maxWeights: number): HalfKept | undefined {
  // a graph that rounds its activations while it runs keeps its scales and biases exact (see activationRoundingOp)
  if (activationRoundingOp(reader.opTypes)) return undefined;
  const parts: Uint8Array[] = [];
  const outcomes = new Map<string, Extract<TensorOutcome, { kind: 'half' }>>();
  // identical tensors (a model's branches that share biases) are stored once and point at the same values
  const byContent = new Map<string, Extract<TensorOutcome, { kind: 'half' }>>();
  let offset = 0;
  for (const p of plans) {
    if (p.kind !== 'kept' || (p.entry.dtype !== 'float32' && p.entry.dtype !== 'float64')) continue;
    if (elementCount(p.entry.shape) > maxWeights) continue;
    // a use that decides a shape, an index, a decision or a phase takes the exact values (directly, past data
    // movement, or past arithmetic)
    if (exactUse(p.entry.uses) || exactUse(p.entry.consumers ?? []) || exactUse(p.entry.reaches ?? [])) continue;
    // an input's default (a threshold, a temperature) is a setting the caller may also give: it keeps its value
    if (p.entry.overridable) continue;
    const values = reader.read(p.entry.key);
    const bits = keptMantissaBits(p.entry.consumers ?? p.entry.uses);
    const bytes = values.length ? keptHalf(values, bits) : undefined;
    if (!bytes) continue;
    // the same values kept at another precision (a bias and a norm) are another tensor
    const content = createHash('sha256')
      .update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
      .update(`/${bits}`)
      .digest('hex');
    const same = byContent.get(content);
    if (same) {
      outcomes.set(p.entry.key, same);
      continue;
    }
    const outcome: Extract<TensorOutcome, { kind: 'half' }> = {
      kind: 'half',
      half: { entry: HALF_ENTRY, offset },
      stats: errorStats(values, fromHalf(bytes, 0, values.length)),
    };
    outcomes.set(p.entry.key, outcome);
    byContent.set(content, outcome);
    parts.push(bytes);
    offset += values.length;
  }
  return outcomes.size ? { data: concatBytes(parts), outcomes } : undefined;
}
