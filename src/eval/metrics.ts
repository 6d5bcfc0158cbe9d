/** Reconstruction error of one tensor: computed at compress time and by `eval`. */
export interface ErrorStats {
  maxAbs: number;
  rmse: number;
  /** Signal-to-noise ratio in dB (signal power over error power); Infinity when exact. */
  snrDb: number;
}

/** The sums behind ErrorStats, which add up over the slices of a tensor. */
export interface ErrorSums {
  maxAbs: number;
  /** Σ (w − ŵ)² and Σ w² over the finite weights, and how many there are. */
  se: number;
  sp: number;
  n: number;
}

export function errorSums(original: Float32Array, restored: Float32Array): ErrorSums {
  let maxAbs = 0;
  let se = 0;
  let sp = 0;
  let n = 0;
  for (let i = 0; i < original.length; i++) {
    const a = original[i];
    const b = restored[i];
    if (!Number.isFinite(a)) continue; // non-finite weights are stored exactly, not measured
    const d = Math.abs(a - b);
    if (d > maxAbs) maxAbs = d;
    se += d * d;
    sp += a * a;
    n++;
  }
  return { maxAbs, se, sp, n };
}

export function addSums(a: ErrorSums, b: ErrorSums): ErrorSums {
  return { maxAbs: Math.max(a.maxAbs, b.maxAbs), se: a.se + b.se, sp: a.sp + b.sp, n: a.n + b.n };
}

export function statsFromSums({ maxAbs, se, sp, n }: ErrorSums): ErrorStats {
  return { maxAbs, rmse: n ? Math.sqrt(se / n) : 0, snrDb: se === 0 ? Infinity : 10 * Math.log10(sp / se) };
}

export function errorStats(original: Float32Array, restored: Float32Array): ErrorStats {
  return statsFromSums(errorSums(original, restored));
}
