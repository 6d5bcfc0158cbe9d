/**
 * Outputs are written to a temporary name beside the target and renamed only
 * when complete; on failure (or SIGINT, see `removePendingTemps`) the temporary
 * file is removed, so no partial output is ever left behind.
 */

import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  linkSync,
  lstatSync,
  type Stats,
  writeSync,
  fsyncSync,
  openSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { IoError, OutputExistsError } from '../errors.js';
import { checkOutputFolder, errnoOf, fsError } from './files.js';

const pending = new Set<string>();

/**
 * Outputs a run has written but may still replace or withdraw: rate control and escalation write an attempt to
 * the output, judge it, and go on. An interrupt removes them with the temporary files, so Ctrl-C during a search
 * leaves no refused attempt at the output. The run releases its output when it returns or fails.
 */
const provisional = new Set<string>();

export function holdOutput(path: string): void {
  provisional.add(resolve(path));
}

export function releaseOutput(path: string): void {
  provisional.delete(resolve(path));
}

/** Folders a run made for itself (the demo's), removed with everything in them on an interrupt. */
const ownFolders = new Set<string>();

export function holdFolder(path: string): void {
  ownFolders.add(resolve(path));
}

export function releaseFolder(path: string): void {
  ownFolders.delete(resolve(path));
}

