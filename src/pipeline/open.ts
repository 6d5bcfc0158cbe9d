import { closeSync, openSync, readSync } from 'node:fs';
import { extname } from 'node:path';
import { BadModelError } from '../errors.js';
import type { ModelFormat, ModelReader } from '../formats/model.js';
import { openOnnx } from '../formats/onnx/reader.js';
import { SafetensorsReader } from '../formats/safetensors/reader.js';

/** Format from the extension, else from the first bytes (safetensors: u64 length then '{'). */
export function detectFormat(file: string): ModelFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.onnx') return 'onnx';
  if (ext === '.safetensors') return 'safetensors';
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new BadModelError(`cannot read: ${(e as Error).message}`, { file });
  }
  const head = Buffer.alloc(9);
  const n = readSync(fd, head, 0, 9, 0);
  closeSync(fd);
  if (n === 9 && head[8] === 0x7b && head.readBigUInt64LE(0) < 100_000_000n) return 'safetensors';
  if (n >= 2 && head[0] === 0x08) return 'onnx'; // ModelProto starts with ir_version (field 1, varint)
  throw new BadModelError('unknown model format (expected .onnx or .safetensors)', { file });
}

export function openModel(file: string): ModelReader & { close?: () => void } {
  return detectFormat(file) === 'onnx' ? openOnnx(file) : new SafetensorsReader(file);
}
