/**
 * A reader of one tensor's values from a byte range of a file (ModelReader.dataRange): what a worker thread
 * encodes or measures a unit from, instead of opening the whole model. An ONNX model is one protobuf read
 * whole; each worker used to read it again (three copies of a 1 GB model with `--jobs 2`, one more per
 * worker). The values are the same: the same bytes through the same decodeFloats.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BadModelError, IoError } from '../errors.js';
import { fsReason } from '../io/files.js';
import {
  BYTES_PER_ELEMENT,
  LITTLE_ENDIAN,
  decodeFloats,
  rowsRange,
  type DataRange,
  type ModelFormat,
  type ModelReader,
  type TensorEntry,
  type TensorStorage,
} from './model.js';

export class RangeReader implements ModelReader {
  readonly tensors: readonly TensorEntry[] = [];

  constructor(
    readonly format: ModelFormat,
    /** The model file (named in errors). */
    readonly file: string,
    private readonly key: string,
    private readonly range: DataRange,
  ) {}

  read(key: string): Float32Array {
    return this.readRows(key, 0, this.range.shape[0] ?? 1);
  }

  readRows(key: string, row: number, rows: number): Float32Array {
    if (key !== this.key) throw new Error(`internal: a range reader of ${this.key} asked for ${key}`);
    const { dtype, shape, start: begin, end: stop } = this.range;
    const [first, last] = rowsRange(shape, row, rows, { file: this.file, tensor: key });
    const width = BYTES_PER_ELEMENT[dtype];
    const start = begin + first * width;
    // float32 on a little-endian machine: read straight into the values' own memory (decodeFloats would copy
    // them into a second array of the same size: a 16M-weight slice is 64 MB of fresh pages more, and a copy)
    const direct = LITTLE_ENDIAN && dtype === 'float32' ? new Float32Array(last - first) : undefined;
    const bytes = direct ? new Uint8Array(direct.buffer) : new Uint8Array((last - first) * width);
    if (start + bytes.length > stop) throw new Error(`internal: rows of ${key} past its data`);
    const ctx = { file: this.range.file, tensor: key };
    let fd: number | undefined;
    try {
      try {
        fd = openSync(this.range.file, 'r');
      } catch (e) {
        throw new IoError(`cannot read tensor ${key}: ${fsReason(e)}`, ctx, e);
      }
      // the file the model was opened from, not one put in its place since (its bytes would be read at the old offsets)
      const now = fstatSync(fd);
      if (now.size !== this.range.fileBytes || now.mtimeMs !== this.range.mtimeMs)
        throw new BadModelError('the file changed while the model was being compressed', ctx);
      let done = 0;
      while (done < bytes.length) {
        const n = readSync(fd, bytes, done, bytes.length - done, start + done);
        if (n === 0) throw new BadModelError(`tensor data ends past the end of the file (${now.size} bytes)`, ctx);
        done += n;
      }
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    return direct ?? decodeFloats(bytes, dtype);
  }

  skeleton(): Uint8Array {
    throw new Error('internal: a range reader has no skeleton');
  }

  skeletonParts(): Iterable<Uint8Array> {
    throw new Error('internal: a range reader has no skeleton');
  }

  storage(): TensorStorage {
    throw new Error('internal: a range reader has no storage records');
  }

  close(): void {}
}
