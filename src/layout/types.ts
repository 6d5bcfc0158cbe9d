/**
 * A layout maps a tensor (in its file's memory order) to one or more 2-D planes
 * and back. Each layout is defined by a single index function — which source
 * element sits at plane p, row r, column c — so the forward map (gather) and
 * its inverse (scatter) cannot disagree.
 */

export type LayoutSpec = FcLayoutSpec | ConvLayoutSpec | RecurrentLayoutSpec | StackLayoutSpec;

/** M2: a fully-connected matrix as one Nin × Nout plane (row = input, column = output). */
export interface FcLayoutSpec {
  kind: 'fc';
  nin: number;
  nout: number;
  /** Memory order in the file: [in, out] (ONNX MatMul, Gemm transB=0) or [out, in] (PyTorch Linear, Gemm transB=1). */
  order: 'in_out' | 'out_in';
}

/** M3: a conv kernel as one (Nfin·Kx) × (Nfout·Ky) plane of Kx × Ky tiles. */
export interface ConvLayoutSpec {
  kind: 'conv';
  nfin: number;
  nfout: number;
  kx: number;
  ky: number;
  /** Memory order: [out, in, kx, ky] (Conv) or [in, out, kx, ky] (ConvTranspose). */
  order: 'out_in' | 'in_out';
}

/** M4: LSTM (4 gates) / GRU (3 gates): one Nin × H plane per gate and direction. */
export interface RecurrentLayoutSpec {
  kind: 'lstm' | 'gru';
  gates: number;
  directions: number;
  hidden: number;
  nin: number;
}

/**
 * Fully connected matrices stacked along leading axes (a batched MatMul's constant B [experts, in, out], an MoE's
 * stacked experts): one Nin × Nout plane per matrix, each column of each plane its own channel. Laid out as one fc
 * matrix of [batch·in, out], every expert's column j shared one range: experts of scales 0.25–2.8 ran at 22.8–43.7 dB.
 */
export interface StackLayoutSpec {
  kind: 'stack';
  /** How many matrices (the product of the leading axes). */
  batch: number;
  nin: number;
  nout: number;
  /** Memory order of each matrix: [batch, in, out] (MatMul's B) or [batch, out, in]. */
  order: 'in_out' | 'out_in';
}

export interface PlaneShape {
  rows: number;
  cols: number;
  /** Plane columns that belong to one output channel (per-channel ranges). */
  channelWidth: number;
  /** Human-readable name of the plane within its tensor ("gate i, direction 0"). */
  label: string;
}

export type AnyTypedArray = Float32Array | Uint8Array | Uint16Array | Uint32Array;
