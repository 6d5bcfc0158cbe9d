/**
 * A calibration set from the user's files (`--calibration PATH`, repeatable: files or folders), and its split
 * into probe samples and held-back samples.
 *
 * Files by extension: images (.png .jpg .jpeg .webp .tif .tiff .gif .avif), audio (.wav .flac .mp3 .ogg .opus
 * .m4a …), raw tensors (.npy .npz .safetensors .json). Folders are read recursively in sorted order, hidden files
 * skipped; in a folder that holds images or audio, `.json` files are taken as metadata (labels) and skipped —
 * name a JSON file explicitly to use it. Paths keep the order they were given in.
 *
 * Raw tensors are matched to the model's inputs by name (npz/safetensors entries, JSON keys, `NAME.npy` or
 * `GROUP.NAME.npy`, files of one GROUP — or the plain `NAME.npy` files of one folder — forming one sample);
 * a single-input model takes unnamed data. An array with one more dimension than its input holds several
 * samples along its first axis. Inputs no file gives are filled where that is meaningful: the rate input (`sr`)
 * with the audio rate, state inputs with zeros; any other missing input is an error naming it.
 */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, relative } from 'node:path';
import { BadCalibrationError } from '../errors.js';
import {
  AUDIO_EXTENSIONS,
  audioSampleData,
  decodeAudio,
  describeAudioSpec,
  rateTensor,
  resolveAudioSpec,
  zeroTensor,
  type AudioSpec,
  type AudioSpecInput,
} from './audio.js';
import {
  IMAGE_EXTENSIONS,
  checkImage,
  describeImageSpec,
  isImageInput,
  loadImage,
  resolveImageSpec,
  type ImageSpecInput,
} from './image.js';
import { describeModel, formatShape, formatValueInfo, type ModelIo, type ValueInfo } from './model-io.js';
import { RAW_EXTENSIONS, decodeRawFile, npyInputHint, type NamedTensor } from './raw.js';
import { fitTensor, fixedBatch, resolveShapeOverrides, type InputShape, type ShapeOverrides } from './shape.js';
import { findRateInput, findStateLinks } from './state.js';
import { convertTensor, isElementType, stackBatch, type CalibrationTensor, type Feed } from './tensor.js';
import type { CalibrationSample, CalibrationSet, SampleData } from './types.js';
import { fsError } from '../io/files.js';
import { PIXELS_NOTE, takesPixels, valuesGiven } from './pixels.js';

/** What the user gives: files, input shapes, and how images and audio become tensors. */
export interface CalibrationSpec {
  /** Files or folders (`--calibration`, repeatable). */
  paths: string[];
  /** `--input NAME=SHAPE`: input shapes, or sizes of symbolic dimensions. */
  inputs?: InputShape[];
  /** Image preprocessing; `input` names the model input images feed (default: the image-like input). */
  image?: ImageSpecInput & { input?: string };
  /** Audio preprocessing (rate, window, hop, context, segment, state links, input). */
  audio?: AudioSpecInput;
  /** At most this many samples, evenly spaced over the set (default: all). */
  maxSamples?: number;
  /**
   * `--judge-output NAME` (repeatable): the outputs the model is judged on — quality gate, rate-control probes,
   * `eval` — where it exports more than its result (side outputs, feature maps). Default: every output.
   */
  outputs?: string[];
}

export type FileKind = 'image' | 'audio' | 'raw';

export function fileKind(file: string): FileKind | undefined {
  const ext = extname(file).toLowerCase();
  if ((IMAGE_EXTENSIONS as readonly string[]).includes(ext)) return 'image';
  if ((AUDIO_EXTENSIONS as readonly string[]).includes(ext)) return 'audio';
  if ((RAW_EXTENSIONS as readonly string[]).includes(ext)) return 'raw';
  return undefined;
}

