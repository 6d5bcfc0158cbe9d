/**
 * Shared plumbing for the image codecs that run through libvips (sharp).
 * Grey must stay one channel ('b-w' / 'grey16') and 16-bit must go in as a
 * Uint16Array with the grey16 colour space, or libvips converts silently.
 */

import { createRequire } from 'node:module';
import type sharpFactory from 'sharp';
import type { Sharp, OutputInfo } from 'sharp';
import { CodecError, MissingDependencyError } from '../../errors.js';
import { allocCodes, type CodeArray } from '../../quantize/uniform.js';
import type { CodePlane } from '../types.js';

let loaded: typeof sharpFactory | undefined;

/**
 * libvips, loaded on first use: a process (or worker thread) that only reads zstd entries never pays for
 * loading it (~40 ms a thread here). Every use of sharp goes through this (calibration images, the OCR task,
 * `view`): where its native binary is missing or does not load (`npm install --omit=optional`, a node_modules
 * copied from another system), commands that need no image say nothing of it, and those that do fail with
 * E_MISSING_DEPENDENCY, not a stack trace at start-up (`--help` included).
 */
export function sharp(...args: Parameters<typeof sharpFactory>): Sharp {
  if (!loaded) {
    try {
      loaded = createRequire(import.meta.url)('sharp') as typeof sharpFactory;
    } catch (e) {
      // said as it is (a broken install is not a corrupt archive), with sharp's own reason
      throw new MissingDependencyError(`the image codecs need sharp, which cannot be loaded: ${(e as Error).message}`, {}, e);
    }
    loaded.cache(false);
  }
  return loaded(...args);
}

/** A sharp pipeline fed with one plane of 8- or 16-bit codes as a single grey channel. */
export function sharpFromPlane(plane: CodePlane): Sharp {
  const raw = { width: plane.width, height: plane.height, channels: 1 as const };
  const limitInputPixels = false;
  if (plane.bits === 8) return sharp(plane.data as Uint8Array, { raw, limitInputPixels }).toColourspace('b-w');
  if (plane.bits === 16) return sharp(plane.data as Uint16Array, { raw, limitInputPixels }).toColourspace('grey16');
  throw new CodecError(`libvips image codecs carry 8 or 16-bit codes, not ${plane.bits}`);
}

export async function runEncode(codec: string, pipeline: Sharp): Promise<Uint8Array> {
  try {
    const buf = await pipeline.toBuffer();
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    throw new CodecError(`${codec} encode failed: ${(e as Error).message}`, {}, e);
  }
}

/** Decodes to codes, taking the first channel (lossy codecs store grey as YUV/RGB). */
export async function decodeToCodes(
  codec: string,
  bytes: Uint8Array,
  expected: { width: number; height: number; bits: number },
): Promise<CodeArray> {
  let data: Buffer;
  let info: OutputInfo;
  try {
    let pipe = sharp(bytes, { limitInputPixels: false }).extractChannel(0);
    pipe = expected.bits === 16 ? pipe.toColourspace('grey16').raw({ depth: 'ushort' }) : pipe.toColourspace('b-w').raw();
    ({ data, info } = await pipe.toBuffer({ resolveWithObject: true }));
  } catch (e) {
    if (e instanceof MissingDependencyError) throw e;
    throw new CodecError(`${codec} decode failed: ${(e as Error).message}`, {}, e);
  }
  if (info.width !== expected.width || info.height !== expected.height)
    throw new CodecError(`${codec} decoded ${info.width}×${info.height}, expected ${expected.width}×${expected.height}`);
  const n = expected.width * expected.height;
  // the decoded pixels are this call's own: the codes are a view of them, not a copy into fresh memory
  if (expected.bits === 8 && data.length >= n) return new Uint8Array(data.buffer, data.byteOffset, n);
  if (expected.bits === 16 && data.byteOffset % 2 === 0 && data.length >= 2 * n)
    return new Uint16Array(data.buffer, data.byteOffset, n);
  const out = allocCodes(expected.bits, n);
  if (expected.bits === 16) out.set(new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + 2 * n)));
  else out.set(data.subarray(0, n));
  return out;
}
