/**
 * Every codec's metadata, in one place shared by every platform (no encoder, no decoder, no Node module):
 * the validator checks a manifest's codec records against it, the Node registry (registry.ts) adds
 * encoders and decoders to it, the browser (browser/decoders.ts) its own decoders. Adding a codec: an
 * entry here, a module with its encoder/decoder, a line in registry.ts.
 */

import type { CodecMeta, QualityScale } from './types.js';

const UNBOUNDED = 2 ** 31 - 1;
const CRF = (min: number, max: number, def: number, meaning = 'CRF: lower is better and larger'): QualityScale => ({
  min,
  max,
  default: def,
  meaning,
  lowerIsBetter: true,
});

const image = (m: Omit<CodecMeta, 'media'>): CodecMeta => ({ ...m, media: 'image' });

/** Video streams of yuv444p or grey frames through ffmpeg: frames up to 8192 pixels a side. */
const video = (m: Omit<CodecMeta, 'media' | 'maxWidth' | 'maxHeight'>): CodecMeta => ({
  ...m,
  media: 'video',
  maxWidth: 8192,
  maxHeight: 8192,
});

/** One signal per plane through ffmpeg: lossless codecs carry every accepted depth exactly, lossy ones none. */
const audio = (
  m: Omit<CodecMeta, 'media' | 'losslessBits' | 'lossless' | 'defaultLossless' | 'maxWidth' | 'maxHeight'> & {
    exact: boolean;
  },
): CodecMeta => {
  const { exact, ...rest } = m;
  return {
    ...rest,
    media: 'audio',
    losslessBits: exact ? rest.bits : [],
    lossless: exact ? 'always' : 'never',
    defaultLossless: exact,
    maxWidth: UNBOUNDED,
    maxHeight: UNBOUNDED,
  };
};

/** Not a medium: the codes' bytes through a compressor, lossless at every depth it carries, any plane size. */
const raw = (
  m: Omit<CodecMeta, 'media' | 'losslessBits' | 'lossless' | 'defaultLossless' | 'maxWidth' | 'maxHeight'>,
): CodecMeta => ({
  ...m,
  media: 'raw',
  losslessBits: m.bits,
  lossless: 'always',
  defaultLossless: true,
  maxWidth: UNBOUNDED,
  maxHeight: UNBOUNDED,
});
const ZSTD_LEVEL = { min: 1, max: 22, default: 19, meaning: 'zstd level (higher: smaller on structured codes, slower)' };
const BROTLI_QUALITY = { min: 0, max: 11, default: 11, meaning: 'brotli quality (higher: smaller, slower)' };

