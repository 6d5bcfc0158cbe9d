/**
 * Honest evaluation of an archive against its original model: per-tensor error
 * measured again from the decoded weights, sizes and bits per weight, and the
 * task metric from running both models.
 */

import { codedParts, ownEntries } from '../archive/manifest.js';
import { statSync } from 'node:fs';
import { Archive } from '../archive/node.js';
import { checkSourceModel } from '../archive/source-model.js';
import { decodeAllTensors, rebuildModel } from '../pipeline/decompress.js';
import { modelBytes, openModel, selfContainedModel } from '../formats/registry.js';
import { elementCount } from '../formats/model.js';
import { errorStats, type ErrorStats } from '../eval/metrics.js';
import { archiveScopes } from './scopes.js';
import type { TaskEvaluator, TaskMetric } from '../eval/tasks/types.js';

export interface TensorReport {
  name: string;
  /** The subgraph of a name the model repeats ("If_0 else_branch", "main graph"): Silero v6's two branches. */
  scope?: string;
  role: string;
  shape: number[];
  codec: string;
  bits: number;
  bytes: number;
  bitsPerWeight: number;
  stats: ErrorStats;
  sameAs?: string;
  /** Stored as `sameAs`'s transpose. */
  transposed?: true;
}

export interface EvaluationReport {
  archive: string;
  model: string;
  modelBytes: number;
  archiveBytes: number;
  compressedWeights: number;
  keptWeights: number;
  bitsPerWeight: number;
  ratio: number;
  tensors: TensorReport[];
  task?: { name: string; baseline: TaskMetric[]; metrics: TaskMetric[] };
}

export async function evaluateArchive(
  archivePath: string,
  modelPath: string,
  task?: TaskEvaluator<unknown>,
): Promise<EvaluationReport> {
  const archive = new Archive(archivePath);
  const reader = openModel(modelPath);
  try {
    await checkSourceModel(archive.manifest, archivePath, reader);
    const decoded = await decodeAllTensors(archive);
    const sizes = archive.entrySizes();
    const tensors: TensorReport[] = [];
    let compressedWeights = 0;
    let keptWeights = 0;
    for (const t of archive.manifest.tensors) {
      const n = elementCount(t.shape);
      if (!t.layout) {
        keptWeights += n;
        continue;
      }
      compressedWeights += n;
      const values = decoded.get(t.key)!;
      const original = reader.read(t.key);
      const bytes = [...ownEntries(t)].reduce((s, e) => s + (sizes.get(e) ?? 0), 0);
      const first = codedParts(t)[0].record;
      tensors.push({
        name: t.name,
        role: t.role,
        shape: t.shape,
        codec: first.codec?.name ?? (t.sameAs ? 'same as' : ''),
        bits: first.quant?.bits ?? 0,
        bytes,
        bitsPerWeight: (bytes * 8) / n,
        stats: errorStats(original, values),
        sameAs: t.sameAs,
        ...(t.transposed && { transposed: t.transposed }),
      });
    }
    // (names counted over every tensor, as inspect and the viewer count them; the coded ones' labels kept)
    const all = archive.manifest.tensors;
    const scopes = archiveScopes(archive);
    const codedScopes = scopes.filter((_, i) => all[i].layout);
    tensors.forEach((t, i) => {
      if (codedScopes[i]) t.scope = codedScopes[i];
    });
    const archiveBytes = statSync(archivePath).size;
    const report: EvaluationReport = {
      archive: archivePath,
      model: modelPath,
      modelBytes: modelBytes(modelPath, reader),
      archiveBytes,
      compressedWeights,
      keptWeights,
      bitsPerWeight: compressedWeights ? (archiveBytes * 8) / compressedWeights : 0,
      ratio: modelBytes(modelPath, reader) / archiveBytes,
      tensors,
    };
    if (task) {
      const rebuilt = await rebuildModel(archive);
      const ref = await task.run(selfContainedModel(modelPath, reader));
      const cand = await task.run(rebuilt);
      report.task = { name: task.name, baseline: task.baseline(ref), metrics: task.compare(ref, cand) };
    }
    return report;
  } finally {
    archive.close();
    reader.close();
  }
}
