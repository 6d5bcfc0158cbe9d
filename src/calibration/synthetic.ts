/**
 * Synthetic calibration inputs, for when the user gives none: shapes and element types from the graph, values
 * typical of each input's kind, and dynamic dimensions grown until the model accepts them. Every set made here
 * is marked `synthetic: true` and its description says so, so that a report can say once and visibly that its
 * numbers come from generated inputs.
 *
 * Kinds (first match):
 *   rate     a scalar named sr / sample_rate …          the audio rate: 16 and 8 kHz, half the samples each,
 *                                                        unless a rate is given (SPEECH_RATES)
 *   state    an input an output carries forward         zeros; the sample becomes a sequence of windows
 *   image    float, rank 4, 1 or 3 channels (or 4 last) natural-image-like pictures (smooth 1/f-like noise
 *                                                        with shapes and edges) through the image spec;
 *                                                        without one, normalised to [−1, 1]: (x/255 − 0.5)/0.5;
 *                                                        a second image input of the same shape gets the first's
 *                                                        picture shifted a few pixels (a stereo or flow pair)
 *   points   float [N, P, 3] or [N, 3, P] named as points   points on the surfaces of random shapes (spheres,
 *            (points, pts, xyz, cloud, pcd, vertices)     boxes, cylinders) in the unit sphere; P starts at 1024
 *   coords   float [P, d] / [N, P, d], d ≤ 3, P dynamic,   query points uniform in [−1, 1]^d; P starts at 1024
 *            named as coordinates (coords, uv, xy, grid)
 *   spectrogram float [N, F, T] / [N, 1, F, T] (either    log-mels (MFCCs) of speech-like sound at 16 kHz,
 *            order) named as one (mel, spec, fbank, mfcc,  25 ms frames every 10 ms (spectrogram.ts)
 *            input_features, feats)
 *   frames   float, rank 5, 1 or 3 channels on axis 1     a natural-image-like picture moving a pixel or two a
 *            or 2 (video [1, C, T, H, W] or [1, T, C,     frame (a volume's slices: a smooth field), normalised
 *            H, W]; a volume [1, 1, D, H, W])              as pictures are
 *   audio    float, rank 1–3, single channel, length    speech-like sound: voiced syllables (harmonics of a
 *            dynamic or ≥ 1024                           gliding 90–250 Hz pitch under three formants) and
 *                                                        fricatives between pauses, peaks 0.1–0.6
 *   ids      int32/int64                               token ids below the vocabulary (rows of the table a
 *                                                        Gather reads), 1 for a *mask*, 0 for *type* ids,
 *                                                        0…n−1 for *position* ids
 *   other    float                                     Gaussian N(0, 1); bool: false
 *
 * Dynamic dimensions: a symbolic first dimension is the batch (1); `--input` sizes are taken as given; the rest
 * start at a typical size (image sides 224, audio 1 s at the rate, other lengths 64, a stateful window 512) and
 * grow (×2 for image sides, ×4 otherwise) until a trial run succeeds, up to `maxElements` per input.
 */

import { BadCalibrationError, InterruptedError } from '../errors.js';
import {
  audioSampleData,
  DEFAULT_AUDIO_RATE,
  describeAudioSpec,
  rateTensor,
  resolveAudioSpec,
  zeroTensor,
  type AudioSpec,
  type AudioSpecInput,
} from './audio.js';
import { describeImageSpec, isImageInput, pixelsToTensor, resolveImageSpec, type ImageSpecInput } from './image.js';
import { logMelFrames, soundFor, spectrogramLayout, SPECTROGRAM_RATE } from './spectrogram.js';
import { describeModel, type GraphNode, type ModelIo, type ValueInfo } from './model-io.js';
import { CalibrationRunner } from './runner.js';
import { isFixedDim, resolveShapeOverrides, type InputShape, type ShapeOverrides } from './shape.js';
import { checkStateLinks, findRateInput, findStateLinks, type StateLink } from './state.js';
import {
  convertTensor,
  elementCount,
  isElementType,
  stackBatch,
  type CalibrationTensor,
  type ElementType,
  type Feed,
} from './tensor.js';
import type { CalibrationSample, CalibrationSet, SampleData } from './types.js';
import { PIXELS_NOTE, takesPixels, valuesGiven } from './pixels.js';

export interface SyntheticOptions {
  /** Samples (sequences for stateful models); default 8. */
  count?: number;
  /** Seed of the first sample (sample k uses seed + k); default 1. */
  seed?: number;
  /** `--input NAME=SHAPE`. */
  inputs?: InputShape[];
  /** Image normalisation and size (default: [−1, 1], the graph's size or 224). */
  image?: ImageSpecInput & { input?: string };
  /** Audio rate, window, state… (default: 16 kHz, the graph's or a known model's window). */
  audio?: AudioSpecInput;
  /** First size tried for dynamic lengths (audio, sequences, stateful windows) instead of the typical one. */
  startLength?: number;
  /** Largest input tried, in elements (default 2^24). */
  maxElements?: number;
  /** Seconds of audio per stateful sample (default 2). */
  sequenceSeconds?: number;
  threads?: number;
  /** The model's name in messages. */
  file?: string;
}

const DEFAULT_COUNT = 8;
const DEFAULT_MAX_ELEMENTS = 2 ** 24;
const IMAGE_START = 224;
const SEQUENCE_START = 64;
const WINDOW_START = 512;
/** Generic stateful models (no audio input) run this many steps per sample. */
const GENERIC_STEPS = 16;

// ---------------------------------------------------------------------------------------------------------------
// values

/** A small fast PRNG (mulberry32): the same inputs on every run for a seed. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussianSource(rnd: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
}

/**
 * Grey levels a unit of the pictures' luma noise spans: 105 gives a picture's pixels a standard deviation of about
 * 0.2 of the range, as photographs have (0.20 on average over ../shared/data/images, 0.09–0.46); at 70 (until
 * 2026-12-08) it was 0.135, and a segmentation net judged on such pictures passed an archive whose masks lost a
 * third of their IoU on pictures of a photograph's contrast (a new-user sweep).
 */
export const PICTURE_CONTRAST = 105;

/**
 * A natural-image-like RGB picture (8-bit, interleaved): value noise over octaves with amplitudes falling as
 * 1/frequency (the spectrum of photographs), colour correlated between channels, plus a few flat shapes whose
 * edges give the sharp transitions real scenes have. `contrast`: grey levels a unit of luma noise spans.
 */
