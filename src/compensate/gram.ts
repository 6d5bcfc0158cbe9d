/**
 * Streaming Gram matrices H = XᵀX of layer inputs, and the im2col patches
 * that make a convolution a matrix product. Rows of X arrive in blocks given
 * transposed (feature-major: xt[i·stride + t] is feature i of row t), which is
 * how NCHW activations already lie for 1×1 convolutions and how the im2col
 * buffer is filled; only the upper triangle is accumulated, mirrored at the end.
 */

/** One block buffer for every accumulator: per-accumulator buffers cost 150 MB per depthwise layer of 480 groups. */
let scratch = new Float64Array(0);

/** H accumulated in double precision, upper triangle until `finish()`. */
export class GramAccumulator {
  readonly h: Float64Array;
  /** Rows of X added so far. */
  rows = 0;
  private finished = false;

  constructor(readonly k: number) {
    this.h = new Float64Array(k * k);
  }

  /**
   * Adds n rows given feature-major in float32 (feature i of row t at x[offset + i·stride + t]): copied
   * in blocks to float64, which the product loop reads faster (measured 1.4–2× on K = 480 and 2880).
   */
  addFeatureMajor(x: Float32Array, n: number, stride = n, offset = 0): void {
    const { k } = this;
    const block = Math.max(1, Math.min(n, Math.floor(BLOCK_ELEMENTS / Math.max(k, 1))));
    const buf = this.buffer(block * k);
    for (let t0 = 0; t0 < n; t0 += block) {
      const m = Math.min(block, n - t0);
      for (let i = 0; i < k; i++) {
        const src = offset + i * stride + t0;
        const dst = i * m;
        for (let t = 0; t < m; t++) buf[dst + t] = x[src + t];
      }
      this.addTransposed(buf, m, m);
    }
  }

  /** The shared float64 block buffer, at least n elements (accumulation is synchronous: one user at a time). */
  buffer(n: number): Float64Array {
    if (scratch.length < n) scratch = new Float64Array(n);
    return scratch;
  }

  /** Adds n rows given feature-major in float64: feature i of row t at xt[offset + i·stride + t]. */
  addTransposed(xt: Float64Array, n: number, stride = n, offset = 0): void {
    if (this.finished) throw new Error('GramAccumulator: rows added after finish()');
    const { k, h } = this;
    let i = 0;
    // two feature rows against four at a time (8 dot products per pass over the rows: 6 loads for 8 products)
    for (; i + 1 < k; i += 2) {
      const a0 = offset + i * stride;
      const a1 = a0 + stride;
      const r0 = i * k;
      const r1 = r0 + k;
      // the 2×2 corner on the diagonal
      let d00 = 0;
      let d01 = 0;
      let d11 = 0;
      for (let t = 0; t < n; t++) {
        const u = xt[a0 + t];
        const v = xt[a1 + t];
        d00 += u * u;
        d01 += u * v;
        d11 += v * v;
      }
      h[r0 + i] += d00;
      h[r0 + i + 1] += d01;
      h[r1 + i + 1] += d11;
      let j = i + 2;
      for (; j + 3 < k; j += 4) {
        const b0 = offset + j * stride;
        const b1 = b0 + stride;
        const b2 = b1 + stride;
        const b3 = b2 + stride;
        let s00 = 0;
        let s01 = 0;
        let s02 = 0;
        let s03 = 0;
        let s10 = 0;
        let s11 = 0;
        let s12 = 0;
        let s13 = 0;
        for (let t = 0; t < n; t++) {
          const u = xt[a0 + t];
          const v = xt[a1 + t];
          const w0 = xt[b0 + t];
          const w1 = xt[b1 + t];
          const w2 = xt[b2 + t];
          const w3 = xt[b3 + t];
          s00 += u * w0;
          s01 += u * w1;
          s02 += u * w2;
          s03 += u * w3;
          s10 += v * w0;
          s11 += v * w1;
          s12 += v * w2;
          s13 += v * w3;
        }
        h[r0 + j] += s00;
        h[r0 + j + 1] += s01;
        h[r0 + j + 2] += s02;
        h[r0 + j + 3] += s03;
        h[r1 + j] += s10;
        h[r1 + j + 1] += s11;
        h[r1 + j + 2] += s12;
        h[r1 + j + 3] += s13;
      }
      for (; j < k; j++) {
        const b = offset + j * stride;
        let s0 = 0;
        let s1 = 0;
        for (let t = 0; t < n; t++) {
          const w = xt[b + t];
          s0 += xt[a0 + t] * w;
          s1 += xt[a1 + t] * w;
        }
        h[r0 + j] += s0;
        h[r1 + j] += s1;
      }
    }
    if (i < k) {
      // the last row when K is odd: its diagonal only
      const a = offset + i * stride;
      let s = 0;
      for (let t = 0; t < n; t++) s += xt[a + t] * xt[a + t];
      h[i * k + i] += s;
    }
    this.rows += n;
  }

