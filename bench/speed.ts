/**
 * Speed and memory of nnmedia against the zstd CLI on the same file, in the same run (issue 16).
 * Every command runs in a child process under `/usr/bin/time -v`, which reports its wall time and
 * maximum resident set size. Rows: zstd -3 -T1 / zstd -d -T1, nnmedia compress/decompress at the
 * default with --jobs 1 and 2, the step grid (`--codec auto --step 0.25 --jobs 2`) and its decompress,
 * and `--target-snr 30` / `--target-bpw 4` (safetensors only); with `--base`, the base build's compress before each
 * compress row and whether the archives are the same bytes. MB/s counts float32 bytes (weights × 4).
 *
 *   tsx bench/speed.ts [--gb 1] [--models synth,isnet,synth-onnx] [--out bench/results/speed]
 *                      [--base <checkout>] [--skip step,snr,gate]
 *
 * Needs `npm run build` first (runs dist/cli/main.js). `--base` adds a row for the other checkout's build
 * (its dist/, e.g. main's) decompressing the same archive right before each decompress row: before and
 * after in the same machine state. `synth-onnx` is the synthetic model as one ONNX file (at most 2 GB), with a row
 * for the default with the quality gate on (`gate`). `--skip` leaves out the slow rate-mode rows (`step`, `snr`,
 * `bpw`) and the gate row. Besides
 * wall seconds, each row reports the CPU seconds (user + system) /usr/bin/time measured: on a shared machine
 * wall time follows the load, CPU time much less. Compress rows pass `--no-check`: the quality gate runs
 * the model (ISNet: onnxruntime at 1024×1024, GBs of activations), which is not the codec pipeline's speed.
 */

import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { MODELS } from './models.js';

interface Row {
  model: string;
  label: string;
  command: string;
  seconds: number;
  cpuSeconds: number;
  mbps: number;
  xZstd: number;
  peakRssMB: number;
  outBytes: number;
  /** Compress rows with --base: whether the archive is byte-identical to the base build's. */
  sameAsBase?: boolean;
}

const { values } = parseArgs({
  options: {
    gb: { type: 'string', default: '1' },
    models: { type: 'string', default: 'synth,isnet' },
    out: { type: 'string', default: 'bench/results/speed' },
    base: { type: 'string' },
    skip: { type: 'string', default: '' },
  },
});

const CLI = 'dist/cli/main.js';
const BASE_CLI = values.base ? join(values.base, 'dist/cli/main.js') : undefined;
const skip = new Set(values.skip.split(',').filter(Boolean));

/** Runs argv under /usr/bin/time -v; returns seconds and max RSS in MB. Throws on a non-zero exit. */
function timed(argv: string[]): { seconds: number; cpuSeconds: number; rssMB: number } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-v', ...argv], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`speed: ${argv.join(' ')} exited ${r.status}: ${r.stderr.slice(-2000)}`);
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`speed: no max RSS in the output of /usr/bin/time for ${argv.join(' ')}`);
  const user = /User time \(seconds\): ([\d.]+)/.exec(r.stderr);
  const system = /System time \(seconds\): ([\d.]+)/.exec(r.stderr);
  return { seconds, cpuSeconds: Number(user?.[1] ?? NaN) + Number(system?.[1] ?? NaN), rssMB: Number(m[1]) / 1024 };
}

/** Count of float weights in a safetensors file (header dtypes F32/F16/BF16); reads the header alone. */
function weightsOf(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const json = Buffer.alloc(Number(len.readBigUInt64LE(0)));
    readSync(fd, json, 0, json.length, 8);
    const header = JSON.parse(json.toString('utf8')) as Record<string, { dtype?: string; shape?: number[] }>;
    let w = 0;
    for (const [k, v] of Object.entries(header)) {
      if (k === '__metadata__' || !v.shape) continue;
      w += v.shape.reduce((a, b) => a * b, 1);
    }
    return w;
  } finally {
    closeSync(fd);
  }
}

