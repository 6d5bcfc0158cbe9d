/**
 * Speed and memory of nnmedia against the zstd CLI on the same file, in the same run (issue 16).
 * Every command runs in a child process under `/usr/bin/time -v`, which reports its wall time and
 * maximum resident set size. Rows: zstd -3 -T1 / zstd -d -T1, nnmedia compress/decompress at the
 * default with --jobs 1 and 2, the step grid (`--codec auto --step 0.25 --jobs 2`) and its decompress,
 * and `--target-snr 30` (safetensors only). MB/s counts float32 bytes (weights × 4).
 *
 *   tsx bench/speed.ts [--gb 1] [--models synth,isnet] [--out bench/results/speed]
 *
 * Needs `npm run build` first (runs dist/cli/main.js).
 */

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { MODELS } from './models.js';

interface Row {
  model: string;
  label: string;
  command: string;
  seconds: number;
  mbps: number;
  xZstd: number;
  peakRssMB: number;
  outBytes: number;
}

const { values } = parseArgs({
  options: {
    gb: { type: 'string', default: '1' },
    models: { type: 'string', default: 'synth,isnet' },
    out: { type: 'string', default: 'bench/results/speed' },
  },
});

const CLI = 'dist/cli/main.js';

/** Runs argv under /usr/bin/time -v; returns seconds and max RSS in MB. Throws on a non-zero exit. */
function timed(argv: string[]): { seconds: number; rssMB: number } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-v', ...argv], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`speed: ${argv.join(' ')} exited ${r.status}: ${r.stderr.slice(-2000)}`);
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`speed: no max RSS in the output of /usr/bin/time for ${argv.join(' ')}`);
  return { seconds, rssMB: Number(m[1]) / 1024 };
}

/** Count of float weights in a safetensors file (header dtypes F32/F16/BF16). */
function weightsOf(file: string): number {
  const buf = readFileSync(file, { flag: 'r' }).subarray(0, 8);
  const n = Number(buf.readBigUInt64LE(0));
  const fd = readFileSync(file)
    .subarray(8, 8 + n)
    .toString('utf8');
  const header = JSON.parse(fd) as Record<string, { dtype?: string; shape?: number[] }>;
  let w = 0;
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__' || !v.shape) continue;
    w += v.shape.reduce((a, b) => a * b, 1);
  }
  return w;
}

function runModel(id: string, model: string, float32Bytes: number, dir: string, rows: Row[]): void {
  const mb = float32Bytes / 1e6;
  const push = (label: string, argv: string[], base: number | undefined, out: string): number => {
    const { seconds, rssMB } = timed(argv);
    const mbps = mb / seconds;
    rows.push({
      model: id,
      label,
      command: argv.join(' '),
      seconds,
      mbps,
      xZstd: base ? mbps / base : 1,
      peakRssMB: rssMB,
      outBytes: existsSync(out) ? statSync(out).size : 0,
    });
    console.log(`${id}\t${label}\t${seconds.toFixed(2)} s\t${mbps.toFixed(1)} MB/s\t${rssMB.toFixed(0)} MB RSS`);
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
  for (const jobs of [1, 2]) {
    const a = join(dir, `${id}-default.nnm`);
    push(
      `nnmedia compress default --jobs ${jobs}`,
      [node, CLI, 'compress', model, '-o', a, '--jobs', String(jobs), '--force'],
      zc,
      a,
    );
  }
  for (const jobs of [1, 2]) {
    const o = join(dir, `${id}-default.out`);
    push(
      `nnmedia decompress default --jobs ${jobs}`,
      [node, CLI, 'decompress', join(dir, `${id}-default.nnm`), '-o', o, '--jobs', String(jobs), '--force'],
      zd,
      o,
    );
    rmSync(o, { force: true });
  }
  const s = join(dir, `${id}-step.nnm`);
  push(
    'nnmedia compress --codec auto --step 0.25 --jobs 2',
    [node, CLI, 'compress', model, '-o', s, '--codec', 'auto', '--step', '0.25', '--jobs', '2', '--force'],
    zc,
    s,
  );
  const so = join(dir, `${id}-step.out`);
  push(
    'nnmedia decompress of the step archive --jobs 2',
    [node, CLI, 'decompress', s, '-o', so, '--jobs', '2', '--force'],
    zd,
    so,
  );
  rmSync(so, { force: true });
  if (model.endsWith('.safetensors')) {
    const t = join(dir, `${id}-snr.nnm`);
    push(
      'nnmedia compress --target-snr 30 --jobs 2',
      [node, CLI, 'compress', model, '-o', t, '--target-snr', '30', '--jobs', '2', '--force'],
      zc,
      t,
    );
  }
}

function main(): void {
  const dir = mkdtempSync(join(tmpdir(), 'nnm-speed-'));
  const rows: Row[] = [];
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
    JSON.stringify({ date: new Date().toISOString(), gb: Number(values.gb), loadBefore: load, loadAfter, rows }, null, 2) + '\n',
  );
  const md = [
    `Load average before ${load.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}; synthetic model --gb ${values.gb}.`,
    '',
    '| model | run | seconds | MB/s of float32 | × zstd | peak RSS MB | output bytes |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.model} | ${r.label} | ${r.seconds.toFixed(2)} | ${r.mbps.toFixed(1)} | ${r.xZstd.toFixed(3)} | ${r.peakRssMB.toFixed(0)} | ${r.outBytes} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(`${values.out}.md`, md);
  console.log(md);
}

main();