export function naturalImage(width: number, height: number, seed: number, contrast = PICTURE_CONTRAST): Uint8Array {
  const rnd = seededRandom(seed * 7919 + 17);
  const luma = new Float32Array(width * height);
  const chroma = [new Float32Array(width * height), new Float32Array(width * height)];
  const octave = (target: Float32Array, cells: number, amp: number): void => {
    const gw = cells + 1;
    const grid = new Float32Array(gw * gw).map(() => rnd() * 2 - 1);
    for (let y = 0; y < height; y++) {
      const gy = (y / height) * cells;
      const y0 = Math.floor(gy);
      const fy = gy - y0;
      for (let x = 0; x < width; x++) {
        const gx = (x / width) * cells;
        const x0 = Math.floor(gx);
        const fx = gx - x0;
        const a = grid[y0 * gw + x0];
        const b = grid[y0 * gw + x0 + 1];
        const c = grid[(y0 + 1) * gw + x0];
        const d = grid[(y0 + 1) * gw + x0 + 1];
        target[y * width + x] += amp * ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy);
      }
    }
  };
  const maxCells = Math.max(2, Math.min(width, height) / 2);
  for (let cells = 2, amp = 1; cells <= maxCells; cells *= 2, amp /= 2) octave(luma, cells, amp);
  for (const ch of chroma) for (let cells = 2, amp = 0.35; cells <= 16; cells *= 2, amp /= 2) octave(ch, cells, amp);
  // flat shapes with hard edges
  const shapes = 3 + Math.floor(rnd() * 5);
  for (let s = 0; s < shapes; s++) {
    const cx = rnd() * width;
    const cy = rnd() * height;
    const r = (0.05 + rnd() * 0.25) * Math.min(width, height);
    const round = rnd() < 0.5;
    const v = [rnd() * 2 - 1, (rnd() - 0.5) * 0.6, (rnd() - 0.5) * 0.6];
    for (let y = Math.max(0, Math.floor(cy - r)); y < Math.min(height, Math.ceil(cy + r)); y++)
      for (let x = Math.max(0, Math.floor(cx - r)); x < Math.min(width, Math.ceil(cx + r)); x++) {
        if (round && (x - cx) ** 2 + (y - cy) ** 2 > r * r) continue;
        const i = y * width + x;
        luma[i] = 0.5 * luma[i] + v[0];
        chroma[0][i] = v[1];
        chroma[1][i] = v[2];
      }
  }
  const out = new Uint8Array(width * height * 3);
  const clamp = (v: number): number => Math.max(0, Math.min(255, Math.round(v)));
  for (let i = 0; i < width * height; i++) {
    const l = 118 + contrast * luma[i];
    out[i * 3] = clamp(l + 60 * chroma[0][i]);
    out[i * 3 + 1] = clamp(l - 30 * chroma[0][i] - 30 * chroma[1][i]);
    out[i * 3 + 2] = clamp(l + 60 * chroma[1][i]);
  }
  return out;
}

/**
 * Interleaved RGB pixels → grey (Rec. 601 luma): a grey image input
 * reads one byte per pixel, and the RGB bytes read as grey were the top third of the picture, stretched.
 */
function greyPixels(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length / 3);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(0.299 * rgb[i * 3] + 0.587 * rgb[i * 3 + 1] + 0.114 * rgb[i * 3 + 2]);
  return out;
}

/** Interleaved RGB pixels → RGBA, opaque. */
function opaquePixels(rgb: Uint8Array): Uint8Array {
  const n = rgb.length / 3;
  const out = new Uint8Array(n * 4).fill(255);
  for (let i = 0; i < n; i++) out.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
  return out;
}

/**
 * Speech-like sound at `rate`: syllables of 0.12–0.35 s separated by 0.05–0.4 s pauses; most voiced (harmonics
 * of a pitch gliding within 90–250 Hz, shaped by three formants), some fricative (high-passed noise); a noise
 * floor at −54 dBFS; peaks 0.1–0.6.
 */
