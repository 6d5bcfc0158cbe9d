/**
 * The contract every codec folder fulfils (after squoosh (src/features/encoders/NAME/shared/meta.ts)):
 * it declares its name, media, mime type, extension, which code bit depths it
 * carries and whether exactly, its limits and options with defaults, and
 * encodes/decodes one plane of codes. Adding a codec is adding a module and a
 * line in the registry.
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
}

export interface QualityScale {
  min: number;
  max: number;
  default: number;
  /** What the number means, e.g. "higher is better". */
  meaning: string;
}

export interface Codec {
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
  encode(plane: CodePlane, options: CodecOptions): Promise<Uint8Array>;
  decode(bytes: Uint8Array, expected: { width: number; height: number; bits: number; frames?: number }): Promise<CodeArray>;
}
