import type { AnyTypedArray, LayoutSpec, PlaneShape } from './types.js';
import { rowElements } from '../formats/model.js';

const LSTM_GATES = ['i', 'o', 'f', 'c'];
const GRU_GATES = ['z', 'r', 'h'];

/** The planes a layout produces, in order. */
export function planeShapes(spec: LayoutSpec): PlaneShape[] {
  switch (spec.kind) {
    case 'fc':
      return [{ rows: spec.nin, cols: spec.nout, channelWidth: 1, label: 'matrix' }];
    case 'conv':
      return [{ rows: spec.nfin * spec.kx, cols: spec.nfout * spec.ky, channelWidth: spec.ky, label: 'kernel' }];
    case 'lstm':
    case 'gru': {
      const names = spec.kind === 'lstm' ? LSTM_GATES : GRU_GATES;
      const out: PlaneShape[] = [];
      for (let d = 0; d < spec.directions; d++)
        for (let g = 0; g < spec.gates; g++)
          out.push({ rows: spec.nin, cols: spec.hidden, channelWidth: 1, label: `gate ${names[g] ?? g}, direction ${d}` });
      return out;
    }
    case 'stack':
      return Array.from({ length: spec.batch }, (_, p) => ({
        rows: spec.nin,
        cols: spec.nout,
        channelWidth: 1,
        label: `matrix ${p}`,
      }));
  }
}

/** Returns f(plane, row, col) → index into the tensor in file memory order. */
export function sourceIndexFn(spec: LayoutSpec): (p: number, r: number, c: number) => number {
  switch (spec.kind) {
    case 'fc': {
      const { nin, nout } = spec;
      return spec.order === 'in_out' ? (_p, i, j) => i * nout + j : (_p, i, j) => j * nin + i;
    }
    case 'conv': {
      const { nfin, nfout, kx, ky } = spec;
      // pixel (fin·Kx + x, fout·Ky + y) holds W[fin, fout, x, y]
      return spec.order === 'out_in'
        ? (_p, r, c) => {
            const fin = Math.floor(r / kx),
              x = r - fin * kx,
              fout = Math.floor(c / ky),
              y = c - fout * ky;
            return ((fout * nfin + fin) * kx + x) * ky + y;
          }
        : (_p, r, c) => {
            const fin = Math.floor(r / kx),
              x = r - fin * kx,
              fout = Math.floor(c / ky),
              y = c - fout * ky;
            return ((fin * nfout + fout) * kx + x) * ky + y;
          };
    }
    case 'lstm':
    case 'gru': {
      const { gates, hidden, nin } = spec;
      // ONNX W/R: [directions, gates·H, Nin]; row g·H + h of direction d is output h of gate g.
      return (p, i, h) => {
        const d = Math.floor(p / gates),
          g = p - d * gates;
        return ((d * gates + g) * hidden + h) * nin + i;
      };
    }
    case 'stack': {
      const { nin, nout } = spec;
      const size = nin * nout;
      return spec.order === 'in_out' ? (p, i, j) => p * size + i * nout + j : (p, i, j) => p * size + j * nin + i;
    }
  }
}

/**
 * The index map of plane p as a sum: element (r, c) of the plane sits at `rows[r] + cols[c]` of the tensor
 * (file order). Every layout separates so (a conv plane's row fin·Kx + x and column fout·Ky + y each name
 * their own part of the kernel index), which lets a decoder write straight into the tensor in blocks;
 * it is the same map as `sourceIndexFn` (tested against it). Int32: callers keep tensors below 2^31 elements.
 */