export function speechLike(n: number, rate: number, seed: number): Float32Array {
  const rnd = seededRandom(seed * 104729 + 3);
  const gauss = gaussianSource(rnd);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 0.002 * gauss();
  let t = Math.floor(rnd() * 0.2 * rate);
  const nyquist = rate / 2;
  while (t < n) {
    const len = Math.floor((0.12 + rnd() * 0.23) * rate);
    const peak = 0.1 + rnd() * 0.5;
    const env = (k: number): number => Math.sin((Math.PI * k) / len) ** 0.6;
    if (rnd() < 0.8) {
      const f0a = 90 + rnd() * 160;
      const f0b = Math.max(80, Math.min(260, f0a * (0.8 + rnd() * 0.4)));
      const formants = [300 + rnd() * 500, 900 + rnd() * 1400, 2400 + rnd() * 700];
      const harmonics = Math.max(1, Math.floor(Math.min(4000, nyquist - 100) / f0a));
      const amps = new Float64Array(harmonics + 1);
      let norm = 0;
      for (let k = 1; k <= harmonics; k++) {
        const f = k * f0a;
        amps[k] = formants.reduce((s, F, j) => s + Math.exp(-(((f - F) / (80 + 60 * j)) ** 2)) / (j + 1), 0) + 0.02 / k;
        norm += amps[k];
      }
      let phase = 0;
      for (let k = 0; k < len && t + k < n; k++) {
        const f0 = f0a + ((f0b - f0a) * k) / len;
        phase += (2 * Math.PI * f0) / rate;
        let s = 0;
        for (let h = 1; h <= harmonics; h++) if (h * f0 < nyquist) s += amps[h] * Math.sin(h * phase);
        out[t + k] += (peak * env(k) * s) / norm;
      }
    } else {
      let prev = 0;
      for (let k = 0; k < len && t + k < n; k++) {
        const w = gauss();
        out[t + k] += 0.3 * peak * env(k) * (w - prev);
        prev = w;
      }
    }
    t += len + Math.floor((0.05 + rnd() * 0.35) * rate);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// kinds and shapes

export type InputKind =
  | 'rate'
  | 'state'
  | 'image'
  | 'frames'
  | 'points'
  | 'coords'
  | 'spectrogram'
  | 'audio'
  | 'ids'
  | 'bool'
  | 'mask'
  | 'timestep'
  | 'float';

/**
 * A diffusion model's timestep (`timestep`, `timesteps`, `time_step`), integer or float: whole steps of 0–999, the
 * range the schedulers of DDPM and Stable Diffusion use. As ids without a vocabulary it was 0–15 and as a float N(0, 1):
 * the gate never saw the large timesteps where a rounded frequency table goes wrong (a new-user sweep).
 */
const TIMESTEP = /^(timesteps?|time_steps?)$/i;
const TIMESTEPS = 1000;

export function inputKind(
  input: ValueInfo,
  io: Pick<ModelIo, 'inputs' | 'outputs'>,
  state: readonly StateLink[],
  imageInput?: string,
): InputKind {
  if (findRateInput(io)?.name === input.name) return 'rate';
  if (state.some((l) => l.input === input.name)) return 'state';
  const type = String(input.type);
  if (type === 'bool') return 'bool';
  // a uint8 [N, H, W, 3]-like input is pixels (a quantized model's image), not ids
  // (a spectrogram named so, [1, 1, 64, T], is no grey picture: a keyword spotter fed pictures passed a wrecked archive)
  if (input.name !== imageInput && spectrogramLayout(input)) return 'spectrogram';
  if (input.name === imageInput || (!imageInput && isImageInput(input))) return 'image';
  if (TIMESTEP.test(input.name) && (input.shape === undefined || input.shape.length <= 2)) return 'timestep';
  if (!type.startsWith('float')) return 'ids';
  if (framesAxis(input) !== undefined) return 'frames';
  if (pointsAxis(input) !== undefined) return 'points';
  if (isCoordinates(input)) return 'coords';
  // a float mask (attention or padding, [1, T] like a waveform) is ones: everything present, as an ids model's is
  if (/mask/i.test(input.name)) return 'mask';
  const s = input.shape;
  if (s && s.length >= 1 && s.length <= 3) {
    const last = s[s.length - 1];
    const singleChannel = s.slice(0, -1).every((d, k) => d === 1 || !isFixedDim(d) || (k === 0 && d === 1));
    if (singleChannel && (!isFixedDim(last) || last >= 1024)) return 'audio';
  }
  return 'float';
}

/** Rows of the table a Gather reads with this input as its indices (the vocabulary), if the graph says. */
function vocabularyOf(input: string, io: ModelIo, depth = 0): number | undefined {
  for (const n of io.nodes) if (n.op === 'Gather' && n.inputs[1] === input) return io.initializers.get(n.inputs[0])?.[0];
  // through a Cast (tf2onnx casts int32 ids to int64) or a reshape on the way
  if (depth < 4)
    for (const n of io.nodes)
      if (IDS_THROUGH.has(n.op) && n.inputs[0] === input) {
        const v = vocabularyOf(n.outputs[0], io, depth + 1);
        if (v !== undefined) return v;
      }
  return undefined;
}

/**
 * Float inputs whose dynamic first axis integer inputs index (a graph network's node features `x` [N, F], gathered
 * and scattered by `edge_index` [2, E]): each integer input → the input whose rows it indexes. Such an axis is no
 * batch of 1 (every edge then pointed at node 0, and ids 0–15 ran past it: the model ran only with `--input`), and the
 * ids stay below its size. Found by following the ids through their parts (a row of edge_index) to a gather or scatter,
 * and its data back through the first input of each node to a graph input.
 */
export function nodeInputs(io: ModelIo): Map<string, string> {
  const graphInputs = new Map(io.inputs.map((i) => [i.name, i]));
  const producer = new Map<string, GraphNode>();
  for (const n of io.nodes) for (const o of n.outputs) producer.set(o, n);
  // the graph input a value's rows come from, through the first non-constant input of each node
  const origin = (value: string, depth = 0): string | undefined => {
    const g = graphInputs.get(value);
    if (g)
      return g.shape && g.shape.length >= 2 && !isFixedDim(g.shape[0]) && String(g.type).startsWith('float') ? value : undefined;
    const n = producer.get(value);
    if (!n || depth > 12) return undefined;
    const next = n.inputs.find((i) => i && !io.initializers.has(i));
    return next === undefined ? undefined : origin(next, depth + 1);
  };
  const out = new Map<string, string>();
  for (const input of io.inputs) {
    if (String(input.type).startsWith('float') || input.type === 'bool') continue;
    const seen = new Set([input.name]);
    let level = [input.name];
    for (let depth = 0; depth < 6 && level.length && !out.has(input.name); depth++) {
      const next: string[] = [];
      for (const value of level)
        for (const n of io.nodes) {
          // (rows only: a Gather or scatter along another axis, a one-hot of labels into [batch, classes], is no node index)
          if (
            INDEXES_ROWS.has(n.op) &&
            (n.axis ?? 0) === 0 &&
            n.inputs[1] === value &&
            n.inputs[0] &&
            !io.initializers.has(n.inputs[0])
          ) {
            const rows = origin(n.inputs[0]);
            if (rows) out.set(input.name, rows);
          }
          if (INDEX_PARTS.has(n.op) && n.inputs[0] === value)
            for (const o of n.outputs) if (!seen.has(o) && seen.add(o)) next.push(o);
        }
      level = next;
    }
  }
  return out;
}

/**
 * What an integer input is fed (`values`) and said to be (`describeInputs`): a mask ones, token types zeros,
 * positions 0…n−1, anything else ids below the vocabulary (the rows of the table it gathers from; 16 when unknown).
 */
function idsRule(
  name: string,
  io: ModelIo,
): { kind: 'mask' } | { kind: 'zeros' } | { kind: 'positions' } | { kind: 'ids'; vocabulary: number; found: boolean } {
  if (/mask/i.test(name)) return { kind: 'mask' };
  if (/type|segment/i.test(name)) return { kind: 'zeros' };
  if (/position/i.test(name)) return { kind: 'positions' };
  const rows = vocabularyOf(name, io);
  return { kind: 'ids', vocabulary: Math.max(1, rows ?? 16), found: rows !== undefined };
}

/** Ops token ids pass through unchanged on their way to the embedding's Gather. */
// (and `Mod`: hashed ids taken modulo the table's size, a recommender's; they were ids 0–15, 16 rows of 10,000 seen)
const IDS_THROUGH = new Set(['Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Identity', 'Mod']);

/** Ops an index tensor is taken apart by on its way to a gather: a row of `edge_index` [2, E], a split, a squeeze. */
const INDEX_PARTS = new Set([...IDS_THROUGH, 'Gather', 'Slice', 'Split', 'Transpose', 'Expand', 'Concat']);
/** Ops whose input 1 indexes the first axis of their input 0 (a gather of rows, a scatter into rows). */
const INDEXES_ROWS = new Set(['Gather', 'GatherElements', 'ScatterElements', 'ScatterND', 'GatherND', 'Scatter']);
/** Nodes a graph is given: a dynamic first axis the ids of another input index (`nodeInputs`). */
export const NODES_START = 32;

function values(
  input: ValueInfo,
  kind: InputKind,
  dims: number[],
  seed: number,
  io: ModelIo,
  rate: number,
  rows?: number,
): CalibrationTensor {
  const type = (isElementType(input.type) ? input.type : 'float32') as ElementType;
  const n = dims.reduce((a, b) => a * b, 1);
  const rnd = seededRandom(seed * 31 + 7);
  if (kind === 'ids') {
    const f = new Float64Array(n);
    const rule = idsRule(input.name, io);
    if (rule.kind === 'mask') f.fill(1);
    else if (rule.kind === 'positions') {
      const last = dims[dims.length - 1] ?? 1;
      for (let i = 0; i < n; i++) f[i] = i % last;
    } else if (rule.kind === 'ids') {
      // (ids into another input's rows, a graph's edges into its nodes: below its row count)
      const vocabulary = rows !== undefined && !rule.found ? rows : rule.vocabulary;
      for (let i = 0; i < n; i++) f[i] = Math.floor(rnd() * vocabulary);
    }
    return convertTensor({ type: 'float64', dims, data: f }, type);
  }
  if (kind === 'bool') return { type: 'bool', dims, data: new Uint8Array(n) };
  if (kind === 'timestep') {
    const f = new Float64Array(n);
    for (let i = 0; i < n; i++) f[i] = Math.floor(rnd() * TIMESTEPS);
    return convertTensor({ type: 'float64', dims, data: f }, type);
  }
  if (kind === 'mask') return convertTensor({ type: 'float32', dims, data: new Float32Array(n).fill(1) }, type);
  if (kind === 'audio') return convertTensor({ type: 'float32', dims, data: speechLike(n, rate, seed) }, type);
  if (kind === 'points')
    return convertTensor({ type: 'float32', dims, data: surfacePoints(dims, pointsAxis(input)!, rnd) }, type);
  if (kind === 'coords') {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = rnd() * 2 - 1;
    return convertTensor({ type: 'float32', dims, data: f }, type);
  }
  if (kind === 'spectrogram') return convertTensor({ type: 'float32', dims, data: spectrogramOf(input, dims, seed) }, type);
  const g = gaussianSource(rnd);
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = g();
  return convertTensor({ type: 'float32', dims, data: f }, type);
}

interface Plan {
  /** dims per input at growth rung r, in the given variant (see `DimVariant`) */
  dimsAt(r: number, variant?: DimVariant): Map<string, number[]>;
  grows: boolean;
  /** The variants worth a trial: all three where the model has a cache's length (a past) among its dimensions. */
  variants: DimVariant[];
}

/**
 * How the free lengths are set, tried in this order. 'prefill': every length at its start size (a past as long as
 * the new tokens). 'step': one decoding step, every length but a cache's (`past…`) 1 — what a decoder with a past
 * whose mask is declared `past_sequence_length + 1` (Hugging Face optimum) takes. 'empty': a cache's length 0, the
 * rest at their start sizes — the first call of a merged decoder (`use_cache_branch` false).
 */
type DimVariant = 'prefill' | 'empty' | 'step';

/**
 * A symbolic dimension that is a sum of others and integers, as exporters write them ("past_sequence_length + 1"):
 * terms apart by a spaced + or −, each an integer or another dimension of the model (`batch-size` is a name).
 */
function isExpression(d: string, symbols: ReadonlySet<string>): boolean {
  if (!/\s[+-]\s/.test(d)) return false;
  const terms = d.split(/\s[+-]\s/).map((t) => t.trim());
  return terms.every((t) => /^\d+$/.test(t) || (t !== d && symbols.has(t)));
}

/** A cache's length (a decoder's past keys and values). */
const PAST = /past/i;
/** A total length (a decoder's mask over the past and the new tokens: `total_sequence_length`). */
const TOTAL = /total.*(seq|len)/i;
/** The new tokens' length. */
const SEQUENCE = /^(sequence_length|seq_len|seq_length|sequence)$/i;

/** The value of a dimension expression from the bound symbols, or undefined where one is not bound. */
function evaluateDim(expr: string, bound: ReadonlyMap<string, number>): number | undefined {
  let total = 0;
  for (const m of expr.matchAll(/([+-]?)\s*([A-Za-z_][\w.]*|\d+)/g)) {
    const v = /^\d+$/.test(m[2]) ? Number(m[2]) : bound.get(m[2]);
    if (v === undefined) return undefined;
    total += m[1] === '-' ? -v : v;
  }
  return total;
}

/** The dimensions of every input at growth rung r (see the module comment). */
function planDims(
  io: ModelIo,
  kinds: Map<string, InputKind>,
  overrides: ShapeOverrides,
  starts: { audio: number; seq: number; image: { width?: number; height?: number }; nodes?: ReadonlySet<string> },
): Plan {
  let grows = false;
  const symbols = new Set(
    io.inputs.flatMap((i) => (i.shape ?? []).filter((d): d is string => typeof d === 'string' && d !== '')),
  );
  // a decoder's cache: a `past…` length in a model that takes token ids (not a streaming audio model's cache)
  const hasPast =
    [...symbols].some((d) => PAST.test(d) && !isExpression(d, symbols)) && io.inputs.some((i) => kinds.get(i.name) === 'ids');
  // the first dimension of points [P, 3] (no batch) and of a graph's node features: P points, N nodes, bound before any
  // other input takes the symbol as a batch of 1 (a NeRF's viewdirs listed first made its pts one point again); not
  // where an input of rank 3 or more shares it (a batch: [batch, 3] camera positions beside [batch, 3, H, W] images)
  const firstAxis = new Map<string, number>();
  for (const input of io.inputs) {
    const d = input.shape?.[0];
    const size = starts.nodes?.has(input.name)
      ? NODES_START
      : (kinds.get(input.name) === 'points' || kinds.get(input.name) === 'coords') && input.shape?.length === 2
        ? POINTS_START
        : 0;
    if (!size || typeof d !== 'string' || !d) continue;
    const batch = io.inputs.some((o) => o !== input && (o.shape?.length ?? 0) >= 3 && o.shape?.includes(d));
    if (!batch) firstAxis.set(d, size);
  }
  const dimsAt = (r: number, variant: DimVariant = 'prefill'): Map<string, number[]> => {
    const bound = new Map([...firstAxis, ...overrides.dims]);
    const out = new Map<string, number[]>();
    // expressions and totals are set once every other dimension is
    const later: Array<{ dims: number[]; k: number; d: string }> = [];
    for (const input of io.inputs) {
      const given = overrides.inputs.get(input.name);
      if (given) {
        out.set(input.name, given);
        continue;
      }
      const kind = kinds.get(input.name)!;
      const shape = input.shape ?? (kind === 'audio' ? [1, ''] : []);
      const dims = shape.map((d, k) => {
        if (isFixedDim(d)) return d;
        if (typeof d === 'string' && d && bound.has(d)) return bound.get(d)!;
        if (typeof d === 'string' && (isExpression(d, symbols) || (hasPast && TOTAL.test(d)))) {
          later.push({ dims: [], k, d });
          return NaN;
        }
        let v: number;
        if (kind === 'state' || kind === 'rate' || kind === 'bool' || kind === 'timestep') v = 1;
        // (a graph's node features, rows other inputs index: nodes, not a batch of 1)
        else if (k === 0 && shape.length > 1) v = 1;
        else if (kind === 'image') {
          const chanAxis = shape.length === 4 && (shape[3] === 3 || shape[3] === 1) && shape[1] !== 3 ? 3 : 1;
          if (k === chanAxis) v = 3;
          else {
            grows = true;
            const hAxis = chanAxis === 1 ? 2 : 1;
            const start = (k === hAxis ? starts.image.height : starts.image.width) ?? IMAGE_START;
            v = start * 2 ** r;
          }
        } else {
          grows = true;
          v = (kind === 'audio' ? starts.audio : kind === 'points' || kind === 'coords' ? POINTS_START : starts.seq) * 4 ** r;
          const past = typeof d === 'string' && PAST.test(d);
          if (variant === 'step' && !past) v = 1;
          if (variant === 'empty' && past) v = 0;
        }
        if (typeof d === 'string' && d) bound.set(d, v);
        return v;
      });
      later.filter((l) => l.dims.length === 0).forEach((l) => (l.dims = dims));
      out.set(input.name, dims);
    }
    // a total is the past and the new tokens; an expression its terms (unbound terms: a size of its own, as before)
    const past = [...bound].find(([name]) => PAST.test(name))?.[1];
    const sequence = [...bound].find(([name]) => SEQUENCE.test(name))?.[1];
    for (const l of later) {
      let v = bound.get(l.d) ?? (isExpression(l.d, symbols) ? evaluateDim(l.d, bound) : undefined);
      if (v === undefined && TOTAL.test(l.d) && past !== undefined && sequence !== undefined) v = past + sequence;
      // (a difference of no length, or less, is no size: the start size, as for any other length)
      if (v !== undefined && v < (variant === 'empty' ? 0 : 1)) v = undefined;
      v ??= variant === 'step' ? 1 : starts.seq * 4 ** r;
      bound.set(l.d, v);
      l.dims[l.k] = v;
    }
    return out;
  };
  dimsAt(0);
  return { dimsAt, grows, variants: hasPast ? ['prefill', 'step', 'empty'] : ['prefill'] };
}

const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 200);

/**
 * A synthetic calibration set for a model (see the module comment): trial runs find the dimensions, then
 * `count` samples are generated on demand (each sample's `load()` regenerates it from its seed).
 */
export async function syntheticCalibrationSet(model: Uint8Array, options: SyntheticOptions = {}): Promise<CalibrationSet> {
  const io = describeModel(model, options.file);
  for (const i of io.inputs)
    if (!isElementType(i.type))
      throw new BadCalibrationError(
        `input ${i.name} has element type ${i.type}: synthetic inputs cannot be made for it; give calibration data`,
        {
          file: options.file,
          tensor: i.name,
        },
      );
  const count = options.count ?? DEFAULT_COUNT;
  const seed = options.seed ?? 1;
  const overrides = resolveShapeOverrides(options.inputs ?? [], io.inputs);
  // links the user gave are checked against the model first (a missing input or output named, not a crash later)
  const state = options.audio?.state ? checkStateLinks(options.audio.state, io) : findStateLinks(io);
  // several rates (--audio-rate 16000,8000): the samples are shared out among them, each rate's set made alone; a
  // model with a rate input and no rate asked for gets the speech rates (a rate it refuses is left out)
  const asked = options.audio?.rates ?? (options.audio?.rate !== undefined ? [options.audio.rate] : undefined);
  const rates = asked ?? (findRateInput(io) ? SPEECH_RATES : [DEFAULT_AUDIO_RATE]);
  const maxElements = options.maxElements ?? DEFAULT_MAX_ELEMENTS;
  const kinds = new Map(io.inputs.map((i) => [i.name, inputKind(i, io, state, options.image?.input)]));
  const runner = await CalibrationRunner.open(model, { threads: options.threads, file: options.file });
  try {
    const build = (k: number, rate: number, share: number): Promise<CalibrationSet> => {
      const resolved = { ...options, count: share, seed: seed + k * 1000, rate, maxElements };
      return state.length
        ? statefulSet(io, runner, kinds, state, overrides, resolved)
        : statelessSet(io, runner, kinds, overrides, resolved, model);
    };
    const shareOf = (k: number, of: number): number => Math.floor(count / of) + (k < count % of ? 1 : 0);
    let sets: CalibrationSet[] = [];
    const refused: Array<{ rate: number; why: string }> = [];
    for (const [k, rate] of rates.entries()) {
      const share = shareOf(k, rates.length);
      if (share < 1) continue;
      try {
        sets.push(await build(k, rate, share));
      } catch (e) {
        // a speech rate nobody asked for that the model does not run at is left out, whatever it failed with (the
        // first must run; an interruption is one)
        if (asked || k === 0 || e instanceof InterruptedError) throw e;
        refused.push({ rate, why: firstLine(e) });
      }
    }
    if (refused.length) {
      // the samples asked for, shared out among the rates that run (their sets made again: samples are made on demand)
      const running = rates.filter((r) => !refused.some((x) => x.rate === r));
      sets = [];
      for (const [k, rate] of running.entries()) {
        const share = shareOf(k, running.length);
        if (share > 0) sets.push(await build(rates.indexOf(rate), rate, share));
      }
      const not = refused.map((x) => `${x.rate / 1000} kHz (${x.why})`).join(', ');
      sets[0] = { ...sets[0], description: `${sets[0].description}; not at ${not}` };
    }
    // tried at several rates: a report need not suggest the rates again
    if (sets.length === 1) return rates.length > 1 ? { ...sets[0], rates } : sets[0];
    // "64 SYNTHETIC samples (…): 32 at 16 kHz: …; 32 at 8 kHz: …"
    const total = sets.reduce((n, x) => n + x.samples.length, 0);
    const head = sets[0].description.replace(/^\d+ (SYNTHETIC samples? \([^)]*\)): .*$/s, `${total} $1`);
    return {
      samples: sets.flatMap((x) => x.samples).map((x, index) => ({ ...x, index })),
      source: [],
      synthetic: true,
      rates,
      description: `${head}: ${sets.map((x) => `${x.samples.length} with ${x.description.replace(/^[^:]*: /, '')}`).join('; ')}`,
    };
  } finally {
    await runner.close();
  }
}

