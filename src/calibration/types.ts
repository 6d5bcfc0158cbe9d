/** The calibration set: what a model is run on to probe it, and to check a compressed copy against it. */

import type { StateLink } from './state.js';
import type { Feed } from './tensor.js';

/** One sample's data: one run's inputs, or a sequence of runs with recurrent state carried between them. */
export type SampleData =
  | { kind: 'feed'; feed: Feed }
  | {
      kind: 'sequence';
      /** Each run's inputs, state inputs excepted. */
      steps: Feed[];
      /** Which output feeds which input at the next run. */
      state: StateLink[];
      /** The state inputs' values at the first run (zeros unless given). */
      initial: Feed;
    };

export interface CalibrationSample {
  /** Position in its set (stable: the split and the reports refer to it). */
  index: number;
  /** For reports: `data/ocr/line003.png`, `speech.wav 10–20 s`, `synthetic #3`. */
  label: string;
  /** The file it comes from (absent for synthetic samples). */
  source?: string;
  kind: SampleData['kind'];
  /** Reads (or generates) the data; called again each time, so a set never holds every sample in memory. */
  load(): Promise<SampleData>;
}

export interface CalibrationSet {
  /** In a fixed order: files sorted by path, samples within a file in order. */
  samples: CalibrationSample[];
  /** The files the samples come from. */
  source: string[];
  /** True when the inputs were generated (no calibration data was given): every report must say so. */
  synthetic: boolean;
  /** One line for reports, e.g. "200 images from data/ocr (PaddleOCR-style: 48 px high, BGR, (x/255 − 0.5)/0.5)". */
  description: string;
  /** Synthetic sound tried at several rates (a model with a rate input): those rates, the refused ones too. */
  rates?: readonly number[];
}
