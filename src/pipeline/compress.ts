/**
 * compress: model file → classify → lay out (M2–M4) → quantize (M1) → encode
 * (M8) → .nnm archive. Every tensor is decoded again right after encoding so
 * the manifest records the true error, and a lossless path that is not
 * bit-exact is caught here rather than in the user's model.
 */

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { getCodec, resolveCodecOptions } from '../codecs/registry.js';
import type { Codec, CodecOptions } from '../codecs/types.js';
import { CodecError, NnmediaError, UnsupportedError } from '../errors.js';
import type { ModelReader, TensorEntry } from '../formats/model.js';
import { elementCount } from '../formats/model.js';
import { gatherPlanes, planeShapes, scatterPlanes } from '../layout/planes.js';
import { cutTile, pasteTile, tileGrid } from '../layout/tiles.js';
import type { LayoutSpec } from '../layout/types.js';
import {
  allocCodes,
  collectNonFinite,
  dequantizePlane,
  findRanges,
  quantizePlane,
  restoreNonFinite,
} from '../quantize/uniform.js';
import type { CodeArray, NonFiniteSide, PlaneRanges } from '../quantize/uniform.js';
import { classifyTensor, layoutForRole } from '../roles/classify.js';
import { errorStats } from '../eval/metrics.js';
import { FORMAT_VERSION, MANIFEST_NAME, type Manifest, type PlaneRecord, type TensorRecord } from '../archive/manifest.js';
import { ZipWriter } from '../archive/zip.js';
import { checkOutputPath, writeAtomic } from '../io/atomic.js';
import { type CompressOptions, DEFAULTS, type EncodeSettings, checkCompressOptions, rulesFor } from './options.js';
import { openModel } from './open.js';
import { VERSION } from '../version.js';
import { runPool } from './pool.js';

export interface TensorPlan {
  entry: TensorEntry;
  record: TensorRecord;
  settings?: EncodeSettings;
  codec?: Codec;
  codecOptions?: CodecOptions;
}

export interface CompressResult {
  manifest: Manifest;
  archiveBytes: number;
  /** Weights in compressed tensors (rank ≥ 2 by role), the denominator of bits/weight. */
  compressedWeights: number;
  bitsPerWeight: number;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function safeName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80) || 'tensor';
}

export function encodeRanges(r: PlaneRanges): string {
  const both = new Float32Array(r.mins.length * 2);
  both.set(r.mins, 0);
  both.set(r.maxs, r.mins.length);
  return Buffer.from(both.buffer).toString('base64');
}

/** Decides role, layout and settings of every tensor; checks every request before any codec runs. */
export function planTensors(reader: ModelReader, options: CompressOptions): TensorPlan[] {
  return reader.tensors.map((entry) => {
    const rule = rulesFor(entry.name, options.rules);
    let cls = classifyTensor(entry, reader.format);
    if (rule.role) {
      const layout = rule.role === 'other' ? undefined : layoutForRole(rule.role, entry.shape, rule.order ?? 'out_in');
      if (rule.role !== 'other' && !layout)
        throw new UnsupportedError(`role ${rule.role} does not fit shape [${entry.shape}]`, {
          file: reader.file,
          tensor: entry.name,
        });
      cls = { role: rule.role, layout, reason: 'config rule' };
    }
    const record: TensorRecord = {
      key: entry.key,
      name: entry.name,
      dtype: entry.dtype,
      shape: [...entry.shape],
      role: cls.role,
      reason: cls.reason,
      storage: reader.storage(entry.key),
    };
    if (cls.role === 'other' || !cls.layout) return { entry, record };
    const settings: EncodeSettings = {
      media: rule.media ?? options.media ?? DEFAULTS.media,
      codec: rule.codec ?? options.codec ?? DEFAULTS.codec,
      bits: rule.bits ?? options.bits ?? DEFAULTS.bits,
      quality: rule.quality ?? options.quality,
      lossless: rule.lossless ?? options.lossless,
      effort: options.effort,
      range: rule.range ?? options.range ?? DEFAULTS.range,
    };
    const ctx = { file: reader.file, tensor: entry.name };
    const codec = getCodec(settings.codec, ctx);
    if (codec.media !== settings.media)
      throw new UnsupportedError(`codec ${codec.name} is a ${codec.media} codec, not ${settings.media}`, ctx);
    const codecOptions = resolveCodecOptions(codec, settings.bits, settings, ctx);
    record.layout = cls.layout;
    return { entry, record, settings, codec, codecOptions };
  });
}

