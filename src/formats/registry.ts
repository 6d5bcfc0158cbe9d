/**
 * The model formats on Node: each format's metadata (meta.ts) with how to recognise, read and rebuild its
 * files. Opening a model, detecting its format and rebuilding it from a skeleton all dispatch here.
 */

import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { BadModelError, UnsupportedError } from '../errors.js';
import { checkInputFile, fsError } from '../io/files.js';
import type { ModelFormat, ModelFormatModule, ModelReader, StoredTensor } from './model.js';
import { onnxFormat } from './onnx/index.js';
import { safetensorsFormat } from './safetensors/index.js';

export type { ModelFormatModule, StoredTensor } from './model.js';

/** In sniffing order: the stricter signature first (a safetensors header length could start like a protobuf). */
export const MODEL_FORMATS: readonly ModelFormatModule[] = [safetensorsFormat, onnxFormat];

/** Bytes read from the start of a file to recognise its format (`ModelFormatModule.sniff` sees at most these). */
const SNIFF_BYTES = 128;

export function modelFormat(name: ModelFormat): ModelFormatModule {
  const f = MODEL_FORMATS.find((m) => m.name === name);
  if (!f) throw new BadModelError(`unknown model format ${JSON.stringify(name)}`);
  return f;
}

/** A ZIP file's first bytes (every .nnm archive starts with them). */
const ZIP_SIGNATURE = [0x50, 0x4b, 0x03, 0x04];

/** Format from the extension, else from the first bytes. */
export function detectFormat(file: string): ModelFormat {
  const ext = extname(file).toLowerCase();
  const byExtension = MODEL_FORMATS.find((f) => f.extension === ext);
  if (byExtension) return byExtension.name;
  const size = checkInputFile(file, 'model').size;
  if (size === 0) throw new BadModelError('empty file (0 bytes): not a model', { file });
  const head = new Uint8Array(SNIFF_BYTES);
  let n: number;
  try {
    const fd = openSync(file, 'r');
    try {
      n = readSync(fd, head, 0, SNIFF_BYTES, 0);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw fsError('cannot read the model', file, e);
  }
  const sniffed = MODEL_FORMATS.find((f) => f.sniff(head.subarray(0, n)));
  if (sniffed) return sniffed.name;
  const other = otherFormat(head.subarray(0, n), ext, file);
  if (other) throw new UnsupportedError(`${other.what}, which nnmedia does not read: ${other.advice}`, { file });
  if (ZIP_SIGNATURE.every((b, i) => head[i] === b))
    throw new BadModelError('a ZIP file (an nnmedia archive?), not a model: an archive is read by `nnmedia decompress`', {
      file,
    });
  throw new BadModelError(
    `unknown model format (expected ${MODEL_FORMATS.map((f) => f.extension)
      .reverse()
      .join(' or ')})`,
    { file },
  );
}

const ascii = (head: Uint8Array, from: number, to: number): string => String.fromCharCode(...head.subarray(from, to));

const TO_SAFETENSORS =
  'save its state dict with safetensors (safetensors.torch.save_file) or export the model to ONNX (torch.onnx.export)';

/**
 * Model files of other frameworks, recognised by their first bytes (and a checkpoint's name), with the way from
 * each to a format nnmedia reads: a user with a PyTorch checkpoint is told how to get there, not that the file is
 * broken.
 */
function otherFormat(head: Uint8Array, ext: string, file: string): { what: string; advice: string } | undefined {
  // torch.save: a ZIP whose first entry (its name's length at byte 26) is <name>/data.pkl (or version …), or any
  // ZIP named like a checkpoint; before PyTorch 1.6 a pickle
  if (
    ZIP_SIGNATURE.every((b, i) => head[i] === b) &&
    (['.pt', '.pth', '.ckpt'].includes(ext) ||
      /(^|\/)(data\.pkl|\.format_version|byteorder|version)$/.test(ascii(head, 30, 30 + (head[26] | (head[27] << 8)))))
  )
    return { what: 'a PyTorch checkpoint (torch.save)', advice: TO_SAFETENSORS };
  if (head[0] === 0x80 && head[1] >= 2 && head[1] <= 5)
    return { what: 'a Python pickle (a PyTorch checkpoint?)', advice: TO_SAFETENSORS };
  if (ascii(head, 0, 4) === 'GGUF')
    return {
      what: 'a GGUF file (llama.cpp)',
      advice: 'give nnmedia the float model it was converted from (safetensors, as in the model’s repository)',
    };
  // a sharded checkpoint (Hugging Face: model-00001-of-00004.safetensors … and this index naming each tensor's shard)
  if (ext === '.json' && (/\.safetensors\.index\.json$/i.test(file) || /"weight_map"\s*:/.test(new TextDecoder().decode(head))))
    return {
      what: 'the index of a sharded safetensors checkpoint',
      advice:
        'compress each shard it names, one archive a shard (for f in model-*-of-*.safetensors; do nnmedia compress "$f" -o "${f%.safetensors}.nnm"; done), and keep the index beside the decompressed shards',
    };
  if (ascii(head, 4, 8) === 'TFL3')
    return { what: 'a TensorFlow Lite model', advice: 'convert it to ONNX (python -m tf2onnx.convert --tflite …)' };
  if (ascii(head, 0, 8) === '\x89HDF\r\n\x1a\n')
    return {
      what: 'an HDF5 file (a Keras .h5 model?)',
      advice: 'convert it to ONNX (tf2onnx) or save its weights as safetensors',
    };
  return undefined;
}

/** Opens a model file: a missing file, a directory or an unreadable one is an `IoError` naming it. */
export function openModel(file: string): ModelReader {
  const size = checkInputFile(file, 'model').size;
  if (size === 0) throw new BadModelError('empty file (0 bytes): not a model', { file });
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

/**
 * The model as one file a runtime can load from memory: the file itself, or, where it has external data (ONNX),
 * its skeleton with nothing stripped, which places that data inline (onnxruntime looks for external files
 * relative to the working directory when a model comes from memory, not beside the model).
 */
export function selfContainedModel(file: string, reader: ModelReader): Uint8Array {
  return reader.externalFiles?.length ? reader.skeleton(new Set()) : readFileSync(file);
}

/** Bytes of a model: its file and the external data files it refers to. */
export function modelBytes(file: string, reader: ModelReader): number {
  return (reader.externalFiles ?? []).reduce((s, f) => s + statSync(f).size, statSync(file).size);
}
