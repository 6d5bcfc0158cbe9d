/**
 * compress: model file → .nnm archive, as a short orchestration of typed stages (see stages.ts):
 * options resolved once (options.ts) → plan (plan.ts) → duplicates and float16-kept tensors (dedupe.ts,
 * half.ts) → for rate control across layers, an allocation of step grids (allocate.ts) → write (write.ts:
 * prepare → quantize → encode media → measure, per tensor or slice, on worker threads; the manifest
 * assembled once from what was done). Every tensor is decoded again right after encoding, so the manifest
 * records the true error and a lossless path that is not bit-exact is caught here, not in the user's model.
 *
 * Rate control is the encoder's alone (the decoder reads plain M1 codes): per-channel clipping ranges, a
 * coarser code grid per tensor chosen by per-tensor SNR targets or by allocation across layers, and
 * `--codec auto` with a raw codes + zstd fallback.
 */

import { createHash } from 'node:crypto';
import { existsSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { errnoOf } from '../io/files.js';
import { deflateRawSync } from 'node:zlib';
import { modelBytes, openModel, selfContainedModel } from '../formats/registry.js';
import {
  MAX_OUTPUT_NAME_BYTES,
  checkOutputPath,
  commitOutput,
  holdOutput,
  releaseOutput,
  sha256File,
  stagingPath,
} from '../io/atomic.js';
import { Archive } from '../archive/node.js';
import { stepGrid } from '../quantize/registry.js';
import { allocate, type Allocation, type GridChoice, type WrittenRates } from './allocate.js';
import { findDuplicates } from './dedupe.js';
import { halfKept } from './half.js';
import { activationRoundingOp } from '../quantize/half.js';
import { CODEC_SET_NAMES, type CompressOptions, resolveOptions, unmatchedRules } from './options.js';
import { getCodec } from '../codecs/registry.js';
import { findFfmpeg } from '../codecs/ffmpeg.js';
import { planTensors, slicesOf, withBits, withSettings } from './plan.js';
import { preparePlanes, withoutZeroChannels } from './prepare.js';
import { compensationVerdict } from '../rate/compensated.js';
import { elementCount } from '../formats/model.js';
import type { CodedPlan, TensorPlan } from './stages.js';
import { EncodeCache, gateError, writeArchive, type CompressResult } from './write.js';
import {
  FEW_HELD_BACK,
  describeQuality,
  samplesWording,
  measureArchive,
  openCalibration,
  qualityRecord,
  whyNotRunnable,
  type Calibration,
} from './gate.js';
import { sliceAsTensor, type QualityRecord, type TensorRecord } from '../archive/manifest.js';
import { BadCalibrationError, BadModelError, InterruptedError, IoError, OptionError, QualityError } from '../errors.js';
import { statisticsTargets } from '../compensate/index.js';
import {
  captureStatistics,
  mergeStatistics,
  tooFewRows,
  type OutputTensor,
  type StatisticsReport,
  type TensorStatistics,
} from '../compensate/statistics.js';
import { largeInputs, runCalibration } from '../calibration/runner.js';
import type { CalibrationSample } from '../calibration/types.js';
import type { ModelReader } from '../formats/model.js';
import type { ResolvedOptions } from './options.js';

export type { CompressResult } from './write.js';

/** Bytes of the manifest's head and the ZIP directory that the allocator leaves room for. */
const ARCHIVE_OVERHEAD_BYTES = 2000;
/** Archives this far under a bits/weight target are re-allocated to spend the rest. */
const UNDERSHOOT = 0.95;
/** Why an archive with nothing lossy in it is not judged. */
const LOSSLESS = 'nothing lossy: every tensor is stored exactly (no float weight matrix or kernel to code)';
/** Re-allocations tried to meet a bits/weight target. */
const BUDGET_ATTEMPTS = 4;
/**
 * Allocations on the rates as written (allocate.ts, measuredRates) before the budget's bisection (the bisection's
 * own archives do not correct the rates): nearer the budget, in fewer encodes on large models (docs/speed.md).
 */
const MEASURED_RATE_ATTEMPTS = 3;
/** An archive under MEASURED_UNDERSHOOT × the target is allocated again on the rates as written. */
const MEASURED_UNDERSHOOT = 0.98;
/**
 * Bytes of encoded tensors a `--target-bpw` compress keeps between its attempts (write.ts EncodeCache), kept only
 * when the whole archive at the target fits (up to ~128 M weights at 4 bits a weight): a cache that holds the
 * first few tensors of a large model saves little and costs its bytes and more at the peak. Measured with
 * `--jobs 2 --target-bpw 4`, the same archives each time: the 0.4 GB synthetic model (0.1 G weights) 85.2 s at
 * 994 MB with a 128 MB cache, 99.0 s at 815 MB without; the 1.2 GB one (0.3 G weights, 1 of 21 tensors reused
 * from a 32 MB cache) 1,172 MB with 128 MB, 1,082 MB with 32 MB, 936 MB without. A larger archive's encodings are
 * spilled to a file beside the output instead (write.ts EncodeCache), none held in memory: the 1.2 GB model's
 * second attempt reused 24 of 27 encodes, 66.7 → 51.9–52.3 s, 0.99–1.04 GB peak.
 */
const ENCODE_CACHE_BYTES = 2 ** 26;
/**
 * Escalation (the gate refused the default grid): budgets tried, as multiples of the default archive's bits/weight,
 * until one passes (2× is about the `--bits 16` archive's size), then bisection steps between the last that failed
 * and the first that passed. BlazeFace's 256×256 detector: refused at 8.7, --target-bpw 8.7 → 9.85 passes
 * (16-bit codes: 16.9); M-LSD tiny: refused at 8.3 (fidelity 0.34), the allocation at 8.3 passes (16-bit: 15.2).
 */
const ESCALATION_SCALES = [1, 1.25, 1.6, 2];
const ESCALATION_BISECTIONS = 2;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
/**
 * A per-tensor SNR target that some tensors cannot reach (8-bit codes at the finest stride and the best quality
 * the codec has): said, with the tensors' best, instead of an archive that silently falls short of it.
 */
function snrShortfall(tensors: readonly TensorRecord[], target: number, log?: (m: string) => void): void {
  const short = tensors.filter((t) => t.stats !== undefined && t.stats.snrDb < target - SNR_TOLERANCE_DB);
  if (!short.length || !log) return;
  const worst = short.reduce((a, b) => (b.stats!.snrDb < a.stats!.snrDb ? b : a));
  // finer codes are the remedy only where there are finer codes to have, in a codec that carries them (h264
  // carries 8-bit codes only); a lossy codec's best quality is the other limit
  const carries16 = (t: TensorRecord): boolean => !t.codec || (codecMetaOf(t.codec.name)?.bits.includes(16) ?? true);
  // on a step grid the step sets the finest grid, not the code width
  const stepped = short.some((t) => t.quant?.relStep !== undefined);
  const narrow = !stepped && short.some((t) => (t.quant?.bits ?? 16) < 16 && carries16(t));
  const lossy = short.some((t) => t.codec && !t.codec.lossless && codecMetaOf(t.codec.name)?.lossless !== 'never');
  log(
    `warning: ${short.length} of ${tensors.filter((t) => t.stats).length} coded tensors are under the target SNR ${target} dB at their finest grid (lowest: ${worst.name}, ${worst.stats!.snrDb.toFixed(1)} dB)` +
      `${stepped ? '; a finer --step reaches more' : ''}${narrow ? '; finer codes reach more (--bits 16)' : ''}` +
      `${lossy ? `; ${narrow || stepped ? 'and a' : 'a'} lossless codec keeps the grid's own SNR (--lossless)` : ''}`,
  );
}

/** Every coded unit of the archive once: a tensor, or each slice of a sliced one (duplicates left out). */
function codedUnits(tensors: readonly TensorRecord[]): TensorRecord[] {
  return tensors.flatMap((t) =>
    t.sameAs ? [] : t.slices ? t.slices.map((sl) => sliceAsTensor(t, sl).record) : t.quant && t.codec ? [t] : [],
  );
}

/** Units smaller than this are not weighed by `largerThanRaw`: their bytes are mostly headers. */
const LARGER_THAN_RAW_MIN_WEIGHTS = 4096;

/**
 * A media codec the user named that coded tensors in more bytes than their codes take stored raw, said once.
 * Lossless video (ffv1: 11.3 bits a weight for Silero v4's 8-bit LSTM codes) and AVIF's lossless mode predict
 * pictures, and weight codes are noise to them; nothing said so. Said where the excess is 1 % of the archive or
 * more.
 */
function largerThanRaw(tensors: readonly TensorRecord[], archiveBytes: number, log?: (m: string) => void): void {
  if (!log) return;
  const over = new Map<string, { tensors: number; bytes: number; raw: number }>();
  const units = codedUnits(tensors);
  for (const t of units) {
    // a unit's bytes include its exact side values (outliers, zeros off the grid): not the codec's doing; a
    // small one's are mostly the container's headers (a PNG's 60 bytes on 256 codes), not its prediction
    // (codecs of raw codes, `nnmedia codecs`' "not media", are the yardstick, not to blame)
    if (t.bytes === undefined || t.exactValues || codecMetaOf(t.codec!.name)?.media === 'raw') continue;
    if (elementCount(t.shape) < LARGER_THAN_RAW_MIN_WEIGHTS) continue;
    const raw = elementCount(t.shape) * Math.ceil(t.quant!.bits / 8);
    if (t.bytes <= raw) continue;
    const o = over.get(t.codec!.name) ?? { tensors: 0, bytes: 0, raw: 0 };
    o.tensors++;
    o.bytes += t.bytes;
    o.raw += raw;
    over.set(t.codec!.name, o);
  }
  for (const [name, o] of over)
    if (o.bytes - o.raw >= 0.01 * archiveBytes)
      log(
        `warning: ${name} coded ${o.tensors} of ${units.length} tensors${tensors.some((t) => t.slices) ? ' and slices' : ''} in more bytes than their codes take stored raw ` +
          `(${o.bytes.toLocaleString('en-US')} against ${o.raw.toLocaleString('en-US')} bytes): weight codes are noise to its ` +
          `prediction; --codec zstd stores them in fewer, and the default (no --codec or --media) takes the smaller of PNG and zstd per tensor`,
      );
}

/**
 * A step grid too fine for its codes: the weights beyond it are stored exactly beside the media (`--step 0.01` at
 * 8-bit codes: a quarter of Silero v4's weights, 408,436 bytes against 257,155 with `--bits 16` at the same step),
 * said once where they are 1 % of the step grids' weights or more. Only step grids (`--step`): elsewhere the exact
 * values are zeros off a layer range's grid, outliers asked for, or non-finite weights kept, which no step makes.
 */
function beyondGrid(tensors: readonly TensorRecord[], log?: (m: string) => void): void {
  if (!log) return;
  let weights = 0;
  let exact = 0;
  let narrow = false;
  for (const t of codedUnits(tensors)) {
    if (t.quant!.relStep === undefined) continue;
    weights += elementCount(t.shape);
    if (t.exactValues) {
      exact += t.exactValues;
      narrow ||= t.quant!.bits < 16;
    }
  }
  if (weights && exact >= 0.01 * weights)
    log(
      `warning: ${((100 * exact) / weights).toPrecision(2)} % of the weights on step grids (${exact.toLocaleString('en-US')}) lie beyond their grids and are stored exactly beside the media: ` +
        `${narrow ? 'wider codes (--bits 16) or ' : ''}a coarser --step keeps them on the grid`,
    );
}

/** The codec's description, or undefined for a codec set or an unknown name. */
function codecMetaOf(name: string): ReturnType<typeof getCodec> | undefined {
  try {
    return getCodec(name);
  } catch {
    return undefined;
  }
}

/** Reported SNRs are rounded (3 significant digits): a tensor at the target is not short of it. */
const SNR_TOLERANCE_DB = 0.05;

/** Budget moves (×0.93 each) that may be tried when the allocation gives the same grids again. */
const SAME_GRID_STEPS = 12;

export async function compressModel(input: string, output: string, options: CompressOptions = {}): Promise<CompressResult> {
  const resolved = resolveOptions(options);
  await checkOutputPath(output, [input], { force: resolved.force });
  // Rate control and escalation write and judge several archives. Each is written to a staging file beside the
  // output, which becomes the output only when the run ends with an archive to keep (or one refused and kept with
  // --force): a run killed mid-search (kill -9, the OOM killer) left a refused attempt at the output that inspect
  // and decompress accepted, and with --force an interrupt removed the user's earlier file there.
  const staged = stagingPath(output);
  holdOutput(staged); // an interrupt (the CLI's signal handler) removes it
  // The model is read by path more than once (worker threads, the hash, the gate): a file replaced meanwhile (a
  // checkpoint saved by rename, rsync) made an archive of two models that passed the gate. Checked before commit.
  // The same for an ONNX model's external data files, taken when the model is opened (before any data is read).
  const sources = new Map([[input, fileIdentity(input)]]);
  const unchanged = (): void => {
    for (const [file, before] of sources)
      if (fileIdentity(file) !== before)
        throw new BadModelError(
          `the ${file === input ? 'model file' : "model's external data file"} changed while it was being compressed (replaced or rewritten); nothing was written: compress it again`,
          { file },
        );
  };
  try {
    const result = await compressStaged(
      input,
      staged,
      output,
      resolved,
      (files) => {
        for (const f of files) sources.set(f, fileIdentity(f));
      },
      () => withoutBudget(input, output, options),
    );
    unchanged();
    // aborted while the last attempt's archive was finished: nothing is committed
    resolved.signal?.throwIfAborted();
    commitOutput(staged, output, resolved.force);
    return result;
  } catch (e) {
    // aborted: nothing is committed, and the abort is what is said (a refused archive "kept with --force" was not)
    if (resolved.signal?.aborted) throw resolved.signal.reason;
    if (e instanceof QualityError && e.details.kept && existsSync(staged)) {
      unchanged();
      commitOutput(staged, output, resolved.force);
    }
    // a disk that filled while the staging file was written: the output's problem, named as the user gave it
    // (its temporary copy or the gate's scratch file beside it too)
    if (e instanceof IoError && e.file !== undefined && isStagingFile(e.file, staged)) {
      const prefix = `file ${e.file}${e.tensor ? `, tensor ${e.tensor}` : ''}: `;
      let message = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
      // the gate's scratch file holds the whole decompressed model: a small archive can fail for a large model
      if (e.file.endsWith('.scratch.tmp') && errnoOf(e.cause) === 'ENOSPC')
        message += ` (the quality gate writes the decompressed model, the size of ${basename(input)}, beside the output while it checks it: free that much, or pass --no-check)`;
      throw new IoError(message, { file: output, tensor: e.tensor }, e.cause ?? e);
    }
    throw e;
  } finally {
    rmSync(staged, { force: true }); // nothing there after a commit
    releaseOutput(staged);
  }
}

/** ONNX-ML operators whose weights are node attributes (coefficients, support vectors, tree values). */
const ATTRIBUTE_WEIGHT_OPS = new Set([
  'Scaler',
  'LinearClassifier',
  'LinearRegressor',
  'SVMClassifier',
  'SVMRegressor',
  'TreeEnsembleClassifier',
  'TreeEnsembleRegressor',
  'TreeEnsemble',
]);

/** A refused rate's comparison as `QualityError.details.withoutBudget` holds it. */
type WithoutRecord = { bitsPerWeight: number; fidelity: number; passed: boolean };

/** What the same options give without the budget (`withoutBudget`): its size and the gate's verdict, or why not. */
type WithoutBudget = { bitsPerWeight: number; quality: QualityRecord } | { notMeasured: string };

/**
 * The archive the same options write without `--target-bpw` (the default grid, or the grid they fix), judged by the
 * gate on the same held-back samples against the same floor, and removed: what a budget the gate refuses is
 * compared with. A budget's search can name a passing size larger than the default's (a BatchNorm classifier: "try
 * --target-bpw 7.3" where the default passed at 6.8 bits/weight with better fidelity), and the allocation's fidelity
 * need not grow with the budget; the default's is one run away and the same every time. Not escalated: its own
 * grid, passing or not (a refused one is kept, `force`, to read its size and verdict).
 */
async function withoutBudget(input: string, output: string, options: CompressOptions): Promise<WithoutBudget> {
  // (a name the next run to this output removes if this process is killed: io/atomic.ts removeStaleTemps)
  const plain = join(dirname(resolve(output)), `.${basename(output)}.${process.pid}.plain.tmp`);
  if (Buffer.byteLength(basename(plain)) > MAX_OUTPUT_NAME_BYTES)
    return { notMeasured: 'the output name is too long for the temporary files of a second run beside it' };
  holdOutput(plain); // an interrupt removes it
  try {
    const r = await compressModel(input, plain, {
      ...options,
      targetBpw: undefined,
      maxLoss: undefined,
      targetSnr: undefined,
      escalate: false,
      force: true,
      onLog: undefined,
      onDebug: undefined,
      onProgress: undefined,
    });
    return r.quality?.checked ? { bitsPerWeight: r.bitsPerWeight, quality: r.quality } : { notMeasured: 'not judged' };
  } catch (e) {
    // a comparison that could not be made is not this run's failure (an interrupt is)
    if (options.signal?.aborted) throw options.signal.reason;
    if (e instanceof InterruptedError) throw e;
    // refused and kept (force): its verdict is the gate's own, on the unrounded fidelity
    if (e instanceof QualityError && e.details.kept && existsSync(plain)) {
      const a = new Archive(plain);
      try {
        const coded = a.manifest.tensors.reduce((n, t) => n + (t.layout ? elementCount(t.shape) : 0), 0);
        const q = a.manifest.quality;
        if (q?.checked) return { bitsPerWeight: (statSync(plain).size * 8) / Math.max(1, coded), quality: q };
      } finally {
        a.close();
      }
    }
    return { notMeasured: e instanceof Error ? e.message : String(e) };
  } finally {
    rmSync(plain, { force: true });
    releaseOutput(plain);
  }
}

/** A path's file as size, modification and change times: a file put in its place or rewritten differs. */
function fileIdentity(path: string): string | undefined {
  try {
    // (not the inode: FUSE, CIFS and 9p mounts may renumber it; a file renamed into place has a change time of
    // its own even where rsync set its modification time to the source's)
    const st = statSync(path, { bigint: true });
    return `${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return 'gone';
  }
}

/**
 * compressModel's run, every archive written to `output` (the staging file); messages name `shownAs`. `onSources`
 * hears of the files besides the model that hold its data, as soon as it is opened.
 */
async function compressStaged(
  input: string,
  output: string,
  shownAs: string,
  resolved: ResolvedOptions,
  onSources: (externalFiles: readonly string[]) => void,
  plainRun?: () => Promise<WithoutBudget>,
): Promise<CompressResult> {
  const reader = openModel(input);
  onSources(reader.externalFiles ?? []);
  const hashing = new AbortController();
  // rate control and escalation write the archive more than once: after the first write the staging file is
  // there, and later attempts replace it
  let written = false;
  // a --target-bpw run's encodings, kept between its attempts (closed, and its spill file removed, at the end)
  let cache: EncodeCache | undefined;
  try {
    const plans = planTensors(reader, resolved);
    const unmatched = unmatchedRules(reader.tensors, resolved.rules);
    if (unmatched) resolved.onLog?.(unmatched);
    const coded = plans.filter((p): p is CodedPlan => p.kind === 'coded');
    // video and audio codecs run ffmpeg: missing, it is said now, not after minutes of probes at the first such tensor
    if (coded.some((p) => p.codecs.some((c) => getCodec(c.name).media !== 'image' && getCodec(c.name).media !== 'raw')))
      findFfmpeg();
    const { unique, sameAs, transposed } = findDuplicates(reader, coded, resolved.sliceWeights);
    const half = resolved.halfKept ? halfKept(reader, plans, resolved.sliceWeights) : undefined;
    const rounding = resolved.halfKept && activationRoundingOp(reader.opTypes);
    if (rounding)
      resolved.onLog?.(
        `kept tensors stay exact, not float16: the graph rounds activations while it runs (${rounding}), where a scale or bias off by 2^-11 moves roundings a whole step`,
      );
    const stripped = new Set([...coded.map((p) => p.entry.key), ...(half?.outcomes.keys() ?? [])]);
    // the skeleton (the model minus the coded tensors) is read part by part where it is written
    const skeleton = (): Iterable<Uint8Array> => reader.skeletonParts(stripped, resolved.skeletonPartBytes);
    const weights = coded.reduce((s, p) => s + p.entry.shape.reduce((a, b) => a * b, 1), 0);
    // Nothing lossy (no tensor coded, none kept at float16 precision: an already quantized model, whose integer
    // weights stay in the skeleton): the decompressed model holds the original's values, so there is nothing to
    // allocate, compensate or judge, and the model is not run (a large quantized model's gate took minutes).
    const lossless = coded.length === 0 && [...(half?.outcomes.values() ?? [])].every((o) => o.stats.maxAbs === 0);
    if (lossless && (resolved.allocating || resolved.compensate || resolved.calibration?.paths.length))
      resolved.onLog?.(`${LOSSLESS}: the rate options and the calibration data have nothing to act on`);
    // No tensor coded, but some kept at float16 precision (a model of tiny tensors, or of integer weights beside a
    // few float vectors): the gate judges those, and the rate options have nothing to allocate or compensate
    // (an allocation over no weights printed "allocated NaN bits/weight")
    const nothingCoded = coded.length === 0 && !lossless;
    if (nothingCoded && (resolved.allocating || resolved.compensate))
      resolved.onLog?.(
        'no tensor is coded (every weight is kept: too small, or integer): the rate options have nothing to act on',
      );
    // classical-ML operators (skl2onnx's LinearClassifier, SVMs, tree ensembles) hold their weights in node
    // attributes, which no rule reaches: said, where a user would look for them among the tensors
    const attributeOps = [...(reader.opTypes ?? [])].filter((op) => ATTRIBUTE_WEIGHT_OPS.has(op));
    if (attributeOps.length)
      resolved.onLog?.(
        `the model's ${attributeOps.join(', ')} node${attributeOps.length === 1 ? ' holds its' : 's hold their'} weights in node attributes, not tensors: nnmedia codes tensors (initializers, Constant nodes), so those stay in the skeleton as they are`,
      );
    // Calibration: the user's data or synthetic inputs, for the allocator's probes and the quality gate
    const runsModel =
      !lossless && (resolved.check || resolved.allocating || resolved.compensate || Boolean(resolved.calibration?.paths.length));
    const notRunnable = lossless ? LOSSLESS : runsModel ? await whyNotRunnable(input, reader) : 'skipped (check: false)';
    if (!lossless && notRunnable && resolved.calibration?.paths.length)
      throw new BadCalibrationError(`calibration data was given, but the model cannot be run: ${notRunnable}`, { file: input });
    if (!lossless && !nothingCoded && notRunnable && resolved.compensate)
      throw new OptionError(`compensate needs layer statistics from running the model, which cannot be run: ${notRunnable}`);
    const cal: Calibration | undefined = notRunnable
      ? undefined
      : await openCalibration(
          input,
          reader,
          resolved.calibration,
          resolved.onLog,
          resolved.signal,
          // untaken branches keep the default grid where nothing else was asked (rate control leaves them out of its
          // allocation); a grid, codec or rule the user gave applies to them too
          resolved.targetSnr === undefined && !resolved.rules.length && !UNTAKEN_GRID_KEYS.some((k) => k in resolved.asked),
        );
    const untaken = cal?.untakenTensors ?? new Set<string>();
    // error-compensating rounding: layer-input statistics on the probe samples, gathered once, before the
    // allocation, so its probes and error model see the compensated error of every candidate grid; the final
    // codes use them too (the gate judges on the held-back samples)
    const gathered =
      resolved.compensate && cal && !nothingCoded ? await gatherStatistics(reader, cal, unique, sameAs, resolved) : undefined;
    // --damp / --act-order travel with the statistics to every place that compensates (allocation, workers)
    if (gathered && resolved.gptq) for (const s of gathered.stats.values()) s.gptq = { ...resolved.gptq };
    // on a grid the user fixed, compensate each tensor only where it is worth its extra bits there (the
    // allocation weighs that itself, per candidate)
    const compensation = gathered && !resolved.allocating ? fixedGridCompensation(reader, unique, gathered, resolved) : gathered;
    let allocation: Allocation | undefined;
    // weights of untaken branches: they keep their own grid (the default's 8-bit codes, or the bits asked for) out of
    // any budget, at about a code's width each
    let pinnedWeights = 0;
    let pinnedBits = 0;
    const allocateFor = async (opts: ResolvedOptions): Promise<Allocation> => {
      // skeleton, float16 entry, manifest head and ZIP directory: what the allocator must leave room for
      let deflated = half ? deflateRawSync(half.data, { level: 9 }).length : 0;
      for (const part of skeleton()) deflated += deflateRawSync(part, { level: 9 }).length;
      // only allocation runs the model, and only then is it read whole (ONNX, which protobuf bounds to 2 GB)
      // tensors of branches the calibration never takes are not allocated (their error would go unseen):
      // they keep their grid, about a code's width (8 bits at the default) a weight of the budget
      const pinned = unique.filter((p) => untaken.has(p.entry.key));
      pinnedWeights = pinned.reduce((s, p) => s + elementCount(p.entry.shape), 0);
      pinnedBits = pinned.reduce((s, p) => s + p.settings.bits * elementCount(p.entry.shape), 0);
      return await allocate({
        reader,
        source: () => cal?.source() ?? selfContainedModel(input, reader),
        unique: unique.filter((p) => !untaken.has(p.entry.key)),
        sameAs,
        transposed,
        weights,
        overheadBits: 8 * (deflated + ARCHIVE_OVERHEAD_BYTES) + pinnedBits,
        options: opts,
        calibration: cal,
        statistics: compensation?.stats,
      });
    };
    if (resolved.allocating && !lossless && !nothingCoded) allocation = await allocateFor(resolved);
    // the source's hash is read and computed while the tensors are encoded (it was a pass of its own before)
    const sourceSha = sha256File(input, hashing.signal);
    sourceSha.catch(() => {}); // awaited where the manifest is written
    const job = {
      reader,
      input,
      inputBytes: modelBytes(input, reader),
      sourceSha,
      output,
      plans,
      sameAs,
      transposed,
      half,
      skeleton,
      skeletonName: `model/skeleton.${reader.format}`,
      options: resolved,
      compensation,
    };
    // the quality gate: measured on the finished archive before it becomes the output
    // (check: false skips it even where allocation ran the model)
    const quality: QualityRecord | ((file: string) => Promise<QualityRecord>) =
      cal && resolved.check
        ? async (file) => qualityRecord(await measureArchive(file, cal, resolved.signal), cal, resolved.minFidelity)
        : { checked: false, reason: resolved.check ? notRunnable : 'skipped (check: false)' };
    let lastGrids = '';
    let lastGridMap: ReadonlyMap<string, GridChoice> | undefined;
    // grids to write instead of an allocation's (an earlier archive that fitted the budget, written again)
    let gridsOverride: ReadonlyMap<string, GridChoice> | undefined;
    // a budget's attempts after the first re-encode only the tensors whose grid moved
    // (an archive larger than the memory cache: every encoding spilled to a file beside the output instead)
    cache =
      resolved.targetBpw !== undefined
        ? new EncodeCache(
            (weights * resolved.targetBpw) / 8 <= ENCODE_CACHE_BYTES ? ENCODE_CACHE_BYTES : 0,
            dirname(output),
            // at most two archives' worth beside the output (and the archive being written)
            (2 * weights * resolved.targetBpw) / 8,
          )
        : undefined;
    // what the manifest records of the options (escalation adds what it did)
    let jobOptions: ResolvedOptions = resolved;
    // every coded tensor at these code bits (escalation's last resort: the `--bits 16` archive)
    let allBits: number | undefined;
    // escalation: its own log line a budget, not the allocator's (whose target is the refused default's size)
    let quietAllocation = false;
    // the gate's record of an archive written before with the same bytes (escalation writes its best again)
    let judged: QualityRecord | undefined;
    let snrSaid = false;
    const encode = async (budgetScale: number, refuse = false, remedy?: string): Promise<CompressResult> => {
      const grids = gridsOverride ?? allocation?.(budgetScale, quietAllocation);
      lastGridMap = grids;
      lastGrids = JSON.stringify([...(grids ?? [])]);
      const withGrids = (p: TensorPlan): TensorPlan => {
        if (p.kind === 'coded' && allBits !== undefined) return withBits(p as CodedPlan, allBits, resolved, reader.file);
        const g = p.kind === 'coded' ? grids?.get(p.entry.key) : undefined;
        if (!g) return p;
        const on = withSettings(p as CodedPlan, { stride: 1, relStep: g.relStep, range: g.range, quantizer: stepGrid.id });
        return g.bits !== undefined ? withBits(on, g.bits, resolved, reader.file) : on;
      };
      const result = await writeArchive({
        ...job,
        options: jobOptions,
        compensation: compensationFor(compensation, grids),
        plans: plans.map(withGrids),
        unique: unique.map((p) => withGrids(p) as CodedPlan),
        shownAs,
        overwrite: written,
        ...(cache ? { cache } : {}),
        ...(allocation?.scales ? { scales: allocation.scales } : {}),
        quality: judged ?? quality,
        refuse,
        remedy,
      });
      written = true;
      if (!snrSaid) {
        snrSaid = true; // once (escalation writes several archives)
        if (resolved.targetSnr !== undefined) snrShortfall(result.manifest.tensors, resolved.targetSnr, resolved.onLog);
        largerThanRaw(result.manifest.tensors, result.archiveBytes, resolved.onLog);
        beyondGrid(result.manifest.tensors, resolved.onLog);
      }
      // (with no tensor coded there is no bits per weight to give)
      if (!nothingCoded && !lossless && (resolved.targetBpw !== undefined || (jobOptions !== resolved && !judged)))
        resolved.onLog?.(
          result.quality!.checked
            ? `${describeQuality(result.quality!)}: ${result.bitsPerWeight.toFixed(3)} bits/weight`
            : `written at ${result.bitsPerWeight.toFixed(3)} bits/weight (quality not checked)`,
        );
      return result;
    };
    /**
     * An archive written before, written again: the same grids (`grids`, else the allocation's at `budgetScale`) give
     * the same bytes (encoding is deterministic), so its gate record `record` is the one already taken, not measured
     * again (none: measured).
     */
    const writeAgain = async (
      budgetScale: number,
      record: QualityRecord | undefined,
      grids?: ReadonlyMap<string, GridChoice>,
    ): Promise<CompressResult> => {
      gridsOverride = grids;
      judged = record;
      try {
        return await encode(budgetScale);
      } finally {
        gridsOverride = undefined;
        judged = undefined;
      }
    };
    // What the same options write without the rate flag that was refused, for comparison: the one passing size a
    // run gives every time. This run's encodings and measurements are let go first: the comparison opens the model
    // and its gate again.
    // whether a refused default grid escalates by itself (and so whether a plain run without a budget would)
    const escalationAllowed = (): boolean =>
      resolved.escalate &&
      weights > 0 &&
      // nothing about the grid or codec asked for: the codec set carries 16-bit codes, the quantizer is the default's
      resolved.asked.bits === undefined &&
      resolved.asked.quantizer === undefined &&
      resolved.asked.codec === undefined &&
      resolved.asked.media === undefined &&
      cal !== undefined &&
      resolved.check;
    const compareWithout = async (
      flag: string,
    ): Promise<{ plain?: { bitsPerWeight: number; quality: QualityRecord }; passes: boolean; text: string }> => {
      cache?.close();
      cache = undefined;
      allocation = undefined;
      resolved.onLog?.(`the same options without ${flag}, for comparison`);
      const run = await plainRun?.();
      const plain = run && 'quality' in run ? run : undefined;
      resolved.onLog?.(
        plain
          ? `without ${flag}: ${describeQuality(plain.quality)}: ${plain.bitsPerWeight.toFixed(3)} bits/weight`
          : `without ${flag}: not measured${run && 'notMeasured' in run ? ` (${run.notMeasured})` : ''}`,
      );
      const passes = plain !== undefined && plain.quality.passed !== false;
      // (the comparison is the default's own grid, not escalated: a plain run escalates where nothing fixed the grid)
      const mayEscalate = escalationAllowed();
      const text = plain
        ? `without ${flag} it is ${plain.bitsPerWeight.toFixed(3)} bits/weight at fidelity ${plain.quality.fidelity}${passes ? '' : ', refused too'}${!passes && mayEscalate ? ` (the default grid: a compress without ${flag} then looks for finer grids that pass, by itself)` : ''}`
        : '';
      return { plain, passes, text };
    };
    const withoutRecord = (c: Awaited<ReturnType<typeof compareWithout>>): WithoutRecord | undefined =>
      c.plain ? { bitsPerWeight: c.plain.bitsPerWeight, fidelity: c.plain.quality.fidelity!, passed: c.passes } : undefined;
    const target = lossless || nothingCoded ? undefined : resolved.targetBpw;
    if (target === undefined) {
      // with no tensor coded, the float16 kept tensors are all that is lossy: finer codes change nothing
      const remedy = nothingCoded
        ? resolved.halfKept
          ? 'try --no-half-kept (every kept tensor exact; no tensor is coded here)'
          : undefined
        : finerCodes(resolved);
      const escalates = Boolean(remedy) && escalationAllowed();
      // a rate mode's own remedy: the other way on its own flag
      const flag = nothingCoded
        ? undefined
        : resolved.maxLoss !== undefined
          ? '--max-loss'
          : resolved.targetSnr !== undefined
            ? '--target-snr'
            : undefined;
      const rateRemedy =
        flag === '--max-loss' ? 'give a smaller --max-loss' : flag === '--target-snr' ? 'give a larger --target-snr' : undefined;
      if (!escalates && flag && plainRun && resolved.check) {
        // refused: compared with what the same options write without the flag (as a refused --target-bpw is)
        const r = await encode(1);
        if (r.quality?.passed !== false) return r;
        const q = r.quality!;
        const without = await compareWithout(flag);
        const advice = without.text ? `; ${without.text}${without.passes ? `, which passes: try it without ${flag}` : ''}` : '';
        const withoutIt = withoutRecord(without);
        const head = `${flag} ${flag === '--max-loss' ? resolved.maxLoss : resolved.targetSnr} (${r.bitsPerWeight.toFixed(3)} bits/weight)`;
        // (--force: this archive, the one written, is kept)
        throw gateError(
          shownAs,
          q,
          resolved.force,
          undefined,
          { head, advice, ...(resolved.force ? {} : { remedy: rateRemedy }) },
          withoutIt,
          r,
        );
      }
      if (!escalates)
        return await encode(
          1,
          true,
          remedy && !resolved.escalate
            ? `leave out --no-escalate (compress then looks for the smallest archive that passes), ${remedy}`
            : (remedy ?? rateRemedy),
        );
      const plain = await encode(1);
      if (plain.quality?.passed !== false) return plain;
      // The default grid moves the model past the floor: the smallest archive that passes, from an allocation of
      // the step grids with 16-bit candidates (what --target-bpw does) at the default's size and up, then every
      // tensor at 16-bit codes; the first that passes at the least size is the output.
      const q0 = plain.quality!;
      const from = plain.bitsPerWeight;
      resolved.onLog?.(
        `the default 8-bit grid: fidelity ${q0.fidelity} < ${q0.minFidelity} at ${from.toFixed(3)} bits/weight; looking for the smallest archive that passes, with finer grids (16-bit codes) where the sensitivity probes ask for them (--no-escalate: fail instead)`,
      );
      cache ??= (weights * 2 * from) / 8 <= ENCODE_CACHE_BYTES ? new EncodeCache(ENCODE_CACHE_BYTES) : undefined;
      const record = (how: Record<string, unknown>): void => {
        jobOptions = {
          ...resolved,
          echo: { ...resolved.echo, escalated: { fidelity: q0.fidelity, bitsPerWeight: r3(from), ...how } },
        };
      };
      allocation = await allocateFor({ ...resolved, targetBpw: r3(from), allocating: true });
      let passing: { scale: number; result: CompressResult } | undefined;
      let failing = 0;
      let last = 0;
      quietAllocation = true;
      const attempt = async (s: number): Promise<boolean> => {
        record({ by: 'allocation' });
        resolved.onLog?.(`escalation: finer grids allocated for a budget of ${+s.toFixed(2)}× the default's size`);
        const r = await encode(s);
        last = s;
        const ok = r.quality?.passed !== false;
        if (ok && (!passing || r.bitsPerWeight < passing.result.bitsPerWeight)) passing = { scale: s, result: r };
        return ok;
      };
      for (const s of ESCALATION_SCALES) {
        if (await attempt(s)) break;
        failing = s;
      }
      if (passing)
        for (let k = 0, hi = passing.scale; k < ESCALATION_BISECTIONS && hi > 1; k++) {
          const mid = Math.sqrt(Math.max(failing, 1) * hi);
          if (await attempt(mid)) hi = mid;
          else failing = mid;
        }
      if (passing) {
        const p = passing as { scale: number; result: CompressResult };
        if (last !== p.scale) {
          record({ by: 'allocation' });
          p.result = await writeAgain(p.scale, p.result.quality);
        }
        resolved.onLog?.(
          `escalated: ${p.result.bitsPerWeight.toFixed(3)} bits/weight passes (fidelity ${p.result.quality!.fidelity}), where the default grid's ${from.toFixed(3)} did not`,
        );
        return p.result;
      }
      // no allocation passed: every tensor at 16-bit codes, as --bits 16 writes it
      allocation = undefined;
      allBits = 16;
      record({ by: '16-bit codes' });
      resolved.onLog?.('escalation: 16-bit codes everywhere');
      const sixteen = await encode(1);
      if (sixteen.quality?.passed !== false) {
        resolved.onLog?.(
          `escalated: 16-bit codes everywhere (${sixteen.bitsPerWeight.toFixed(3)} bits/weight) pass (fidelity ${sixteen.quality!.fidelity}), where the default grid and the allocations up to ${(from * ESCALATION_SCALES[ESCALATION_SCALES.length - 1]).toFixed(1)} bits/weight did not`,
        );
        return sixteen;
      }
      const head = `the default grid (${from.toFixed(3)} bits/weight) and finer ones up to 16-bit codes everywhere (${sixteen.bitsPerWeight.toFixed(3)}, fidelity ${sixteen.quality!.fidelity})`;
      const advice = '; the model moves more than the floor allows even at 16-bit codes';
      if (resolved.force) {
        // keep the default archive, as --force says for the default, and still fail
        allBits = undefined;
        jobOptions = resolved;
        const kept = await writeAgain(1, q0);
        throw gateError(shownAs, q0, true, undefined, { head, advice }, undefined, kept);
      }
      // (the catch below removes the output)
      throw gateError(shownAs, q0, false, undefined, {
        head,
        advice,
        remedy: 'judge only the outputs that matter (--judge-output)',
      });
    }
    let result = await encode(1);
    // The allocator's rate is an estimate (the codes' entropy): first correct it by what this archive spent, tensor
    // by tensor (allocate.ts, measuredRates), and allocate again at the target itself.
    // (closer than the bisection's tolerance: an allocation on written rates is expected to land near the target)
    // an archive's bits/weight as said beside the target: over it by less than the third decimal shows, say by how much
    const against = (r: CompressResult): string => {
      const over = Math.ceil(r.archiveBytes - (target * r.compressedWeights) / 8);
      const text = `${r.bitsPerWeight.toFixed(3)} bits/weight`;
      return r.bitsPerWeight > target && over > 0 && r.bitsPerWeight.toFixed(3) === target.toFixed(3)
        ? `${text} (${over} byte${over === 1 ? '' : 's'} over)`
        : text;
    };
    const off = (r: CompressResult): boolean => r.bitsPerWeight > target || r.bitsPerWeight < MEASURED_UNDERSHOOT * target;
    // The best archive of every attempt below that fitted the target, written again at the end if the last attempt
    // is not it: an attempt 0.001 over the target was tightened into a smaller archive than one that had fitted
    // before (Silero v4 `--target-bpw 3`: 2.939 at fidelity 0.956 fitted, 3.001 did not, 2.909 at 0.914 was
    // written). Best: one the gate passed over one it refused, then the largest (the allocation spends a budget for
    // the least modelled error).
    interface Attempt {
      grids?: ReadonlyMap<string, GridChoice>;
      scale: number;
      bitsPerWeight: number;
      /** The sha256 of every entry: the same archive written again has the same. */
      entries: string;
      quality?: QualityRecord;
    }
    let best: Attempt | undefined;
    const better = (a: Judged, b: Judged | undefined): boolean => betterFit(a, b, target);
    const entriesOf = (r: CompressResult): string => JSON.stringify(r.manifest.entries);
    const note = (r: CompressResult, at: number): void => {
      if (better(r, best))
        best = { grids: lastGridMap, scale: at, bitsPerWeight: r.bitsPerWeight, entries: entriesOf(r), quality: r.quality };
    };
    note(result, 1);
    for (let k = 0; k < MEASURED_RATE_ATTEMPTS && allocation?.observe && off(result); k++) {
      const before = lastGrids;
      allocation.observe(1, writtenRates(result));
      if (JSON.stringify([...allocation(1, true)]) === before) break;
      resolved.onLog?.(`archive at ${against(result)} for a target of ${target}: re-allocating on the rates as written`);
      result = await encode(1);
      note(result, 1);
    }
    // Over the target: tighten. Under by more than 5 %: spend the rest,
    // but keep the last archive that fitted if the larger budget overshoots. Bisection on the budget scale
    // between the largest that fitted and the smallest that did not.
    let fitted = result.bitsPerWeight <= target ? 1 : 0;
    let over = result.bitsPerWeight > target ? 1 : Infinity;
    let scale = 1;
    for (
      let attempt = 0;
      attempt < BUDGET_ATTEMPTS && (result.bitsPerWeight > target || result.bitsPerWeight < UNDERSHOOT * target);
      attempt++
    ) {
      const guess = scale * (target / result.bitsPerWeight);
      let next = Number.isFinite(over) && fitted > 0 ? Math.sqrt(fitted * over) : Math.min(guess, over * 0.97);
      // The same grids again would give the same archive: the allocation is discrete, so move the budget on in
      // the same direction until the grids change; when they never do (every tensor at its coarsest, or its
      // finest), stop.
      const gridsAt = (s: number): string => JSON.stringify([...(allocation!(s, true) ?? [])]);
      const down = result.bitsPerWeight > target;
      const bound = down ? fitted : over;
      for (let k = 0; k < SAME_GRID_STEPS && gridsAt(next) === lastGrids; k++) {
        const further = down ? next * 0.93 : next / 0.93;
        // between a fitted and an over scale the bisection owns the interval: do not step past its ends
        next = Number.isFinite(bound) && bound > 0 ? (down ? Math.max(further, bound) : Math.min(further, bound)) : further;
      }
      if (gridsAt(next) === lastGrids) break;
      resolved.onLog?.(`archive at ${against(result)} for a target of ${target}: re-allocating`);
      scale = next;
      result = await encode(scale);
      note(result, scale);
      if (result.bitsPerWeight <= target) fitted = Math.max(fitted, scale);
      else over = Math.min(over, scale);
    }
    const keep = best as Attempt | undefined; // (assigned inside `note`)
    if (keep?.grids && keep.entries !== entriesOf(result) && better(keep, result)) {
      resolved.onLog?.(
        `archive at ${against(result)} for a target of ${target}: writing again the best that fitted, ${keep.bitsPerWeight.toFixed(3)}`,
      );
      // the entries' sha256 check that it is the same archive (else the gate measures it again)
      result = await writeAgain((scale = keep.scale), keep.quality, keep.grids);
      if (entriesOf(result) !== keep.entries) result = await writeAgain(scale, undefined, keep.grids);
    }
    if (cache?.hits) resolved.onLog?.(`${cache.hits} tensor encodes reused from earlier attempts (grids unchanged)`);
    const reachable = result.bitsPerWeight <= target;
    // where untaken branches hold much of the model, their default grids eat the budget: say so, and how to free it
    const pinnedShare = pinnedWeights / weights;
    const pinnedNote =
      pinnedShare >= 0.1
        ? `${(100 * pinnedShare).toFixed(0)} % of the coded weights lie in If branches no calibration input takes and keep ${pinnedBits === 8 * pinnedWeights ? 'the default grid' : 'the grid their options give'} (~${+(pinnedBits / Math.max(1, pinnedWeights)).toFixed(1)} bits each, ${(pinnedBits / weights).toFixed(1)} bits/weight of the budget): calibration inputs that take those branches free it${cal?.rateInput ? ` (the model has a rate input, ${cal.rateInput}: --audio-rate with several rates, e.g. 16000,8000)` : ''}`
        : '';
    if (!reachable)
      resolved.onLog?.(
        `warning: ${against(result)} is over the target ${target}: the coarsest grids cost more${pinnedNote ? `; ${pinnedNote}` : ''}`,
      );
    else if (result.bitsPerWeight < UNDERSHOOT * target)
      // a budget above what the finest candidate grids take: said, not left for the user to notice
      resolved.onLog?.(
        `note: ${result.bitsPerWeight.toFixed(3)} bits/weight is under the target ${target}: no choice of the allocation's candidate grids comes nearer without going over it (for more precision, --bits 16 without a target)`,
      );
    if (result.quality?.passed !== false) return result;
    // Under the floor at this budget: find the smallest budget that passes (1.5×, 2.5×, 4× the target, then two
    // bisection steps), report it, and leave no output unless --force.
    const failed = result;
    // the grids of the archive that failed (the bisection's, or an earlier attempt's written again)
    const failedGrids = lastGridMap;
    let passing: CompressResult | undefined;
    let lo = Math.max(1, scale);
    let hi: number | undefined;
    resolved.onLog?.(
      `fidelity ${failed.quality!.fidelity} < ${failed.quality!.minFidelity} at ${failed.bitsPerWeight.toFixed(3)} bits/weight: looking for the smallest budget that passes (1.5×, 2.5×, 4× the target, then between) to name it`,
    );
    for (const s of [1.5, 2.5, 4]) {
      const r = await encode(s);
      if (r.quality?.passed !== false) {
        passing = r;
        hi = s;
        break;
      }
      lo = s;
    }
    if (hi !== undefined)
      for (let k = 0; k < 2; k++) {
        const mid = Math.sqrt(lo * hi);
        const r = await encode(mid);
        if (r.quality?.passed !== false) {
          passing = r;
          hi = mid;
        } else lo = mid;
      }
    const found = passing?.bitsPerWeight;
    // --force keeps the archive at the target the user asked for: the search above wrote other grids, so the failed
    // ones are written again (with the gate's record of them) before anything else
    const kept = resolved.force ? await writeAgain(1, failed.quality, failedGrids) : undefined;
    const without = await compareWithout('--target-bpw');
    const { plain, text: plainText } = without;
    const plainWins = without.passes && (found === undefined || plain!.bitsPerWeight <= found);
    const head = `--target-bpw ${target} (${against(failed)}${reachable ? '' : ', the coarsest grids'})`;
    const advice =
      (plainWins
        ? `; ${plainText}, which passes and is the smallest passing archive found: try it without --target-bpw${found !== undefined ? ` (the smallest budget found to pass wrote ${found.toFixed(3)})` : ''}${fewHeldBack(failed.quality!)}`
        : found !== undefined
          ? `; the smallest passing archive found is ${found.toFixed(3)} bits/weight (fidelity ${passing!.quality!.fidelity}): try --target-bpw ${Math.ceil(found * 10) / 10}${plain ? ` (${plainText})` : ''}${fewHeldBack(failed.quality!, passing!.quality)}`
          : `; no budget up to 4× the target passes${plain ? ` and ${plainText}` : ''}: try the default (no --target-bpw: where its 8-bit grid fails the gate it looks for finer grids itself, up to ${FINER_CODES})`) +
      (pinnedNote ? `; ${pinnedNote}` : '');
    throw gateError(shownAs, failed.quality!, resolved.force, found, { head, advice }, withoutRecord(without), kept);
  } finally {
    cache?.close();
    hashing.abort(); // a run that failed or was aborted stops reading the source for its hash
    reader.close();
  }
}

