/**
 * Output channels whose every weight is +0.0, left out of a tensor's planes: a pruned output channel is a column
 * of zero codes in a plane (its columns are output channels), which no codec sees as a run — a model with 30 %
 * of its output channels pruned cost 16 % more than int8 + zstd-19 of its file, where an [out, in] tensor's
 * pruned rows are runs of zero bytes. The planes hold the other channels, in order, as the tensor of that many
 * channels; a record's `zeroChannels` names the ones left out, and the decoder puts them back as zeros (format
 * version 5). Isomorphic: the decoder runs in the browser too.
 *
 * A tensor is seen as [outer, channels, inner] along its layout's output-channel axis: an [out, in] matrix or
 * [out, in, kx, ky] kernel as [1, out, …] (each channel a block of the file), an [in, out] matrix as [in, out, 1],
 * an [in, out, kx, ky] kernel as [in, out, kx·ky].
 */

import type { LayoutSpec } from './types.js';

/** A tensor as [outer, channels, inner] along its output-channel axis. */
export interface ChannelView {
  readonly outer: number;
  readonly channels: number;
  readonly inner: number;
}

/** The output-channel view of a fully connected or conv layout (undefined for recurrent ones, whose gates lead). */
export function channelView(layout: LayoutSpec): ChannelView | undefined {
  switch (layout.kind) {
    case 'fc':
      return layout.order === 'out_in'
        ? { outer: 1, channels: layout.nout, inner: layout.nin }
        : { outer: layout.nin, channels: layout.nout, inner: 1 };
    case 'conv': {
      const kernel = layout.kx * layout.ky;
      return layout.order === 'out_in'
        ? { outer: 1, channels: layout.nfout, inner: layout.nfin * kernel }
        : { outer: layout.nfin, channels: layout.nfout, inner: kernel };
    }
    default:
      return undefined;
  }
}

/** The same layout with `channels` output channels. */
export function withChannels(layout: LayoutSpec, channels: number): LayoutSpec {
  if (layout.kind === 'fc') return { ...layout, nout: channels };
  if (layout.kind === 'conv') return { ...layout, nfout: channels };
  throw new Error(`a ${layout.kind} layout has no output channels to leave out`);
}

/**
 * The output channels of `values` (laid out as `view`) whose every weight is +0.0 — or ±0.0 with `signless`, for
 * grids that decode every zero to +0.0 anyway (pruning that multiplies by a mask, as torch.nn.utils.prune does,
 * leaves −0.0 for every negative weight it prunes) — as a bit mask (channel c is bit c % 8 of byte c >> 3), or
 * undefined where there is none, or only such channels (an all-zero tensor codes to next to nothing as it is).
 */
export function zeroChannelMask(values: Float32Array, view: ChannelView, signless = false): Uint8Array | undefined {
  const { outer, channels, inner } = view;
  if (channels < 2 || values.length !== outer * channels * inner) return undefined;
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const magnitude = signless ? 0x7fffffff : 0xffffffff;
  // a channel is live at its first weight that is not +0.0; a dense tensor is done after its first outer block
  const live = new Uint8Array(channels);
  let alive = 0;
  for (let a = 0; a < outer && alive < channels; a++)
    for (let c = 0; c < channels; c++) {
      if (live[c]) continue;
      const end = (a * channels + c + 1) * inner;
      for (let i = end - inner; i < end; i++)
        if ((bits[i] & magnitude) !== 0) {
          live[c] = 1;
          alive++;
          break;
        }
    }
  let zeros = 0;
  const mask = new Uint8Array((channels + 7) >> 3);
  for (let c = 0; c < channels; c++)
    if (!live[c]) {
      mask[c >> 3] |= 1 << (c & 7);
      zeros++;
    }
  return zeros > 0 && zeros < channels ? mask : undefined;
}

/** The channels a mask keeps (its clear bits), ascending. */
export function keptChannels(mask: Uint8Array, channels: number): Int32Array {
  const kept: number[] = [];
  for (let c = 0; c < channels; c++) if (!(mask[c >> 3] & (1 << (c & 7)))) kept.push(c);
  return Int32Array.from(kept);
}

/**
 * Whether `mask` is a zero-channel mask of `channels` channels as the encoder writes one: its exact length, no bit
 * past the last channel, at least one channel left out and one kept. Returns how many it keeps, or undefined.
 */
export function maskKeeps(mask: Uint8Array, channels: number): number | undefined {
  if (!(Number.isSafeInteger(channels) && channels >= 2) || mask.length !== (channels + 7) >> 3) return undefined;
  if (channels & 7 && mask[mask.length - 1] >> (channels & 7)) return undefined;
  let zeros = 0;
  for (const b of mask) for (let v = b; v; v &= v - 1) zeros++;
  return zeros > 0 && zeros < channels ? channels - zeros : undefined;
}

/** The kept channels of `values` (laid out as `view`), in order: the tensor the planes hold. */
export function gatherChannels(values: Float32Array, view: ChannelView, kept: Int32Array): Float32Array {
  const { outer, channels, inner } = view;
  const k = kept.length;
  const out = new Float32Array(outer * k * inner);
  for (let a = 0; a < outer; a++)
    if (inner === 1) for (let j = 0; j < k; j++) out[a * k + j] = values[a * channels + kept[j]];
    else
      for (let j = 0; j < k; j++) {
        const from = (a * channels + kept[j]) * inner;
        out.set(values.subarray(from, from + inner), (a * k + j) * inner);
      }
  return out;
}

/**
 * Puts the channels a mask left out back, in place: `data` holds the tensor of the kept channels at its start
 * (outer × kept × inner elements of outer × channels × inner in all); each block moves to its own place, last
 * first (a block only ever moves later in the array, past every block still to move), and the channels left out
 * become +0.0 (bit pattern 0 in every output dtype).
 */
export function expandChannels(
  data: Float32Array | Uint16Array,
  mask: Uint8Array,
  view: { outer: number; channels: number; inner: number },
): void {
  const { outer, channels, inner } = view;
  const kept = keptChannels(mask, channels);
  const k = kept.length;
  let end = outer * channels * inner; // everything from here on is in place
  for (let a = outer - 1; a >= 0; a--)
    for (let j = k - 1; j >= 0; j--) {
      const to = (a * channels + kept[j]) * inner;
      const from = (a * k + j) * inner;
      if (inner === 1) {
        for (let i = to + 1; i < end; i++) data[i] = 0;
        data[to] = data[from];
      } else {
        data.fill(0, to + inner, end);
        if (to !== from) data.copyWithin(to, from, from + inner);
      }
      end = to;
    }
  data.fill(0, 0, end);
}
