/**
 * nnmedia in the browser: verify an .nnm archive (Web Crypto sha256 of every
 * entry) and rebuild its compressed tensors with the browser's own decoders
 * (createImageBitmap → canvas for 8-bit PNG, WebP, AVIF, JPEG; WebCodecs for
 * H.264, VP9, AV1 lossless), dequantized exactly as in Node. A URL is read with
 * HTTP Range requests where the server allows them (directory first, then only
 * the entries wanted). Where the browser has no exact native decoder, small JS
 * decoders from npm take over: fast-png for 16-bit PNG (canvas keeps only the
 * high byte), fzstd for the raw-codes fallback. FFV1, HEVC, inter-coded video
 * and audio entries are refused with a clear error — never wrong weights.
 * No Node module is reached from here.
 */

import { planeShapes, scatterPlanes } from '../layout/planes.js';
import { allocCodes, dequantizePlane, restoreNonFinite, type PlaneRanges } from '../quantize/uniform.js';
import { pasteTile } from '../layout/tiles.js';
import { fromHalf } from '../quantize/half.js';
import { type CentralRecord, MAX_EOCD_SEARCH, checkEnd, findEnd, parseCentral, zip64End } from '../archive/zip-directory.js';
import { decode as decodePng } from 'fast-png';
import { decompress as zstdDecompress } from 'fzstd';
import { decodeRangeBytes, type RangeDtype } from '../quantize/tensor.js';
import { unrotatePlane } from '../transform/hadamard.js';
import { decodeExactValues } from '../quantize/exact.js';
import { codedParts, decodeParts, skeletonEntries, type Manifest, type TensorRecord } from '../archive/manifest.js';
import { rebuildOnnx } from '../formats/onnx/rebuild.js';
import { encodeFloats } from '../formats/model.js';
import { concatBytes } from '../formats/onnx/protobuf.js';

export class BrowserArchiveError extends Error {
  constructor(
    message: string,
    readonly tensor?: string,
  ) {
    super(tensor ? `tensor ${tensor}: ${message}` : message);
    this.name = 'BrowserArchiveError';
  }
}

type ZipEntry = CentralRecord;

/** What reading the archive cost: requests and bytes fetched, and whether the server honoured Range requests. */
export interface FetchStats {
  requests: number;
  bytes: number;
  ranged: boolean;
}

/** Random access to the archive's bytes. */
export interface ByteSource {
  readonly size: number;
  readonly stats: FetchStats;
  read(offset: number, length: number): Promise<Uint8Array>;
}

export function bytesSource(buf: Uint8Array): ByteSource {
  const stats = { requests: 0, bytes: 0, ranged: false };
  return {
    size: buf.length,
    stats,
    read: async (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > buf.length)
        throw new BrowserArchiveError(`truncated: needs bytes ${offset}…${offset + length} of ${buf.length}`);
      return buf.subarray(offset, offset + length);
    },
  };
}

/**
 * A URL as a byte source: one suffix Range request for the archive's tail; if
 * the server answers 206, every later read is a Range request of its own, else
 * (200) the whole body has arrived and is read from memory.
 */
export async function urlSource(url: string, init: RequestInit = {}): Promise<ByteSource> {
  const get = (range: string): Promise<Response> =>
    fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), Range: `bytes=${range}` } });
  const first = await get(`-${MAX_EOCD_SEARCH}`);
  if (first.status === 200) {
    const whole = bytesSource(new Uint8Array(await first.arrayBuffer()));
    whole.stats.requests = 1;
    whole.stats.bytes = whole.size;
    return whole;
  }
  if (first.status !== 206) throw new BrowserArchiveError(`cannot fetch ${url}: HTTP ${first.status}`);
  const total = Number(/\/(\d+)\s*$/.exec(first.headers.get('content-range') ?? '')?.[1]);
  if (!Number.isSafeInteger(total)) throw new BrowserArchiveError(`${url}: Range reply without a total size`);
  const tail = new Uint8Array(await first.arrayBuffer());
  const tailStart = total - tail.length;
  const stats = { requests: 1, bytes: tail.length, ranged: true };
  return {
    size: total,
    stats,
    read: async (offset, length) => {
      if (offset < 0 || length < 0 || offset + length > total)
        throw new BrowserArchiveError(`truncated: needs bytes ${offset}…${offset + length} of ${total}`);
      if (offset >= tailStart) return tail.subarray(offset - tailStart, offset - tailStart + length);
      if (length === 0) return new Uint8Array(0);
      const res = await get(`${offset}-${offset + length - 1}`);
      const body = new Uint8Array(await res.arrayBuffer());
      stats.requests++;
      stats.bytes += body.length;
      if (res.status !== 206 || body.length !== length)
        throw new BrowserArchiveError(`${url}: Range ${offset}+${length} answered ${res.status} with ${body.length} bytes`);
      return body;
    },
  };
}

