/** The built-in task evaluators and which model each applies to. */

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { BadCalibrationError, IoError, NnmediaError, OptionError } from '../../errors.js';
import { loadOrt } from '../../runtime/optional.js';
import { ocrTask } from './ocr.js';
import type { TaskEvaluator } from './types.js';
import type { ResizeKernel } from '../../calibration/image.js';
import { vadTask } from './vad.js';
import { outputsTask } from './outputs.js';
import { isnetTask } from './isnet.js';

export type { TaskEvaluator, TaskMetric } from './types.js';
export { vadTask } from './vad.js';
export { ocrTask, characterErrorRate, editDistance, greedyCtcDecode, ocrAlphabet } from './ocr.js';

/** The package root (data/ lives there), from src/eval/tasks or dist/eval/tasks alike. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const DATA_DIR = `${PACKAGE_ROOT}data`;

export const TASK_NAMES = ['vad', 'ocr', 'outputs', 'isnet'] as const;
export { outputsTask } from './outputs.js';

/** Options of the built-in tasks: a slice of the data, and the second preprocessing the judges check (docs/judges.md). */
export interface TaskOptions {
  /** Only the first n samples (ocr lines, isnet photos). */
  limit?: number;
  /** ocr: the resize kernel of the lines (default lanczos3). */
  resize?: ResizeKernel;
  /** vad: the rate the speech is run at (default 16000, the file's own). */
  sampleRate?: 8000 | 16000;
}

export function taskByName(name: string, options: TaskOptions = {}): TaskEvaluator<unknown> {
  return fitting(builtinTask(name, options));
}

/**
 * A task whose runs fail with a typed error where the model is not the task's (PaddleOCR rec under `--task vad`:
 * onnxruntime's "input 'x' is missing in 'feeds'" was an untyped E_INTERNAL; found by a new-user sweep).
 */
const NOT_THE_TASKS_INPUTS =
  /missing in 'feeds'|invalid input name|invalid rank|invalid dimensions|num_dims|Unexpected input data type|input shape/i;

function fitting(task: TaskEvaluator<unknown>): TaskEvaluator<unknown> {
  const typed = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (e) {
      // only onnxruntime's refusal of the task's inputs (a name, a rank or a shape the model does not take);
      // typed errors, aborts and anything else stay what they are
      const message = e instanceof Error ? e.message : String(e);
      if (e instanceof NnmediaError || !NOT_THE_TASKS_INPUTS.test(message)) throw e;
      throw new BadCalibrationError(
        `the ${task.name} task does not fit this model (${message.split('\n')[0]}): give --task for the model's kind, or calibration data`,
        {},
        e,
      );
    }
  };
  return { ...task, run: (m) => typed(() => task.run(m)), calibrate: (m) => typed(() => task.calibrate(m)) };
}

/** The folder of a built-in task's bundled data, or a typed error saying it is missing (a trimmed install). */
function taskData(task: string, folder: string): string {
  const dir = `${DATA_DIR}/${folder}`;
  if (!existsSync(dir))
    throw new IoError(`the ${task} task's data is missing: it ships with nnmedia as data/${folder}; reinstall the package`, {
      file: dir,
    });
  return dir;
}

function builtinTask(name: string, options: TaskOptions): TaskEvaluator<unknown> {
  if (name === 'vad')
    return vadTask({
      wav: `${taskData(name, 'speech')}/speech_16k.wav`,
      regions: `${DATA_DIR}/speech/speech_regions.json`,
      sampleRate: options.sampleRate,
    }) as TaskEvaluator<unknown>;
  if (name === 'ocr')
    return ocrTask({
      dir: taskData(name, 'ocr'),
      dictionary: `${DATA_DIR}/ocr/ppocr_keys_v1.txt`,
      limit: options.limit,
      resize: options.resize,
    }) as TaskEvaluator<unknown>;
  if (name === 'outputs') return outputsTask() as TaskEvaluator<unknown>;
  if (name === 'isnet') return isnetTask({ dir: taskData(name, 'images'), limit: options.limit }) as TaskEvaluator<unknown>;
  throw new OptionError(`unknown task ${name}; known: ${TASK_NAMES.join(', ')}`);
}

/** Recognises a built-in task from the model's inputs (Silero VAD: `sr`; PaddleOCR rec: x [N,3,48,W]). */
export async function detectTask(model: Uint8Array, file?: string): Promise<string | undefined> {
  const ort = await loadOrt('recognising the task of a model');
  let s: Awaited<ReturnType<typeof ort.InferenceSession.create>>;
  try {
    // onnxruntime's own log (warnings such as 'Removing initializer … not used by any node', printed for every
    // run of `eval` on a TensorFlow export) is off, as for the calibration runner: failures come back as exceptions
    s = await ort.InferenceSession.create(model, { logSeverityLevel: 4 });
  } catch (e) {
    throw new BadCalibrationError(`onnxruntime cannot load the model: ${(e as Error).message}`, { file }, e);
  }
  try {
    // (a task whose bundled data is not there — a copied dist/ — gives way to the outputs task, which needs none;
    // asked for by name, the task says its data is missing)
    if (s.inputNames.includes('sr')) return existsSync(`${DATA_DIR}/speech`) ? 'vad' : 'outputs';
    const meta = s.inputMetadata[0];
    if (meta?.isTensor && meta.shape.length === 4 && meta.shape[1] === 3 && meta.shape[2] === 48)
      return existsSync(`${DATA_DIR}/ocr`) ? 'ocr' : 'outputs';
    return 'outputs';
  } finally {
    await s.release();
  }
}