const FINER_CODES = '--bits 16 (a 256× finer grid, about twice the size)';

/** The staging file, or a temporary file named after it (`.<staged name>.…tmp`). */
function isStagingFile(file: string, staged: string): boolean {
  const f = resolve(file);
  // (its temporary copy `.STAGED.…tmp`, and the gate's scratch file beside that copy `..STAGED.…scratch.tmp`)
  return (
    f === staged ||
    (dirname(f) === dirname(staged) &&
      /^\.{1,2}$/.test(basename(f).split(basename(staged))[0]) &&
      basename(f).includes(`${basename(staged)}.`))
  );
}

/**
 * What a suggested budget is worth when the gate judged few held-back samples: BlazeFace front on 8 photos (2 held
 * back) suggested 8.8 bits/weight, which was then refused at fidelity 0.8999.
 */
/** An archive written under `--target-bpw`, as rate control's end compares them (betterFit). */
export interface Judged {
  bitsPerWeight: number;
  quality?: QualityRecord;
}

/**
 * Whether archive `a` is a better output than `b` for a budget of `target` bits/weight: one that fits over one that
 * does not, then one the gate passed (or did not judge) over one it refused, then the larger (the allocation spends a
 * budget for the least modelled error).
 */
export function betterFit(a: Judged, b: Judged | undefined, target: number): boolean {
  if (a.bitsPerWeight > target) return false;
  if (!b || b.bitsPerWeight > target) return true;
  const pa = a.quality?.passed !== false;
  const pb = b.quality?.passed !== false;
  return pa !== pb ? pa : a.bitsPerWeight > b.bitsPerWeight;
}

