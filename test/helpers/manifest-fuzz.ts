/**
 * The hostile-manifest fuzzer's pieces, shared by the Node tests (decompress and the isomorphic core) and
 * the Chromium test (the browser decoder): every path into a manifest's records, hostile values, and a
 * manifest with one value replaced. A valid ZIP with a valid JSON manifest of hostile values must give a
 * typed error (an NnmediaError with its code) or a valid model — never a crash, a hang or a raw TypeError.
 */
import fc from 'fast-check';
import type { Manifest } from '../../src/archive/manifest.js';

/**
 * Fuzzing budget: bounded in CI; longer by hand with NNMEDIA_FUZZ_SCALE=100 (runs × 100) and
 * NNMEDIA_FUZZ_SEED=<n> (a different stream of inputs). A failure prints its seed and path to replay.
 */
export const FUZZ_SCALE = Number(process.env.NNMEDIA_FUZZ_SCALE ?? 1);
const FUZZ_SEED = Number(process.env.NNMEDIA_FUZZ_SEED ?? 0);
/** Each fuzzing test's time limit grows with the budget. */
export const FUZZ_TIMEOUT = 180_000 * Math.max(1, FUZZ_SCALE);

export const budget = (runs: number, seed: number): { numRuns: number; seed: number } => ({
  numRuns: Math.round(runs * FUZZ_SCALE),
  seed: seed + FUZZ_SEED,
});

/** Paths into the records a decoder reads: every key down to `depth` levels (sliced records are deeper). */
export function manifestPaths(manifest: Manifest, depth: number): string[][] {
  const paths: string[][] = [];
  const walk = (v: unknown, path: string[], at: number): void => {
    if (at > 0) paths.push(path);
    if (at < depth && v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, [...path, k], at + 1);
  };
  walk(
    {
      tensors: manifest.tensors,
      skeleton: manifest.skeleton,
      skeletonParts: manifest.skeletonParts,
      version: manifest.version,
      packs: manifest.packs,
      // version 4 restores records from these (bytes from entry sizes, options' defaults) and bounds members by source.bytes
      source: manifest.source,
      options: manifest.options,
      entries: manifest.entries,
    },
    [],
    0,
  );
  return paths;
}

export const hostileValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  // undefined: the key left out, as version 4's compact records leave keys out for the reader to restore
  fc.constantFrom(-1, 0, 2 ** 31, 2 ** 53, 1e308, -0.5, NaN, '../../etc/passwd', '', [], {}, null, undefined),
);

/** A copy of the manifest with the value at `path` replaced. */
export function mutated(manifest: Manifest, path: readonly string[], value: unknown): Record<string, unknown> {
  const m = structuredClone(manifest) as unknown as Record<string, unknown>;
  let at = m;
  for (const p of path.slice(0, -1)) at = at[p] as Record<string, unknown>;
  at[path.at(-1)!] = value;
  return m;
}
