/**
 * Every compress option in one table (after sharp's lib/constructor.js and lib/is.mjs): its check, its
 * message, its default and its command-line flag. Options are checked when the call is made, before any
 * codec starts, with one message format (`Expected integer between 1 and 100 for quality but received 150`),
 * then resolved once: one complete settings object per tensor (rules over the archive-wide options over
 * the defaults), and the echo the manifest records is made from that resolved result.
 */

import { NnmediaError, OptionError } from '../errors.js';
import { readInputFile } from '../io/files.js';
import { listCodecs, resolveCodecOptions } from '../codecs/registry.js';
import type { Media } from '../codecs/types.js';
import type { TaskEvaluator } from '../eval/tasks/types.js';
import { editDistance } from '../eval/tasks/ocr.js';
import type { CalibrationSpec } from '../calibration/set.js';
import { calibrationSpecFromConfig } from '../calibration/options.js';
import { ROLES, type Role } from '../roles/classify.js';
import { CODE_BITS, type NonFinitePolicy, type RangeMode } from '../quantize/uniform.js';
import { defaultQuantizer, getQuantizer, stepGrid } from '../quantize/registry.js';

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
  quantizer?: string;
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
  /** The quantizer's id (quantize/registry.ts): `rtn`, or `step` with a step grid, unless named. */
  quantizer?: string;
}

/** The complete settings of one coded tensor, every default applied: what the encoder reads, nothing else. */
export interface TensorSettings extends EncodeSettings {
  quantizer: string;
  /** Per-tensor rate control: the coarsest grid (lossless codecs) or lowest quality (lossy) with SNR ≥ this. */
  targetSnr?: number;
  nonFinite: NonFinitePolicy;
}

/** Runs a model on calibration data and returns its outputs as one vector. */
export type Calibrator = (model: Uint8Array) => Promise<Float32Array>;

export interface CompressOptions extends Partial<EncodeSettings> {
  /** Per-tensor rate control: the largest stride (lossless codecs) or lowest quality (lossy) with SNR ≥ this many dB. */
  targetSnr?: number;
  /** Allocation across layers: average bits per weight over the whole archive. */
  targetBpw?: number;
  /** Kept tensors (biases, norms) as float16 where the cast is safe (each value within 2^−11 of itself; default on; false keeps them exact). */
  halfKept?: boolean;
  /** Allocation across layers: the cheapest allocation whose task loss (`task.loss`) stays ≤ this. */
  maxLoss?: number;
  /** Task evaluator for `maxLoss` and for calibration. */
  task?: TaskEvaluator<unknown>;
  /** Calibration runner for sensitivity probes (default: the task's, else random inputs). */
  calibrate?: Calibrator;
  /** `targetBpw`: probe every tensor again at the grid the first allocation gave it, then allocate again (default true). */
  reprobe?: boolean;
  /**
   * Calibration samples each sensitivity probe runs (default 8 of the user's, 2 synthetic). A probe runs the model
   * once per sample for every coded tensor (twice with `reprobe`): on a large model with large inputs, fewer
   * samples is what makes `targetBpw` / `maxLoss` finish (ISNet: 238 tensors × 1024×1024 runs).
   */
  probeSamples?: number;
  /** Allocation: weight γ ∈ [0, 1] of the measured sensitivities (0: equal relative precision; 1: probes fully trusted). */
  sensitivityWeight?: number;
  /** Progress messages of the allocator. */
  onLog?: (message: string) => void;
  /** Detail messages (per-tensor sensitivities, every allocation tried), for debugging rate control. */
  onDebug?: (message: string) => void;
  nonFinite?: NonFinitePolicy;
  rules?: TensorRule[];
  jobs?: number;
  /** Tensors of more weights than this are coded as slices of their leading dimension (default 2^24): bounds memory. */
  sliceWeights?: number;
  /** Largest skeleton entry in bytes (default 64 MiB); a larger skeleton is stored in parts. */
  skeletonPartBytes?: number;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
  /** Replace an existing output file (default: refuse with `OutputExistsError`). Never the input. Also keeps an archive the quality gate refused (the error is still raised). */
  force?: boolean;
  /**
   * Calibration data (images, audio, raw tensors) with its preprocessing: what the allocator probes the model
   * on and the quality gate judges it on (src/calibration; CLI: `--calibration PATH` and the preprocessing flags).
   * Without it, synthetic inputs made from the graph, and every report says so.
   */
  calibration?: CalibrationSpec;
  /** The quality gate's floor: the least fidelity (pipeline/gate.ts) the decompressed model must keep (default 0.9). */
  minFidelity?: number;
  /** Run the quality gate when the model can run (default true); false skips it (the manifest records why). */
  check?: boolean;
  /**
   * When the gate refuses the default 8-bit archive (a model that needs more than int8 precision somewhere:
   * BlazeFace's 256×256 detector, M-LSD), search for the smallest archive that passes with finer grids, 16-bit
   * codes where the sensitivity probes ask for them, instead of failing (default true; only with nothing about
   * the grid asked for: bits, step, stride, range, quantizer, rules or rate control). compress.ts `escalate`.
   */
  escalate?: boolean;
  /**
   * Error-compensating rounding (src/compensate, docs/compensation.md): layer-input statistics gathered on the
   * calibration set's probe samples, and the final codes chosen to keep each layer's output, on the same grid
   * (the decoder is unchanged). Needs a model that can run (ONNX, onnxruntime-node). Default false.
   */
  compensate?: boolean;
  /** compensate: damping, the fraction of mean diag(H) added to H's diagonal (default 0.01; docs/compensation.md). */
  damp?: number;
  /** compensate: quantize the columns in order of decreasing H diagonal (GPTQ's act-order; default false). */
  actOrder?: boolean;
}