export function removePendingTemps(): void {
  for (const p of [...pending, ...provisional]) {
    try {
      unlinkSync(p);
    } catch {
      /* already gone */
    }
  }
  for (const dir of ownFolders) rmSync(dir, { recursive: true, force: true });
  pending.clear();
  provisional.clear();
  ownFolders.clear();
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

/** How an output may treat a file already at its path. */
export interface OutputPolicy {
  /** Replace an existing file (never an input, never `protect`). */
  force?: boolean;
  /** A file that is never replaced, even with `force`: the sha256 of the original model an archive was made from. */
  protect?: {
    sha256: string;
    what: string;
    /** Its size: a file of another size is not it (and is not hashed). */
    bytes?: number;
  };
}

/**
 * Checks an output path before any work starts: never one of the inputs, never a directory, and an existing file
 * only with `force` — and never, even then, a file whose sha256 is `protect`'s (decompressing next to the original
 * model must not replace it with the lossy copy).
 */
export async function checkOutputPath(output: string, inputs: readonly string[], policy: OutputPolicy = {}): Promise<void> {
  if (typeof output !== 'string' || output === '') throw new IoError('no output path given (an empty name)', { file: output });
  // `-o newdir/`: a folder's name, which the write would only have refused after all the work
  if (/[/\\]$/.test(output))
    throw new IoError(
      `output path names a folder (it ends with ${output.slice(-1)}); give a file name (e.g. ${join(output, 'model.nnm')})`,
      {
        file: output,
      },
    );
  // the temporary files beside the output (a staging file, its temporary copy, the gate's scratch file) take
  // longer names: a name near the file system's limit failed after all the work (ENAMETOOLONG)
  const nameBytes = Buffer.byteLength(basename(output));
  if (nameBytes > MAX_OUTPUT_NAME_BYTES)
    throw new IoError(
      `output file name is ${nameBytes} bytes long; at most ${MAX_OUTPUT_NAME_BYTES} (the temporary files written beside it add to it, and a name may take 255)`,
      { file: output },
    );
  // and the whole path (the temporary files are opened by their absolute paths): Linux takes 4,095 bytes
  const pathBytes = Buffer.byteLength(resolve(output));
  if (pathBytes > MAX_OUTPUT_PATH_BYTES)
    throw new IoError(
      `output path is ${pathBytes} bytes long as an absolute path; at most ${MAX_OUTPUT_PATH_BYTES} (the temporary files written beside it add to it, and Linux takes a path of 4,095)`,
      { file: output },
    );
  const link = lstatOrUndefined(output);
  if (!link) {
    checkOutputFolder(output);
    return removeStaleTemps(output);
  }
  if (link.isSymbolicLink() && !existsSync(output)) {
    // a link to nowhere: existsSync follows it and said "nothing there", and the final no-clobber step then
    // failed after all the work with "output file appeared while writing"
    if (!policy.force)
      throw new OutputExistsError(`output path is a symbolic link (to a missing file); pass --force to replace the link`, {
        file: output,
      });
    checkOutputFolder(output);
    return removeStaleTemps(output);
  }
  for (const input of inputs)
    if (samePath(output, input)) throw new IoError(`output path is the input file; refusing to overwrite it`, { file: output });
  const st = statSync(output);
  if (st.isDirectory())
    throw new IoError(`output path is a directory; give a file name (e.g. ${join(output, 'model.nnm')})`, { file: output });
  // a device (/dev/null), a FIFO or a socket: --force would have put a regular file in its place (as root, in /dev)
  if (!st.isFile())
    throw new IoError(`output path is ${specialKind(st)}, not a file; refusing to replace it, even with --force`, {
      file: output,
    });
  const protect = policy.protect;
  if (
    protect &&
    (protect.bytes === undefined || statSync(output).size === protect.bytes) &&
    (await sha256File(output)) === protect.sha256
  )
    throw new OutputExistsError(`${protect.what}; refusing to overwrite it, even with --force`, { file: output });
  if (!policy.force)
    throw new OutputExistsError(`output file exists; pass --force (library: force: true) to replace it`, { file: output });
  removeStaleTemps(output);
}

let staging = 0;

/**
 * A staging file's name beside `output` (`.NAME.PID-N.part`), unique in this process (two runs may write beside
 * one output): written whole, then committed to `output` (`commitOutput`).
 */
export function stagingPath(output: string): string {
  return join(dirname(resolve(output)), `.${basename(output)}.${process.pid}-${staging++}.part`);
}

/** Whether process `pid` runs on this machine (a process of another user counts: EPERM). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // (ESRCH alone says it is gone: EPERM is another user's process, anything else an id that is not one)
    return errnoOf(e) !== 'ESRCH';
  }
}

/**
 * A temporary file's age past which a dead writer's file is removed. Long: a live run leaves its staging file
 * untouched while its gate runs, and a process id says nothing about a run on another machine sharing the folder.
 */
const STALE_MS = 3_600_000;

/**
 * Removes the temporary files a killed run (kill -9, the OOM killer, a power cut) left beside `output`: the
 * staging file `.NAME.PID-N.part`, the temporary copies `.NAME.PID.T.tmp` and scratch files, of a process no
 * longer running and untouched for an hour. Best effort: a file that cannot be removed stays.
 */
export function removeStaleTemps(output: string): void {
  const folder = dirname(resolve(output));
  const base = basename(output);
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch {
    return; // the folder check that follows names the problem
  }
  const now = Date.now();
  for (const name of names) {
    // (a staging file's temporary copy starts with two dots, `..NAME.PID-N.part.PID.T.tmp`, and the gate's scratch
    // file beside that copy with three; a refused budget's comparison run writes `.NAME.PID.plain.tmp` through a
    // staging file of its own, `..NAME.PID.plain.tmp.PID-N.part`, and that one's copies and scratch files)
    const dots = /^\.{1,4}/.exec(name)?.[0].length ?? 0;
    const rest = dots && name.startsWith(`${base}.`, dots) ? name.slice(dots + base.length + 1) : undefined;
    const m =
      rest !== undefined &&
      /^(\d+)(?:-\d+\.part|\.[0-9a-z]+(?:\.scratch)?\.tmp)(?:\.\d+(?:-\d+\.part|\.[0-9a-z]+(?:\.scratch)?\.tmp))*$/.exec(rest);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    const path = join(folder, name);
    try {
      const st = lstatSync(path);
      // (an hour either way: a clock set back leaves files from the future)
      if (st.isFile() && Math.abs(now - st.mtimeMs) > STALE_MS) unlinkSync(path);
    } catch {
      /* gone already, or not ours to remove */
    }
  }
}

/** 255 bytes a name, less what the temporary names beside an output add (`.NAME.PID-N.part` → `.…PID.T.tmp` → `.…scratch.tmp`). */
export const MAX_OUTPUT_NAME_BYTES = 180;
/** 4,095 bytes a path (Linux's PATH_MAX less its terminating zero), less the same allowance for temporary names. */
export const MAX_OUTPUT_PATH_BYTES = 4095 - (255 - MAX_OUTPUT_NAME_BYTES);

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

function specialKind(st: Stats): string {
  if (st.isCharacterDevice()) return 'a character device (like /dev/null)';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Writes `target` through a temporary file beside it, renamed into place when complete. Without `overwrite` the
 * final step is a hard link, which fails if a file appeared at `target` meanwhile: an existing file is never
 * replaced by a race.
 */
export async function writeAtomic(
  target: string,
  write: (fd: number, tmp: string) => void | Promise<void>,
  options: { overwrite?: boolean; signal?: AbortSignal } = {},
): Promise<void> {
  const tmp = join(dirname(resolve(target)), `.${basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw fsError(`cannot create the output in ${dirname(target)}`, target, e);
  }
  pending.add(tmp);
  try {
    await write(fd, tmp);
    // an abort while the last of the work ran (nothing checked it after the last piece started): no output
    options.signal?.throwIfAborted();
    fsyncSync(fd);
    closeSync(fd);
    if (options.overwrite) renameSync(tmp, target);
    else commitNoClobber(tmp, target);
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
      /* never created, or renamed */
    }
    pending.delete(tmp);
    // a full disk, a quota, a vanished folder while writing: named as the output's problem, not a raw errno
    const syscall = (e as { syscall?: unknown } | null)?.syscall;
    if (errnoOf(e) && typeof syscall === 'string' && WRITE_CALLS.has(syscall))
      throw fsError('cannot write the output', target, e);
    throw e;
  }
}

/**
 * Runs `use` with a temporary file beside `near` (created, open for writing as `fd`, which `use` leaves open),
 * closed and removed afterwards whatever happens, and on an interrupt (`removePendingTemps`): scratch space on the output's disk, not the system's
 * temporary folder (often memory).
 */
export async function withTempFile<T>(near: string, use: (fd: number, path: string) => Promise<T>): Promise<T> {
  const tmp = join(dirname(resolve(near)), `.${basename(near)}.${process.pid}.${Date.now().toString(36)}.scratch.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw fsError(`cannot create a scratch file in ${dirname(resolve(near))}`, near, e);
  }
  pending.add(tmp);
  try {
    return await use(fd, tmp);
  } catch (e) {
    // a full disk here is the scratch file's, not the output's (the caller can say what the scratch file is for)
    const syscall = (e as { syscall?: unknown } | null)?.syscall;
    if (errnoOf(e) && typeof syscall === 'string' && WRITE_CALLS.has(syscall))
      throw fsError('cannot write a scratch file', tmp, e);
    throw e;
  } finally {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* gone */
    }
    pending.delete(tmp);
  }
}

/**
 * A finished file (`from`, ours) becomes `target`: replacing what is there with `overwrite` (the user's --force),
 * else only where nothing appeared at `target` meanwhile.
 */
export function commitOutput(from: string, target: string, overwrite: boolean): void {
  try {
    if (overwrite) renameSync(from, target);
    else commitNoClobber(from, target);
  } catch (e) {
    if (e instanceof IoError || e instanceof OutputExistsError) throw e;
    throw fsError('cannot write the output', target, e);
  }
}

/** The system calls of writing an output: an errno from one of them is the output's problem. */
const WRITE_CALLS = new Set(['write', 'fsync', 'close', 'rename', 'link', 'ftruncate']);

/** Moves `tmp` to `target` unless a file is there: link (atomic, fails on an existing name), then unlink. */
function commitNoClobber(tmp: string, target: string): void {
  try {
    linkSync(tmp, target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST')
      throw new OutputExistsError(`output file appeared while writing; pass --force to replace it`, { file: target });
    // file systems without hard links: check, then rename (a narrow race instead of none)
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV')
      throw fsError('cannot write the output', target, e);
    if (existsSync(target)) throw new OutputExistsError(`output file exists; pass --force to replace it`, { file: target });
    renameSync(tmp, target);
    return;
  }
  unlinkSync(tmp);
}

/** sha256 of a file, streamed (the file may be larger than memory); `signal` stops the read. */
export async function sha256File(file: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  // two buffers, reused: the next read runs while this one is hashed, and a 1 GB model is not 1,000 new
  // buffers (a stream's chunks, each 1 MB of external memory, drove V8 to a full collection every ~25 MB read:
  // 47 of them on the main thread of a 1.2 GB model's compress)
  const buffers = [Buffer.allocUnsafeSlow(HASH_CHUNK), Buffer.allocUnsafeSlow(HASH_CHUNK)];
  let handle: FileHandle | undefined;
  let pending: Promise<unknown> | undefined;
  try {
    handle = await open(file, 'r');
    const h = handle;
    const readInto = (k: number) => (pending = h.read(buffers[k], 0, HASH_CHUNK, null));
    let read = readInto(0);
    for (let k = 0; ; k ^= 1) {
      const { bytesRead } = await read;
      pending = undefined;
      signal?.throwIfAborted();
      if (bytesRead === 0) break;
      read = readInto(k ^ 1);
      hash.update(buffers[k].subarray(0, bytesRead));
    }
  } catch (e) {
    throw fsError('cannot read', file, e);
  } finally {
    // (never closed under a read still running into its buffer)
    await pending?.catch(() => undefined);
    await handle?.close().catch(() => undefined);
  }
  return hash.digest('hex');
}

const HASH_CHUNK = 1 << 20;

/** Writes all of `bytes` at the descriptor's position (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array, position?: number): void {
  let done = 0;
  while (done < bytes.length)
    done += writeSync(fd, bytes, done, bytes.length - done, position === undefined ? null : position + done);
}
