/**
 * The one decoder of an archive's tensors, for Node and the browser alike: media entries → codes (through
 * the platform's decoder, the only part that differs) → planes pasted from tiles or frames → dequantized
 * (M1) with the stored ranges → rotation undone → scattered back into the tensor's memory order, exact
 * side values restored. Slices, duplicates and float16-kept tensors are resolved here too. It reads only
 * records that `checkManifest` accepted, and still checks what it allocates from. Isomorphic.
 */

import { CorruptArchiveError, NnmediaError, withContext } from '../errors.js';
import type { CodeArray } from '../quantize/uniform.js';
import type { ExpectedCodes } from '../codecs/types.js';
import { type FloatDType, LITTLE_ENDIAN, elementCount, encodeFloats } from '../formats/model.js';
import { type ChannelView, channelView, expandChannels, maskKeeps } from '../layout/channels.js';
import { layoutElementCount, planeOffsets, planeShapes, scatterPlanes } from '../layout/planes.js';
import { MAX_FRAME_AREA } from '../layout/blocks.js';
import { pasteTile } from '../layout/tiles.js';
import { transposedValues } from '../layout/transpose.js';
import { allocCodes, dequantizePlane, type PlaneRanges } from '../quantize/uniform.js';
import { type TensorOutput, allocOutput, dequantizeInto, isDirectDtype, scatterInto, setOutput } from '../quantize/dequantize.js';
import { decodeRangeBytes, rangeByteLength, wholeRanges, type RangeDtype } from '../quantize/tensor.js';
import { decodeExactValues } from '../quantize/exact.js';
import { fromHalf } from '../quantize/half.js';
import { unrotatePlane } from '../transform/hadamard.js';
import { decodeParts, parseRangeRef, type CodecRecord, type TensorRecord } from './manifest.js';

/** An archive's entries by name, each checked against the manifest (sha256 and size) before it is returned. */
export interface EntrySource {
  /** The archive's file name or URL, for error messages. */
  readonly file?: string;
  entry(name: string, tensor?: string): Uint8Array | Promise<Uint8Array>;
}

/**
 * The platform's decoder of one media entry to codes: an image tile, a video stream of `frames` frames
 * stacked top to bottom, an audio signal, zstd'd raw codes. Throws UnsupportedError (or MissingCodecError)
 * for what this platform cannot decode exactly; any other failure is the entry's fault (corrupt).
 */
export type CodeDecoder = (codec: CodecRecord, bytes: Uint8Array, expected: ExpectedCodes) => Promise<CodeArray>;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64_DIGITS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Bytes of a strict base64 string (padded, no whitespace), or undefined for anything else. */
export function base64Bytes(text: string): Uint8Array | undefined {
  if (text.length % 4 !== 0 || !BASE64.test(text)) return undefined;
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const n =
      (BASE64_DIGITS.indexOf(text[i]) << 18) |
      (BASE64_DIGITS.indexOf(text[i + 1]) << 12) |
      ((BASE64_DIGITS.indexOf(text[i + 2]) & 63) << 6) |
      (BASE64_DIGITS.indexOf(text[i + 3]) & 63);
    for (const shift of [16, 8, 0]) if (o < out.length) out[o++] = (n >> shift) & 255;
  }
  return out;
}

/**
 * A coded record's (or slice's) output channels of zeros left out of its planes (`zeroChannels`, format version
 * 5): the mask and the whole tensor's channel view (its layout's, with every channel); undefined where it has
 * none. The mask must keep exactly the channels its layout has, of as many as the shape holds: anything else
 * fails through `bad`. The record's layout fields are checked before (check.ts).
 */
export function zeroChannelsOf(
  t: TensorRecord,
  bad: (message: string) => never,
): { mask: Uint8Array; view: ChannelView } | undefined {
  if (t.zeroChannels === undefined) return undefined;
  const mask = typeof t.zeroChannels === 'string' ? base64Bytes(t.zeroChannels) : undefined;
  const coded = t.layout ? channelView(t.layout) : undefined;
  const per = coded ? coded.outer * coded.inner : 0;
  const n = elementCount(t.shape);
  const channels = per > 0 && n % per === 0 ? n / per : 0;
  if (!mask || !coded || maskKeeps(mask, channels) !== coded.channels) return bad('bad zero channels');
  return { mask, view: { outer: coded.outer, channels, inner: coded.inner } };
}

/**
 * A duplicate's values from those of the tensor it is stored as: the same array, or (`transposed`) a transposed
 * copy of them (`first`'s shape is `t`'s the other way round: checkManifest made sure).
 */
export function sharedValues(t: TensorRecord, first: Float32Array): Float32Array {
  return t.transposed ? transposedValues(first, t.shape[1], t.shape[0]) : first;
}

