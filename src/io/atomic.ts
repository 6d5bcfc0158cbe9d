/**
 * Outputs are written to a temporary name beside the target and renamed only
 * when complete; on failure (or SIGINT, see `removePendingTemps`) the temporary
 * file is removed, so no partial output is ever left behind.
 */

import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  writeSync,
  fsyncSync,
  openSync,
  realpathSync,
  renameSync,
  unlinkSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { IoError } from '../errors.js';

const pending = new Set<string>();

export function removePendingTemps(): void {
  for (const p of pending) {
    try {
      unlinkSync(p);
    } catch {
      /* already gone */
    }
  }
  pending.clear();
}

function samePath(a: string, b: string): boolean {
  const real = (p: string): string => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return real(a) === real(b);
}

/** Refuses an output path that is one of the inputs. */
export function checkOutputPath(output: string, inputs: readonly string[]): void {
  for (const input of inputs)
    if (existsSync(output) && samePath(output, input))
      throw new IoError(`output path is the input file; refusing to overwrite it`, { file: output });
}

export async function writeAtomic(target: string, write: (fd: number) => void | Promise<void>): Promise<void> {
  const tmp = join(dirname(resolve(target)), `.${basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw new IoError(`cannot create output: ${(e as Error).message}`, { file: target }, e);
  }
  pending.add(tmp);
  try {
    await write(fd);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, target);
    pending.delete(tmp);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* closed already */
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* never created */
    }
    pending.delete(tmp);
    throw e;
  }
}

/** sha256 of a file, streamed (the file may be larger than memory). */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  } catch (e) {
    throw new IoError(`cannot read: ${(e as Error).message}`, { file }, e);
  }
  return hash.digest('hex');
}

/** Writes all of `bytes` at the descriptor's position (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}