function runModel(id: string, model: string, float32Bytes: number, dir: string, rows: Row[]): void {
  const mb = float32Bytes / 1e6;
  const push = (label: string, argv: string[], base: number | undefined, out: string): number => {
    const { seconds, cpuSeconds, rssMB } = timed(argv);
    const mbps = mb / seconds;
    rows.push({
      model: id,
      label,
      command: argv.join(' '),
      seconds,
      cpuSeconds,
      mbps,
      xZstd: base ? mbps / base : 1,
      peakRssMB: rssMB,
      outBytes: existsSync(out) ? statSync(out).size : 0,
    });
    console.log(
      `${id}\t${label}\t${seconds.toFixed(2)} s\t${cpuSeconds.toFixed(2)} s CPU\t${mbps.toFixed(1)} MB/s\t${rssMB.toFixed(0)} MB RSS`,
    );
    return mbps;
  };
  const zst = join(dir, `${id}.zst`);
  const zc = push('zstd -3 -T1 compress', ['zstd', '-3', '-T1', '-q', '-f', model, '-o', zst], undefined, zst);
  const zd = push(
    'zstd -d -T1 decompress',
    ['zstd', '-d', '-T1', '-q', '-f', zst, '-o', join(dir, `${id}.unzst`)],
    undefined,
    zst,
  );
  rmSync(join(dir, `${id}.unzst`), { force: true });
  const node = process.execPath;
  // a compress row: with --base, the base build first (same machine state), then this one, and whether the two
  // archives are the same bytes (speed work must not change them; a change that does says so here, and a mode
  // that became slower shows beside its base row: the default and --step rows missed a 5–27× slowdown for a
  // session when only the rate rows had a base, docs/speed.md)
  const compressRow = (label: string, out: string, args: string[]): void => {
    const argvOf = (cli: string, to: string): string[] => [
      node,
      cli,
      'compress',
      model,
      '--no-check',
      '-o',
      to,
      ...args,
      '--force',
    ];
    const b = out.replace(/\.nnm$/, '-base.nnm');
    if (BASE_CLI) push(`base: ${label}`, argvOf(BASE_CLI, b), zc, b);
    push(label, argvOf(CLI, out), zc, out);
    if (BASE_CLI) {
      const same = readFileSync(b).equals(readFileSync(out));
      console.log(`${id}\t${label}: archive ${same ? 'the same bytes as' : 'DIFFERENT from'} the base build's`);
      rows[rows.length - 1].sameAsBase = same;
      rmSync(b, { force: true });
    }
  };
  for (const jobs of [1, 2])
    compressRow(`nnmedia compress default --jobs ${jobs}`, join(dir, `${id}-default.nnm`), ['--jobs', String(jobs)]);
  /** The base build decompressing the same archive, right before this build does (same machine state). */
  const baseRow = (label: string, archive: string, jobs: number, out: string): void => {
    if (!BASE_CLI) return;
    push(`base: ${label}`, [node, BASE_CLI, 'decompress', archive, '-o', out, '--jobs', String(jobs), '--force'], zd, out);
    rmSync(out, { force: true });
  };
  for (const jobs of [1, 2]) {
    const o = join(dir, `${id}-default.out`);
    baseRow(`nnmedia decompress default --jobs ${jobs}`, join(dir, `${id}-default.nnm`), jobs, o);
    push(
      `nnmedia decompress default --jobs ${jobs}`,
      [node, CLI, 'decompress', join(dir, `${id}-default.nnm`), '-o', o, '--jobs', String(jobs), '--force'],
      zd,
      o,
    );
    rmSync(o, { force: true });
  }
  if (!skip.has('step')) {
    const s = join(dir, `${id}-step.nnm`);
    compressRow('nnmedia compress --codec auto --step 0.25 --jobs 2', s, ['--codec', 'auto', '--step', '0.25', '--jobs', '2']);
    const so = join(dir, `${id}-step.out`);
    baseRow('nnmedia decompress of the step archive --jobs 2', s, 2, so);
    push(
      'nnmedia decompress of the step archive --jobs 2',
      [node, CLI, 'decompress', s, '-o', so, '--jobs', '2', '--force'],
      zd,
      so,
    );
    rmSync(so, { force: true });
  }
  if (id === 'synth-onnx' && !skip.has('gate')) {
    // the default as a user runs it on a model that can run: the quality gate decompresses and runs both models
    const g = join(dir, `${id}-gate.nnm`);
    push(
      'nnmedia compress default, quality gate on, --jobs 2',
      [node, CLI, 'compress', model, '-o', g, '--jobs', '2', '--force'],
      zc,
      g,
    );
  }
  if (!model.endsWith('.safetensors')) return;
  // rate control without a model to run
  const rateRow = (tag: string, label: string, args: string[]): void => {
    if (!skip.has(tag)) compressRow(label, join(dir, `${id}-${tag}.nnm`), args);
  };
  rateRow('snr', 'nnmedia compress --target-snr 30 --jobs 2', ['--target-snr', '30', '--jobs', '2']);
  rateRow('bpw', 'nnmedia compress --target-bpw 4 --jobs 2', ['--target-bpw', '4', '--jobs', '2']);
}

