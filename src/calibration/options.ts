/**
 * Calibration options from the command line or a config file, checked when they are given (one message format,
 * after sharp's lib/is.mjs: `Expected … for --flag but received …`) and turned into a `CalibrationSpec`.
 *
 * The CLI registers `CALIBRATION_OPTIONS` (commander camel-cases each flag: `--image-size` → `imageSize`) and
 * passes the parsed values to `calibrationSpecFromFlags`; a config file's `"calibration"` object goes to
 * `calibrationSpecFromConfig`; `mergeCalibrationSpecs` lets flags override the file.
 */

import { dirname, isAbsolute, resolve } from 'node:path';
import { OptionError } from '../errors.js';
import type { AudioSpecInput } from './audio.js';
import {
  IMAGE_CHANNELS,
  KERNEL_ALIASES,
  RESIZE_FITS,
  RESIZE_KERNELS,
  type ImageChannels,
  type ImageSpecInput,
  type ResizeKernel,
} from './image.js';
import type { CalibrationSpec } from './set.js';
import { parseInputShape, type InputShape } from './shape.js';
import type { StateLink } from './state.js';

/** The flags, for the CLI to register (repeatable ones collect into arrays). */
export const CALIBRATION_OPTIONS: ReadonlyArray<{ flags: string; description: string; repeatable?: boolean }> = [
  {
    flags: '--calibration <path>',
    description: 'calibration data: a file or folder of images, audio or tensors (.npy .npz .safetensors .json); repeatable',
    repeatable: true,
  },
  {
    flags: '--input <name=shape>',
    description: 'an input shape (x=1,3,224,224) or a symbolic dimension (batch=1); repeatable',
    repeatable: true,
  },
  { flags: '--image-input <name>', description: 'the model input images feed (default: the image-like one)' },
  {
    flags: '--image-size <WxH>',
    description: 'resize images to W×H (224 = 224×224; x48 = 48 high, width from the aspect ratio)',
  },
  {
    flags: '--image-fit <fit>',
    description: `how to resize: ${RESIZE_FITS.join(', ')} (default: fill, or height when only the height is fixed)`,
  },
  {
    flags: '--resize-kernel <kernel>',
    description: `resize kernel: ${RESIZE_KERNELS.join(', ')} (bilinear = linear, bicubic = cubic; default lanczos3)`,
  },
  { flags: '--image-min-width <px>', description: 'fit height: the narrowest width (default 1)' },
  { flags: '--image-pad <value>', description: 'fit contain: the padding pixel value 0–255 (default 0)' },
  { flags: '--image-pad-position <where>', description: 'fit contain: centre or top-left (default centre)' },
  { flags: '--image-range <lo,hi>', description: 'pixel range 0–255 maps onto [lo, hi] before mean/std (default 0,1)' },
  { flags: '--image-scale <s>', description: 'instead of --image-range: x = pixel × s before mean/std' },
  { flags: '--image-mean <m>', description: 'mean subtracted, one value or one per channel in tensor order (default 0)' },
  { flags: '--image-std <s>', description: 'divisor after the mean, one value or one per channel (default 1)' },
  { flags: '--image-order <order>', description: 'channel order rgb or bgr (default rgb)' },
  { flags: '--image-layout <layout>', description: 'nchw or nhwc (default: from the model input)' },
  { flags: '--image-channels <n>', description: '3 (colour), 1 (grey) or 4 (colour and alpha) (default: from the model input)' },
  { flags: '--audio-input <name>', description: 'the model input audio feeds (default: detected)' },
  {
    flags: '--audio-rate <hz>',
    description:
      'resample audio to this rate (default 16000); several, comma-separated (16000,8000): every file at each rate, e.g. for a model with a rate input whose branches differ per rate',
  },
  { flags: '--window <samples>', description: 'audio samples per model run (default: from the graph or a known model)' },
  { flags: '--hop <samples>', description: 'samples between window starts (default: the window)' },
  { flags: '--context <samples>', description: 'samples before each window fed along with it (default 0; Silero v5/v6: 64)' },
  {
    flags: '--segment <seconds>',
    description: 'seconds of audio per calibration sample, state reset at each (default 10; 0 = whole files)',
  },
  {
    flags: '--state <in=out>',
    description: 'recurrent state: input fed from output at the next window (default: detected; none to disable); repeatable',
    repeatable: true,
  },
  { flags: '--max-calibration-samples <n>', description: 'use at most n samples, evenly spaced (default: all)' },
  {
    flags: '--judge-output <name>',
    description:
      'judge the model on this output only (quality gate, rate-control probes, eval), e.g. the result of a model that also exports side outputs or features; repeatable (default: every output)',
    repeatable: true,
  },
];

