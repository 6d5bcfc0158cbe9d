/**
 * nnmedia in the browser: verify an .nnm archive (Web Crypto sha256 of every
 * entry) and rebuild its compressed tensors with the browser's own image
 * decoders (createImageBitmap → canvas), dequantized exactly as in Node.
 * No Node module is reached from here. Supported: 8-bit PNG, WebP, AVIF and
 * JPEG images. 16-bit PNG (canvas keeps only the high byte), the zstd
 * fallback, video and audio entries are refused with a clear error — never
 * decoded into wrong weights.
 */

import { planeShapes, scatterPlanes } from '../layout/planes.js';
import { dequantizePlane, restoreNonFinite, type PlaneRanges } from '../quantize/uniform.js';
import { decodeRangeBytes, type RangeDtype } from '../quantize/tensor.js';
import { unrotatePlane } from '../transform/hadamard.js';
import { decodeExactValues } from '../quantize/exact.js';
import type { Manifest, TensorRecord } from '../archive/manifest.js';
import { rebuildOnnx } from '../formats/onnx-rebuild.js';

export class BrowserArchiveError extends Error {
  constructor(
    message: string,
    readonly tensor?: string,
  ) {
    super(tensor ? `tensor ${tensor}: ${message}` : message);
    this.name = 'BrowserArchiveError';
  }
}

interface ZipEntry {
  method: number;
  offset: number;
  compressedSize: number;
  size: number;
}

/** Bounds for a hostile file (same spirit as the Node reader). */
const MAX_ENTRIES = 1_000_000;

function parseZip(buf: Uint8Array): Map<string, ZipEntry> {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65_557); i--)
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) throw new BrowserArchiveError('not a ZIP archive or truncated (no end-of-central-directory record)');
  const count = view.getUint16(eocd + 10, true);
  const cdOffset = view.getUint32(eocd + 16, true);
  if (count > MAX_ENTRIES || cdOffset > eocd) throw new BrowserArchiveError('central directory is damaged');
  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  const text = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (p + 46 > eocd || view.getUint32(p, true) !== 0x02014b50)
      throw new BrowserArchiveError(`central directory record ${i} is damaged`);
    const nameLen = view.getUint16(p + 28, true);
    const name = text.decode(buf.subarray(p + 46, p + 46 + nameLen));
    const e = {
      method: view.getUint16(p + 10, true),
      compressedSize: view.getUint32(p + 20, true),
      size: view.getUint32(p + 24, true),
      offset: view.getUint32(p + 42, true),
    };
    if (e.offset + 30 + e.compressedSize > cdOffset) throw new BrowserArchiveError(`entry ${name} lies outside the data area`);
    entries.set(name, e);
    p += 46 + nameLen + view.getUint16(p + 30, true) + view.getUint16(p + 32, true);
  }
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
  /** Compressed tensors by key, in the file's memory order. */
  tensors: Map<string, Float32Array>;
  /** The model with compressed tensors' data taken out (tensors kept exact are inside). */
  skeleton: Uint8Array;
}

/** Fetches (or takes) an archive, verifies every checksum, and decodes its tensors with native decoders. */
export async function decodeArchive(source: string | ArrayBuffer | Uint8Array): Promise<DecodedArchive> {
  let buf: Uint8Array;
  if (typeof source === 'string') {
    const res = await fetch(source);
    if (!res.ok) throw new BrowserArchiveError(`cannot fetch ${source}: HTTP ${res.status}`);
    buf = new Uint8Array(await res.arrayBuffer());
  } else buf = source instanceof Uint8Array ? source : new Uint8Array(source);
  const zip = parseZip(buf);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const raw = async (name: string): Promise<Uint8Array> => {
    const e = zip.get(name);
    if (!e) throw new BrowserArchiveError(`missing entry ${name}`);
    if (view.getUint32(e.offset, true) !== 0x04034b50) throw new BrowserArchiveError(`entry ${name}: local header damaged`);
    const start = e.offset + 30 + view.getUint16(e.offset + 26, true) + view.getUint16(e.offset + 28, true);
    if (start + e.compressedSize > buf.length) throw new BrowserArchiveError(`entry ${name}: truncated`);
    const body = buf.subarray(start, start + e.compressedSize);
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
  // every checksum first: nothing is decoded from a corrupt archive
  const entries = new Map<string, Uint8Array>();
  for (const [name, want] of Object.entries(manifest.entries)) {
    const data = await raw(name);
    if ((await sha256Hex(data)) !== want.sha256) throw new BrowserArchiveError(`entry ${name}: sha256 mismatch (corrupt)`);
    entries.set(name, data);
  }
  const tensors = new Map<string, Float32Array>();
  for (const t of manifest.tensors) if (t.layout && !t.sameAs) tensors.set(t.key, await decodeTensor(t, entries));
  for (const t of manifest.tensors) if (t.sameAs) tensors.set(t.key, tensors.get(t.sameAs)!);
  return { manifest, tensors, skeleton: entries.get(manifest.skeleton)! };
}

async function decodeTensor(t: TensorRecord, entries: Map<string, Uint8Array>): Promise<Float32Array> {
  const codec = t.codec!.name;
  const bits = t.quant!.bits;
  const mime = MIME[codec];
  if (!mime && !VIDEO[codec]) throw new BrowserArchiveError(`codec ${codec} has no native decoder in this browser build`, t.name);
  if (VIDEO[codec] && t.codec!.media === 'video' && t.codec!.gop === 'inter')
    throw new BrowserArchiveError('inter-coded video is not decoded in the browser yet', t.name);
  if (bits !== 8)
    throw new BrowserArchiveError(`${bits}-bit ${codec} cannot be decoded exactly by the browser (canvas keeps 8 bits)`, t.name);
  const shapes = planeShapes(t.layout!);
  const planes: Float32Array[] = [];
  for (let p = 0; p < shapes.length; p++) {
    const s = shapes[p];
    const codes = new Uint8Array(s.rows * s.cols);
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
        const img = await decodeImage(entries.get(tile.entry)!, mime, tile.cols, tile.rows);
        for (let r = 0; r < tile.rows; r++)
          codes.set(img.subarray(r * tile.cols, (r + 1) * tile.cols), (tile.row + r) * s.cols + tile.col);
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
  return rebuildOnnx(d.skeleton, restored, d.manifest.source.file);
}
