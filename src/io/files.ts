/**
 * Input files and what went wrong with a file, in words. Every reader opens its input through here, so a
 * missing file, a directory or a permission problem is the same `IoError` (`E_IO`) naming the file
 * everywhere, never a raw `ENOENT` or `EISDIR` from Node and never "corrupt" for a file that is not there.
 */

import { accessSync, constants, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { IoError } from '../errors.js';

/** Node's errno codes a user meets, in words. */
const REASONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large for the file system',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  EBUSY: 'busy',
  EIO: 'input/output error (the disk or file system failed)',
  EEXIST: 'file exists',
  EXDEV: 'cross-device link',
  EPIPE: 'broken pipe',
};

/** The errno code of a Node file-system error (`ENOENT`, …), if it is one. */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** What went wrong, in words, with the errno code for a search: "no such file or directory (ENOENT)". */
export function fsReason(e: unknown): string {
  const code = errnoOf(e);
  if (code && REASONS[code]) return `${REASONS[code]} (${code})`;
  const message = e instanceof Error ? e.message : String(e);
  // Node's own message ("EACCES: permission denied, open '/x'") without the path it repeats
  return message.replace(/,\s*\w+\s+'[^']*'(\s*->\s*'[^']*')?$/, '');
}

/** An `IoError` for a failed file operation: "<action>: <reason>" naming the file. */
export function fsError(action: string, file: string, e: unknown): IoError {
  return new IoError(`${action}: ${fsReason(e)}`, { file }, e);
}

/**
 * Checks an input before it is opened: it exists, is a file (not a directory) and may be read. Returns its
 * stats. `what` names it in the message ("model", "archive").
 */
export function checkInputFile(file: string, what = 'file', opts: { pipe?: boolean } = {}): Stats {
  let st: Stats;
  try {
    st = statSync(file);
  } catch (e) {
    throw fsError(`cannot read the ${what}`, file, e);
  }
  if (st.isDirectory())
    throw new IoError(`is a directory, not a${/^[aeiou]/.test(what) ? 'n' : ''} ${what}${what === 'file' ? '' : ' file'}`, {
      file,
    });
  // a FIFO with no writer blocked the open forever (Ctrl-C too); a pipe read as a model was "empty (0 bytes)"
  if (!st.isFile() && !(opts.pipe && st.isFIFO()))
    throw new IoError(
      `is ${st.isFIFO() ? 'a pipe' : st.isSocket() ? 'a socket' : 'a device'}, not a file: a${/^[aeiou]/.test(what) ? 'n' : ''} ${what} is read by offset; save it to a file first`,
      { file },
    );
  try {
    accessSync(file, constants.R_OK);
  } catch (e) {
    throw fsError(`cannot read the ${what}`, file, e);
  }
  return st;
}

/** The whole input file, or an `IoError` naming it. */
export function readInputFile(file: string, what = 'file'): Buffer {
  // (read whole, so a pipe will do: `--config <(…)`)
  checkInputFile(file, what, { pipe: true });
  try {
    return readFileSync(file);
  } catch (e) {
    throw fsError(`cannot read the ${what}`, file, e);
  }
}

/**
 * Checks that an output can be created: its folder exists, is a folder and may be written. Run before any
 * work, so a typo in `-o` fails at once, not after minutes of encoding.
 */
export function checkOutputFolder(output: string): void {
  const folder = dirname(output);
  let st: Stats;
  try {
    st = statSync(resolve(folder));
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') throw new IoError(`the output folder ${folder} does not exist`, { file: output }, e);
    throw fsError(`cannot use the output folder ${folder}`, output, e);
  }
  if (!st.isDirectory()) throw new IoError(`the output folder ${folder} is not a folder`, { file: output });
  try {
    accessSync(resolve(folder), constants.W_OK);
  } catch (e) {
    throw fsError(`cannot write in the output folder ${folder}`, output, e);
  }
}
