import { extname } from 'node:path';
import { printJson } from './json-out.js';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { codedParts, ownEntries, tileEntries, type QualityRecord } from '../archive/manifest.js';
import { zeroChannelsOf } from '../archive/decode.js';
import { describeQuality, oneSidedWarning } from '../pipeline/gate.js';
import { elementCount } from '../formats/model.js';
import { BYTES_PER_ELEMENT } from '../formats/model.js';
import { planeShapes } from '../layout/planes.js';
import { channelView } from '../layout/channels.js';
import type { LayoutSpec } from '../layout/types.js';
import { Archive } from '../archive/node.js';
import { MODEL_FORMATS, modelBytes, openModel } from '../formats/registry.js';
import { DEFAULT_SLICE_WEIGHTS } from '../pipeline/options.js';
import { planTensors, slicesOf } from '../pipeline/plan.js';
import { halfKept } from '../pipeline/half.js';
import { isZipFile } from '../archive/zip.js';
import { archiveScopes, scopedNames, subgraphScopes } from '../report/scopes.js';
import { BadModelError, CorruptArchiveError } from '../errors.js';
import { checkInputFile, fsError } from '../io/files.js';
import { getFfmpegInfo } from './ffmpeg-info.js';
import { formatTable, printable } from './table.js';
import { archiveTotals, bitsPerWeightText, count, reasonCounts, sizeChange } from './totals.js';

export interface InspectOptions {
  json?: boolean;
  /** List every tensor, kept ones included (by default they are summed up in one line). */
  all?: boolean;
}