/**
 * The codec each medium uses when none is named. Images: `auto`, per tensor the smaller of a PNG and the raw
 * codes through zstd (pipeline/plan.ts CODEC_SETS): on 8-bit weight codes zstd was 1–3 % smaller than libvips'
 * PNG, which decided the default against int8 + zstd of the whole file; since PNG's deflate codes 8-bit planes
 * with entropy coding only (codecs/image/png-entropy.ts) the two are level at the default's fine grids, and PNG
 * is smaller at coarse ones, where zstd finds short repeats that cost more than they save; `--codec png` gives
 * an archive of pictures only.
 */
export const DEFAULT_CODEC: Record<string, string> = { image: 'auto', video: 'ffv1', audio: 'flac' };

/**
 * The codec of the rate-control modes unless one (or a medium) is given: the smallest lossless one per
 * tensor, lossless WebP included. Measured on PaddleOCR step-grid codes: lossless WebP sits at their
 * order-0 entropy (99.7 %), libvips' PNG was 10–20 % above it; the entropy-coded PNG is 1.5–6 % above it
 * (png-entropy.ts) and codes the planes too large for WebP.
 */
export const RATE_CONTROL_CODEC = 'smallest';

/** The codec sets that pick a codec per tensor (their members: pipeline/plan.ts CODEC_SETS). */
export const CODEC_SET_NAMES = ['auto', 'smallest'] as const;

/**
 * The quality gate's floor unless set (pipeline/gate.ts): every int8 round-to-nearest result measured in
 * docs/calibration.md passes it (the lowest 0.937), visibly broken ones (OCR at int4, CER 100 %) fall below.
 */
export const DEFAULT_MIN_FIDELITY = 0.9;

/** Outlier threshold (σ) of per-tensor SNR targets unless set: measured on PaddleOCR (see README). */
export const DEFAULT_RATE_OUTLIERS = 4;

/**
 * Default largest number of weights coded in one piece: a larger tensor is coded as slices of its leading
 * dimension, so memory follows the slice (~16 bytes per weight per job: values, working plane, codes,
 * codec bytes, codes decoded back, restored values), not the tensor. 2^24 keeps two jobs under 1.5 GB
 * (measured: 2^25 peaked at 1.54 GiB with --jobs 2 on a 128k-row embedding) and costs nothing measurable
 * in size: a slice adds one ZIP entry and one manifest record (~300 bytes) per 16 M weights.
 */
export const DEFAULT_SLICE_WEIGHTS = 2 ** 24;

/** Largest skeleton entry: a larger skeleton (kept tensors of any size) is written and read in parts of this. */
export const SKELETON_PART_BYTES = 64 * 2 ** 20;

/** How much the allocator trusts per-tensor sensitivity probes (0…1); see pipeline/allocate.ts. */
export const DEFAULT_SENSITIVITY_WEIGHT = 0.5;

export const DEFAULTS: EncodeSettings = {
  media: 'image',
  codec: 'auto',
  bits: 8,
  range: 'channel',
  stride: 1,
  clip: false,
  outliers: 0,
};

// ---- the table ----

/** How the command line parses a flag's argument (the library checks the value the same way for both). */
export type FlagArgument = 'int' | 'number' | 'block' | { choices: readonly string[]; numeric?: boolean };

export interface OptionSpec {
  key: keyof CompressOptions & string;
  /** What a valid value is, for the message: "Expected <expected> for <key> but received <value>". */
  expected: string;
  valid: (v: unknown) => boolean;
  /** May a config-file rule set it per tensor? */
  rule?: boolean;
  /** Its command-line flag(s), in commander's syntax, with the help text; none: library only. */
  flags?: ReadonlyArray<{ flag: string; help: string }>;
  argument?: FlagArgument;
}

const isInt = (v: unknown, min: number, max = Infinity): boolean =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
const isNum = (v: unknown, min: number, max: number, open = false): boolean =>
  typeof v === 'number' && Number.isFinite(v) && (open ? v > min : v >= min) && v <= max;
const isBool = (v: unknown): boolean => typeof v === 'boolean';
const isFn = (v: unknown): boolean => typeof v === 'function';
const oneOf =
  (values: readonly unknown[]) =>
  (v: unknown): boolean =>
    values.includes(v);
const MEDIA = ['image', 'video', 'audio'] as const;