/** Parsed flag values as commander gives them (strings, or arrays of strings for repeatable flags). */
export interface CalibrationFlags {
  calibration?: string[] | string;
  input?: string[] | string;
  imageInput?: string;
  imageSize?: string;
  imageFit?: string;
  resizeKernel?: string;
  imageMinWidth?: string | number;
  imagePad?: string | number;
  imagePadPosition?: string;
  imageRange?: string | number[];
  imageScale?: string | number;
  imageMean?: string | number | number[];
  imageStd?: string | number | number[];
  imageOrder?: string;
  imageLayout?: string;
  imageChannels?: string | number;
  audioInput?: string;
  audioRate?: string | number;
  window?: string | number;
  hop?: string | number;
  context?: string | number;
  segment?: string | number;
  state?: string[] | string;
  maxCalibrationSamples?: string | number;
  judgeOutput?: string[] | string;
}

function fail(what: string, flag: string, received: unknown): never {
  throw new OptionError(`Expected ${what} for ${flag} but received ${JSON.stringify(received)}`);
}

const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function num(v: unknown, flag: string, what: string, check: (n: number) => boolean): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n) || !check(n)) fail(what, flag, v);
  return n;
}
const int = (v: unknown, flag: string, min: number, max: number): number =>
  num(v, flag, `integer between ${min} and ${max}`, (n) => Number.isInteger(n) && n >= min && n <= max);

function numbers(v: unknown, flag: string, count: number[] | undefined, check: (n: number) => boolean, what: string): number[] {
  const parts = Array.isArray(v) ? v : typeof v === 'number' ? [v] : typeof v === 'string' ? v.split(/\s*,\s*/) : undefined;
  if (!parts || (count && !count.includes(parts.length))) fail(what, flag, v);
  return parts.map((p) => num(p, flag, what, check));
}

function oneOf<T extends string>(v: unknown, flag: string, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v.toLowerCase()))
    fail(`one of ${allowed.join(', ')}`, flag, v);
  return (v as string).toLowerCase() as T;
}

function name(v: unknown, flag: string): string {
  if (typeof v !== 'string' || !v.trim()) fail('an input name', flag, v);
  return (v as string).trim();
}

const MAX_SIDE = 65535;
const MAX_WINDOW = 2 ** 26;

/** `224`, `224x224`, `320x48`, `x48` (height only) → sizes. */
export function parseImageSize(v: unknown, flag = '--image-size'): { width?: number; height?: number } {
  const text = typeof v === 'number' ? String(v) : v;
  const m = typeof text === 'string' ? /^\s*(\d+)?\s*(?:[x×,]\s*(\d+))?\s*$/.exec(text) : null;
  if (!m || (!m[1] && !m[2])) fail('WxH, a single size or xH (e.g. 224x224, 224, x48)', flag, v);
  const side = (s: string): number => int(s, flag, 1, MAX_SIDE);
  if (m[1] && !m[2]) return { width: side(m[1]), height: side(m[1]) };
  return { width: m[1] ? side(m[1]) : undefined, height: side(m[2]!) };
}

/** `h=hn` → a state link; `none` → no state. */
export function parseStateLink(v: unknown, flag = '--state'): StateLink {
  const m = typeof v === 'string' ? /^\s*([^=]+?)\s*=\s*([^=]+?)\s*$/.exec(v) : null;
  if (!m) fail('IN=OUT (a state input and the output carrying its next value, e.g. h=hn)', flag, v);
  return { input: m[1], output: m[2] };
}

function kernel(v: unknown, flag: string): ResizeKernel {
  const k = typeof v === 'string' ? (KERNEL_ALIASES[v.toLowerCase()] ?? v.toLowerCase()) : v;
  return oneOf(k, flag, RESIZE_KERNELS);
}

function stateLinks(v: unknown, flag: string): StateLink[] {
  const items = list(v as string | string[]);
  if (items.length === 1 && typeof items[0] === 'string' && items[0].toLowerCase() === 'none') return [];
  return items.map((s) => parseStateLink(s, flag));
}

