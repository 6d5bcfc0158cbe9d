/** The benchmark's quick mode runs end to end (pipeline only; no timing is asserted). */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);

describe('npm run bench -- --quick', () => {
  it('writes JSON, a markdown table and a plot with nnmedia points and peers', async () => {
    const out = tempDir();
    await run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../bench/run.ts'), '--quick'], {
      env: { ...process.env, NNMEDIA_BENCH_OUT: out },
      maxBuffer: 1 << 24,
    });
    const r = JSON.parse(readFileSync(join(out, 'silero-v6.json'), 'utf8'));
    const labels = r.points.map((p: { label: string }) => p.label);
    expect(labels).toEqual(
      expect.arrayContaining([
        'float32 + zstd-19',
        'int8 per-channel + zstd-19',
        'png 8 channel',
        'png lossless layer',
        'default',
      ]),
    );
    const png = r.points.find((p: { label: string }) => p.label === 'png 8 channel');
    expect(png.metric).toBeGreaterThanOrEqual(0.99);
    expect(png.maxRssMB).toBeGreaterThan(0);
    expect(readFileSync(join(out, 'results.md'), 'utf8')).toMatch(/\| png 8 channel \|/);
    expect(existsSync(join(out, 'rd-silero-v6.png'))).toBe(true);
  });
});