/** Every compress option, in the order the command line lists them. */
export const OPTION_TABLE: readonly OptionSpec[] = [
  {
    key: 'media',
    expected: 'one of image, video, audio',
    valid: oneOf(MEDIA),
    rule: true,
    flags: [{ flag: '--media <media>', help: 'medium for layers' }],
    argument: { choices: MEDIA },
  },
  {
    key: 'codec',
    expected: 'codec name',
    valid: (v) => typeof v === 'string' && v.length > 0,
    rule: true,
    flags: [
      {
        flag: '--codec <name>',
        help: 'codec (see `nnmedia codecs`); auto: per tensor the smallest of PNG and raw codes through zstd (and brotli on small tensors); smallest: lossless WebP too (slower, ~1 % smaller)',
      },
    ],
  },
  {
    key: 'bits',
    expected: 'one of 8, 16, 24, 32',
    valid: oneOf(CODE_BITS),
    rule: true,
    flags: [{ flag: '--bits <n>', help: 'code bits per weight' }],
    argument: { choices: CODE_BITS.map(String), numeric: true },
  },
  {
    key: 'quality',
    expected: 'integer',
    valid: (v) => isInt(v, -Infinity),
    rule: true,
    flags: [{ flag: '--quality <q>', help: "the codec's own quality (lossy codecs)" }],
    argument: 'int',
  },
  {
    key: 'lossless',
    expected: 'boolean',
    valid: isBool,
    rule: true,
    flags: [{ flag: '--lossless', help: "use the codec's lossless mode" }],
  },
  {
    key: 'effort',
    // each codec's own range is checked with the codec (zstd 1–22, brotli 0–11, PNG 0–9: `nnmedia codecs`)
    expected: 'non-negative integer',
    valid: (v) => isInt(v, 0),
    flags: [{ flag: '--effort <e>', help: 'encoder effort in the codec’s scale' }],
    argument: 'int',
  },
  {
    key: 'range',
    expected: "'layer' or 'channel'",
    valid: oneOf(['layer', 'channel']),
    rule: true,
    flags: [{ flag: '--range <mode>', help: 'quantization ranges: per layer (M1 as written) or per output channel' }],
    argument: { choices: ['layer', 'channel'] },
  },
  {
    key: 'nonFinite',
    expected: "'error' or 'keep'",
    valid: oneOf(['error', 'keep']),
    flags: [{ flag: '--non-finite <policy>', help: 'NaN/±Inf weights: error, or keep exactly as side data' }],
    argument: { choices: ['error', 'keep'] },
  },
  {
    key: 'jobs',
    expected: 'integer between 1 and 256',
    valid: (v) => isInt(v, 1, 256),
    flags: [{ flag: '--jobs <n>', help: 'worker threads encoding tensors at once (default: cores; output identical for any n)' }],
    argument: 'int',
  },
  {
    key: 'sliceWeights',
    expected: 'integer of at least 256',
    valid: (v) => isInt(v, 256),
    flags: [
      {
        flag: '--slice-weights <n>',
        help: `code a tensor of more weights than n as slices of its leading dimension, each a job of its own: memory follows the slice (default ${DEFAULT_SLICE_WEIGHTS})`,
      },
    ],
    argument: 'int',
  },
  {
    key: 'block',
    expected: 'two positive integers [rows, columns] (at most 65536)',
    valid: (v) => Array.isArray(v) && v.length === 2 && v.every((x) => isInt(x, 1, 65536)),
    rule: true,
    flags: [
      {
        flag: '--block <RxC>',
        help: 'video: block size, Bin×Bout (fc, LSTM gates) or Bfin×Bfout kernels (conv); default about 64×64 pixels; a tensor smaller than it takes its whole side',
      },
    ],
    argument: 'block',
  },
  {
    key: 'gop',
    expected: "'intra' or 'inter'",
    valid: oneOf(['intra', 'inter']),
    flags: [{ flag: '--gop <mode>', help: 'video: intra-only frames or inter prediction' }],
    argument: { choices: ['intra', 'inter'] },
  },
  {
    key: 'rotate',
    expected: 'boolean',
    valid: isBool,
    flags: [
      {
        flag: '--rotate',
        help: 'randomized Hadamard rotation of each plane along its inputs before quantization (undone on decode)',
      },
    ],
  },
  {
    key: 'stride',
    expected: 'integer between 1 and 65536',
    valid: (v) => isInt(v, 1, 2 ** 16),
    rule: true,
    flags: [{ flag: '--stride <k>', help: 'use every k-th code only: a coarser grid, fewer bits (decoding is unchanged M1)' }],
    argument: 'int',
  },
  {
    key: 'clip',
    expected: 'boolean',
    valid: isBool,
    flags: [{ flag: '--clip', help: 'search clipping ranges per channel instead of min/max' }],
  },
  {
    key: 'relStep',
    expected: 'number between 0 and 64',
    valid: (v) => isNum(v, 0, 64, true),
    rule: true,
    flags: [
      {
        flag: '--step <fraction>',
        help: 'step grid: quantization step = fraction × RMS of each channel (or layer with --range layer); zero sits on a code, unused codes cost nothing',
      },
    ],
    argument: 'number',
  },
  {
    key: 'quantizer',
    expected: 'quantizer id (see quantize/registry.ts)',
    valid: (v) => typeof v === 'string' && v.length > 0,
    rule: true,
    flags: [
      { flag: '--quantizer <id>', help: 'quantizer by id: rtn (round to nearest) or step (with --step); default by --step' },
    ],
  },
  {
    key: 'outliers',
    expected: 'non-negative number of standard deviations',
    valid: (v) => isNum(v, 0, Infinity),
    rule: true,
    flags: [
      {
        flag: '--outliers <sigma>',
        help: `store weights beyond sigma standard deviations of their channel exactly (default ${DEFAULT_RATE_OUTLIERS} with --target-snr, else off)`,
      },
    ],
    argument: 'number',
  },
  {
    key: 'targetSnr',
    expected: 'number of dB between 0 and 200',
    valid: (v) => isNum(v, 0, 200, true) && (v as number) < 200,
    flags: [{ flag: '--target-snr <dB>', help: 'per tensor: coarsest grid / lowest quality with SNR ≥ dB' }],
    argument: 'number',
  },
  {
    key: 'halfKept',
    expected: 'boolean',
    valid: isBool,
    flags: [
      {
        flag: '--half-kept',
        help: 'store kept tensors (biases, norms) as float16 where the cast is safe, each value within 2^-11 of itself (default unless --bits is 16 or more)',
      },
      { flag: '--no-half-kept', help: 'keep them exactly as they are (M9 as written)' },
    ],
  },
  {
    key: 'compensate',
    expected: 'boolean',
    valid: isBool,
    flags: [
      {
        flag: '--compensate',
        help: 'choose the codes by error-compensating rounding (GPTQ-style) on layer inputs from the calibration data; same grid, same decoder',
      },
    ],
  },
  {
    key: 'damp',
    expected: 'number between 0 and 10',
    valid: (v) => isNum(v, 0, 10),
    flags: [{ flag: '--damp <x>', help: 'compensate: damping, fraction of mean diag(H) added to its diagonal (default 0.01)' }],
    argument: 'number',
  },
  {
    key: 'actOrder',
    expected: 'boolean',
    valid: isBool,
    flags: [{ flag: '--act-order', help: 'compensate: quantize columns in order of decreasing input energy (GPTQ act-order)' }],
  },
  {
    key: 'sensitivityWeight',
    expected: 'number between 0 and 1',
    valid: (v) => isNum(v, 0, 1),
    flags: [
      {
        flag: '--sensitivity <gamma>',
        help: `allocation: how much per-layer sensitivity probes are trusted, 0…1 (default ${DEFAULT_SENSITIVITY_WEIGHT})`,
      },
    ],
    argument: 'number',
  },
  {
    key: 'targetBpw',
    expected: 'number between 0 and 32',
    valid: (v) => isNum(v, 0, 32, true),
    flags: [{ flag: '--target-bpw <bits>', help: 'allocate bits across layers for this average bits/weight (whole archive)' }],
    argument: 'number',
  },
  {
    key: 'probeSamples',
    expected: 'integer between 1 and 1000',
    valid: (v) => isNum(v, 1, 1000) && Number.isInteger(v),
    flags: [
      {
        flag: '--probe-samples <n>',
        help: 'rate control: calibration samples each sensitivity probe runs (default 8; 2 synthetic); fewer is faster on large models',
      },
    ],
    argument: 'number',
  },
  {
    key: 'reprobe',
    expected: 'boolean',
    valid: isBool,
    flags: [{ flag: '--no-reprobe', help: 'target-bpw: skip the second sensitivity probe at the first allocation (faster)' }],
  },
  {
    key: 'maxLoss',
    expected: 'non-negative number',
    valid: (v) => isNum(v, 0, Infinity),
    flags: [
      {
        flag: '--max-loss <x>',
        help: 'allocate for the fewest bits whose task loss stays ≤ x (vad: 1 − agreement; ocr: CER − original CER)',
      },
    ],
    argument: 'number',
  },
  {
    key: 'minFidelity',
    expected: 'number between 0 and 1',
    valid: (v) => isNum(v, 0, 1),
    flags: [
      {
        flag: '--min-fidelity <x>',
        help: 'quality gate: the least fidelity (0–1) of the decompressed model on held-back calibration inputs (default 0.9)',
      },
    ],
    argument: 'number',
  },
  {
    key: 'check',
    expected: 'boolean',
    valid: isBool,
    flags: [{ flag: '--no-check', help: 'skip the quality gate (the model is not run; the manifest says so)' }],
  },
  {
    key: 'escalate',
    expected: 'boolean',
    valid: isBool,
    flags: [
      {
        flag: '--no-escalate',
        help: 'when the gate refuses the default 8-bit grid, fail instead of searching for the smallest archive with finer grids (16-bit where needed) that passes',
      },
    ],
  },
  {
    key: 'calibration',
    expected: 'calibration spec ({ paths: [...], ... })',
    valid: (v) => typeof v === 'object' && v !== null && Array.isArray((v as { paths?: unknown }).paths),
  },
  { key: 'skeletonPartBytes', expected: 'integer of at least 1024', valid: (v) => isInt(v, 1024) },
  { key: 'force', expected: 'boolean', valid: isBool },
  {
    key: 'task',
    expected: 'task evaluator (run, loss, calibrate)',
    valid: (v) => typeof v === 'object' && v !== null && isFn((v as { run?: unknown }).run),
  },
  { key: 'calibrate', expected: 'function', valid: isFn },
  { key: 'onLog', expected: 'function', valid: isFn },
  { key: 'onDebug', expected: 'function', valid: isFn },
  { key: 'onProgress', expected: 'function', valid: isFn },
  {
    key: 'signal',
    expected: 'AbortSignal',
    valid: (v) => typeof v === 'object' && v !== null && isFn((v as { throwIfAborted?: unknown }).throwIfAborted),
  },
  { key: 'rules', expected: 'array of tensor rules', valid: Array.isArray },
];