/** Flag values → a calibration spec (paths may be empty: the shapes and preprocessing then shape synthetic inputs). */
export function calibrationSpecFromFlags(f: CalibrationFlags): CalibrationSpec {
  const image: ImageSpecInput & { input?: string } = {};
  if (f.imageInput !== undefined) image.input = name(f.imageInput, '--image-input');
  if (f.imageSize !== undefined) Object.assign(image, parseImageSize(f.imageSize));
  if (f.imageFit !== undefined) image.fit = oneOf(f.imageFit, '--image-fit', RESIZE_FITS);
  if (image.fit === undefined && image.height !== undefined && image.width === undefined) image.fit = 'height';
  if (f.resizeKernel !== undefined) image.kernel = kernel(f.resizeKernel, '--resize-kernel');
  if (f.imageMinWidth !== undefined) image.minWidth = int(f.imageMinWidth, '--image-min-width', 1, MAX_SIDE);
  if (f.imagePad !== undefined) image.pad = int(f.imagePad, '--image-pad', 0, 255);
  if (f.imagePadPosition !== undefined)
    image.padPosition = oneOf(f.imagePadPosition, '--image-pad-position', ['centre', 'top-left'] as const);
  if (f.imageRange !== undefined) {
    const r = numbers(f.imageRange, '--image-range', [2], Number.isFinite, 'two numbers lo,hi (e.g. 0,1 or -1,1)');
    if (r[0] === r[1]) fail('two different numbers lo,hi', '--image-range', f.imageRange);
    image.range = [r[0], r[1]];
  }
  if (f.imageScale !== undefined) image.scale = num(f.imageScale, '--image-scale', 'a non-zero number', (n) => n !== 0);
  if (image.scale !== undefined && image.range !== undefined)
    throw new OptionError('give --image-range or --image-scale, not both');
  if (f.imageMean !== undefined)
    image.mean = numbers(
      f.imageMean,
      '--image-mean',
      [1, 3, 4],
      Number.isFinite,
      'one number, three or four (e.g. 0.485,0.456,0.406)',
    );
  if (f.imageStd !== undefined)
    image.std = numbers(
      f.imageStd,
      '--image-std',
      [1, 3, 4],
      (n) => n !== 0,
      'one non-zero number, three or four (e.g. 0.229,0.224,0.225)',
    );
  if (f.imageOrder !== undefined) image.order = oneOf(f.imageOrder, '--image-order', ['rgb', 'bgr'] as const);
  if (f.imageLayout !== undefined) image.layout = oneOf(f.imageLayout, '--image-layout', ['nchw', 'nhwc'] as const);
  if (f.imageChannels !== undefined) {
    const c = int(f.imageChannels, '--image-channels', 1, 4);
    if (!(IMAGE_CHANNELS as readonly number[]).includes(c)) fail('1, 3 or 4', '--image-channels', f.imageChannels);
    image.channels = c as ImageChannels;
  }
  const audio: AudioSpecInput = {};
  if (f.audioInput !== undefined) audio.input = name(f.audioInput, '--audio-input');
  if (f.audioRate !== undefined) {
    const rates = numbers(
      f.audioRate,
      '--audio-rate',
      undefined,
      (n) => Number.isInteger(n) && n >= 1000 && n <= 384000,
      'one rate or several, comma-separated, each an integer between 1000 and 384000 (e.g. 16000,8000)',
    );
    if (new Set(rates).size !== rates.length) fail('distinct rates', '--audio-rate', f.audioRate);
    audio.rate = rates[0];
    if (rates.length > 1) audio.rates = rates;
  }
  if (f.window !== undefined) audio.window = int(f.window, '--window', 1, MAX_WINDOW);
  if (f.hop !== undefined) audio.hop = int(f.hop, '--hop', 1, MAX_WINDOW);
  if (f.context !== undefined) audio.context = int(f.context, '--context', 0, MAX_WINDOW);
  if (f.segment !== undefined)
    audio.segment = num(f.segment, '--segment', 'a number of seconds ≥ 0 (0: whole files)', (n) => n >= 0 && n <= 86400);
  if (f.state !== undefined) audio.state = stateLinks(f.state, '--state');
  const spec: CalibrationSpec = {
    paths: list(f.calibration).map((p) => {
      if (typeof p !== 'string' || !p) fail('a file or folder', '--calibration', p);
      return p;
    }),
  };
  const inputs: InputShape[] = list(f.input).map((s) => parseInputShape(s, '--input'));
  if (inputs.length) spec.inputs = inputs;
  if (Object.keys(image).length) spec.image = image;
  if (Object.keys(audio).length) spec.audio = audio;
  if (f.maxCalibrationSamples !== undefined)
    spec.maxSamples = int(f.maxCalibrationSamples, '--max-calibration-samples', 1, 2 ** 31 - 1);
  const outputs = list(f.judgeOutput).map((o) => {
    if (typeof o !== 'string' || !o.trim()) fail('an output name', '--judge-output', o);
    return o.trim();
  });
  if (new Set(outputs).size !== outputs.length) fail('distinct output names', '--judge-output', f.judgeOutput);
  if (outputs.length) spec.outputs = outputs;
  return spec;
}

