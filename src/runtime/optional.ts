/**
 * Optional dependencies, loaded on first use: inference (onnxruntime-node) is needed only to run a model
 * (rate control that probes it, calibration, the quality gate, `eval`); a user who only compresses with
 * fixed settings or decodes never loads it. A missing package is a `MissingDependencyError` naming what to
 * install.
 */

import type * as OrtNamespace from 'onnxruntime-node';
import { MissingDependencyError } from '../errors.js';

/** The onnxruntime-node module as `loadOrt()` returns it. */
export type Ort = typeof OrtNamespace;

let ort: Promise<Ort> | undefined;

/** onnxruntime-node, or a clear error naming the package to install. */
export function loadOrt(why = 'running a model'): Promise<Ort> {
  ort ??= import('onnxruntime-node').catch((e: unknown) => {
    ort = undefined;
    throw new MissingDependencyError(
      `${why} needs onnxruntime-node: npm install onnxruntime-node@1.30.0 (${(e as Error).message.split('\n')[0]})`,
    );
  });
  return ort;
}
