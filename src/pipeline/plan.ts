/**
 * Stage 1, plan: every tensor's role, layout and complete settings, decided once from the model and the
 * resolved options; every request is checked here, before any codec runs (codec against medium and bits,
 * video blocks against the planes).
 */

import { getCodec, resolveCodecOptions } from '../codecs/registry.js';
import { UnsupportedError } from '../errors.js';
import type { ModelReader } from '../formats/model.js';
import { elementCount, rowElements, storageRecord } from '../formats/model.js';
import { blockSize } from '../layout/blocks.js';
import { planeShapes, sliceLayout } from '../layout/planes.js';
import { classifyTensor, layoutForRole } from '../roles/classify.js';
import { type CompressOptions, type ResolvedOptions, resolveOptions, rulesFor, settingsFor } from './options.js';
import type { CodecChoice, CodedPlan, SliceSpec, TensorPlan } from './stages.js';

/** Lossless codecs `--codec auto` tries per tensor, smallest wins; zstd of the raw codes is the floor. */
const AUTO_CODECS = ['webp', 'png'];

/** Decides role, layout and settings of every tensor (`options` unresolved: checked and resolved here). */
export function planTensors(reader: ModelReader, options: CompressOptions | ResolvedOptions = {}): TensorPlan[] {
  const resolved = 'echo' in options ? options : resolveOptions(options);
  return reader.tensors.map((entry, index): TensorPlan => {
    const rule = rulesFor(entry.name, resolved.rules);
    let cls = classifyTensor(entry, reader.format);
    const ctx = { file: reader.file, tensor: entry.name };
    if (rule.role) {
      const layout = rule.role === 'other' ? undefined : layoutForRole(rule.role, entry.shape, rule.order ?? 'out_in');
      if (rule.role !== 'other' && !layout)
        throw new UnsupportedError(`role ${rule.role} does not fit shape [${entry.shape}]`, ctx);
      cls = { role: rule.role, layout, reason: 'config rule' };
    }
    const base = { index, entry, role: cls.role, reason: cls.reason, storage: storageRecord(reader.storage(entry.key)) };
    if (cls.role === 'other' || !cls.layout) return { kind: 'kept', ...base };
    const settings = settingsFor(entry.name, resolved);
    const auto = settings.codec === 'auto';
    const codecs: CodecChoice[] = [];
    for (const name of auto ? AUTO_CODECS : [settings.codec]) {
      const codec = getCodec(name, ctx);
      if (!auto && codec.media !== settings.media && codec.media !== 'raw')
        throw new UnsupportedError(
          `codec ${codec.name} is ${/^[aeiou]/.test(codec.media) ? 'an' : 'a'} ${codec.media} codec, not for media ${settings.media}`,
          ctx,
        );
      if (auto && !codec.losslessBits.includes(settings.bits)) continue;
      codecs.push({
        name,
        options: { ...resolveCodecOptions(codec, settings.bits, auto ? { lossless: true } : settings, ctx), gop: settings.gop },
      });
      if (codec.media === 'video') for (const s of planeShapes(cls.layout)) blockSize(cls.layout, s, settings.block); // checks the block now
    }
    if (auto) codecs.push({ name: 'zstd', options: { lossless: true } });
    return { kind: 'coded', ...base, layout: cls.layout, settings, codecs, auto };
  });
}

/** The slices of a tensor larger than `sliceWeights` (none when it is coded whole or its layout cannot be sliced). */
export function slicesOf(plan: TensorPlan, sliceWeights: number): SliceSpec[] | undefined {
  const { shape } = plan.entry;
  if (plan.kind !== 'coded' || elementCount(shape) <= sliceWeights || shape.length < 2) return undefined;
  const per = Math.max(1, Math.floor(sliceWeights / Math.max(1, rowElements(shape))));
  const out: SliceSpec[] = [];
  for (let row = 0, k = 0; row < shape[0]; row += per, k++) out.push({ k, row, rows: Math.min(per, shape[0] - row) });
  if (out.length < 2 || !out.every((s) => sliceLayout(plan.layout, shape, s.rows))) return undefined;
  return out;
}

/** The plan with new settings (allocation changes grids; plans themselves are never changed). */
export function withSettings(plan: CodedPlan, change: Partial<CodedPlan['settings']>): CodedPlan {
  return { ...plan, settings: { ...plan.settings, ...change } };
}
