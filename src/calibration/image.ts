/**
 * Images as calibration data (PNG, JPEG, WebP and the other formats libvips reads, through sharp): decoded to
 * sRGB (or grey), resized, and turned into the tensor a model takes:
 *
 *     x[c] = (lo + v·(hi − lo)/255 − mean[c]) / std[c]     (v: the 8-bit pixel value, [lo, hi]: `range`)
 *     x[c] = (v·scale − mean[c]) / std[c]                  (when `scale` is given instead of `range`)
 *
 * computed in double precision and stored as float32, channel c of the tensor taken from R, G, B (`order: 'rgb'`)
 * or B, G, R (`'bgr'`), in NCHW or NHWC layout; a 4-channel input takes alpha last (RGBA or BGRA: the image's own
 * alpha, opaque where it has none). mean and std are listed in the tensor's channel order.
 *
 * Resizing (`fit`): `fill` stretches to width×height; `height` fixes the height and takes the width from the
 * aspect ratio (text-line recognisers: PaddleOCR rec is 48 px high), at least `minWidth`; `contain` keeps the
 * ratio and pads to width×height with `pad` (a pixel value, before normalisation) at `padPosition`; `cover` keeps
 * the ratio and crops the centre; `none` keeps the image's own size. The kernel is one of sharp's.
 */

import { sharp } from '../codecs/image/sharp-io.js';
import { BadCalibrationError } from '../errors.js';
import type { ValueInfo } from './model-io.js';
import { isFixedDim } from './shape.js';
import type { CalibrationTensor } from './tensor.js';

export const RESIZE_KERNELS = ['nearest', 'linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3', 'mks2013', 'mks2021'] as const;
export type ResizeKernel = (typeof RESIZE_KERNELS)[number];
/** Other names for sharp's kernels (sharp's own name is what is recorded). */
export const KERNEL_ALIASES: Record<string, ResizeKernel> = { bilinear: 'linear', bicubic: 'cubic', lanczos: 'lanczos3' };

export const RESIZE_FITS = ['fill', 'height', 'contain', 'cover', 'none'] as const;
export type ResizeFit = (typeof RESIZE_FITS)[number];

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.gif', '.avif'] as const;

/** How images become one model input; every field resolved (see `resolveImageSpec` for the defaults). */
export interface ImageSpec {
  /** Target size in pixels (both for fill/contain/cover; height alone for `height`). */
  width?: number;
  height?: number;
  fit: ResizeFit;
  kernel: ResizeKernel;
  /** `height` fit: the narrowest width produced. */
  minWidth: number;
  /** `contain` fit: the padding's pixel value (0–255, all channels) and where the image sits. */
  pad: number;
  padPosition: 'centre' | 'top-left';
  /** The 8-bit pixel range [0, 255] maps linearly onto [lo, hi] before mean/std. */
  range: [number, number];
  /** Instead of `range`: x = v·scale before mean/std. */
  scale?: number;
  /** Per tensor channel (one value for all channels is repeated). */
  mean: number[];
  std: number[];
  order: 'rgb' | 'bgr';
  layout: 'nchw' | 'nhwc';
  /** 1 grey, 3 colour, 4 colour and alpha. */
  channels: ImageChannels;
}

export const IMAGE_CHANNELS = [1, 3, 4] as const;
export type ImageChannels = (typeof IMAGE_CHANNELS)[number];

/** What a user may leave out of an image spec. */
export type ImageSpecInput = Partial<ImageSpec>;

/**
 * Fills an image spec from the model input it feeds: layout from where the 1- or 3-channel axis is, or a last
 * axis of 4 (RGBA, NHWC: M-LSD's input_image_with_alpha), NCHW when unclear; channels from that axis, size from
 * fixed spatial dimensions, and the fit from what is fixed (both: `fill`; height only: `height`; neither:
 * `none`). Defaults: lanczos3, range [0, 1] ([0, 255] for a uint8 input: its pixels as they are), mean 0, std 1, RGB.
 */
