/**
 * Typed errors with stable codes. A caller can tell "your input is broken"
 * (BadModelError, CorruptArchiveError, NonFiniteWeightError) from "this build
 * cannot do that" (UnsupportedError, MissingCodecError) from "the codec itself
 * failed" (CodecError), and every message names the file and tensor involved.
 */

export type ErrorCode =
  | 'E_OPTION'
  | 'E_BAD_MODEL'
  | 'E_CORRUPT_ARCHIVE'
  | 'E_NON_FINITE'
  | 'E_UNSUPPORTED'
  | 'E_MISSING_CODEC'
  | 'E_CODEC'
  | 'E_IO'
  | 'E_OUTPUT_EXISTS'
  | 'E_MISSING_DEPENDENCY'
  | 'E_BAD_CALIBRATION'
  | 'E_QUALITY'
  | 'E_INTERRUPTED'
  | 'E_INTERNAL';

/**
 * Every code: what it means, and the command line's exit status for it (grouped by who has to act: the
 * command, the files, the input data, the installation). The README's table of error codes is generated from
 * this one (`npx tsx scripts/error-table.ts`) and test/errors.test.ts triggers every row through the CLI.
 */
export const ERROR_CODES: Readonly<Record<ErrorCode, { meaning: string; exit: number }>> = {
  E_OPTION: { meaning: 'a bad option, argument or combination of them (the message names it); nothing was done', exit: 2 },
  E_IO: {
    meaning: 'a file cannot be read or written: missing, a directory, no permission, disk full; or a port is in use',
    exit: 3,
  },
  E_OUTPUT_EXISTS: {
    meaning: 'the output file exists: pass --force to replace it (never the original model an archive was made from)',
    exit: 3,
  },
  E_BAD_MODEL: { meaning: 'the model file is not a model nnmedia reads, or is malformed or truncated', exit: 4 },
  E_CORRUPT_ARCHIVE: {
    meaning: 'the .nnm archive is damaged: truncated, a checksum fails, or its manifest is invalid',
    exit: 4,
  },
  E_NON_FINITE: {
    meaning:
      'a weight is NaN or ±Inf (pass --non-finite keep to store such weights exactly; a signalling NaN comes back quiet, its payload kept)',
    exit: 4,
  },
  E_BAD_CALIBRATION: {
    meaning: 'calibration data is unreadable or does not fit the model’s inputs, or the model cannot run on it',
    exit: 4,
  },
  E_UNSUPPORTED: {
    meaning:
      'this build cannot do what is asked of one tensor or archive: a model file of another framework (PyTorch, GGUF, TensorFlow Lite, Keras .h5: the message says how to convert it), a rule no layout fits, an archive of a newer format, a medium the browser cannot decode',
    exit: 5,
  },
  E_MISSING_CODEC: { meaning: 'a codec is unknown to this build, or its program (ffmpeg) is missing', exit: 5 },
  E_MISSING_DEPENDENCY: {
    meaning: 'an optional package this feature needs is not installed (the message says which)',
    exit: 5,
  },
  E_CODEC: { meaning: 'a codec (libvips, ffmpeg) failed on valid input; retrying may help', exit: 6 },
  E_QUALITY: {
    meaning:
      'the quality gate refused the archive: the decompressed model’s fidelity is under --min-fidelity (no output unless --force); or a bound of eval --require does not hold',
    exit: 7,
  },
  E_INTERRUPTED: { meaning: 'stopped by Ctrl-C (SIGINT), SIGTERM or SIGHUP; no output was written', exit: 130 },
  E_INTERNAL: {
    meaning:
      'an unexpected error: a bug in nnmedia (please report it with the command), or memory or threads the machine could not give (the message says which)',
    exit: 70,
  },
};

export interface ErrorContext {
  file?: string;
  tensor?: string;
}

export class NnmediaError extends Error {
  readonly code: ErrorCode;
  readonly file?: string;
  readonly tensor?: string;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    const where = [context.file ? `file ${context.file}` : '', context.tensor ? `tensor ${context.tensor}` : '']
      .filter(Boolean)
      .join(', ');
    super(where ? `${where}: ${message}` : message, options);
    // by its code, not `new.target.name`: a minifying bundler renames classes (a page's error read "I: not an
    // nnmedia archive")
    this.name = new.target === NnmediaError ? 'NnmediaError' : ERROR_NAMES[code];
    this.code = code;
    this.file = context.file;
    this.tensor = context.tensor;
  }
}

