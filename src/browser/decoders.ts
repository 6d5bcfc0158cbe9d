/**
 * The browser's codec decoders, registered by codec name beside the shared metadata (codecs/meta.ts):
 * the browser's own decoders where they are exact (createImageBitmap → canvas for 8-bit PNG, WebP, AVIF,
 * JPEG; WebCodecs for 8-bit intra H.264, VP9, AV1), small JS decoders from npm where the browser has none
 * exact (fast-png for 16-bit PNG, whose high byte alone survives a canvas; fzstd and brotli for the raw-codes
 * fallback). FFV1, HEVC, inter-coded video and audio are refused with UnsupportedError — never wrong
 * weights. A decoder's own failure is a CodecError (the core reports the entry as corrupt).
 */

import { decode as decodePng } from 'fast-png';
import { decompress as brotliDecompress } from 'brotli/decompress';
import { decompress as zstdDecompress } from 'fzstd';
import { CodecError, MissingCodecError, UnsupportedError } from '../errors.js';
import { codecMeta } from '../codecs/meta.js';
import type { ExpectedCodes } from '../codecs/types.js';
import type { CodeDecoder } from '../archive/decode.js';
import type { CodecRecord } from '../archive/manifest.js';
import { allocCodes, type CodeArray } from '../quantize/uniform.js';
import { joinSigns, signFrames } from '../codecs/raw/sign.js';

type BrowserDecoder = (bytes: Uint8Array, expected: ExpectedCodes, codec: CodecRecord) => Promise<CodeArray>;

/** The byte of a pixel holding red, in the packed 8-bit RGB formats a WebCodecs frame can come in. */
const RED_BYTE: Readonly<Record<string, number>> = { RGBA: 0, RGBX: 0, BGRA: 2, BGRX: 2 };

interface ImageDecoderLike {
  decode(): Promise<{ image: VideoFrame }>;
  close(): void;
}
type ImageDecoderCtor = {
  new (init: { data: Uint8Array; type: string; colorSpaceConversion: 'none'; premultiplyAlpha: 'none' }): ImageDecoderLike;
  isTypeSupported(type: string): Promise<boolean>;
};

/**
 * Grey codes of an 8-bit image through WebCodecs' ImageDecoder: the decoded frame is copied out as it is (no
 * canvas, no draw, no read-back), about twice as fast as the canvas path in Chromium (1024×1024 grey PNG: 41 ms
 * against 80, lossless WebP 36 against 61) and the same codes. Undefined where there is no ImageDecoder, the
 * type is not supported, or the frame comes in a format other than packed 8-bit RGB (then the canvas decodes).
 */