/** The first bytes of a file (fewer if it is shorter). */
function head(file: string, n: number): Uint8Array {
  const b = new Uint8Array(n);
  try {
    const fd = openSync(file, 'r');
    try {
      return b.subarray(0, readSync(fd, b, 0, n, 0));
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw fsError('cannot read', file, e);
  }
}

/**
 * Whether a file is an nnmedia archive or a model, for the commands that take either (`inspect`, `view`): by
 * its extension, else by its first bytes. A damaged archive still counts as one (refused as corrupt, not as an
 * unknown model), and a file that is neither is refused as such.
 */
export function fileKind(file: string): 'archive' | 'model' {
  const { size } = checkInputFile(file, 'archive or model');
  const ext = extname(file).toLowerCase();
  if (ext === '.nnm') return 'archive';
  if (MODEL_FORMATS.some((f) => f.extension === ext)) return 'model';
  const first = head(file, 9);
  if (first[0] === 0x50 && first[1] === 0x4b && first[2] === 0x03 && first[3] === 0x04) return 'archive';
  if (MODEL_FORMATS.some((f) => f.sniff(first))) return 'model';
  if (size >= 22 && isZipFile(file)) return 'archive';
  throw new BadModelError(
    `${size === 0 ? 'empty file (0 bytes)' : 'unknown format'}: neither an nnmedia archive (.nnm) nor a model (${MODEL_FORMATS.map(
      (f) => f.extension,
    )
      .reverse()
      .join(', ')})`,
    { file },
  );
}

export async function inspectPath(file: string, options: InspectOptions = {}): Promise<void> {
  if (fileKind(file) === 'archive') return inspectArchive(file, options);
  const reader = openModel(file);
  try {
    const plans = planTensors(reader, {});
    // kept tensors as compress keeps them by default: float16 where that is safe (pipeline/half.ts), else exact
    const half = halfKept(reader, plans, DEFAULT_SLICE_WEIGHTS)?.outcomes;
    const rows = plans.map((p) => ({
      name: p.entry.name,
      role: p.role,
      reason: p.reason,
      dtype: p.entry.dtype,
      shape: p.entry.shape,
      weights: elementCount(p.entry.shape),
      bytes: elementCount(p.entry.shape) * BYTES_PER_ELEMENT[p.entry.dtype],
      planes: p.kind === 'coded' ? planeShapes(p.layout).map((s) => `${s.rows}×${s.cols}`) : [],
      // coded in this many slices at the default slice size (memory follows the slice)
      slices: slicesOf(p, DEFAULT_SLICE_WEIGHTS)?.length ?? 1,
      ...(p.kind === 'coded' ? {} : { kept: half?.has(p.entry.key) ? ('float16' as const) : ('exact' as const) }),
    }));
    // names a model repeats in its subgraphs (Silero v6's two If branches) told apart by where they sit
    const scoped = scopedNames(
      plans.map((p) => ({ name: p.entry.name, location: reader.format === 'onnx' ? p.entry.location : undefined })),
      () => subgraphScopes(readFileSync(file)),
    );
    const shownName = new Map(rows.map((r, i) => [r, scoped.names[i]]));
    rows.forEach((r, i) => {
      if (scoped.scopes[i]) Object.assign(r, { scope: scoped.scopes[i] });
    });
    const coded = rows.filter((r) => r.planes.length > 0);
    const kept = rows.filter((r) => r.planes.length === 0);
    const keptHalf = kept.filter((r) => r.kept === 'float16');
    const keptExact = kept.filter((r) => r.kept !== 'float16');
    const totals = {
      tensors: rows.length,
      compressedTensors: coded.length,
      keptTensors: kept.length,
      compressedWeights: coded.reduce((s, r) => s + r.weights, 0),
      keptWeights: kept.reduce((s, r) => s + r.weights, 0),
      modelBytes: modelBytes(file, reader),
    };
    if (options.json) {
      printJson(JSON.stringify({ file, format: reader.format, totals, tensors: rows }, null, 1));
      return;
    }
    const external = reader.externalFiles?.length ?? 0;
    console.log(
      `${file}: ${reader.format}, ${count(totals.modelBytes)} bytes${external ? ` with ${external} external data file${external > 1 ? 's' : ''}` : ''}, ${rows.length} floating-point tensors\n`,
    );
    const shown = options.all ? rows : coded;
    if (shown.length)
      console.log(
        formatTable(
          ['tensor', 'role', 'shape', 'dtype', 'bytes', 'media geometry', 'why'],
          shown.map((r) => [
            shownName.get(r) ?? r.name,
            r.role,
            r.shape.join('×'),
            r.dtype,
            String(r.bytes),
            (r.planes.length > 1
              ? `${r.planes.length} × ${r.planes[0]}`
              : (r.planes[0] ?? (r.kept === 'float16' ? 'kept as float16' : 'kept exact'))) +
              (r.slices > 1 ? ` in ${r.slices} slices` : ''),
            r.reason,
          ]),
        ),
      );
    console.log('');
    const lines = [
      [
        'to compress',
        coded.length
          ? `${count(coded.length)} tensors (${count(totals.compressedWeights)} weights)`
          : 'nothing: no floating-point tensor was found to be a weight matrix or kernel (integer tensors, such as an already quantized model’s weights, stay in the skeleton; --config rules give a tensor a role)',
      ],
      ...[
        ['kept exact', keptExact],
        ['kept float16', keptHalf],
      ]
        .filter(([, k]) => k.length)
        .map(([label, k]) => {
          const list = k as typeof kept;
          return [
            label as string,
            `${count(list.length)} tensor${list.length === 1 ? '' : 's'} (${count(list.reduce((n, r) => n + r.weights, 0))} weights): ${reasonCounts(list.map((r) => r.reason))}${options.all ? '' : '; --all lists them'}`,
          ];
        }),
    ];
    console.log(formatTable(['', ''], lines, { header: false }));
  } finally {
    reader.close();
  }
}

/**
 * The codec column of the table: a lossless codec by its name alone (its codes are exact; the quantization's error
 * is in the SNR column, and "lossless" beside it read as if the weights were), a lossy one with "lossy".
 */
function humanCodec(codec: string): string {
  return codec.replace(/ lossless\b/g, '').replace(/ q(\d*)\b/g, ' lossy q$1');
}

function inspectArchive(file: string, options: InspectOptions): void {
  const a = new Archive(file);
  try {
    const m = a.manifest;
    const sizes = a.entrySizes();
    const rows = m.tensors.map((t) => {
      const n = elementCount(t.shape);
      const bytes = [...ownEntries(t)].reduce((s, e) => s + (sizes.get(e) ?? 0), 0);
      // a sliced tensor: its slices' geometry and codecs (auto can pick a different one per slice)
      const parts = codedParts(t).map((c) => c.record);
      const codecs = [
        ...new Set(
          parts
            .filter((c) => c.codec)
            .map((c) => `${c.codec!.name}${c.codec!.lossless ? ' lossless' : ` q${c.codec!.quality ?? ''}`}`),
        ),
      ];
      // output channels of zeros left out of the planes: added up over slices of output channels (an [out, …]
      // tensor's); slices of an [in, out] tensor's input rows each leave out their own, the most of them is said
      const zeroChannels = parts.reduce((z, c) => {
        const zero = zeroChannelsOf(c, (message: string): never => {
          throw new CorruptArchiveError(message, { file, tensor: t.name });
        });
        if (!zero) return z;
        const l = c.layout!;
        const left = zero.view.channels - channelView(l)!.channels;
        const byOutput = (l.kind === 'fc' || l.kind === 'conv') && l.order === 'out_in';
        return byOutput ? z + left : Math.max(z, left);
      }, 0);
      const geometry = (parts[0].planes ?? []).map(
        (p) =>
          `${p.rows}×${p.cols}${p.tiles.length > 1 ? ` in ${p.tiles.length} tiles` : ''}${zeroChannels ? ` (${zeroChannels} output channel${zeroChannels === 1 ? '' : 's'} of zeros left out)` : ''}`,
      );
      return {
        name: t.name,
        role: t.role,
        shape: t.shape,
        ...(t.layout ? { layout: t.layout } : {}),
        geometry: t.slices ? geometry.map((g) => `${t.slices!.length} slices, the first ${g}`) : geometry,
        codec: t.sameAs
          ? `same as ${t.sameAs}${t.transposed ? ', transposed' : ''}`
          : codecs.length
            ? codecs.join(' / ')
            : t.half
              ? 'kept as float16'
              : 'kept exact',
        bits: parts[0].quant?.bits,
        range: parts[0].quant?.range,
        bytes,
        bitsPerWeight: t.layout ? (bytes * 8) / n : undefined,
        stats: t.stats,
        kept: !t.layout,
        reason: t.reason,
        ...(zeroChannels ? { zeroChannels } : {}),
      };
    });
    // names a model repeats in its subgraphs (Silero v6's two If branches) told apart by where they sit
    const scopes = archiveScopes(a);
    rows.forEach((r, i) => {
      if (scopes[i]) Object.assign(r, { scope: scopes[i] });
    });
    const totals = archiveTotals(m, checkInputFile(file, 'archive').size, sizes);
    const failed = verifyEntries(a);
    const info = {
      file,
      source: m.source,
      createdBy: m.createdBy,
      options: m.options,
      ffmpeg: getFfmpegInfo(),
      totals,
      checksums: { entries: Object.keys(m.entries).length, failed },
      quality: m.quality,
      tensors: rows,
    };
    if (options.json) printJson(JSON.stringify(info, (_k, v) => (v === Infinity ? 'Infinity' : v), 1));
    else printArchive(file, info, rows, options);
    if (failed.length)
      throw new CorruptArchiveError(
        `${failed.length} of ${info.checksums.entries} entries fail their checksum: ${failed
          .slice(0, 3)
          .map((f) => `${f.entry}${f.tensor ? ` (tensor${f.entry in (m.packs ?? {}) ? 's' : ''} ${f.tensor})` : ''}`)
          .join(', ')}${failed.length > 3 ? ', …' : ''}; the archive is damaged: decompress refuses it`,
        { file },
      );
  } finally {
    a.close();
  }
}

/** Every entry against its CRC-32 and the manifest's sha256: the entries that fail, with the tensor each belongs to. */
function verifyEntries(a: Archive): Array<{ entry: string; tensor?: string; problem: string }> {
  const owner = new Map<string, string>();
  for (const t of a.manifest.tensors) {
    for (const e of tileEntries(t)) owner.set(e, t.name);
    for (const { record } of codedParts(t)) if (record.nonFinite) owner.set(record.nonFinite, t.name);
  }
  // a pack (format version 2) belongs to the tensors of its members
  for (const [pack, members] of Object.entries(a.manifest.packs ?? {})) {
    const tensors = [...new Set(members.map(([m]) => owner.get(m)).filter((t) => t !== undefined))];
    if (tensors.length)
      owner.set(pack, `${tensors.slice(0, 3).join(', ')}${tensors.length > 3 ? `, … ${tensors.length} tensors` : ''}`);
  }
  const failed: Array<{ entry: string; tensor?: string; problem: string }> = [];
  for (const entry of Object.keys(a.manifest.entries))
    try {
      a.checkEntry(entry);
    } catch (e) {
      if (!(e instanceof CorruptArchiveError)) throw e;
      failed.push({ entry, tensor: owner.get(entry), problem: e.message.replace(/^file [^:]*: /, '') });
    }
  return failed;
}

interface ArchiveRow {
  name: string;
  /** The subgraph of a name the model repeats ("If_0 else_branch", "main graph"). */
  scope?: string;
  role: string;
  shape: number[];
  /** The layout its planes are made by (fc, conv, lstm, gru, stack; the manifest's record). */
  layout?: LayoutSpec;
  geometry: string[];
  codec: string;
  bits?: number;
  bytes: number;
  bitsPerWeight?: number;
  stats?: { maxAbs: number; rmse: number; snrDb: number };
  kept: boolean;
  reason: string;
}

function printArchive(
  file: string,
  info: {
    createdBy: string;
    source: { format: string; file: string; bytes: number };
    ffmpeg: { path: string; version: string; source: string } | undefined;
    totals: ReturnType<typeof archiveTotals>;
    checksums: { entries: number; failed: unknown[] };
    quality?: QualityRecord;
    options?: Record<string, unknown>;
  },
  rows: ArchiveRow[],
  options: InspectOptions,
): void {
  const { totals: t, ffmpeg: ff } = info;
  console.log(
    printable(`${file}: ${info.createdBy}, ${info.source.format} source ${info.source.file} (${count(info.source.bytes)} bytes)`),
  );
  console.log(`ffmpeg for video/audio: ${ff ? `${ff.path} (${ff.version}, ${ff.source})` : 'none found'}\n`);
  const shown = options.all ? rows : rows.filter((r) => !r.kept);
  if (shown.length)
    console.log(
      formatTable(
        ['tensor', 'role', 'shape', 'media geometry', 'codec', 'bits', 'bytes', 'bits/w', 'max abs', 'RMSE', 'SNR dB'],
        shown.map((r) => [
          r.scope ? `${r.name} (${r.scope})` : r.name,
          r.role,
          r.shape.join('×'),
          r.geometry.length > 1 ? `${r.geometry.length} × ${r.geometry[0]}` : (r.geometry[0] ?? ''),
          // (a shared tensor's cell names another tensor, which is not a codec)
          r.codec.startsWith('same as ') ? r.codec : humanCodec(r.codec),
          r.bits ? String(r.bits) : '',
          String(r.bytes),
          r.bitsPerWeight !== undefined ? r.bitsPerWeight.toFixed(2) : '',
          r.stats ? r.stats.maxAbs.toExponential(2) : '',
          r.stats ? r.stats.rmse.toExponential(2) : '',
          r.stats ? (Number.isFinite(r.stats.snrDb) ? r.stats.snrDb.toFixed(1) : '∞') : '',
        ]),
      ),
    );
  const kept = rows.filter((r) => r.kept);
  const lines = [
    [
      'compressed',
      `${count(t.compressedTensors)} tensors${t.duplicates ? ` (${count(t.duplicates)} stored once for an identical one${t.transposed ? ` or its transpose: ${count(t.transposed)} transposed` : ''})` : ''}, ${count(t.compressedWeights)} weights in ${count(t.mediaBytes)} bytes of media${t.sideBytes ? ` and ${count(t.sideBytes)} bytes of exact side values (outliers, non-finite weights)` : ''}`,
    ],
    ...(kept.length
      ? [
          [
            'kept',
            `${count(kept.length)} tensors (${count(t.keptWeights)} weights)` +
              (!t.keptHalf
                ? ' exact'
                : t.keptExact
                  ? `, ${count(t.keptExact)} exact and ${count(t.keptHalf)} as float16`
                  : ' as float16') +
              `: ${reasonCounts(kept.map((r) => r.reason))}${options.all ? '' : '; --all lists them'}`,
          ],
        ]
      : []),
    ['archive', `${count(t.archiveBytes)} bytes, source ${count(t.sourceBytes)} bytes: ${sizeChange(t.ratio)}`],
    ['bits per weight', `${bitsPerWeightText(t)} (all archive bytes × 8 / compressed weights)`],
    // the quality gate's verdict, recorded when the archive was written (older archives have none)
    ...qualityLines(info.quality),
    ...escalationLines(info.options?.escalated),
    [
      'checksums',
      info.checksums.failed.length
        ? `${info.checksums.failed.length} of ${info.checksums.entries} entries FAIL`
        : info.checksums.entries === 1
          ? 'its 1 entry verified (CRC-32 and sha256)'
          : `all ${info.checksums.entries} entries verified (CRC-32 and sha256)`,
    ],
  ];
  console.log('');
  console.log(formatTable(['', ''], lines, { header: false }));
}

/** What compress did when the gate refused the default grid (compress.ts: the options record's `escalated`). */
function escalationLines(e: unknown): string[][] {
  const x = e as { fidelity?: number; bitsPerWeight?: number; by?: string } | undefined;
  if (!x || typeof x !== 'object') return [];
  const how = x.by === 'allocation' ? 'finer grids allocated across layers, 16-bit codes where the probes asked for them' : x.by;
  return [
    [
      'escalated',
      `the default 8-bit grid gave fidelity ${x.fidelity} at ${x.bitsPerWeight} bits/weight, under the floor; written with ${how}`,
    ],
  ];
}

/** The quality gate's record as summary lines: the verdict, the data it was measured on, untaken branches. */
function qualityLines(q: QualityRecord | undefined): string[][] {
  if (!q) return [['quality', 'not recorded (an archive from before the quality gate)']];
  return [
    ['quality', describeQuality(q)],
    ...(q.synthetic ? [['', 'measured on SYNTHETIC inputs: give real ones with --calibration PATH']] : []),
    ...(oneSidedWarning(q) ? [['', `weak evidence: ${oneSidedWarning(q)}`]] : []),
    ...(q.calibration ? [['calibration', q.calibration]] : []),
    ...(q.untakenBranches?.length ? [['branches', `never taken (default grid): ${q.untakenBranches.join(', ')}`]] : []),
  ];
}