/**
 * A config file's `"calibration"` object → a calibration spec. Keys: `paths` (string or array, relative to the
 * config file), `inputs` ({"x": [1,3,224,224]} or ["x=1,3,224,224"]), `image` ({size: "224x224" | [W, H],
 * fit, kernel, minWidth, pad, padPosition, range, scale, mean, std, order, layout, channels, input}),
 * `audio` ({rate, window, hop, context, segment, state: {"h": "hn"} | ["h=hn"] | "none", input}),
 * `maxSamples`, `outputs` (the outputs judged: a name or a list). Unknown keys are errors (a typo must not pass silently).
 */
export function calibrationSpecFromConfig(config: unknown, configFile = 'config'): CalibrationSpec {
  const where = `${configFile}: calibration`;
  const obj = (v: unknown, at: string): Record<string, unknown> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('an object', at, v);
    return v as Record<string, unknown>;
  };
  const known = (o: Record<string, unknown>, keys: string[], at: string): void => {
    for (const k of Object.keys(o)) if (!keys.includes(k)) fail(`one of the keys ${keys.join(', ')}`, at, k);
  };
  const c = obj(config, where);
  known(c, ['paths', 'inputs', 'image', 'audio', 'maxSamples', 'outputs'], where);
  const base = dirname(configFile);
  const flags: CalibrationFlags = {};
  if (c.paths !== undefined)
    flags.calibration = list(c.paths as string | string[]).map((p) => {
      if (typeof p !== 'string' || !p) fail('a path or a list of paths', `${where}.paths`, c.paths);
      return isAbsolute(p) ? p : resolve(base, p);
    });
  if (c.inputs !== undefined) {
    if (Array.isArray(c.inputs)) flags.input = c.inputs as string[];
    else
      flags.input = Object.entries(obj(c.inputs, `${where}.inputs`)).map(([k, v]) => {
        if (!Array.isArray(v) && typeof v !== 'number') fail('a shape (array of sizes)', `${where}.inputs.${k}`, v);
        return `${k}=[${list(v as number | number[]).join(',')}]`;
      });
  }
  if (c.image !== undefined) {
    const im = obj(c.image, `${where}.image`);
    known(
      im,
      [
        'size',
        'fit',
        'kernel',
        'minWidth',
        'pad',
        'padPosition',
        'range',
        'scale',
        'mean',
        'std',
        'order',
        'layout',
        'channels',
        'input',
      ],
      `${where}.image`,
    );
    if (im.size !== undefined) flags.imageSize = Array.isArray(im.size) ? (im.size as unknown[]).join('x') : (im.size as string);
    flags.imageFit = im.fit as string | undefined;
    flags.resizeKernel = im.kernel as string | undefined;
    flags.imageMinWidth = im.minWidth as number | undefined;
    flags.imagePad = im.pad as number | undefined;
    flags.imagePadPosition = im.padPosition as string | undefined;
    flags.imageRange = im.range as number[] | undefined;
    flags.imageScale = im.scale as number | undefined;
    flags.imageMean = im.mean as number[] | undefined;
    flags.imageStd = im.std as number[] | undefined;
    flags.imageOrder = im.order as string | undefined;
    flags.imageLayout = im.layout as string | undefined;
    flags.imageChannels = im.channels as number | undefined;
    flags.imageInput = im.input as string | undefined;
  }
  if (c.audio !== undefined) {
    const au = obj(c.audio, `${where}.audio`);
    known(au, ['rate', 'window', 'hop', 'context', 'segment', 'state', 'input'], `${where}.audio`);
    flags.audioRate = au.rate as number | undefined;
    flags.window = au.window as number | undefined;
    flags.hop = au.hop as number | undefined;
    flags.context = au.context as number | undefined;
    flags.segment = au.segment as number | undefined;
    flags.audioInput = au.input as string | undefined;
    if (au.state !== undefined)
      flags.state =
        au.state !== null && typeof au.state === 'object' && !Array.isArray(au.state)
          ? Object.entries(au.state as Record<string, unknown>).map(([k, v]) => `${k}=${String(v)}`)
          : (au.state as string | string[]);
  }
  flags.maxCalibrationSamples = c.maxSamples as number | undefined;
  flags.judgeOutput = c.outputs as string | string[] | undefined;
  for (const k of Object.keys(flags) as Array<keyof CalibrationFlags>) if (flags[k] === undefined) delete flags[k];
  try {
    return calibrationSpecFromFlags(flags);
  } catch (e) {
    // a value of the file is named by its place in the file, not by the flag that would give it
    if (!(e instanceof OptionError)) throw e;
    throw new OptionError(
      e.message.replace(/--[a-z-]+/g, (flag) => (CONFIG_KEYS[flag] ? `${where}.${CONFIG_KEYS[flag]}` : flag)),
    );
  }
}

