/**
 * Audio as calibration data: WAV read in JavaScript (PCM 8/16/24/32-bit, float 32/64, any channel count, mixed
 * to mono) when it is already at the rate asked, anything else (FLAC, MP3, Opus, WAV at another rate…) decoded
 * and resampled by ffmpeg (src/codecs/ffmpeg.ts). The waveform is cut into segments (`segment` seconds, 0 = the
 * whole file; each segment is one sample), and each segment into the windows the model takes: `window` samples
 * every `hop`, each run seeing `context` samples before its window too (zeros before the segment starts); a
 * last partial window is dropped (a segment shorter than one window is padded with zeros to one).
 *
 * A stateful model (state inputs carried from outputs, see state.ts) runs a segment as a sequence of windows,
 * its state zero at the segment's start. A stateless model with a fixed window runs every window as its own
 * sample; one with a dynamic length runs each segment whole. A rate input (`sr`) is fed the rate.
 *
 * Known streaming models fill in what the graph cannot say (the window): Silero VAD v4 (state `h`, `c`
 * [2,·,64] → `hn`, `cn`; 1536 samples at 16 kHz) and v5/v6 (state [2,·,128] → `stateN`; 512 samples plus 64 of
 * context at 16 kHz). Everything is overridable.
 */

import { readFileSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { runFfmpeg } from '../codecs/ffmpeg.js';
import { BadCalibrationError } from '../errors.js';
import { formatShape, type ModelIo, type ValueInfo } from './model-io.js';
import { isFixedDim } from './shape.js';
import { checkStateLinks, findRateInput, findStateLinks, type StateLink } from './state.js';
import { allocate, convertTensor, isElementType, MAX_TENSOR_ELEMENTS, type CalibrationTensor, type Feed } from './tensor.js';
import type { SampleData } from './types.js';
import { fsError } from '../io/files.js';

export const AUDIO_EXTENSIONS = [
  '.wav',
  '.flac',
  '.mp3',
  '.ogg',
  '.opus',
  '.m4a',
  '.aac',
  '.wma',
  '.aiff',
  '.aif',
  '.webm',
] as const;

/** Audio files larger than this are refused (decoded samples are bounded by MAX_TENSOR_ELEMENTS too). */
const MAX_AUDIO_FILE_BYTES = 2 ** 31;
/** Default length of one sample, in seconds: long recordings become several samples (and a held-back part). */
export const DEFAULT_SEGMENT_SECONDS = 10;
export const DEFAULT_AUDIO_RATE = 16000;

/** How audio becomes model inputs; every field resolved (see `resolveAudioSpec`). */
export interface AudioSpec {
  /** Sample rate in Hz the audio is resampled to. */
  rate: number;
  /** The model input that takes the samples. */
  input: string;
  /** Samples per run; undefined: a whole segment per run. */
  window?: number;
  /** Samples between the starts of consecutive windows. */
  hop: number;
  /** Samples before each window fed along with it (Silero v5/v6: 64 at 16 kHz). */
  context: number;
  /** Seconds per sample; 0: the whole file is one sample. */
  segment: number;
  /** Recurrent state carried between windows (empty: stateless). */
  state: StateLink[];
  /** The input fed the rate, if any. */
  rateInput?: string;
  /** A recognised model (for descriptions), e.g. "Silero VAD v4". */
  pattern?: string;
}

export type AudioSpecInput = Partial<Omit<AudioSpec, 'state'>> & {
  state?: StateLink[];
  /** Every file is cut at each of these rates (the first is `rate`): a model whose graph branches on its rate input. */
  rates?: number[];
};

interface StreamingPattern {
  name: string;
  matches(io: ModelIo, state: StateLink[]): boolean;
  window(rate: number): number;
  context(rate: number): number;
}

const stateWidth = (io: ModelIo, name: string): unknown => io.inputs.find((i) => i.name === name)?.shape?.[2];

/** Streaming models whose window the graph does not fix (see the module comment). */
const PATTERNS: StreamingPattern[] = [
  {
    name: 'Silero VAD v4',
    matches: (io, state) =>
      Boolean(findRateInput(io)) &&
      state.some((l) => l.input === 'h' && l.output === 'hn') &&
      state.some((l) => l.input === 'c' && l.output === 'cn') &&
      stateWidth(io, 'h') === 64,
    window: (rate) => Math.round((1536 * rate) / 16000),
    context: () => 0,
  },
  {
    name: 'Silero VAD v5/v6',
    // with or without a rate input: the 16 kHz-only exports (silero_vad_half.onnx) have none
    matches: (io, state) => state.some((l) => l.input === 'state' && l.output === 'stateN') && stateWidth(io, 'state') === 128,
    window: (rate) => (rate === 8000 ? 256 : 512),
    context: (rate) => (rate === 8000 ? 32 : 64),
  },
];

/** The input that takes audio: the user's, else a float input of rank 1–3 that is not a state input. */
function audioInput(io: ModelIo, state: readonly StateLink[], given?: string): ValueInfo {
  if (given) {
    const i = io.inputs.find((x) => x.name === given);
    if (!i)
      throw new BadCalibrationError(
        `audio input ${given}: the model has no such input; inputs: ${io.inputs.map((x) => x.name).join(', ')}`,
      );
    return i;
  }
  const floats = io.inputs.filter(
    (i) =>
      String(i.type).startsWith('float') &&
      !state.some((l) => l.input === i.name) &&
      (!i.shape || (i.shape.length >= 1 && i.shape.length <= 3)),
  );
  // one channel of samples: every axis but the last symbolic or 1 (a Whisper encoder's [batch, 80, 3000] holds 80
  // mel bands of 3000 frames, not sound)
  const features = (i: ValueInfo): boolean => (i.shape ?? []).slice(0, -1).some((d) => isFixedDim(d) && d > 1);
  const candidates = floats.filter((i) => !features(i));
  const named = candidates.find((i) =>
    /(^|[_.])(x|input|audio|wav|wave|waveform|signal|pcm|speech|samples?)($|[_.\d])/i.test(i.name),
  );
  const pick = named ?? candidates[0];
  if (!pick) {
    const looksLike = floats.find(features);
    throw new BadCalibrationError(
      looksLike
        ? `no model input takes one channel of sound: ${looksLike.name}${formatShape(looksLike.shape)} fixes axis ${looksLike.shape!.findIndex((d) => isFixedDim(d) && d > 1)} at ${looksLike.shape!.find((d) => isFixedDim(d) && d > 1)} (features such as an 80-band log-mel spectrogram or MFCCs, several channels, or a fixed batch), not one channel of samples; compute what the model expects and give it as .npy, .npz, safetensors or JSON (named ${looksLike.name})`
        : `no model input takes audio (a float input of rank 1–3); inputs: ${io.inputs.map((i) => `${i.name}${formatShape(i.shape)}`).join(', ')}`,
    );
  }
  return pick;
}

/**
 * Fills an audio spec from the model: state links (detected unless given), the rate input, the audio input, and
 * the window: the user's, else the graph's fixed length, else a known streaming model's; a stateful model
 * needs one (error otherwise), a stateless one runs whole segments.
 */
export function resolveAudioSpec(given: AudioSpecInput, io: ModelIo): AudioSpec {
  const state = given.state ? checkStateLinks(given.state, io) : findStateLinks(io);
  const rate = given.rate ?? DEFAULT_AUDIO_RATE;
  const input = audioInput(io, state, given.input);
  const pattern = PATTERNS.find((p) => p.matches(io, state));
  const last = input.shape?.[input.shape.length - 1];
  const fixedLength = last !== undefined && isFixedDim(last) ? last : undefined;
  let context = given.context ?? pattern?.context(rate) ?? 0;
  let window = given.window;
  if (window === undefined && fixedLength !== undefined) {
    window = fixedLength - context;
    if (window < 1)
      throw new BadCalibrationError(
        `audio context ${context} leaves no window in input ${input.name} ${formatShape(input.shape)}`,
      );
  }
  window ??= pattern?.window(rate);
  if (window === undefined && state.length)
    throw new BadCalibrationError(
      `model input ${input.name} ${formatShape(input.shape)} is stateful (${state.map((l) => `${l.input}→${l.output}`).join(', ')}) but its window length is not fixed by the graph: give --window SAMPLES`,
      { tensor: input.name },
    );
  if (window === undefined) context = given.context ?? 0;
  const rateInput = given.rateInput ?? findRateInput(io)?.name;
  return {
    rate,
    input: input.name,
    window,
    hop: given.hop ?? window ?? 0,
    context,
    segment: given.segment ?? DEFAULT_SEGMENT_SECONDS,
    state,
    rateInput,
    pattern: pattern?.name,
  };
}

/** Mono float samples at `rate` from an audio file (see the module comment). */
export async function decodeAudio(file: string, rate: number): Promise<Float32Array> {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (e) {
    throw fsError('cannot read the audio', file, e);
  }
  if (size > MAX_AUDIO_FILE_BYTES)
    throw new BadCalibrationError(`audio file of ${size} bytes is larger than ${MAX_AUDIO_FILE_BYTES}`, { file });
  if (extname(file).toLowerCase() === '.wav') {
    const wav = parseWav(readFileSync(file), file);
    if (wav && wav.rate === rate) return wav.samples;
  }
  let out: Buffer;
  try {
    // the file by path, not piped: containers like MP4 keep their index at the end and need seeking. Its own
    // channels, as float WAV: mixed to mono here by their mean, as a WAV read directly is (ffmpeg's `-ac 1`
    // weighs each of two channels 1/√2: a stereo file came out 3 dB louder, its peaks past ±1)
    out = await runFfmpeg(
      ['-i', file, '-vn', '-ar', String(rate), '-f', 'wav', '-acodec', 'pcm_f32le', 'pipe:1'],
      new Uint8Array(0),
      `decoding ${file}`,
    );
  } catch (e) {
    throw new BadCalibrationError(`cannot decode the audio: ${(e as Error).message}`, { file }, e);
  }
  const wav = parseWav(out, file);
  if (!wav || wav.rate !== rate)
    throw new BadCalibrationError(`ffmpeg's decoding is not ${rate} Hz float WAV (${wav ? `${wav.rate} Hz` : 'unread'})`, {
      file,
    });
  if (wav.samples.length > MAX_TENSOR_ELEMENTS)
    throw new BadCalibrationError(`audio of ${wav.samples.length} samples is longer than ${MAX_TENSOR_ELEMENTS}`, { file });
  return wav.samples;
}

/**
 * A WAV file's samples mixed to mono, or undefined when it is a WAV this reader leaves to ffmpeg (compressed
 * formats, WAVE_FORMAT_EXTENSIBLE with another sub-format).
 */
export function parseWav(b: Uint8Array, file: string): { rate: number; samples: Float32Array } | undefined {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ascii = (p: number): string => String.fromCharCode(b[p], b[p + 1], b[p + 2], b[p + 3]);
  if (b.length < 12 || ascii(0) !== 'RIFF' || ascii(8) !== 'WAVE') throw new BadCalibrationError('not a WAV file', { file });
  let p = 12;
  let fmt: { format: number; channels: number; rate: number; bits: number } | undefined;
  while (p + 8 <= b.length) {
    const id = ascii(p);
    const size = view.getUint32(p + 4, true);
    const held = b.length - p - 8;
    if (id === 'fmt ' && size >= 16) {
      // a header cut short is a file cut short, not a crash in the reader
      if (held < Math.min(size, 26))
        throw new BadCalibrationError(`WAV fmt chunk cut short (${held} of ${size} bytes)`, { file });
      let format = view.getUint16(p + 8, true);
      if (format === 0xfffe && size >= 26) format = view.getUint16(p + 8 + 24, true); // extensible: the sub-format's first two bytes
      fmt = {
        format,
        channels: view.getUint16(p + 10, true),
        rate: view.getUint32(p + 12, true),
        bits: view.getUint16(p + 22, true),
      };
    } else if (id === 'data') {
      if (!fmt) throw new BadCalibrationError('WAV data chunk before its fmt chunk', { file });
      const { format, channels, bits } = fmt;
      const pcm = format === 1 && [8, 16, 24, 32].includes(bits);
      const float = format === 3 && (bits === 32 || bits === 64);
      if (!pcm && !float) return undefined;
      if (channels < 1) throw new BadCalibrationError('WAV file with no channels', { file });
      // a size of 2³² − 1 (ffmpeg) or a provisional maximum near 2³¹ (other writers) is a stream's, written before its
      // length was known: the rest of the file; any other size larger than the file holds is a file cut short (a
      // download or a copy that stopped), said rather than read
      const streamed = size === 0xffffffff || (size >= 0x7fff0000 && size > held);
      if (!streamed && size > held)
        throw new BadCalibrationError(`WAV data chunk of ${size} bytes, of which the file holds ${held}: the file is cut short`, {
          file,
        });
      const bytesPer = bits / 8;
      const frames = Math.floor((streamed ? held : size) / (bytesPer * channels));
      if (frames > MAX_TENSOR_ELEMENTS)
        throw new BadCalibrationError(`WAV of ${frames} frames is longer than ${MAX_TENSOR_ELEMENTS}`, { file });
      const read = (q: number): number => {
        if (float) return bits === 32 ? view.getFloat32(q, true) : view.getFloat64(q, true);
        if (bits === 8) return (b[q] - 128) / 128;
        if (bits === 16) return view.getInt16(q, true) / 32768;
        if (bits === 24) return (((b[q] | (b[q + 1] << 8) | (b[q + 2] << 16)) << 8) >> 8) / 8388608;
        return view.getInt32(q, true) / 2147483648;
      };
      const samples = new Float32Array(frames);
      let q = p + 8;
      for (let i = 0; i < frames; i++) {
        if (channels === 1) {
          samples[i] = read(q);
          q += bytesPer;
        } else {
          let s = 0;
          for (let c = 0; c < channels; c++, q += bytesPer) s += read(q);
          samples[i] = s / channels;
        }
      }
      return { rate: fmt.rate, samples };
    }
    p += 8 + size + (size & 1);
  }
  throw new BadCalibrationError('WAV file has no data chunk', { file });
}

/** Dimensions for `length` samples in an input of the given shape: the length last, 1 elsewhere. */
function audioDims(input: ValueInfo, length: number): number[] {
  const shape = input.shape ?? ['', ''];
  return shape.map((d, k) => {
    if (k === shape.length - 1) {
      if (isFixedDim(d) && d !== length)
        throw new BadCalibrationError(`input ${input.name} ${formatShape(shape)} takes ${d} samples per run, not ${length}`, {
          tensor: input.name,
        });
      return length;
    }
    if (isFixedDim(d) && d !== 1)
      throw new BadCalibrationError(`input ${input.name} ${formatShape(shape)}: only a single channel of audio is supported`, {
        tensor: input.name,
      });
    return 1;
  });
}

/** Zero state for a state input: its fixed sizes, 1 for symbolic ones unless `shapes` gives the input's shape. */
export function zeroTensor(input: ValueInfo, shapes: ReadonlyMap<string, number[]> = new Map()): CalibrationTensor {
  const dims = shapes.get(input.name) ?? (input.shape ?? []).map((d) => (isFixedDim(d) ? d : 1));
  if (!isElementType(input.type))
    throw new BadCalibrationError(`input ${input.name} has element type ${input.type}, which cannot be fed`, {
      tensor: input.name,
    });
  return {
    type: input.type,
    dims,
    data: allocate(
      input.type,
      dims.reduce((a, b) => a * b, 1),
    ),
  };
}

/** The rate as the rate input takes it. */
export function rateTensor(input: ValueInfo, rate: number): CalibrationTensor {
  const dims = input.shape && input.shape.length === 1 ? [1] : [];
  const type = isElementType(input.type) ? input.type : 'int64';
  return convertTensor({ type: 'float64', dims, data: Float64Array.of(rate) }, type, { tensor: input.name });
}

/** Where each segment of a waveform lies: [start, end) sample ranges. */
export function segmentRanges(length: number, spec: Pick<AudioSpec, 'segment' | 'rate'>): Array<[number, number]> {
  const per = spec.segment > 0 ? Math.round(spec.segment * spec.rate) : length;
  const out: Array<[number, number]> = [];
  for (let s = 0; s < length; s += per) out.push([s, Math.min(length, s + per)]);
  // a short tail joins its predecessor rather than making a sample of a fraction of a segment
  if (out.length > 1 && out[out.length - 1][1] - out[out.length - 1][0] < per / 2)
    out.splice(-2, 2, [out[out.length - 2][0], length]);
  return out.length ? out : [[0, 0]];
}

/** The windows of one segment: each run's samples (with context), in order. */
export function windowsOf(segment: Float32Array, spec: AudioSpec): Float32Array[] {
  if (spec.window === undefined) return [segment];
  const { window, hop, context } = spec;
  const count = segment.length >= window ? Math.floor((segment.length - window) / hop) + 1 : 1;
  const out: Float32Array[] = [];
  for (let i = 0; i < count; i++) {
    const chunk = new Float32Array(window + context);
    const start = i * hop - context;
    for (let k = 0; k < window + context; k++) {
      const at = start + k;
      if (at >= 0 && at < segment.length) chunk[k] = segment[at];
    }
    out.push(chunk);
  }
  return out;
}

/**
 * The samples of one decoded waveform: per segment, a sequence of windows (stateful), one feed per window
 * (stateless, fixed window) or one feed of the whole segment (stateless, dynamic length).
 */
export function audioSampleData(
  samples: Float32Array,
  spec: AudioSpec,
  io: ModelIo,
  shapes: ReadonlyMap<string, number[]> = new Map(),
): Array<{ range: [number, number]; data: () => SampleData }> {
  const input = io.inputs.find((i) => i.name === spec.input)!;
  const rateInput = spec.rateInput ? io.inputs.find((i) => i.name === spec.rateInput) : undefined;
  const feedOf = (chunk: Float32Array): Feed => {
    const feed: Feed = {
      [input.name]: convertTensor(
        { type: 'float32', dims: audioDims(input, chunk.length), data: chunk },
        isElementType(input.type) ? input.type : 'float32',
      ),
    };
    if (rateInput) feed[rateInput.name] = rateTensor(rateInput, spec.rate);
    return feed;
  };
  const out: Array<{ range: [number, number]; data: () => SampleData }> = [];
  for (const [a, b] of segmentRanges(samples.length, spec)) {
    const segment = samples.subarray(a, b);
    if (spec.state.length) {
      out.push({
        range: [a, b],
        data: () => ({
          kind: 'sequence',
          steps: windowsOf(segment, spec).map(feedOf),
          state: spec.state,
          initial: Object.fromEntries(
            spec.state.map((l) => [
              l.input,
              zeroTensor(
                io.inputs.find((i) => i.name === l.input)!,
                shapes,
              ),
            ]),
          ),
        }),
      });
    } else if (spec.window !== undefined) {
      windowsOf(segment, spec).forEach((w, k) => {
        const start = a + k * spec.hop;
        out.push({ range: [start, start + spec.window!], data: () => ({ kind: 'feed', feed: feedOf(w) }) });
      });
    } else out.push({ range: [a, b], data: () => ({ kind: 'feed', feed: feedOf(segment.slice()) }) });
  }
  return out;
}

export function describeAudioSpec(spec: AudioSpec): string {
  const parts = [`${spec.rate / 1000} kHz mono`];
  if (spec.window !== undefined)
    parts.push(
      `window ${spec.window}${spec.hop !== spec.window ? ` hop ${spec.hop}` : ''}${spec.context ? ` + ${spec.context} context` : ''}`,
    );
  else parts.push('whole segments');
  if (spec.state.length) parts.push(`state ${spec.state.map((l) => `${l.input}→${l.output}`).join(', ')}`);
  if (spec.segment > 0) parts.push(`${spec.segment} s segments`);
  if (spec.pattern) parts.push(spec.pattern);
  return parts.join(', ');
}
