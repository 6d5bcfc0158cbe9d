/**
 * Generalization benchmark (issue 14): each model with and without calibration data, at the default and at
 * `--target-bpw 4`. Columns: whole-archive bits/weight (archive bytes × 8 / coded weights, as bench/run.ts),
 * the quality gate's fidelity on held-back calibration inputs. A budget the gate refuses is a result:
 * "refused, smallest passing X bits/weight". Beside each model and calibration: per-output-channel int8 and int4
 * round-to-nearest + zstd-19 of the whole file (bench/peers.ts `rtnPeer` with the model's skeleton as `rest`),
 * with their fidelity on the same held-back inputs the gate uses (`openCalibration` → `measureFidelity`).
 *
 * Models: Silero VAD v4/v6 (synthetic and speech_16k.wav), PaddleOCR v4 rec (data/ocr, docs/calibration.md's
 * flags), and the test suite's small models (test/helpers/onnx-builder.ts; synthetic calibration).
 * Not done (docs/generalization.md): task metrics, ISNet.
 *
 *   node --import tsx bench/generalize.ts [--quick] [--models silero-v4,stft,...] [--peers-only]
 *
 * `--models` runs only those cases and merges their rows into the existing bench/results/generalize.json;
 * `--peers-only` measures only the peer columns and keeps the recorded nnmedia rows.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compressModel, QualityError, type CompressOptions } from '../src/index.js';
import type { CalibrationSpec } from '../src/calibration/set.js';
import { measureFidelity } from '../src/eval/fidelity.js';
import { openModel } from '../src/formats/registry.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { openCalibration } from '../src/pipeline/gate.js';
import { planTensors } from '../src/pipeline/plan.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import { batchNormClassifier, ifBranchModel, sparseModel, stftMelModel } from '../test/helpers/onnx-builder.js';
import { MODELS, ROOT } from './models.js';
import { rtnPeer, weightSet } from './peers.js';

interface Row {
  model: string;
  calibration: string;
  point: string;
  bitsPerWeight?: number;
  fidelity?: number;
  refused?: { smallestPassing?: number; fidelity?: number };
  seconds: number;
}

/** A round-to-nearest peer of one model, on the held-back samples of one calibration. */
interface PeerRow {
  model: string;
  calibration: string;
  peer: 'int8' | 'int4';
  bitsPerWeight: number;
  fidelity: number;
}

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const peersOnly = argv.includes('--peers-only');
const modelsArg = argv.indexOf('--models');
const only = modelsArg >= 0 ? argv[modelsArg + 1]?.split(',') : undefined;
const speech = join(ROOT, 'data/speech/speech_16k.wav');
const resultsJson = join(ROOT, 'bench/results/generalize.json');

interface Case {
  id: string;
  model: string;
  file: (dir: string) => Promise<string>;
  calibrations: { label: string; spec?: CalibrationSpec }[];
}

const built =
  (name: string, make: () => Promise<{ bytes: Uint8Array }> | { bytes: Uint8Array }) =>
  async (dir: string): Promise<string> => {
    const f = join(dir, `${name}.onnx`);
    writeFileSync(f, (await make()).bytes);
    return f;
  };

const cases: Case[] = [
  ...MODELS.filter((m) => m.task === 'vad').map((m) => ({
    id: m.id,
    model: m.label,
    file: async () => m.file,
    calibrations: [{ label: 'synthetic' }, { label: 'speech_16k.wav', spec: { paths: [speech] } }],
  })),
  {
    id: 'classifier',
    model: 'batchNormClassifier (test)',
    file: built('classifier', batchNormClassifier),
    calibrations: [{ label: 'synthetic' }],
  },
  { id: 'stft', model: 'stftMelModel (test)', file: built('stft', stftMelModel), calibrations: [{ label: 'synthetic' }] },
  { id: 'if', model: 'ifBranchModel (test)', file: built('if', () => ifBranchModel()), calibrations: [{ label: 'synthetic' }] },
  {
    id: 'sparse',
    model: 'sparseModel (test)',
    file: built('sparse', () => sparseModel()),
    calibrations: [{ label: 'synthetic' }],
  },
  ...MODELS.filter((m) => m.id === 'paddleocr-v4-rec').map((m) => ({
    id: m.id,
    model: m.label,
    file: async () => m.file,
    // docs/calibration.md's worked example; the default point only (time)
    calibrations: [
      {
        label: 'data/ocr (200 lines)',
        spec: { paths: [join(ROOT, 'data/ocr')], image: { order: 'bgr' as const, mean: [0.5], std: [0.5], minWidth: 8 } },
      },
    ],
  })),
];

const pointsOf = (c: Case): [string, CompressOptions][] =>
  quick
    ? [['default', {}]]
    : c.id === 'paddleocr-v4-rec'
      ? [['default', {}]]
      : [
          ['default', {}],
          ['target-bpw 4', { targetBpw: 4 }],
        ];

async function runOne(
  c: Case,
  file: string,
  cal: Case['calibrations'][number],
  point: string,
  extra: CompressOptions,
  dir: string,
): Promise<Row> {
  const out = join(dir, `${c.id}-${cal.label.replace(/\W+/g, '-')}-${point.replace(/\W+/g, '-')}.nnm`);
  const t0 = performance.now();
  const row: Row = { model: c.model, calibration: cal.label, point, seconds: 0 };
  try {
    const r = await compressModel(file, out, { ...(cal.spec ? { calibration: cal.spec } : {}), ...extra });
    row.bitsPerWeight = (r.archiveBytes * 8) / r.compressedWeights;
    row.fidelity = r.quality?.fidelity;
  } catch (e) {
    if (!(e instanceof QualityError)) throw e;
    row.refused = { smallestPassing: e.details.smallestPassing, fidelity: e.details.fidelity };
  }
  row.seconds = (performance.now() - t0) / 1000;
  return row;
}