/** Each calibration flag's key in a config file's "calibration" section (calibrationSpecFromConfig). */
const CONFIG_KEYS: Readonly<Record<string, string>> = {
  '--calibration': 'paths',
  '--input': 'inputs',
  '--image-input': 'image.input',
  '--image-size': 'image.size',
  '--image-fit': 'image.fit',
  '--resize-kernel': 'image.kernel',
  '--image-min-width': 'image.minWidth',
  '--image-pad': 'image.pad',
  '--image-pad-position': 'image.padPosition',
  '--image-range': 'image.range',
  '--image-scale': 'image.scale',
  '--image-mean': 'image.mean',
  '--image-std': 'image.std',
  '--image-order': 'image.order',
  '--image-layout': 'image.layout',
  '--image-channels': 'image.channels',
  '--audio-input': 'audio.input',
  '--audio-rate': 'audio.rate',
  '--window': 'audio.window',
  '--hop': 'audio.hop',
  '--context': 'audio.context',
  '--segment': 'audio.segment',
  '--state': 'audio.state',
  '--max-calibration-samples': 'maxSamples',
  '--judge-output': 'outputs',
};

/**
 * Settings that go together (`when` set by a flag, the file's `drop` go): a range or a scale; a size, with the fit it
 * implies (`x48` reads as height 48, width from the aspect ratio); one rate or several.
 */
const IMAGE_GROUPS: ReadonlyArray<{ when: readonly string[]; drop: readonly string[] }> = [
  { when: ['range', 'scale'], drop: ['range', 'scale'] },
  // (a fit the file states stays; the one a size like `x48` implies goes in `imageWithout`)
  { when: ['width', 'height'], drop: ['width', 'height'] },
];
const AUDIO_GROUPS: ReadonlyArray<{ when: readonly string[]; drop: readonly string[] }> = [
  { when: ['rate', 'rates'], drop: ['rate', 'rates'] },
];

/** `base` without the keys of each group `over` sets any key of. */
function without<T extends object>(
  base: T | undefined,
  over: T | undefined,
  groups: ReadonlyArray<{ when: readonly string[]; drop: readonly string[] }>,
): Partial<T> | undefined {
  if (!base || !over) return base;
  const out = { ...base } as unknown as Record<string, unknown>;
  const set = over as unknown as Record<string, unknown>;
  for (const g of groups) if (g.when.some((k) => set[k] !== undefined)) for (const k of g.drop) delete out[k];
  return out as unknown as Partial<T>;
}

/**
 * The file's image settings without those the flags replace: the groups, and the fit 'height' a size given as a
 * height alone implies (calibrationSpecFromFlags) where the flags give a size of their own; a fit the file states
 * with a full size stays.
 */
function imageWithout(base: CalibrationSpec['image'], over: CalibrationSpec['image']): CalibrationSpec['image'] {
  const out = without(base, over, IMAGE_GROUPS);
  const impliedFit = base?.fit === 'height' && base.width === undefined;
  if (out && impliedFit && (over?.width !== undefined || over?.height !== undefined) && over?.fit === undefined) delete out.fit;
  return out;
}

/** The config file's spec with the flags' values on top (paths and inputs add up; other values replace). */
export function mergeCalibrationSpecs(config: CalibrationSpec | undefined, flags: CalibrationSpec): CalibrationSpec {
  if (!config) return flags;
  const inputs = [...(config.inputs ?? []).filter((i) => !flags.inputs?.some((f) => f.name === i.name)), ...(flags.inputs ?? [])];
  return {
    paths: [...config.paths, ...flags.paths],
    ...(inputs.length ? { inputs } : {}),
    ...(config.image || flags.image ? { image: { ...imageWithout(config.image, flags.image), ...flags.image } } : {}),
    ...(config.audio || flags.audio ? { audio: { ...without(config.audio, flags.audio, AUDIO_GROUPS), ...flags.audio } } : {}),
    ...((flags.maxSamples ?? config.maxSamples) ? { maxSamples: flags.maxSamples ?? config.maxSamples } : {}),
    ...((flags.outputs ?? config.outputs) ? { outputs: flags.outputs ?? config.outputs } : {}),
  };
}