async function decodeImageWebCodecs(
  bytes: Uint8Array,
  mime: string,
  width: number,
  height: number,
): Promise<Uint8Array | undefined> {
  const Decoder = (globalThis as { ImageDecoder?: ImageDecoderCtor }).ImageDecoder;
  if (!Decoder || !(await Decoder.isTypeSupported(mime))) return undefined;
  const decoder = new Decoder({ data: bytes, type: mime, colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  try {
    const { image } = await decoder.decode().catch((e: unknown) => {
      throw new CodecError(`${mime} image does not decode: ${(e as Error).message}`);
    });
    try {
      const red = image.format ? RED_BYTE[image.format] : undefined;
      if (red === undefined) return undefined;
      if (image.codedWidth !== width || image.codedHeight !== height)
        throw new CodecError(`image is ${image.codedWidth}×${image.codedHeight}, expected ${width}×${height}`);
      const frame = new Uint8Array(image.allocationSize());
      const [plane] = await image.copyTo(frame);
      const out = new Uint8Array(width * height);
      for (let y = 0; y < height; y++) {
        const row = plane.offset + y * plane.stride + red;
        const o = y * width;
        for (let x = 0; x < width; x++) out[o + x] = frame[row + 4 * x];
      }
      return out;
    } finally {
      image.close();
    }
  } finally {
    decoder.close();
  }
}

/** Grey codes of an 8-bit image through the browser's decoder: the red channel of an sRGB canvas, no colour management. */
async function decodeImage(bytes: Uint8Array, mime: string, width: number, height: number): Promise<Uint8Array> {
  const fast = await decodeImageWebCodecs(bytes, mime, width, height);
  if (fast) return fast;
  // Node (or a runtime without a canvas): not a damaged archive, a decoder this environment does not have
  if (typeof createImageBitmap !== 'function' || typeof OffscreenCanvas !== 'function')
    throw new UnsupportedError(
      `this environment has no image decoder for ${mime} (neither WebCodecs ImageDecoder nor createImageBitmap with OffscreenCanvas): nnmedia/browser decodes in a browser or a web worker; in Node, import from 'nnmedia' (decodeAllTensors, decompressArchive)`,
    );
  const bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: mime }), {
    colorSpaceConversion: 'none',
    premultiplyAlpha: 'none',
  });
  if (bitmap.width !== width || bitmap.height !== height) {
    bitmap.close();
    throw new CodecError(`image is ${bitmap.width}×${bitmap.height}, expected ${width}×${height}`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height, { colorSpace: 'srgb' }).data;
  const out = new Uint8Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = rgba[i * 4];
  return out;
}

/** An 8-bit image codec through the canvas; wider codes have no exact path through it. */
const canvasImage =
  (mime: string): BrowserDecoder =>
  async (bytes, { width, height, bits }, codec) => {
    if (bits !== 8)
      throw new UnsupportedError(`${bits}-bit ${codec.name} cannot be decoded exactly by the browser (canvas keeps 8 bits)`);
    return decodeImage(bytes, mime, width, height);
  };

/** 16-bit PNG in JS (canvas keeps only the high byte); 8-bit PNG through the canvas. */
const png: BrowserDecoder = async (bytes, expected, codec) => {
  if (expected.bits !== 16) return canvasImage('image/png')(bytes, expected, codec);
  const img = decodePng(bytes);
  if (img.width !== expected.width || img.height !== expected.height || img.depth !== 16 || img.channels !== 1)
    throw new CodecError(
      `PNG is ${img.width}×${img.height}, ${img.channels} channel(s) of ${img.depth} bits; expected ${expected.width}×${expected.height} grey 16-bit`,
    );
  return Uint16Array.from(img.data);
};

/** A compressor's stream decoded into exactly `size` bytes, or a CodecError naming `what` (zstd, brotli). */
type ByteDecoder = (bytes: Uint8Array, size: number, what: string) => Uint8Array;

/**
 * `size` bytes out of a zstd frame. Into a buffer of the size the manifest gives: the encoder's frames do not
 * state their content size, and without an output buffer fzstd keeps a sliding window of the frame's window
 * size (8 MiB at level 19), shifting all of it after every 128 KiB block — 0.4 s of a 0.47 s decode of Silero v4
 * in Chromium. fzstd does not tell how much of the buffer a stream filled; the entry's bytes were checked
 * against the manifest's checksum before this, so they are the bytes the encoder wrote for exactly this many
 * codes. No bytes (a plane of middle codes has no signs): nothing to decode.
 */
const zstdBytes: ByteDecoder = (bytes, size, what) => {
  if (size === 0) return new Uint8Array(0);
  let raw: Uint8Array;
  try {
    raw = zstdDecompress(bytes, new Uint8Array(size));
  } catch (e) {
    throw new CodecError(`${what} does not decode into ${size} bytes: ${(e as Error).message}`);
  }
  if (raw.length !== size) throw new CodecError(`${what} holds ${raw.length} bytes, expected ${size}`);
  return raw;
};