interface EncodedTensor {
  entries: Array<[string, Uint8Array]>;
}

function encodeNonFinite(side: NonFiniteSide): Uint8Array {
  const out = new Uint8Array(4 + side.indices.length * 8);
  const view = new DataView(out.buffer);
  view.setUint32(0, side.indices.length, true);
  side.indices.forEach((v, i) => view.setUint32(4 + i * 4, v, true));
  side.values.forEach((v, i) => view.setFloat32(4 + side.indices.length * 4 + i * 4, v, true));
  return out;
}

/** Lays out, quantizes, encodes one tensor and decodes it again to measure the error. */
async function encodeTensor(
  reader: ModelReader,
  plan: TensorPlan,
  index: number,
  options: CompressOptions,
): Promise<EncodedTensor> {
  const { entry, record, settings, codec, codecOptions } = plan;
  if (!settings || !codec || !codecOptions || !record.layout) throw new Error('encodeTensor called on a kept tensor');
  const ctx = { file: reader.file, tensor: entry.name };
  const layout: LayoutSpec = record.layout;
  const values = reader.read(entry.key);
  const side = collectNonFinite(values, options.nonFinite ?? 'error', reader.file, entry.name);
  const planes = gatherPlanes(values, layout, (n) => new Float32Array(n));
  const shapes = planeShapes(layout);
  const dir = `tensors/${String(index).padStart(4, '0')}-${safeName(entry.name)}`;
  const entries: Array<[string, Uint8Array]> = [];
  const restoredPlanes: Float32Array[] = [];
  const planeRecords: PlaneRecord[] = [];
  const ranges: string[] = [];
  const widths: number[] = [];
  let bytes = 0;
  for (let p = 0; p < planes.length; p++) {
    options.signal?.throwIfAborted();
    const s = shapes[p];
    const r = findRanges(planes[p], s.rows, s.cols, settings.range, s.channelWidth);
    ranges.push(encodeRanges(r));
    widths.push(r.channelWidth);
    const codes = quantizePlane(planes[p], s.rows, s.cols, settings.bits, r);
    const decoded = allocCodes(settings.bits, codes.length) as CodeArray;
    const record: PlaneRecord = { label: s.label, rows: s.rows, cols: s.cols, tiles: [] };
    const grid = tileGrid(s.rows, s.cols, codec.maxHeight, codec.maxWidth);
    for (let t = 0; t < grid.length; t++) {
      const rect = grid[t];
      const tile = cutTile(codes, s.cols, rect, (n) => allocCodes(settings.bits, n)) as CodeArray;
      let data: Uint8Array;
      let back: CodeArray;
      try {
        data = await codec.encode({ width: rect.cols, height: rect.rows, bits: settings.bits, data: tile }, codecOptions);
        back = await codec.decode(data, { width: rect.cols, height: rect.rows, bits: settings.bits });
      } catch (e) {
        if (e instanceof NnmediaError) throw new CodecError(e.message, ctx, e);
        throw e;
      }
      if (codecOptions.lossless) {
        for (let i = 0; i < tile.length; i++)
          if (tile[i] !== back[i])
            throw new CodecError(`${codec.name} lossless round trip is not exact at plane ${p}, tile ${t}, pixel ${i}`, ctx);
      }
      pasteTile(decoded, s.cols, rect, back);
      const name = `${dir}/p${p}${grid.length > 1 ? `-t${t}` : ''}.${codec.ext}`;
      entries.push([name, data]);
      bytes += data.length;
      record.tiles.push({ ...rect, entry: name });
    }
    planeRecords.push(record);
    restoredPlanes.push(dequantizePlane(decoded, s.rows, s.cols, settings.bits, r));
  }
  const restored = scatterPlanes(restoredPlanes, layout, new Float32Array(values.length));
  restoreNonFinite(restored, side);
  if (side) {
    const name = `${dir}/nonfinite.bin`;
    const data = encodeNonFinite(side);
    entries.push([name, data]);
    bytes += data.length;
    record.nonFinite = name;
  }
  record.quant = { bits: settings.bits, range: settings.range, ranges, channelWidth: widths };
  record.codec = {
    name: codec.name,
    media: codec.media,
    lossless: codecOptions.lossless ?? false,
    ...(codecOptions.quality !== undefined ? { quality: codecOptions.quality } : {}),
    ...(codecOptions.effort !== undefined ? { effort: codecOptions.effort } : {}),
  };
  record.planes = planeRecords;
  record.stats = errorStats(values, restored);
  record.bytes = bytes;
  return { entries };
}