/**
 * The rates synthetic sound is made at for a model with a rate input when no rate is asked for: speech models take
 * 16 and 8 kHz, and one that branches on its rate runs a network of its own at each (Silero VAD v4–v6: calibrated
 * at 16 kHz alone, the 8 kHz branch went untaken and kept the default grid, 43 % of v6's weights, and a budget
 * starved the rest).
 */
const SPEECH_RATES: readonly number[] = [16000, 8000];

interface Resolved extends SyntheticOptions {
  count: number;
  seed: number;
  rate: number;
  maxElements: number;
}

function describeInputs(
  io: ModelIo,
  kinds: Map<string, InputKind>,
  dims: Map<string, number[]>,
  imageNote: string,
  rate: number,
  flip = false,
  indexed: ReadonlyMap<string, string> = new Map(),
): string {
  const what: Record<InputKind, string> = {
    rate: `the rate ${rate}`,
    state: 'zeros',
    image: `natural-image-like pictures (${imageNote})`,
    frames: 'natural-image-like pictures moving a pixel or two a frame ((x/255 − 0.5)/0.5 unless given)',
    points: 'points on the surfaces of random shapes (spheres, boxes, cylinders) in the unit sphere',
    coords: 'coordinates uniform in [−1, 1]',
    spectrogram: 'log-mels (or MFCCs) of speech-like sound at 16 kHz, 25 ms frames every 10 ms, ln(energy + 1e-6)',
    audio: `speech-like sound at ${rate / 1000} kHz`,
    ids: 'ids',
    bool: flip ? 'false and true in turn' : 'false',
    mask: 'ones (a mask)',
    timestep: `timesteps 0–${TIMESTEPS - 1}`,
    float: 'Gaussian N(0, 1)',
  };
  const ids = (name: string): string => {
    const rule = idsRule(name, io);
    const rows = indexed.get(name);
    if (rule.kind === 'ids' && !rule.found && rows && dims.get(rows))
      return `ids 0–${dims.get(rows)![0] - 1} (rows of ${rows}: ${dims.get(rows)![0]} of them)`;
    return rule.kind === 'mask'
      ? 'ones (a mask)'
      : rule.kind === 'zeros'
        ? 'zeros'
        : rule.kind === 'positions'
          ? 'positions 0, 1, …'
          : `ids 0–${rule.vocabulary - 1}${rule.found ? '' : ' (no table read by them found)'}`;
  };
  // (a second image input of the first's shape: its picture shifted, see `pairShift`)
  const images = io.inputs.filter((i) => kinds.get(i.name) === 'image');
  const shifted = (i: ValueInfo): string =>
    images.length > 1 &&
    i !== images[0] &&
    kinds.get(i.name) === 'image' &&
    dims.get(i.name)?.join() === dims.get(images[0].name)?.join()
      ? `, ${images[0].name}'s picture shifted 2–5 pixels in half the samples (a pair), another picture in the rest`
      : '';
  return io.inputs
    .map(
      (i) =>
        `${i.name} ${i.type}[${dims.get(i.name)?.join(',') ?? '?'}]: ${kinds.get(i.name) === 'ids' ? ids(i.name) : what[kinds.get(i.name)!]}${shifted(i)}`,
    )
    .join('; ');
}

