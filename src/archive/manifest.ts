/**
 * manifest.json: what the archive holds and how to undo every step.
 * Format version 2 (reads 1 too). Every other ZIP entry is listed with its sha256; small media entries
 * live inside pack entries (`packs`), verified with their pack.
 */

import { decompress as zstdDecompress } from 'fzstd';
import { elementCount, rowElements, type FloatDType, type ModelFormat, type StorageRecord } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';
import type { TileRect } from '../layout/tiles.js';
import type { Role } from '../roles/classify.js';
import type { RangeMode } from '../quantize/uniform.js';
import type { RangeDtype } from '../quantize/tensor.js';
import type { ErrorStats } from '../eval/metrics.js';
import type { Media } from '../codecs/types.js';
import { HALF_ENTRY } from '../quantize/half.js';

export const MANIFEST_NAME = 'manifest.json';
/**
 * The newest version this build writes: 7 where a tensor is a stack of matrices (`stack` layout), 6 where a tensor is stored as another's transpose (`transposed`), 5 where a tensor leaves output channels of zeros out of its planes (`zeroChannels`), 4 where the archive uses what version 3 did not have (`step20`
 * ranges, compressed or skeleton pack members, the `brotli` codecs), 3 where a tensor uses a codec version 2 did not have (`zstd-sign`), 2
 * otherwise (so an archive that needs nothing new opens in an older reader; see `formatVersionOf`).
 */
export const FORMAT_VERSION = 7;
/**
 * Versions this build reads. 2 added `packs` (small entries inside one ZIP entry) and float16 kept tensors
 * rounded to fewer mantissa bits (the same float16 bytes to a reader); a version-1 archive has neither.
 * 3 added the `zstd-sign` codec. 4 added `step20` ranges, brotli pack members (`[name, bytes, size]`:
 * the side entries of a small archive inside its one pack) and the `brotli` and `brotli-sign` codecs. 5 added
 * `zeroChannels` (output channels of exact zeros left out of a tensor's planes). 6 added `transposed` (a tensor
 * stored once for its transpose). 7 added the `stack` layout (stacked matrices, a plane each: an MoE's experts).
 */
export const READ_VERSIONS: readonly number[] = [1, 2, 3, 4, 5, 6, 7];
/** Codecs a version-2 reader does not know: an archive that uses one is version 3. */
const VERSION_3_CODECS: ReadonlySet<string> = new Set(['zstd-sign']);
/** Codecs a version-3 reader does not know: an archive that uses one is version 4. */
const VERSION_4_CODECS: ReadonlySet<string> = new Set(['brotli', 'brotli-sign']);

/** The version an archive of these tensors, packs and skeleton parts is written as: the lowest that reads all of them. */
export function formatVersionOf(
  tensors: readonly TensorRecord[],
  packs?: Manifest['packs'],
  skeleton: readonly string[] = [],
): number {
  const parts = tensors.flatMap((t) => [t, ...(t.slices ?? [])]);
  const members = Object.values(packs ?? {}).flat();
  if (tensors.some((t) => t.layout?.kind === 'stack')) return 7;
  if (tensors.some((t) => t.transposed)) return 6;
  if (parts.some((p) => p.zeroChannels !== undefined)) return 5;
  if (members.some((m) => m.length > 2 || skeleton.includes(m[0]))) return 4;
  if (parts.some((p) => p.quant?.rangeDtype?.includes('step20') || (p.codec && VERSION_4_CODECS.has(p.codec.name)))) return 4;
  return parts.some((p) => p.codec !== undefined && VERSION_3_CODECS.has(p.codec.name)) ? 3 : 2;
}
/**
 * The largest transposed copy (`transposed`: 2^26 weights, 256 MB of float32): it is written back whole (each slice of
 * the tensor it is stored as is a block of its columns), where other tensors go a slice at a time. The encoder stores
 * no larger one so, and a reader refuses one.
 */