/** Options that set a grid or a codec's loss: given, untaken branches' tensors are coded with them, not the default. */
const UNTAKEN_GRID_KEYS = [
  'bits',
  'range',
  'stride',
  'relStep',
  'quantizer',
  'rotate',
  'clip',
  'outliers',
  'quality',
  'lossless',
] as const;

/**
 * The caveat of a suggested budget: judged on few held-back samples, or passed barely over the floor (a CLIP-like
 * model's 4.9 suggested after a pass at 0.9006 was refused at 0.873 when followed: the verdict near the floor is not
 * monotonic in the budget on 4 held-back samples; a new-user sweep).
 */
export function fewHeldBack(q: QualityRecord, passing?: QualityRecord): string {
  const n = q.samples ?? 0;
  const margin =
    passing?.fidelity !== undefined && passing.minFidelity !== undefined ? passing.fidelity - passing.minFidelity : Infinity;
  if (n > 0 && n < FEW_HELD_BACK)
    return ` (judged on ${samplesWording(q)}: near the floor a suggestion can fail on a second run; more calibration inputs make it firmer)`;
  if (margin < NEAR_FLOOR)
    return ` (it passed within ${NEAR_FLOOR} of the floor, on ${samplesWording(q)}: a budget there can fail when followed; a little more, or more calibration inputs, make it firmer)`;
  return '';
}

