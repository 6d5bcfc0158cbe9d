/**
 * compress: model file → .nnm archive, as a short orchestration of typed stages (see stages.ts):
 * options resolved once (options.ts) → plan (plan.ts) → duplicates and float16-kept tensors (dedupe.ts,
 * half.ts) → for rate control across layers, an allocation of step grids (allocate.ts) → write (write.ts:
 * prepare → quantize → encode media → measure, per tensor or slice, on worker threads; the manifest
 * assembled once from what was done). Every tensor is decoded again right after encoding, so the manifest
 * records the true error and a lossless path that is not bit-exact is caught here, not in the user's model.
 *
 * Rate control is the encoder's alone (the decoder reads plain M1 codes): per-channel clipping ranges, a
 * coarser code grid per tensor chosen by per-tensor SNR targets or by allocation across layers, and
 * `--codec auto` with a raw codes + zstd fallback.
 */

import { readFileSync, statSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { openModel } from '../formats/registry.js';
import { checkOutputPath, sha256File } from '../io/atomic.js';
import { stepGrid } from '../quantize/registry.js';
import { allocate, type Allocation } from './allocate.js';
import { findDuplicates } from './dedupe.js';
import { halfKept } from './half.js';
import { type CompressOptions, resolveOptions } from './options.js';
import { planTensors, withSettings } from './plan.js';
import type { CodedPlan, TensorPlan } from './stages.js';
import { writeArchive, type CompressResult } from './write.js';

export type { CompressResult } from './write.js';

/** Bytes of the manifest's head and the ZIP directory that the allocator leaves room for. */
const ARCHIVE_OVERHEAD_BYTES = 2000;
/** Archives this far under a bits/weight target are re-allocated to spend the rest. */
const UNDERSHOOT = 0.95;
/** Re-allocations tried to meet a bits/weight target. */
const BUDGET_ATTEMPTS = 4;

export async function compressModel(input: string, output: string, options: CompressOptions = {}): Promise<CompressResult> {
  const resolved = resolveOptions(options);
  await checkOutputPath(output, [input], { force: resolved.force });
  const reader = openModel(input);
  try {
    const plans = planTensors(reader, resolved);
    const coded = plans.filter((p): p is CodedPlan => p.kind === 'coded');
    const { unique, sameAs } = findDuplicates(reader, coded, resolved.sliceWeights);
    const half = resolved.halfKept ? halfKept(reader, plans, resolved.sliceWeights) : undefined;
    const stripped = new Set([...coded.map((p) => p.entry.key), ...(half?.outcomes.keys() ?? [])]);
    // the skeleton (the model minus the coded tensors) is read part by part where it is written
    const skeleton = (): Iterable<Uint8Array> => reader.skeletonParts(stripped, resolved.skeletonPartBytes);
    const weights = coded.reduce((s, p) => s + p.entry.shape.reduce((a, b) => a * b, 1), 0);
    let allocation: Allocation | undefined;
    if (resolved.allocating) {
      // skeleton, float16 entry, manifest head and ZIP directory: what the allocator must leave room for
      let deflated = half ? deflateRawSync(half.data, { level: 9 }).length : 0;
      for (const part of skeleton()) deflated += deflateRawSync(part, { level: 9 }).length;
      // only allocation runs the model, and only then is it read whole (ONNX, which protobuf bounds to 2 GB)
      allocation = await allocate({
        reader,
        source: () => readFileSync(input),
        unique,
        sameAs,
        weights,
        overheadBits: 8 * (deflated + ARCHIVE_OVERHEAD_BYTES),
        options: resolved,
      });
    }
    const job = {
      reader,
      input,
      inputBytes: statSync(input).size,
      sourceSha: await sha256File(input),
      output,
      plans,
      sameAs,
      half,
      skeleton,
      skeletonName: `model/skeleton.${reader.format}`,
      options: resolved,
    };
    // rate control writes the archive more than once: after the first write the file at `output` is ours
    let written = false;
    const encode = async (budgetScale: number): Promise<CompressResult> => {
      const grids = allocation?.(budgetScale);
      const withGrids = (p: TensorPlan): TensorPlan => {
        const g = p.kind === 'coded' ? grids?.get(p.entry.key) : undefined;
        return g ? withSettings(p as CodedPlan, { stride: 1, relStep: g.relStep, range: g.range, quantizer: stepGrid.id }) : p;
      };
      const result = await writeArchive({
        ...job,
        plans: plans.map(withGrids),
        unique: unique.map((p) => withGrids(p) as CodedPlan),
        overwrite: resolved.force || written,
      });
      written = true;
      return result;
    };
    let result = await encode(1);
    const target = resolved.targetBpw;
    if (target === undefined) return result;
    // The allocator's rate is an estimate. Over the target: tighten. Under by more than 5 %: spend the rest,
    // but keep the last archive that fitted if the larger budget overshoots. Bisection on the budget scale
    // between the largest that fitted and the smallest that did not.
    let fitted = result.bitsPerWeight <= target ? 1 : 0;
    let over = result.bitsPerWeight > target ? 1 : Infinity;
    let best = result.bitsPerWeight <= target ? 1 : undefined;
    let scale = 1;
    for (
      let attempt = 0;
      attempt < BUDGET_ATTEMPTS && (result.bitsPerWeight > target || result.bitsPerWeight < UNDERSHOOT * target);
      attempt++
    ) {
      resolved.onLog?.(`archive at ${result.bitsPerWeight.toFixed(3)} bits/weight for a target of ${target}: re-allocating`);
      const guess = scale * (target / result.bitsPerWeight);
      scale = Number.isFinite(over) && fitted > 0 ? Math.sqrt(fitted * over) : Math.min(guess, over * 0.97);
      result = await encode(scale);
      if (result.bitsPerWeight <= target) {
        fitted = Math.max(fitted, scale);
        best = fitted;
      } else over = Math.min(over, scale);
    }
    if (result.bitsPerWeight > target && best !== undefined) result = await encode(best);
    if (result.bitsPerWeight > target)
      resolved.onLog?.(
        `warning: ${result.bitsPerWeight.toFixed(3)} bits/weight is over the target ${target}: the coarsest grids cost more`,
      );
    return result;
  } finally {
    reader.close();
  }
}