/** The raw-codes fallbacks: little-endian codes through a compressor (codecs/raw). */
const rawCodes =
  (decode: ByteDecoder, name: string): BrowserDecoder =>
  async (bytes, { width, height, bits }) => {
    const n = width * height;
    return codesOfBytes(decode(bytes, n * (bits === 8 ? 1 : bits === 16 ? 2 : 4), `${name} entry`), bits, n);
  };

/**
 * Raw codes split into distances and signs (codecs/raw/sign.ts), each through a compressor: the distances
 * decoded as raw codes are, then one sign bit per non-zero distance (the exact size bounds the stream).
 */
const signSplit =
  (decode: ByteDecoder, name: string): BrowserDecoder =>
  async (bytes, expected, codec) => {
    const frames = signFrames(bytes);
    if (!frames) throw new CodecError(`${name}-sign entry: its length prefix does not fit the entry`);
    const distances = await rawCodes(decode, name)(frames[0], expected, codec);
    let nonZero = 0;
    for (let i = 0; i < distances.length; i++) if (distances[i] !== 0) nonZero++;
    const signs = decode(frames[1], (nonZero + 7) >>> 3, `${name}-sign signs`);
    const codes = joinSigns(distances, signs, expected.bits);
    if (!codes) throw new CodecError(`${name}-sign entry: its signs do not fit its distances`);
    return codes;
  };

/** Thrown from inside the decoder when it asks for more memory than the stream may take. */
class BrotliPastSize extends Error {}

/** Buffers the brotli decoder makes for itself (input buffer, context maps, Huffman tables) stay under this. */
const BROTLI_OWN_BUFFERS = 2 ** 16;

/**
 * The size of the ring buffer the brotli decoder will make for a stream: 2^WBITS (the window the stream's first
 * bits state, read as the decoder reads them, RFC 7932 §9.1) and its slack (128 + its 4096-byte read size +
 * the longest dictionary word, 24).
 */
function brotliRingBytes(first: number): number {
  const bits =
    (first & 1) === 0 ? 16 : (first >> 1) & 7 ? 17 + ((first >> 1) & 7) : (first >> 4) & 7 ? 8 + ((first >> 4) & 7) : 17;
  return 2 ** bits + 128 + 4096 + 24;
}

/**
 * `size` bytes out of a brotli stream (the JavaScript decoder of the `brotli` package: Chromium has none).
 * That decoder takes an output size but does not stop at it: a meta-block that does not fit grows the output
 * (a copy of all of it), so a 1.6 KB hostile stream asked for 1,250 bytes made 1 GiB, in 54 s and 3 GB of memory,
 * before its length was checked. Its allocations are therefore bounded while it runs: for the duration of the
 * call (synchronous, so no other code runs) the global Uint8Array is a subclass that refuses any buffer larger
 * than `size` (or than the decoder's own small buffers), but for the one ring buffer of the window the stream
 * states; a stream that grows its output fails at its first meta-block past `size`, a CodecError.
 */
export function brotliBytes(bytes: Uint8Array, size: number, what: string): Uint8Array {
  const ring = brotliRingBytes(bytes[0] ?? 0);
  const limit = Math.max(size, BROTLI_OWN_BUFFERS);
  let ringMade = false;
  const scope = globalThis as unknown as { Uint8Array: Uint8ArrayConstructor };
  const Native = scope.Uint8Array;
  class Bounded extends Native {
    constructor(...args: unknown[]) {
      const n = args[0];
      if (typeof n === 'number' && n > limit) {
        if (n !== ring || ringMade) throw new BrotliPastSize();
        ringMade = true;
      }
      super(...(args as []));
    }
  }
  let raw: Uint8Array;
  scope.Uint8Array = Bounded as unknown as Uint8ArrayConstructor;
  try {
    raw = brotliDecompress(bytes, size);
  } catch (e) {
    if (e instanceof BrotliPastSize) throw new CodecError(`${what} decodes past its ${size} bytes`);
    throw new CodecError(`${what} does not decode into ${size} bytes: ${(e as Error).message}`);
  } finally {
    scope.Uint8Array = Native;
  }
  if (raw.length !== size) throw new CodecError(`${what} holds ${raw.length} bytes, expected ${size}`);
  // a plain Uint8Array of the same memory (the decoder's was made as the bounded subclass)
  return new Native(raw.buffer, raw.byteOffset, raw.length);
}