/** A pass by less than this over the floor is a near thing (fewHeldBack). */
const NEAR_FLOOR = 0.02;

/**
 * What a refusal at fixed settings advises first: with 8-bit codes and no rate control the one larger budget
 * there is, 16-bit codes (a model whose outputs move more than the floor allows at int8 precision: BlazeFace's
 * 256×256 detector, M-LSD); otherwise the default advice.
 */
function finerCodes(o: ResolvedOptions): string | undefined {
  const b = o.base;
  const codec = (CODEC_SET_NAMES as readonly string[]).includes(b.codec) ? undefined : getCodec(b.codec);
  const lossless =
    b.quality === undefined &&
    b.lossless !== false &&
    (!codec || codec.lossless === 'always' || (codec.lossless === 'optional' && (b.lossless ?? codec.defaultLossless)));
  const defaultGrid = b.relStep === undefined && b.stride === 1 && !o.rules.length;
  return !o.rateControl && b.bits === 8 && lossless && defaultGrid ? `try ${FINER_CODES}` : undefined;
}

/**
 * The statistics the archive's codes use: all of them, but where the allocation found rounding to nearest the
 * better deal on a tensor's grid (fewer bits for the modelled error), that tensor's are left out, with the reason.
 */
function compensationFor(
  compensation: { stats: Map<string, TensorStatistics>; missing: Map<string, string> } | undefined,
  grids: ReadonlyMap<string, GridChoice> | undefined,
): { stats: Map<string, TensorStatistics>; missing: Map<string, string> } | undefined {
  if (!compensation || !grids) return compensation;
  const stats = new Map(compensation.stats);
  const missing = new Map(compensation.missing);
  for (const [key, g] of grids)
    if (g.compensate === false && stats.delete(key))
      missing.set(key, `the allocation chose rounding to nearest at relStep ${+g.relStep.toFixed(4)}`);
  return { stats, missing };
}