export function resolveImageSpec(given: ImageSpecInput, input: ValueInfo | undefined): ImageSpec {
  const shape = input?.shape;
  const rank = shape?.length ?? 4;
  const chanAxis = (layout: 'nchw' | 'nhwc'): number => (layout === 'nchw' ? rank - 3 : rank - 1);
  let layout = given.layout;
  if (!layout) {
    const isChan = (d: unknown): boolean => d === 1 || d === 3;
    const last = shape?.[rank - 1];
    layout =
      shape && (rank === 3 || rank === 4) && !isChan(shape[rank - 3]) && (isChan(last) || (last === 4 && shape[rank - 3] !== 4))
        ? 'nhwc'
        : 'nchw';
  }
  const chanDim = shape?.[chanAxis(layout)];
  const channels = given.channels ?? (chanDim === 1 ? 1 : chanDim === 4 ? 4 : 3);
  const hAxis = layout === 'nchw' ? rank - 2 : rank - 3;
  const wAxis = layout === 'nchw' ? rank - 1 : rank - 2;
  const fixedH = shape && isFixedDim(shape[hAxis]) ? (shape[hAxis] as number) : undefined;
  const fixedW = shape && isFixedDim(shape[wAxis]) ? (shape[wAxis] as number) : undefined;
  const height = given.height ?? fixedH;
  const width = given.width ?? fixedW;
  const fit = given.fit ?? (height && width ? 'fill' : height ? 'height' : 'none');
  const expand = (v: number[] | undefined, d: number, what: string): number[] => {
    const x = v ?? [d];
    if (x.length === 1) return Array<number>(channels).fill(x[0]);
    if (x.length !== channels)
      throw new BadCalibrationError(`image ${what} lists ${x.length} values for ${channels} channels`, { tensor: input?.name });
    return x;
  };
  const spec: ImageSpec = {
    width,
    height,
    fit,
    kernel: given.kernel ?? 'lanczos3',
    minWidth: given.minWidth ?? 1,
    pad: given.pad ?? 0,
    padPosition: given.padPosition ?? 'centre',
    // an 8-bit input takes the pixels as they are (a quantized model's uint8 image), a float one x/255
    range: given.range ?? (given.scale === undefined && isByteInput(input) ? [0, 255] : [0, 1]),
    scale: given.scale,
    mean: expand(given.mean, 0, 'mean'),
    std: expand(given.std, 1, 'std'),
    order: given.order ?? 'rgb',
    layout,
    channels,
  };
  if ((fit === 'fill' || fit === 'contain' || fit === 'cover') && !(spec.width && spec.height))
    throw new BadCalibrationError(
      `image fit '${fit}' needs a width and a height; the model input ${input?.name ?? ''} does not fix them: give --image-size WxH`,
      { tensor: input?.name },
    );
  if (fit === 'height' && !spec.height)
    throw new BadCalibrationError(`image fit 'height' needs a height: give --image-size xH`, { tensor: input?.name });
  if (channels === 1 && spec.order === 'bgr') spec.order = 'rgb';
  return spec;
}

/** An input of bytes (uint8): its pixels are fed as they are, 0…255. */
function isByteInput(input: ValueInfo | undefined): boolean {
  return input?.type === 'uint8';
}

/** Pixel dimensions after the resize step, from the image's own size. */
export function targetSize(spec: ImageSpec, width: number, height: number): { width: number; height: number } {
  switch (spec.fit) {
    case 'none':
      return { width, height };
    case 'height':
      return { width: Math.max(spec.minWidth, Math.round((spec.height! * width) / height)), height: spec.height! };
    default:
      return { width: spec.width!, height: spec.height! };
  }
}

/** Reads one image file into the tensor `spec` describes ([1, C, H, W] or [1, H, W, C]). */
export async function loadImage(
  file: string | Uint8Array,
  spec: ImageSpec,
  name = typeof file === 'string' ? file : 'image',
): Promise<CalibrationTensor> {
  let data: Buffer;
  let width: number;
  let height: number;
  try {
    const meta = await sharp(file).metadata();
    // EXIF orientation 5–8 swaps the axes once applied
    const swap = (meta.orientation ?? 1) >= 5;
    const w0 = (swap ? meta.height : meta.width) ?? 0;
    const h0 = (swap ? meta.width : meta.height) ?? 0;
    if (!w0 || !h0) throw new Error('image has no size');
    ({ width, height } = targetSize(spec, w0, h0));
    let img = sharp(file);
    if ((meta.orientation ?? 1) > 1) img = img.autoOrient();
    img =
      spec.channels === 4
        ? img.toColourspace('srgb').ensureAlpha(1)
        : img.removeAlpha().toColourspace(spec.channels === 1 ? 'b-w' : 'srgb');
    if (spec.fit !== 'none') {
      const fit = spec.fit === 'height' ? 'fill' : spec.fit;
      const background = { r: spec.pad, g: spec.pad, b: spec.pad, alpha: 1 };
      const position = spec.padPosition === 'top-left' ? 'northwest' : 'centre';
      img = img.resize(width, height, { fit, kernel: spec.kernel, background, position });
    }
    const out = await img.raw().toBuffer({ resolveWithObject: true });
    data = out.data;
    if (out.info.width !== width || out.info.height !== height || out.info.channels !== spec.channels)
      throw new Error(
        `decoded ${out.info.width}×${out.info.height}×${out.info.channels}, expected ${width}×${height}×${spec.channels}`,
      );
  } catch (e) {
    throw new BadCalibrationError(`cannot read the image: ${(e as Error).message}`, { file: name }, e);
  }
  return pixelsToTensor(data, width, height, spec);
}

