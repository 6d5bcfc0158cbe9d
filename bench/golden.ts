/**
 * Archive fingerprints: compresses the real models in a set of modes and records the sha256 of each archive,
 * so a restructuring that must not change a byte of output can be checked against the fingerprints taken
 * before it.
 *
 *   npx tsx bench/golden.ts --write bench/results/golden.json    take the fingerprints
 *   npx tsx bench/golden.ts --check bench/results/golden.json    compare (exit 1 on any difference)
 *
 * `--modes a,b` and `--models a,b` restrict the run. Modes that change the format on purpose (a later issue)
 * are expected to differ; the check prints every row either way.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { compressModel } from '../src/pipeline/compress.js';
import type { CompressOptions } from '../src/pipeline/options.js';
import { taskByName } from '../src/eval/tasks/index.js';
import { MODELS } from './models.js';

export const GOLDEN_MODES: Record<string, CompressOptions> = {
  default: {},
  layer: { range: 'layer' },
  step: { relStep: 0.25 },
  'step-auto': { relStep: 0.25, codec: 'auto', outliers: 4 },
  'target-snr': { targetSnr: 30 },
  'webp-lossy': { codec: 'webp', quality: 90 },
  clip: { clip: true },
  rotate: { rotate: true, relStep: 0.25 },
  video: { media: 'video', codec: 'ffv1' },
  'video-h264': { media: 'video', codec: 'h264', lossless: true },
  audio: { media: 'audio', codec: 'flac' },
  sliced: { sliceWeights: 4096 },
  'half-kept': { halfKept: true, relStep: 0.25, codec: 'auto' },
  // pictures only: PNG's own match search where it pays (codecs/image/png-entropy.ts)
  png: { codec: 'png' },
};

/** The budget mode, which runs the model: Silero v4 only (seconds, not minutes). */
const BUDGET_MODE = 'target-bpw';

const { values } = parseArgs({
  options: {
    write: { type: 'string' },
    check: { type: 'string' },
    modes: { type: 'string' },
    models: { type: 'string' },
    jobs: { type: 'string', default: '2' },
  },
});

const modes = values.modes ? values.modes.split(',') : Object.keys(GOLDEN_MODES);
/** The models fingerprinted unless `--models` names others (ISNet's 44M weights take minutes a mode). */
const GOLDEN_MODELS = ['silero-v4', 'silero-v6', 'paddleocr-v4-rec'];
const models = MODELS.filter((m) => (values.models ? values.models.split(',') : GOLDEN_MODELS).includes(m.id));
const jobs = Number(values.jobs);
const dir = mkdtempSync(join(tmpdir(), 'nnmedia-golden-'));
const got: Record<string, { sha256: string; bytes: number }> = {};
try {
  for (const m of models)
    for (const mode of modes) {
      if (mode === BUDGET_MODE) continue; // below: one model only
      const options = GOLDEN_MODES[mode];
      if (!options) throw new Error(`unknown mode ${mode}`);
      const out = join(dir, `${m.id}-${mode}.nnm`);
      const t0 = performance.now();
      await compressModel(m.file, out, { check: false, ...options, jobs });
      const bytes = readFileSync(out);
      got[`${m.id}/${mode}`] = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
      console.log(
        `${m.id}/${mode}: ${bytes.length} B ${got[`${m.id}/${mode}`].sha256.slice(0, 16)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
      );
      rmSync(out);
    }
  // a budget mode that runs the model (Silero v4 only: seconds, not minutes)
  if (!values.modes || modes.includes(BUDGET_MODE)) {
    const v4 = MODELS.find((m) => m.id === 'silero-v4')!;
    if (models.includes(v4)) {
      const out = join(dir, 'v4-bpw.nnm');
      await compressModel(v4.file, out, { check: false, targetBpw: 4, task: taskByName('vad'), jobs });
      const bytes = readFileSync(out);
      got['silero-v4/target-bpw'] = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
      console.log(`silero-v4/target-bpw: ${bytes.length} B`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

if (values.write) writeFileSync(values.write, JSON.stringify(got, null, 2) + '\n');
if (values.check) {
  const want = JSON.parse(readFileSync(values.check, 'utf8')) as typeof got;
  let bad = 0;
  for (const [k, v] of Object.entries(got)) {
    const w = want[k];
    const same = w && w.sha256 === v.sha256;
    if (!same) bad++;
    console.log(`${same ? 'same     ' : 'DIFFERENT'} ${k}${w && !same ? ` (${w.bytes} → ${v.bytes} B)` : ''}`);
  }
  process.exitCode = bad ? 1 : 0;
}