  /** Adds n rows given row-major (X itself: feature i of row t at x[offset + t·k + i]), transposing in blocks. */
  addRows(x: Float32Array | Float64Array, n: number, offset = 0): void {
    const block = Math.max(1, Math.min(n, Math.floor(BLOCK_ELEMENTS / Math.max(this.k, 1))));
    const buf = this.buffer(block * this.k);
    for (let t0 = 0; t0 < n; t0 += block) {
      const m = Math.min(block, n - t0);
      for (let t = 0; t < m; t++) {
        const src = offset + (t0 + t) * this.k;
        for (let i = 0; i < this.k; i++) buf[i * m + t] = x[src + i];
      }
      this.addTransposed(buf, m, m);
    }
  }

  /** Adds H of another accumulator (same K). */
  addGram(other: Float64Array, rows: number): void {
    for (let i = 0; i < other.length; i++) this.h[i] += other[i];
    this.rows += rows;
  }

  /** The full symmetric matrix (lower triangle mirrored from the upper). */
  finish(): Float64Array {
    if (!this.finished) {
      const { k, h } = this;
      for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) h[j * k + i] = h[i * k + j];
      this.finished = true;
    }
    return this.h;
  }
}

/** Elements of one transposed block (16 MB of float32): bounds the im2col and transpose buffers. */
const BLOCK_ELEMENTS = 4 * 1024 * 1024;

/** A convolution's geometry over 2 spatial axes (1-D convolutions as height 1). */
export interface ConvGeometry {
  /** Input channels in total and per group. */
  channels: number;
  groups: number;
  inH: number;
  inW: number;
  kH: number;
  kW: number;
  strideH: number;
  strideW: number;
  dilationH: number;
  dilationW: number;
  padTop: number;
  padLeft: number;
  outH: number;
  outW: number;
}

export type ConvAttrs = Record<string, number | string | number[]>;

/**
 * Geometry of an ONNX Conv from its attributes, the input's spatial size and the kernel's, as the
 * operator defines it: explicit pads, or auto_pad SAME_UPPER / SAME_LOWER / VALID. Undefined where the
 * convolution has more than two spatial axes.
 */