export function planeOffsets(spec: LayoutSpec, p: number): { rows: Int32Array; cols: Int32Array } {
  const s = planeShapes(spec)[p];
  const rows = new Int32Array(s.rows);
  const cols = new Int32Array(s.cols);
  switch (spec.kind) {
    case 'fc':
      for (let r = 0; r < s.rows; r++) rows[r] = spec.order === 'in_out' ? r * spec.nout : r;
      for (let c = 0; c < s.cols; c++) cols[c] = spec.order === 'in_out' ? c : c * spec.nin;
      break;
    case 'conv': {
      const { nfin, nfout, kx, ky } = spec;
      const kernel = kx * ky;
      // out_in: ((fout·Nfin + fin)·Kx + x)·Ky + y = fout·Nfin·Kx·Ky + (fin·Kx + x)·Ky + y
      // in_out: ((fin·Nfout + fout)·Kx + x)·Ky + y = fin·Nfout·Kx·Ky + x·Ky + fout·Kx·Ky + y
      for (let r = 0; r < s.rows; r++) {
        const fin = Math.floor(r / kx);
        rows[r] = spec.order === 'out_in' ? r * ky : fin * nfout * kernel + (r - fin * kx) * ky;
      }
      for (let c = 0; c < s.cols; c++) {
        const fout = Math.floor(c / ky);
        cols[c] = (spec.order === 'out_in' ? fout * nfin * kernel : fout * kernel) + (c - fout * ky);
      }
      break;
    }
    case 'lstm':
    case 'gru':
      // plane p = d·gates + g: ((p·H + h)·Nin + i)
      for (let r = 0; r < s.rows; r++) rows[r] = p * spec.hidden * spec.nin + r;
      for (let c = 0; c < s.cols; c++) cols[c] = c * spec.nin;
      break;
    case 'stack': {
      // matrix p starts at p·Nin·Nout; within it as an fc plane
      const base = p * spec.nin * spec.nout;
      const inOut = spec.order === 'in_out';
      for (let r = 0; r < s.rows; r++) rows[r] = base + (inOut ? r * spec.nout : r);
      for (let c = 0; c < s.cols; c++) cols[c] = inOut ? c : c * spec.nin;
      break;
    }
  }
  return { rows, cols };
}

/**
 * dst (cols×rows) = transpose of src (rows×cols), in blocks, writing dst rows contiguously (measured 5× faster).
 * float32 weights have a copy of their own: one loop fed every typed-array type goes megamorphic in V8 and
 * reads each element through the generic path (measured 48 ns instead of 3 ns an element, issue 16).
 */
function transposeInto(src: AnyTypedArray, rows: number, cols: number, dst: AnyTypedArray): void {
  if (src instanceof Float32Array && dst instanceof Float32Array) return transposeFloat32(src, rows, cols, dst);
  const B = 64;
  for (let c0 = 0; c0 < cols; c0 += B) {
    const c1 = Math.min(cols, c0 + B);
    for (let r0 = 0; r0 < rows; r0 += B) {
      const r1 = Math.min(rows, r0 + B);
      for (let c = c0; c < c1; c++) {
        const d = c * rows;
        for (let r = r0; r < r1; r++) dst[d + r] = src[r * cols + c];
      }
    }
  }
}

/**
 * `transposeInto` for float32, fed one type only: strips of 8 source rows, read along the row (8 sequential
 * streams) and written as 8 consecutive floats of each destination row. Measured (Node 20, fresh destination,
 * bench as in issue 16): 8192×3072 1.95 ns an element against 3.84 for 64×64 blocks, 1024×3072 0.61 against
 * 3.07. The last rows % 8 go the same way, one strip as wide as they are.
 */
function transposeFloat32(src: Float32Array, rows: number, cols: number, dst: Float32Array): void {
  let r = 0;
  for (; r + 8 <= rows; r += 8) {
    const s0 = r * cols;
    const s1 = s0 + cols;
    const s2 = s1 + cols;
    const s3 = s2 + cols;
    const s4 = s3 + cols;
    const s5 = s4 + cols;
    const s6 = s5 + cols;
    const s7 = s6 + cols;
    for (let c = 0, d = r; c < cols; c++, d += rows) {
      dst[d] = src[s0 + c];
      dst[d + 1] = src[s1 + c];
      dst[d + 2] = src[s2 + c];
      dst[d + 3] = src[s3 + c];
      dst[d + 4] = src[s4 + c];
      dst[d + 5] = src[s5 + c];
      dst[d + 6] = src[s6 + c];
      dst[d + 7] = src[s7 + c];
    }
  }
  const rest = rows - r;
  if (rest > 0)
    for (let c = 0, d = r; c < cols; c++, d += rows) for (let k = 0; k < rest; k++) dst[d + k] = src[(r + k) * cols + c];
}

