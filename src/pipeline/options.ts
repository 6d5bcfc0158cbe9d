/**
 * One place where options are checked, when the call is made and before any
 * codec starts, with one message format (after sharp's lib/is.mjs).
 */

import { readFileSync } from 'node:fs';
import { OptionError } from '../errors.js';
import type { Media } from '../codecs/types.js';
import type { TaskEvaluator } from '../eval/tasks/types.js';
import { ROLES, type Role } from '../roles/classify.js';
import { CODE_BITS, type NonFinitePolicy, type RangeMode } from '../quantize/uniform.js';

export interface TensorRule {
  /** Tensor name pattern: a glob with * and ?, or /regex/. */
  match: string;
  role?: Role;
  /** For a forced `fc` role: memory order of the matrix ([in, out] or [out, in]). */
  order?: 'in_out' | 'out_in';
  media?: Media;
  codec?: string;
  bits?: number;
  quality?: number;
  lossless?: boolean;
  range?: RangeMode;
  /** Use every k-th code only (a coarser grid in the same M1 code space). */
  stride?: number;
  outliers?: number;
  relStep?: number;
  block?: [number, number];
}

export interface EncodeSettings {
  media: Media;
  codec: string;
  bits: number;
  quality?: number;
  lossless?: boolean;
  effort?: number;
  range: RangeMode;
  /** Code grid stride (1 = every code). */
  stride: number;
  /** Clipping ranges searched per channel instead of min/max. */
  clip: boolean;
  /** Weights beyond this many standard deviations from their channel's mean are stored exactly as side data (0 = off). */
  outliers: number;
  /** Step grid: step = relStep × RMS of each channel (or layer); replaces min/max ranges. */
  relStep?: number;
  /** Video: block size, Bin×Bout (fc, gates) or Bfin×Bfout kernels (conv). */
  block?: [number, number];
  /** Randomized Hadamard rotation of each plane along its rows before quantization (undone on decode). */
  rotate?: boolean;
  /** Video: intra-only (default) or inter frames. */
  gop?: 'intra' | 'inter';
}

/** Runs a model on calibration data and returns its outputs as one vector. */
export type Calibrator = (model: Uint8Array) => Promise<Float32Array>;

export interface CompressOptions extends Partial<EncodeSettings> {
  /** Per-tensor rate control: the largest stride (lossless codecs) or lowest quality (lossy) with SNR ≥ this many dB. */
  targetSnr?: number;
  /** Allocation across layers: average bits per weight over the whole archive. */
  targetBpw?: number;
  /** Kept tensors (biases, norms) as float16 where the cast is safe (default: on with the rate-control options). */
  halfKept?: boolean;
  /** Allocation across layers: the cheapest allocation whose task loss (`task.loss`) stays ≤ this. */
  maxLoss?: number;
  /** Task evaluator for `maxLoss` and for calibration. */
  task?: TaskEvaluator<unknown>;
  /** Calibration runner for sensitivity probes (default: the task's, else random inputs). */
  calibrate?: Calibrator;
  /** `targetBpw`: probe every tensor again at the grid the first allocation gave it, then allocate again (default true). */
  reprobe?: boolean;
  /** Allocation: weight γ ∈ [0, 1] of the measured sensitivities (0: equal relative precision; 1: probes fully trusted). */
  sensitivityWeight?: number;
  /** Progress messages of the allocator. */
  onLog?: (message: string) => void;
  nonFinite?: NonFinitePolicy;
  rules?: TensorRule[];
  jobs?: number;
  /** Tensors of more weights than this are coded as slices of their leading dimension (default 2^24): bounds memory. */
  sliceWeights?: number;
  /** Largest skeleton entry in bytes (default 64 MiB); a larger skeleton is stored in parts. */
  skeletonPartBytes?: number;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
  /** Replace an existing output file (default: refuse with `OutputExistsError`). Never the input. */
  force?: boolean;
}

/** The codec each medium uses when none is named. */
export const DEFAULT_CODEC: Record<string, string> = { image: 'png', video: 'ffv1', audio: 'flac' };

export const DEFAULTS: EncodeSettings = {
  media: 'image',
  codec: 'png',
  bits: 8,
  range: 'channel',
  stride: 1,
  clip: false,
  outliers: 0,
};

function expect(cond: boolean, what: string, received: unknown): void {
  if (!cond) throw new OptionError(`Expected ${what} but received ${JSON.stringify(received)}`);
}

