/**
 * manifest.json: what the archive holds and how to undo every step.
 * Format version 1. Every other entry is listed with its sha256.
 */

import { elementCount, rowElements, type FloatDType, type ModelFormat, type StorageRecord } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';
import type { TileRect } from '../layout/tiles.js';
import type { Role } from '../roles/classify.js';
import type { RangeMode } from '../quantize/uniform.js';
import type { ErrorStats } from '../eval/metrics.js';
import type { Media } from '../codecs/types.js';

export const MANIFEST_NAME = 'manifest.json';
export const FORMAT_VERSION = 1;
/** A manifest larger than this is not one we wrote. */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

export interface TileEntry extends TileRect {
  entry: string;
  /** Video: the frame of `entry` that holds this block. */
  frame?: number;
}

export interface PlaneRecord {
  label: string;
  rows: number;
  cols: number;
  tiles: TileEntry[];
  /** Video: every frame of the plane's entry is rows × cols (blocks padded to it). */
  frame?: { rows: number; cols: number; count: number };
}

export interface CodecRecord {
  name: string;
  media: Media;
  lossless: boolean;
  quality?: number;
  effort?: number;
  /** Set when `--codec auto` fell back to raw codes + zstd, with the reason. */
  fallback?: string;
  /** Video: intra-only or inter frames. */
  gop?: 'intra' | 'inter';
}

export interface TensorRecord {
  key: string;
  name: string;
  dtype: FloatDType;
  shape: number[];
  role: Role;
  reason: string;
  /** Where the tensor sits in the source file (format-specific: see `TensorStorage`). */
  storage: StorageRecord;
  /** Absent for tensors kept exact inside the skeleton. */
  layout?: LayoutSpec;
  quant?: {
    bits: number;
    range: RangeMode;
    /** Per plane: base64 of little-endian [mins…, maxs…] in `rangeDtype`. */
    ranges: string[];
    /**
     * Per plane: float16 (rounded outward, so ranges still cover the data), float32, or step8: one byte per
     * channel b = (e + 40) << 2 | (m − 4) for a step Δ = m·2^e (255: Δ = 0), range [−(2^(bits−1) + ½)Δ, (2^(bits−1) − ½)Δ].
     */
    rangeDtype?: Array<'float16' | 'float32' | 'step8'>;
    channelWidth: number[];
    /** Informational: the encoder used every `stride`-th code; decoding is plain M1. */
    stride?: number;
    /** Informational: ranges were clipped by search rather than min/max. */
    clip?: boolean;
    /** Informational: weights beyond this many σ of their channel are in the exact side entry. */
    outlierSigma?: number;
    /** Informational: step grid, step = relStep × RMS per channel (or layer); zero sits on code 2^(bits−1). */
    relStep?: number;
    /** Randomized Hadamard rotation along plane rows, one seed per plane; decoding applies D·H after dequantization. */
    rotation?: { kind: 'hadamard'; seeds: number[] };
  };
  codec?: CodecRecord;
  planes?: PlaneRecord[];
  /** Entry of weights stored exactly (non-finite ones and outliers): u32 count, u32 index deltas, f32 values. */
  nonFinite?: string;
  /** How many weights that entry holds. */
  exactValues?: number;
  /** Kept tensor stored as float16 (see quantize/half.ts): its values start at element `offset` of `entry`. */
  half?: { entry: string; offset: number };
  /** Another tensor with identical values whose media this one shares. */
  sameAs?: string;
  stats?: ErrorStats;
  /** Bytes of this tensor's media entries in the archive. */
  bytes?: number;
  /**
   * A tensor too large to work on whole, coded as slices of its leading dimension (blocks of output channels
   * of an [out, in] matrix): each slice is coded like a tensor of its own. The record then has no planes,
   * quant or codec of its own; `layout` is the whole tensor's, `stats` and `bytes` cover all slices.
   */
  slices?: SliceRecord[];
}

/** One slice of a sliced tensor: rows [row, row + rows) of the leading dimension, coded on its own. */
export interface SliceRecord {
  row: number;
  rows: number;
  layout: LayoutSpec;
  quant: NonNullable<TensorRecord['quant']>;
  codec: CodecRecord;
  planes: PlaneRecord[];
  nonFinite?: string;
  exactValues?: number;
  stats?: ErrorStats;
  bytes?: number;
}

/**
 * A slice as a tensor record of its own (shape [rows, …rest]), decodable like any other; its values go
 * to the whole tensor from element `offset` on (and to bytes `offset × width` of its storage).
 */
export function sliceAsTensor(t: TensorRecord, s: SliceRecord): { record: TensorRecord; offset: number } {
  const { row, rows } = s;
  // the coding fields only, by name: a hostile slice cannot bring sameAs, half or slices of its own
  const record: TensorRecord = {
    key: t.key,
    name: `${t.name} [rows ${row}–${row + rows - 1}]`,
    dtype: t.dtype,
    shape: [rows, ...t.shape.slice(1)],
    role: t.role,
    reason: t.reason,
    storage: t.storage,
    layout: s.layout,
    quant: s.quant,
    codec: s.codec,
    planes: s.planes,
  };
  if (s.nonFinite !== undefined) record.nonFinite = s.nonFinite;
  if (s.exactValues !== undefined) record.exactValues = s.exactValues;
  if (s.stats !== undefined) record.stats = s.stats;
  if (s.bytes !== undefined) record.bytes = s.bytes;
  return { record, offset: row * rowElements(t.shape) };
}

export interface Manifest {
  format: 'nnmedia';
  version: number;
  createdBy: string;
  source: { format: ModelFormat; file: string; bytes: number; sha256: string };
  skeleton: string;
  /** A large skeleton written in parts: every part's entry in order (the first is `skeleton`). */
  skeletonParts?: string[];
  options: Record<string, unknown>;
  tensors: TensorRecord[];
  /** sha256 and size of every entry but the manifest itself. */
  entries: Record<string, { sha256: string; bytes: number }>;
}

/** What decodes on its own: the record itself, or each slice as a record, with the element offset of its values. */
export function codedParts(t: TensorRecord): Array<{ record: TensorRecord; offset: number }> {
  return t.slices ? t.slices.map((s) => sliceAsTensor(t, s)) : [{ record: t, offset: 0 }];
}

/** A tensor's values, decoded part by part: a sliced tensor's slices each into their rows. */
export async function decodeParts(
  t: TensorRecord,
  decodeOne: (record: TensorRecord) => Promise<Float32Array>,
  bad: (message: string) => never,
): Promise<Float32Array> {
  if (!t.slices) return decodeOne(t);
  const out = new Float32Array(elementCount(t.shape));
  for (const { record, offset } of codedParts(t)) {
    const values = await decodeOne(record);
    if (offset + values.length > out.length) bad('slice outside its tensor (corrupt)');
    out.set(values, offset);
  }
  return out;
}

/** The skeleton's entries, in order: one, unless a large skeleton was written in parts. */
export function skeletonEntries(m: Manifest): string[] {
  return m.skeletonParts ?? [m.skeleton];
}

/** Every media entry of a tensor's planes (all slices), each once. */
export function tileEntries(t: TensorRecord): Set<string> {
  return new Set(codedParts(t).flatMap((c) => (c.record.planes ?? []).flatMap((p) => p.tiles.map((tile) => tile.entry))));
}
