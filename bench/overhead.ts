/**
 * Fixed archive overhead (issue 14 points 6 and 7): per model, the archive split into coded tensor payload and
 * overhead (manifest, ranges, kept float16 tensors, skeleton, ZIP headers), at the default and at
 * --target-bpw 4, beside per-channel int8 round-to-nearest + zstd-19 of the whole file (bench/peers.ts rtnPeer
 * with the model's skeleton as `rest`).
 *
 *   npx tsx bench/overhead.ts [--models silero-v4,classifier] [--files a.onnx,b.onnx] [--no-check] [--out bench/results/overhead.json]
 *
 * `--files` measures models of your own too (named by file name; with `--files` alone, only those).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { compressModel } from '../src/pipeline/compress.js';
import { MANIFEST_NAME, type Manifest } from '../src/archive/manifest.js';
import { ZipReader } from '../src/archive/zip.js';
import { QualityError } from '../src/errors.js';
import { openModel } from '../src/formats/registry.js';
import { planTensors } from '../src/pipeline/plan.js';
import type { CodedPlan } from '../src/pipeline/stages.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { MODELS, ROOT } from './models.js';
import { rtnPeer, weightSet } from './peers.js';
import { batchNormClassifier, ifBranchModel, sparseModel, stftMelModel } from '../test/helpers/onnx-builder.js';

interface Split {
  total: number;
  payload: number;
  manifest: number;
  ranges: number;
  kept: number;
  skeleton: number;
  zipHeaders: number;
  entries: number;
}

/**
 * The archive's bytes by entry kind, from its central directory (local header + name + extra counted as ZIP).
 * A pack (format version 2) is split among its members: a stored pack exactly, a deflated one in proportion
 * to its members' raw sizes. Exact side values (outliers, non-finite) count as payload.
 */
function split(file: string): Split {
  const bytes = readFileSync(file);
  const zip = new ZipReader(file);
  const manifest = JSON.parse(new TextDecoder().decode(zip.read(MANIFEST_NAME))) as Manifest;
  const list = zip.list();
  zip.close();
  const s: Split = {
    total: bytes.length,
    payload: 0,
    manifest: 0,
    ranges: 0,
    kept: 0,
    skeleton: 0,
    zipHeaders: 0,
    entries: list.length,
  };
  const count = (name: string, csize: number): void => {
    if (name === MANIFEST_NAME) s.manifest += csize;
    else if (name.endsWith('ranges.bin')) s.ranges += csize;
    else if (name.endsWith('half.bin')) s.kept += csize;
    else if (name.includes('skeleton')) s.skeleton += csize;
    else s.payload += csize;
  };
  let data = 0;
  for (const e of list) {
    data += e.compressedSize;
    const members = manifest.packs?.[e.name];
    if (members) for (const [name, size] of members) count(name, (e.compressedSize * size) / e.size);
    else count(e.name, e.compressedSize);
  }
  s.zipHeaders = bytes.length - data;
  for (const k of ['payload', 'ranges', 'kept'] as const) s[k] = Math.round(s[k]);
  return s;
}

interface Row {
  model: string;
  weights: number;
  mode: string;
  split: Split;
  overheadPct: number;
  bitsPerWeight: number;
  int8WholeFileBytes: number;
  int8BitsPerWeight: number;
  /** The quality gate refused the archive (kept with force): measured all the same. */
  gateRefused?: string;
}

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const check = !args.includes('--no-check');
const out = flag('--out') ?? join(ROOT, 'bench/results/overhead.json');
const tmp = mkdtempSync(join(tmpdir(), 'nnm-overhead-'));

const sources: Array<{ id: string; file: () => Promise<string> }> = [
  ...MODELS.filter((m) => m.id !== 'isnet').map((m) => ({ id: m.id, file: () => Promise.resolve(m.file) })),
  ...(
    [
      ['classifier', async () => (await batchNormClassifier()).bytes],
      ['stft', () => Promise.resolve(stftMelModel().bytes)],
      ['sparse', () => Promise.resolve(sparseModel().bytes)],
      ['if-branch', () => Promise.resolve(ifBranchModel().bytes)],
    ] as const
  ).map(([id, build]) => ({
    id,
    file: async () => {
      const f = join(tmp, `${id}.onnx`);
      writeFileSync(f, await build());
      return f;
    },
  })),
];
const files = flag('--files')?.split(',') ?? [];
for (const f of files) sources.push({ id: basename(f), file: () => Promise.resolve(f) });
const only = flag('--models')?.split(',') ?? (files.length ? files.map((f) => basename(f)) : undefined);
const rows: Row[] = [];
try {
  for (const src of sources.filter((s) => !only || only.includes(s.id))) {
    const file = await src.file();
    const reader = openModel(file);
    const plans = planTensors(reader, {}).filter((p): p is CodedPlan => p.kind === 'coded');
    const layouts = new Map<string, LayoutSpec>(plans.map((p) => [p.entry.key, p.layout]));
    const ws = weightSet(reader, [...layouts.keys()], layouts);
    const rest = reader.skeleton(new Set(layouts.keys()));
    const peer = await rtnPeer(ws, 8, true, rest);
    reader.close();
    for (const [mode, options] of [
      ['default', {}],
      ['--target-bpw 4', { targetBpw: 4 }],
    ] as const) {
      const archive = join(tmp, `${src.id}.nnm`);
      let refused: string | undefined;
      try {
        await compressModel(file, archive, { ...options, check, force: true });
      } catch (e) {
        // the gate refused it; with force the archive is kept, and its overhead is what this bench measures
        if (!(e instanceof QualityError && e.details.kept)) {
          console.log(`${src.id} ${mode}: ${(e as Error).message}`);
          continue;
        }
        refused = `fidelity ${e.details.fidelity} < ${e.details.minFidelity}`;
      }
      const s = split(archive);
      const row: Row = {
        model: src.id,
        weights: ws.count,
        mode,
        split: s,
        overheadPct: (100 * (s.total - s.payload)) / s.total,
        bitsPerWeight: (8 * s.total) / ws.count,
        int8WholeFileBytes: peer.bytes,
        int8BitsPerWeight: (8 * peer.bytes) / ws.count,
        ...(refused ? { gateRefused: refused } : {}),
      };
      rows.push(row);
      console.log(
        `${src.id.padEnd(17)} ${mode.padEnd(15)} ${String(ws.count).padStart(8)} w  total ${String(s.total).padStart(8)}  payload ${String(s.payload).padStart(8)}  manifest ${String(s.manifest).padStart(6)}  ranges ${String(s.ranges).padStart(6)}  kept ${String(s.kept).padStart(6)}  skeleton ${String(s.skeleton).padStart(6)}  zip ${String(s.zipHeaders).padStart(6)} (${s.entries} entries)  overhead ${row.overheadPct.toFixed(1).padStart(5)} %  ${row.bitsPerWeight.toFixed(3)} b/w  int8+zstd19 whole file ${peer.bytes} B ${row.int8BitsPerWeight.toFixed(3)} b/w${refused ? `  (gate refused: ${refused})` : ''}`,
      );
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
writeFileSync(out, JSON.stringify({ check, rows }, null, 2) + '\n');
console.log(`wrote ${out}`);
