/**
 * The manifest, assembled once at the end from the plans and what was done with each tensor (its
 * TensorOutcome): nothing earlier writes into a record. The field order of every record is fixed here
 * (it is part of the archive's bytes).
 */

import { basename } from 'node:path';
import {
  RAW_FALLBACK,
  formatVersionOf,
  type CodecRecord,
  type Manifest,
  type PlaneRecord,
  type QualityRecord,
  type TensorRecord,
} from '../archive/manifest.js';
import { recordedStats, type ErrorStats } from '../eval/metrics.js';
import type { ModelFormat } from '../formats/model.js';
import type { LayoutSpec } from '../layout/types.js';
import { encodeRanges, type PlaneQuantization } from '../quantize/tensor.js';
import { VERSION } from '../version.js';
import type { EncodedMedia } from './media.js';
import type { TensorSettings } from './options.js';
import type { CodedTensor, TensorOutcome, TensorPlan } from './stages.js';

/** The coding record of one coded tensor or slice. */
export function codedRecord(parts: {
  layout: LayoutSpec;
  /** Output channels of zeros left out of the planes (layout/channels.ts). */
  zeroChannels?: Uint8Array;
  settings: TensorSettings;
  quant: readonly PlaneQuantization[];
  stride: number;
  seeds?: readonly number[];
  /** The steps are the model's own QuantizeLinear scales (model-grid.ts). */
  modelGrid?: boolean;
  media: EncodedMedia;
  auto: boolean;
  /** The plane records with their entries' full names. */
  planes: PlaneRecord[];
  /** The exact side entry and how many weights it holds. */
  exact?: { entry: string; count: number };
  stats: ErrorStats;
  bytes: number;
}): CodedTensor {
  const { settings: s, media, quant, stride, seeds } = parts;
  const codec: CodecRecord = {
    name: media.codec.name,
    media: media.codec.media,
    lossless: media.options.lossless ?? false,
    ...(media.options.quality !== undefined ? { quality: media.options.quality } : {}),
    ...(media.options.effort !== undefined ? { effort: media.options.effort } : {}),
    ...(parts.auto && media.codec.media === 'raw' ? { fallback: RAW_FALLBACK } : {}),
    ...(media.codec.media === 'video' ? { gop: media.options.gop ?? 'intra' } : {}),
  };
  return {
    layout: parts.layout,
    ...(parts.zeroChannels ? { zeroChannels: Buffer.from(parts.zeroChannels).toString('base64') } : {}),
    ...(parts.exact ? { nonFinite: parts.exact.entry, exactValues: parts.exact.count } : {}),
    quant: {
      bits: s.bits,
      range: s.range,
      ranges: quant.map((q) => encodeRanges(q.ranges, q.rangeDtype, q.stepBytes)),
      rangeDtype: quant.map((q) => q.rangeDtype),
      channelWidth: quant.map((q) => q.ranges.channelWidth),
      ...(stride > 1 ? { stride } : {}),
      ...(s.clip ? { clip: true } : {}),
      ...(s.outliers > 0 ? { outlierSigma: s.outliers } : {}),
      ...(s.relStep !== undefined ? { relStep: s.relStep } : {}),
      ...(seeds ? { rotation: { kind: 'hadamard' as const, seeds: [...seeds] } } : {}),
      ...(parts.modelGrid ? { modelGrid: true } : {}),
    },
    codec,
    planes: parts.planes,
    stats: recordedStats(parts.stats),
    bytes: parts.bytes,
  };
}

/** A tensor's record: what the plan says of it, then what was done (the same field order however often the archive is written). */
export function tensorRecord(
  plan: TensorPlan,
  outcome: TensorOutcome,
  codedStats: (key: string) => ErrorStats | undefined,
): TensorRecord {
  const { entry } = plan;
  const record: TensorRecord = {
    key: entry.key,
    name: entry.name,
    dtype: entry.dtype,
    shape: [...entry.shape],
    role: plan.role,
    reason: plan.reason,
    storage: plan.storage,
  };
  if (plan.kind === 'kept') {
    // no error stats (version 4): float16's are within 2^−11 of each value by the rule that keeps them so
    if (outcome.kind === 'half') return { ...record, half: outcome.half };
    return record;
  }
  switch (outcome.kind) {
    case 'coded':
      return { ...record, ...outcome.coded };
    case 'sliced':
      return {
        ...record,
        layout: plan.layout,
        slices: [...outcome.slices],
        stats: recordedStats(outcome.stats),
        bytes: outcome.bytes,
      };
    case 'same': {
      const stats = codedStats(outcome.sameAs);
      const { sameAs, transposed } = outcome;
      return {
        ...record,
        layout: plan.layout,
        sameAs,
        ...(transposed && { transposed }),
        stats: stats && recordedStats(stats),
        bytes: 0,
      };
    }
    default:
      throw new Error(`coded tensor ${entry.name} has no coding (${outcome.kind})`);
  }
}

export function buildManifest(parts: {
  format: ModelFormat;
  input: string;
  inputBytes: number;
  sourceSha: string;
  skeleton: string[];
  options: Record<string, unknown>;
  tensors: TensorRecord[];
  entries: Manifest['entries'];
  packs?: Manifest['packs'];
  quality?: QualityRecord;
}): Manifest {
  return {
    format: 'nnmedia',
    version: formatVersionOf(parts.tensors, parts.packs, parts.skeleton),
    createdBy: `nnmedia ${VERSION}`,
    source: { format: parts.format, file: basename(parts.input), bytes: parts.inputBytes, sha256: parts.sourceSha },
    skeleton: parts.skeleton[0],
    options: parts.options,
    tensors: parts.tensors,
    entries: parts.entries,
    ...(parts.packs && Object.keys(parts.packs).length ? { packs: parts.packs } : {}),
    // a skeleton larger than one part (large kept tensors) is stored in parts, listed here
    ...(parts.skeleton.length > 1 ? { skeletonParts: parts.skeleton } : {}),
    ...(parts.quality ? { quality: parts.quality } : {}),
  };
}