/** Seeds of a batch's later pictures: far from the samples' own (seed + k). */
const PICTURE_SEED_STEP = 7919;

/** How far the `pair`-th image input's picture is shifted from the first's: 2–5 pixels across, 0–3 down. */
function pairShift(seed: number, pair: number): [number, number] {
  const rnd = seededRandom(seed * 131 + pair);
  return [2 + Math.floor(rnd() * 4), Math.floor(rnd() * 4)];
}

/** Interleaved pixels (`channels` a pixel) moved by [dx, dy], the edges repeated. */
function shiftPixels(
  pixels: Uint8Array,
  width: number,
  height: number,
  [dx, dy]: readonly [number, number],
  channels = 3,
): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(height - 1, Math.max(0, y - dy));
    for (let x = 0; x < width; x++) {
      const sx = Math.min(width - 1, Math.max(0, x - dx));
      out.set(pixels.subarray((sy * width + sx) * channels, (sy * width + sx + 1) * channels), (y * width + x) * channels);
    }
  }
  return out;
}

/** A spectrogram input's values (spectrogram.ts): per item of the batch the log-mels (MFCCs) of its own sound. */
function spectrogramOf(input: ValueInfo, dims: readonly number[], seed: number): Float32Array {
  const layout = spectrogramLayout(input)!;
  const frames = dims[layout.timeAxis];
  const features = dims[layout.featureAxis];
  const batch = dims[0];
  const out = new Float32Array(elementCount(dims));
  const per = frames * features;
  for (let b = 0; b < batch; b++) {
    const values = logMelFrames(speechLike(soundFor(frames), SPECTROGRAM_RATE, seed * 13 + b), frames, features, layout.mfcc);
    // frame-major → the input's order of the two axes
    const featuresLast = layout.featureAxis > layout.timeAxis;
    for (let t = 0; t < frames; t++)
      for (let c = 0; c < features; c++)
        out[b * per + (featuresLast ? t * features + c : c * frames + t)] = values[t * features + c];
  }
  return out;
}

