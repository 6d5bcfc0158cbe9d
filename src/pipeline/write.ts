/**
 * Stage 5, write: encodes the units (in parallel, `--jobs`; a tensor larger than the slice size as slices,
 * each its own job) and writes the archive as they finish, in plan order, to a temporary file renamed when
 * complete: memory holds a few tensors or slices at a time, never the archive. The manifest is assembled
 * once, at the end, from the plans and each tensor's outcome.
 */

import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { brotliCompressSync, deflateRawSync } from 'node:zlib';
import { brotliParams } from '../codecs/raw/brotli.js';
import { availableParallelism } from 'node:os';
import {
  MANIFEST_NAME,
  RANGES_ENTRY,
  ZSTD_SKELETON_SUFFIX,
  manifestJson,
  rangeRef,
  type Manifest,
  type PackMember,
  type SliceRecord,
} from '../archive/manifest.js';
import { concatBytes } from '../io/bytes.js';
import { ZipWriter, type ZipMethod } from '../archive/zip.js';
import type { QualityRecord } from '../archive/manifest.js';
import { QualityError } from '../errors.js';
import { addSums, statsFromSums, type ErrorSums } from '../eval/metrics.js';
import { elementCount, type ModelReader } from '../formats/model.js';
import { writeAtomic } from '../io/atomic.js';
import { HALF_ENTRY } from '../quantize/half.js';
import { encodeUnit } from './encode.js';
import { samplesWording } from './gate.js';
import type { HalfKept } from './half.js';
import type { ResolvedOptions } from './options.js';
import { slicesOf } from './plan.js';
import { runOrdered } from './pool.js';
import { buildManifest, tensorRecord } from './records.js';
import type { TensorStatistics as LayerStatistics } from '../compensate/statistics.js';
import type { MeasuredScales } from '../quantize/step.js';
import type { CodedPlan, CodedTensor, EncodedTensor, EncodeUnit, SliceSpec, TensorOutcome, TensorPlan } from './stages.js';
import { poolFor, sourceRange, type WorkerPool } from './workers.js';

const zstd = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress(data: Buffer, level: number): Promise<Buffer>;
};

/** The skeleton through zstd-19 when that is smaller than deflate-9 (which the ZIP entry would use). */
async function smallerAsZstd(skeleton: Uint8Array): Promise<Uint8Array | undefined> {
  const z = new Uint8Array(await zstd.compress(Buffer.from(skeleton.buffer, skeleton.byteOffset, skeleton.byteLength), 19));
  return z.length < deflateRawSync(skeleton, { level: 9 }).length ? z : undefined;
}

/** Side data (ranges, kept tensors, a skeleton) at most this large may go through brotli into the pack (quality 11: ~1 MB/s). */
const BROTLI_SIDE_MAX = 2 ** 22;

/**
 * Whether brotli at its best quality is worth trying on side data for a pack member: at most BROTLI_SIDE_MAX
 * bytes, and either small or brought by brotli's quality 5 (the same window) under half as much again as a member
 * may hold. Quality 11 codes under 1 MB/s (a 1.2 GB model's 207 KB of ranges: 0.7 s at the end of its encode, only
 * to be deflated, 138 KB, as their own entry); quality 5 took 14 ms there and came within 3 % of it. A rule, not a
 * bound: data that quality 11 brings a third below quality 5 would now stay an entry of its own.
 */
export function mayPack(data: Uint8Array): boolean {
  const bound = PACK_MEMBER_MAX * 1.5;
  if (data.length > BROTLI_SIDE_MAX) return false;
  return data.length <= bound || brotliCompressSync(data, { params: brotliParams(data.length, 5) }).length <= bound;
}

/** Side data through brotli at its best quality, with a window no larger than the data (at least 2^16). */
function brotliSide(data: Uint8Array): Uint8Array {
  return brotliCompressSync(data, { params: brotliParams(data.length, 11) });
}

/**
 * Every plane's ranges in one binary entry (RANGES_ENTRY, deflated) instead of base64 in the manifest: the
 * records point at them (`@entry#offset`). A quarter of the manifest on small models (measured: Silero VAD
 * v4, 8.8 KB of 15 KB deflated were base64 ranges).
 */
class RangeCollector {
  readonly bytes: Uint8Array[] = [];
  private offset = 0;