/**
 * An options object names only options there are: a misspelt one (`targetBPW`, `target_bpw`) would otherwise be
 * ignored without a word and the run would use the default it was meant to change.
 */
export function checkKnownKeys(o: object, known: readonly string[], what: string, where = ''): void {
  const unknown = Object.keys(o).filter((k) => !known.includes(k) && (o as Record<string, unknown>)[k] !== undefined);
  if (!unknown.length) return;
  const named = unknown.map((k) => {
    const near = nearestName(k, known);
    return near ? `${JSON.stringify(k)} (did you mean ${near}?)` : JSON.stringify(k);
  });
  throw new OptionError(
    `${what}${where}: unknown option${unknown.length > 1 ? 's' : ''} ${named.join(', ')}; the options are ${known.join(', ')}`,
  );
}

/** The known name a misspelling is nearest to (case, separators and up to two edits), if any is near. */
function nearestName(name: string, known: readonly string[]): string | undefined {
  const fold = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(fold(name), fold(k));
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

/** An OptionError in the one format: `Expected <what> but received <value>`. */
export function expect(cond: boolean, what: string, received: unknown): void {
  if (!cond) throw new OptionError(`Expected ${what} but received ${JSON.stringify(received)}`);
}

function checkSpec(spec: OptionSpec, value: unknown, where: string): void {
  if (value === undefined) return;
  expect(spec.valid(value), `${spec.expected} for ${spec.key === 'relStep' ? 'step' : spec.key}${where}`, value);
  if (spec.key === 'quantizer') getQuantizer(value as string);
}

/** The settings a rule (or the archive-wide options) may give, each checked against the table. */
export function checkSettings(s: Partial<EncodeSettings>, where = ''): void {
  const at = where ? ` (${where})` : '';
  for (const spec of OPTION_TABLE) if (spec.rule || !where) checkSpec(spec, (s as Record<string, unknown>)[spec.key], at);
  checkQuantizer(s, at);
}

/** A named quantizer must fit the grid asked for: the step grid needs a step, and a step needs the step grid. */
function checkQuantizer(s: Partial<EncodeSettings>, at: string): void {
  if (s.quantizer === undefined) return;
  if (s.quantizer === stepGrid.id && s.relStep === undefined) throw new OptionError(`quantizer step needs a step (relStep)${at}`);
  if (s.quantizer !== stepGrid.id && s.relStep !== undefined)
    throw new OptionError(`quantizer ${s.quantizer} does not take a step (relStep)${at}`);
}

export function checkCompressOptions(o: CompressOptions): void {
  if (typeof o !== 'object' || o === null) throw new OptionError(`Expected an options object but received ${JSON.stringify(o)}`);
  checkKnownKeys(
    o,
    OPTION_TABLE.map((s) => s.key),
    'compress',
  );
  checkSettings(o);
  if (o.maxLoss !== undefined && !o.task) throw new OptionError('maxLoss needs a task evaluator (--task) to measure the loss');
  if (o.targetBpw !== undefined && o.maxLoss !== undefined) throw new OptionError('give targetBpw or maxLoss, not both');
  // per-tensor SNR targets and an allocation across layers are alternatives: with both, the allocation chose the
  // grids and the SNR target was dropped without a word
  if (o.targetSnr !== undefined && (o.targetBpw !== undefined || o.maxLoss !== undefined))
    throw new OptionError(
      `give targetSnr (--target-snr: one SNR for every tensor) or ${o.targetBpw !== undefined ? 'targetBpw (--target-bpw' : 'maxLoss (--max-loss'}: an allocation across layers), not both`,
    );
  if ((o.damp !== undefined || o.actOrder) && !o.compensate)
    throw new OptionError(
      `${o.damp !== undefined ? 'damp' : 'actOrder'} sets how compensate works: it needs compensate (--compensate)`,
    );
  if ((o.targetBpw !== undefined || o.maxLoss !== undefined) && o.quantizer !== undefined && o.quantizer !== stepGrid.id)
    throw new OptionError(`allocation across layers chooses step grids: quantizer ${o.quantizer} cannot be used with it`);
  for (const [i, r] of (o.rules ?? []).entries()) {
    expect(typeof r === 'object' && r !== null, `a tensor rule for rules[${i}]`, r);
    expect(typeof r.match === 'string' && r.match.length > 0, `a name pattern for rules[${i}].match`, r.match);
    if (r.role !== undefined) expect(ROLES.includes(r.role), `one of ${ROLES.join(', ')} for rules[${i}].role`, r.role);
    if (r.order !== undefined)
      expect(r.order === 'in_out' || r.order === 'out_in', `'in_out' or 'out_in' for rules[${i}].order`, r.order);
    const unknown = Object.keys(r).filter(
      (k) => !['match', 'role', 'order'].includes(k) && !OPTION_TABLE.some((s) => s.rule && s.key === k),
    );
    if (unknown.length) throw new OptionError(`rules[${i}]: unknown setting ${unknown.map((k) => JSON.stringify(k)).join(', ')}`);
    checkSettings(r, `rules[${i}]`);
  }
}

// ---- resolution ----

/** The options with every default applied, once: the archive-wide part of what compress does. */
export interface ResolvedOptions {
  /** The archive-wide settings as given (rules are merged over these per tensor, then the defaults). */
  readonly asked: Readonly<Partial<EncodeSettings>>;
  /** Settings of a tensor that no rule names. */
  readonly base: EncodeSettings;
  readonly rules: readonly TensorRule[];
  readonly targetSnr?: number;
  readonly targetBpw?: number;
  readonly maxLoss?: number;
  readonly task?: TaskEvaluator<unknown>;
  /** Allocation across layers (targetBpw or maxLoss). */
  readonly allocating: boolean;
  /** Any rate control (allocation or targetSnr). */
  readonly rateControl: boolean;
  readonly halfKept: boolean;
  readonly nonFinite: NonFinitePolicy;
  /** Worker threads: undefined lets the pool decide from the model's size. */
  readonly jobs?: number;
  readonly sliceWeights: number;
  readonly skeletonPartBytes: number;
  readonly reprobe: boolean;
  readonly probeSamples?: number;
  readonly sensitivityWeight: number;
  readonly force: boolean;
  readonly calibration?: CalibrationSpec;
  readonly minFidelity: number;
  readonly check: boolean;
  /** Search finer grids when the gate refuses the default grid (CompressOptions.escalate). */
  readonly escalate: boolean;
  /** Error-compensating rounding of the final codes (compensate). */
  readonly compensate: boolean;
  /** compensate's damping and column order (undefined: the library's defaults). */
  readonly gptq?: { readonly damp?: number; readonly actOrder?: boolean };
  readonly calibrate?: Calibrator;
  readonly onLog?: (message: string) => void;
  readonly onDebug?: (message: string) => void;
  readonly onProgress?: CompressOptions['onProgress'];
  readonly signal?: AbortSignal;
  /** What the manifest's `options` records: what was asked for, as it was resolved. */
  readonly echo: Record<string, unknown>;
}

/** Checks the options and resolves every default once. */
export function resolveOptions(o: CompressOptions): ResolvedOptions {
  checkCompressOptions(o);
  const allocating = o.targetBpw !== undefined || o.maxLoss !== undefined;
  const rateControl = allocating || o.targetSnr !== undefined;
  const asked: Partial<EncodeSettings> = Object.fromEntries(ENCODE_KEYS.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
  const base = mergeSettings(asked, { match: '' }, rateControl, o.targetSnr !== undefined);
  checkCodecFit(base, '');
  const ruled = (o.rules ?? []).map((rule) => mergeSettings(asked, rule, rateControl, o.targetSnr !== undefined));
  ruled.forEach((r, i) => checkCodecFit(r, ` (rules[${i}])`));
  // settings that would change nothing, judged where they are given (a rule inherits the archive's quality and
  // effort: those apply to the tensors that take a codec they fit)
  const rulesNameCodecs = (o.rules ?? []).some((r) => r.codec !== undefined || r.media !== undefined);
  checkNoEffect(base, new Set(Object.keys(asked)), '', rulesNameCodecs, asked.codec !== undefined);
  ruled.forEach((r, i) =>
    checkNoEffect(
      r,
      new Set(Object.keys(o.rules![i])),
      ` (rules[${i}])`,
      false,
      (o.rules![i].codec ?? asked.codec) !== undefined,
    ),
  );
  checkVideoOnly([o, ...(o.rules ?? [])], [base, ...ruled]);
  // kept float tensors (biases, norms) as float16 where the cast is safe (quantize/half.ts): half their bytes,
  // which on small models is the difference between beating int8 + zstd of the whole file and not
  // — unless codes of 16 bits or more were asked for: float16's 2^-11 would then be the coarsest rounding in the
  // model (helper-65: kept scalars off by 1.4–3.9e-4 against the weights' 1.5e-5 at --bits 16)
  const halfKept = o.halfKept ?? !(o.bits !== undefined && o.bits >= 16);
  const resolved = {
    asked,
    base,
    rules: o.rules ?? [],
    targetSnr: o.targetSnr,
    targetBpw: o.targetBpw,
    maxLoss: o.maxLoss,
    task: o.task,
    allocating,
    rateControl,
    halfKept,
    nonFinite: o.nonFinite ?? 'error',
    jobs: o.jobs,
    sliceWeights: o.sliceWeights ?? DEFAULT_SLICE_WEIGHTS,
    skeletonPartBytes: o.skeletonPartBytes ?? SKELETON_PART_BYTES,
    reprobe: o.reprobe ?? true,
    probeSamples: o.probeSamples,
    sensitivityWeight: o.sensitivityWeight ?? DEFAULT_SENSITIVITY_WEIGHT,
    force: o.force ?? false,
    calibration: o.calibration,
    minFidelity: o.minFidelity ?? DEFAULT_MIN_FIDELITY,
    check: o.check ?? true,
    escalate: o.escalate ?? true,
    compensate: o.compensate ?? false,
    ...(o.damp !== undefined || o.actOrder ? { gptq: { damp: o.damp, actOrder: o.actOrder ?? false } } : {}),
    calibrate: o.calibrate,
    onLog: o.onLog,
    onDebug: o.onDebug,
    onProgress: o.onProgress,
    signal: o.signal,
  };
  return { ...resolved, echo: echoOf(o, resolved) };
}

const article = (word: string): string => (/^[aeiou]/.test(word) ? 'an' : 'a');

/**
 * The codec of the settings exists and carries what is asked of it (medium, bits, lossless, quality, effort):
 * checked as option errors naming the option, before any model is opened, rather than per tensor later.
 */
function checkCodecFit(s: EncodeSettings, at: string): void {
  if ((CODEC_SET_NAMES as readonly string[]).includes(s.codec)) return;
  const codecs = listCodecs();
  const codec = codecs.find((c) => c.name === s.codec);
  if (!codec)
    throw new OptionError(
      `Expected a codec name (${codecs.map((c) => c.name).join(', ')}, or ${CODEC_SET_NAMES.join(' or ')}) for codec${at} but received ${JSON.stringify(s.codec)}`,
    );
  if (codec.media !== s.media && codec.media !== 'raw')
    throw new OptionError(
      `codec ${codec.name} is ${article(codec.media)} ${codec.media} codec, not for media ${s.media}${at}: give media ${codec.media} with it (--media ${codec.media})`,
    );
  if (!codec.bits.includes(s.bits)) {
    const fit = codecs.filter((c) => c.media === codec.media && c.bits.includes(s.bits)).map((c) => c.name);
    throw new OptionError(
      `bits ${s.bits} does not fit codec ${codec.name}${at}: it carries ${codec.bits.join(', ')}-bit codes` +
        (fit.length ? ` (${s.bits}-bit ${codec.media} codecs: ${fit.join(', ')})` : ''),
    );
  }
  try {
    resolveCodecOptions(codec, s.bits, s);
  } catch (e) {
    if (e instanceof NnmediaError && e.code !== 'E_OPTION') throw new OptionError(`${e.message}${at}`);
    if (e instanceof OptionError && at) throw new OptionError(`${e.message}${at}`);
    throw e;
  }
}

/**
 * Settings that would change nothing where they are given, refused (each was accepted without a word): a quality
 * or an effort with a codec set (it tries lossless codecs at its own settings, pipeline/plan.ts CODEC_SETS; in a
 * rule, a quality kept a tensor from being stored once with its duplicates), a medium other than images with a
 * codec set (no video was written), a quality with lossless (the lossless mode has none), and inter frames with an
 * intra-only codec (FFV1). `own`: the keys given in this scope (the options, or one rule); the archive's own
 * settings are not refused where rules name the codecs they are meant for; `codecNamed`: the user named the codec
 * (here or for the archive), rather than a default choosing it.
 */
function checkNoEffect(
  s: EncodeSettings,
  own: ReadonlySet<string>,
  at: string,
  rulesNameCodecs: boolean,
  codecNamed: boolean,
): void {
  const isSet = (CODEC_SET_NAMES as readonly string[]).includes(s.codec);
  const which = codecNamed ? `codec ${s.codec}` : `codec ${s.codec} (chosen when no codec is named)`;
  if (isSet && own.has('media') && s.media !== 'image')
    throw new OptionError(
      `${which} picks among image and raw codecs, not ${s.media} ones${at}: name ${article(s.media)} ${s.media} codec (--codec ${DEFAULT_CODEC[s.media] ?? '…'}), or leave out --media`,
    );
  const given = (['quality', 'effort'] as const).filter((k) => own.has(k) && s[k] !== undefined);
  if (isSet && given.length && !rulesNameCodecs)
    throw new OptionError(
      `${given.join(' and ')} ${given.length > 1 ? 'need' : 'needs'} a named codec${at}: ${which} tries lossless codecs per ` +
        `tensor at its own settings (e.g. --codec zstd --effort 19, --codec webp --quality 90)`,
    );
  if (own.has('quality') && own.has('lossless') && s.quality !== undefined && s.lossless === true)
    throw new OptionError(`codec ${s.codec}: give a quality (lossy) or lossless, not both${at}`);
  const codec = isSet ? undefined : listCodecs().find((c) => c.name === s.codec);
  if (codec?.intraOnly && own.has('gop') && s.gop === 'inter' && !rulesNameCodecs) {
    const inter = listCodecs()
      .filter((c) => c.media === 'video' && !c.intraOnly)
      .map((c) => c.name);
    throw new OptionError(`codec ${codec.name} codes every frame on its own${at}: --gop inter applies to ${inter.join(', ')}`);
  }
}

/**
 * gop and block shape video: given where no tensor is coded as video (no rule makes one video either), they
 * were accepted and ignored.
 */
function checkVideoOnly(given: ReadonlyArray<Partial<EncodeSettings>>, merged: readonly EncodeSettings[]): void {
  if (merged.some((s) => s.media === 'video')) return;
  const key = (['gop', 'block'] as const).find((k) => given.some((g) => g[k] !== undefined));
  if (key)
    throw new OptionError(
      `${key} (--${key}) sets how video is coded, and no tensor is coded as video (media ${merged[0]!.media}): give --media video with it, or leave it out`,
    );
}

/** The fields of EncodeSettings (what a tensor's coding depends on). */
const ENCODE_KEYS = [
  'media',
  'codec',
  'bits',
  'quality',
  'lossless',
  'effort',
  'range',
  'stride',
  'clip',
  'outliers',
  'relStep',
  'block',
  'rotate',
  'gop',
  'quantizer',
] as const satisfies ReadonlyArray<keyof EncodeSettings>;

/** One tensor's settings: its rules (later over earlier) over the archive-wide options over the defaults. */
function mergeSettings(o: Partial<EncodeSettings>, rule: TensorRule, rateControl: boolean, snrTarget: boolean): EncodeSettings {
  const media = rule.media ?? o.media ?? DEFAULTS.media;
  // rate control picks the smallest lossless codec per tensor, unless a codec or a medium was chosen
  const codec =
    rule.codec ??
    o.codec ??
    (rateControl && !(rule.media ?? o.media) ? RATE_CONTROL_CODEC : undefined) ??
    DEFAULT_CODEC[media] ??
    DEFAULTS.codec;
  const relStep = rule.relStep ?? o.relStep;
  return {
    media,
    codec,
    bits: rule.bits ?? o.bits ?? DEFAULTS.bits,
    quality: rule.quality ?? o.quality,
    lossless: rule.lossless ?? o.lossless,
    effort: o.effort,
    range: rule.range ?? o.range ?? DEFAULTS.range,
    stride: rule.stride ?? o.stride ?? DEFAULTS.stride,
    clip: o.clip ?? DEFAULTS.clip,
    outliers: rule.outliers ?? o.outliers ?? (snrTarget ? DEFAULT_RATE_OUTLIERS : DEFAULTS.outliers),
    relStep,
    block: rule.block ?? o.block,
    rotate: o.rotate,
    gop: o.gop,
    quantizer: rule.quantizer ?? o.quantizer ?? defaultQuantizer({ relStep }),
  };
}

/** The complete settings of the tensor of this name. */
export function settingsFor(name: string, r: ResolvedOptions): TensorSettings {
  const s = mergeSettings(r.asked, rulesFor(name, r.rules), r.rateControl, r.targetSnr !== undefined);
  return { ...s, quantizer: s.quantizer!, targetSnr: r.targetSnr, nonFinite: r.nonFinite };
}

/**
 * The manifest's options: the settings that hold for every tensor no rule names, as resolved (a codec or
 * outlier threshold a rate-control mode chose is recorded as chosen), then what else was asked for.
 * Settings left at the plain defaults and not asked for are not repeated.
 */
function echoOf(o: CompressOptions, r: Omit<ResolvedOptions, 'echo'>): Record<string, unknown> {
  const b = r.base;
  const given = <K extends keyof CompressOptions>(k: K): boolean => o[k] !== undefined;
  return {
    media: b.media,
    codec: b.codec,
    bits: b.bits,
    range: b.range,
    ...(given('quality') ? { quality: b.quality } : {}),
    ...(given('lossless') ? { lossless: b.lossless } : {}),
    ...(given('effort') ? { effort: b.effort } : {}),
    ...(given('stride') ? { stride: b.stride } : {}),
    ...(given('clip') ? { clip: b.clip } : {}),
    ...(given('outliers') || b.outliers !== DEFAULTS.outliers ? { outliers: b.outliers } : {}),
    ...(given('relStep') ? { step: b.relStep } : {}),
    ...(given('quantizer') ? { quantizer: b.quantizer } : {}),
    ...(b.rotate ? { rotate: true } : {}),
    ...(given('block') ? { block: b.block } : {}),
    ...(given('gop') ? { gop: b.gop } : {}),
    ...(r.targetSnr !== undefined ? { targetSnr: r.targetSnr } : {}),
    ...(r.targetBpw !== undefined ? { targetBpw: r.targetBpw } : {}),
    ...(given('halfKept') || r.halfKept ? { halfKept: r.halfKept } : {}),
    ...(r.maxLoss !== undefined ? { maxLoss: r.maxLoss, task: r.task?.name } : {}),
    ...(given('minFidelity') ? { minFidelity: r.minFidelity } : {}),
    ...(r.compensate ? { compensate: true } : {}),
    ...(r.gptq?.damp !== undefined ? { damp: r.gptq.damp } : {}),
    ...(r.gptq?.actOrder ? { actOrder: true } : {}),
    ...(r.probeSamples !== undefined ? { probeSamples: r.probeSamples } : {}),
    nonFinite: r.nonFinite,
    rules: r.rules,
  };
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

/**
 * What to say of tensor rules (`--config`, `rules`) that match no tensor of the model, or undefined when each
 * matches one: a mistyped name or pattern was silently a no-op. A few names show what the model's look like.
 */
export function unmatchedRules(tensors: readonly { name: string }[], rules: readonly TensorRule[] = []): string | undefined {
  const none = rules.filter((r) => {
    const re = patternToRegExp(r.match);
    return !tensors.some((t) => re.test(t.name));
  });
  if (!none.length) return undefined;
  const examples = tensors.slice(0, 3).map((t) => JSON.stringify(t.name));
  return `${none.length === 1 ? 'a tensor rule matches' : `${none.length} tensor rules match`} no tensor of the model: ${none.map((r) => JSON.stringify(r.match)).join(', ')} (names look like ${examples.join(', ')}${tensors.length > 3 ? ', …' : ''}; \`nnmedia inspect MODEL\` lists them)`;
}

/** What a config file (`--config`) holds: tensor rules, and calibration settings (calibrationSpecFromConfig). */
export interface ConfigFile {
  /** The `tensors` list, where the file has one. */
  rules?: TensorRule[];
  calibration?: CalibrationSpec;
}

/**
 * A config file: {"tensors": [TensorRule, …], "calibration": { … }}, either or both. Calibration paths are relative to
 * the file; unknown keys are errors, at the top as inside (a typo must not pass silently).
 */
export function loadConfigFile(file: string): ConfigFile {
  const text = readInputFile(file, 'config file').toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new OptionError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  const shape = '{"tensors": [ … ], "calibration": { … }} (either or both)';
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new OptionError(`config file ${file}: expected ${shape}`);
  const top = parsed as Record<string, unknown>;
  // (`$schema`, which editors read, is left alone)
  const unknown = Object.keys(top).filter((k) => k !== 'tensors' && k !== 'calibration' && k !== '$schema');
  if (unknown.length)
    throw new OptionError(
      `config file ${file}: unknown key${unknown.length === 1 ? '' : 's'} ${unknown.map((k) => JSON.stringify(k)).join(', ')}: expected ${shape}`,
    );
  if (top.tensors === undefined && top.calibration === undefined) throw new OptionError(`config file ${file}: expected ${shape}`);
  if (top.tensors !== undefined && !Array.isArray(top.tensors))
    throw new OptionError(`config file ${file}: "tensors" must be a list of rules: expected ${shape}`);
  const o = { rules: top.tensors as TensorRule[] | undefined };
  checkCompressOptions(o);
  return {
    ...(o.rules ? { rules: o.rules } : {}),
    ...(top.calibration !== undefined ? { calibration: calibrationSpecFromConfig(top.calibration, file) } : {}),
  };
}

/** A config file's tensor rules (loadConfigFile; its calibration settings are left to the caller). */
export function loadRulesFile(file: string): TensorRule[] {
  return loadConfigFile(file).rules ?? [];
}