/** Hash of a tensor's values and shape: identical tensors are stored once. */
function contentHash(reader: ModelReader, plan: TensorPlan): string {
  const v = reader.read(plan.entry.key);
  return createHash('sha256')
    .update(JSON.stringify([plan.entry.shape, plan.record.layout, plan.settings]))
    .update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    .digest('hex');
}

export async function compressModel(input: string, output: string, options: CompressOptions = {}): Promise<CompressResult> {
  checkCompressOptions(options);
  checkOutputPath(output, [input]);
  const reader = openModel(input);
  try {
    const plans = planTensors(reader, options);
    const work = plans.filter((p) => p.settings);
    // Identical tensors (e.g. a model's branches that share weights) are encoded once.
    const firstByHash = new Map<string, TensorPlan>();
    const unique: TensorPlan[] = [];
    for (const p of work) {
      const h = contentHash(reader, p);
      const first = firstByHash.get(h);
      if (first) p.record.sameAs = first.record.key;
      else {
        firstByHash.set(h, p);
        unique.push(p);
      }
    }
    const encoded = new Map<TensorPlan, EncodedTensor>();
    let done = 0;
    await runPool(unique, options.jobs ?? availableParallelism(), async (plan) => {
      options.signal?.throwIfAborted();
      encoded.set(plan, await encodeTensor(reader, plan, plans.indexOf(plan), options));
      options.onProgress?.({ done: ++done, total: unique.length, tensor: plan.entry.name });
    });
    for (const p of work) {
      if (!p.record.sameAs) continue;
      const first = plans.find((q) => q.record.key === p.record.sameAs)!;
      p.record.stats = first.record.stats;
      p.record.bytes = 0;
    }
    const stripped = new Set(work.map((p) => p.entry.key));
    const skeletonName = `model/skeleton.${reader.format}`;
    const skeleton = reader.skeleton(stripped);
    const sourceBytes = readFileSync(input);
    const manifest: Manifest = {
      format: 'nnmedia',
      version: FORMAT_VERSION,
      createdBy: `nnmedia ${VERSION}`,
      source: { format: reader.format, file: basename(input), bytes: statSync(input).size, sha256: sha256(sourceBytes) },
      skeleton: skeletonName,
      options: {
        media: options.media ?? DEFAULTS.media,
        codec: options.codec ?? DEFAULTS.codec,
        bits: options.bits ?? DEFAULTS.bits,
        range: options.range ?? DEFAULTS.range,
        ...(options.quality !== undefined ? { quality: options.quality } : {}),
        ...(options.lossless !== undefined ? { lossless: options.lossless } : {}),
        nonFinite: options.nonFinite ?? 'error',
        rules: options.rules ?? [],
      },
      tensors: plans.map((p) => p.record),
      entries: {},
    };
    const ordered: Array<[string, Uint8Array, 'store' | 'deflate']> = [];
    for (const p of unique) for (const [name, data] of encoded.get(p)!.entries) ordered.push([name, data, 'store']);
    ordered.push([skeletonName, skeleton, 'deflate']);
    for (const [name, data] of ordered) manifest.entries[name] = { sha256: sha256(data), bytes: data.length };
    let archiveBytes = 0;
    options.signal?.throwIfAborted();
    await writeAtomic(output, (fd) => {
      const zip = new ZipWriter(fd);
      for (const [name, data, method] of ordered) zip.add(name, data, method);
      zip.add(MANIFEST_NAME, Buffer.from(JSON.stringify(manifest, null, 1)), 'deflate');
      zip.finish();
      archiveBytes = zip.bytesWritten;
    });
    const compressedWeights = work.reduce((s, p) => s + elementCount(p.entry.shape), 0);
    return {
      manifest,
      archiveBytes,
      compressedWeights,
      bitsPerWeight: compressedWeights ? (archiveBytes * 8) / compressedWeights : 0,
    };
  } finally {
    (reader as { close?: () => void }).close?.();
  }
}