/** An option given by the caller is out of range or of the wrong kind. */
export class OptionError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_OPTION', message, context);
  }
}

/** The model file is malformed, truncated or hostile. */
export class BadModelError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_BAD_MODEL', message, context);
  }
}

/** The .nnm archive is corrupt, truncated or fails a checksum. */
export class CorruptArchiveError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_CORRUPT_ARCHIVE', message, context);
  }
}

/** A weight is NaN or ±Inf and the caller asked for an error on those. */
export class NonFiniteWeightError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_NON_FINITE', message, context);
  }
}

/** A request that no codec or layout here can carry (e.g. 16-bit into WebP). */
export class UnsupportedError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_UNSUPPORTED', message, context);
  }
}

/** The codec name is unknown or its binary is missing. */
export class MissingCodecError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_MISSING_CODEC', message, context);
  }
}

/** The codec (libvips, ffmpeg) failed on valid input; retrying may help. */
export class CodecError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('E_CODEC', message, context, { cause });
  }
}

/** Reading or writing a file failed, or the output would overwrite the input. */
export class IoError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('E_IO', message, context, { cause });
  }
}

/** The output path holds a file that may not be replaced (without `force`, or ever: the original model). */
export class OutputExistsError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_OUTPUT_EXISTS', message, context);
  }
}

/** An optional package this feature needs is not installed (the message names it and how to install it). */
export class MissingDependencyError extends NnmediaError {
  /** `cause`: the loader's own error (NNMEDIA_DEBUG=1 prints its stack). */
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('E_MISSING_DEPENDENCY', message, context, { cause });
  }
}

/**
 * Calibration data (images, audio, raw tensors) is unreadable or does not fit the model's inputs, or the model
 * cannot run on it; the message names the file, the input and what to give instead.
 */
export class BadCalibrationError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('E_BAD_CALIBRATION', message, context, { cause });
  }
}

/**
 * The quality gate refused an archive: the decompressed model's fidelity on held-back calibration samples is
 * under the floor (`--min-fidelity`), or no archive at a bits/weight target meets it (then `smallestPassing`
 * names the smallest that does, when one was found). No output is left, unless `--force` kept it.
 */
export class QualityError extends NnmediaError {
  constructor(
    message: string,
    context: ErrorContext = {},
    readonly details: {
      fidelity?: number;
      minFidelity?: number;
      /** Bits/weight of the smallest archive a budget's search found that passes the floor. */
      smallestPassing?: number;
      /**
       * A refused budget: the archive the same options write without it (not escalated), on the same held-back
       * samples: its bits/weight, fidelity and the gate's verdict. Where it passes and is smaller than
       * `smallestPassing` (or none was found), the message suggests it.
       */
      withoutBudget?: { bitsPerWeight: number; fidelity: number; passed: boolean };
      /** The failing archive was kept at the output (`force`). */
      kept?: boolean;
      /** The kept archive's size: bytes and bits/weight (where `kept`). */
      archive?: { bytes: number; bitsPerWeight: number };
    } = {},
  ) {
    super('E_QUALITY', message, context);
  }
}

/**
 * Work stopped by a signal (Ctrl-C, SIGTERM) in the CLI; outputs in progress were removed. A library call whose
 * `AbortSignal` aborts rejects with the signal's reason instead (a DOMException named `AbortError` unless the
 * caller aborted with its own), as Node's own APIs do; its outputs in progress are removed too.
 */
export class InterruptedError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}) {
    super('E_INTERRUPTED', message, context);
  }
}

/** An error nnmedia did not expect (a bug): the original error is its cause. */
export class InternalError extends NnmediaError {
  constructor(message: string, context: ErrorContext = {}, cause?: unknown) {
    super('E_INTERNAL', message, context, { cause });
  }
}

/** The same error with the file and tensor named, for errors raised below the level that knows them. */
export function withContext(e: unknown, context: ErrorContext): unknown {
  if (!(e instanceof NnmediaError) || e.tensor) return e;
  const message = e.message;
  switch (e.code) {
    case 'E_MISSING_CODEC':
      return new MissingCodecError(message, context);
    case 'E_UNSUPPORTED':
      return new UnsupportedError(message, context);
    case 'E_CODEC':
      return new CodecError(message, context, e);
    default:
      return e;
  }
}

