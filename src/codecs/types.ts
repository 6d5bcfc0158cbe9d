/**
 * The contract every codec fulfils (after squoosh: `shared/meta.ts` beside `enc`/`dec`): its metadata
 * (meta.ts, shared by Node and the browser) declares its name, media, mime type, extension, which code
 * bit depths it carries and whether exactly, its limits and options with defaults; each platform registers
 * what it can run of it (Node: encode and decode, registry.ts; the browser: decoders, browser/decoders.ts).
 */

import type { CodeArray } from '../quantize/uniform.js';

/** 'raw' is the non-media fallback (codes + zstd), never chosen as a medium by the user. */
export type Media = 'image' | 'video' | 'audio' | 'raw';

export interface CodePlane {
  /** Columns. */
  width: number;
  /** Rows. */
  height: number;
  bits: number;
  data: CodeArray;
  /** Video: the plane is this many frames of height/frames rows stacked top to bottom. */
  frames?: number;
}

/** What a decoder must return: width × height codes of `bits` bits (video: `frames` frames stacked top to bottom). */
export interface ExpectedCodes {
  width: number;
  height: number;
  bits: number;
  frames?: number;
}

export interface CodecOptions {
  /** The codec's own quality scale (see `quality` in the codec's description). */
  quality?: number;
  /** Use the codec's lossless mode. */
  lossless?: boolean;
  /** Encoder effort / speed trade-off in the codec's own scale. */
  effort?: number;
  /** Video: 'intra' (every frame a key frame, the default) or 'inter' (GOP with prediction between frames). */
  gop?: 'intra' | 'inter';
  /** PNG only: adaptive row filtering (off by default: on weight codes it measured larger). */
  filter?: boolean;
  /**
   * PNG only, 8-bit codes: also search repeats and keep the smaller (default true; codecs/image/png-entropy.ts).
   * The codec sets turn it off: zstd beside them finds that structure.
   */
  matches?: boolean;
}

export interface QualityScale {
  min: number;
  max: number;
  default: number;
  /** What the number means, e.g. "higher is better". */
  meaning: string;
  /** A lower number is the better, larger result (a video codec's CRF). */
  lowerIsBetter?: boolean;
}

/** What a codec is, without its encoder or decoder: shared by every platform (see meta.ts). */
export interface CodecMeta {
  name: string;
  media: Media;
  mime: string;
  ext: string;
  description: string;
  /** Code bit depths the codec accepts at all. */
  bits: readonly number[];
  /** Code bit depths carried bit-exactly in lossless mode (empty: never lossless). */
  losslessBits: readonly number[];
  /** 'always': lossless whatever the options; 'never': lossy only; 'optional': `lossless` chooses. */
  lossless: 'always' | 'never' | 'optional';
  /** Lossless by default when the codec offers both. */
  defaultLossless: boolean;
  maxWidth: number;
  maxHeight: number;
  quality?: QualityScale;
  effort?: QualityScale;
  /** Video: every frame is coded on its own whatever `gop` says (FFV1 has no inter prediction). */
  intraOnly?: boolean;
}

/** A codec on Node: its metadata with an encoder and a decoder (the browser registers decoders of its own). */
export interface Codec extends CodecMeta {
  encode(plane: CodePlane, options: CodecOptions): Promise<Uint8Array>;
  decode(bytes: Uint8Array, expected: ExpectedCodes): Promise<CodeArray>;
}
