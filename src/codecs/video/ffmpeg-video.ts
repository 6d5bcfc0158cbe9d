/**
 * Video codecs through ffmpeg. A plane's frames (M5/M6 blocks) are stacked
 * into one raw stream. FFV1 takes grey (8/16-bit) directly. H.264, H.265, VP9
 * and AV1 get yuv444p frames built here — Y = the codes, U = V = 128 — and are
 * read back in the same pixel format, so ffmpeg never converts ranges or
 * colour spaces and lossless really is bit-exact.
 */

import { allocCodes } from '../../quantize/uniform.js';
import { CodecError } from '../../errors.js';
import { runFfmpeg } from '../ffmpeg.js';
import { CODEC_META } from '../meta.js';
import type { Codec, CodecMeta, CodecOptions, CodePlane } from '../types.js';

/** How ffmpeg runs a video codec (its metadata is in meta.ts). */
interface VideoSpec {
  meta: CodecMeta;
  /** ffmpeg output format for the bitstream. */
  format: string;
  /** Encoder arguments for lossless / lossy at a quality, and GOP. */
  args: (o: CodecOptions) => string[];
  grey: boolean;
}

function frameBytes(plane: CodePlane): { w: number; h: number; n: number } {
  const n = plane.frames ?? 1;
  return { w: plane.width, h: plane.height / n, n };
}

function toRaw(plane: CodePlane, grey: boolean): { raw: Uint8Array; pixFmt: string } {
  if (grey) {
    if (plane.bits === 8)
      return { raw: new Uint8Array(plane.data.buffer, plane.data.byteOffset, plane.data.length), pixFmt: 'gray' };
    const raw = new Uint8Array(plane.data.length * 2);
    const v = new DataView(raw.buffer);
    for (let i = 0; i < plane.data.length; i++) v.setUint16(i * 2, plane.data[i], true);
    return { raw, pixFmt: 'gray16le' };
  }
  const { w, h, n } = frameBytes(plane);
  const area = w * h;
  const raw = new Uint8Array(area * 3 * n).fill(128);
  for (let f = 0; f < n; f++) raw.set(plane.data.subarray(f * area, (f + 1) * area) as Uint8Array, f * area * 3);
  return { raw, pixFmt: 'yuv444p' };
}

function makeVideoCodec(spec: VideoSpec): Codec {
  const { name } = spec.meta;
  return {
    ...spec.meta,
    async encode(plane, o) {
      const { w, h } = frameBytes(plane);
      const { raw, pixFmt } = toRaw(plane, spec.grey);
      return new Uint8Array(
        await runFfmpeg(
          [
            '-f',
            'rawvideo',
            '-pix_fmt',
            pixFmt,
            '-s',
            `${w}x${h}`,
            '-r',
            '25',
            '-i',
            'pipe:0',
            ...spec.args(o),
            '-f',
            spec.format,
            'pipe:1',
          ],
          raw,
          `${name} encode`,
        ),
      );
    },
    async decode(bytes, expected) {
      const n = expected.frames ?? 1;
      const area = expected.width * (expected.height / n);
      const pixFmt = spec.grey ? (expected.bits === 8 ? 'gray' : 'gray16le') : 'yuv444p';
      const out = await runFfmpeg(
        ['-f', spec.format, '-i', 'pipe:0', '-f', 'rawvideo', '-pix_fmt', pixFmt, 'pipe:1'],
        bytes,
        `${name} decode`,
      );
      const perFrame = spec.grey ? area * (expected.bits === 8 ? 1 : 2) : area * 3;
      if (out.length !== perFrame * n)
        throw new CodecError(`${name} decoded ${out.length} bytes, expected ${n} frames of ${perFrame}`);
      const codes = allocCodes(expected.bits, area * n);
      if (spec.grey && expected.bits === 16) for (let i = 0; i < area * n; i++) codes[i] = out.readUInt16LE(i * 2);
      else if (spec.grey) codes.set(out.subarray(0, area * n));
      else for (let f = 0; f < n; f++) codes.set(out.subarray(f * area * 3, f * area * 3 + area), f * area);
      return codes;
    },
  };
}

const gop = (o: CodecOptions): string[] => (o.gop === 'inter' ? [] : ['-g', '1']);

export const ffv1 = makeVideoCodec({
  meta: CODEC_META.ffv1,
  format: 'nut',
  args: () => ['-c:v', 'ffv1', '-level', '3', '-coder', '1', '-context', '1', '-g', '1'],
  grey: true,
});

export const h264 = makeVideoCodec({
  meta: CODEC_META.h264,
  format: 'h264',
  args: (o) => [
    '-c:v',
    'libx264',
    '-preset',
    'medium',
    ...(o.lossless ? ['-qp', '0'] : ['-crf', String(o.quality ?? 18)]),
    ...gop(o),
  ],
  grey: false,
});

export const h265 = makeVideoCodec({
  meta: CODEC_META.h265,
  format: 'hevc',
  args: (o) => [
    '-c:v',
    'libx265',
    '-x265-params',
    ['log-level=error', o.lossless ? 'lossless=1' : `crf=${o.quality ?? 20}`, ...(o.gop === 'inter' ? [] : ['keyint=1'])].join(
      ':',
    ),
  ],
  grey: false,
});

export const vp9 = makeVideoCodec({
  meta: CODEC_META.vp9,
  format: 'ivf',
  args: (o) => [
    '-c:v',
    'libvpx-vp9',
    ...(o.lossless ? ['-lossless', '1'] : ['-crf', String(o.quality ?? 20), '-b:v', '0']),
    '-row-mt',
    '1',
    ...gop(o),
  ],
  grey: false,
});

export const av1 = makeVideoCodec({
  meta: CODEC_META.av1,
  format: 'ivf',
  args: (o) => [
    '-c:v',
    'libaom-av1',
    '-strict',
    'experimental',
    '-cpu-used',
    '8',
    '-crf',
    String(o.lossless ? 0 : (o.quality ?? 20)),
    '-b:v',
    '0',
    ...gop(o),
  ],
  grey: false,
});