export const CODEC_META = {
  png: image({
    name: 'png',
    mime: 'image/png',
    ext: 'png',
    description:
      'PNG: lossless, 8 and 16-bit grey, rows unfiltered (PNG filter type None: adaptive filtering measured larger on weight codes); 8-bit codes deflated with entropy coding only (no match search: smaller and faster on weight codes) unless a quick match search shows repeats (a Fourier basis), 16-bit codes and filtered rows through libvips at effort = zlib level 0–9 (default 9)',
    bits: [8, 16],
    losslessBits: [8, 16],
    lossless: 'always',
    defaultLossless: true,
    maxWidth: UNBOUNDED,
    maxHeight: UNBOUNDED,
    effort: { min: 0, max: 9, default: 9, meaning: 'zlib compression level (higher: smaller, slower)' },
  }),
  webp: image({
    name: 'webp',
    mime: 'image/webp',
    ext: 'webp',
    description: 'WebP through libvips: 8-bit only (stored as RGB); lossless, or lossy with quality 1–100',
    bits: [8],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: true,
    maxWidth: 16383,
    maxHeight: 16383,
    quality: { min: 1, max: 100, default: 90, meaning: 'higher is better and larger' },
    effort: { min: 0, max: 6, default: 6, meaning: 'encoder effort (higher: smaller, slower)' },
  }),
  avif: image({
    name: 'avif',
    mime: 'image/avif',
    ext: 'avif',
    description: 'AVIF through libvips: 8-bit (lossy or lossless) or 16-bit codes at 12-bit depth (lossy); quality 1–100',
    bits: [8, 16],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: false,
    maxWidth: 16384,
    maxHeight: 16384,
    quality: { min: 1, max: 100, default: 80, meaning: 'higher is better and larger' },
    effort: { min: 0, max: 9, default: 4, meaning: 'encoder effort (higher: smaller, slower)' },
  }),
  jpeg: image({
    name: 'jpeg',
    mime: 'image/jpeg',
    ext: 'jpg',
    description: 'baseline JPEG (mozjpeg) through libvips: 8-bit grey, lossy, quality 1–100',
    bits: [8],
    losslessBits: [],
    lossless: 'never',
    defaultLossless: false,
    // libjpeg's own limit (JPEG_MAX_DIMENSION), below the format's 65535
    maxWidth: 65500,
    maxHeight: 65500,
    quality: { min: 1, max: 100, default: 90, meaning: 'higher is better and larger' },
  }),
  tiff: image({
    name: 'tiff',
    mime: 'image/tiff',
    ext: 'tif',
    description: 'TIFF through libvips: lossless deflate with horizontal predictor, 8 and 16-bit grey',
    bits: [8, 16],
    losslessBits: [8, 16],
    lossless: 'always',
    defaultLossless: true,
    maxWidth: UNBOUNDED,
    maxHeight: UNBOUNDED,
  }),
  ffv1: video({
    name: 'ffv1',
    mime: 'video/x-matroska',
    ext: 'nut',
    description: 'FFV1 through ffmpeg: lossless, 8 and 16-bit grey, intra (range coder, context model)',
    bits: [8, 16],
    losslessBits: [8, 16],
    lossless: 'always',
    defaultLossless: true,
    intraOnly: true,
  }),
  h264: video({
    name: 'h264',
    mime: 'video/h264',
    ext: 'h264',
    description: 'H.264 (x264) 4:4:4 through ffmpeg: lossless (qp 0) or CRF quality 0–51 (lower is better); intra by default',
    bits: [8],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: true,
    quality: CRF(0, 51, 18),
  }),
  h265: video({
    name: 'h265',
    mime: 'video/h265',
    ext: 'h265',
    description: 'H.265 (x265) 4:4:4 through ffmpeg: lossless or CRF 0–51 (lower is better); intra by default',
    bits: [8],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: true,
    quality: CRF(0, 51, 20),
  }),
  vp9: video({
    name: 'vp9',
    mime: 'video/x-ivf',
    ext: 'ivf',
    description: 'VP9 (libvpx) 4:4:4 through ffmpeg: lossless or CRF 0–63 (lower is better); intra by default',
    bits: [8],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: true,
    quality: CRF(0, 63, 20),
  }),
  av1: video({
    name: 'av1',
    mime: 'video/x-ivf',
    ext: 'ivf',
    description: 'AV1 (libaom) 4:4:4 through ffmpeg: lossless (CRF 0) or CRF 1–63; intra by default; slow',
    bits: [8],
    losslessBits: [8],
    lossless: 'optional',
    defaultLossless: true,
    quality: CRF(1, 63, 20, 'CRF: lower is better and larger (0 = lossless)'),
  }),
  flac: audio({
    name: 'flac',
    mime: 'audio/flac',
    ext: 'flac',
    description: 'FLAC through ffmpeg: lossless, 8/16/24-bit PCM, compression level 12',
    bits: [8, 16, 24],
    exact: true,
  }),
  wav: audio({
    name: 'wav',
    mime: 'audio/wav',
    ext: 'wav',
    description: 'WAV through ffmpeg: uncompressed PCM (the reference), 8/16/24-bit',
    bits: [8, 16, 24],
    exact: true,
  }),
  opus: audio({
    name: 'opus',
    mime: 'audio/ogg',
    ext: 'opus',
    description: 'Opus (libopus) through ffmpeg: lossy, 8/16-bit PCM at 48 kHz; quality = bitrate in kbit/s',
    bits: [8, 16],
    exact: false,
    // libopus takes at most 256 kbit/s a channel (the planes are mono)
    quality: { min: 6, max: 256, default: 256, meaning: 'bitrate in kbit/s: higher is better and larger' },
  }),
  zstd: raw({
    name: 'zstd',
    mime: 'application/zstd',
    ext: 'zst',
    description:
      'not media: raw codes (little-endian) + zstd (effort = level 1–22, default 19); the floor of --codec auto/smallest; lossless, any bit depth',
    bits: [8, 16, 24, 32],
    effort: ZSTD_LEVEL,
  }),
  'zstd-sign': raw({
    name: 'zstd-sign',
    mime: 'application/octet-stream',
    ext: 'zss',
    description:
      'not media: raw codes split into distances from the middle code and their signs, each through zstd (effort = level 1–22, default 19); tried beside zstd by --codec auto/smallest; lossless, 8/16-bit',
    bits: [8, 16],
    effort: ZSTD_LEVEL,
  }),
  brotli: raw({
    name: 'brotli',
    mime: 'application/octet-stream',
    ext: 'br',
    description:
      'not media: raw codes (little-endian) through brotli (effort = quality 0–11, default 11); tried beside zstd by --codec auto/smallest on small tensors; lossless, any bit depth (format version 4)',
    bits: [8, 16, 24, 32],
    effort: BROTLI_QUALITY,
  }),
  'brotli-sign': raw({
    name: 'brotli-sign',
    mime: 'application/octet-stream',
    ext: 'brs',
    description:
      'not media: raw codes split into distances from the middle code and their signs, each through brotli (effort = quality 0–11, default 11); tried beside zstd by --codec auto/smallest on small tensors; lossless, 8/16-bit (format version 4)',
    bits: [8, 16],
    effort: BROTLI_QUALITY,
  }),
} satisfies Record<string, CodecMeta>;

export type CodecName = keyof typeof CODEC_META;

/** The metadata of a codec by its stored name, or undefined for a name this build does not know. */
export function codecMeta(name: string): CodecMeta | undefined {
  return Object.hasOwn(CODEC_META, name) ? CODEC_META[name as CodecName] : undefined;
}