async function parseZip(src: ByteSource): Promise<Map<string, ZipEntry>> {
  const fail = (m: string): never => {
    throw new BrowserArchiveError(m);
  };
  const tailLen = Math.min(src.size, MAX_EOCD_SEARCH);
  const end = findEnd(await src.read(src.size - tailLen, tailLen), src.size - tailLen, fail);
  if (end.zip64At !== undefined) zip64End(end, await src.read(end.zip64At, 56), fail);
  checkEnd(end, fail);
  const entries = new Map<string, ZipEntry>();
  for (const r of parseCentral(await src.read(end.cdOffset, end.cdSize), end, fail)) entries.set(r.name, r);
  return entries;
}

async function inflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Grey codes of an 8-bit image through the browser's decoder: the red channel of an sRGB canvas, no colour management. */
async function decodeImage(bytes: Uint8Array, mime: string, width: number, height: number): Promise<Uint8Array> {
  const bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: mime }), {
    colorSpaceConversion: 'none',
    premultiplyAlpha: 'none',
  });
  if (bitmap.width !== width || bitmap.height !== height)
    throw new BrowserArchiveError(`image is ${bitmap.width}×${bitmap.height}, expected ${width}×${height}`);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height, { colorSpace: 'srgb' }).data;
  const out = new Uint8Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = rgba[i * 4];
  return out;
}

const MIME: Record<string, string> = { png: 'image/png', webp: 'image/webp', avif: 'image/avif', jpeg: 'image/jpeg' };

/** WebCodecs codec strings for nnmedia's 8-bit 4:4:4 streams. */
const VIDEO: Record<string, string> = {
  h264: 'avc1.F4001F', // High 4:4:4 Predictive (lossless qp 0 included)
  vp9: 'vp09.01.10.08.03', // profile 1: 4:4:4
  av1: 'av01.1.08M.08', // High profile: 4:4:4
};

/** Access units of an H.264 Annex B stream: one slice NAL per frame (x264 writes one), parameter sets joined to the next slice. */
function annexBFrames(b: Uint8Array): Uint8Array[] {
  const starts: number[] = [];
  for (let i = 0; i + 3 < b.length; i++)
    if (b[i] === 0 && b[i + 1] === 0 && (b[i + 2] === 1 || (b[i + 2] === 0 && b[i + 3] === 1))) {
      starts.push(i);
      i += 2;
    }
  const frames: Uint8Array[] = [];
  let frameStart = 0;
  starts.forEach((s, k) => {
    const h = b[s + 2] === 1 ? s + 3 : s + 4;
    const type = b[h] & 0x1f;
    if (type === 1 || type === 5) {
      const end = k + 1 < starts.length ? starts[k + 1] : b.length;
      frames.push(b.subarray(frameStart, end));
      frameStart = end;
    }
  });
  return frames;
}

/** Frames of an IVF file (VP9, AV1): a 32-byte header, then size (u32) + pts (u64) + data per frame. */
function ivfFrames(b: Uint8Array): Uint8Array[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 32 || v.getUint32(0, true) !== 0x46494b44) throw new BrowserArchiveError('not an IVF stream');
  const frames: Uint8Array[] = [];
  for (let p = v.getUint16(6, true); p + 12 <= b.length;) {
    const size = v.getUint32(p, true);
    if (p + 12 + size > b.length) throw new BrowserArchiveError('IVF frame runs past the end of the stream');
    frames.push(b.subarray(p + 12, p + 12 + size));
    p += 12 + size;
  }
  return frames;
}

