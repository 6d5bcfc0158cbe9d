import { type ErrorContext, MissingCodecError, OptionError, UnsupportedError } from '../errors.js';
import { avif } from './image/avif.js';
import { jpeg } from './image/jpeg.js';
import { png } from './image/png.js';
import { tiff } from './image/tiff.js';
import { webp } from './image/webp.js';
import { rawBrotli, rawBrotliSign } from './raw/brotli.js';
import { rawZstd, rawZstdSign } from './raw/zstd.js';
import { av1, ffv1, h264, h265, vp9 } from './video/ffmpeg-video.js';
import { flac, opus, wav } from './audio/ffmpeg-audio.js';
import type { Codec, CodecOptions } from './types.js';

const CODECS: readonly Codec[] = [
  png,
  webp,
  avif,
  jpeg,
  tiff,
  ffv1,
  h264,
  h265,
  vp9,
  av1,
  flac,
  wav,
  opus,
  rawZstd,
  rawZstdSign,
  rawBrotli,
  rawBrotliSign,
];

export function listCodecs(): readonly Codec[] {
  return CODECS;
}

export function getCodec(name: string, ctx: ErrorContext = {}): Codec {
  const c = CODECS.find((x) => x.name === name);
  if (!c)
    throw new MissingCodecError(`unknown codec ${JSON.stringify(name)}; known: ${CODECS.map((x) => x.name).join(', ')}`, ctx);
  return c;
}

/** Resolved options for one codec and bit depth, or a clear error for an impossible request. */
export function resolveCodecOptions(
  codec: Codec,
  bits: number,
  requested: CodecOptions,
  ctx: ErrorContext = {},
): Required<Pick<CodecOptions, 'lossless'>> & CodecOptions {
  if (!codec.bits.includes(bits))
    throw new UnsupportedError(
      `codec ${codec.name} cannot carry ${bits}-bit codes (it carries ${codec.bits.join(', ')}-bit)`,
      ctx,
    );
  let lossless =
    requested.lossless ?? (codec.lossless === 'always' ? true : codec.lossless === 'never' ? false : codec.defaultLossless);
  if (requested.quality !== undefined && requested.lossless === undefined && codec.lossless === 'optional') lossless = false;
  if (lossless && codec.lossless === 'never') throw new UnsupportedError(`codec ${codec.name} has no lossless mode`, ctx);
  if (lossless && !codec.losslessBits.includes(bits))
    throw new UnsupportedError(`codec ${codec.name} is not lossless for ${bits}-bit codes`, ctx);
  if (requested.quality !== undefined) {
    if (!codec.quality) throw new OptionError(`codec ${codec.name} has no quality setting`);
    const q = codec.quality;
    if (!Number.isInteger(requested.quality) || requested.quality < q.min || requested.quality > q.max)
      throw new OptionError(`Expected integer between ${q.min} and ${q.max} for quality but received ${requested.quality}`);
  }
  if (requested.effort !== undefined) {
    const e = codec.effort;
    if (!e) throw new OptionError(`codec ${codec.name} has no effort setting`);
    if (!Number.isInteger(requested.effort) || requested.effort < e.min || requested.effort > e.max)
      throw new OptionError(`Expected integer between ${e.min} and ${e.max} for effort but received ${requested.effort}`);
  }
  return {
    lossless,
    quality: lossless ? undefined : (requested.quality ?? codec.quality?.default),
    effort: requested.effort ?? codec.effort?.default,
  };
}
