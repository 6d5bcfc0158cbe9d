/**
 * The model formats on Node: each format's metadata (meta.ts) with how to recognise, read and rebuild its
 * files. Opening a model, detecting its format and rebuilding it from a skeleton all dispatch here.
 */

import { closeSync, openSync, readSync } from 'node:fs';
import { extname } from 'node:path';
import { BadModelError } from '../errors.js';
import type { ModelFormat, ModelFormatModule, ModelReader, StoredTensor } from './model.js';
import { onnxFormat } from './onnx/index.js';
import { safetensorsFormat } from './safetensors/index.js';

export type { ModelFormatModule, StoredTensor } from './model.js';

/** In sniffing order: the stricter signature first (a safetensors header length could start like a protobuf). */
export const MODEL_FORMATS: readonly ModelFormatModule[] = [safetensorsFormat, onnxFormat];

/** Bytes read from the start of a file to recognise its format (`ModelFormatModule.sniff` sees at most these). */
const SNIFF_BYTES = 9;

export function modelFormat(name: ModelFormat): ModelFormatModule {
  const f = MODEL_FORMATS.find((m) => m.name === name);
  if (!f) throw new BadModelError(`unknown model format ${JSON.stringify(name)}`);
  return f;
}

/** Format from the extension, else from the first bytes. */
export function detectFormat(file: string): ModelFormat {
  const ext = extname(file).toLowerCase();
  const byExtension = MODEL_FORMATS.find((f) => f.extension === ext);
  if (byExtension) return byExtension.name;
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new BadModelError(`cannot read: ${(e as Error).message}`, { file });
  }
  const head = new Uint8Array(SNIFF_BYTES);
  const n = readSync(fd, head, 0, SNIFF_BYTES, 0);
  closeSync(fd);
  const sniffed = MODEL_FORMATS.find((f) => f.sniff(head.subarray(0, n)));
  if (sniffed) return sniffed.name;
  throw new BadModelError(
    `unknown model format (expected ${MODEL_FORMATS.map((f) => f.extension)
      .reverse()
      .join(' or ')})`,
    { file },
  );
}

export function openModel(file: string): ModelReader {
  return modelFormat(detectFormat(file)).open(file);
}

/** The model file from its skeleton and restored tensors: one dispatch for decompression and for substitution. */
export function rebuildFromSkeleton(
  format: ModelFormat,
  skeleton: Uint8Array,
  tensors: readonly StoredTensor[],
  file: string,
): Uint8Array {
  return modelFormat(format).rebuild(skeleton, tensors, file);
}