/** Decodes one tensor of the archive (all its slices) to float32 values in the file's memory order. */
export function decodeRecord(t: TensorRecord, source: EntrySource, decodeCodes: CodeDecoder): Promise<Float32Array> {
  return decodeParts(
    t,
    (record) => decodeCoded(record, source, decodeCodes),
    (message) => {
      throw new CorruptArchiveError(`manifest: ${message}`, { file: source.file, tensor: t.key });
    },
  );
}

/** Decodes one tensor of the archive (all its slices) to its bytes in the model file, little-endian `dtype`. */
export async function decodeRecordBytes(
  t: TensorRecord,
  source: EntrySource,
  decodeCodes: CodeDecoder,
  dtype: FloatDType,
  reuse?: ArrayBuffer,
): Promise<Uint8Array> {
  if (!t.slices) return decodeCodedBytes(t, source, decodeCodes, dtype, reuse);
  return encodeFloats(await decodeRecord(t, source, decodeCodes), dtype);
}

/** Decodes one coded tensor or slice to float32 values in the file's memory order. */
export async function decodeCoded(t: TensorRecord, source: EntrySource, decodeCodes: CodeDecoder): Promise<Float32Array> {
  const data = new Float32Array(elementCount(t.shape));
  await decodeCodedInto(t, source, decodeCodes, { dtype: 'float32', data });
  return data;
}

/**
 * Decodes one coded tensor or slice straight to the bytes the model file holds for it: its elements in file
 * order as little-endian `dtype` (the same bytes as `decodeCoded` → `encodeFloats`, made in one pass), into
 * `reuse` where that is the right size.
 */
export async function decodeCodedBytes(
  t: TensorRecord,
  source: EntrySource,
  decodeCodes: CodeDecoder,
  dtype: FloatDType,
  reuse?: ArrayBuffer,
): Promise<Uint8Array> {
  if (!isDirectDtype(dtype) || !LITTLE_ENDIAN) return encodeFloats(await decodeCoded(t, source, decodeCodes), dtype);
  const { out, bytes } = allocOutput(dtype, elementCount(t.shape), reuse);
  await decodeCodedInto(t, source, decodeCodes, out);
  return bytes;
}

/** Above this many elements a plane's offsets would not fit Int32: such a tensor is decoded through float planes. */
const MAX_DIRECT_ELEMENTS = 2 ** 31 - 1;

