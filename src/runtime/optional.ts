/**
 * Optional dependencies, loaded on first use: inference is needed only to run a model (rate control that probes
 * it, calibration, the quality gate, `eval`, the demo); a user who only compresses with fixed settings or
 * decodes never loads it. onnxruntime-node (native, an optional peer: `npm install onnxruntime-node`) is
 * preferred; without it, onnxruntime-web (WebAssembly, an optional dependency that `npm install nnmedia`
 * brings, from the npm registry alone) runs the same models in Node, slower. Neither: a `MissingDependencyError`
 * naming what to install.
 */

import type * as OrtNamespace from 'onnxruntime-common';
import { MissingDependencyError } from '../errors.js';

/** The onnxruntime module as `loadOrt()` returns it (onnxruntime-web has the same API, onnxruntime-common's). */
export type Ort = typeof OrtNamespace;

/** Which onnxruntime runs the models: the native one, or WebAssembly. */
export type OrtBackend = 'onnxruntime-node' | 'onnxruntime-web';

let ort: Promise<Ort> | undefined;
let backend: OrtBackend | undefined;
let notice: ((message: string) => void) | undefined;

/** Called once, when models run on onnxruntime-web because onnxruntime-node is not installed (the CLI prints it). */
export function onOrtFallback(f: ((message: string) => void) | undefined): void {
  notice = f;
}

/** The onnxruntime loaded so far (undefined before the first model runs). */
export function ortBackend(): OrtBackend | undefined {
  return backend;
}

/** Whether an import failed because the package is not there (not because it failed to load). */
function notInstalled(e: unknown, pkg: string): boolean {
  const code = (e as { code?: string }).code;
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((e as Error).message).includes(pkg);
}

const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0];

/**
 * onnxruntime-node, else onnxruntime-web, or a clear error naming the package to install. `NNMEDIA_ORT=web`
 * (or `onnxruntime-web`) uses onnxruntime-web even where onnxruntime-node is installed; `NNMEDIA_ORT=node` never
 * falls back.
 */
export function loadOrt(why = 'running a model'): Promise<Ort> {
  ort ??= (async (): Promise<Ort> => {
    const asked = process.env.NNMEDIA_ORT?.replace(/^onnxruntime-/, '');
    let nodeError: unknown;
    if (asked !== 'web')
      try {
        // onnxruntime-node 1.30's native library starts a telemetry system on Linux: it writes
        // $TMPDIR/mat-debug-<pid>.log and $TMPDIR/.ses on every run (2,600 files in this machine's /tmp) and would
        // upload where it finds CA certificates. Off unless the user's environment says otherwise.
        process.env.ORT_DISABLE_TELEMETRY ??= '1';
        const m = await import('onnxruntime-node');
        backend = 'onnxruntime-node';
        return withoutSpinning(m as unknown as Ort);
      } catch (e) {
        // installed but broken (a native binary that does not load, or no memory to map it): that error, named as
        // the package's, not a silent fallback (it was E_INTERNAL, "a bug in nnmedia")
        if (!notInstalled(e, 'onnxruntime-node'))
          throw new MissingDependencyError(
            `${why} needs onnxruntime-node, which is installed but does not load (${firstLine(e)}): reinstall it (npm install onnxruntime-node@1.30.0), check the memory limit (ulimit -v), or set NNMEDIA_ORT=web to use onnxruntime-web`,
            {},
            e,
          );
        nodeError = e;
      }
    if (asked !== 'node')
      try {
        // the same API (onnxruntime-common's), typed as the native module's
        const m = serialized((await import('onnxruntime-web')) as unknown as Ort);
        backend = 'onnxruntime-web';
        if (asked !== 'web')
          notice?.(
            'running models with onnxruntime-web (WebAssembly), as onnxruntime-node is not installed: npm install onnxruntime-node@1.30.0 for native speed (docs/install.md)',
          );
        return m;
      } catch (e) {
        nodeError ??= e;
      }
    throw new MissingDependencyError(
      `${why} needs onnxruntime-node: npm install onnxruntime-node@1.30.0 (or onnxruntime-web, which npm install nnmedia brings unless optional dependencies are left out) (${firstLine(nodeError)})`,
      {},
      nodeError,
    );
  })().catch((e: unknown) => {
    ort = undefined;
    throw e;
  });
  return ort;
}