export const TRANSPOSED_MAX = 2 ** 26;
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
    /**
     * Per plane: base64 of the ranges in `rangeDtype` (little-endian [mins…, maxs…], or the steps), or a
     * reference `@<entry>#<offset>` to those bytes in a binary entry (model/ranges.bin), as long as the
     * plane's channels × the dtype's bytes per channel.
     */
    ranges: string[];
    /**
     * Per plane: float16 (rounded outward, so ranges still cover the data), float32, or a step per channel of
     * a zero-centred grid, range [−(2^(bits−1) + ½)Δ, (2^(bits−1) − ½)Δ]: step8, one byte b = (e + 40) << 2 | (m − 4)
     * for Δ = m·2^e (255: Δ = 0); step24, the top three bytes of Δ's float32, little-endian (0: Δ = 0).
     */
    rangeDtype?: RangeDtype[];
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
    /**
     * Informational: the steps are the model's own QuantizeLinear scales and the codes the integers it rounds the
     * weights to (pipeline/model-grid.ts); decoding is plain M1.
     */
    modelGrid?: boolean;
  };
  codec?: CodecRecord;
  planes?: PlaneRecord[];
  /**
   * Version 5: base64 of a bit mask over the output channels (channel c is bit c % 8 of byte c >> 3) whose every
   * weight is +0.0, left out of the planes, which then hold the other channels in order: layout, planes and exact
   * side values are those of the tensor of that many output channels (layout/channels.ts).
   */
  zeroChannels?: string;
  /** Entry of weights stored exactly (non-finite ones and outliers): u32 count, u32 index deltas, f32 values. */
  nonFinite?: string;
  /** How many weights that entry holds. */
  exactValues?: number;
  /** Kept tensor stored as float16 (see quantize/half.ts): its values start at element `offset` of `entry`. */
  half?: { entry: string; offset: number };
  /** Another tensor with identical values whose media this one shares. */
  sameAs?: string;
  /**
   * Version 6, with `sameAs`: this tensor is the transpose of that one (both 2-D, [a, b] of its [b, a]; a tied
   * output head exported as a transposed copy of the token embedding). Its layout reads the same plane in the
   * other memory order (fully connected, `order` the other way); its values are that tensor's, transposed.
   */
  transposed?: true;
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
  /** The slice's output channels of zeros left out (TensorRecord.zeroChannels). */
  zeroChannels?: string;
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
  if (s.zeroChannels !== undefined) record.zeroChannels = s.zeroChannels;
  if (s.nonFinite !== undefined) record.nonFinite = s.nonFinite;
  if (s.exactValues !== undefined) record.exactValues = s.exactValues;
  if (s.stats !== undefined) record.stats = s.stats;
  if (s.bytes !== undefined) record.bytes = s.bytes;
  return { record, offset: row * rowElements(t.shape) };
}

/** One output's comparison as the manifest records it. */
export interface OutputQuality {
  name: string;
  kind: string;
  score: number;
  cosine: number;
  relRms: number;
  maxAbs: number;
  agreement?: number;
  iou?: number;
  decisions?: number;
  /** binary: the original makes its rarer decision on (almost) no element of the held-back inputs. */
  oneSided?: boolean;
  /** The original gives one value on every element of the held-back inputs (eval/fidelity.ts). */
  constant?: boolean;
  state?: boolean;
  /** A detector's class scores in this output, judged on its confident anchors (eval/fidelity.ts). */
  scores?: { channels: string; decisions: number; agreement: number; fewDecisions?: boolean };
  /** Keypoint heatmaps: their clear peaks, and the share that stay within `tolerance` pixels (eval/fidelity.ts). */
  keypoints?: { decisions: number; agreement: number; tolerance: number; fewDecisions?: boolean };
  /** A detector's detections after NMS, matched as sets by class and box overlap (eval/detections.ts). */
  detections?: { boxes: string; decisions: number; missed: number; fewDecisions?: boolean };
}

