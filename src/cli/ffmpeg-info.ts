import { findFfmpeg } from '../codecs/ffmpeg.js';

/** Which ffmpeg binary video/audio codecs use (reported by inspect and the benchmark), or undefined if none. */
export function getFfmpegInfo(): { path: string; version: string; source: string } | undefined {
  try {
    return findFfmpeg();
  } catch {
    return undefined;
  }
}

/** Why no ffmpeg is usable (NNMEDIA_FFMPEG naming a broken binary, or none found), or undefined when one is. */
export function ffmpegProblem(): string | undefined {
  try {
    findFfmpeg();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}
