/**
 * The values that pass between the compression stages, each immutable once made:
 *
 *   plan.ts      ModelReader + ResolvedOptions  → TensorPlan[]       (KeptPlan | CodedPlan)
 *   prepare.ts   values + CodedPlan              → PreparedTensor     (planes laid out, outliers marked, rotated)
 *   quantize.ts  PreparedTensor + settings       → QuantizedTensor    (codes, ranges, exact side values)
 *   media.ts     codes of the planes + a codec   → EncodedMedia       (entries of tiles, frames or signals)
 *   encode.ts    EncodeUnit (a tensor or slice)  → EncodedTensor      (entries + its coding record + error sums)
 *   write.ts     TensorPlan[] + EncodedTensor…   → the archive, its manifest assembled once from TensorOutcome
 *
 * A kept tensor and a coded one are two types, not one with optional fields; the on-disk TensorRecord is
 * built once, at the end, from what was actually done (records.ts).
 */

import type { CodecOptions } from '../codecs/types.js';
import type { TensorEntry, StorageRecord } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';
import type { Role } from '../roles/classify.js';
import type { ErrorStats, ErrorSums } from '../eval/metrics.js';
import type { SliceRecord } from '../archive/manifest.js';
import type { TensorStatistics } from '../quantize/registry.js';
import type { TensorStatistics as LayerStatistics } from '../compensate/statistics.js';
import type { TensorSettings } from './options.js';
import type { MeasuredScales } from '../quantize/step.js';

interface PlanBase {
  readonly kind: 'kept' | 'coded';
  /** Position in the model's tensor list (names the tensor's folder and seeds its rotation). */
  readonly index: number;
  readonly entry: TensorEntry;
  readonly role: Role;
  /** Why the role (shape, graph use, a config rule…). */
  readonly reason: string;
  readonly storage: StorageRecord;
}

/** A tensor left in the skeleton (or stored as float16): biases, norms, anything not laid out as media. */
export interface KeptPlan extends PlanBase {
  readonly kind: 'kept';
}

/**
 * A raw codec's second try, at `effort`, from how its first result compares with the codes' order-0 entropy H.
 * Under `below`·H the codes have structure beyond a histogram (a Fourier basis, pruned blocks) that zstd-19's
 * optimal parsing finds more of: measured 2.67 vs 3.22 bits/weight on an STFT front end, 0.97 vs 1.14 on a
 * block-sparse layer. With `skewed`, 8-bit codes written over `above`·H (and by more than `excess` bits: below
 * that, a small tensor's own headers make the excess) try again too: a histogram zstd-3's literal coder spends too
 * much on, a tensor whose weights are mostly exact zeros — 5.03 bits a code where H is 4.52 at 50 % zeros, 1.70
 * where H is 1.15 at 90 %, 0.240 where H is 0.144 at 99 % — where zstd-19 codes the runs of zeros as matches:
 * 4.56, 1.41 and 0.195 (levels 16–18 reach the first two but not the third). Dense 8-bit weight codes on the
 * default grid, which zstd-3 writes within 1 % of H, pay for neither (zstd-19: ~0.5 s a million codes). 16-bit
 * codes are left out: zstd writes them at 1.2–1.3× their symbol entropy at any level. Dense codes can be skewed
 * too: a heavy-tailed matrix (a language model's down projection) whose codes crowd a few values is written at
 * 1.02–1.03× H, and zstd-19 gains nothing there; a coarse step grid's (`--step 0.25`) at 1.06–1.15× H, where
 * zstd-19 gains 1–10 % but PNG is smaller still. So a skewed retry of many codes is tried only where one code takes
 * a good part of them, and on a sample of them first (encode.ts `refinePays`).
 */
export interface RefineRule {
  readonly effort: number;
  readonly below: number;
  readonly skewed?: { readonly above: number; readonly excess: number };
}

/**
 * Why a raw candidate of `bits` bits (for n-bit codes of order-0 entropy `entropy` bits) is tried again at the
 * rule's effort, if it is: written under the entropy (`structure`), or well over it (`skewed`).
 */
export function refineTrigger(
  rule: RefineRule,
  bits: number,
  entropy: number,
  codeBits: number,
): 'structure' | 'skewed' | undefined {
  if (bits < rule.below * entropy) return 'structure';
  const s = rule.skewed;
  return s && codeBits === 8 && bits > s.above * entropy && bits - entropy > s.excess ? 'skewed' : undefined;
}

/** A codec to try, by name (plans cross to worker threads), with its options resolved for the tensor's bits. */
export interface CodecChoice {
  readonly name: string;
  readonly options: CodecOptions;
  /** When to try again at a higher effort (RefineRule). */
  readonly refine?: RefineRule;
  /**
   * Bytes this candidate must save over the best before it to be kept: what its choice costs elsewhere (a
   * longer codec name in the deflated manifest, a newer format version for `zstd-sign`).
   */
  readonly margin?: number;
}

/** A tensor laid out as media and coded. */
export interface CodedPlan extends PlanBase {
  readonly kind: 'coded';
  readonly layout: LayoutSpec;
  readonly settings: Readonly<TensorSettings>;
  /** Candidate codecs: one, or under `auto` the lossless ones whose smallest result wins (zstd the floor). */
  readonly codecs: readonly CodecChoice[];
  readonly auto: boolean;
}

export type TensorPlan = KeptPlan | CodedPlan;

/** Rows [row, row + rows) of a tensor's leading dimension, the k-th slice of a tensor too large to code whole. */
export interface SliceSpec {
  readonly k: number;
  readonly row: number;
  readonly rows: number;
}

/** A piece of encoding work: a whole tensor, or one slice of it; `stats` for a quantizer that uses calibration. */
export interface EncodeUnit {
  readonly plan: CodedPlan;
  readonly slice?: SliceSpec;
  readonly stats?: TensorStatistics;
  /** Layer-input statistics (`compensate`): the final codes are chosen by error-compensating rounding. */
  readonly compensation?: LayerStatistics;
  /** The unit's scales as rate control measured them (an [out, in] matrix's step grid: found once, not per encode). */
  readonly scales?: MeasuredScales;
}

/** How a unit given `compensation` was quantized (for the compress log; not recorded in the manifest). */
export interface UnitCompensation {
  /** Planes compensated in full, in part, or rounded to nearest. */
  readonly gptq: number;
  readonly mixed: number;
  readonly rtn: number;
  /** Why some groups were rounded to nearest. */
  readonly reason?: string;
}

/** What coding a tensor (or one slice of it) puts in its record. */
export type CodedTensor = Omit<SliceRecord, 'row' | 'rows'>;

/** An encoded unit: its archive entries, its coding record and its error sums (which add up over slices). */
export interface EncodedTensor {
  readonly entries: ReadonlyArray<readonly [string, Uint8Array]>;
  readonly coded: CodedTensor;
  readonly sums: ErrorSums;
  readonly compensation?: UnitCompensation;
}

/** What was done with a tensor: the manifest's record is made from this and its plan. */
export type TensorOutcome =
  | { readonly kind: 'kept' }
  | { readonly kind: 'half'; readonly half: { entry: string; offset: number }; readonly stats: ErrorStats }
  | { readonly kind: 'coded'; readonly coded: CodedTensor }
  | { readonly kind: 'sliced'; readonly slices: readonly SliceRecord[]; readonly stats: ErrorStats; readonly bytes: number }
  | { readonly kind: 'same'; readonly sameAs: string; readonly transposed?: true; readonly stats?: ErrorStats };