/** Each code's class name (the classes' `name`, which bundlers' minifiers would otherwise rename). */
export const ERROR_NAMES: Readonly<Record<ErrorCode, string>> = {
  E_OPTION: 'OptionError',
  E_BAD_MODEL: 'BadModelError',
  E_CORRUPT_ARCHIVE: 'CorruptArchiveError',
  E_NON_FINITE: 'NonFiniteWeightError',
  E_UNSUPPORTED: 'UnsupportedError',
  E_MISSING_CODEC: 'MissingCodecError',
  E_CODEC: 'CodecError',
  E_IO: 'IoError',
  E_OUTPUT_EXISTS: 'OutputExistsError',
  E_MISSING_DEPENDENCY: 'MissingDependencyError',
  E_BAD_CALIBRATION: 'BadCalibrationError',
  E_QUALITY: 'QualityError',
  E_INTERRUPTED: 'InterruptedError',
  E_INTERNAL: 'InternalError',
};

/** An error as plain data, to cross a worker-thread boundary (structured clone drops classes). */
export interface ErrorData {
  name: string;
  message: string;
  stack?: string;
  code?: ErrorCode;
  file?: string;
  tensor?: string;
}

export function errorToData(e: unknown): ErrorData {
  if (e instanceof NnmediaError)
    return { name: e.name, message: e.message, stack: e.stack, code: e.code, file: e.file, tensor: e.tensor };
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack };
  return { name: 'Error', message: String(e) };
}

const CLASS_OF: Record<ErrorCode, { prototype: NnmediaError }> = {
  E_OPTION: OptionError,
  E_BAD_MODEL: BadModelError,
  E_CORRUPT_ARCHIVE: CorruptArchiveError,
  E_NON_FINITE: NonFiniteWeightError,
  E_UNSUPPORTED: UnsupportedError,
  E_MISSING_CODEC: MissingCodecError,
  E_CODEC: CodecError,
  E_IO: IoError,
  E_OUTPUT_EXISTS: OutputExistsError,
  E_MISSING_DEPENDENCY: MissingDependencyError,
  E_BAD_CALIBRATION: BadCalibrationError,
  E_QUALITY: QualityError,
  E_INTERRUPTED: InterruptedError,
  E_INTERNAL: InternalError,
};

/** The same typed error (class, code, file, tensor, message) on this side of the boundary. */
export function errorFromData(d: ErrorData): Error {
  const cls = d.code ? CLASS_OF[d.code] : undefined;
  const e: Error = cls ? (Object.create(cls.prototype) as Error) : new Error(d.message);
  Object.assign(e, { name: d.name, message: d.message, stack: d.stack });
  if (cls) Object.assign(e, { code: d.code, file: d.file, tensor: d.tensor });
  return e;
}

/**
 * Whether an error says memory or threads ran out: a worker's heap or start, an ArrayBuffer V8 could not allocate,
 * a native library's allocation (onnxruntime's `bad_alloc`, libvips', zstd's). A TypeError or SyntaxError is never
 * one, whatever its text quotes (a tensor or file named "out of memory").
 */
export function outOfResources(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY' || code === 'ERR_WORKER_INIT_FAILED' || code === 'ERR_MEMORY_ALLOCATION_FAILED')
    return true;
  if (e instanceof TypeError || e instanceof SyntaxError) return false;
  const text = e instanceof Error ? e.message : String(e);
  if (e instanceof RangeError) return /Array buffer allocation failed/.test(text);
  return /\bbad_alloc\b|Failed to allocate memory|Cannot allocate memory|\bout of memory\b|not enough memory/i.test(text);
}

/**
 * The error for memory or threads that ran out (outOfResources): said as such, with what may help for the
 * command (`compress`, `decompress`; the library's callers: fewer jobs), not as a bug in nnmedia.
 */
export function resourceError(e: unknown, command?: string, context: ErrorContext = {}): InternalError {
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const help =
    command === 'compress' || command === 'demo'
      ? 'fewer --jobs, a smaller --slice-weights or more memory may help'
      : command === 'decompress'
        ? 'fewer --jobs or more memory may help'
        : command
          ? 'more memory may help'
          : 'fewer jobs or more memory may help';
  return new InternalError(
    `the machine ran out of memory or threads (${message}): ${help} (NNMEDIA_DEBUG=1 shows the stack)`,
    context,
    e,
  );
}