/**
 * The statistics of tensors on a fixed step grid whose compensation pays at their own rate–distortion exchange
 * rate (rate/compensated.ts, compensationVerdict); the others are rounded to nearest, named with the reason.
 */
function fixedGridCompensation(
  reader: ModelReader,
  unique: readonly CodedPlan[],
  compensation: { stats: Map<string, TensorStatistics>; missing: Map<string, string> },
  options: ResolvedOptions,
): { stats: Map<string, TensorStatistics>; missing: Map<string, string> } {
  const started = Date.now();
  const stats = new Map(compensation.stats);
  const missing = new Map(compensation.missing);
  let judged = 0;
  for (const p of unique) {
    const layer = stats.get(p.entry.key);
    const { relStep, rotate } = p.settings;
    if (!layer || relStep === undefined || rotate || slicesOf(p, options.sliceWeights)) continue;
    // the channels the encoder will code (its output channels of zeros left out)
    const coded = withoutZeroChannels(p, reader.read(p.entry.key), p.layout, layer);
    const prepared = preparePlanes(coded.values, coded.layout, p.settings.outliers);
    const v = compensationVerdict(
      prepared.planes,
      prepared.shapes,
      coded.layout,
      { bits: p.settings.bits, clip: p.settings.clip },
      p.settings.range,
      relStep,
      layer,
    );
    judged++;
    options.onDebug?.(
      `  ${p.entry.name}: compensation at relStep ${relStep}: layer error ×${v.ratio.toFixed(3)}, ${v.extraBits.toFixed(0)} extra bits, ` +
        `saves ${v.saved.toExponential(2)} against ${v.cost.toExponential(2)} for the bits: ${v.pays ? 'compensated' : 'nearest'}`,
    );
    if (v.pays) continue;
    stats.delete(p.entry.key);
    missing.set(
      p.entry.key,
      `compensation would cost ${(v.extraBits / elementCount(p.entry.shape)).toFixed(2)} bits/weight more, more than a finer grid needs for the same error`,
    );
  }
  options.onLog?.(
    `compensate: weighed against rounding to nearest on ${judged} fixed grid${judged === 1 ? '' : 's'} (${((Date.now() - started) / 1000).toFixed(1)} s)`,
  );
  return { stats, missing };
}

