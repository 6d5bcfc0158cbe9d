/**
 * M7: a plane's codes as the samples of a mono signal, in row-major order of
 * the canonical plane (M2/M3/M4 layout), encoded through ffmpeg. 8-bit codes are
 * 8-bit PCM (see pcm()); 16-bit codes signed 16-bit PCM (code − 2^15); 24-bit
 * codes signed 24-bit PCM (code − 2^23). The nominal sample rate is 48 kHz.
 */

import { CodecError } from '../../errors.js';
import { allocCodes, type CodeArray } from '../../quantize/uniform.js';
import { runFfmpeg } from '../ffmpeg.js';
import { CODEC_META } from '../meta.js';
import type { Codec, CodecMeta, CodecOptions } from '../types.js';

const RATE = '48000';

/**
 * PCM for ffmpeg. 8-bit codes go to WAV as unsigned 8-bit samples; to FLAC and Opus as signed 16-bit
 * samples of value code − 128 (ffmpeg would otherwise shift u8 into the top byte of s16, and its FLAC
 * encoder does not detect those wasted bits: measured 13.7 instead of 5.5 bits/weight on Silero v4).
 */
function pcm(codes: CodeArray, bits: number, small8: boolean): { raw: Uint8Array; fmt: string } {
  if (bits === 8 && !small8) return { raw: new Uint8Array(codes.buffer, codes.byteOffset, codes.length), fmt: 'u8' };
  if (bits === 8) {
    const raw = new Uint8Array(codes.length * 2);
    const v = new DataView(raw.buffer);
    for (let i = 0; i < codes.length; i++) v.setInt16(i * 2, codes[i] - 128, true);
    return { raw, fmt: 's16le' };
  }
  if (bits === 16) {
    const raw = new Uint8Array(codes.length * 2);
    const v = new DataView(raw.buffer);
    for (let i = 0; i < codes.length; i++) v.setInt16(i * 2, codes[i] - 32768, true);
    return { raw, fmt: 's16le' };
  }
  const raw = new Uint8Array(codes.length * 4);
  const v = new DataView(raw.buffer);
  for (let i = 0; i < codes.length; i++) v.setInt32(i * 4, (codes[i] - 2 ** 23) * 256, true);
  return { raw, fmt: 's32le' };
}

function unpcm(buf: Buffer, bits: number, n: number, what: string, exact: boolean, small8: boolean): CodeArray {
  const width = bits === 8 ? (small8 ? 2 : 1) : bits === 16 ? 2 : 4;
  const got = Math.floor(buf.length / width);
  if (exact && got !== n) throw new CodecError(`${what} decoded ${got} samples, expected ${n}`);
  const out = allocCodes(bits, n);
  const top = 2 ** bits - 1;
  for (let i = 0; i < Math.min(n, got); i++) {
    const c =
      bits === 8
        ? small8
          ? buf.readInt16LE(i * 2) + 128
          : buf[i]
        : bits === 16
          ? buf.readInt16LE(i * 2) + 32768
          : Math.round(buf.readInt32LE(i * 4) / 256) + 2 ** 23;
    out[i] = c < 0 ? 0 : c > top ? top : c;
  }
  return out;
}

/**
 * ffmpeg's FLAC muxer always writes an 8 KiB PADDING block (and a VORBIS_COMMENT
 * naming the encoder): on a layer of a few thousand weights that is more than
 * the audio. Both are optional metadata; this drops them, keeping STREAMINFO
 * and SEEKTABLE, and marks the new last block.
 */
export function stripFlacMetadata(bytes: Uint8Array): Uint8Array {
  if (bytes.length < 8 || String.fromCharCode(...bytes.subarray(0, 4)) !== 'fLaC') return bytes;
  const kept: Uint8Array[] = [bytes.subarray(0, 4)];
  let p = 4;
  let last = false;
  while (!last && p + 4 <= bytes.length) {
    last = (bytes[p] & 0x80) !== 0;
    const type = bytes[p] & 0x7f;
    const len = (bytes[p + 1] << 16) | (bytes[p + 2] << 8) | bytes[p + 3];
    if (p + 4 + len > bytes.length) return bytes; // not what we expected: leave it alone
    if (type !== 1 && type !== 4) kept.push(Uint8Array.from(bytes.subarray(p, p + 4 + len)));
    p += 4 + len;
  }
  const blocks = kept.slice(1);
  if (blocks.length === 0) return bytes;
  blocks.forEach((b, i) => (b[0] = (b[0] & 0x7f) | (i === blocks.length - 1 ? 0x80 : 0)));
  const out = new Uint8Array(bytes.length - p + kept.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of kept) {
    out.set(b, o);
    o += b.length;
  }
  out.set(bytes.subarray(p), o);
  return out;
}

/** How ffmpeg runs an audio codec (its metadata is in meta.ts). */
interface AudioSpec {
  meta: CodecMeta;
  format: string;
  args: (bits: number, o: CodecOptions) => string[];
  /** 8-bit codes as small signed 16-bit samples (code − 128) rather than unsigned 8-bit. */
  small8: boolean;
  /** Post-processing of the encoded bytes (FLAC: drop optional padding). */
  finish?: (bytes: Uint8Array) => Uint8Array;
}

function makeAudioCodec(spec: AudioSpec): Codec {
  const { name } = spec.meta;
  const exact = spec.meta.lossless === 'always';
  return {
    ...spec.meta,
    async encode(plane, o) {
      const { raw, fmt } = pcm(plane.data, plane.bits, spec.small8);
      const finish = spec.finish ?? ((b: Uint8Array) => b);
      return finish(
        new Uint8Array(
          await runFfmpeg(
            ['-f', fmt, '-ar', RATE, '-ac', '1', '-i', 'pipe:0', ...spec.args(plane.bits, o), '-f', spec.format, 'pipe:1'],
            raw,
            `${name} encode`,
          ),
        ),
      );
    },
    async decode(bytes, expected) {
      const n = expected.width * expected.height;
      const fmt = expected.bits === 8 ? (spec.small8 ? 's16le' : 'u8') : expected.bits === 16 ? 's16le' : 's32le';
      const out = await runFfmpeg(
        ['-f', spec.format, '-i', 'pipe:0', '-f', fmt, '-ac', '1', '-ar', RATE, 'pipe:1'],
        bytes,
        `${name} decode`,
      );
      // lossy codecs may pad a few samples (encoder delay): only lossless ones must match exactly
      return unpcm(out, expected.bits, n, name, exact, spec.small8);
    },
  };
}

export const flac = makeAudioCodec({
  meta: CODEC_META.flac,
  format: 'flac',
  args: (bits) => [
    '-c:a',
    'flac',
    '-compression_level',
    '12',
    ...(bits === 24 ? ['-sample_fmt', 's32', '-bits_per_raw_sample', '24'] : []),
  ],
  small8: true,
  finish: stripFlacMetadata,
});

export const wav = makeAudioCodec({
  meta: CODEC_META.wav,
  format: 'wav',
  args: (bits) => ['-c:a', bits === 8 ? 'pcm_u8' : bits === 16 ? 'pcm_s16le' : 'pcm_s24le'],
  small8: false,
});

export const opus = makeAudioCodec({
  meta: CODEC_META.opus,
  format: 'ogg',
  args: (_bits, o) => ['-c:a', 'libopus', '-b:a', `${o.quality ?? 256}k`, '-application', 'audio'],
  small8: true,
});
