/** Which ffmpeg binary video/audio codecs would use; reported by inspect and benchmarks. */
export function getFfmpegInfo(): { path: string; version: string } | undefined {
  return undefined;
}
