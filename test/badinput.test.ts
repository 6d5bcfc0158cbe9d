import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BadModelError,
  CorruptArchiveError,
  IoError,
  NonFiniteWeightError,
  OptionError,
  compressModel,
  decompressArchive,
  openModel,
} from '../src/index.js';
import { encodeFloats } from '../src/formats/model.js';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { listDir, tempDir } from './helpers/tmp.js';

const dir = tempDir();
const onnxFile = join(dir, 'm.onnx');
const stFile = join(dir, 'm.safetensors');
const archive = join(dir, 'good.nnm');
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

beforeAll(async () => {
  writeFileSync(onnxFile, mixedModel().bytes);
  writeSafetensorsFixture(stFile);
  await compressModel(onnxFile, archive, {});
});

/** Runs a failing call and checks: the error, the input untouched, no output and no temp file left. */
async function expectCleanFailure(
  input: string,
  output: string,
  call: () => Promise<unknown>,
  error: new (...a: never[]) => Error,
  message: RegExp,
): Promise<void> {
  const before = sha(input);
  const files = listDir(dir);
  await expect(call()).rejects.toThrow(error);
  await expect(call()).rejects.toThrow(message);
  expect(sha(input)).toBe(before);
  expect(existsSync(output) && !files.includes(output.split('/').pop()!)).toBe(false);
  expect(listDir(dir)).toEqual(files);
}