/**
 * Per-channel int8 and int4 round-to-nearest of the tensors nnmedia codes, + zstd-19 over the whole file (the
 * skeleton: graph, kept tensors, metadata); fidelity on the held-back samples of the same calibration set the
 * quality gate opens for nnmedia's row.
 */
async function peers(c: Case, file: string, cal: Case['calibrations'][number]): Promise<PeerRow[]> {
  const reader = openModel(file);
  try {
    const plans = planTensors(reader, {}).flatMap((p) => (p.kind === 'coded' ? [p] : []));
    const layouts = new Map<string, LayoutSpec>(plans.map((p) => [p.entry.key, p.layout]));
    const ws = weightSet(reader, [...layouts.keys()], layouts);
    const rest = reader.skeleton(new Set(layouts.keys()));
    const calibration = await openCalibration(file, reader, cal.spec);
    const rows: PeerRow[] = [];
    for (const bits of [8, 4] as const) {
      const peer = await rtnPeer(ws, bits, true, rest);
      const report = await measureFidelity(calibration.source, substituteTensors(reader, peer.values!), calibration.heldBack);
      rows.push({
        model: c.model,
        calibration: cal.label,
        peer: `int${bits}`,
        bitsPerWeight: (peer.bytes * 8) / ws.count,
        fidelity: report.fidelity,
      });
    }
    return rows;
  } finally {
    reader.close();
  }
}

const fmt = (x: number | undefined, d = 3): string => (x === undefined ? '' : x.toFixed(d));
const cell = (r: Row): string =>
  r.refused
    ? `refused${r.refused.smallestPassing !== undefined ? `, smallest passing ${fmt(r.refused.smallestPassing, 2)} bits/weight` : ''}`
    : fmt(r.bitsPerWeight);

interface Results {
  wallSeconds: number;
  rows: Row[];
  peers: PeerRow[];
}

function table(res: Results): string {
  const peerOf = (r: Row, p: 'int8' | 'int4'): PeerRow | undefined =>
    res.peers.find((x) => x.model === r.model && x.calibration === r.calibration && x.peer === p);
  return [
    `| model | calibration | point | bits/weight | fidelity | int8 RTN b/w | int8 fidelity | int4 RTN b/w | int4 fidelity | s |`,
    `| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |`,
    ...res.rows.map((r) => {
      const i8 = peerOf(r, 'int8');
      const i4 = peerOf(r, 'int4');
      return `| ${r.model} | ${r.calibration} | ${r.point} | ${cell(r)} | ${fmt(r.fidelity ?? r.refused?.fidelity, 4)} | ${fmt(i8?.bitsPerWeight)} | ${fmt(i8?.fidelity, 4)} | ${fmt(i4?.bitsPerWeight)} | ${fmt(i4?.fidelity, 4)} | ${r.seconds.toFixed(1)} |`;
    }),
  ].join('\n');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nnm-gen-'));
  const recorded: Partial<Results> =
    !quick && existsSync(resultsJson) ? (JSON.parse(readFileSync(resultsJson, 'utf8')) as Partial<Results>) : {};
  const previous: Results = { wallSeconds: 0, rows: recorded.rows ?? [], peers: recorded.peers ?? [] };
  const rows: Row[] = [];
  const peerRows: PeerRow[] = [];
  const t0 = performance.now();
  const selected = quick ? cases.filter((c) => c.id === 'sparse') : cases.filter((c) => !only || only.includes(c.id));
  try {
    for (const c of selected) {
      const file = await c.file(dir);
      for (const cal of c.calibrations) {
        if (!peersOnly)
          for (const [point, extra] of pointsOf(c)) {
            const r = await runOne(c, file, cal, point, extra, dir);
            rows.push(r);
            console.log(
              `  ${r.model.padEnd(26)} ${r.calibration.padEnd(20)} ${r.point.padEnd(13)} ${cell(r).padStart(10)}  fidelity ${fmt(r.fidelity ?? r.refused?.fidelity, 4)}  ${r.seconds.toFixed(1)} s`,
            );
          }
        for (const p of await peers(c, file, cal)) {
          peerRows.push(p);
          console.log(
            `  ${p.model.padEnd(26)} ${p.calibration.padEnd(20)} ${`${p.peer} RTN`.padEnd(13)} ${fmt(p.bitsPerWeight).padStart(10)}  fidelity ${fmt(p.fidelity, 4)}`,
          );
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const wall = (performance.now() - t0) / 1000;
  // merge: the rows measured now replace the recorded rows of the same model and calibration
  const key = (r: { model: string; calibration: string }): string => `${r.model}\u0000${r.calibration}`;
  const redone = new Set(rows.map(key));
  const repeered = new Set(peerRows.map(key));
  const order = new Map(cases.map((c, i) => [c.model, i]));
  const byCase = (a: { model: string }, b: { model: string }): number => (order.get(a.model) ?? 99) - (order.get(b.model) ?? 99);
  const res: Results = {
    wallSeconds: wall,
    rows: [...previous.rows.filter((r) => !redone.has(key(r))), ...rows].sort(byCase),
    peers: [...previous.peers.filter((r) => !repeered.has(key(r))), ...peerRows].sort(byCase),
  };
  const md = [table(res), '', `Wall time of the last run ${wall.toFixed(0)} s${quick ? ' (--quick)' : ''}.`, ''].join('\n');
  if (!quick) {
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(resultsJson, JSON.stringify(res, null, 2) + '\n');
    writeFileSync(join(ROOT, 'bench/results/generalize.md'), md);
  }
  console.log('\n' + md);
}

await main();