export function convGeometry(
  attrs: ConvAttrs,
  channels: number,
  spatial: readonly number[],
  kernel: readonly number[],
): ConvGeometry | undefined {
  const rank = spatial.length;
  if (rank < 1 || rank > 2 || kernel.length !== rank) return undefined;
  const list = (name: string, fill: number, n = rank): number[] => {
    const v = attrs[name];
    return Array.isArray(v) && v.length === n ? v : new Array<number>(n).fill(fill);
  };
  const strides = list('strides', 1);
  const dilations = list('dilations', 1);
  const pads = list('pads', 0, 2 * rank);
  const autoPad = typeof attrs.auto_pad === 'string' ? attrs.auto_pad : 'NOTSET';
  const groups = typeof attrs.group === 'number' ? attrs.group : 1;
  const begin: number[] = [];
  const out: number[] = [];
  for (let a = 0; a < rank; a++) {
    const extent = dilations[a] * (kernel[a] - 1) + 1;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const o = Math.ceil(spatial[a] / strides[a]);
      const total = Math.max(0, (o - 1) * strides[a] + extent - spatial[a]);
      begin.push(autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : Math.ceil(total / 2));
      out.push(o);
    } else {
      const pb = autoPad === 'VALID' ? 0 : pads[a];
      const pe = autoPad === 'VALID' ? 0 : pads[a + rank];
      begin.push(pb);
      out.push(Math.floor((spatial[a] + pb + pe - extent) / strides[a]) + 1);
    }
  }
  const two = <T>(v: T[], fill: T): [T, T] => (rank === 1 ? [fill, v[0]] : [v[0], v[1]]);
  const [inH, inW] = two([...spatial], 1);
  const [kH, kW] = two([...kernel], 1);
  const [strideH, strideW] = two(strides, 1);
  const [dilationH, dilationW] = two(dilations, 1);
  const [padTop, padLeft] = two(begin, 0);
  const [outH, outW] = two(out, 1);
  return { channels, groups, inH, inW, kH, kW, strideH, strideW, dilationH, dilationW, padTop, padLeft, outH, outW };
}

/** K of a convolution's patches: channels per group × kernel size (ONNX weight order [c, kh, kw]). */
export const patchSize = (g: ConvGeometry): number => (g.channels / g.groups) * g.kH * g.kW;

/**
 * Accumulates the im2col patches of one sample (x: [C, inH, inW], from `offset`) into one Gram
 * accumulator per group. Patch feature c·kH·kW + i·kW + j of output position (oh, ow) is
 * x[g·Cg + c, oh·sH − pT + i·dH, ow·sW − pL + j·dW], or 0 in the padding. With `step` > 1 only the
 * positions start, start + step, … are taken (a subsample that bounds the cost on large inputs).
 */
export function addConvPatches(
  x: Float32Array,
  offset: number,
  g: ConvGeometry,
  grams: readonly GramAccumulator[],
  step = 1,
  start = 0,
): void {
  const cg = g.channels / g.groups;
  const k = patchSize(g);
  const positions = g.outH * g.outW;
  const plane = g.inH * g.inW;
  const pointwise =
    g.kH === 1 &&
    g.kW === 1 &&
    g.strideH === 1 &&
    g.strideW === 1 &&
    g.padTop === 0 &&
    g.padLeft === 0 &&
    g.outH === g.inH &&
    g.outW === g.inW;
  if (pointwise && step === 1) {
    // NCHW is already feature-major: channel rows of length H·W
    for (let grp = 0; grp < g.groups; grp++) grams[grp].addFeatureMajor(x, positions, plane, offset + grp * cg * plane);
    return;
  }
  const taken = start < positions ? Math.ceil((positions - start) / step) : 0;
  const block = Math.max(1, Math.min(taken, Math.floor(BLOCK_ELEMENTS / k)));
  // top-left input corner of each position of a block
  const rowAt = new Int32Array(block);
  const colAt = new Int32Array(block);
  for (let t0 = 0; t0 < taken; t0 += block) {
    const m = Math.min(block, taken - t0);
    for (let t = 0; t < m; t++) {
      const p = start + (t0 + t) * step;
      const oh = Math.floor(p / g.outW);
      rowAt[t] = oh * g.strideH - g.padTop;
      colAt[t] = (p - oh * g.outW) * g.strideW - g.padLeft;
    }
    for (let grp = 0; grp < g.groups; grp++) {
      const buf = grams[grp].buffer(m * k);
      for (let c = 0; c < cg; c++) {
        const src = offset + (grp * cg + c) * plane;
        for (let i = 0; i < g.kH; i++)
          for (let j = 0; j < g.kW; j++) {
            const row = ((c * g.kH + i) * g.kW + j) * m;
            const di = i * g.dilationH;
            const dj = j * g.dilationW;
            for (let t = 0; t < m; t++) {
              const ih = rowAt[t] + di;
              const iw = colAt[t] + dj;
              buf[row + t] = ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW ? x[src + ih * g.inW + iw] : 0;
            }
          }
      }
      grams[grp].addTransposed(buf, m, m);
    }
  }
}