/** Names of point-cloud inputs. */
const POINTS_NAME = /(^|[_.-])(points?|pts|xyz|clouds?|point_?clouds?|pcds?|vertices|verts?)([_.\d-]|$)/i;
/** Points a cloud of dynamic size starts with (PointNet's 1024). */
const POINTS_START = 1024;

/**
 * The coordinate axis of a float rank-3 input named as points ([N, P, 3]: 2; [N, 3, P]: 1), or undefined. Gaussian
 * values there (64 points in a blob) let a PointNet pass a budget that kept 87 % of its decisions on shapes (a new-user
 * sweep).
 */
export function pointsAxis(input: ValueInfo): 1 | 2 | undefined {
  const s = input.shape;
  if (!s || !String(input.type).startsWith('float') || !POINTS_NAME.test(input.name)) return undefined;
  // (a NeRF's points [P, 3]: P points, no batch; it judged 16 single points)
  if (s.length === 2) return s[1] === 3 && !isFixedDim(s[0]) ? 2 : undefined;
  if (s.length !== 3) return undefined;
  return s[2] === 3 ? 2 : s[1] === 3 ? 1 : undefined;
}

/** Names of coordinate inputs (a SIREN's or an implicit network's query points). */
const COORDS_NAME = /(^|[_.-])(coords?|coordinates?|uvs?|xys?|grid|query_?points?|positions?)([_.\d-]|$)/i;

/**
 * A float input [P, d] or [N, P, d] (d of 1–3, P dynamic) named as coordinates: P = 1,024 query points uniform in
 * [−1, 1]^d, the domain SIRENs and implicit networks are fitted on. As a float input it got P = 1 and N(0, 1)
 * values: the gate judged 16 single points, half of them outside the domain (a new-user sweep).
 */
export function isCoordinates(input: ValueInfo): boolean {
  const s = input.shape;
  if (!s || !String(input.type).startsWith('float') || !COORDS_NAME.test(input.name)) return false;
  if (s.length !== 2 && s.length !== 3) return false;
  const d = s[s.length - 1];
  return typeof d === 'number' && d >= 1 && d <= 3 && !isFixedDim(s[s.length - 2]);
}

/** Points on the surfaces of random shapes, per item of the batch one shape, in the unit sphere. */
function surfacePoints(shape: readonly number[], axis: 1 | 2, rnd: () => number): Float32Array {
  const dims = shape.length === 2 ? [1, ...shape] : shape;
  const [batch] = dims;
  const count = dims[3 - axis];
  const out = new Float32Array(batch * count * 3);
  for (let b = 0; b < batch; b++) {
    const shape = Math.floor(rnd() * 3);
    // an anisotropic scale, then a rotation about z, so shapes differ in proportion and pose
    const sx = 0.4 + rnd() * 0.6;
    const sy = 0.4 + rnd() * 0.6;
    const sz = 0.4 + rnd() * 0.6;
    const turn = rnd() * 2 * Math.PI;
    for (let p = 0; p < count; p++) {
      let x: number;
      let y: number;
      let z: number;
      const u = rnd() * 2 - 1;
      const v = rnd() * 2 - 1;
      if (shape === 0) {
        // a sphere: a uniform direction
        const phi = Math.PI * (v + 1);
        const r = Math.sqrt(1 - u * u);
        [x, y, z] = [r * Math.cos(phi), r * Math.sin(phi), u];
      } else if (shape === 1) {
        // a box: one of six faces
        const face = Math.floor(rnd() * 6);
        const side = face % 2 ? 1 : -1;
        [x, y, z] = face < 2 ? [side, u, v] : face < 4 ? [u, side, v] : [u, v, side];
      } else {
        // a cylinder's side
        const phi = Math.PI * (v + 1);
        [x, y, z] = [Math.cos(phi), Math.sin(phi), u];
      }
      [x, y, z] = [x * sx, y * sy, z * sz];
      [x, y] = [x * Math.cos(turn) - y * Math.sin(turn), x * Math.sin(turn) + y * Math.cos(turn)];
      // (inside the unit sphere: a box's corner reaches √3 of its scale)
      const norm = Math.sqrt(3);
      const at = (k: number): number => (axis === 2 ? (b * count + p) * 3 + k : (b * 3 + k) * count + p);
      out[at(0)] = x / norm;
      out[at(1)] = y / norm;
      out[at(2)] = z / norm;
    }
  }
  return out;
}

/**
 * The channel axis of a float rank-5 input of 1 or 3 channels on axis 1 (video [N, C, T, H, W], a volume
 * [N, 1, D, H, W]) or axis 2 ([N, T, C, H, W]); undefined for any other input.
 */
export function framesAxis(input: ValueInfo): 1 | 2 | undefined {
  const s = input.shape;
  if (!s || s.length !== 5 || !String(input.type).startsWith('float')) return undefined;
  return s[1] === 3 || s[1] === 1 ? 1 : s[2] === 3 || s[2] === 1 ? 2 : undefined;
}

/**
 * Frames of a rank-5 input (`framesAxis`): per item of the batch a natural-image-like picture moving a pixel or two a
 * frame, normalised as pictures are ((x/255 − 0.5)/0.5, or the image options given). White noise there (as any float
 * input) let a video classifier pass at a budget that kept 64 % of its decisions on moving pictures (a new-user sweep).
 */