/** The Y planes (= codes) of every frame, decoded by the browser's own WebCodecs VideoDecoder. */
async function decodeVideo(bytes: Uint8Array, codec: string, width: number, height: number, count: number): Promise<Uint8Array> {
  const chunks = codec === 'h264' ? annexBFrames(bytes) : ivfFrames(bytes);
  if (chunks.length !== count) throw new BrowserArchiveError(`${codec} stream holds ${chunks.length} frames, expected ${count}`);
  const config = {
    codec: VIDEO[codec],
    codedWidth: width,
    codedHeight: height,
    hardwareAcceleration: 'prefer-software' as const,
  };
  if (!(await VideoDecoder.isConfigSupported(config)).supported)
    throw new BrowserArchiveError(`this browser's WebCodecs cannot decode ${codec} 4:4:4`);
  const out = new Uint8Array(width * height * count);
  let index = 0;
  let failure: unknown;
  const pending: Promise<void>[] = [];
  const decoder = new VideoDecoder({
    output: (frame) => {
      const k = index++;
      pending.push(
        (async () => {
          try {
            if (frame.format !== 'I444') throw new BrowserArchiveError(`${codec} frame decoded as ${frame.format}, not I444`);
            const buf = new Uint8Array(frame.allocationSize());
            const layout = await frame.copyTo(buf);
            for (let r = 0; r < height; r++)
              out.set(
                buf.subarray(layout[0].offset + r * layout[0].stride, layout[0].offset + r * layout[0].stride + width),
                (k * height + r) * width,
              );
          } finally {
            frame.close();
          }
        })(),
      );
    },
    error: (e) => (failure = e),
  });
  decoder.configure(config);
  chunks.forEach((data, k) => decoder.decode(new EncodedVideoChunk({ type: 'key', timestamp: k * 40_000, data })));
  await decoder.flush();
  decoder.close();
  await Promise.all(pending);
  if (failure) throw new BrowserArchiveError(`${codec} decode failed: ${(failure as Error).message}`);
  if (index !== count) throw new BrowserArchiveError(`${codec} decoded ${index} frames, expected ${count}`);
  return out;
}

export interface DecodedArchive {
  manifest: Manifest;
  /** Restored tensors by key (compressed ones, and kept ones stored as float16), in the file's memory order. */
  tensors: Map<string, Float32Array>;
  /** The model with compressed tensors' data taken out (tensors kept exact are inside); absent when only some tensors were asked for. */
  skeleton?: Uint8Array;
  /** Requests and bytes it took (a URL read with Range requests fetches only what was asked for). */
  fetch: FetchStats;
}

export interface DecodeOptions {
  /** Decode only these tensors (names or keys); all by default. The model skeleton is fetched only for all. */
  tensors?: readonly string[];
  /** Passed to fetch() for URLs (credentials, headers, signal). */
  init?: RequestInit;
}

/**
 * Fetches (or takes) an archive, verifies the checksum of every entry it
 * needs before decoding any, and decodes the tensors with native decoders.
 */
