import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made: string[] = [];
// registered when a test file imports this helper, so folders made inside a test are removed too (an afterAll
// registered from inside a running test never runs: 950 folders had piled up in /tmp)
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temporary folder removed after the file's tests. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'nnmedia-test-'));
  made.push(dir);
  return dir;
}

export function listDir(dir: string): string[] {
  return readdirSync(dir).sort();
}
