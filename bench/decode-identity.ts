/**
 * Decoded-output identity (issue 16): a faster decoder must write the same model bytes. Each model is
 * compressed once per mode by a reference build (the `--base` checkout's dist, e.g. main's), then decompressed
 * by that build and by this one (`--jobs 1` and `2`); the sha256 of every output must match the reference's.
 * Models: Silero VAD v4 and v6 and PaddleOCR rec (ONNX), and small seeded safetensors files in float32,
 * float16 and bfloat16 (the streamed writer, every layout kind and a non-finite weight).
 *
 *   npx tsx bench/decode-identity.ts --base /tmp/main-build [--modes default,step] [--models silero-v4,st-f16]
 *
 * Needs `npm run build` here and in the base. Prints a table, writes bench/results/decode-identity.json,
 * exits 1 on any difference.
 */

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeFloats, type FloatDType } from '../src/formats/model.js';
import { writeAll } from '../src/io/atomic.js';
import { MODELS } from './models.js';

/** The golden modes as CLI flags (bench/golden.ts), plus 16-bit codes. */
const MODES: Record<string, string[]> = {
  default: [],
  layer: ['--range', 'layer'],
  step: ['--step', '0.25'],
  'step-auto': ['--step', '0.25', '--codec', 'auto', '--outliers', '4'],
  rotate: ['--rotate', '--step', '0.25'],
  video: ['--media', 'video', '--codec', 'ffv1'],
  audio: ['--media', 'audio', '--codec', 'flac'],
  sliced: ['--slice-weights', '4096'],
  'half-kept': ['--half-kept', '--step', '0.25', '--codec', 'auto'],
  bits16: ['--bits', '16', '--codec', 'png'],
};

const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    modes: { type: 'string' },
    models: { type: 'string' },
    out: { type: 'string', default: 'bench/results/decode-identity.json' },
  },
});
if (!values.base) throw new Error('decode-identity: give --base <checkout with a built dist/>');
const BASE_CLI = resolve(values.base, 'dist/cli/main.js');
const CLI = resolve('dist/cli/main.js');

/** Seeded normal values (xorshift32 + Box–Muller), a few of them large. */
function normals(n: number, seed: number, scale: number): Float32Array {
  let x = seed >>> 0 || 1;
  const u = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++)
    out[i] = scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) * (i % 997 === 0 ? 8 : 1);
  return out;
}

/** A small safetensors file: fc both ways, a conv kernel, a wide matrix, a bias; one NaN (stored exactly). */
function writeSafetensors(file: string, dtypeName: 'F32' | 'F16' | 'BF16'): void {
  const dtype: FloatDType = dtypeName === 'F32' ? 'float32' : dtypeName === 'F16' ? 'float16' : 'bfloat16';
  const tensors: Array<{ name: string; shape: number[] }> = [
    { name: 'encoder.layers.0.self_attn.q_proj.weight', shape: [192, 160] },
    { name: 'encoder.layers.0.mlp.up_proj.weight', shape: [700, 96] },
    { name: 'encoder.layers.0.mlp.down_proj.weight', shape: [96, 700] },
    { name: 'encoder.conv1.weight', shape: [48, 24, 3, 3] },
    { name: 'encoder.layers.0.mlp.up_proj.bias', shape: [700] },
    { name: 'lm_head.weight', shape: [1000, 64] },
  ];
  const header: Record<string, unknown> = {};
  let offset = 0;
  const data: Uint8Array[] = [];
  tensors.forEach((t, k) => {
    const v = normals(
      t.shape.reduce((a, b) => a * b, 1),
      k + 7,
      0.02,
    );
    if (k === 1) v[12345] = NaN;
    const bytes = encodeFloats(v, dtype);
    header[t.name] = { dtype: dtypeName, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    data.push(bytes);
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(file, 'w');
  writeAll(fd, len);
  writeAll(fd, Buffer.from(json));
  for (const d of data) writeAll(fd, d);
  closeSync(fd);
}

function run(argv: string[]): void {
  const r = spawnSync(process.execPath, argv, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`decode-identity: ${argv.join(' ')} exited ${r.status}: ${r.stderr.slice(-1500)}`);
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

const dir = mkdtempSync(join(tmpdir(), 'nnm-decode-identity-'));
const rows: Array<{ model: string; mode: string; base: string; jobs1: string; jobs2: string; same: boolean }> = [];
try {
  const inputs: Array<{ id: string; file: string; ext: string }> = [
    ...MODELS.filter((m) => ['silero-v4', 'silero-v6', 'paddleocr-v4-rec'].includes(m.id)).map((m) => ({
      id: m.id,
      file: m.file,
      ext: '.onnx',
    })),
    ...(['F32', 'F16', 'BF16'] as const).map((d) => {
      const file = join(dir, `st-${d.toLowerCase()}.safetensors`);
      writeSafetensors(file, d);
      return { id: `st-${d.toLowerCase()}`, file, ext: '.safetensors' };
    }),
  ].filter((m) => !values.models || values.models.split(',').includes(m.id));
  const modes = values.modes ? values.modes.split(',') : Object.keys(MODES);
  for (const m of inputs)
    for (const mode of modes) {
      const flags = MODES[mode];
      if (!flags) throw new Error(`decode-identity: unknown mode ${mode}`);
      const archive = join(dir, `${m.id}-${mode}.nnm`);
      run([BASE_CLI, 'compress', m.file, '-o', archive, '--no-check', '--non-finite', 'keep', ...flags, '--force']);
      const outs = ['base', 'jobs1', 'jobs2'].map((k) => join(dir, `${m.id}-${mode}-${k}${m.ext}`));
      run([BASE_CLI, 'decompress', archive, '-o', outs[0], '--jobs', '1', '--force']);
      run([CLI, 'decompress', archive, '-o', outs[1], '--jobs', '1', '--force']);
      run([CLI, 'decompress', archive, '-o', outs[2], '--jobs', '2', '--force']);
      const [base, jobs1, jobs2] = outs.map(sha);
      const same = base === jobs1 && base === jobs2;
      rows.push({ model: m.id, mode, base, jobs1, jobs2, same });
      console.log(
        `${same ? 'same' : 'DIFFERENT'}\t${m.id}/${mode}\t${base.slice(0, 16)} ${jobs1.slice(0, 16)} ${jobs2.slice(0, 16)}`,
      );
      for (const f of [archive, ...outs]) rmSync(f, { force: true });
    }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
mkdirSync(resolve(values.out, '..'), { recursive: true });
writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), base: values.base, rows }, null, 2) + '\n');
const bad = rows.filter((r) => !r.same);
console.log(`${rows.length - bad.length} of ${rows.length} decoded outputs identical to the base build's`);
if (bad.length) process.exit(1);