/**
 * That an image file can be read (its header and size), before it is counted as a sample: samples load when a
 * probe or the gate uses them, so a corrupt file was counted by compress and only failed `eval` (found by a
 * new-user sweep).
 */
export async function checkImage(file: string): Promise<{ width: number; height: number }> {
  try {
    const meta = await sharp(file).metadata();
    if (!meta.width || !meta.height) throw new Error('image has no size');
    return { width: meta.width, height: meta.height };
  } catch (e) {
    const why = (e as Error).message.replace(/:\s*$/, '');
    throw new BadCalibrationError(`cannot read the image: ${why}`, { file }, e);
  }
}

/** 8-bit interleaved pixels (R,G,B; R,G,B,A; or grey) → the normalised tensor. */
export function pixelsToTensor(pixels: Uint8Array, width: number, height: number, spec: ImageSpec): CalibrationTensor {
  const C = spec.channels;
  const plane = width * height;
  const out = new Float32Array(C * plane);
  const [lo, hi] = spec.range;
  const span = hi - lo;
  for (let c = 0; c < C; c++) {
    // BGR(A): the colour channels reversed, alpha stays last
    const src = spec.order === 'bgr' && c < 3 ? 2 - c : c;
    const mean = spec.mean[c];
    const std = spec.std[c];
    // per channel: a lookup table of the 256 values, computed as the formula says (bit-exact with per-pixel code)
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = ((spec.scale !== undefined ? v * spec.scale : lo + (v * span) / 255) - mean) / std;
    if (spec.layout === 'nchw') for (let i = 0; i < plane; i++) out[c * plane + i] = table[pixels[i * C + src]];
    else for (let i = 0; i < plane; i++) out[i * C + c] = table[pixels[i * C + src]];
  }
  const dims = spec.layout === 'nchw' ? [1, C, height, width] : [1, height, width, C];
  return { type: 'float32', dims, data: out };
}

/**
 * Whether a model input looks like it takes images: a float tensor of rank 4 with a 1- or 3-channel axis, or a
 * last axis of 4 (RGBA, NHWC). A second axis of 4 is not taken for RGBA: NCHW tensors of 4 channels are more
 * often latents than pictures (`--image-channels 4` says otherwise).
 */
export function isImageInput(input: ValueInfo): boolean {
  const s = input.shape;
  // float inputs, and 8-bit ones (a quantized model's uint8 pixels)
  const type = String(input.type);
  if (!s || !(type.startsWith('float') || type === 'uint8') || s.length !== 4) return false;
  // four channels last (RGBA, NHWC) only where the two before are a picture's sides, not a latent's channels and
  // side ([1, 256, 4, 4] is no 256×4 picture)
  const side = (d: number | string | undefined): boolean => typeof d !== 'number' || d >= MIN_RGBA_SIDE;
  return s[1] === 3 || s[3] === 3 || s[1] === 1 || (s[3] === 4 && s[1] !== 4 && side(s[1]) && side(s[2]));
}

/** The smallest side of a four-channel-last input taken for an RGBA picture (isImageInput). */
const MIN_RGBA_SIDE = 8;

/** One line for reports: size, kernel, channel order, normalisation, layout. */
export function describeImageSpec(s: ImageSpec): string {
  const size =
    s.fit === 'none'
      ? 'own size'
      : s.fit === 'height'
        ? `height ${s.height}, width from the aspect ratio`
        : `${s.fit} ${s.width}×${s.height}`;
  const norm =
    s.scale !== undefined
      ? `x·${s.scale}`
      : s.range[0] === 0 && s.range[1] === 1
        ? 'x/255'
        : s.range[0] === 0 && s.range[1] === 255
          ? 'x'
          : `x → [${s.range.join(', ')}]`;
  const uniform = (v: number[]): string => (v.every((x) => x === v[0]) ? String(v[0]) : `[${v.join(', ')}]`);
  const meanStd =
    s.mean.every((m) => m === 0) && s.std.every((d) => d === 1) ? norm : `(${norm} − ${uniform(s.mean)})/${uniform(s.std)}`;
  const colour = s.channels === 1 ? 'grey' : `${s.order.toUpperCase()}${s.channels === 4 ? 'A' : ''}`;
  return `${size}, ${s.kernel}; ${colour}; ${meanStd}; ${s.layout.toUpperCase()}`;
}
