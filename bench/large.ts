/**
 * Scale benchmark: a synthetic safetensors model of ≥ 8 GB (bench/synth.ts)
 * compressed and decompressed with --jobs 1 and --jobs 2, each step in its own
 * process so its peak RSS is its own; zstd-3 of the same tensors in the same
 * run as the baseline; a few tensors compared with the original afterwards.
 *
 *   npm run bench:large -- [--gb 8] [--dir /tmp/nnmedia-large] [--jobs 1,2] [--keep]
 *                          [--vocab 128256] [--slice-weights default,4294967296] [--name large]
 *
 * --vocab puts a token embedding of that many rows in front (one tensor of vocab × 3072 weights);
 * --slice-weights runs every job count with each slice size ("default": the built-in one; a size
 * above the largest tensor: every tensor whole). Writes bench/results/<name>.json and <name>.md.
 */

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { SafetensorsReader } from '../src/formats/safetensors/reader.js';
import { errorStats } from '../src/eval/metrics.js';
import { ROOT } from './models.js';
import { writeSynthetic } from './synth.js';

const run = promisify(execFile);
const zstdNative = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress: (b: Buffer, level: number) => Promise<Buffer>;
};

const { values: flag } = parseArgs({
  options: {
    gb: { type: 'string', default: '8' },
    dir: { type: 'string', default: join(tmpdir(), 'nnmedia-large') },
    jobs: { type: 'string', default: '1,2' },
    keep: { type: 'boolean', default: false },
    vocab: { type: 'string', default: '0' },
    'slice-weights': { type: 'string', default: 'default' },
    name: { type: 'string', default: 'large' },
  },
});
const VOCAB = Number(flag.vocab);
const SLICES = flag['slice-weights'].split(',').map((s) => (s === 'default' ? undefined : Number(s)));
const GB = Number(flag.gb);
const DIR = flag.dir;
const JOBS = flag.jobs.split(',').map(Number);
const OUT = join(ROOT, 'bench/results');

