/**
 * Smooth judges: numbers that move a little when a model's outputs move a little, where a task metric (CER over
 * 200 lines, decision agreement) moves in steps of one character or one frame. Beside the task metric, never
 * instead of it:
 *
 * - KL divergence of the output distributions, KL(original ‖ candidate) in nats: per OCR time step over the CTC
 *   classes (`categoricalKl`), per VAD frame between Bernoulli speech probabilities (`bernoulliKl`).
 * - The CTC log-likelihood of the ground-truth text (`ctcLogLikelihood`): how sure the model is of the right
 *   answer, summed over every alignment, not only whether the greedy decoding happens to be right.
 *
 * All in float64; a probability of exactly 0 gives −∞ in a log-likelihood and is floored (`PROBABILITY_FLOOR`) in
 * a KL, so one underflowed class cannot make the mean infinite.
 */

/**
 * Floor of a candidate's probability inside a KL: float32 softmax outputs underflow below ~1e-38, and a class the
 * original gives 1e-20 while the candidate's underflows would otherwise count as infinitely wrong. The same floor
 * for the original keeps KL(p ‖ p) exactly 0.
 */
export const PROBABILITY_FLOOR = 1e-30;

/** log(e^a + e^b) without overflow; −∞ when both are. */
export function logAddExp(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  return a > b ? a + Math.log1p(Math.exp(b - a)) : b + Math.log1p(Math.exp(a - b));
}

/**
 * KL(p ‖ q) of the categorical distributions at each of `steps` rows of `classes` probabilities (row-major, as an
 * OCR model's [1, T, C] softmax output), in nats, one value per step. Both rows are renormalised (float32
 * softmax sums to 1 ± 1e-6) after flooring at `PROBABILITY_FLOOR`.
 */
export function categoricalKl(p: Float32Array, q: Float32Array, classes: number): Float64Array {
  if (p.length !== q.length || classes <= 0 || p.length % classes !== 0)
    throw new RangeError(`categoricalKl: ${p.length} and ${q.length} values are not the same rows of ${classes} classes`);
  const steps = p.length / classes;
  const out = new Float64Array(steps);
  for (let t = 0; t < steps; t++) {
    const o = t * classes;
    let sp = 0;
    let sq = 0;
    for (let k = 0; k < classes; k++) {
      sp += Math.max(p[o + k], PROBABILITY_FLOOR);
      sq += Math.max(q[o + k], PROBABILITY_FLOOR);
    }
    let kl = 0;
    for (let k = 0; k < classes; k++) {
      const a = Math.max(p[o + k], PROBABILITY_FLOOR);
      const b = Math.max(q[o + k], PROBABILITY_FLOOR);
      if (a !== b) kl += a * Math.log(a / b);
    }
    // Σ (a/sp) log((a/sp)/(b/sq)) = (1/sp) Σ a log(a/b) + log(sq/sp); exact 0 when the rows are identical
    out[t] = Math.max(0, kl / sp + Math.log(sq / sp));
  }
  return out;
}

/** KL(Bernoulli(p) ‖ Bernoulli(q)) per element, in nats (probabilities clamped to [1e-7, 1 − 1e-7]). */
export function bernoulliKl(p: Float32Array, q: Float32Array): Float64Array {
  if (p.length !== q.length) throw new RangeError(`bernoulliKl: ${p.length} and ${q.length} probabilities`);
  const EPS = 1e-7;
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    if (p[i] === q[i]) continue;
    const a = Math.min(1 - EPS, Math.max(EPS, p[i]));
    const b = Math.min(1 - EPS, Math.max(EPS, q[i]));
    out[i] = Math.max(0, a * Math.log(a / b) + (1 - a) * Math.log((1 - a) / (1 - b)));
  }
  return out;
}

/**
 * log P(label | x) under CTC: the sum over every alignment of `steps` frames that collapses (merge repeats, drop
 * blanks) to `label`, by the forward algorithm in log space. `probs` holds `steps` rows of `classes`
 * probabilities (softmax outputs, not logs); `label` the class indices (no blanks). −∞ when no alignment fits
 * (more label steps than frames allow) or the probabilities forbid it.
 */
export function ctcLogLikelihood(probs: Float32Array, classes: number, label: Int32Array, blank = 0): number {
  if (classes <= 0 || probs.length % classes !== 0)
    throw new RangeError(`ctcLogLikelihood: ${probs.length} values are not rows of ${classes} classes`);
  const steps = probs.length / classes;
  for (const c of label)
    if (c < 0 || c >= classes || c === blank) throw new RangeError(`ctcLogLikelihood: label class ${c} out of range or blank`);
  // extended label: blank, l1, blank, l2, …, lL, blank
  const S = 2 * label.length + 1;
  const ext = new Int32Array(S).fill(blank);
  for (let i = 0; i < label.length; i++) ext[2 * i + 1] = label[i];
  if (steps === 0) return label.length === 0 ? 0 : -Infinity;
  let alpha = new Float64Array(S).fill(-Infinity);
  let next = new Float64Array(S);
  const logp = (t: number, k: number): number => Math.log(probs[t * classes + k]);
  alpha[0] = logp(0, ext[0]);
  if (S > 1) alpha[1] = logp(0, ext[1]);
  for (let t = 1; t < steps; t++) {
    for (let s = 0; s < S; s++) {
      let a = alpha[s];
      if (s >= 1) a = logAddExp(a, alpha[s - 1]);
      // skip over a blank, unless the two labels either side of it are the same (they would merge)
      if (s >= 2 && ext[s] !== blank && ext[s] !== ext[s - 2]) a = logAddExp(a, alpha[s - 2]);
      next[s] = a === -Infinity ? -Infinity : a + logp(t, ext[s]);
    }
    [alpha, next] = [next, alpha];
  }
  return S > 1 ? logAddExp(alpha[S - 1], alpha[S - 2]) : alpha[0];
}

/** log Σ exp(v) over the values (−∞ for none). */
export function logSumExp(values: Iterable<number>): number {
  let acc = -Infinity;
  for (const v of values) acc = logAddExp(acc, v);
  return acc;
}