/** Little-endian codes of `bits` bits from their bytes. */
function codesOfBytes(raw: Uint8Array, bits: number, n: number): CodeArray {
  const w = bits === 8 ? 1 : bits === 16 ? 2 : 4;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = allocCodes(bits, n);
  for (let i = 0; i < n; i++) out[i] = w === 1 ? raw[i] : w === 2 ? v.getUint16(2 * i, true) : v.getUint32(4 * i, true);
  return out;
}

/** Access units of an H.264 Annex B stream: one slice NAL per frame (x264 writes one), parameter sets joined to the next slice. */
function annexBFrames(b: Uint8Array): Uint8Array[] {
  const starts: number[] = [];
  for (let i = 0; i + 3 < b.length; i++)
    if (b[i] === 0 && b[i + 1] === 0 && (b[i + 2] === 1 || (b[i + 2] === 0 && b[i + 3] === 1))) {
      starts.push(i);
      i += 2;
    }
  const frames: Uint8Array[] = [];
  let frameStart = 0;
  starts.forEach((s, k) => {
    const h = b[s + 2] === 1 ? s + 3 : s + 4;
    const type = b[h] & 0x1f;
    if (type === 1 || type === 5) {
      const end = k + 1 < starts.length ? starts[k + 1] : b.length;
      frames.push(b.subarray(frameStart, end));
      frameStart = end;
    }
  });
  return frames;
}

/** Frames of an IVF file (VP9, AV1): a 32-byte header, then size (u32) + pts (u64) + data per frame. */
function ivfFrames(b: Uint8Array): Uint8Array[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 32 || v.getUint32(0, true) !== 0x46494b44) throw new CodecError('not an IVF stream');
  const frames: Uint8Array[] = [];
  for (let p = v.getUint16(6, true); p + 12 <= b.length;) {
    const size = v.getUint32(p, true);
    if (p + 12 + size > b.length) throw new CodecError('IVF frame runs past the end of the stream');
    frames.push(b.subarray(p + 12, p + 12 + size));
    p += 12 + size;
  }
  return frames;
}

/** The Y planes (= codes) of every frame, decoded by the browser's own WebCodecs VideoDecoder. */
async function decodeVideo(
  bytes: Uint8Array,
  codec: string,
  config: string,
  width: number,
  height: number,
  count: number,
): Promise<Uint8Array> {
  const chunks = codec === 'h264' ? annexBFrames(bytes) : ivfFrames(bytes);
  if (chunks.length !== count) throw new CodecError(`${codec} stream holds ${chunks.length} frames, expected ${count}`);
  const settings = { codec: config, codedWidth: width, codedHeight: height, hardwareAcceleration: 'prefer-software' as const };
  if (!(await VideoDecoder.isConfigSupported(settings)).supported)
    throw new UnsupportedError(`this browser's WebCodecs cannot decode ${codec} 4:4:4`);
  const out = new Uint8Array(width * height * count);
  let index = 0;
  let failure: unknown;
  const pending: Promise<void>[] = [];
  const decoder = new VideoDecoder({
    output: (frame) => {
      const k = index++;
      pending.push(
        (async () => {
          try {
            if (frame.format !== 'I444') throw new CodecError(`${codec} frame decoded as ${frame.format}, not I444`);
            if (k >= count) throw new CodecError(`${codec} decoded more than ${count} frames`);
            const buf = new Uint8Array(frame.allocationSize());
            const layout = await frame.copyTo(buf);
            for (let r = 0; r < height; r++)
              out.set(
                buf.subarray(layout[0].offset + r * layout[0].stride, layout[0].offset + r * layout[0].stride + width),
                (k * height + r) * width,
              );
          } finally {
            frame.close();
          }
        })(),
      );
    },
    error: (e) => (failure = e),
  });
  try {
    decoder.configure(settings);
    chunks.forEach((data, k) => decoder.decode(new EncodedVideoChunk({ type: 'key', timestamp: k * 40_000, data })));
    await decoder.flush();
  } catch (e) {
    failure ??= e;
  } finally {
    if (decoder.state !== 'closed') decoder.close();
  }
  await Promise.all(pending);
  if (failure) throw new CodecError(`${codec} decode failed: ${(failure as Error).message}`);
  if (index !== count) throw new CodecError(`${codec} decoded ${index} frames, expected ${count}`);
  return out;
}