/** Features per diagonal block of H for large-input models (ISNet: 576 best of 288 / 576 / 1152 on the masks). */
const GRAM_BLOCK = 576;
/** Positions kept per conv for large-input models: every one (stride 2 is 2.5× faster, not judged on the masks). */
const GRAM_POSITION_STRIDE = 1;
/**
 * Gram outputs per capture graph for large-input models (MB; each part of the convolutions is a pass of its own
 * over the probe samples): bounds the capture's memory beside one run of the model (docs/compensation.md).
 */
const GRAM_PART_MB = 64;

/**
 * How statistics are captured for a model with large inputs: declared so (ISNet, 1×3×1024×1024; `largeInputs`, the
 * rule that also turns onnxruntime's memory arena off), or fed so by the calibration data (a detector with dynamic
 * dimensions calibrated on 640×640 photos: its first probe sample has an input of LARGE_SAMPLE_ELEMENTS or more).
 * Then onnxruntime computes the convolutions' H in the capture graph, block-diagonal over blocks of at most
 * GRAM_BLOCK features, from every GRAM_POSITION_STRIDE-th row and column of positions: the JavaScript Gram of full H
 * took ~16 minutes per ISNet photo. Other models (small inputs: PaddleOCR's 48-pixel lines, Silero's 512-sample
 * windows) keep the JavaScript Gram of full H (their archives unchanged). docs/compensation.md has the measurements
 * behind the numbers; NNMEDIA_GRAM_BLOCK, NNMEDIA_GRAM_POSITION_STRIDE and NNMEDIA_GRAM_PART_MB (GRAM_PART_MB; at least 1:
 * one graph for all is `bench/isnet-statistics.ts --part-mb 0`) override them
 * for measuring.
 */