export async function decodeArchive(
  source: string | ArrayBuffer | Uint8Array | ByteSource,
  options: DecodeOptions = {},
): Promise<DecodedArchive> {
  const src =
    typeof source === 'string'
      ? await urlSource(source, options.init)
      : source instanceof Uint8Array
        ? bytesSource(source)
        : source instanceof ArrayBuffer
          ? bytesSource(new Uint8Array(source))
          : source;
  const zip = await parseZip(src);
  const raw = async (name: string): Promise<Uint8Array> => {
    const e = zip.get(name);
    if (!e) throw new BrowserArchiveError(`missing entry ${name}`);
    // local header + name + data in one read (nnmedia writes no extra field; another writer's is read separately)
    let chunk = await src.read(e.offset, Math.min(src.size - e.offset, 30 + e.nameLength + e.compressedSize));
    const h = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (chunk.length < 30 || h.getUint32(0, true) !== 0x04034b50)
      throw new BrowserArchiveError(`entry ${name}: local header damaged`);
    const start = 30 + h.getUint16(26, true) + h.getUint16(28, true);
    if (start + e.compressedSize > chunk.length) chunk = await src.read(e.offset, start + e.compressedSize);
    const body = chunk.subarray(start, start + e.compressedSize);
    const data = e.method === 8 ? await inflateRaw(body) : body;
    if (data.length !== e.size) throw new BrowserArchiveError(`entry ${name}: size differs from the recorded one (corrupt)`);
    return data;
  };
  let manifest: Manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(await raw('manifest.json'))) as Manifest;
  } catch (e) {
    if (e instanceof BrowserArchiveError) throw e;
    throw new BrowserArchiveError(`manifest is not valid JSON (corrupt)`);
  }
  if (manifest.format !== 'nnmedia' || manifest.version !== 1)
    throw new BrowserArchiveError('not an nnmedia archive of format version 1');
  const compressed = manifest.tensors.filter((t) => t.layout);
  const wanted = options.tensors
    ? compressed.filter((t) => options.tensors!.includes(t.name) || options.tensors!.includes(t.key))
    : compressed;
  if (options.tensors)
    for (const n of options.tensors)
      if (!manifest.tensors.some((t) => (t.layout || t.half) && (t.name === n || t.key === n)))
        throw new BrowserArchiveError(`no restored tensor named ${n}`);
  const byKey = new Map(manifest.tensors.map((t) => [t.key, t]));
  const decodeSet = [...new Set(wanted.map((t) => (t.sameAs ? byKey.get(t.sameAs)! : t)))];
  const names = new Set<string>();
  for (const t of decodeSet) {
    if (t.slices !== undefined && !Array.isArray(t.slices)) throw new BrowserArchiveError('bad slices record (corrupt)', t.name);
    for (const c of codedParts(t)) {
      for (const pr of c.record.planes ?? []) for (const tile of pr.tiles) names.add(tile.entry);
      if (c.record.nonFinite) names.add(c.record.nonFinite);
    }
  }
  const halves = manifest.tensors.filter(
    (t) => t.half && (!options.tensors || options.tensors.includes(t.name) || options.tensors.includes(t.key)),
  );
  for (const t of halves) names.add(t.half!.entry);
  // a large skeleton comes in parts (every part listed, the first is `skeleton`)
  const skeletonParts = skeletonEntries(manifest);
  if (!Array.isArray(skeletonParts) || skeletonParts[0] !== manifest.skeleton)
    throw new BrowserArchiveError('bad skeleton parts (corrupt)');
  if (!options.tensors) for (const p of skeletonParts) names.add(p);
  // every checksum first: nothing is decoded from a corrupt archive
  const entries = new Map<string, Uint8Array>();
  for (const name of names) {
    const want = manifest.entries[name];
    if (!want) throw new BrowserArchiveError(`entry ${name} is not listed in the manifest`);
    const data = await raw(name);
    if ((await sha256Hex(data)) !== want.sha256) throw new BrowserArchiveError(`entry ${name}: sha256 mismatch (corrupt)`);
    entries.set(name, data);
  }
  const tensors = new Map<string, Float32Array>();
  for (const t of decodeSet)
    tensors.set(
      t.key,
      await decodeParts(
        t,
        (record) => decodeTensor(record, entries),
        (message) => {
          throw new BrowserArchiveError(message, t.name);
        },
      ),
    );
  for (const t of wanted) if (t.sameAs) tensors.set(t.key, tensors.get(t.sameAs)!);
  for (const t of decodeSet) if (!wanted.includes(t)) tensors.delete(t.key);
  for (const t of halves) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const entry = entries.get(t.half!.entry)!;
    if ((t.half!.offset + n) * 2 > entry.length)
      throw new BrowserArchiveError('half-precision values outside their entry', t.name);
    tensors.set(t.key, fromHalf(entry, t.half!.offset, n));
  }
  const skeleton = options.tensors
    ? undefined
    : skeletonParts.length === 1
      ? entries.get(manifest.skeleton)
      : concatBytes(skeletonParts.map((p) => entries.get(p)!));
  return { manifest, tensors, skeleton, fetch: src.stats };
}

/** Codes of one image tile, or throws: native decoders for 8 bits, JS decoders where the browser has none exact. */
async function tileCodes(codec: string, bits: number, bytes: Uint8Array, width: number, height: number, tensor: string) {
  if (codec === 'zstd') {
    // the raw-codes fallback: little-endian codes through zstd
    const raw = zstdDecompress(bytes);
    const w = bits === 8 ? 1 : bits === 16 ? 2 : 4;
    if (raw.length !== width * height * w)
      throw new BrowserArchiveError(`zstd entry holds ${raw.length} bytes, expected ${width * height * w}`, tensor);
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out = allocCodes(bits, width * height);
    for (let i = 0; i < out.length; i++)
      out[i] = w === 1 ? raw[i] : w === 2 ? v.getUint16(2 * i, true) : v.getUint32(4 * i, true);
    return out;
  }
  if (codec === 'png' && bits === 16) {
    // canvas keeps only the high byte of 16-bit PNG: decode it in JS
    const img = decodePng(bytes);
    if (img.width !== width || img.height !== height || img.depth !== 16 || img.channels !== 1)
      throw new BrowserArchiveError(
        `PNG is ${img.width}×${img.height}, ${img.channels} channel(s) of ${img.depth} bits; expected ${width}×${height} grey 16-bit`,
        tensor,
      );
    return Uint16Array.from(img.data);
  }
  const mime = Object.hasOwn(MIME, codec) ? MIME[codec] : undefined;
  if (!mime) throw new BrowserArchiveError(`codec ${codec} has no decoder in the browser`, tensor);
  if (bits !== 8)
    throw new BrowserArchiveError(`${bits}-bit ${codec} cannot be decoded exactly by the browser (canvas keeps 8 bits)`, tensor);
  return decodeImage(bytes, mime, width, height);
}

