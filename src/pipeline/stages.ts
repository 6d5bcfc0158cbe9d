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

/** A codec to try, by name (plans cross to worker threads), with its options resolved for the tensor's bits. */
export interface CodecChoice {
  readonly name: string;
  readonly options: CodecOptions;
  /** Try again at this effort when the first result is under `below` of the codes' order-0 entropy (structure to find). */
  readonly refine?: { readonly effort: number; readonly below: number };
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
  | { readonly kind: 'same'; readonly sameAs: string; readonly stats?: ErrorStats };