/** Forward map: tensor (file order) → planes (row-major). */
export function gatherPlanes<T extends AnyTypedArray>(src: T, spec: LayoutSpec, alloc: (n: number) => T): T[] {
  // Fully connected layers, the bulk of every large model: the index map below is a plain copy (in_out) or a
  // transpose (out_in), done in blocks (tested against it).
  if (spec.kind === 'fc') {
    const plane = alloc(spec.nin * spec.nout);
    if (spec.order === 'in_out') plane.set(src.subarray(0, plane.length) as never);
    else transposeInto(src, spec.nout, spec.nin, plane);
    return [plane];
  }
  // every other layout through its separable index map (planeOffsets): a sum of two table entries an element
  // instead of a call with divisions (ISNet's convolutions: 0.41 s of a 4.2 s encode, now a fraction)
  if (layoutElementCount(spec) >= 2 ** 31) return gatherByIndex(src, spec, alloc);
  return planeShapes(spec).map((s, p) => {
    const plane = alloc(s.rows * s.cols);
    const { rows, cols } = planeOffsets(spec, p);
    for (let r = 0; r < s.rows; r++) {
      const base = r * s.cols;
      const at = rows[r];
      for (let c = 0; c < s.cols; c++) plane[base + c] = src[at + cols[c]];
    }
    return plane;
  });
}

/** Inverse map: planes → tensor (file order), written into `out`. */
export function scatterPlanes<T extends AnyTypedArray>(planes: readonly T[], spec: LayoutSpec, out: T): T {
  if (spec.kind === 'fc') {
    if (spec.order === 'in_out') out.set(planes[0] as never);
    else transposeInto(planes[0], spec.nin, spec.nout, out);
    return out;
  }
  if (layoutElementCount(spec) >= 2 ** 31) return scatterByIndex(planes, spec, out);
  planeShapes(spec).forEach((s, p) => {
    const plane = planes[p];
    const { rows, cols } = planeOffsets(spec, p);
    for (let r = 0; r < s.rows; r++) {
      const base = r * s.cols;
      const at = rows[r];
      for (let c = 0; c < s.cols; c++) out[at + cols[c]] = plane[base + c];
    }
  });
  return out;
}

/** gatherPlanes through the index function: tensors of 2^31 elements and more (planeOffsets is Int32). */
function gatherByIndex<T extends AnyTypedArray>(src: T, spec: LayoutSpec, alloc: (n: number) => T): T[] {
  const idx = sourceIndexFn(spec);
  return planeShapes(spec).map((s, p) => {
    const plane = alloc(s.rows * s.cols);
    for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) plane[r * s.cols + c] = src[idx(p, r, c)];
    return plane;
  });
}

/** scatterPlanes through the index function (see gatherByIndex). */
function scatterByIndex<T extends AnyTypedArray>(planes: readonly T[], spec: LayoutSpec, out: T): T {
  const idx = sourceIndexFn(spec);
  planeShapes(spec).forEach((s, p) => {
    const plane = planes[p];
    for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) out[idx(p, r, c)] = plane[r * s.cols + c];
  });
  return out;
}

export function layoutElementCount(spec: LayoutSpec): number {
  // (a stack's count without its list of planes: a manifest's batch is checked against the shape by this)
  if (spec.kind === 'stack') return spec.batch * spec.nin * spec.nout;
  return planeShapes(spec).reduce((s, p) => s + p.rows * p.cols, 0);
}

/**
 * The layout of rows [r, r + rows) of a tensor's leading dimension, where such a block is a tensor the
 * layout describes by itself: a block of output channels of an [out, in] matrix or kernel, or of input
 * rows of an [in, out] one, or of the matrices of a stack. Recurrent layouts (gates and directions lead) are not sliced.
 */
export function sliceLayout(spec: LayoutSpec, shape: readonly number[], rows: number): LayoutSpec | undefined {
  const lead = shape[0];
  if (!(shape.length >= 2 && rows > 0 && rows <= lead)) return undefined;
  const part = (n: number): number | undefined => (n % lead === 0 ? (n / lead) * rows : undefined);
  let out: LayoutSpec | undefined;
  if (spec.kind === 'fc') {
    const n = part(spec.order === 'out_in' ? spec.nout : spec.nin);
    if (n !== undefined) out = spec.order === 'out_in' ? { ...spec, nout: n } : { ...spec, nin: n };
  } else if (spec.kind === 'conv') {
    const n = part(spec.order === 'out_in' ? spec.nfout : spec.nfin);
    if (n !== undefined) out = spec.order === 'out_in' ? { ...spec, nfout: n } : { ...spec, nfin: n };
  } else if (spec.kind === 'stack') {
    // a block of whole matrices (experts)
    const n = part(spec.batch);
    if (n !== undefined) out = { ...spec, batch: n };
  }
  return out && layoutElementCount(out) === rows * rowElements(shape) ? out : undefined;
}