/** Session options with intra- and inter-op spinning off, unless they say otherwise (withoutSpinning). */
export function withoutSpinningOptions(
  options: OrtNamespace.InferenceSession.SessionOptions = {},
): OrtNamespace.InferenceSession.SessionOptions {
  const session = (options.extra?.session ?? {}) as Record<string, Record<string, unknown> | undefined>;
  return {
    ...options,
    extra: {
      ...options.extra,
      session: {
        ...session,
        intra_op: { allow_spinning: '0', ...session.intra_op },
        inter_op: { allow_spinning: '0', ...session.inter_op },
      },
    },
  };
}

/**
 * onnxruntime-node whose sessions do not spin-wait between parallel sections (`allow_spinning` 0, unless a caller
 * asks otherwise): its threads spun on cores the encode's worker threads, the other sessions of a gate, or a host's
 * other calls needed. Four gated compressions at once in one process took 2× the CPU of the four one after another;
 * PaddleOCR rec ran 54–66 → 23–26 ms a run, its detector 170–176 → 154–155 ms, beside a busy core (docs/speed.md).
 * The module itself is left as it is (a host may use onnxruntime-node too): the sessions made through the returned
 * object get it. `create(model)` and `create(model, options)` (options possibly undefined) are given the options;
 * the buffer forms with offsets are passed on as they are.
 */
export function withoutSpinning(m: Ort): Ort {
  const create = m.InferenceSession.create.bind(m.InferenceSession) as (
    ...a: unknown[]
  ) => Promise<OrtNamespace.InferenceSession>;
  const created = (...args: unknown[]): Promise<OrtNamespace.InferenceSession> => {
    const options = args[1];
    if (args.length <= 2 && (options === undefined || (typeof options === 'object' && options !== null)))
      return create(args[0], withoutSpinningOptions(options as OrtNamespace.InferenceSession.SessionOptions | undefined));
    return create(...args);
  };
  const InferenceSession = Object.create(m.InferenceSession, { create: { value: created } }) as Ort['InferenceSession'];
  return { ...m, InferenceSession };
}

/**
 * onnxruntime-web with one session call at a time in the process. Its WebAssembly runtime is one instance for
 * every session: two compressions at once in one process (Silero v4 and v6, each running its gate) failed with
 * "operation does not support unaligned accesses" inside the runtime, reported as bad calibration data, while
 * one after the other they worked (onnxruntime-node's sessions are independent and are left as they are).
 * Session creation, runs and release are queued; a failure passes to its caller and not to the next in line.
 */
function serialized(m: Ort): Ort {
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = tail.then(f, f);
    tail = p.catch(() => undefined);
    return p;
  };
  type Session = OrtNamespace.InferenceSession;
  const create = m.InferenceSession.create.bind(m.InferenceSession) as (...a: unknown[]) => Promise<Session>;
  const queued = async (...args: unknown[]): Promise<Session> => {
    const s = await serial(() => create(...args));
    const run = s.run.bind(s) as (...a: unknown[]) => ReturnType<Session['run']>;
    const release = s.release.bind(s);
    Object.assign(s, {
      // each run computes synchronously inside WebAssembly, and the next one followed in the same turn: a gate of
      // many runs held the host's event loop for seconds (timers, I/O, an abort signal waited). One turn between runs.
      run: (...a: unknown[]) =>
        serial(async () => {
          const out = await run(...a);
          await new Promise((resolve) => setImmediate(resolve));
          return out;
        }),
      release: () => serial(() => release()),
    });
    return s;
  };
  const InferenceSession = Object.create(m.InferenceSession, { create: { value: queued } }) as Ort['InferenceSession'];
  return { ...m, InferenceSession };
}