/** One compress or decompress in a child process of its own; reports its wall time and peak RSS. */
async function step(kind: 'compress' | 'decompress', input: string, output: string, jobs: number, sliceWeights?: number) {
  const script = `
    const { ${kind === 'compress' ? 'compressModel' : 'decompressArchive'} : f } = await import(${JSON.stringify(join(ROOT, 'dist/index.js'))});
    const t0 = performance.now();
    const r = await f(${JSON.stringify(input)}, ${JSON.stringify(output)}, { jobs: ${jobs}, force: true${sliceWeights ? `, sliceWeights: ${sliceWeights}` : ''} });
    console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000, maxRss: process.resourceUsage().maxRSS * 1024,
      bitsPerWeight: r.bitsPerWeight, archiveBytes: r.archiveBytes }));`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { maxBuffer: 1 << 24 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as {
    seconds: number;
    maxRss: number;
    bitsPerWeight?: number;
    archiveBytes?: number;
  };
}

async function main(): Promise<void> {
  mkdirSync(DIR, { recursive: true });
  const model = join(DIR, `synthetic-${GB}gb${VOCAB ? `-vocab${VOCAB}` : ''}.safetensors`);
  if (!existsSync(model)) {
    console.log(`writing ${model} …`);
    const t0 = performance.now();
    writeSynthetic(model, GB, 'F32', 1, VOCAB);
    console.log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  const modelBytes = statSync(model).size;
  const reader = new SafetensorsReader(model);
  const weights = reader.tensors.filter((t) => t.shape.length >= 2).reduce((s, t) => s + t.shape[0] * t.shape[1], 0);
  console.log(
    `${model}: ${(modelBytes / 1e9).toFixed(2)} GB, ${reader.tensors.length} tensors, ${(weights / 1e9).toFixed(2)} G weights`,
  );

  // baseline: zstd-3 of every tensor's bytes, one at a time
  const t0 = performance.now();
  let zstdBytes = 0;
  for (const t of reader.tensors) {
    const v = reader.read(t.key);
    zstdBytes += (await zstdNative.compress(Buffer.from(v.buffer, v.byteOffset, v.byteLength), 3)).length;
  }
  const zstdSeconds = (performance.now() - t0) / 1000;
  console.log(`zstd-3: ${(zstdBytes / 1e9).toFixed(2)} GB in ${zstdSeconds.toFixed(0)} s`);

  const rows: Array<Record<string, number | string>> = [];
  const largest = Math.max(...reader.tensors.map((t) => t.shape.reduce((a, b) => a * b, 1)));
  for (const sliceWeights of SLICES)
    for (const jobs of JOBS) {
      const tag = `j${jobs}${sliceWeights ? `.s${sliceWeights}` : ''}`;
      const archive = join(DIR, `synthetic.${tag}.nnm`);
      const back = join(DIR, `synthetic.${tag}.safetensors`);
      const c = await step('compress', model, archive, jobs, sliceWeights);
      const what = `--jobs ${jobs}${sliceWeights ? ` --slice-weights ${sliceWeights}` : ''}`;
      console.log(`compress ${what}: ${c.seconds.toFixed(0)} s, peak RSS ${(c.maxRss / 2 ** 20).toFixed(0)} MiB`);
      const d = await step('decompress', archive, back, jobs);
      console.log(`decompress ${what}: ${d.seconds.toFixed(0)} s, peak RSS ${(d.maxRss / 2 ** 20).toFixed(0)} MiB`);
      // a few tensors compared with the original
      const got = new SafetensorsReader(back);
      const sample = reader.tensors.filter((t) => t.shape.length >= 2).filter((_, i, a) => i % Math.ceil(a.length / 4) === 0);
      const snrs = sample.map((t) => errorStats(reader.read(t.key), got.read(t.key)).snrDb);
      got.close();
      rows.push({
        jobs,
        slices: sliceWeights === undefined ? 'default' : sliceWeights >= largest ? 'none (whole tensors)' : String(sliceWeights),
        compressSeconds: c.seconds,
        compressMBps: modelBytes / 1e6 / c.seconds,
        compressPeakRssMiB: c.maxRss / 2 ** 20,
        decompressSeconds: d.seconds,
        decompressMBps: modelBytes / 1e6 / d.seconds,
        decompressPeakRssMiB: d.maxRss / 2 ** 20,
        archiveBytes: statSync(archive).size,
        bitsPerWeight: c.bitsPerWeight ?? 0,
        sameSizeBack: statSync(back).size === modelBytes ? 'yes' : 'no',
        minSnrDb: Math.min(...snrs),
      });
      if (!flag.keep) rmSync(back);
    }
  reader.close();
  const base = rows[0];
  const result = {
    date: new Date().toISOString(),
    model: {
      file: model,
      bytes: modelBytes,
      tensors: reader.tensors.length,
      weights,
      dtype: 'F32',
      shapes: 'Llama-3.2-3B blocks',
    },
    baseline: { zstd3Bytes: zstdBytes, zstd3Seconds: zstdSeconds, zstd3MBps: modelBytes / 1e6 / zstdSeconds },
    runs: rows,
    largestTensorWeights: largest,
    speedup: Object.fromEntries(
      rows.map((r) => [
        `jobs${r.jobs}, slices ${r.slices}`,
        {
          compress: Number(base.compressSeconds) / Number(r.compressSeconds),
          decompress: Number(base.decompressSeconds) / Number(r.decompressSeconds),
        },
      ]),
    ),
  };
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, `${flag.name}.json`), JSON.stringify(result, null, 2) + '\n');
  const f = (x: number | string, d = 1): string => (typeof x === 'number' ? x.toFixed(d) : x);
  const md = [
    `Synthetic model: ${(modelBytes / 1e9).toFixed(2)} GB safetensors (F32, ${reader.tensors.length} tensors, ${(weights / 1e9).toFixed(2)} G weights of rank 2, the largest tensor ${(largest / 1e6).toFixed(0)} M weights), default options (PNG, 8-bit per-channel).`,
    `zstd-3 of the same tensors: ${(zstdBytes / 1e9).toFixed(2)} GB (${((8 * zstdBytes) / weights).toFixed(2)} bits/weight) at ${f(result.baseline.zstd3MBps, 0)} MB/s.`,
    '',
    '| --jobs | slices | compress s | compress MB/s | compress peak RSS MiB | decompress s | decompress MB/s | decompress peak RSS MiB | archive GB | bits/weight | speed-up vs the first row (c/d) | min SNR dB (4 tensors) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.jobs} | ${r.slices} | ${f(r.compressSeconds, 0)} | ${f(r.compressMBps, 0)} | ${f(r.compressPeakRssMiB, 0)} | ${f(r.decompressSeconds, 0)} | ${f(r.decompressMBps, 0)} | ${f(r.decompressPeakRssMiB, 0)} | ${(Number(r.archiveBytes) / 1e9).toFixed(2)} | ${f(r.bitsPerWeight, 3)} | ${(Number(base.compressSeconds) / Number(r.compressSeconds)).toFixed(2)}× / ${(Number(base.decompressSeconds) / Number(r.decompressSeconds)).toFixed(2)}× | ${f(r.minSnrDb, 1)} |`,
    ),
  ].join('\n');
  writeFileSync(join(OUT, `${flag.name}.md`), md + '\n');
  console.log('\n' + md);
}

await main();