describe('bad model files', () => {
  it('truncated ONNX', async () => {
    const f = join(dir, 'trunc.onnx');
    const b = readFileSync(onnxFile);
    writeFileSync(f, b.subarray(0, Math.floor(b.length * 0.6)));
    const out = join(dir, 'trunc.nnm');
    await expectCleanFailure(f, out, () => compressModel(f, out), BadModelError, /file .*trunc.onnx.*(truncated|runs past)/);
  });
  it('bit-flipped ONNX structure (a length byte)', async () => {
    const f = join(dir, 'flip.onnx');
    const b = Buffer.from(readFileSync(onnxFile));
    // ModelProto: ir_version (2 bytes), producer_name (field 2) …; flip the top bit of the graph field's first length byte
    const graphTag = b.indexOf(0x3a); // field 7, wire type 2
    b[graphTag + 1] ^= 0x40;
    writeFileSync(f, b);
    const out = join(dir, 'flip.nnm');
    await expectCleanFailure(f, out, () => compressModel(f, out), BadModelError, /flip.onnx/);
  });
  it('truncated safetensors names the tensor whose data is cut', async () => {
    const f = join(dir, 'trunc.safetensors');
    const b = readFileSync(stFile);
    writeFileSync(f, b.subarray(0, b.length - 100));
    await expect(compressModel(f, join(dir, 'x.nnm'))).rejects.toThrow(
      /tensor .*: data ends at byte \d+, past the end of the file/,
    );
  });
  it("an empty safetensors tensor at the next tensor's start overlaps nothing, and comes back", async () => {
    // as PyTorch writers store a 0-element tensor: [x, x], where x is where the next tensor begins; the header
    // lists the non-empty one first, so a sort by start alone put it before the empty one
    const f = join(dir, 'empty.safetensors');
    const w = encodeFloats(
      new Float32Array(64).map((_, i) => Math.sin(i)),
      'float32',
    );
    const n = encodeFloats(new Float32Array(16).fill(1), 'float32');
    const header = {
      'model.w': { dtype: 'F32', shape: [8, 8], data_offsets: [0, 256] },
      'model.norm': { dtype: 'F32', shape: [16], data_offsets: [256, 320] },
      'model.empty': { dtype: 'F32', shape: [0, 16], data_offsets: [256, 256] },
    };
    let json = JSON.stringify(header);
    while ((8 + json.length) % 8) json += ' ';
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(f, Buffer.concat([len, Buffer.from(json), w, n]));
    const out = join(dir, 'empty.nnm');
    await compressModel(f, out);
    await decompressArchive(out, join(dir, 'empty.out.safetensors'));
    const back = openModel(join(dir, 'empty.out.safetensors'));
    expect(back.tensors.find((t) => t.key === 'model.empty')?.shape).toEqual([0, 16]);
    expect(back.read('model.empty').length).toBe(0);
    expect(Array.from(back.read('model.norm'))).toEqual(Array.from(new Float32Array(16).fill(1)));
    back.close();
  });
  it('hostile safetensors header length', async () => {
    const f = join(dir, 'huge.safetensors');
    const b = Buffer.from(readFileSync(stFile));
    b.writeBigUInt64LE(2n ** 40n, 0);
    writeFileSync(f, b);
    await expect(compressModel(f, join(dir, 'x.nnm'))).rejects.toThrow(/header of \d+ bytes exceeds/);
  });
  it('NaN and Inf weights: a clear error by default, exact side storage on request', async () => {
    const f = join(dir, 'nan.safetensors');
    const w = new Float32Array(512).map((_, i) => Math.sin(i));
    w[7] = NaN;
    w[300] = -Infinity;
    const data = encodeFloats(w, 'float32');
    const json = JSON.stringify({ 'fc.weight': { dtype: 'F32', shape: [16, 32], data_offsets: [0, data.length] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(f, Buffer.concat([len, Buffer.from(json), data]));
    const out = join(dir, 'nan.nnm');
    await expectCleanFailure(
      f,
      out,
      () => compressModel(f, out),
      NonFiniteWeightError,
      /file .*nan.safetensors, tensor fc.weight: weight 7 is NaN/,
    );
    await compressModel(f, out, { nonFinite: 'keep' });
    await decompressArchive(out, join(dir, 'nan.out.safetensors'));
    const back = openModel(join(dir, 'nan.out.safetensors')).read('fc.weight');
    expect(back[7]).toBeNaN();
    expect(back[300]).toBe(-Infinity);
    expect(Math.abs(back[8] - w[8])).toBeLessThan(0.01);
  });
});

describe('bad requests', () => {
  it('unknown codec', async () => {
    const out = join(dir, 'u.nnm');
    await expectCleanFailure(
      onnxFile,
      out,
      () => compressModel(onnxFile, out, { codec: 'bmp' }),
      OptionError,
      /for codec but received "bmp"/,
    );
  });
  it('16-bit codes into an 8-bit-only codec', async () => {
    const out = join(dir, 'w.nnm');
    await expectCleanFailure(
      onnxFile,
      out,
      () => compressModel(onnxFile, out, { codec: 'webp', bits: 16 }),
      OptionError,
      /bits 16 does not fit codec webp: it carries 8-bit codes/,
    );
  });
  it('output path equal to the input', async () => {
    await expectCleanFailure(onnxFile, onnxFile, () => compressModel(onnxFile, onnxFile), IoError, /output path is the input/);
    await expect(decompressArchive(archive, archive)).rejects.toThrow(IoError);
  });
});

describe('corrupt archives are detected, never decoded into wrong weights', () => {
  it.each([
    ['png', 'IDAT'],
    ['zstd', '\x28\xb5\x2f\xfd'],
  ] as const)('a flipped byte inside a media entry (%s)', async (codec, marker) => {
    const good = join(dir, `good-${codec}.nnm`);
    await compressModel(onnxFile, good, { codec });
    const f = join(dir, `flipped-${codec}.nnm`);
    const b = Buffer.from(readFileSync(good));
    const at = b.indexOf(Buffer.from(marker, 'latin1'));
    expect(at).toBeGreaterThan(0);
    b[at + 20] ^= 0x01; // inside the first entry's coded data
    writeFileSync(f, b);
    const out = join(dir, `flipped-${codec}.onnx`);
    await expectCleanFailure(f, out, () => decompressArchive(f, out), CorruptArchiveError, /(CRC-32 mismatch|sha256 mismatch)/);
  });
  it('a truncated archive', async () => {
    const f = join(dir, 'cut.nnm');
    const b = readFileSync(archive);
    writeFileSync(f, b.subarray(0, b.length - 300));
    const out = join(dir, 'cut.onnx');
    await expectCleanFailure(
      f,
      out,
      () => decompressArchive(f, out),
      CorruptArchiveError,
      /(truncated|no end-of-central-directory|damaged|outside)/,
    );
  });
  it('not an archive at all', async () => {
    await expect(decompressArchive(onnxFile, join(dir, 'n.onnx'))).rejects.toThrow(CorruptArchiveError);
  });
});
