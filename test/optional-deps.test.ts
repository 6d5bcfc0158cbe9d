/**
 * onnxruntime-node is an optional peer dependency: importing the package, compressing with fixed settings
 * and --no-check, and decompressing must never load it; the default compress tries it for the quality gate
 * and, without it, writes the archive and says the quality was not checked; and what needs it fails with E_MISSING_DEPENDENCY naming the
 * package. The built package runs in a child Node whose module loader hides onnxruntime-node (a resolve
 * hook that logs every attempt and answers "not found"), as in a project that did not install it.
 * (scripts/consumer-test.sh checks the same from the packed tarball, and ffmpeg's absence too.)
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/cli/main.js');
const dir = tempDir();
const LOG = join(dir, 'loaded.log');
const model = join(dir, 'm.onnx');
writeFileSync(model, mixedModel().bytes);

writeFileSync(
  join(dir, 'hide.mjs'),
  `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  if (specifier === 'onnxruntime-node' || specifier.startsWith('onnxruntime-node/')) {
    appendFileSync(${JSON.stringify(LOG)}, specifier + '\\n');
    const e = new Error("Cannot find package '" + specifier + "' (hidden by the test)");
    e.code = 'ERR_MODULE_NOT_FOUND';
    throw e;
  }
  return next(specifier, context);
}
`,
);
writeFileSync(
  join(dir, 'register.mjs'),
  `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hide.mjs')).href)});\n`,
);

/** Runs node with onnxruntime-node hidden; returns exit code, output and what tried to load it. */
async function hidden(args: string[]): Promise<{ code: number; stdout: string; stderr: string; attempts: string[] }> {
  writeFileSync(LOG, '');
  let r: { code: number; stdout: string; stderr: string };
  try {
    r = { code: 0, ...(await run(process.execPath, ['--import', join(dir, 'register.mjs'), ...args], { cwd: dir })) };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    r = { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
  return { ...r, attempts: readFileSync(LOG, 'utf8').split('\n').filter(Boolean) };
}

describe('without onnxruntime-node', () => {
  it('the hook hides it (the test can fail)', async () => {
    const r = await hidden(['--input-type=module', '-e', "await import('onnxruntime-node')"]);
    expect(r.code).not.toBe(0);
    expect(r.attempts).toEqual(['onnxruntime-node']);
  });

  it("import('nnmedia') and 'nnmedia/browser' never load it", async () => {
    expect(existsSync(CLI)).toBe(true);
    const code = `const n = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href)});
const b = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist/browser/index.js')).href)});
console.log(typeof n.compressModel, typeof n.taskByName, typeof b.decodeArchive);`;
    const r = await hidden(['--input-type=module', '-e', code]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function function function');
    expect(r.attempts).toEqual([]);
  });

  it('compress --no-check, inspect and decompress never load it', async () => {
    const c = await hidden([CLI, 'compress', model, '-o', 'm.nnm', '--codec', 'png', '--no-check']);
    expect(c.stderr).toBe('');
    expect(c.code).toBe(0);
    const i = await hidden([CLI, 'inspect', 'm.nnm']);
    expect(i.code).toBe(0);
    const d = await hidden([CLI, 'decompress', 'm.nnm', '-o', 'back.onnx']);
    expect(d.code).toBe(0);
    expect(readFileSync(join(dir, 'back.onnx')).length).toBe(readFileSync(model).length);
    expect([...c.attempts, ...i.attempts, ...d.attempts]).toEqual([]);
  });

  it('compress with the quality gate on (the default) tries it, and without it writes the archive and says the quality was not checked', async () => {
    const c = await hidden([CLI, 'compress', model, '-o', 'g.nnm', '--codec', 'png']);
    expect(c.code).toBe(0);
    expect(c.attempts.length).toBeGreaterThan(0);
    expect(c.stdout + c.stderr).toMatch(/quality not checked: onnxruntime-node is not installed \(npm install onnxruntime-node/);
    expect(existsSync(join(dir, 'g.nnm'))).toBe(true);
    const i = await hidden([CLI, 'inspect', 'g.nnm']);
    expect(i.stdout).toMatch(/not checked/);
  });

  it('eval, rate control and the demo fail with E_MISSING_DEPENDENCY naming the package', async () => {
    for (const args of [['eval', 'm.nnm', '-m', model], ['compress', model, '-o', 'bpw.nnm', '--target-bpw', '4'], ['demo']]) {
      const r = await hidden([CLI, ...args]);
      expect(r.code, args.join(' ')).toBe(5); // E_MISSING_DEPENDENCY's exit status (ERROR_CODES)
      expect(r.stderr).toMatch(/^nnmedia: E_MISSING_DEPENDENCY: .* needs onnxruntime-node: npm install onnxruntime-node@\d/);
      expect(r.attempts.length).toBeGreaterThan(0);
    }
    expect(existsSync(join(dir, 'bpw.nnm'))).toBe(false);
  });
});
