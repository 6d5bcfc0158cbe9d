/** What a benchmark point is: shared by the runner (run.ts) and the plot (plot.ts), which import each other no more. */
import type { CompressOptions } from '../src/pipeline/options.js';

export interface BenchPoint {
  /** Line in the plot this point belongs to (codec family). */
  series: string;
  label: string;
  kind: 'nnmedia' | 'peer';
  options?: PointOptions;
  bytes: number;
  bitsPerWeight: number;
  /** nnmedia only: bits/weight of the media entries alone (without manifest and skeleton). */
  mediaBitsPerWeight?: number;
  metric: number;
  metrics: Record<string, number>;
  encodeMBps: number;
  decodeMBps: number;
  maxRssMB?: number;
}

/** Compress options as JSON for the point's own process: the task goes by name. */
export type PointOptions = Omit<CompressOptions, 'task'> & { task?: string };
