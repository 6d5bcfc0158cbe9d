import { readFileSync } from 'node:fs';
import { BadModelError } from '../../errors.js';

/** Reads a PCM 16-bit mono WAV file into float samples in [-1, 1). */
export function readWav16(file: string): { sampleRate: number; samples: Float32Array } {
  const b = readFileSync(file);
  if (b.length < 44 || b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE')
    throw new BadModelError('not a WAV file', { file });
  let p = 12;
  let sampleRate = 0;
  let bits = 0;
  let channels = 0;
  while (p + 8 <= b.length) {
    const id = b.toString('ascii', p, p + 4);
    const size = b.readUInt32LE(p + 4);
    if (id === 'fmt ') {
      channels = b.readUInt16LE(p + 10);
      sampleRate = b.readUInt32LE(p + 12);
      bits = b.readUInt16LE(p + 22);
    } else if (id === 'data') {
      if (bits !== 16 || channels !== 1)
        throw new BadModelError(`expected 16-bit mono PCM, got ${bits}-bit ${channels} channels`, { file });
      const n = Math.floor(Math.min(size, b.length - p - 8) / 2);
      const samples = new Float32Array(n);
      for (let i = 0; i < n; i++) samples[i] = b.readInt16LE(p + 8 + i * 2) / 32768;
      return { sampleRate, samples };
    }
    p += 8 + size + (size & 1);
  }
  throw new BadModelError('WAV file has no data chunk', { file });
}