async function decodeTensor(t: TensorRecord, entries: Map<string, Uint8Array>): Promise<Float32Array> {
  const codec = t.codec!.name;
  const bits = t.quant!.bits;
  const video = t.codec!.media === 'video';
  if (video && !Object.hasOwn(VIDEO, codec))
    throw new BrowserArchiveError(`${codec} video has no decoder in this browser (H.264, VP9 and AV1 do)`, t.name);
  if (t.codec!.media === 'audio')
    throw new BrowserArchiveError(`${codec} audio entries cannot be decoded exactly in the browser`, t.name);
  if (video && t.codec!.gop === 'inter')
    throw new BrowserArchiveError('inter-coded video is not decoded in the browser yet', t.name);
  if (video && bits !== 8) throw new BrowserArchiveError(`${bits}-bit ${codec} video is not decoded in the browser`, t.name);
  const shapes = planeShapes(t.layout!);
  const planes: Float32Array[] = [];
  for (let p = 0; p < shapes.length; p++) {
    const s = shapes[p];
    const codes = allocCodes(bits, s.rows * s.cols);
    const pr = t.planes![p];
    if (pr.frame) {
      const f = pr.frame;
      const frames = await decodeVideo(entries.get(pr.tiles[0].entry)!, codec, f.cols, f.rows, f.count);
      for (const tile of pr.tiles)
        for (let r = 0; r < tile.rows; r++)
          codes.set(
            frames.subarray((tile.frame! * f.rows + r) * f.cols, (tile.frame! * f.rows + r) * f.cols + tile.cols),
            (tile.row + r) * s.cols + tile.col,
          );
    } else
      for (const tile of pr.tiles) {
        const img = await tileCodes(codec, bits, entries.get(tile.entry)!, tile.cols, tile.rows, t.name);
        pasteTile(codes, s.cols, tile, img);
      }
    const dtype = (t.quant!.rangeDtype?.[p] ?? 'float32') as RangeDtype;
    const bytes = Uint8Array.from(atob(t.quant!.ranges[p]), (c) => c.charCodeAt(0));
    const all = decodeRangeBytes(bytes, dtype, bits);
    const n = all.length / 2;
    const ranges: PlaneRanges = { mins: all.subarray(0, n), maxs: all.subarray(n), channelWidth: t.quant!.channelWidth[p] };
    const plane = dequantizePlane(codes, s.rows, s.cols, bits, ranges);
    if (t.quant!.rotation) unrotatePlane(plane, s.rows, s.cols, t.quant!.rotation.seeds[p]);
    planes.push(plane);
  }
  const out = scatterPlanes(planes, t.layout!, new Float32Array(t.shape.reduce((a, b) => a * b, 1)));
  if (t.nonFinite)
    restoreNonFinite(
      out,
      decodeExactValues(entries.get(t.nonFinite)!, out.length, (m) => {
        throw new BrowserArchiveError(m, t.name);
      }),
    );
  return out;
}

/** The ONNX model file rebuilt from a decoded archive (the same wire-level rebuild as Node's), ready for onnxruntime-web. */
export function rebuildOnnxModel(d: DecodedArchive): Uint8Array {
  if (d.manifest.source.format !== 'onnx')
    throw new BrowserArchiveError(
      `the browser rebuilds ONNX models only; this archive holds ${d.manifest.source.format} (use .tensors)`,
    );
  const restored = d.manifest.tensors
    .filter((t) => d.tensors.has(t.key))
    .map((t) => ({ path: String(t.storage.path), form: String(t.storage.form), dtype: t.dtype, values: d.tensors.get(t.key)! }));
  if (!d.skeleton)
    throw new BrowserArchiveError('the archive was decoded for some tensors only: no skeleton to rebuild the model from');
  return rebuildOnnx(d.skeleton, restored, d.manifest.source.file);
}

/**
 * Float16 copies of decoded tensors, where a runtime wants half precision (onnxruntime-web
 * float16 tensors take these IEEE binary16 bit patterns; round to nearest even, as Node's).
 */
export function toFloat16(values: Float32Array): Uint16Array {
  const bytes = encodeFloats(values, 'float16');
  return new Uint16Array(bytes.buffer, bytes.byteOffset, values.length);
}
