/**
 * Identical tensors (a model's branches that share weights) are encoded once: the others' records point
 * to the first (`sameAs`). Identical means the same values, shape, layout and settings. A fully connected
 * tensor that holds another's transpose and lays out the same plane is stored as that one too (`transposed`).
 */

import { createHash } from 'node:crypto';
import { elementCount, type ModelReader } from '../formats/model.js';
import { slicesOf } from './plan.js';
import { TRANSPOSED_MAX } from '../archive/manifest.js';
import type { CodedPlan } from './stages.js';

/** What tensors must share to be identical: shape, layout and settings. */
// (a weight on the model's own grid, pipeline/model-grid.ts, is one with another weight only on the same grid: a plain
// weight of the same values took a QAT weight's clipped grid, 17 dB)
const sameKind = (plan: CodedPlan): string =>
  JSON.stringify([plan.entry.shape, plan.layout, plan.settings, ...(plan.entry.quantizedBy ? [plan.entry.quantizedBy] : [])]);

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
 * A 2-D fully connected tensor's kind (`flip`: read the other way round, the shape reversed and the layout's memory
 * order flipped): both lay out the same plane (a tied output head exported as a transposed copy of the token
 * embedding: [vocab, width] as `out_in`, its copy [width, vocab] as `in_out`). Undefined for other tensors.
 */
function transposedKind(plan: CodedPlan, flip = true): string | undefined {
  const { layout, entry } = plan;
  if (layout.kind !== 'fc' || entry.shape.length !== 2 || elementCount(entry.shape) > TRANSPOSED_MAX || entry.quantizedBy)
    return undefined;
  const order = flip ? (layout.order === 'in_out' ? 'out_in' : 'in_out') : layout.order;
  const shape = flip ? [entry.shape[1], entry.shape[0]] : entry.shape;
  // (the layout's fields named one by one: a layout object's key order differs between roles)
  return JSON.stringify([shape, layout.nin, layout.nout, order, plan.settings]);
}

/** Elements of `a` [rows, cols] compared with those of `b` [cols, rows] at the same place transposed, bit for bit. */
function isTransposeOf(a: Float32Array, b: Float32Array, rows: number, cols: number, rowOffset = 0): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const total = y.length / cols;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) if (x[r * cols + c] !== y[c * total + rowOffset + r]) return false;
  return true;
}

/**
 * Whether `copy` holds the transpose of `first`'s values: a few of its rows against the first's first column
 * before the whole of it (the first read a slice at a time where it is sliced).
 */
function holdsTranspose(reader: ModelReader, first: CodedPlan, copy: CodedPlan, sliceWeights: number): boolean {
  const [rows, cols] = first.entry.shape;
  const head = reader.readRows(first.entry.key, 0, 1);
  for (let c = 0; c < Math.min(cols, 8); c++) {
    const row = reader.readRows(copy.entry.key, c, 1);
    if (new Uint32Array(row.buffer, row.byteOffset, 1)[0] !== new Uint32Array(head.buffer, head.byteOffset + 4 * c, 1)[0])
      return false;
  }
  const whole = reader.read(copy.entry.key);
  const slices = slicesOf(first, sliceWeights) ?? [{ row: 0, rows }];
  return slices.every((s) => isTransposeOf(reader.readRows(first.entry.key, s.row, s.rows), whole, s.rows, cols, s.row));
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
): { unique: CodedPlan[]; sameAs: Map<string, string>; transposed: Set<string> } {
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
  // a transposed copy of an earlier tensor to encode (of the same settings) is stored as that one, transposed; a
  // tensor others are stored as stays one to encode
  const transposed = new Set<string>();
  const firsts = new Set(sameAs.values());
  const seen = new Map<string, CodedPlan[]>();
  for (const p of [...unique]) {
    const kind = transposedKind(p);
    if (kind === undefined) continue;
    const first = firsts.has(p.entry.key)
      ? undefined
      : seen.get(kind)?.find((q) => !sameAs.has(q.entry.key) && holdsTranspose(reader, q, p, sliceWeights));
    if (first) {
      sameAs.set(p.entry.key, first.entry.key);
      transposed.add(p.entry.key);
      firsts.add(first.entry.key);
      unique.splice(unique.indexOf(p), 1);
    } else {
      const own = transposedKind(p, false)!;
      seen.set(own, [...(seen.get(own) ?? []), p]);
    }
  }
  return { unique, sameAs, transposed };
}