async function largeInputCapture(
  source: Uint8Array,
  probe: readonly CalibrationSample[],
): Promise<{ gramInGraph?: boolean; maxBlock?: number; positionStride?: number; gramPartBytes?: number }> {
  if (!largeInputs(source) && !(probe.length && (await largestInput(probe[0])) >= LARGE_SAMPLE_ELEMENTS)) return {};
  const env = (name: string, fallback: number): number => {
    const v = Number(process.env[name]);
    return Number.isFinite(v) && v >= 1 ? v : fallback;
  };
  return {
    gramInGraph: true,
    maxBlock: env('NNMEDIA_GRAM_BLOCK', GRAM_BLOCK),
    positionStride: env('NNMEDIA_GRAM_POSITION_STRIDE', GRAM_POSITION_STRIDE),
    gramPartBytes: env('NNMEDIA_GRAM_PART_MB', GRAM_PART_MB) * 2 ** 20,
  };
}

/** Elements of a calibration sample's input from which statistics are computed in the capture graph (2^20). */
const LARGE_SAMPLE_ELEMENTS = 2 ** 20;

/** Elements of the largest input of a calibration sample (of its first run, for a sequence). */
async function largestInput(sample: CalibrationSample): Promise<number> {
  const data = await sample.load();
  const feed = data.kind === 'feed' ? data.feed : (data.steps[0] ?? {});
  return Math.max(0, ...Object.values(feed).map((t) => elementCount(t.dims)));
}

