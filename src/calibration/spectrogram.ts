/**
 * Synthetic spectrogram inputs: a model that takes a log-mel spectrogram or MFCCs (a keyword spotter's
 * [1, 1, 64, 101], a vocoder's mel [1, 80, T]) is fed those of the synthetic
 * speech-like sound (synthetic.ts `speechLike`), not pictures in [−1, 1] or N(0, 1): a keyword spotter fed pictures
 * passed `--target-bpw 4` at agreement 1.0 where real log-mels kept 25 % of its decisions (a new-user sweep).
 *
 * 16 kHz sound, frames of 25 ms (a 400-sample Hann window in a 512-point FFT) every 10 ms, a triangular mel
 * filterbank (HTK mel scale, 0–8 kHz) over the power spectrum, the natural log of (mel energy + 10⁻⁶); MFCCs are the
 * DCT-II (orthonormal) of 40 such log-mels, their first coefficients.
 */

import type { ValueInfo } from './model-io.js';

const RATE = 16000;
const WINDOW = 400;
const FFT = 512;
const HOP = 160;
/** Mel bands MFCCs are taken from. */
const MFCC_MELS = 40;

/**
 * Names of spectrogram inputs (words of the name: not `aspect`, `inspection`), and of feature inputs taken for
 * spectrograms only with a typical band count and no other modality named (`image_features`, `audio_features` of
 * an encoder's width are not). Not `input_features`: Whisper's are log10, clamped and scaled to about −1…1.5, Speech2Text's
 * normalised per band; neither is what is made here.
 */
const SPECTROGRAM_NAME =
  /(^|[_.-])(log_?)?(mels?|melspec|spec|specs|spectrogram|spectrum|fbanks?|filterbank|stft|mfccs?)([_.\d-]|$)/i;
const FEATURES_NAME = /(^|[_.-])(feats?|features?)$/i;
const OTHER_MODALITY = /(image|vision|visual|video|text|token|audio|hidden|clip|encoder|decoder|input)/i;
/** Most bands a feature axis is taken to have: the FFT's bins. */
const MAX_FEATURES = 257;
/** Feature counts speech front ends give (mel bands, MFCCs). */
const TYPICAL_FEATURES = new Set([10, 12, 13, 20, 23, 24, 26, 30, 40, 60, 64, 80, 96, 128]);

/** Where a spectrogram input's features and frames are: axis indices of the input's shape, and MFCCs or log-mels. */
export interface SpectrogramLayout {
  featureAxis: number;
  timeAxis: number;
  mfcc: boolean;
}

/**
 * The layout of a float input of rank 3 ([N, F, T] or [N, T, F]) or 4 with one channel ([N, 1, F, T] or
 * [N, 1, T, F]) named as a spectrogram; undefined for any other input. The feature axis is the fixed one of a typical
 * feature count (else the smaller fixed one); the other is time.
 */
export function spectrogramLayout(input: ValueInfo): SpectrogramLayout | undefined {
  const s = input.shape;
  if (!s || !String(input.type).startsWith('float') || (s.length !== 3 && s.length !== 4)) return undefined;
  const named = SPECTROGRAM_NAME.test(input.name);
  const features = !named && FEATURES_NAME.test(input.name) && !OTHER_MODALITY.test(input.name);
  if (!named && !features) return undefined;
  if (s.length === 4 && s[1] !== 1) return undefined;
  const [a, b] = [s.length - 2, s.length - 1];
  const fixed = (d: number | string | undefined): d is number => typeof d === 'number' && d > 0;
  const typical = (d: number | string | undefined): boolean => fixed(d) && TYPICAL_FEATURES.has(d);
  let featureAxis: number;
  if (typical(s[a]) !== typical(s[b])) featureAxis = typical(s[a]) ? a : b;
  else if (fixed(s[a]) && fixed(s[b])) featureAxis = s[a] <= s[b] ? a : b;
  else if (fixed(s[a]) || fixed(s[b])) featureAxis = fixed(s[a]) ? a : b;
  else return undefined;
  // (a waveform [1, 1, T] has no bands; a stacked fbank [B, T, 560] or an encoder's [1, 1500, 384] more than the FFT gives)
  const bands = s[featureAxis] as number;
  if (bands < 2 || bands > MAX_FEATURES || (features && !TYPICAL_FEATURES.has(bands))) return undefined;
  return { featureAxis, timeAxis: featureAxis === a ? b : a, mfcc: /mfcc/i.test(input.name) };
}

