/**
 * Stage 5, write: encodes the units (in parallel, `--jobs`; a tensor larger than the slice size as slices,
 * each its own job) and writes the archive as they finish, in plan order, to a temporary file renamed when
 * complete: memory holds a few tensors or slices at a time, never the archive. The manifest is assembled
 * once, at the end, from the plans and each tensor's outcome.
 */

import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { MANIFEST_NAME, type Manifest, type SliceRecord } from '../archive/manifest.js';
import { ZipWriter, type ZipMethod } from '../archive/zip.js';
import { addSums, statsFromSums, type ErrorSums } from '../eval/metrics.js';
import { elementCount, type ModelReader } from '../formats/model.js';
import { writeAtomic } from '../io/atomic.js';
import { HALF_ENTRY } from '../quantize/half.js';
import { encodeUnit } from './encode.js';
import type { HalfKept } from './half.js';
import type { ResolvedOptions } from './options.js';
import { slicesOf } from './plan.js';
import { runOrdered } from './pool.js';
import { buildManifest, tensorRecord } from './records.js';
import type { CodedPlan, EncodedTensor, EncodeUnit, TensorOutcome, TensorPlan } from './stages.js';
import { poolFor, type WorkerPool } from './workers.js';

/** Everything one archive is written from. */
export interface ArchiveJob {
  readonly reader: ModelReader;
  readonly input: string;
  readonly inputBytes: number;
  readonly sourceSha: string;
  readonly output: string;
  /** Replace a file at `output` (the user's --force, or a file this compress wrote itself). */
  readonly overwrite: boolean;
  readonly plans: readonly TensorPlan[];
  /** The coded tensors to encode (duplicates left out). */
  readonly unique: readonly CodedPlan[];
  /** Every duplicate's key → its first's key. */
  readonly sameAs: ReadonlyMap<string, string>;
  readonly half?: HalfKept;
  /** The skeleton (the model minus what the archive holds elsewhere), part by part. */
  readonly skeleton: () => Iterable<Uint8Array>;
  readonly skeletonName: string;
  readonly options: ResolvedOptions;
}

export interface CompressResult {
  manifest: Manifest;
  archiveBytes: number;
  /** Weights in compressed tensors (rank ≥ 2 by role), the denominator of bits/weight. */
  compressedWeights: number;
  bitsPerWeight: number;
}

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Encodes one unit here (one job) or on a worker thread; the result is the same either way. */
function unitEncoder(reader: ModelReader, pool?: WorkerPool): (unit: EncodeUnit) => Promise<EncodedTensor> {
  return (unit) => (pool ? pool.run<EncodedTensor>({ kind: 'encode', file: reader.file, unit }) : encodeUnit(reader, unit));
}

export async function writeArchive(job: ArchiveJob): Promise<CompressResult> {
  const { reader, options } = job;
  const units: EncodeUnit[] = job.unique.flatMap(
    (plan) => slicesOf(plan, options.sliceWeights)?.map((slice) => ({ plan, slice })) ?? [{ plan }],
  );
  const compressedWeights = job.plans.reduce((s, p) => s + (p.kind === 'coded' ? elementCount(p.entry.shape) : 0), 0);
  const pool = poolFor(options.jobs, units.length, compressedWeights);
  const encode = unitEncoder(reader, pool);
  const outcomes = new Map<string, TensorOutcome>();
  let manifest: Manifest | undefined;
  const entries: Manifest['entries'] = {};
  let archiveBytes = 0;
  let done = 0;
  // the slices of the tensor being committed, and their error sums
  let slices: SliceRecord[] = [];
  let sums: ErrorSums | undefined;
  try {
    await writeAtomic(
      job.output,
      async (fd) => {
        const zip = new ZipWriter(fd);
        const put = (name: string, data: Uint8Array, method: ZipMethod): void => {
          entries[name] = { sha256: sha256(data), bytes: data.length };
          zip.add(name, data, method);
        };
        await runOrdered(
          units,
          options.jobs ?? availableParallelism(),
          (unit) => {
            options.signal?.throwIfAborted();
            return encode(unit);
          },
          (encoded, { plan, slice }) => {
            // media are compressed already; the exact side values (index deltas, floats) deflate well
            for (const [name, data] of encoded.entries) put(name, data, name.endsWith('.bin') ? 'deflate' : 'store');
            if (!slice) outcomes.set(plan.entry.key, { kind: 'coded', coded: encoded.coded });
            else {
              slices.push({ row: slice.row, rows: slice.rows, ...encoded.coded });
              sums = sums ? addSums(sums, encoded.sums) : encoded.sums;
              if (slice.row + slice.rows === plan.entry.shape[0]) {
                outcomes.set(plan.entry.key, {
                  kind: 'sliced',
                  slices,
                  stats: statsFromSums(sums),
                  bytes: slices.reduce((n, x) => n + (x.bytes ?? 0), 0),
                });
                slices = [];
                sums = undefined;
              }
            }
            options.onProgress?.({
              done: ++done,
              total: units.length,
              tensor: slice ? `${plan.entry.name} [slice ${slice.k + 1}]` : plan.entry.name,
            });
          },
        );
        if (job.half) put(HALF_ENTRY, job.half.data, 'deflate');
        const parts: string[] = [];
        for (const part of job.skeleton()) {
          const name = parts.length ? `${job.skeletonName}.${parts.length}` : job.skeletonName;
          put(name, part, 'deflate');
          parts.push(name);
          options.signal?.throwIfAborted();
        }
        for (const [key, first] of job.sameAs) outcomes.set(key, { kind: 'same', sameAs: first });
        for (const [key, outcome] of job.half?.outcomes ?? []) outcomes.set(key, outcome);
        const statsOf = (key: string) => {
          const o = outcomes.get(key);
          return o?.kind === 'coded' ? o.coded.stats : o?.kind === 'sliced' ? o.stats : undefined;
        };
        const tensors = job.plans.map((p) => tensorRecord(p, outcomes.get(p.entry.key) ?? { kind: 'kept' }, statsOf));
        manifest = buildManifest({
          format: reader.format,
          input: job.input,
          inputBytes: job.inputBytes,
          sourceSha: job.sourceSha,
          skeleton: parts,
          options: options.echo,
          tensors,
          entries,
        });
        zip.add(MANIFEST_NAME, Buffer.from(JSON.stringify(manifest)), 'deflate');
        zip.finish();
        archiveBytes = zip.bytesWritten;
      },
      { overwrite: job.overwrite },
    );
  } finally {
    await pool?.close();
  }
  return {
    manifest: manifest!,
    archiveBytes,
    compressedWeights,
    bitsPerWeight: compressedWeights ? (archiveBytes * 8) / compressedWeights : 0,
  };
}
