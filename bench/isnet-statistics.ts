/**
 * The statistics stage of `compress --compensate` on ISNet alone (docs/compensation.md, ISNet): H of every
 * conv weight from the probe photos of data/images, as compress gathers them for a model with large inputs
 * (onnxruntime computes the Grams in the capture graph). Prints wall time, peak RSS and H's memory.
 *
 *   node --import tsx bench/isnet-statistics.ts [--photos N] [--block B] [--position-stride S] [--part-mb M]
 *
 * `--part-mb`: at most M MB of Gram outputs per capture graph (`gramPartBytes`; 0: one graph for all).
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildCalibrationSet, splitCalibrationSet } from '../src/calibration/index.js';
import { runCalibration } from '../src/calibration/runner.js';
import { captureStatistics, statisticsTargets, type OutputTensor } from '../src/compensate/index.js';
import { openOnnx } from '../src/formats/onnx/reader.js';
import { isnetModelPath } from './isnet-model.js';

const { values } = parseArgs({
  options: {
    photos: { type: 'string', default: '6' },
    block: { type: 'string', default: '576' },
    'position-stride': { type: 'string', default: '1' },
    'part-mb': { type: 'string', default: '0' },
  },
});
const ROOT = join(import.meta.dirname, '..');
const file = isnetModelPath();
const bytes = new Uint8Array(readFileSync(file));
const set = await buildCalibrationSet(bytes, {
  paths: [join(ROOT, 'data/images')],
  image: { kernel: 'linear', mean: [0.5] },
});
const probe = splitCalibrationSet(set).probe.slice(0, Number(values.photos));
const reader = openOnnx(file, bytes);
const started = Date.now();
const report = await captureStatistics(
  bytes,
  statisticsTargets(reader),
  async (model, extra, onRun) => {
    const wanted = new Set(extra);
    await runCalibration(model, probe, {
      keep: false,
      onRun: async (r) => {
        const outs = new Map<string, OutputTensor>();
        for (const [name, t] of Object.entries(r.outputs))
          if (wanted.has(name) && t.data instanceof Float32Array) outs.set(name, { data: t.data, dims: t.dims });
        await onRun(outs);
      },
    });
  },
  {
    gramInGraph: true,
    maxBlock: Number(values.block),
    positionStride: Number(values['position-stride']),
    ...(Number(values['part-mb']) > 0 ? { gramPartBytes: Number(values['part-mb']) * 2 ** 20 } : {}),
    progress: (n) => console.log(`run ${n}: ${((Date.now() - started) / 1000).toFixed(1)} s`),
  },
);
let hBytes = 0;
for (const s of report.stats.values()) for (const h of s.h) hBytes += h.byteLength;
console.log(
  JSON.stringify({
    photos: probe.length,
    block: Number(values.block),
    positionStride: Number(values['position-stride']),
    partMB: Number(values['part-mb']),
    parts: report.parts,
    tensors: report.stats.size,
    missing: report.missing.size,
    seconds: (Date.now() - started) / 1000,
    hMB: hBytes / 2 ** 20,
    peakRssMB: process.resourceUsage().maxRSS / 1024,
  }),
);
