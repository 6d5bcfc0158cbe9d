/**
 * How the command line reports a failure: one line `nnmedia: E_CODE: file …, tensor …: what is wrong`, and
 * the exit status of that code from the one table (`ERROR_CODES` in errors.ts). Whatever reaches the top is
 * made one of the library's typed errors first: commander's usage errors are option errors, a Node
 * file-system error that slipped past the readers is an I/O error naming its path, an aborted operation is an
 * interruption, and anything else is an internal error (a bug) rather than a raw stack trace.
 */

import {
  ERROR_CODES,
  InternalError,
  InterruptedError,
  IoError,
  NnmediaError,
  OptionError,
  outOfResources,
  resourceError,
  type ErrorCode,
} from '../errors.js';
import { errnoOf, fsReason } from '../io/files.js';
import { printable } from './table.js';

/** commander's error (its class is not exported as a type we need): a code `commander.*` and a message. */
interface CommanderLike {
  code: string;
  exitCode: number;
  message: string;
}

export function isCommanderError(e: unknown): e is CommanderLike {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' && c.startsWith('commander.');
}

/** The typed error for whatever was thrown. `command` names the subcommand for a usage hint. */
export function toNnmediaError(e: unknown, command?: string): NnmediaError {
  if (e instanceof NnmediaError) return e;
  if (isCommanderError(e)) {
    const what = e.message.replace(/^error:\s*/, '').trim();
    return new OptionError(`${what} (see: nnmedia ${command ? `${command} ` : ''}--help)`);
  }
  if ((e as { name?: unknown } | null)?.name === 'AbortError') return new InterruptedError('interrupted; no output written');
  const errno = errnoOf(e);
  if (errno) {
    const path = (e as { path?: unknown }).path;
    return new IoError(fsReason(e), typeof path === 'string' ? { file: path } : {}, e);
  }
  // memory or threads the machine could not give (an ArrayBuffer, a worker's heap, a native allocation): not a bug
  if (outOfResources(e)) return resourceError(e, command);
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new InternalError(`${message} (a bug in nnmedia; NNMEDIA_DEBUG=1 shows the stack)`, {}, e);
}

/** The exit status of a code (the one table), or of a signal: 128 + its number (130 for Ctrl-C). */
export function exitStatus(code: ErrorCode, signal?: NodeJS.Signals): number {
  if (signal === 'SIGTERM') return 143;
  if (signal === 'SIGHUP') return 129;
  return ERROR_CODES[code].exit;
}

/** The one line printed for an error. */
export function errorLine(e: NnmediaError): string {
  return `nnmedia: ${e.code}: ${printable(e.message.replace(/\s*\n\s*/g, ' | '))}`;
}
