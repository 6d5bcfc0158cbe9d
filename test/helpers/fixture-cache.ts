/**
 * Archives the slow tests need (AV1 and VP9 encodes, whole real models), built once and kept in
 * `node_modules/.cache/nnmedia-test/` (or `$NNMEDIA_TEST_CACHE`), so a test's time does not grow with the
 * number of fixtures or the machine's load. The key is the package version, every file under `src/` but the
 * CLI and the browser decoder (which write no archive), the options and the model's bytes: any change to
 * the encoder builds new fixtures (and drops the old ones).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { compressModel } from '../../src/pipeline/compress.js';
import type { CompressOptions } from '../../src/pipeline/options.js';
import { VERSION } from '../../src/version.js';

const ROOT = join(import.meta.dirname, '../..');
export const CACHE_DIR = process.env.NNMEDIA_TEST_CACHE ?? join(ROOT, 'node_modules/.cache/nnmedia-test');

function sha256(...parts: Array<string | Uint8Array>): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

let source: string | undefined;

/** Folders of src/ that do not change what compressModel writes. */
const NOT_ENCODER = new Set(['cli', 'browser'].map((d) => join(ROOT, 'src', d)));

/** The hash of the encoder's source: every file's path and bytes, in path order. */
function sourceHash(): string {
  if (source) return source;
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }))
      if (e.isDirectory()) {
        if (!NOT_ENCODER.has(join(d, e.name))) walk(join(d, e.name));
      } else files.push(join(d, e.name));
  };
  walk(join(ROOT, 'src'));
  files.sort();
  source = sha256(...files.flatMap((f) => [relative(ROOT, f), readFileSync(f)])).slice(0, 16);
  // fixtures of other sources are stale: drop them (not archives being written: another checkout sharing
  // node_modules, a worktree, may be building its own right now)
  if (existsSync(CACHE_DIR))
    for (const f of readdirSync(CACHE_DIR))
      if (!f.startsWith(`${source}-`) && !f.startsWith('.') && !f.endsWith('.part')) rmSync(join(CACHE_DIR, f), { force: true });
  return source;
}

/**
 * Copies to `out` the archive of `model` compressed with `options`, compressing it only if the cache lacks
 * it. Resolves whether it came from the cache.
 */
export async function cachedArchive(model: string, options: CompressOptions, out: string): Promise<boolean> {
  const src = sourceHash();
  const file = join(CACHE_DIR, `${src}-${sha256(VERSION, JSON.stringify(options), readFileSync(model)).slice(0, 32)}.nnm`);
  const hit = existsSync(file);
  if (!hit) {
    mkdirSync(CACHE_DIR, { recursive: true });
    // built under a name of its own, then renamed: parallel test files never see half an archive
    const tmp = `${file}.${process.pid}.${Date.now()}.part`;
    // fixtures test the format and its decoders, not the quality gate (test/gate.test.ts does): random-weight
    // fixture models at coarse grids may fall under its floor, and the gate costs two model runs per fixture
    await compressModel(model, tmp, { check: false, ...options });
    renameSync(tmp, file);
  }
  copyFileSync(file, out);
  return hit;
}