/** The calibration files under the given paths, in order (see the module comment for the rules). */
export function listCalibrationFiles(paths: readonly string[]): Array<{ file: string; kind: FileKind }> {
  const out: Array<{ file: string; kind: FileKind }> = [];
  for (const path of paths) {
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      throw fsError('cannot read the calibration data', path, e); // E_IO, as a missing model or archive is
    }
    if (st.isFile()) {
      const kind = fileKind(path);
      if (!kind)
        throw new BadCalibrationError(
          `not a calibration file: images (${IMAGE_EXTENSIONS.join(' ')}), audio (${AUDIO_EXTENSIONS.join(' ')}) or raw tensors (${RAW_EXTENSIONS.join(' ')})`,
          { file: path },
        );
      out.push({ file: path, kind });
      continue;
    }
    if (!st.isDirectory())
      throw new BadCalibrationError('not a file or a folder (a device, pipe or socket): give calibration files or folders', {
        file: path,
      });
    const found: Array<{ file: string; kind: FileKind }> = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir).sort()) {
        if (name.startsWith('.')) continue;
        const p = join(dir, name);
        const s = statSync(p);
        if (s.isDirectory()) walk(p);
        else if (s.isFile()) {
          const kind = fileKind(p);
          if (kind) found.push({ file: p, kind });
        }
      }
    };
    walk(path);
    const media = found.some((f) => f.kind === 'image' || f.kind === 'audio');
    const kept = found.filter((f) => !(media && f.kind === 'raw' && extname(f.file).toLowerCase() === '.json'));
    if (!kept.length)
      throw new BadCalibrationError('folder holds no calibration files (images, audio or raw tensors)', { file: path });
    out.push(...kept);
  }
  return out;
}

/** Adds what no file gives: the rate input and zero state; an error for any other missing input. */
export function completeFeed(
  feed: Feed,
  io: ModelIo,
  context: { file?: string; rate?: number; shapes?: ReadonlyMap<string, number[]> },
): Feed {
  const rate = findRateInput(io);
  const state = new Set(findStateLinks(io).map((l) => l.input));
  for (const input of io.inputs) {
    if (feed[input.name]) continue;
    if (rate && input.name === rate.name) feed[input.name] = rateTensor(input, context.rate ?? 16000);
    else if (state.has(input.name)) feed[input.name] = zeroTensor(input, context.shapes);
    else
      throw new BadCalibrationError(
        `no data for input ${formatValueInfo(input)} (the data gives ${Object.keys(feed).join(', ') || 'nothing'}); give it by name in an .npz, safetensors or JSON file, or as ${input.name}.npy`,
        { file: context.file, tensor: input.name },
      );
  }
  return feed;
}

/** The model input images feed: the one named, else the image-like one, else the only float input. */
function imageInputOf(io: ModelIo, name?: string): ValueInfo {
  if (name) {
    const i = io.inputs.find((x) => x.name === name);
    if (!i)
      throw new BadCalibrationError(
        `image input ${name}: the model has no such input; inputs: ${io.inputs.map(formatValueInfo).join(', ')}`,
      );
    return i;
  }
  const image = io.inputs.find(isImageInput) ?? (io.inputs.length === 1 ? io.inputs[0] : undefined);
  if (!image)
    throw new BadCalibrationError(
      `no model input looks like an image (float, rank 4, 1 or 3 channels): name one with --image-input; inputs: ${io.inputs.map(formatValueInfo).join(', ')}`,
    );
  return image;
}

/** Evenly spaced indices: `keep` of `n`, in order. */
export function evenlySpaced(n: number, keep: number): number[] {
  if (keep >= n) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: keep }, (_, i) => Math.floor((i * n) / keep));
}

/** Pixels of a picture run at its own size beyond which the description suggests --image-size (1024²). */
const LARGE_PICTURE = 1024 * 1024;

interface PendingSample {
  label: string;
  source?: string;
  kind: SampleData['kind'];
  load(): Promise<SampleData>;
}