function framesTensor(input: ValueInfo, dims: number[], seed: number, image: ImageSpecInput | undefined): CalibrationTensor {
  const axis = framesAxis(input) ?? 1;
  const [batch, , , height, width] = dims;
  const channels = dims[axis];
  const frames = dims[3 - axis];
  const spec = resolveImageSpec(
    { ...(image ?? { mean: [0.5], std: [0.5] }), fit: 'fill', layout: 'nchw' },
    { name: input.name, type: 'float32', shape: [1, channels, height, width] },
  );
  const plane = height * width;
  const out = new Float32Array(elementCount(dims));
  for (let b = 0; b < batch; b++) {
    const rnd = seededRandom(seed * 977 + b);
    const velocity: [number, number] = [1 + Math.floor(rnd() * 2), Math.floor(rnd() * 2)];
    const natural = naturalImage(width, height, seed + PICTURE_SEED_STEP * b);
    for (let t = 0; t < frames; t++) {
      const rgb = shiftPixels(natural, width, height, [velocity[0] * t, velocity[1] * t]);
      const frame = pixelsToTensor(channels === 1 ? greyPixels(rgb) : rgb, width, height, spec).data as Float32Array;
      for (let c = 0; c < channels; c++) {
        // [N, C, T, H, W] or [N, T, C, H, W]
        const at = axis === 1 ? ((b * channels + c) * frames + t) * plane : ((b * frames + t) * channels + c) * plane;
        out.set(frame.subarray(c * plane, (c + 1) * plane), at);
      }
    }
  }
  const type = isElementType(input.type) ? input.type : 'float32';
  return convertTensor({ type: 'float32', dims, data: out }, type);
}

async function statelessSet(
  io: ModelIo,
  runner: CalibrationRunner,
  kinds: Map<string, InputKind>,
  overrides: ShapeOverrides,
  o: Resolved,
  model: Uint8Array,
): Promise<CalibrationSet> {
  const imageInput = io.inputs.find((i) => kinds.get(i.name) === 'image');
  const imageInputs = io.inputs.filter((i) => kinds.get(i.name) === 'image').map((i) => i.name);
  // integer inputs that index another input's rows (a graph network's edges into its nodes)
  const indexed = nodeInputs(io);
  const plan = planDims(io, kinds, overrides, {
    audio: o.startLength ?? o.rate,
    seq: o.startLength ?? SEQUENCE_START,
    image: { width: o.image?.width, height: o.image?.height },
    nodes: new Set(indexed.values()),
  });
  // the user's value range, mean, std or scale replaces the synthetic [−1, 1] whole (`--image-range 0,1` alone gave
  // (x/255 − 0.5)/0.5 still: a detector taking [0, 1] was judged on inputs it never sees, found by a new-user sweep)
  const scaled = valuesGiven(o.image);
  // a model that rescales its pixels itself (Keras's Rescaling layer: a Mul by 1/255 after the input) takes [0, 255]
  const pixels = takesPixels(io, model, imageInput, o.image, o.file);
  const imageSpecFor = (dims: number[]): ReturnType<typeof resolveImageSpec> =>
    // pictures to [−1, 1] for a float input (to [0, 255] for one the model rescales), the pixels for a uint8 one
    resolveImageSpec(
      {
        ...(imageInput!.type === 'uint8' || scaled ? {} : pixels ? { range: [0, 255] } : { mean: [0.5], std: [0.5] }),
        ...o.image,
        fit: 'fill',
      },
      { ...imageInput!, shape: dims },
    );
  // boolean inputs that choose a branch (an If's condition; `use_cache_branch`): only those are ever true (another, a
  // `training` flag behind Dropout, would make the outputs random)
  const conditions = new Set(io.nodes.filter((n) => n.op === 'If').map((n) => n.inputs[0]));
  const switches = new Set(
    io.inputs
      .filter((i) => kinds.get(i.name) === 'bool' && (conditions.has(i.name) || /use_cache/i.test(i.name)))
      .map((i) => i.name),
  );
  const make = (dims: Map<string, number[]>, k: number, truth = false): Feed => {
    const feed: Feed = {};
    for (const input of io.inputs) {
      const kind = kinds.get(input.name)!;
      const d = dims.get(input.name)!;
      if (kind === 'rate') feed[input.name] = rateTensor(input, o.rate);
      else if (truth && switches.has(input.name))
        feed[input.name] = { type: 'bool', dims: d, data: new Uint8Array(elementCount(d)).fill(1) };
      else if (kind === 'state') feed[input.name] = zeroTensor(input, new Map([[input.name, d]]));
      else if (kind === 'image') {
        const spec = imageSpecFor(d);
        // one picture per item of the batch (a model exported with a fixed batch of 2 crashed on one)
        // a second image input of the first's shape (a stereo or optical-flow pair, a before and after): the first's
        // picture shifted a few pixels; the same picture twice hid a pair model's whole output (a new-user sweep)
        // (four samples in eight: a siamese network's "different" pair is another picture; the gate holds back every
        // 4th sample, and sees both kinds)
        const pair = imageInputs.indexOf(input.name);
        const related = pair > 0 && dims.get(imageInputs[0])!.join() === d.join() && Math.floor(k / 4) % 2 === 0;
        const shift = related ? pairShift(o.seed + k, pair) : undefined;
        const picture = (seed: number): CalibrationTensor => {
          const natural = naturalImage(
            spec.width!,
            spec.height!,
            seed + (pair > 0 && !related ? PICTURE_SEED_STEP * 64 * pair : 0),
          );
          const rgb = shift ? shiftPixels(natural, spec.width!, spec.height!, shift) : natural;
          const pixels = spec.channels === 1 ? greyPixels(rgb) : spec.channels === 4 ? opaquePixels(rgb) : rgb;
          return pixelsToTensor(pixels, spec.width!, spec.height!, spec);
        };
        const one = picture(o.seed + k);
        const batch = elementCount(d) / elementCount(one.dims);
        const t =
          Number.isInteger(batch) && batch > 1
            ? stackBatch([one, ...Array.from({ length: batch - 1 }, (_, b) => picture(o.seed + k + PICTURE_SEED_STEP * (b + 1)))])
            : one;
        const type = isElementType(input.type) ? input.type : 'float32';
        feed[input.name] = convertTensor({ ...t, dims: d }, type);
      } else if (kind === 'frames') feed[input.name] = framesTensor(input, d, o.seed + k, scaled ? o.image : undefined);
      else feed[input.name] = values(input, kind, d, o.seed + k, io, o.rate, dims.get(indexed.get(input.name) ?? '')?.[0]);
    }
    return feed;
  };
  const rejected: string[] = [];
  let dims = plan.dimsAt(0);
  // a boolean input (a merged decoder's `use_cache_branch`) is false for four samples, then true for four, … where
  // the model runs both ways, so that both of its branches are calibrated, and both among the held-back samples
  // (every 4th)
  const booleans = io.inputs.some((i) => switches.has(i.name));
  let flip = false;
  // a trial the model refused: why, or the reason it cannot grow
  const failed = (e: unknown): void => {
    // an input the graph gives no shape was fed as a scalar: say which, and what to give
    const shapeless = io.inputs.filter((i) => i.shape === undefined && !overrides.inputs.has(i.name));
    const why = firstLine((e as Error & { cause?: unknown }).cause ?? e);
    if (!plan.grows && shapeless.length && /num_dims|rank|dimension|shape/i.test(why))
      throw new BadCalibrationError(
        `synthetic inputs: the model declares no shape for ${shapeless.map((i) => i.name).join(', ')} (fed as a scalar), and rejected it: ${firstLine((e as Error & { cause?: unknown }).cause ?? e)}; give ${shapeless.length === 1 ? 'its shape' : 'their shapes'} (--input ${shapeless[0].name}=SHAPE, e.g. --input ${shapeless[0].name}=1,3,224,224) or calibration data (--calibration)`,
        { file: o.file },
        e,
      );
    if (!plan.grows) throw e;
    rejected.push(
      `${[...dims].map(([k, d]) => `${k}[${d.join(',')}]`).join(' ')}: ${firstLine((e as Error & { cause?: unknown }).cause ?? e)}`,
    );
  };
  trials: for (let r = 0; ; r++) {
    for (const variant of plan.variants) {
      dims = plan.dimsAt(r, variant);
      const largest = Math.max(...[...dims.values()].map((d) => d.reduce((a, b) => a * b, 1)));
      if (largest > o.maxElements)
        throw new BadCalibrationError(
          `synthetic inputs: the model rejected every size tried (${rejected.join('; ')}); give calibration data (--calibration) or the input shapes (--input NAME=SHAPE)`,
          { file: o.file },
        );
      try {
        await runner.runFeed(make(dims, 0), { label: 'a synthetic trial input', file: o.file });
      } catch (e) {
        // (the last variant's failure is the one reported below)
        if (variant !== plan.variants[plan.variants.length - 1]) continue;
        failed(e);
        continue trials;
      }
      if (booleans)
        try {
          await runner.runFeed(make(dims, 1, true), { label: 'a synthetic trial input', file: o.file });
          flip = true;
        } catch {
          flip = false; // true does not run with these inputs: false throughout, as before
        }
      break trials;
    }
  }
  const samples: CalibrationSample[] = Array.from({ length: o.count }, (_, k) => ({
    index: k,
    label: `synthetic #${k + 1}`,
    kind: 'feed',
    load: async () => ({ kind: 'feed', feed: make(dims, k, flip && ((k >> 2) & 1) === 1) }),
  }));
  const imageNote = imageInput ? describeImageSpec(imageSpecFor(dims.get(imageInput.name)!)) + (pixels ? PIXELS_NOTE : '') : '';
  const grown = rejected.length ? `; sizes grown until the model accepted them (rejected: ${rejected.join('; ')})` : '';
  return {
    samples,
    source: [],
    synthetic: true,
    description: `${o.count} SYNTHETIC samples (no calibration data given): ${describeInputs(io, kinds, dims, imageNote, o.rate, flip, indexed)}${grown}`,
  };
}