  /** The coding record with its ranges moved into the entry. */
  take(coded: CodedTensor): CodedTensor {
    const refs = coded.quant.ranges.map((b64) => {
      const data = new Uint8Array(Buffer.from(b64, 'base64'));
      const ref = rangeRef(RANGES_ENTRY, this.offset);
      this.bytes.push(data);
      this.offset += data.length;
      return ref;
    });
    return { ...coded, quant: { ...coded.quant, ranges: refs } };
  }
}

/** A media entry at most this large goes into a pack: its ~100 bytes of ZIP headers would be ≥ 0.15 % of it. */
export const PACK_MEMBER_MAX = 64 * 1024;
/** A pack is written when it reaches this size: memory holds one pack, and a reader that wants one member fetches at most this much. */
export const PACK_BYTES = 1024 * 1024;

/**
 * Small stored entries (media tiles, zstd'd codes) gathered into packs (`model/pack.<n>`, stored): one ZIP
 * entry and one sha256 instead of one per member (measured on Silero VAD v4: 58 media entries, 6.0 KB of ZIP
 * headers and 2.6 KB of deflated manifest `entries`).
 */
class Packer {
  private members: PackMember[] = [];
  private data: Uint8Array[] = [];
  private bytes = 0;

  /** `packs` is shared by the packers of one archive (stored media, deflated side values): it names the packs. */
  constructor(
    private readonly packs: Record<string, PackMember[]>,
    private readonly write: (name: string, data: Uint8Array) => void,
  ) {}

  /** A member; with `size`, `data` is a brotli stream of that many bytes (version 4). */
  add(name: string, data: Uint8Array, size?: number): void {
    if (this.bytes + data.length > PACK_BYTES) this.flush();
    this.members.push(size === undefined ? [name, data.length] : [name, data.length, size]);
    this.data.push(data);
    this.bytes += data.length;
  }

  flush(): void {
    if (!this.members.length) return;
    const name = `${PACK_PREFIX}${Object.keys(this.packs).length}`;
    this.packs[name] = this.members;
    this.write(name, concatBytes(this.data));
    this.members = [];
    this.data = [];
    this.bytes = 0;
  }
}

/** Packs are named `model/pack.<n>`, numbered in the order written. */
const PACK_PREFIX = 'model/pack.';

/** Everything one archive is written from. */
export interface ArchiveJob {
  readonly reader: ModelReader;
  readonly input: string;
  readonly inputBytes: number;
  /** The source file's sha256; hashed while the tensors are encoded (a whole read of the file). */
  readonly sourceSha: string | Promise<string>;
  readonly output: string;
  /** The path messages name (compress writes to a staging file beside the output the user gave). */
  readonly shownAs?: string;
  /** Replace a file at `output` (the user's --force, or a file this compress wrote itself). */
  readonly overwrite: boolean;
  readonly plans: readonly TensorPlan[];
  /** The coded tensors to encode (duplicates left out). */
  readonly unique: readonly CodedPlan[];
  /** Every duplicate's key → its first's key. */
  readonly sameAs: ReadonlyMap<string, string>;
  /** The duplicates that hold their first's transpose. */
  readonly transposed: ReadonlySet<string>;
  readonly half?: HalfKept;
  /** The skeleton (the model minus what the archive holds elsewhere), part by part. */
  readonly skeleton: () => Iterable<Uint8Array>;
  readonly skeletonName: string;
  readonly options: ResolvedOptions;
  /**
   * The quality gate: given the finished archive (its temporary file), measures it; the manifest is then
   * rewritten with the record. Or a fixed record (the model could not be run).
   */
  readonly quality?: QualityRecord | ((file: string) => Promise<QualityRecord>);
  /** Refuse an archive the gate fails: no output (unless `force`), a QualityError. */
  readonly refuse?: boolean;
  /** What the refusal advises first (default: a larger budget). */
  readonly remedy?: string;
  /**
   * `compensate`: layer-input statistics per unique tensor key (codes chosen by error-compensating rounding),
   * and why the others have none (they are rounded to nearest).
   */
  readonly compensation?: {
    readonly stats: ReadonlyMap<string, LayerStatistics>;
    readonly missing: ReadonlyMap<string, string>;
  };
  /** Units encoded by an earlier write of the same compress (rate control's attempts), reused as they are. */
  readonly cache?: EncodeCache;
  /** Per tensor key, each slice's scales as rate control measured them (Allocation.scales): handed to its units. */
  readonly scales?: ReadonlyMap<string, ReadonlyArray<MeasuredScales | undefined>>;
}

