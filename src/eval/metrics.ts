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

/** A number to `digits` significant digits, rounded towards `direction` (manifest records: full float precision is noise there). */
export function roundSignificant(v: number, digits = 4, direction: 'nearest' | 'up' | 'down' = 'nearest'): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const near = Number(v.toPrecision(digits));
  if (direction === 'nearest' || (direction === 'up' ? near >= v : near <= v)) return near;
  const unit = 10 ** (Math.floor(Math.log10(Math.abs(v))) - digits + 1);
  return Number((near + (direction === 'up' ? unit : -unit)).toPrecision(digits));
}

/**
 * Stats as the manifest records them: 3 significant digits (0.1 dB of SNR), rounded to the safe side (errors
 * up, SNR down), so a recorded bound is never tighter than the measured one.
 */
export function recordedStats(s: ErrorStats): ErrorStats {
  return {
    maxAbs: roundSignificant(s.maxAbs, 3, 'up'),
    rmse: roundSignificant(s.rmse, 3, 'up'),
    snrDb: roundSignificant(s.snrDb, 3, 'down'),
  };
}