async function statefulSet(
  io: ModelIo,
  runner: CalibrationRunner,
  kinds: Map<string, InputKind>,
  state: StateLink[],
  overrides: ShapeOverrides,
  o: Resolved,
): Promise<CalibrationSet> {
  const audioInput = io.inputs.find((i) => kinds.get(i.name) === 'audio' && (!o.audio?.input || o.audio.input === i.name));
  const rejected: string[] = [];
  if (audioInput) {
    const given: AudioSpecInput = { ...o.audio, state, rate: o.rate, input: audioInput.name, segment: 0 };
    let spec: AudioSpec | undefined;
    try {
      spec = resolveAudioSpec(given, io);
    } catch {
      spec = undefined; // no window known: grow one
    }
    const seconds = o.sequenceSeconds ?? 2;
    const sampleAt = (s: AudioSpec, k: number): SampleData =>
      audioSampleData(
        speechLike(Math.max(Math.round(seconds * o.rate), (s.window ?? 0) + (s.context ?? 0)), o.rate, o.seed + k),
        s,
        io,
        overrides.inputs,
      )[0].data();
    const trial = async (s: AudioSpec): Promise<void> => {
      const d = sampleAt(s, 0);
      if (d.kind !== 'sequence') return;
      await runner.runFeed({ ...d.steps[0], ...d.initial }, { label: 'a synthetic trial window', file: o.file });
    };
    if (!spec) {
      for (let w = o.startLength ?? WINDOW_START; ; w *= 4) {
        if (w > o.maxElements)
          throw new BadCalibrationError(
            `synthetic inputs: the stateful model rejected every window tried (${rejected.join('; ')}); give --window SAMPLES or calibration audio`,
            { file: o.file },
          );
        const s = resolveAudioSpec({ ...given, window: w }, io);
        try {
          await trial(s);
          spec = s;
          break;
        } catch (e) {
          rejected.push(`window ${w}: ${firstLine((e as Error & { cause?: unknown }).cause ?? e)}`);
        }
      }
    } else await trial(spec);
    const final = spec;
    const samples: CalibrationSample[] = Array.from({ length: o.count }, (_, k) => ({
      index: k,
      label: `synthetic #${k + 1}`,
      kind: 'sequence',
      load: async () => sampleAt(final, k),
    }));
    const grown = rejected.length ? `; window grown until the model accepted it (rejected: ${rejected.join('; ')})` : '';
    return {
      samples,
      source: [],
      synthetic: true,
      description: `${o.count} SYNTHETIC samples (no calibration data given): ${seconds} s of speech-like sound each into ${final.input} (${describeAudioSpec(final)})${grown}`,
    };
  }
  // a stateful model without an audio input: generic steps, state carried
  const plan = planDims(io, kinds, overrides, {
    audio: o.startLength ?? o.rate,
    seq: o.startLength ?? SEQUENCE_START,
    image: {},
  });
  let dims = plan.dimsAt(0);
  const make = (d: Map<string, number[]>, k: number): SampleData => {
    const steps: Feed[] = [];
    for (let s = 0; s < GENERIC_STEPS; s++) {
      const feed: Feed = {};
      for (const input of io.inputs) {
        const kind = kinds.get(input.name)!;
        if (kind === 'state') continue;
        feed[input.name] =
          kind === 'rate'
            ? rateTensor(input, o.rate)
            : values(
                input,
                kind === 'image' || kind === 'frames' ? 'float' : kind,
                d.get(input.name)!,
                (o.seed + k) * 1000 + s,
                io,
                o.rate,
              );
      }
      steps.push(feed);
    }
    const initial = Object.fromEntries(
      state.map((l) => [
        l.input,
        zeroTensor(
          io.inputs.find((i) => i.name === l.input)!,
          new Map([[l.input, d.get(l.input)!]]),
        ),
      ]),
    );
    return { kind: 'sequence', steps, state, initial };
  };
  for (let r = 0; ; r++) {
    dims = plan.dimsAt(r);
    const largest = Math.max(...[...dims.values()].map((x) => x.reduce((a, b) => a * b, 1)));
    if (largest > o.maxElements)
      throw new BadCalibrationError(
        `synthetic inputs: the model rejected every size tried (${rejected.join('; ')}); give calibration data or --input NAME=SHAPE`,
        {
          file: o.file,
        },
      );
    const d = make(dims, 0);
    try {
      if (d.kind === 'sequence')
        await runner.runFeed({ ...d.steps[0], ...d.initial }, { label: 'a synthetic trial input', file: o.file });
      break;
    } catch (e) {
      if (!plan.grows) throw e;
      rejected.push(
        `${[...dims].map(([k, x]) => `${k}[${x.join(',')}]`).join(' ')}: ${firstLine((e as Error & { cause?: unknown }).cause ?? e)}`,
      );
    }
  }
  const samples: CalibrationSample[] = Array.from({ length: o.count }, (_, k) => ({
    index: k,
    label: `synthetic #${k + 1}`,
    kind: 'sequence',
    load: async () => make(dims, k),
  }));
  return {
    samples,
    source: [],
    synthetic: true,
    description: `${o.count} SYNTHETIC samples (no calibration data given): sequences of ${GENERIC_STEPS} runs, state ${state.map((l) => `${l.input}→${l.output}`).join(', ')} carried; ${describeInputs(io, kinds, dims, '', o.rate)}`,
  };
}
