import { findFfmpeg } from '../codecs/ffmpeg.js';

/** Which ffmpeg binary video/audio codecs use (reported by inspect and the benchmark), or undefined if none. */
export function getFfmpegInfo(): { path: string; version: string; source: string } | undefined {
  try {
    return findFfmpeg();
  } catch {
    return undefined;
  }
}
