/**
 * An archive in a few numbers, the same for `compress`, `inspect` and `eval`: sizes, the ratio to the source
 * model, bits per weight, and how many tensors were compressed or kept. Counts what the manifest records, so an
 * archive read back gives what compress printed; `inspect` also passes the entries' bytes in the file (media and
 * exact side values as stored).
 */

import { elementCount } from '../formats/model.js';
import { entryBytes, ownEntries, tileEntries, type Manifest, type TensorRecord } from '../archive/manifest.js';

export interface ArchiveTotals {
  /** Every tensor the manifest records (floating-point tensors of the source). */
  tensors: number;
  /** Tensors laid out as media (duplicates included: they share another tensor's media). */
  compressedTensors: number;
  /** Of those, stored once for an identical tensor (`sameAs`). */
  duplicates: number;
  /** Of the duplicates, those stored as the other's transpose (`transposed`). */
  transposed: number;
  /** Tensors kept exact inside the model skeleton. */
  keptExact: number;
  /** Tensors kept as float16 (`--half-kept`). */
  keptHalf: number;
  /** Weights in compressed tensors: the denominator of bits per weight. */
  compressedWeights: number;
  /** Weights in kept tensors (exact or float16). */
  keptWeights: number;
  /** Bytes of the compressed tensors' media entries. */
  mediaBytes: number;
  /**
   * Bytes of the compressed tensors' exact side values (outliers kept exact, non-finite weights) beside their
   * media: a tensor's own bytes count both, so the tensors' bytes add up to mediaBytes + sideBytes.
   */
  sideBytes: number;
  /** The whole archive. */
  archiveBytes: number;
  /** The source model file. */
  sourceBytes: number;
  /** sourceBytes / archiveBytes. */
  ratio: number;
  /** archiveBytes × 8 / compressedWeights (manifest, skeleton and kept tensors included). */
  bitsPerWeight: number;
  /** Compressed tensors coded on the model's own int8 grid (its QuantizeLinear scales, pipeline/model-grid.ts). */
  modelGrid: number;
}

const isKept = (t: TensorRecord): boolean => !t.layout;

/** `sizes`: the bytes each entry takes in the file (Archive.entrySizes); without them, the bytes the manifest records. */
export function archiveTotals(m: Manifest, archiveBytes: number, sizes?: ReadonlyMap<string, number>): ArchiveTotals {
  const compressed = m.tensors.filter((t) => !isKept(t));
  const kept = m.tensors.filter(isKept);
  const compressedWeights = compressed.reduce((s, t) => s + elementCount(t.shape), 0);
  const media = new Set(compressed.flatMap((t) => [...tileEntries(t)]));
  const side = new Set(compressed.flatMap((t) => [...ownEntries(t)].filter((e) => !media.has(e))));
  const bytesOf = (entries: Set<string>): number =>
    [...entries].reduce((s, e) => s + (sizes?.get(e) ?? entryBytes(m, e) ?? 0), 0);
  return {
    tensors: m.tensors.length,
    compressedTensors: compressed.length,
    duplicates: compressed.filter((t) => t.sameAs).length,
    transposed: compressed.filter((t) => t.transposed).length,
    keptExact: kept.filter((t) => !t.half).length,
    keptHalf: kept.filter((t) => t.half).length,
    compressedWeights,
    keptWeights: kept.reduce((s, t) => s + elementCount(t.shape), 0),
    mediaBytes: bytesOf(media),
    sideBytes: bytesOf(side),
    archiveBytes,
    sourceBytes: m.source.bytes,
    ratio: archiveBytes > 0 ? m.source.bytes / archiveBytes : 0,
    bitsPerWeight: compressedWeights > 0 ? (archiveBytes * 8) / compressedWeights : 0,
    modelGrid: compressed.filter((t) => t.quant?.modelGrid || t.slices?.some((s) => s.quant.modelGrid)).length,
  };
}

/** A count with thousands separators: 1,807,522. */
export const count = (n: number): string => n.toLocaleString('en-US');