/** Builds the calibration set from the user's files (see the module comment). `file` names the model in errors. */
export async function buildCalibrationSet(model: Uint8Array | ModelIo, spec: CalibrationSpec): Promise<CalibrationSet> {
  const io = model instanceof Uint8Array ? describeModel(model) : model;
  if (!spec.paths.length) throw new BadCalibrationError('no calibration paths given');
  const overrides = resolveShapeOverrides(spec.inputs ?? [], io.inputs);
  const files = listCalibrationFiles(spec.paths);
  const pending: PendingSample[] = [];
  const parts: string[] = [];
  const images = files.filter((f) => f.kind === 'image');
  const audio = files.filter((f) => f.kind === 'audio');
  const raw = files.filter((f) => f.kind === 'raw');
  let audioSpec: AudioSpec | undefined;
  const rateOf = (): number | undefined => audioSpec?.rate ?? spec.audio?.rate;
  // the pictures' feeds before the other inputs are completed, for pairing with raw tensors (below)
  const pictures: Array<{ label: string; source: string; load(): Promise<Feed> }> = [];
  let imageInputName: string | undefined;

  if (images.length) {
    const input = imageInputOf(io, spec.image?.input);
    // a model that rescales its pixels itself (Keras's Rescaling layer) takes [0, 255] unless told otherwise
    const pixels = model instanceof Uint8Array && takesPixels(io, model, input, spec.image);
    const imageSpec = resolveImageSpec({ ...(pixels ? { range: [0, 255] as [number, number] } : {}), ...spec.image }, input);
    // every file readable before any is counted (a corrupt one fails here, not in a later eval)
    let largest = { width: 0, height: 0 };
    for (const { file } of images) {
      const size = await checkImage(file);
      if (size.width * size.height > largest.width * largest.height) largest = size;
    }
    // a model with dynamic height and width runs each picture at its own size: a super-resolution model on photos
    // of 1411² took 3–4 GB and up to 17 minutes under rate control (a new-user sweep)
    const ownSizes =
      imageSpec.fit === 'none' && largest.width * largest.height > LARGE_PICTURE
        ? `; at their own sizes, up to ${largest.width}×${largest.height}: --image-size WxH bounds the time and memory`
        : '';
    // a model that takes a batch of B pictures gets B files a sample (the last batch filled from the first files)
    const batch = fixedBatch(input, overrides);
    for (let at = 0; at < images.length; at += batch) {
      const group = Array.from({ length: batch }, (_, b) => images[(at + b) % images.length].file);
      const file = group[0];
      const loadPictures = async (): Promise<Feed> => {
        const type = isElementType(input.type) ? input.type : 'float32';
        const parts = [];
        for (const f of group) parts.push(convertTensor(await loadImage(f, imageSpec), type, { file: f, tensor: input.name }));
        return {
          [input.name]: fitTensor(
            batch > 1 ? stackBatch(parts, { file, tensor: input.name }) : parts[0],
            input,
            new Map(overrides.dims),
            { file },
          ),
        };
      };
      const label = batch > 1 ? `${file} (+${batch - 1})` : file;
      pictures.push({ label, source: file, load: loadPictures });
      pending.push({
        label,
        source: file,
        kind: 'feed',
        load: async () => ({
          kind: 'feed',
          feed: completeFeed(await loadPictures(), io, { file, rate: rateOf(), shapes: overrides.inputs }),
        }),
      });
    }
    imageInputName = input.name;
    // files are scaled to [0, 1] unless told otherwise, synthetic pictures to [−1, 1]: say which was assumed
    const assumed = !valuesGiven(spec.image);
    parts.push(
      `${images.length} image${images.length > 1 ? 's' : ''} → ${input.name}${batch > 1 ? ` in batches of ${batch}` : ''} (${describeImageSpec(imageSpec)}${pixels ? PIXELS_NOTE : ''}${ownSizes})` +
        (assumed && !pixels
          ? `: ${input.type === 'uint8' ? 'the pixels as they are (0…255: a uint8 input)' : 'x/255'} by default, give --image-range or --image-mean/--image-std if the model takes other values`
          : ''),
    );
  }

  if (audio.length) {
    const rates = spec.audio?.rates ?? [spec.audio?.rate ?? undefined];
    for (const rate of rates) {
      const one = resolveAudioSpec({ ...spec.audio, ...(rate !== undefined ? { rate } : {}) }, io);
      audioSpec ??= one;
      const before = pending.length;
      for (const { file } of audio) {
        const samples = await decodeAudio(file, one.rate);
        const pieces = audioSampleData(samples, one, io, overrides.inputs);
        const whole = pieces.length === 1;
        const at = rates.length > 1 ? ` at ${one.rate / 1000} kHz` : '';
        for (const p of pieces) {
          const [a, b] = p.range;
          const label = whole ? `${file}${at}` : `${file} ${(a / one.rate).toFixed(2)}–${(b / one.rate).toFixed(2)} s${at}`;
          const kind: SampleData['kind'] = one.state.length ? 'sequence' : 'feed';
          pending.push({
            label,
            source: file,
            kind,
            load: async () => {
              const d = p.data();
              if (d.kind === 'feed') completeFeed(d.feed, io, { file, rate: one.rate, shapes: overrides.inputs });
              else for (const step of d.steps) completeFeedExceptState(step, d.initial, io, file, one.rate, overrides);
              return d;
            },
          });
        }
      }
      parts.push(
        `${audio.length} audio file${audio.length > 1 ? 's' : ''} → ${pending.length - before} samples into ${one.input} (${describeAudioSpec(one)})`,
      );
    }
  }

  if (raw.length) {
    const before = pending.length;
    const exts = [...new Set(raw.map((f) => extname(f.file).toLowerCase()))].join(', ');
    // images and raw tensors for the other inputs (a CLIP-like model: photos, and token ids in .npz or JSON): each
    // sample pairs a picture with a raw sample, both cycled to the longer list
    const rawOnes = rawSamples(
      raw.map((f) => f.file),
      io,
      overrides,
    );
    const rawFeeds = await Promise.all(rawOnes.map(async (r) => (await r.load()) as Extract<SampleData, { kind: 'feed' }>));
    const paired = imageInputName !== undefined && rawFeeds.every((r) => r.feed[imageInputName!] === undefined);
    if (paired) {
      // the pictures alone do not run: their samples (the first ones) and their part of the description give way
      pending.splice(0, pictures.length);
      parts.shift();
      const n = Math.max(pictures.length, rawOnes.length);
      // the shorter list shifted by one each time round, so that every 4th sample (the held-back ones) is not always
      // the same item of it (4 photos with 16 id samples held back one photo four times)
      const at = (k: number, length: number): number => (length < n ? (k + Math.floor(k / length)) % length : k);
      for (let k = 0; k < n; k++) {
        const picture = pictures[at(k, pictures.length)];
        const other = rawFeeds[at(k, rawFeeds.length)];
        pending.push({
          label: `${picture.label} + ${rawOnes[at(k, rawOnes.length)].label}`,
          source: picture.source,
          kind: 'feed',
          load: async () => ({
            kind: 'feed',
            feed: completeFeed({ ...other.feed, ...(await picture.load()) }, io, {
              file: picture.source,
              rate: rateOf(),
              shapes: overrides.inputs,
            }),
          }),
        });
      }
      parts.push(
        `${images.length} image${images.length > 1 ? 's' : ''} → ${imageInputName} paired with ${rawOnes.length} raw sample${rawOnes.length === 1 ? '' : 's'} (${exts}) → ${Object.keys(rawFeeds[0].feed).join(', ')}, each list cycled to ${n} samples`,
      );
    } else {
      // without pictures to pair with, every raw sample gives every input
      for (const [k, r] of rawOnes.entries()) {
        completeFeed(rawFeeds[k].feed, io, { file: r.source, rate: rateOf(), shapes: overrides.inputs });
        pending.push(r);
      }
      parts.push(
        `${raw.length} raw tensor file${raw.length > 1 ? 's' : ''} (${exts}) → ${pending.length - before} samples${pending.length - before === 1 ? await batchHint(pending[before], io) : ''}`,
      );
    }
  }

  const keep = spec.maxSamples !== undefined ? evenlySpaced(pending.length, spec.maxSamples) : pending.map((_, i) => i);
  const samples: CalibrationSample[] = keep.map((k, index) => ({ index, ...pending[k] }));
  const where = commonFolder(files.map((f) => f.file));
  return {
    samples,
    source: files.map((f) => f.file),
    synthetic: false,
    description: `${samples.length} calibration samples${where ? ` from ${where}` : ''}: ${parts.join('; ')}${keep.length < pending.length ? ` (${keep.length} of ${pending.length}, evenly spaced)` : ''}`,
  };
}

