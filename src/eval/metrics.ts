/** Reconstruction error of one tensor: computed at compress time and by `eval`. */
export interface ErrorStats {
  maxAbs: number;
  rmse: number;
  /** Signal-to-noise ratio in dB (signal power over error power); Infinity when exact. */
  snrDb: number;
}

export function errorStats(original: Float32Array, restored: Float32Array): ErrorStats {
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
  const rmse = n ? Math.sqrt(se / n) : 0;
  const snrDb = se === 0 ? Infinity : 10 * Math.log10(sp / se);
  return { maxAbs, rmse, snrDb };
}
