/**
 * `nnmedia codecs`: every codec with its medium, the code bits it carries, its lossless mode and quality
 * scale, what it runs on (and whether ffmpeg was found), and its description wrapped to the terminal.
 */

import { listCodecs } from '../codecs/registry.js';
import { ffmpegProblem, getFfmpegInfo } from './ffmpeg-info.js';
import { formatTable } from './table.js';

/** Words of `text` in lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return line ? [...lines, line] : lines;
}

export function printCodecs(): void {
  const ffmpeg = getFfmpegInfo();
  const rows = listCodecs().map((c) => [
    c.name,
    c.media,
    c.bits.join(','),
    c.lossless === 'optional' ? `optional (${c.losslessBits.join(',')}-bit)` : c.lossless,
    c.quality ? `${c.quality.min}–${c.quality.max} (default ${c.quality.default})` : '',
    c.media === 'video' || c.media === 'audio'
      ? ffmpeg
        ? 'ffmpeg'
        : 'ffmpeg: not found'
      : c.media === 'raw'
        ? c.name.startsWith('brotli')
          ? 'node:zlib'
          : 'zstd'
        : 'libvips',
    c.description,
  ]);
  const header = ['codec', 'media', 'bits', 'lossless', 'quality', 'runs on', 'description'];
  // the description takes what the other columns leave of the terminal (100 columns when not one)
  const others = header.slice(0, -1).map((h, i) => Math.max(h.length, ...rows.map((r) => [...r[i]].length)) + 2);
  const width = Math.max(40, (process.stdout.columns || 100) - others.reduce((a, b) => a + b, 0) - 1);
  const wrapped = rows.flatMap((r) =>
    wrap(r[6], width).map((line, k) => (k === 0 ? [...r.slice(0, 6), line] : ['', '', '', '', '', '', line])),
  );
  console.log(formatTable(header, wrapped));
  console.log(
    `\nffmpeg for video and audio: ${ffmpeg ? `${ffmpeg.path} (${ffmpeg.version}, ${ffmpeg.source})` : ffmpegProblem()}`,
  );
}