/**
 * Encoded units kept between the archives one rate-controlled compress writes: an attempt after the first
 * re-encodes only the tensors whose grid changed (encoding is deterministic, so a unit's bytes are the same).
 * Holds at most `limit` bytes of entries; units with layer statistics are not kept (their key would be the
 * statistics themselves).
 */
export class EncodeCache {
  private readonly units = new Map<string, EncodedTensor | SpilledTensor>();
  private bytes = 0;
  private spill: { fd: number; end: number } | undefined;
  hits = 0;

  /**
   * `limit` bytes of encodings are kept in memory; with `spillDir`, those beyond it are written to a file there
   * (unlinked at once: nothing is left behind by a crash or an interrupt; where the system cannot unlink an open
   * file, nothing is spilled) and read back when reused, up to `spillLimit` bytes of file (the file only grows:
   * an encoding whose grid moved is written anew, so a budget's attempts would take up to ~15 archives of space).
   */
  constructor(
    private readonly limit: number,
    private spillDir?: string,
    private readonly spillLimit = Infinity,
  ) {}

  private static keyOf(unit: EncodeUnit): string | undefined {
    if (unit.compensation || unit.stats) return undefined;
    const { plan, slice } = unit;
    return JSON.stringify([plan.index, plan.settings, plan.codecs, slice ?? null]);
  }

  /** The unit's encoding: kept, or made by `encode` (and kept while there is room, or spilled). */
  async encode(unit: EncodeUnit, encode: (unit: EncodeUnit) => Promise<EncodedTensor>): Promise<EncodedTensor> {
    const key = EncodeCache.keyOf(unit);
    const kept = key !== undefined ? this.units.get(key) : undefined;
    if (kept) {
      this.hits++;
      return 'spilled' in kept ? this.readBack(kept) : kept;
    }
    const made = await encode(unit);
    if (key === undefined) return made;
    const size = made.entries.reduce((n, [, d]) => n + d.byteLength, 0);
    if (this.bytes + size <= this.limit) {
      this.units.set(key, made);
      this.bytes += size;
    } else if (this.spillDir) {
      const spilled = this.write(made, size);
      if (spilled) this.units.set(key, spilled);
    }
    return made;
  }

  /** The spill file's descriptor, opened on first use (undefined: spilling failed, and is off). */
  private file(): { fd: number; end: number } | undefined {
    if (this.spill || !this.spillDir) return this.spill;
    const path = join(this.spillDir, `.nnmedia-cache-${process.pid}-${randomBytes(6).toString('hex')}`);
    let fd: number | undefined;
    try {
      fd = openSync(path, 'wx+', 0o600);
      unlinkSync(path);
      this.spill = { fd, end: 0 };
    } catch {
      // not opened, or not unlinked while open (a file an interrupt would leave behind): no spilling
      if (fd !== undefined)
        try {
          closeSync(fd);
          rmSync(path, { force: true, maxRetries: 2 });
        } catch {
          /* left to the system's own clean-up: nothing was written to it */
        }
      this.spillDir = undefined;
    }
    return this.spill;
  }

  private write(made: EncodedTensor, size: number): SpilledTensor | undefined {
    if ((this.spill?.end ?? 0) + size > this.spillLimit) return undefined;
    const f = this.file();
    if (!f) return undefined;
    const entries: Array<[string, number, number]> = [];
    try {
      for (const [name, data] of made.entries) {
        writeFull(f.fd, data, f.end);
        entries.push([name, f.end, data.byteLength]);
        f.end += data.byteLength;
      }
    } catch {
      // (a full disk: encodings are made again instead)
      this.close();
      this.spillDir = undefined;
      return undefined;
    }
    return {
      coded: made.coded,
      sums: made.sums,
      ...(made.compensation ? { compensation: made.compensation } : {}),
      spilled: entries,
    };
  }

  private readBack(t: SpilledTensor): EncodedTensor {
    const { spilled, ...rest } = t;
    const entries = spilled.map(([name, offset, length]): readonly [string, Uint8Array] => {
      const data = new Uint8Array(length);
      for (let done = 0; done < length;) {
        const n = readSync(this.spill!.fd, data, done, length - done, offset + done);
        if (n <= 0) throw new Error(`encode cache: ${name} cut short at ${done} of ${length} bytes`);
        done += n;
      }
      return [name, data];
    });
    return { ...rest, entries };
  }