export function checkSettings(s: Partial<EncodeSettings>, where = ''): void {
  const at = where ? ` (${where})` : '';
  if (s.bits !== undefined)
    expect((CODE_BITS as readonly number[]).includes(s.bits), `one of 8, 16, 24, 32 for bits${at}`, s.bits);
  if (s.range !== undefined) expect(s.range === 'layer' || s.range === 'channel', `'layer' or 'channel' for range${at}`, s.range);
  if (s.media !== undefined)
    expect(['image', 'video', 'audio'].includes(s.media), `one of image, video, audio for media${at}`, s.media);
  if (s.quality !== undefined) expect(Number.isInteger(s.quality), `integer for quality${at}`, s.quality);
  if (s.lossless !== undefined) expect(typeof s.lossless === 'boolean', `boolean for lossless${at}`, s.lossless);
  if (s.codec !== undefined) expect(typeof s.codec === 'string' && s.codec.length > 0, `codec name${at}`, s.codec);
  if (s.stride !== undefined)
    expect(
      Number.isInteger(s.stride) && s.stride >= 1 && s.stride <= 2 ** 16,
      `integer between 1 and 65536 for stride${at}`,
      s.stride,
    );
  if (s.clip !== undefined) expect(typeof s.clip === 'boolean', `boolean for clip${at}`, s.clip);
  if (s.relStep !== undefined)
    expect(Number.isFinite(s.relStep) && s.relStep > 0 && s.relStep <= 64, `number between 0 and 64 for step${at}`, s.relStep);
  if (s.outliers !== undefined)
    expect(
      Number.isFinite(s.outliers) && s.outliers >= 0,
      `non-negative number of standard deviations for outliers${at}`,
      s.outliers,
    );
}

export function checkCompressOptions(o: CompressOptions): void {
  checkSettings(o);
  if (o.force !== undefined) expect(typeof o.force === 'boolean', 'boolean for force', o.force);
  if (o.nonFinite !== undefined)
    expect(o.nonFinite === 'error' || o.nonFinite === 'keep', `'error' or 'keep' for nonFinite`, o.nonFinite);
  if (o.targetSnr !== undefined)
    expect(
      Number.isFinite(o.targetSnr) && o.targetSnr > 0 && o.targetSnr < 200,
      'number of dB between 0 and 200 for targetSnr',
      o.targetSnr,
    );
  if (o.targetBpw !== undefined)
    expect(
      Number.isFinite(o.targetBpw) && o.targetBpw > 0 && o.targetBpw <= 32,
      'number between 0 and 32 for targetBpw',
      o.targetBpw,
    );
  if (o.maxLoss !== undefined) expect(Number.isFinite(o.maxLoss) && o.maxLoss >= 0, 'non-negative number for maxLoss', o.maxLoss);
  if (o.maxLoss !== undefined && !o.task) throw new OptionError('maxLoss needs a task evaluator (--task) to measure the loss');
  if (o.targetBpw !== undefined && o.maxLoss !== undefined) throw new OptionError('give targetBpw or maxLoss, not both');
  if (o.jobs !== undefined)
    expect(Number.isInteger(o.jobs) && o.jobs >= 1 && o.jobs <= 256, 'integer between 1 and 256 for jobs', o.jobs);
  if (o.sliceWeights !== undefined)
    expect(
      Number.isSafeInteger(o.sliceWeights) && o.sliceWeights >= 256,
      'integer of at least 256 for sliceWeights',
      o.sliceWeights,
    );
  if (o.skeletonPartBytes !== undefined)
    expect(
      Number.isSafeInteger(o.skeletonPartBytes) && o.skeletonPartBytes >= 1024,
      'integer of at least 1024 for skeletonPartBytes',
      o.skeletonPartBytes,
    );
  for (const [i, r] of (o.rules ?? []).entries()) {
    expect(typeof r.match === 'string' && r.match.length > 0, `a name pattern for rules[${i}].match`, r.match);
    if (r.role !== undefined) expect(ROLES.includes(r.role), `one of ${ROLES.join(', ')} for rules[${i}].role`, r.role);
    if (r.order !== undefined)
      expect(r.order === 'in_out' || r.order === 'out_in', `'in_out' or 'out_in' for rules[${i}].order`, r.order);
    checkSettings(r, `rules[${i}]`);
  }
}

export function patternToRegExp(pattern: string): RegExp {
  if (pattern.length > 2 && pattern.startsWith('/') && pattern.endsWith('/')) return new RegExp(pattern.slice(1, -1));
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

/** Rules that match a tensor, later rules overriding earlier ones. */
export function rulesFor(name: string, rules: readonly TensorRule[] = []): TensorRule {
  const merged: TensorRule = { match: name };
  for (const r of rules) if (patternToRegExp(r.match).test(name)) Object.assign(merged, r);
  return merged;
}

/** A config file: {"tensors": [TensorRule, …]}. */
export function loadRulesFile(file: string): TensorRule[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new OptionError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  const rules = (parsed as { tensors?: unknown }).tensors;
  if (!Array.isArray(rules)) throw new OptionError(`config file ${file}: expected {"tensors": [ … ]}`);
  const o = { rules: rules as TensorRule[] };
  checkCompressOptions(o);
  return o.rules;
}