/** The manifest's `quality`: the quality gate's verdict (pipeline/gate.ts) on the archive it is part of. */
export interface QualityRecord {
  /** False when the model could not be run (the reason says why): nothing was measured. */
  checked: boolean;
  reason?: string;
  /** The worst output's score on the held-back samples (1 = identical outputs). */
  fidelity?: number;
  /** The floor it was held to. */
  minFidelity?: number;
  passed?: boolean;
  worst?: string;
  /** Held-back samples compared. */
  samples?: number;
  /** The set's one sample, which the probes used too: the measurement is not on unseen data. */
  shared?: boolean;
  /** The inputs were generated from the graph, not given: the measurement says little about real data. */
  synthetic?: boolean;
  /** What the calibration set is, e.g. `200 images from data/ocr (…)`. */
  calibration?: string;
  outputs?: OutputQuality[];
  /** `If` branches (node: branch) no calibration sample took: their tensors kept the default grid. */
  untakenBranches?: string[];
  /** `--judge-output`: the only outputs compared (absent: every output). */
  judged?: string[];
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
  /** sha256 and size of every ZIP entry but the manifest itself. */
  entries: Record<string, { sha256: string; bytes: number }>;
  /**
   * Version 2: entries stored one after another inside a ZIP entry (a pack, listed in `entries`), by pack:
   * each member's name and size, in order (a member starts where the one before it ends). A member is read
   * from its pack, verified as a whole: ~100 bytes of ZIP headers and a 32-byte sha256 fewer per entry.
   */
  packs?: Record<string, PackMember[]>;
  /** The quality gate's measurement of this archive (absent in archives written before it existed). */
  quality?: QualityRecord;
}

/**
 * The manifest as written (version 2): records without what the reader restores (`expandManifest`): a
 * tensor's `name` where it equals its `key` (every ONNX tensor), and a plane coded as one tile that covers it
 * as `entry` in place of `tiles` (measured on Silero VAD v4: 520 B of 4.7 KB deflated). Version 4 also
 * leaves out the reason of a tensor kept for being small, dtype float32, a kept tensor's role `other` and
 * options at their defaults, and writes a float16
 * kept tensor's record as its offset in the kept-tensor entry, an ONNX tensor's raw storage as its path, and the
 * raw-codes fallback note as `true`.
 */
export function manifestJson(m: Manifest): string {
  const plane = (p: PlaneRecord): PlaneRecord | CompactPlane => {
    const [t, more] = p.tiles;
    if (!t || more || p.frame || t.frame !== undefined || t.row !== 0 || t.col !== 0 || t.rows !== p.rows || t.cols !== p.cols)
      return p;
    return { label: p.label, rows: p.rows, cols: p.cols, entry: t.entry };
  };
  const planes = <T extends { planes?: PlaneRecord[] }>(r: T): T => (r.planes ? { ...r, planes: r.planes.map(plane) } : r);
  const v4 = m.version >= 4;
  const sizes = storedSizes(m);
  // version 4: `bytes` left out where it is what the reader adds up from the entries (ownBytes)
  type Coded = { codec?: CodecRecord; bytes?: number; planes?: PlaneRecord[]; nonFinite?: string };
  const compactCodec = <T extends Coded>(r: T, full: Coded): T => {
    if (!v4) return r;
    const out = { ...r };
    if (r.codec?.fallback === RAW_FALLBACK) out.codec = { ...r.codec, fallback: true as unknown as string };
    if (full.planes && full.bytes !== undefined && full.bytes === ownBytes(full.planes, full.nonFinite, sizes)) delete out.bytes;
    return out;
  };
  const tensors = m.tensors.map((t) => {
    const { name, ...rest } = t;
    const r = compactCodec({ ...planes(name === t.key ? rest : t) }, t) as Partial<Omit<TensorRecord, 'half'>> & {
      half?: TensorRecord['half'] | number;
    };
    if (v4) {
      // a sliced tensor's bytes are its slices', a duplicate's none
      if (t.slices && t.bytes === t.slices.reduce((n, x) => n + (x.bytes ?? NaN), 0)) delete r.bytes;
      if (t.sameAs !== undefined && t.bytes === 0) delete r.bytes;
      // a small tensor's reason is what the reader restores from its shape; a float16 kept tensor in the
      // kept-tensor entry is its offset there
      if (t.role === 'other' && t.reason === smallReason(t.shape)) delete r.reason;
      // float32, and a kept tensor's role `other`: the common cases, restored when absent
      if (t.dtype === 'float32') delete r.dtype;
      if (t.role === 'other' && !t.layout) delete r.role;
      if (t.half?.entry === HALF_ENTRY) r.half = t.half.offset;
      // an ONNX tensor's raw data: its path alone
      const st = t.storage as unknown as Record<string, unknown>;
      if (Object.keys(st).length === 2 && st.form === 'raw' && typeof st.path === 'string')
        (r as Record<string, unknown>).storage = st.path;
    }
    return t.slices ? { ...r, slices: t.slices.map((s) => compactCodec(planes(s), s)) } : r;
  });
  return JSON.stringify({ ...m, ...(v4 ? { options: compactOptions(m.options) } : {}), tensors });
}

