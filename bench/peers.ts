/**
 * Peers measured on the same tensors in the same run: raw float32, zstd of the
 * float32 bytes (levels 3 and 19), and round-to-nearest symmetric int8/int4
 * (per tensor and per output channel) + zstd-19.
 */
import { createRequire } from 'node:module';

// @mongodb-js/zstd 1.2.2's JS wrapper drops the level argument (every level gives level 3's output);
// its native binding takes it, so the peers call the binding directly.
const zstd = createRequire(import.meta.url)('@mongodb-js/zstd/bindings.js') as {
  compress(data: Buffer, level: number): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
};
const zstdCompress = (data: Buffer, level: number): Promise<Buffer> => zstd.compress(data, level);
const zstdDecompress = (data: Buffer): Promise<Buffer> => zstd.decompress(data);
import type { ModelReader } from '../src/formats/model.js';
import { gatherPlanes, planeShapes, scatterPlanes } from '../src/layout/planes.js';
import type { LayoutSpec } from '../src/layout/types.js';

export interface PeerResult {
  name: string;
  bytes: number;
  /** Reconstructed tensors (for the task metric); absent for lossless peers. */
  values?: Map<string, Float32Array>;
  encodeMs: number;
  decodeMs: number;
}

export interface WeightSet {
  keys: string[];
  layouts: Map<string, LayoutSpec>;
  floats: Map<string, Float32Array>;
  count: number;
}

function concatFloats(ws: WeightSet): Uint8Array {
  const out = new Float32Array(ws.count);
  let off = 0;
  for (const k of ws.keys) {
    out.set(ws.floats.get(k)!, off);
    off += ws.floats.get(k)!.length;
  }
  return new Uint8Array(out.buffer);
}

export async function zstdPeer(ws: WeightSet, level: number): Promise<PeerResult> {
  const raw = concatFloats(ws);
  const t0 = performance.now();
  const c = await zstdCompress(Buffer.from(raw.buffer), level);
  const t1 = performance.now();
  await zstdDecompress(c);
  const t2 = performance.now();
  return { name: `float32 + zstd-${level}`, bytes: c.length, encodeMs: t1 - t0, decodeMs: t2 - t1 };
}

/** Symmetric round-to-nearest to ±(2^(bits−1) − 1) with one scale per tensor or per output channel. */
/**
 * Symmetric round-to-nearest, codes and float32 scales through zstd-19. With `rest` (the model file without the
 * coded tensors' data: graph, biases, norms, metadata) zstd-19 runs over the whole file, as a user would
 * compress an int8 model: the fair peer of a whole archive.
 */
export async function rtnPeer(ws: WeightSet, bits: 4 | 8, perChannel: boolean, rest?: Uint8Array): Promise<PeerResult> {
  const qmax = 2 ** (bits - 1) - 1;
  const values = new Map<string, Float32Array>();
  const codeBytes: Uint8Array[] = [];
  const scaleBytes: Float32Array[] = [];
  const t0 = performance.now();
  for (const k of ws.keys) {
    const spec = ws.layouts.get(k)!;
    const planes = gatherPlanes(ws.floats.get(k)!, spec, (n) => new Float32Array(n));
    const shapes = planeShapes(spec);
    const outPlanes = planes.map((plane, p) => {
      const { rows, cols, channelWidth } = shapes[p];
      const groups = perChannel ? Math.ceil(cols / channelWidth) : 1;
      const width = perChannel ? channelWidth : cols;
      const scales = new Float32Array(groups);
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) {
          const g = Math.floor(c / width);
          scales[g] = Math.max(scales[g], Math.abs(plane[r * cols + c]) / qmax);
        }
      const codes = new Int8Array(rows * cols);
      const back = new Float32Array(rows * cols);
      for (let i = 0; i < rows * cols; i++) {
        const s = scales[Math.floor((i % cols) / width)] || 1;
        const q = Math.max(-qmax, Math.min(qmax, Math.round(plane[i] / s)));
        codes[i] = q;
        back[i] = q * s;
      }
      scaleBytes.push(scales);
      if (bits === 8) codeBytes.push(new Uint8Array(codes.buffer));
      else {
        const packed = new Uint8Array(Math.ceil(codes.length / 2));
        for (let i = 0; i < codes.length; i++) packed[i >> 1] |= (codes[i] & 0xf) << ((i & 1) * 4);
        codeBytes.push(packed);
      }
      return back;
    });
    values.set(k, scatterPlanes(outPlanes, spec, new Float32Array(ws.floats.get(k)!.length)));
  }
  const all = Buffer.concat([...(rest ? [rest] : []), ...codeBytes, ...scaleBytes.map((s) => new Uint8Array(s.buffer))]);
  const c = await zstdCompress(all, 19);
  const t1 = performance.now();
  await zstdDecompress(c);
  const t2 = performance.now();
  return {
    name: `int${bits} ${perChannel ? 'per-channel' : 'per-tensor'} + zstd-19${rest ? ' (whole file)' : ''}`,
    bytes: c.length,
    values,
    encodeMs: t1 - t0,
    decodeMs: t2 - t1,
  };
}

export function weightSet(reader: ModelReader, keys: string[], layouts: Map<string, LayoutSpec>): WeightSet {
  const floats = new Map(keys.map((k) => [k, reader.read(k)]));
  return { keys, layouts, floats, count: keys.reduce((s, k) => s + floats.get(k)!.length, 0) };
}