function completeFeedExceptState(
  step: Feed,
  initial: Feed,
  io: ModelIo,
  file: string,
  rate: number,
  overrides: ShapeOverrides,
): void {
  const withState = { ...initial, ...step };
  completeFeed(withState, io, { file, rate, shapes: overrides.inputs });
  for (const [k, v] of Object.entries(withState)) if (!initial[k]) step[k] = v;
}

function commonFolder(files: readonly string[]): string | undefined {
  if (!files.length) return undefined;
  let dir = dirname(files[0]);
  while (!files.every((f) => !relative(dir, f).startsWith('..'))) {
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
  // (files under different top-level folders have no folder in common worth naming)
  return dirname(dir) === dir ? undefined : dir;
}

/**
 * A calibration file that names an input with a default value: onnxruntime-node lists and feeds only the other
 * inputs (fed `temperature` = 100, a model ran with its default 0.07), so the file could not set it.
 */
function defaultInputError(what: string, input: string, file: string): BadCalibrationError {
  return new BadCalibrationError(
    `${what} names an input with a default value (an initializer listed as a graph input): onnxruntime-node runs the model with that default and takes no other value for it, so a calibration file cannot set it; leave it out`,
    { file, tensor: input },
  );
}

/**
 * Raw-tensor files → samples: matched by name, grouped, split along a sample axis (see the module comment). The
 * feeds are not completed (rate, state, missing inputs): the caller does that, after pairing them with pictures.
 */
function rawSamples(files: readonly string[], io: ModelIo, overrides: ShapeOverrides): PendingSample[] {
  const names = new Set(io.inputs.map((i) => i.name));
  const defaults = new Set((io.defaults ?? []).map((i) => i.name));
  const dataInputs = io.inputs.filter(
    (i) => !(findRateInput(io)?.name === i.name) && !findStateLinks(io).some((l) => l.input === i.name),
  );
  const single = dataInputs.length === 1 ? dataInputs[0] : io.inputs.length === 1 ? io.inputs[0] : undefined;
  // groups of tensors that form one sample (before splitting along a sample axis)
  const groups: Array<{ label: string; source: string; tensors: NamedTensor[] }> = [];
  const npyGroups = new Map<string, { label: string; source: string; tensors: NamedTensor[] }>();
  for (const file of files) {
    const samples = decodeRawFile(readFileSync(file), file);
    if (extname(file).toLowerCase() === '.npy') {
      const t = samples[0][0].tensor;
      const hint = npyInputHint(file, names);
      if (defaults.has(hint.stem)) throw defaultInputError(`${hint.stem}.npy`, hint.stem, file);
      if (single && !names.has(hint.stem) && !(hint.group && names.has(hint.input))) {
        groups.push({ label: file, source: file, tensors: [{ name: single.name, tensor: t }] });
        continue;
      }
      const input = names.has(hint.stem) ? hint.stem : hint.group && names.has(hint.input) ? hint.input : undefined;
      if (!input)
        throw new BadCalibrationError(
          `cannot tell which input this .npy file feeds: name it NAME.npy or GROUP.NAME.npy with NAME one of ${[...names].join(', ')}`,
          { file },
        );
      const key = `${dirname(file)}\u0000${input === hint.stem ? '' : hint.group}`;
      let g = npyGroups.get(key);
      if (!g) {
        g = {
          label: input === hint.stem ? dirname(file) : join(dirname(file), `${hint.group}.*.npy`),
          source: file,
          tensors: [],
        };
        npyGroups.set(key, g);
        groups.push(g);
      }
      if (g.tensors.some((x) => x.name === input))
        throw new BadCalibrationError(`two files give input ${input} for the same sample`, { file });
      g.tensors.push({ name: input, tensor: t });
      continue;
    }
    samples.forEach((s, k) => {
      const tensors = s.map((nt) => {
        if (nt.name !== undefined && names.has(nt.name)) return nt;
        if (nt.name !== undefined && defaults.has(nt.name)) throw defaultInputError(`tensor ${nt.name}`, nt.name, file);
        if (single && (nt.name === undefined || s.length === 1)) return { name: single.name, tensor: nt.tensor };
        throw new BadCalibrationError(
          `tensor ${nt.name ?? '(unnamed)'} matches no model input; inputs: ${io.inputs.map(formatValueInfo).join(', ')}`,
          { file, tensor: nt.name },
        );
      });
      groups.push({ label: samples.length > 1 ? `${file}[${k}]` : file, source: file, tensors });
    });
  }
  const out: PendingSample[] = [];
  for (const g of groups) {
    // a tensor of one more dimension than its input holds samples along its first axis
    const counts = g.tensors.map((nt) => {
      const input = io.inputs.find((i) => i.name === nt.name)!;
      return input.shape && nt.tensor.dims.length === input.shape.length + 1 ? nt.tensor.dims[0] : undefined;
    });
    const split = counts.find((c) => c !== undefined);
    if (split !== undefined && counts.some((c) => c !== split))
      throw new BadCalibrationError(
        `tensors of one sample disagree on the sample axis: ${g.tensors.map((t, i) => `${t.name} ${counts[i] ?? 'none'}`).join(', ')}`,
        { file: g.source },
      );
    const n = split ?? 1;
    for (let k = 0; k < n; k++) {
      const bindings = new Map(overrides.dims);
      const feed: Feed = {};
      for (const nt of g.tensors) {
        const input = io.inputs.find((i) => i.name === nt.name)!;
        const t = split === undefined ? nt.tensor : sliceFirst(nt.tensor, k);
        const typed = convertTensor(t, isElementType(input.type) ? input.type : t.type, { file: g.source, tensor: input.name });
        feed[input.name] = fitTensor(typed, input, bindings, { file: g.source });
      }
      out.push({
        label: n > 1 ? `${g.label}[${k}]` : g.label,
        source: g.source,
        kind: 'feed',
        load: async () => ({ kind: 'feed', feed }),
      });
    }
  }
  return out;
}

/**
 * One raw sample that is a batch (an sklearn-style X_val of [128, F] for an input [N, F]): one run of 128 rows, one
 * decision for the gate. Said, with the way to give 128 samples instead.
 */
async function batchHint(sample: PendingSample, io: ModelIo): Promise<string> {
  const data = await sample.load();
  if (data.kind !== 'feed') return '';
  for (const input of io.inputs) {
    const t = data.feed[input.name];
    const lead = input.shape?.[0];
    if (t && t.dims.length >= 2 && t.dims[0] > 1 && lead !== undefined && typeof lead !== 'number')
      return ` (one sample: ${input.name} [${t.dims.join(', ')}] is one batch of ${t.dims[0]}; saved as [${t.dims[0]}, 1, ${t.dims.slice(1).join(', ')}] it is ${t.dims[0]} samples, a sample axis first)`;
  }
  return '';
}

/** Entry k along the first axis. */
function sliceFirst(t: CalibrationTensor, k: number): CalibrationTensor {
  const per = t.dims.slice(1).reduce((a, b) => a * b, 1);
  return { type: t.type, dims: t.dims.slice(1), data: t.data.slice(k * per, (k + 1) * per) as CalibrationTensor['data'] };
}

/** Probe samples (for sensitivity and allocation) and held-back samples (for the quality gate). */
export interface CalibrationSplit {
  probe: CalibrationSample[];
  heldBack: CalibrationSample[];
  /** True when the set has one sample, which then serves both (the gate is not measured on unseen data). */
  shared: boolean;
  /** The rule, for reports. */
  rule: string;
}

/** Every this-many-th sample is held back. */
export const HOLD_BACK_EVERY = 4;

/**
 * Splits a set deterministically: sample i (0-based) is held back when i % every = every − 1 (the 4th, 8th, …
 * with the default 4: a quarter of the set, spread over it); a set of 2 … every − 1 samples holds back its last
 * one; a set of one sample uses it for both (`shared`). `maxProbe` / `maxHeldBack` keep that many of each part,
 * evenly spaced, for runs that must be short.
 */
export function splitCalibrationSet(
  set: Pick<CalibrationSet, 'samples'>,
  options: { every?: number; maxProbe?: number; maxHeldBack?: number } = {},
): CalibrationSplit {
  const every = options.every ?? HOLD_BACK_EVERY;
  if (!Number.isInteger(every) || every < 2)
    throw new BadCalibrationError(`hold-back period must be an integer ≥ 2, got ${every}`);
  const n = set.samples.length;
  if (n === 0) throw new BadCalibrationError('the calibration set is empty');
  let held = set.samples.filter((s, i) => i % every === every - 1);
  let probe = set.samples.filter((s, i) => i % every !== every - 1);
  let shared = false;
  if (n === 1) {
    held = [set.samples[0]];
    probe = [set.samples[0]];
    shared = true;
  } else if (!held.length) {
    held = [set.samples[n - 1]];
    probe = set.samples.slice(0, -1);
  }
  const pick = <T>(xs: T[], max: number | undefined): T[] =>
    max === undefined ? xs : evenlySpaced(xs.length, max).map((i) => xs[i]);
  probe = pick(probe, options.maxProbe);
  held = pick(held, options.maxHeldBack);
  const rule = shared
    ? 'one sample: used for probes and the check alike (not held back)'
    : `every ${every}th sample held back (${held.length} of ${n}), ${probe.length} probe samples`;
  return { probe, heldBack: held, shared, rule };
}

/** A short name of a model input list, for messages. */
export function inputsSummary(io: ModelIo): string {
  return io.inputs.map((i) => `${i.name}${formatShape(i.shape)}`).join(', ');
}