/** What `codec.fallback` says where `--codec auto` chose raw codes (version 4 writes `true` for it). */
export const RAW_FALLBACK = 'raw codes (zstd or brotli) were smaller than every image codec';

/** Stored bytes of every ZIP entry and pack member a manifest lists (its `bytes`), from a manifest not yet checked. */
function storedSizes(m: unknown): Map<string, number> {
  const sizes = new Map<string, number>();
  if (!isRecord(m)) return sizes;
  if (isRecord(m.entries))
    for (const [name, e] of Object.entries(m.entries)) if (isRecord(e) && typeof e.bytes === 'number') sizes.set(name, e.bytes);
  if (isRecord(m.packs))
    for (const members of Object.values(m.packs))
      if (Array.isArray(members))
        for (const member of members as unknown[])
          if (Array.isArray(member) && typeof member[0] === 'string' && typeof member[1] === 'number')
            sizes.set(member[0], member[1]);
  return sizes;
}

/**
 * The bytes a coded record's entries take as stored (its media entries, each once, and its exact side values):
 * what the encoder records as `bytes`. Undefined when an entry is not listed (left for the checks to refuse).
 */
function ownBytes(planes: unknown, nonFinite: unknown, sizes: ReadonlyMap<string, number>): number | undefined {
  if (!Array.isArray(planes)) return undefined;
  const names = new Set<string>();
  for (const p of planes as unknown[])
    if (isRecord(p) && Array.isArray(p.tiles))
      for (const t of p.tiles as unknown[]) if (isRecord(t) && typeof t.entry === 'string') names.add(t.entry);
  if (typeof nonFinite === 'string') names.add(nonFinite);
  let n = 0;
  for (const name of names) {
    const b = sizes.get(name);
    if (b === undefined) return undefined;
    n += b;
  }
  return n;
}

/**
 * Options a version-4 manifest leaves out when they have these values (the reader puts them back, in this
 * order: the first four lead the options, the last two close them, as `echoOf` orders them).
 */
const DEFAULT_OPTIONS = { media: 'image', codec: 'auto', bits: 8, range: 'channel', nonFinite: 'error', rules: [] as unknown[] };
const LEADING_OPTIONS = ['media', 'codec', 'bits', 'range'] as const;
const CLOSING_OPTIONS = ['nonFinite', 'rules'] as const;

function compactOptions(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o))
    if (!(
      Object.hasOwn(DEFAULT_OPTIONS, k) &&
      JSON.stringify(v) === JSON.stringify(DEFAULT_OPTIONS[k as keyof typeof DEFAULT_OPTIONS])
    ))
      out[k] = v;
  return out;
}

function expandOptions(o: Record<string, unknown>): Record<string, unknown> {
  // in `echoOf`'s order: the leading four, then the rest as written, then the closing two
  const out: Record<string, unknown> = {};
  for (const k of LEADING_OPTIONS) out[k] = Object.hasOwn(o, k) ? o[k] : DEFAULT_OPTIONS[k];
  for (const [k, v] of Object.entries(o))
    if (!(LEADING_OPTIONS as readonly string[]).includes(k) && !(CLOSING_OPTIONS as readonly string[]).includes(k)) out[k] = v;
  for (const k of CLOSING_OPTIONS) out[k] = Object.hasOwn(o, k) ? o[k] : k === 'rules' ? [] : DEFAULT_OPTIONS[k];
  return out;
}

/** The reason a tensor too small to code is kept (roles/classify.ts), left out of version-4 records. */
function smallReason(shape: readonly number[]): string {
  return `small (${elementCount(shape)} elements)`;
}

