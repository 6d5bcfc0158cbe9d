/**
 * ffmpeg, needed only by the video and audio codecs: `NNMEDIA_FFMPEG` if set, else an
 * `ffmpeg` on PATH that is newer than the bundled one, else the binary shipped inside the
 * optional peer dependency @ffmpeg-installer/ffmpeg (installs from npm alone), looked up on
 * first use. With none of them, a MissingCodecError names what to install. Frames and
 * samples go through pipes; nothing is written to disk.
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createRequire } from 'node:module';
import { CodecError, MissingCodecError } from '../errors.js';

export interface FfmpegInfo {
  path: string;
  version: string;
  source: 'env' | 'path' | 'bundled';
}

let cached: FfmpegInfo | undefined;

function versionOf(path: string): string | undefined {
  const r = spawnSync(path, ['-hide_banner', '-version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return undefined;
  return /ffmpeg version (\S+)/.exec(r.stdout)?.[1];
}

/** Major.minor of a release version ("5.1.9-0+deb12u1" → 5.1); snapshots like "N-…" or dates count as old. */
function release(v: string): number {
  const m = /^n?(\d+)\.(\d+)/.exec(v);
  return m ? Number(m[1]) + Number(m[2]) / 100 : 0;
}

export function findFfmpeg(): FfmpegInfo {
  if (cached) return cached;
  const env = process.env.NNMEDIA_FFMPEG;
  if (env) {
    const v = versionOf(env);
    if (!v) throw new MissingCodecError(`NNMEDIA_FFMPEG=${env} is not a working ffmpeg`);
    return (cached = { path: env, version: v, source: 'env' });
  }
  let bundled: FfmpegInfo | undefined;
  try {
    const path = (createRequire(import.meta.url)('@ffmpeg-installer/ffmpeg') as { path: string }).path;
    const v = existsSync(path) ? versionOf(path) : undefined;
    if (v) bundled = { path, version: v, source: 'bundled' };
  } catch {
    /* not installed for this platform */
  }
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, 'ffmpeg');
    if (!dir || !existsSync(p)) continue;
    const v = versionOf(p);
    if (v && (!bundled || release(v) > release(bundled.version))) return (cached = { path: p, version: v, source: 'path' });
  }
  if (bundled) return (cached = bundled);
  throw new MissingCodecError(
    'video and audio codecs need ffmpeg and none was found: npm install @ffmpeg-installer/ffmpeg@1.1.0 (a bundled binary), or put ffmpeg on PATH, or set NNMEDIA_FFMPEG',
  );
}

/** For tests: forget the cached binary. */
export function resetFfmpeg(): void {
  cached = undefined;
}

/** Runs ffmpeg with `input` on stdin; resolves with stdout, or a CodecError with the tail of stderr. */
export function runFfmpeg(args: readonly string[], input: Uint8Array, what: string): Promise<Buffer> {
  const { path } = findFfmpeg();
  return new Promise((resolve, reject) => {
    const child = spawn(path, ['-hide_banner', '-loglevel', 'error', '-nostdin', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => reject(new MissingCodecError(`cannot run ffmpeg (${path}) for ${what}: ${e.message}`)));
    child.stdin.on('error', () => {
      /* ffmpeg exited early; its exit status tells why */
    });
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out));
      const tail = Buffer.concat(err).toString('utf8').trim().split('\n').slice(-3).join(' | ');
      reject(
        new CodecError(`ffmpeg ${what} failed (${signal ? `killed by ${signal}` : `exit ${code}`}): ${tail || 'no message'}`),
      );
    });
    child.stdin.end(input);
  });
}