/** `6.46×` */
export const times = (r: number): string => `${r >= 100 ? r.toFixed(0) : r.toFixed(2)}×`;

/** "6.46× smaller", or "1.16× larger" for an archive larger than its source (a tiny model's manifest and gate record). */
export const sizeChange = (r: number): string => (r >= 1 || !(r > 0) ? `${times(r)} smaller` : `${times(1 / r)} larger`);

/** "87 kept (10,234 weights: 60 exact, 27 as float16)", or "" when nothing was kept. */
export function keptPhrase(t: ArchiveTotals): string {
  const kept = t.keptExact + t.keptHalf;
  if (!kept) return '';
  // (the exact/float16 split counts tensors, as the phrase's first number does, not weights)
  const how = !t.keptHalf ? 'exact' : t.keptExact ? `${count(t.keptExact)} exact, ${count(t.keptHalf)} as float16` : 'as float16';
  return `${count(kept)} tensor${kept === 1 ? '' : 's'} kept (${count(t.keptWeights)} weights), ${how}`;
}

/** What no compressed tensor means: bits per weight has no denominator, and the model's weights are elsewhere. */
const NOTHING_COMPRESSED =
  'no tensor compressed: no floating-point tensor was found to be a weight matrix or kernel (integer tensors, such as an already quantized model’s weights, stay in the skeleton, deflated; --config rules give a tensor a role)';

/** Bits per weight with `digits` decimals, or why there is no such number (no compressed weights). */
export function bitsPerWeightText(t: Pick<ArchiveTotals, 'bitsPerWeight' | 'compressedWeights'>, digits = 3): string {
  return t.compressedWeights > 0 ? t.bitsPerWeight.toFixed(digits) : 'none (no tensor compressed)';
}

/**
 * Bits per weight are the whole archive over the coded weights. Where the coded tensors are under half of it and
 * that is more than float16 a weight, the number says little of them: an already quantized model (QDQ int8, int4
 * MatMulNBits) keeps its integer weights in the skeleton, and a transformer exported so codes only its embedding
 * (found by a new-user sweep: "3 tensors compressed … at 44.373 bits/weight"). Then their codes' own figure is given.
 */
function mostlyRest(t: ArchiveTotals): string {
  if (!(t.bitsPerWeight > 16) || t.mediaBytes * 2 >= t.archiveBytes) return '';
  const own = (t.mediaBytes * 8) / t.compressedWeights;
  return ` (their codes ${own.toFixed(3)}; most of the archive is the rest of the model, e.g. integer weights of an already quantized model, stored as they are)`;
}

/** The two lines compress prints: sizes and ratio, then what was compressed at how many bits. */
export function summaryLines(output: string, t: ArchiveTotals, source: string): string[] {
  const compressed = t.compressedWeights
    ? `${count(t.compressedTensors)} tensor${t.compressedTensors === 1 ? '' : 's'} compressed (${count(t.compressedWeights)} weights) at ${t.bitsPerWeight.toFixed(3)} bits/weight${mostlyRest(t)}`
    : NOTHING_COMPRESSED;
  const kept = keptPhrase(t);
  return [
    `${output}: ${count(t.archiveBytes)} bytes, from ${count(t.sourceBytes)} (${source}): ${sizeChange(t.ratio)}`,
    `  ${compressed}${kept ? `; ${kept}` : ''}`,
    ...(t.modelGrid
      ? [
          `  ${count(t.modelGrid)} of them on the model's own int8 grid (the scales of the QuantizeLinear it rounds them with): they decode to the integers it makes of them`,
        ]
      : []),
  ];
}

/** A kept tensor's reason in a summary: sizes of small tensors folded into one reason. */
export function keptReason(reason: string): string {
  return /^small \(\d+ elements\)$/.test(reason) ? 'small' : reason;
}

/** "187 small, 15 rank < 2 (bias or norm), …" (most frequent first). */
export function reasonCounts(reasons: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const r of reasons) counts.set(keptReason(r), (counts.get(keptReason(r)) ?? 0) + 1);
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([r, n]) => `${count(n)} ${r}`)
    .join(', ');
}