/** Speed against zstd by CPU seconds: zstd's CPU time over this row's (compress rows against zstd -3, the rest -d). */
function cpuRatio(r: Row, all: Row[] = rowsOut): number {
  const zstdRow = all.find(
    (z) =>
      z.model === r.model &&
      z.label.startsWith(r.label.includes('compress') && !r.label.includes('decompress') ? 'zstd -3' : 'zstd -d'),
  );
  return zstdRow ? zstdRow.cpuSeconds / r.cpuSeconds : NaN;
}

const rowsOut: Row[] = [];

function main(): void {
  const dir = mkdtempSync(join(tmpdir(), 'nnm-speed-'));
  const rows = rowsOut;
  const load = loadavg();
  try {
    for (const id of values.models.split(',')) {
      if (id === 'synth') {
        const file = join(dir, 'synth.safetensors');
        const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/synth.ts', file, '--gb', values.gb], {
          stdio: 'inherit',
        });
        if (r.status !== 0) throw new Error('speed: bench/synth.ts failed');
        runModel('synth', file, weightsOf(file) * 4, dir, rows);
      } else if (id === 'synth-onnx') {
        // the same blocks as one single-file ONNX model (float32; ONNX bounds a file to 2 GiB)
        const file = join(dir, 'synth.onnx');
        const gb = String(Math.min(Number(values.gb), 2));
        const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/synth.ts', file, '--gb', gb], { stdio: 'inherit' });
        if (r.status !== 0) throw new Error('speed: bench/synth.ts failed');
        runModel('synth-onnx', file, statSync(file).size, dir, rows);
      } else {
        const spec = MODELS.find((m) => m.id === id);
        if (!spec) throw new Error(`speed: unknown model ${id}`);
        const file = spec.file;
        // float32 bytes of the weights: the fp16 ONNX file holds 2 bytes per weight, so ×2
        const f32 = id === 'isnet' ? statSync(file).size * 2 : statSync(file).size;
        runModel(id, file, f32, dir, rows);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(
    `${values.out}.json`,
    JSON.stringify(
      { date: new Date().toISOString(), gb: Number(values.gb), base: values.base, loadBefore: load, loadAfter, rows },
      null,
      2,
    ) + '\n',
  );
  const md = [
    `Load average before ${load.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}; synthetic model --gb ${values.gb}.`,
    '',
    '| model | run | seconds | CPU seconds | MB/s of float32 | × zstd | × zstd (CPU) | peak RSS MB | output bytes |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.model} | ${r.label} | ${r.seconds.toFixed(2)} | ${r.cpuSeconds.toFixed(2)} | ${r.mbps.toFixed(1)} | ${r.xZstd.toFixed(3)} | ${cpuRatio(r).toFixed(3)} | ${r.peakRssMB.toFixed(0)} | ${r.outBytes}${r.sameAsBase === undefined ? '' : r.sameAsBase ? ' (= base)' : ' (≠ base)'} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(`${values.out}.md`, md);
  console.log(md);
}

main();