/** A plane of one tile that covers it, as written (version 2). */
interface CompactPlane extends Omit<PlaneRecord, 'tiles'> {
  entry: string;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A parsed manifest's compact records (`manifestJson`) restored in place, before any check: a missing `name`
 * is the `key`, a plane's `entry` is one tile covering the plane. Whatever is not of that form is left for
 * `checkManifest` to judge.
 */
export function expandManifest(m: unknown): void {
  if (!isRecord(m) || !Array.isArray(m.tensors)) return;
  const expandPlanes = (r: Record<string, unknown>): void => {
    if (!Array.isArray(r.planes)) return;
    for (const p of r.planes as unknown[])
      if (isRecord(p) && p.tiles === undefined && typeof p.entry === 'string') {
        p.tiles = [{ row: 0, col: 0, rows: p.rows, cols: p.cols, entry: p.entry }];
        delete p.entry;
      }
  };
  const v4 = typeof m.version === 'number' && m.version >= 4;
  if (v4 && isRecord(m.options)) m.options = expandOptions(m.options);
  const sizes = v4 ? storedSizes(m) : new Map<string, number>();
  // (after its planes are expanded)
  const expandCodec = (r: Record<string, unknown>): void => {
    if (!v4) return;
    if (isRecord(r.codec) && r.codec.fallback === true) r.codec.fallback = RAW_FALLBACK;
    if (r.bytes === undefined && Array.isArray(r.planes)) {
      const b = ownBytes(r.planes, r.nonFinite, sizes);
      if (b !== undefined) r.bytes = b;
    }
  };
  for (const t of m.tensors as unknown[]) {
    if (!isRecord(t)) continue;
    if (t.name === undefined && typeof t.key === 'string') t.name = t.key;
    if (v4 && t.dtype === undefined) t.dtype = 'float32';
    if (v4 && t.role === undefined && t.layout === undefined) t.role = 'other';
    if (
      v4 &&
      t.reason === undefined &&
      t.role === 'other' &&
      Array.isArray(t.shape) &&
      t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)
    )
      t.reason = smallReason(t.shape as number[]);
    if (v4 && typeof t.half === 'number') t.half = { entry: HALF_ENTRY, offset: t.half };
    if (v4 && typeof t.storage === 'string') t.storage = { form: 'raw', path: t.storage };
    if (Array.isArray(t.slices))
      for (const s of t.slices as unknown[])
        if (isRecord(s)) {
          expandPlanes(s);
          expandCodec(s);
        }
    expandPlanes(t);
    expandCodec(t);
    if (v4 && t.bytes === undefined && Array.isArray(t.slices)) {
      const total = (t.slices as unknown[]).reduce<number>(
        (n, x) => n + (isRecord(x) && typeof x.bytes === 'number' ? x.bytes : NaN),
        0,
      );
      if (Number.isFinite(total)) t.bytes = total;
    }
    if (v4 && t.bytes === undefined && t.sameAs !== undefined) t.bytes = 0;
  }
}

/**
 * A pack's member: its entry name and size in bytes in the pack; a third number (version 4) says the member is
 * a brotli stream of that many bytes (the ranges, kept tensors and skeleton of a small archive, beside its media).
 */
export type PackMember = [name: string, bytes: number] | [name: string, bytes: number, size: number];

/** Where a pack member's bytes are: its pack and the byte range inside it (and, compressed, its content's size). */
export interface MemberPlace {
  pack: string;
  offset: number;
  bytes: number;
  /** A brotli member: the size of its content. */
  size?: number;
}

const PLACES = new WeakMap<Manifest, Map<string, MemberPlace>>();

/** Every pack member of a (checked) manifest by name. */
export function packMembers(m: Manifest): Map<string, MemberPlace> {
  let places = PLACES.get(m);
  if (!places) {
    places = new Map();
    for (const [pack, members] of Object.entries(m.packs ?? {})) {
      let offset = 0;
      for (const [name, bytes, size] of members) {
        places.set(name, { pack, offset, bytes, ...(size !== undefined ? { size } : {}) });
        offset += bytes;
      }
    }
    PLACES.set(m, places);
  }
  return places;
}

/** The size of an entry's content (a ZIP entry, or a pack member decompressed), undefined when the manifest lists no such entry. */
export function entryBytes(m: Manifest, name: string): number | undefined {
  if (Object.hasOwn(m.entries, name)) return m.entries[name].bytes;
  const place = packMembers(m).get(name);
  return place && (place.size ?? place.bytes);
}

/**
 * A pack member's content from its bytes in the pack: as they are, or through brotli (to exactly its recorded
 * size) where the member is compressed.
 */
export function memberContent(
  place: MemberPlace,
  data: Uint8Array,
  unbrotli: (data: Uint8Array, size: number) => Uint8Array,
  fail: (message: string) => never,
): Uint8Array {
  if (place.size === undefined) return data;
  let out: Uint8Array;
  try {
    out = unbrotli(data, place.size);
  } catch (e) {
    return fail(`cannot decompress (${(e as Error).message})`);
  }
  if (out.length !== place.size) fail(`decompresses to ${out.length} bytes, not the recorded ${place.size}`);
  return out;
}

