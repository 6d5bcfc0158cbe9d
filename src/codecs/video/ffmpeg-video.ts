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
import type { Codec, CodecOptions, CodePlane, QualityScale } from '../types.js';

interface VideoSpec {
  name: string;
  mime: string;
  ext: string;
  description: string;
  /** ffmpeg output format for the bitstream. */
  format: string;
  /** Encoder arguments for lossless / lossy at a quality, and GOP. */
  args: (o: CodecOptions) => string[];
  bits: number[];
  losslessBits: number[];
  lossless: Codec['lossless'];
  defaultLossless: boolean;
  quality?: QualityScale;
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
  return {
    name: spec.name,
    media: 'video',
    mime: spec.mime,
    ext: spec.ext,
    description: spec.description,
    bits: spec.bits,
    losslessBits: spec.losslessBits,
    lossless: spec.lossless,
    defaultLossless: spec.defaultLossless,
    maxWidth: 8192,
    maxHeight: 8192,
    quality: spec.quality,
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
          `${spec.name} encode`,
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
        `${spec.name} decode`,
      );
      const perFrame = spec.grey ? area * (expected.bits === 8 ? 1 : 2) : area * 3;
      if (out.length !== perFrame * n)
        throw new CodecError(`${spec.name} decoded ${out.length} bytes, expected ${n} frames of ${perFrame}`);
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
  name: 'ffv1',
  mime: 'video/x-matroska',
  ext: 'nut',
  description: 'FFV1 through ffmpeg: lossless, 8 and 16-bit grey, intra (range coder, context model)',
  format: 'nut',
  args: () => ['-c:v', 'ffv1', '-level', '3', '-coder', '1', '-context', '1', '-g', '1'],
  bits: [8, 16],
  losslessBits: [8, 16],
  lossless: 'always',
  defaultLossless: true,
  grey: true,
});

export const h264 = makeVideoCodec({
  name: 'h264',
  mime: 'video/h264',
  ext: 'h264',
  description: 'H.264 (x264) 4:4:4 through ffmpeg: lossless (qp 0) or CRF quality 0–51 (lower is better); intra by default',
  format: 'h264',
  args: (o) => [
    '-c:v',
    'libx264',
    '-preset',
    'medium',
    ...(o.lossless ? ['-qp', '0'] : ['-crf', String(o.quality ?? 18)]),
    ...gop(o),
  ],
  bits: [8],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: true,
  quality: { min: 0, max: 51, default: 18, meaning: 'CRF: lower is better and larger' },
  grey: false,
});

export const h265 = makeVideoCodec({
  name: 'h265',
  mime: 'video/h265',
  ext: 'h265',
  description: 'H.265 (x265) 4:4:4 through ffmpeg: lossless or CRF 0–51 (lower is better); intra by default',
  format: 'hevc',
  args: (o) => [
    '-c:v',
    'libx265',
    '-x265-params',
    ['log-level=error', o.lossless ? 'lossless=1' : `crf=${o.quality ?? 20}`, ...(o.gop === 'inter' ? [] : ['keyint=1'])].join(
      ':',
    ),
  ],
  bits: [8],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: true,
  quality: { min: 0, max: 51, default: 20, meaning: 'CRF: lower is better and larger' },
  grey: false,
});

export const vp9 = makeVideoCodec({
  name: 'vp9',
  mime: 'video/x-ivf',
  ext: 'ivf',
  description: 'VP9 (libvpx) 4:4:4 through ffmpeg: lossless or CRF 0–63 (lower is better); intra by default',
  format: 'ivf',
  args: (o) => [
    '-c:v',
    'libvpx-vp9',
    ...(o.lossless ? ['-lossless', '1'] : ['-crf', String(o.quality ?? 20), '-b:v', '0']),
    '-row-mt',
    '1',
    ...gop(o),
  ],
  bits: [8],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: true,
  quality: { min: 0, max: 63, default: 20, meaning: 'CRF: lower is better and larger' },
  grey: false,
});

export const av1 = makeVideoCodec({
  name: 'av1',
  mime: 'video/x-ivf',
  ext: 'ivf',
  description: 'AV1 (libaom) 4:4:4 through ffmpeg: lossless (CRF 0) or CRF 1–63; intra by default; slow',
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
  bits: [8],
  losslessBits: [8],
  lossless: 'optional',
  defaultLossless: true,
  quality: { min: 1, max: 63, default: 20, meaning: 'CRF: lower is better and larger (0 = lossless)' },
  grey: false,
});
