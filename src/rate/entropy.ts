import type { CodeArray } from '../quantize/uniform.js';

/** Order-0 entropy of a code array in bits (total): a close estimate of what WebP-lossless/PNG/zstd spend. */
export function codeEntropyBits(codes: CodeArray): number {
  if (codes instanceof Uint8Array || codes instanceof Uint16Array) return entropyOf(codeCounts([codes]), codes.length);
  const counts = new Map<number, number>();
  for (let i = 0; i < codes.length; i++) counts.set(codes[i], (counts.get(codes[i]) ?? 0) + 1);
  return entropyOf(Float64Array.from(counts.values()), codes.length);
}

/** Order-0 entropy in bits (total) of `n` codes counted in the histogram `h`. */
export function entropyOf(h: Float64Array, n: number): number {
  let bits = 0;
  for (let i = 0; i < h.length; i++) if (h[i]) bits -= h[i] * Math.log2(h[i] / n);
  return bits;
}

/** How often each code occurs in the planes, together (8-bit codes: 256 counts; 16-bit: 65,536). */
export function codeCounts(planes: ReadonlyArray<Uint8Array | Uint16Array>): Float64Array {
  const h = new Float64Array(planes.every((c) => c instanceof Uint8Array) ? 256 : 65536);
  for (const codes of planes) for (let i = 0; i < codes.length; i++) h[codes[i]]++;
  return h;
}