/** The last statistics captured in this process, by model bytes and probe samples (one entry: H can be large). */
let lastCapture: { key: string; report: StatisticsReport } | undefined;

/**
 * Layer-input statistics of every coded tensor on the calibration set's probe samples (compensate/statistics.ts),
 * on the main thread, once per compress. A tensor stored once for several identical ones gets the sum of their
 * statistics (its codes serve every use). Tensors without statistics (a branch no sample takes, a Loop body,
 * an op the capture does not follow) are named with the reason and rounded to nearest.
 */
async function gatherStatistics(
  reader: ModelReader,
  cal: Calibration,
  unique: readonly CodedPlan[],
  sameAs: ReadonlyMap<string, string>,
  options: ResolvedOptions,
): Promise<{ stats: Map<string, TensorStatistics>; missing: Map<string, string> }> {
  const started = Date.now();
  // the same model on the same probe samples in one process (a benchmark's grid of settings): captured once
  const source = cal.source();
  const key = `${createHash('sha256').update(source).digest('hex')}\n${cal.set.description}\n${cal.probe.length}`;
  const cached = lastCapture?.key === key;
  const capture = cached ? {} : await largeInputCapture(source, cal.probe);
  const report = cached
    ? lastCapture!.report
    : await captureStatistics(
        source,
        statisticsTargets(reader),
        async (model, extra, onRun) => {
          const wanted = new Set(extra);
          await runCalibration(model, cal.probe, {
            file: reader.file,
            signal: options.signal,
            keep: false,
            onRun: async (r) => {
              const outs = new Map<string, OutputTensor>();
              for (const [name, t] of Object.entries(r.outputs))
                if (wanted.has(name) && t.data instanceof Float32Array) outs.set(name, { data: t.data, dims: t.dims });
              await onRun(outs);
            },
          });
        },
        { signal: options.signal, ...capture },
      );
  // kept for the next compress of the same model and samples, unless H is a large model's (ISNet: 0.42 GB in
  // float32, and its blocks' factors twice that while in use): a library caller would hold that until another model came
  lastCapture = report.inGraph ? undefined : { key, report };
  const stats = new Map<string, TensorStatistics>();
  const missing = new Map(report.missing);
  for (const plan of unique) {
    const key = plan.entry.key;
    const keys = [key, ...[...sameAs].filter(([, first]) => first === key).map(([k]) => k)];
    const parts = keys.flatMap((k) => {
      const s = report.stats.get(k);
      return s ? [s] : [];
    });
    if (parts.length < keys.length) {
      // a shared tensor some of whose uses are unseen: the statistics would speak for part of them only
      if (parts.length) missing.set(key, `statistics for ${parts.length} of its ${keys.length} identical uses`);
      continue;
    }
    const merged = mergeStatistics(key, parts);
    if (!merged) {
      missing.set(key, 'its identical uses have statistics of different shapes');
      continue;
    }
    const few = tooFewRows(merged);
    if (few) missing.set(key, few);
    else stats.set(key, merged);
  }
  options.onLog?.(
    `compensate: layer statistics for ${stats.size} of ${unique.length} tensors from ${report.runs} runs on ` +
      `${cal.probe.length} probe sample${cal.probe.length === 1 ? '' : 's'} (${cached ? 'as captured before in this process' : `${((Date.now() - started) / 1000).toFixed(1)} s`})` +
      (report.inGraph
        ? `; large inputs: convolutions' statistics computed by onnxruntime, block-diagonal over ${capture.maxBlock} features` +
          (report.parts > 1
            ? `, in ${report.parts} passes over the samples (at most ${capture.gramPartBytes! / 2 ** 20} MB of Grams a run)`
            : '')
        : ''),
  );
  return { stats, missing };
}

/** Each coded tensor's bytes in a written archive (a tensor stored once for several: the stored one's). */
function writtenRates(result: CompressResult): WrittenRates {
  const tensorBytes = new Map<string, number>();
  for (const t of result.manifest.tensors) if (t.layout && !t.sameAs && t.bytes !== undefined) tensorBytes.set(t.key, t.bytes);
  return { tensorBytes, archiveBytes: result.archiveBytes };
}