/** In-place radix-2 FFT of (re, im), length a power of two. */
function fft(re: Float64Array, im: Float64Array): void {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const angle = (-2 * Math.PI) / len;
    for (let i = 0; i < n; i += len)
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(angle * k);
        const wi = Math.sin(angle * k);
        const xr = re[i + k + len / 2] * wr - im[i + k + len / 2] * wi;
        const xi = re[i + k + len / 2] * wi + im[i + k + len / 2] * wr;
        re[i + k + len / 2] = re[i + k] - xr;
        im[i + k + len / 2] = im[i + k] - xi;
        re[i + k] += xr;
        im[i + k] += xi;
      }
  }
}

/** Triangular mel filters over the FFT's bins: [mels][bins]. */
function melFilters(mels: number): Float64Array[] {
  const mel = (f: number): number => 2595 * Math.log10(1 + f / 700);
  const hz = (m: number): number => 700 * (10 ** (m / 2595) - 1);
  const bins = FFT / 2 + 1;
  const edges = Array.from({ length: mels + 2 }, (_, i) => hz((mel(RATE / 2) * i) / (mels + 1)));
  return Array.from({ length: mels }, (_, m) => {
    const w = new Float64Array(bins);
    const [lo, mid, hi] = [edges[m], edges[m + 1], edges[m + 2]];
    for (let b = 0; b < bins; b++) {
      const f = (b * RATE) / FFT;
      w[b] = f <= lo || f >= hi ? 0 : f <= mid ? (f - lo) / (mid - lo) : (hi - f) / (hi - mid);
    }
    return w;
  });
}

/** `frames` × `features` log-mels (or MFCCs) of `sound`, frame-major. */
export function logMelFrames(sound: Float32Array, frames: number, features: number, mfcc: boolean): Float32Array {
  const mels = mfcc ? Math.max(MFCC_MELS, features) : features;
  const filters = melFilters(mels);
  const out = new Float32Array(frames * features);
  const re = new Float64Array(FFT);
  const im = new Float64Array(FFT);
  const logs = new Float64Array(mels);
  for (let t = 0; t < frames; t++) {
    re.fill(0);
    im.fill(0);
    for (let i = 0; i < WINDOW; i++) {
      const x = sound[t * HOP + i] ?? 0;
      re[i] = x * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / WINDOW));
    }
    fft(re, im);
    for (let m = 0; m < mels; m++) {
      let e = 0;
      const w = filters[m];
      for (let b = 0; b < w.length; b++) if (w[b]) e += w[b] * (re[b] * re[b] + im[b] * im[b]);
      logs[m] = Math.log(e + 1e-6);
    }
    for (let c = 0; c < features; c++) {
      if (!mfcc) {
        out[t * features + c] = logs[c];
        continue;
      }
      let v = 0;
      for (let m = 0; m < mels; m++) v += logs[m] * Math.cos((Math.PI * c * (m + 0.5)) / mels);
      out[t * features + c] = v * Math.sqrt((c === 0 ? 1 : 2) / mels);
    }
  }
  return out;
}

/** The samples of sound `frames` frames take. */
export const soundFor = (frames: number): number => (frames - 1) * HOP + WINDOW;

/** The 16 kHz rate the spectrograms are taken at. */
export const SPECTROGRAM_RATE = RATE;
