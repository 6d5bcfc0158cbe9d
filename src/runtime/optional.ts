/**
 * Optional dependencies, loaded on first use: inference is needed only to run a model (rate control that probes
 * it, calibration, the quality gate, `eval`, the demo); a user who only compresses with fixed settings or
 * decodes never loads it. onnxruntime-node (native, an optional peer: `npm install onnxruntime-node`) is
 * preferred; without it, onnxruntime-web (WebAssembly, an optional dependency that `npm install nnmedia`
 * brings, from the npm registry alone) runs the same models in Node, slower. Neither: a `MissingDependencyError`
 * naming what to install.
 */

import type * as OrtNamespace from 'onnxruntime-node';
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
        const m = await import('onnxruntime-node');
        backend = 'onnxruntime-node';
        return m;
      } catch (e) {
        // installed but broken (a native binary that does not load): that error, not a silent fallback
        if (!notInstalled(e, 'onnxruntime-node')) throw e;
        nodeError = e;
      }
    if (asked !== 'node')
      try {
        // the same API (onnxruntime-common's), typed as the native module's
        const m = (await import('onnxruntime-web')) as unknown as Ort;
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
    );
  })().catch((e: unknown) => {
    ort = undefined;
    throw e;
  });
  return ort;
}