  /** Closes the spill file (unlinked: its space is freed), and spills no more. */
  close(): void {
    this.spillDir = undefined;
    if (!this.spill) return;
    const { fd } = this.spill;
    this.spill = undefined;
    // nothing spilled can be read back any more
    for (const [k, v] of this.units) if ('spilled' in v) this.units.delete(k);
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  }
}

/** An encoding whose entries were written to the cache's spill file: where each is, not its bytes. */
type SpilledTensor = Omit<EncodedTensor, 'entries'> & { readonly spilled: ReadonlyArray<readonly [string, number, number]> };

function writeFull(fd: number, data: Uint8Array, position: number): void {
  for (let done = 0; done < data.byteLength;) done += writeSync(fd, data, done, data.byteLength - done, position + done);
}

/** What `compensate` did: tensors whose codes were compensated, and those rounded to nearest, with why. */
export interface CompensationReport {
  readonly compensated: string[];
  readonly fallback: Array<{ tensor: string; reason: string }>;
}

export interface CompressResult {
  manifest: Manifest;
  /** The quality gate's record (also in the manifest). */
  quality?: QualityRecord;
  archiveBytes: number;
  /** Weights in compressed tensors (rank ≥ 2 by role), the denominator of bits/weight. */
  compressedWeights: number;
  bitsPerWeight: number;
  /** With `compensate`: which tensors were compensated and which were rounded to nearest. */
  compensation?: CompensationReport;
}

/** The quality gate's refusal of an archive. */
export function gateError(
  output: string,
  q: QualityRecord,
  kept: boolean,
  smallestPassing?: number,
  words: { head?: string; advice?: string; remedy?: string } = {},
  withoutBudget?: { bitsPerWeight: number; fidelity: number; passed: boolean },
  archive?: Pick<CompressResult, 'archiveBytes' | 'bitsPerWeight'>,
): QualityError {
  const what = `fidelity ${q.fidelity} is under the floor ${q.minFidelity} (worst output ${q.worst}, ${samplesWording(q)})`;
  const remedy = words.remedy ?? 'give a larger budget';
  const then = kept
    ? `the archive was kept (--force${archive ? `, ${archive.archiveBytes.toLocaleString('en-US')} bytes, ${archive.bitsPerWeight.toFixed(3)} bits/weight` : ''})${words.remedy ? `; ${words.remedy}` : ''}`
    : `no output written; ${remedy}, lower --min-fidelity, or --force to keep it`;
  const head = words.head ? `${words.head}: ` : '';
  return new QualityError(
    `${head}${what}: ${then}${words.advice ?? ''}`,
    { file: output },
    {
      fidelity: q.fidelity,
      minFidelity: q.minFidelity,
      kept,
      smallestPassing,
      ...(withoutBudget ? { withoutBudget } : {}),
      ...(kept && archive ? { archive: { bytes: archive.archiveBytes, bitsPerWeight: archive.bitsPerWeight } } : {}),
    },
  );
}

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Encodes one unit here (one job) or on a worker thread; the result is the same either way. */
function unitEncoder(reader: ModelReader, pool?: WorkerPool): (unit: EncodeUnit) => Promise<EncodedTensor> {
  return (unit) =>
    pool
      ? pool.run<EncodedTensor>({ kind: 'encode', file: reader.file, unit, ...sourceRange(reader, unit.plan.entry.key) })
      : encodeUnit(reader, unit);
}

