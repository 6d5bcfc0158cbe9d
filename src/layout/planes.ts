import type { AnyTypedArray, LayoutSpec, PlaneShape } from './types.js';

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
  }
}

/** Forward map: tensor (file order) → planes (row-major). */
export function gatherPlanes<T extends AnyTypedArray>(src: T, spec: LayoutSpec, alloc: (n: number) => T): T[] {
  const idx = sourceIndexFn(spec);
  return planeShapes(spec).map((s, p) => {
    const plane = alloc(s.rows * s.cols);
    for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) plane[r * s.cols + c] = src[idx(p, r, c)];
    return plane;
  });
}

/** Inverse map: planes → tensor (file order), written into `out`. */
export function scatterPlanes<T extends AnyTypedArray>(planes: readonly T[], spec: LayoutSpec, out: T): T {
  const idx = sourceIndexFn(spec);
  planeShapes(spec).forEach((s, p) => {
    const plane = planes[p];
    for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) out[idx(p, r, c)] = plane[r * s.cols + c];
  });
  return out;
}

export function layoutElementCount(spec: LayoutSpec): number {
  return planeShapes(spec).reduce((s, p) => s + p.rows * p.cols, 0);
}