/** Every entry's name, a pack's members in place of the pack (what a version-1 archive would list). */
export function entryNames(m: Manifest): string[] {
  return Object.keys(m.entries).flatMap((name) =>
    m.packs && Object.hasOwn(m.packs, name) ? m.packs[name].map(([n]) => n) : [name],
  );
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

/** The entry that holds every plane's ranges, one after another, where records point at them. */
export const RANGES_ENTRY = 'model/ranges.bin';

/** A plane's ranges in a binary entry instead of base64: `@<entry>#<byte offset>` (the length follows from the plane). */
export function rangeRef(entry: string, offset: number): string {
  return `@${entry}#${offset}`;
}

/** The entry and offset of a range reference, or undefined for a base64 string. */
export function parseRangeRef(text: string): { entry: string; offset: number } | undefined {
  if (!text.startsWith('@')) return undefined;
  const at = text.lastIndexOf('#');
  const offset = Number(text.slice(at + 1));
  if (at < 2 || !/^\d+$/.test(text.slice(at + 1)) || !Number.isSafeInteger(offset)) return undefined;
  return { entry: text.slice(1, at), offset };
}

/**
 * A skeleton entry named `….zst` holds the skeleton through zstd (stored, not deflated): the model's graph
 * often repeats itself beyond deflate's 32 KB window (Silero VAD v6's 16 and 8 kHz branches: 7.4 KB
 * instead of 12.1). Only a skeleton of one part is written so.
 */
export const ZSTD_SKELETON_SUFFIX = '.zst';

/**
 * The skeleton's bytes from its entry's: as they are, or through zstd for a `.zst` entry (no larger than the
 * source model, which bounds a hostile frame).
 */
export function skeletonContent(name: string, data: Uint8Array, maxBytes: number, fail: (message: string) => never): Uint8Array {
  if (!name.endsWith(ZSTD_SKELETON_SUFFIX)) return data;
  let out: Uint8Array;
  try {
    out = zstdDecompress(data);
  } catch (e) {
    fail(`skeleton ${name} is not valid zstd: ${(e as Error).message}`);
  }
  if (out!.length > maxBytes) fail(`skeleton ${name} inflates beyond the source model's size`);
  return out!;
}

/** The skeleton's entries, in order: one, unless a large skeleton was written in parts. */
export function skeletonEntries(m: Manifest): string[] {
  return m.skeletonParts ?? [m.skeleton];
}

/** The entries decoding one coded tensor or slice reads: its media entries, the entries its ranges point into, its exact side values. */
export function recordEntries(record: TensorRecord): Set<string> {
  const names = new Set<string>();
  for (const pr of record.planes ?? []) for (const tile of pr.tiles) names.add(tile.entry);
  for (const r of record.quant?.ranges ?? []) {
    const ref = parseRangeRef(r);
    if (ref) names.add(ref.entry);
  }
  if (record.nonFinite) names.add(record.nonFinite);
  return names;
}

/**
 * The entries (ZIP entries or pack members) restoring the whole model reads: every coded tensor's (all
 * slices), every float16-kept tensor's, and the skeleton's parts.
 */
export function modelEntries(m: Manifest): Set<string> {
  const names = new Set<string>();
  for (const t of m.tensors) {
    if (t.layout && !t.sameAs) for (const { record } of codedParts(t)) for (const n of recordEntries(record)) names.add(n);
    if (t.half) names.add(t.half.entry);
  }
  for (const p of skeletonEntries(m)) names.add(p);
  return names;
}

/** Every media entry of a tensor's planes (all slices), each once. */
export function tileEntries(t: TensorRecord): Set<string> {
  return new Set(codedParts(t).flatMap((c) => (c.record.planes ?? []).flatMap((p) => p.tiles.map((tile) => tile.entry))));
}

/**
 * The entries a tensor alone costs: its media and its exact side values (outliers, non-finite weights; all
 * slices), each once. Its bytes per weight count both: the side values can outweigh the media.
 */
export function ownEntries(t: TensorRecord): Set<string> {
  const names = tileEntries(t);
  for (const { record } of codedParts(t)) if (record.nonFinite) names.add(record.nonFinite);
  return names;
}