export async function writeArchive(job: ArchiveJob): Promise<CompressResult> {
  const { reader, options } = job;
  const comp = job.compensation;
  const report: CompensationReport | undefined = comp ? { compensated: [], fallback: [] } : undefined;
  // the scales rate control measured, for the units on a step grid (measured slice by slice as they are cut here;
  // scales measured on other rows than the unit's are not handed out)
  const scalesOf = (plan: CodedPlan, slice?: SliceSpec): { scales?: MeasuredScales } => {
    const s = plan.settings.relStep !== undefined ? job.scales?.get(plan.entry.key)?.[slice?.k ?? 0] : undefined;
    const [row, rows] = slice ? [slice.row, slice.rows] : [0, plan.entry.shape[0]];
    return s && s.row === row && s.rows === rows ? { scales: s } : {};
  };
  const units: EncodeUnit[] = job.unique.flatMap((plan): EncodeUnit[] => {
    const slices = slicesOf(plan, options.sliceWeights);
    if (slices) {
      // statistics of a whole tensor do not split by slice here (the H rows would have to follow): nearest
      if (report) report.fallback.push({ tensor: plan.entry.name, reason: 'sliced tensor (statistics not split)' });
      return slices.map((slice) => ({ plan, slice, ...scalesOf(plan, slice) }));
    }
    const stats = comp?.stats.get(plan.entry.key);
    if (report && !stats)
      report.fallback.push({ tensor: plan.entry.name, reason: comp?.missing.get(plan.entry.key) ?? 'no statistics' });
    return [stats ? { plan, compensation: stats } : { plan, ...scalesOf(plan) }];
  });
  const compressedWeights = job.plans.reduce((s, p) => s + (p.kind === 'coded' ? elementCount(p.entry.shape) : 0), 0);
  const pool = poolFor(options.jobs, units.length, compressedWeights);
  const encodeHere = unitEncoder(reader, pool);
  const cache = job.cache;
  const encode = cache ? (unit: EncodeUnit) => cache.encode(unit, encodeHere) : encodeHere;
  const outcomes = new Map<string, TensorOutcome>();
  let manifest: Manifest | undefined;
  const entries: Manifest['entries'] = {};
  let archiveBytes = 0;
  let done = 0;
  const ranges = new RangeCollector();
  // the slices of the tensor being committed, and their error sums
  let slices: SliceRecord[] = [];
  let sums: ErrorSums | undefined;
  try {
    await writeAtomic(
      job.output,
      async (fd, tmp) => {
        const zip = new ZipWriter(fd);
        const put = (name: string, data: Uint8Array, method: ZipMethod): void => {
          entries[name] = { sha256: sha256(data), bytes: data.length };
          zip.add(name, data, method);
        };
        const packs: Record<string, PackMember[]> = {};
        // media are compressed already (stored); the exact side values (index deltas, floats) deflate well
        const packer = new Packer(packs, (name, data) => put(name, data, 'store'));
        const sidePacker = new Packer(packs, (name, data) => put(name, data, 'deflate'));
        const putSide = (name: string, data: Uint8Array): void =>
          data.length <= PACK_MEMBER_MAX ? sidePacker.add(name, data) : put(name, data, 'deflate');
        // with worker threads, a result may wait for an earlier, slower one while the next units run: twice as
        // many units in flight as workers (the waiting results are encoded entries, a fraction of the weights);
        // with one slot per worker a worker sat idle until the unit before its own was committed
        const slots = options.jobs ?? availableParallelism();
        await runOrdered(
          units,
          pool ? 2 * slots : slots,
          (unit) => {
            options.signal?.throwIfAborted();
            return encode(unit);
          },
          (encoded, { plan, slice, compensation }) => {
            options.signal?.throwIfAborted(); // aborted: no more results taken in, whatever is still running
            if (report && compensation && !encoded.compensation)
              report.fallback.push({ tensor: plan.entry.name, reason: 'rotated planes (statistics are in the unrotated basis)' });
            if (report && encoded.compensation) {
              const c = encoded.compensation;
              if (c.rtn === 0 && c.mixed === 0) report.compensated.push(plan.entry.name);
              else if (c.gptq === 0 && c.mixed === 0)
                report.fallback.push({ tensor: plan.entry.name, reason: c.reason ?? 'rounded to nearest' });
              else {
                report.compensated.push(plan.entry.name);
                report.fallback.push({
                  tensor: plan.entry.name,
                  reason: `in part (${c.rtn + c.mixed} of ${c.gptq + c.mixed + c.rtn} planes): ${c.reason ?? ''}`,
                });
              }
            }
            // media are compressed already; the exact side values (index deltas, floats) deflate well
            for (const [name, data] of encoded.entries)
              if (name.endsWith('.bin')) putSide(name, data);
              else if (data.length <= PACK_MEMBER_MAX) packer.add(name, data);
              else put(name, data, 'store');
            const coded = ranges.take(encoded.coded);
            if (!slice) outcomes.set(plan.entry.key, { kind: 'coded', coded });
            else {
              slices.push({ row: slice.row, rows: slice.rows, ...coded });
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
        sidePacker.flush();
        // kept tensors, ranges and a one-part skeleton through brotli as members of the media pack where small
        // (version 4: a small model's archive is then one pack and the manifest, ~110 bytes of ZIP headers and
        // a sha256 fewer per entry; brotli is 1–10 % smaller than deflate or zstd-19 on each of them, measured
        // on Silero VAD v4 and v6, PaddleOCR rec and BlazeFace), else entries of their own as before
        const asMember = (name: string, data: Uint8Array): boolean => {
          const packed = mayPack(data) ? brotliSide(data) : undefined;
          if (!packed || packed.length > PACK_MEMBER_MAX) return false;
          packer.add(name, packed, data.length);
          return true;
        };
        if (job.half && !asMember(HALF_ENTRY, job.half.data)) put(HALF_ENTRY, job.half.data, 'deflate');
        if (ranges.bytes.length) {
          const all = concatBytes(ranges.bytes);
          if (!asMember(RANGES_ENTRY, all)) put(RANGES_ENTRY, all, 'deflate');
        }
        const parts: string[] = [];
        const pieces = [...job.skeleton()];
        // one part: through zstd-19 where that beats deflate (a graph that repeats itself beyond 32 KB)
        const zstd = pieces.length === 1 ? await smallerAsZstd(pieces[0]) : undefined;
        const br = pieces.length === 1 && mayPack(pieces[0]) ? brotliSide(pieces[0]) : undefined;
        if (br && br.length <= PACK_MEMBER_MAX && br.length < (zstd?.length ?? Infinity)) {
          packer.add(job.skeletonName, br, pieces[0].length);
          parts.push(job.skeletonName);
        } else if (zstd) {
          const name = job.skeletonName + ZSTD_SKELETON_SUFFIX;
          if (zstd.length <= PACK_MEMBER_MAX) packer.add(name, zstd);
          else put(name, zstd, 'store');
          parts.push(name);
        } else
          for (const part of pieces) {
            const name = parts.length ? `${job.skeletonName}.${parts.length}` : job.skeletonName;
            put(name, part, 'deflate');
            parts.push(name);
            options.signal?.throwIfAborted();
          }
        packer.flush();
        for (const [key, first] of job.sameAs)
          outcomes.set(key, { kind: 'same', sameAs: first, ...(job.transposed.has(key) && { transposed: true as const }) });
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
          sourceSha: await job.sourceSha,
          skeleton: parts,
          options: options.echo,
          tensors,
          entries,
          packs,
          quality: typeof job.quality === 'object' ? job.quality : undefined,
        });
        zip.add(MANIFEST_NAME, Buffer.from(manifestJson(manifest)), 'deflate');
        zip.finish();
        if (typeof job.quality === 'function') {
          // the archive is complete: decoded and measured as a user would, then its manifest gets the verdict
          const quality = await job.quality(tmp);
          manifest = { ...manifest, quality };
          zip.dropLast();
          zip.add(MANIFEST_NAME, Buffer.from(manifestJson(manifest)), 'deflate');
          zip.finish();
          if (job.refuse && quality.passed === false && !options.force)
            throw gateError(job.shownAs ?? job.output, quality, false, undefined, { remedy: job.remedy });
        }
        archiveBytes = zip.bytesWritten;
      },
      { overwrite: job.overwrite, signal: options.signal },
    );
  } finally {
    await pool?.close();
  }
  if (report) {
    const list = report.fallback.map((f) => `${f.tensor} (${f.reason})`).join(', ');
    options.onLog?.(
      `compensate: ${report.compensated.length} tensor${report.compensated.length === 1 ? '' : 's'} error-compensated, ` +
        `${report.fallback.length} rounded to nearest${list ? `: ${list}` : ''}`,
    );
  }
  const result: CompressResult = {
    ...(report ? { compensation: report } : {}),
    manifest: manifest!,
    quality: manifest!.quality,
    archiveBytes,
    compressedWeights,
    bitsPerWeight: compressedWeights ? (archiveBytes * 8) / compressedWeights : 0,
  };
  if (job.refuse && manifest?.quality?.passed === false && options.force)
    throw gateError(job.shownAs ?? job.output, manifest.quality, true, undefined, { remedy: job.remedy }, undefined, result);
  return result;
}