/** An 8-bit intra-coded 4:4:4 video codec through WebCodecs (`config`: its WebCodecs codec string). */
const webCodecsVideo =
  (config: string): BrowserDecoder =>
  async (bytes, { width, height, bits, frames }, codec) => {
    if (codec.gop === 'inter') throw new UnsupportedError('inter-coded video is not decoded in the browser yet');
    if (bits !== 8) throw new UnsupportedError(`${bits}-bit ${codec.name} video is not decoded in the browser`);
    const count = frames ?? 1;
    return decodeVideo(bytes, codec.name, config, width, height / count, count);
  };

/** Decoders by codec name; a codec not here is refused in the browser. */
export const BROWSER_DECODERS: Readonly<Record<string, BrowserDecoder>> = {
  png,
  webp: async (bytes, expected, codec) => {
    // lossy WebP is YUV 4:2:0: the browser's conversion to RGB rounds otherwise than libwebp's in sharp, and
    // ~0.6 % of the codes came out one off (Silero v4 at quality 90: 2,810 weights, up to 0.03 apart)
    if (!codec.lossless)
      throw new UnsupportedError(
        'lossy WebP is not decoded exactly by the browser (its YUV to RGB conversion differs from libwebp’s): compress with lossless WebP, PNG, AVIF or JPEG for archives a page opens',
      );
    return canvasImage('image/webp')(bytes, expected, codec);
  },
  avif: canvasImage('image/avif'),
  jpeg: canvasImage('image/jpeg'),
  zstd: rawCodes(zstdBytes, 'zstd'),
  'zstd-sign': signSplit(zstdBytes, 'zstd'),
  brotli: rawCodes(brotliBytes, 'brotli'),
  'brotli-sign': signSplit(brotliBytes, 'brotli'),
  h264: webCodecsVideo('avc1.F4001F'), // High 4:4:4 Predictive (lossless qp 0 included)
  vp9: webCodecsVideo('vp09.01.10.08.03'), // profile 1: 4:4:4
  av1: webCodecsVideo('av01.1.08M.08'), // High profile: 4:4:4
};

/** Codes of one media entry with the browser's decoder for its codec, or a typed refusal. */
export const decodeCodesBrowser: CodeDecoder = async (codec, bytes, expected) => {
  const meta = codecMeta(codec.name);
  if (!meta) throw new MissingCodecError(`unknown codec ${JSON.stringify(codec.name)}`);
  const decoder = Object.hasOwn(BROWSER_DECODERS, codec.name) ? BROWSER_DECODERS[codec.name] : undefined;
  if (!decoder) {
    if (meta.media === 'audio')
      throw new UnsupportedError(`${codec.name} audio entries cannot be decoded exactly in the browser`);
    if (meta.media === 'video')
      throw new UnsupportedError(`${codec.name} video has no decoder in this browser (H.264, VP9 and AV1 do)`);
    throw new UnsupportedError(`codec ${codec.name} has no decoder in the browser`);
  }
  return decoder(bytes, expected, codec);
};