/** Decodes one coded tensor or slice into `out`: each plane's codes dequantized straight into place. */
async function decodeCodedInto(t: TensorRecord, source: EntrySource, decodeCodes: CodeDecoder, out: TensorOutput): Promise<void> {
  const file = source.file;
  const fail = (message: string): never => {
    throw new CorruptArchiveError(`manifest: ${message}`, { file, tensor: t.key });
  };
  if (!t.layout || !t.planes || !t.quant || !t.codec) fail('tensor is not compressed');
  const { codec, quant } = t as Required<Pick<TensorRecord, 'codec' | 'quant' | 'planes'>> & TensorRecord;
  const bits = quant.bits;
  /** The codes of one entry through the platform's decoder, checked to be as many as asked for. */
  const codesOf = async (entry: string, expected: ExpectedCodes): Promise<CodeArray> => {
    const data = await source.entry(entry, t.name);
    let codes: CodeArray;
    try {
      codes = await decodeCodes(codec, data, expected);
    } catch (e) {
      // what this platform cannot do is said as it is; anything else means the entry is not what it claims
      if (e instanceof NnmediaError && e.code !== 'E_CODEC') throw withContext(e, { file, tensor: t.name });
      throw new CorruptArchiveError(`cannot decode ${entry}: ${(e as Error).message}`, { file, tensor: t.name });
    }
    if (codes.length !== expected.width * expected.height)
      throw new CorruptArchiveError(`${entry} decoded to ${codes.length} codes, expected ${expected.width * expected.height}`, {
        file,
        tensor: t.name,
      });
    return codes;
  };
  const shapes = planeShapes(t.layout!);
  // output channels of zeros left out: the planes decode into the start of `out`, as the tensor of the channels they hold
  const zero = zeroChannelsOf(t, fail);
  const coded = layoutElementCount(t.layout!);
  if (out.data.length !== elementCount(t.shape) || (!zero && coded !== out.data.length)) fail('layout does not match the shape');
  const direct = out.data.length <= MAX_DIRECT_ELEMENTS;
  const planes: Float32Array[] = [];
  for (let p = 0; p < shapes.length; p++) {
    const s = shapes[p];
    const pr = t.planes![p];
    let codes: CodeArray;
    if (pr.frame) {
      codes = allocCodes(bits, s.rows * s.cols);
      // video: one stream of frames; every block is a frame, padded to the frame size
      const f = pr.frame;
      if (!(
        f.rows > 0 &&
        f.cols > 0 &&
        f.count === pr.tiles.length &&
        f.rows * f.cols * f.count <= MAX_FRAME_AREA(s.rows * s.cols)
      ))
        fail(`plane ${p} has an implausible frame geometry`);
      const entry = pr.tiles[0].entry;
      const frames = await codesOf(entry, { width: f.cols, height: f.rows * f.count, bits, frames: f.count });
      for (const tile of pr.tiles) {
        const k = tile.frame ?? 0;
        if (tile.entry !== entry || k < 0 || k >= f.count || tile.rows > f.rows || tile.cols > f.cols)
          fail(`bad frame record in plane ${p}`);
        for (let r = 0; r < tile.rows; r++)
          codes.set(
            frames.subarray((k * f.rows + r) * f.cols, (k * f.rows + r) * f.cols + tile.cols),
            (tile.row + r) * s.cols + tile.col,
          );
      }
    } else {
      const one = pr.tiles.length === 1 ? pr.tiles[0] : undefined;
      if (one && one.row === 0 && one.col === 0 && one.rows === s.rows && one.cols === s.cols)
        // one tile that is the whole plane: its codes are the plane's, no copy
        codes = await codesOf(one.entry, { width: one.cols, height: one.rows, bits });
      else {
        codes = allocCodes(bits, s.rows * s.cols);
        for (const tile of pr.tiles)
          pasteTile(codes, s.cols, tile, await codesOf(tile.entry, { width: tile.cols, height: tile.rows, bits }));
      }
    }
    const ranges = await planeRanges(quant, p, bits, Math.ceil(s.cols / quant.channelWidth[p]), source, t.name, fail);
    const channels = Math.ceil(s.cols / ranges.channelWidth);
    if (ranges.mins.length !== channels) fail(`plane ${p} has ${ranges.mins.length} ranges for ${channels} channels`);
    if (direct && !quant.rotation) {
      const offsets = planeOffsets(t.layout!, p);
      dequantizeInto(codes, s.rows, s.cols, bits, ranges, offsets.rows, offsets.cols, out);
      continue;
    }
    const plane = dequantizePlane(codes, s.rows, s.cols, bits, ranges);
    if (quant.rotation) unrotatePlane(plane, s.rows, s.cols, quant.rotation.seeds[p]);
    if (direct) {
      const offsets = planeOffsets(t.layout!, p);
      scatterInto(plane, s.rows, s.cols, offsets.rows, offsets.cols, out);
    } else planes.push(plane);
  }
  if (!direct) {
    // a tensor too large for Int32 offsets (only float32 reaches here: 8 GB of one tensor)
    if (out.dtype !== 'float32') fail('tensor too large to decode in one piece');
    scatterPlanes(planes, t.layout!, out.data as Float32Array);
  }
  if (t.nonFinite) {
    const side = decodeExactValues(await source.entry(t.nonFinite, t.name), coded, fail);
    for (let k = 0; k < side.indices.length; k++) setOutput(out, side.indices[k], side.values[k]);
  }
  if (zero) expandChannels(out.data, zero.mask, zero.view);
}

/** The stored ranges of plane p (base64 in the record, or bytes of the ranges entry), as the encoder used them. */
async function planeRanges(
  quant: NonNullable<TensorRecord['quant']>,
  p: number,
  bits: number,
  channels: number,
  source: EntrySource,
  tensor: string,
  fail: (m: string) => never,
): Promise<PlaneRanges> {
  const dtype: RangeDtype = quant.rangeDtype?.[p] ?? 'float32';
  const ref = parseRangeRef(quant.ranges[p]);
  let bytes: Uint8Array | undefined;
  if (ref) {
    const data = await source.entry(ref.entry, tensor);
    const length = rangeByteLength(dtype, channels);
    if (ref.offset + length > data.length) fail(`plane ${p}: ranges outside their entry`);
    bytes = data.subarray(ref.offset, ref.offset + length);
  } else bytes = base64Bytes(quant.ranges[p]);
  if (!bytes || !wholeRanges(dtype, bytes.length)) fail('bad quantization ranges');
  const all = decodeRangeBytes(bytes!, dtype, bits);
  const n = all.length / 2;
  return { mins: all.subarray(0, n), maxs: all.subarray(n), channelWidth: quant.channelWidth[p] };
}

/** Kept tensors stored as float16; each half entry is read (and checked) once. */
export function halfDecoder(source: EntrySource): (t: TensorRecord) => Promise<Float32Array> {
  const entries = new Map<string, Promise<Uint8Array>>();
  return async (t) => {
    const { entry, offset } = t.half!;
    if (!entries.has(entry)) entries.set(entry, Promise.resolve(source.entry(entry, t.name)));
    const data = await entries.get(entry)!;
    const n = elementCount(t.shape);
    if ((offset + n) * 2 > data.length)
      throw new CorruptArchiveError('manifest: half-precision values outside their entry', { file: source.file, tensor: t.key });
    return fromHalf(data, offset, n);
  };
}
