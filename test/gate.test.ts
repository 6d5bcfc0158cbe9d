/**
 * The failure classes of issue 14 on models built here: the quality gate (measured, recorded, refusing a wrecked
 * archive and leaving no output), an unreachable bits/weight budget reported with the smallest passing size,
 * If branches the calibration never takes kept at the default grid, exact zeros in every mode, synthetic inputs
 * that run a front end needing ≥ 512 samples, and the default against per-channel int8 round-to-nearest.
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import onnxProto from 'onnx-proto';
import { withTempFile } from '../src/io/atomic.js';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Archive, compressModel, decompressArchive, openModel, QualityError } from '../src/index.js';
import { decodeAllTensors } from '../src/pipeline/decompress.js';
import { describeQuality, openCalibration, untakenWording, type Calibration } from '../src/pipeline/gate.js';
import { probeSamples, unseen } from '../src/pipeline/allocate.js';
import { fewHeldBack } from '../src/pipeline/compress.js';
import { calibrationSpecFromConfig, calibrationSpecFromFlags } from '../src/calibration/options.js';
import {
  batchNormClassifier,
  cancellationModel,
  cascadeModel,
  ifBranchModel,
  ifTriggerInputs,
  sparseModel,
  stftMelModel,
  twoHeadModel,
} from './helpers/onnx-builder.js';
import { exposeDecisions } from '../src/calibration/decisions.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { compareOutputs } from '../src/eval/fidelity.js';
import { listDir, tempDir } from './helpers/tmp.js';
import { gaussian } from './helpers/random.js';

const dir = tempDir();
const write = async (name: string, built: unknown): Promise<string> => {
  const b = (await built) as { bytes: Uint8Array };
  const f = join(dir, name);
  writeFileSync(f, b.bytes);
  return f;
};

/** SNR (dB) of each coded tensor of an archive against the model. */
async function snrs(model: string, archive: string, by: 'name' | 'key' = 'name'): Promise<Map<string, number>> {
  const a = new Archive(archive);
  const values = await decodeAllTensors(a);
  a.close();
  const r = openModel(model);
  const out = new Map<string, number>();
  for (const [key, v] of values) {
    const x = r.read(key);
    let se = 0;
    let sp = 0;
    for (let i = 0; i < x.length; i++) {
      se += (x[i] - v[i]) ** 2;
      sp += x[i] ** 2;
    }
    out.set(by === 'key' ? key : r.tensors.find((t) => t.key === key)!.name, se ? 10 * Math.log10(sp / se) : Infinity);
  }
  r.close();
  return out;
}

describe('quality gate', () => {
  it('measures every default archive on held-back inputs, says they were synthetic, and records it', async () => {
    const model = await write('sparse.onnx', sparseModel());
    const r = await compressModel(model, join(dir, 'sparse.nnm'));
    // a small model (0.6 MB): 64 synthetic samples, every 4th held back (16 for a model over 8 MiB)
    expect(r.quality).toMatchObject({ checked: true, passed: true, minFidelity: 0.9, synthetic: true, samples: 16 });
    expect(r.quality!.fidelity).toBeGreaterThan(0.95);
    expect(r.quality!.calibration).toMatch(/SYNTHETIC/);
    expect(new Archive(join(dir, 'sparse.nnm')).manifest.quality).toEqual(r.quality);
    // the gate decompressed into a scratch file beside the archive, and removed it
    expect(listDir(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // no gate asked: the manifest says why nothing was measured
    const off = await compressModel(model, join(dir, 'sparse-off.nnm'), { check: false });
    expect(off.quality).toEqual({ checked: false, reason: 'skipped (check: false)' });
  });

  it('the scratch file the gate decodes into is removed when the work on it fails, and the error comes through', async () => {
    const near = join(dir, 'scratch-near.nnm');
    let seen = '';
    const e = await withTempFile(near, async (fd, path) => {
      seen = path;
      writeSync(fd, new Uint8Array(10));
      expect(existsSync(path)).toBe(true);
      throw new Error('failed on purpose');
    }).catch((x: unknown) => x);
    expect((e as Error).message).toBe('failed on purpose');
    expect(seen.startsWith(dir)).toBe(true);
    expect(existsSync(seen)).toBe(false);
  });

  it('an already quantized model (integer weights, nothing lossy to store) is not run: no gate, no allocation', async () => {
    // MatMulInteger with an int8 weight: no float weight to code; the decompressed model holds the original's values
    const w = Int8Array.from({ length: 64 * 32 }, (_, i) => ((i * 37) % 255) - 127);
    const bytes = onnxProto.onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'q',
        initializer: [
          { name: 'W', dims: [64, 32], dataType: onnxProto.onnx.TensorProto.DataType.INT8, rawData: new Uint8Array(w.buffer) },
        ],
        node: [{ opType: 'MatMulInteger', input: ['x', 'W'], output: ['y'] }],
        input: [
          {
            name: 'x',
            type: {
              tensorType: {
                elemType: onnxProto.onnx.TensorProto.DataType.INT8,
                shape: { dim: [{ dimValue: 1 }, { dimValue: 64 }] },
              },
            },
          },
        ],
        output: [{ name: 'y', type: { tensorType: { elemType: onnxProto.onnx.TensorProto.DataType.INT32 } } }],
      },
    }).finish();
    const model = join(dir, 'quantized.onnx');
    writeFileSync(model, bytes);
    for (const options of [{}, { targetBpw: 4 }]) {
      const logs: string[] = [];
      const r = await compressModel(model, join(dir, 'quantized.nnm'), { ...options, force: true, onLog: (m) => logs.push(m) });
      expect(r.quality).toEqual({
        checked: false,
        reason: expect.stringMatching(/^nothing lossy: every tensor is stored exactly/),
      });
      expect(logs.join('\n')).not.toMatch(/NaN|calibration:/);
      if ('targetBpw' in options) expect(logs.join('\n')).toMatch(/nothing lossy.*nothing to act on/);
    }
    await decompressArchive(join(dir, 'quantized.nnm'), join(dir, 'quantized.out.onnx'), { force: true });
    expect(Buffer.compare(readFileSync(join(dir, 'quantized.out.onnx')), Buffer.from(bytes))).toBe(0);
  });

  it('refuses a wrecked archive: a typed error, no output; with force the archive is kept and the error still raised', async () => {
    const model = await write('bn.onnx', batchNormClassifier());
    const before = listDir(dir);
    const out = join(dir, 'wrecked.nnm');
    // a step of 3 RMS per channel: two or three levels per weight
    const e = await compressModel(model, out, { relStep: 3 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QualityError);
    expect((e as QualityError).code).toBe('E_QUALITY');
    expect((e as QualityError).message).toMatch(/fidelity \S+ is under the floor 0\.9 .*no output written/);
    expect(existsSync(out)).toBe(false);
    expect(listDir(dir)).toEqual(before);
    const kept = await compressModel(model, out, { relStep: 3, force: true }).catch((x: unknown) => x);
    expect(kept).toBeInstanceOf(QualityError);
    expect((kept as QualityError).details.kept).toBe(true);
    expect((kept as QualityError).details.archive!.bytes).toBe(statSync(out).size);
    expect(new Archive(out).manifest.quality).toMatchObject({ checked: true, passed: false });
    // the same archive passes a floor the user lowered, and says so
    const low = await compressModel(model, join(dir, 'low.nnm'), { relStep: 3, minFidelity: 0 });
    expect(low.quality).toMatchObject({ passed: true, minFidelity: 0 });
  });

  it('a default archive under the floor escalates to the smallest archive that passes; without escalation it advises 16-bit codes', async () => {
    // BlazeFace's 256×256 detector and M-LSD fail the floor at int8 precision (int8 RTN as well) and pass at
    // 16 bits; the default now looks for the smallest archive that passes (finer grids, 16-bit where needed)
    const model = await write('bn16.onnx', batchNormClassifier());
    const out = join(dir, 'fine.nnm');
    const logs: string[] = [];
    const r = await compressModel(model, out, { minFidelity: 0.99, onLog: (m) => logs.push(m) });
    expect(r.quality).toMatchObject({ passed: true, minFidelity: 0.99 });
    expect(r.quality!.fidelity!).toBeGreaterThanOrEqual(0.99);
    const text = logs.join('\n');
    expect(text).toMatch(
      /the default 8-bit grid: fidelity \S+ < 0\.99 at [\d.]+ bits\/weight; looking for the smallest archive that passes/,
    );
    expect(text).toMatch(/escalated: (16-bit codes everywhere \()?[\d.]+ bits\/weight/);
    // one line a budget tried, each with its verdict and size; the allocator's own lines (a target of the refused
    // size) are not printed
    expect(text).toMatch(
      /escalation: finer grids allocated for a budget of 1× the default's size\nfidelity [\d.]+ [<≥] 0\.99 .*: [\d.]+ bits\/weight/,
    );
    expect(text).not.toMatch(/allocated [\d.]+ bits\/weight \(estimate\)/);
    const escalated = new Archive(out).manifest.options.escalated as { fidelity: number; bitsPerWeight: number };
    expect(escalated.fidelity).toBeLessThan(0.99);
    expect(r.bitsPerWeight).toBeGreaterThan(escalated.bitsPerWeight * 0.8);
    // no larger than what --bits 16 writes
    const sixteen = await compressModel(model, join(dir, 'sixteen.nnm'), { minFidelity: 0.99, bits: 16 });
    expect(sixteen.quality).toMatchObject({ passed: true });
    expect(r.bitsPerWeight).toBeLessThanOrEqual(sixteen.bitsPerWeight);
    // --no-escalate (and bits asked for) keep the refusal, which advises 16-bit codes, not "a larger budget"
    for (const options of [{ escalate: false }, { bits: 8 }]) {
      const e = await compressModel(model, out, { ...options, minFidelity: 0.99, force: true }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(QualityError);
      const message = (e as QualityError).message;
      expect(message).toMatch(/the archive was kept \(--force, [\d,]+ bytes, [\d.]+ bits\/weight\)/);
      if ('escalate' in options) expect(message).toMatch(/try --bits 16 \(a 256× finer grid, about twice the size\)/);
      expect(message).not.toMatch(/larger budget/);
      expect(new Archive(out).manifest.options.escalated).toBeUndefined();
    }
    const e = await compressModel(model, join(dir, 'none.nnm'), { minFidelity: 0.99, escalate: false }).catch((x: unknown) => x);
    expect((e as QualityError).message).toMatch(
      /no output written; leave out --no-escalate \(compress then looks for the smallest archive that passes\), try --bits 16 .*, lower --min-fidelity, or --force/,
    );
    expect(existsSync(join(dir, 'none.nnm'))).toBe(false);
    // interrupted during the search (the refused default archive already written once): no output left
    const controller = new AbortController();
    const aborted = await compressModel(model, join(dir, 'aborted.nnm'), {
      minFidelity: 0.99,
      signal: controller.signal,
      onLog: (m) => {
        if (m.startsWith('escalation:')) controller.abort();
      },
    }).catch((x: unknown) => x);
    expect(aborted).toBeInstanceOf(Error);
    expect(aborted).not.toBeInstanceOf(QualityError);
    expect(existsSync(join(dir, 'aborted.nnm'))).toBe(false);
    // the same from the CLI: Ctrl-C during the search (the CLI's signal handler exits before the run's own
    // clean-up) leaves no refused attempt at -o
    const cli = join(import.meta.dirname, '../dist/cli/main.js');
    const interrupted = join(dir, 'interrupted.nnm');
    const child = spawn(process.execPath, [cli, 'compress', model, '-o', interrupted, '--min-fidelity', '0.99'], {
      stdio: 'pipe',
    });
    let err = '';
    const closed = new Promise<number | string>((r) => child.on('close', (c, s) => r(c ?? s ?? 'none')));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (/escalation: finer grids/.test(err) && !child.killed) child.kill('SIGINT');
    });
    expect(await closed).toBe(130);
    expect(err).toMatch(/interrupted; no output written/);
    expect(existsSync(interrupted)).toBe(false);
    // a floor nothing meets: the default refused after the search, no output, the error says what was tried
    const never = await compressModel(model, join(dir, 'never.nnm'), { minFidelity: 1 }).catch((x: unknown) => x);
    expect(never).toBeInstanceOf(QualityError);
    expect((never as QualityError).message).toMatch(
      /the default grid \([\d.]+ bits\/weight\) and finer ones up to 16-bit codes everywhere/,
    );
    expect(existsSync(join(dir, 'never.nnm'))).toBe(false);
    // a lossy codec's refusal does not point at the bit depth
    const lossy = await compressModel(model, join(dir, 'lossy.nnm'), { codec: 'jpeg', quality: 1 }).catch((x: unknown) => x);
    expect((lossy as QualityError).message).toMatch(/give a larger budget/);
    // the CLI: exit 0 with the escalation in the summary and in --json; --no-escalate exits 7
    const ok = spawnSync(process.execPath, [cli, 'compress', model, '-o', join(dir, 'cli.nnm'), '--min-fidelity', '0.99'], {
      encoding: 'utf8',
    });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/escalated: the default 8-bit grid gave fidelity [\d.]+ at [\d.]+ bits\/weight/);
    const json = spawnSync(
      process.execPath,
      [cli, 'compress', model, '-o', join(dir, 'cli.nnm'), '--min-fidelity', '0.99', '--force', '--json'],
      { encoding: 'utf8' },
    );
    expect(JSON.parse(json.stdout).escalated).toMatchObject({ by: expect.any(String) });
    const refused = spawnSync(
      process.execPath,
      [cli, 'compress', model, '-o', join(dir, 'cli2.nnm'), '--min-fidelity', '0.99', '--no-escalate'],
      { encoding: 'utf8' },
    );
    expect(refused.status).toBe(7);
    expect(refused.stderr).toMatch(/E_QUALITY: .*try --bits 16/);
  }, 300_000);

  it('a bits/weight budget the floor cannot meet is refused with the smallest passing size, never a silent archive', async () => {
    const model = await write('bn2.onnx', batchNormClassifier());
    const out = join(dir, 'budget.nnm');
    const e = await compressModel(model, out, { targetBpw: 2, reprobe: false }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QualityError);
    const d = (e as QualityError).details;
    expect(d.fidelity!).toBeLessThan(0.9);
    const message = (e as QualityError).message;
    if (d.smallestPassing !== undefined) {
      expect(d.smallestPassing).toBeGreaterThan(2);
      expect(message).toMatch(/smallest passing archive found is [\d.]+ bits\/weight|smallest budget found to pass wrote/);
    } else expect(message).toMatch(/no budget up to 4× the target passes/);
    // beside it, what the same options give without the budget: the default grid, the same every run
    const plain = /without --target-bpw it is ([\d.]+) bits\/weight at fidelity ([\d.]+)/.exec(message);
    expect(plain).not.toBeNull();
    const dflt = await compressModel(model, join(dir, 'budget-default.nnm'), { minFidelity: 0, escalate: false });
    expect(Number(plain![1])).toBeCloseTo(dflt.bitsPerWeight, 3);
    expect(Number(plain![2])).toBe(dflt.quality!.fidelity);
    // (the same codes; the manifest's record of the floor differs by a few bytes)
    expect(d.withoutBudget!.bitsPerWeight).toBeCloseTo(dflt.bitsPerWeight, 2);
    expect(d.withoutBudget!.fidelity).toBe(dflt.quality!.fidelity);
    expect(d.withoutBudget!.passed).toBe(dflt.quality!.fidelity! >= 0.9);
    // where it passes and is the smaller, it is what is suggested
    if (d.withoutBudget!.passed && (d.smallestPassing === undefined || dflt.bitsPerWeight <= d.smallestPassing))
      expect(message).toMatch(/which passes and is the smallest passing archive found: try it without --target-bpw/);
    expect(existsSync(out)).toBe(false);
    // with force the archive at the budget asked for is kept, not the last one the search for a passing budget wrote
    // (both when a passing budget was found and when none up to 4× passes: then the 4× attempt was kept)
    for (const minFidelity of [undefined, 0.99999]) {
      const kept = (await compressModel(model, out, { targetBpw: 2, reprobe: false, force: true, minFidelity }).catch(
        (x: unknown) => x,
      )) as QualityError;
      expect(kept.details.kept).toBe(true);
      expect(kept.details.archive!.bytes).toBe(statSync(out).size);
      if (minFidelity === undefined) expect(kept.details.fidelity).toBe(d.fidelity);
      else expect(kept.details.smallestPassing).toBeUndefined();
      const a = new Archive(out);
      expect(a.manifest.quality).toMatchObject({ passed: false, fidelity: kept.details.fidelity });
      a.close();
    }
  }, 600_000);

  it('a --target-snr or --max-loss the floor refuses says what the same options give without it', async () => {
    const model = await write('bn3.onnx', batchNormClassifier());
    const out = join(dir, 'snr.nnm');
    const e = (await compressModel(model, out, { targetSnr: 3 }).catch((x: unknown) => x)) as QualityError;
    expect(e).toBeInstanceOf(QualityError);
    expect(e.message).toMatch(
      /--target-snr 3 \([\d.]+ bits\/weight\): fidelity [\d.]+ is under the floor 0\.9 .*no output written; give a larger --target-snr, .*; without --target-snr it is [\d.]+ bits\/weight at fidelity [\d.]+/,
    );
    expect(existsSync(out)).toBe(false);
    const dflt = await compressModel(model, join(dir, 'snr-default.nnm'), { minFidelity: 0, escalate: false });
    expect(e.details.withoutBudget!.fidelity).toBe(dflt.quality!.fidelity);
    expect(e.details.withoutBudget!.bitsPerWeight).toBeCloseTo(dflt.bitsPerWeight, 2);
    // with --force the refused archive is the one kept
    const kept = (await compressModel(model, out, { targetSnr: 3, force: true }).catch((x: unknown) => x)) as QualityError;
    expect(kept.details.kept).toBe(true);
    expect(kept.details.archive!.bytes).toBe(statSync(out).size);
    const a = new Archive(out);
    expect(a.manifest.quality).toMatchObject({ passed: false, fidelity: kept.details.fidelity });
    a.close();
    // --max-loss (a task's loss: the CLI's outputs task)
    const loss = join(dir, 'loss.nnm');
    const cli = join(import.meta.dirname, '../dist/cli/main.js');
    const r = spawnSync(process.execPath, [cli, 'compress', model, '-o', loss, '--max-loss', '1'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(7);
    expect(r.stderr).toMatch(
      /E_QUALITY: .*--max-loss 1 \([\d.]+ bits\/weight\): .*give a smaller --max-loss.*; without --max-loss it is [\d.]+ bits\/weight at fidelity [\d.]+/,
    );
    expect(existsSync(loss)).toBe(false);
  }, 300_000);

  it('the probes weigh each output by its own scale, as the gate does: a score head beside 500× box regressions is not starved', async () => {
    const model = await write('two-heads.onnx', twoHeadModel());
    const out = join(dir, 'two-heads.nnm');
    const r = await compressModel(model, out, { targetBpw: 4, minFidelity: 0 });
    const rel = new Map((r.quality!.outputs ?? []).map((o) => [o.name, o.relRms!]));
    // compared as one vector the boxes decided alone: the score head got 5.9 dB and the scores a relative
    // error of 0.38 (boxes 0.05); weighed by scale both heads get bits, both outputs ~0.13
    const snr = await snrs(model, out);
    expect(snr.get('scores.hidden')!).toBeGreaterThan(12);
    expect(rel.get('scores')!).toBeLessThan(0.2);
    expect(r.quality!.fidelity).toBeGreaterThan(0.8);
  }, 300_000);

  it('a model that needs more than 8 bits a weight gets 16-bit grids from --target-bpw instead of a refusal at every budget', async () => {
    const model = await write('cancel.onnx', cancellationModel());
    const out = join(dir, 'cancel.nnm');
    // with 8-bit candidates only: no budget up to 4× passed (fidelity 0.82 at 10.7 bits/weight for --target-bpw 12)
    const r = await compressModel(model, out, { targetBpw: 13 });
    expect(r.quality!.passed).toBe(true);
    expect(r.bitsPerWeight).toBeLessThanOrEqual(13);
    const a = new Archive(out);
    expect(a.manifest.tensors.filter((t) => t.quant?.bits === 16).map((t) => t.name)).not.toHaveLength(0);
    a.close();
  }, 300_000);

  it('a suggested budget judged on few held-back samples says so', async () => {
    const model = await write('cancel-few.onnx', cancellationModel());
    const file = join(dir, 'cancel-few.json');
    // 8 inputs: 2 held back
    writeFileSync(file, JSON.stringify(Array.from({ length: 8 }, (_, k) => ({ x: [Array.from(gaussian(64, 700 + k, 1))] }))));
    const out = join(dir, 'cancel-few.nnm');
    const e = await compressModel(model, out, { targetBpw: 8, calibration: { paths: [file] } }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(QualityError);
    expect((e as QualityError).message).toMatch(
      /smallest passing archive found is [\d.]+ bits\/weight .*judged on 2 held-back samples/,
    );
    expect(existsSync(out)).toBe(false);
  }, 300_000);

  it('--probe-samples bounds the probes: the run count is printed, the option checked and recorded', async () => {
    const model = await write('bn3.onnx', batchNormClassifier());
    const logs: string[] = [];
    const r = await compressModel(model, join(dir, 'probe.nnm'), {
      targetBpw: 6,
      probeSamples: 1,
      reprobe: false,
      minFidelity: 0,
      onLog: (m) => logs.push(m),
    });
    const line = logs.find((l) => l.startsWith('sensitivity probes:'));
    expect(line).toMatch(/^sensitivity probes: (\d+) tensors × 1 sample = \1 model runs/);
    expect(new Archive(join(dir, 'probe.nnm')).manifest.options).toMatchObject({ probeSamples: 1 });
    expect(r.bitsPerWeight).toBeLessThan(7);
    for (const bad of [0, 1.5])
      await expect(compressModel(model, join(dir, 'bad.nnm'), { targetBpw: 6, probeSamples: bad })).rejects.toThrow(
        /Expected integer between 1 and 1000 for probeSamples/,
      );
  }, 600_000);

  it('--judge-output: the gate and the probes compare only the named outputs; an unknown name is refused', async () => {
    // the If model's outputs: score (the first stage) and detail (the second stage, zeros on synthetic inputs)
    const model = await write('judge.onnx', ifBranchModel());
    const all = await compressModel(model, join(dir, 'judge-all.nnm'));
    expect(all.quality!.outputs!.map((o) => o.name).sort()).toEqual(['detail', 'score']);
    expect(all.quality!.judged).toBeUndefined();
    const logs: string[] = [];
    const one = await compressModel(model, join(dir, 'judge-one.nnm'), {
      calibration: { paths: [], outputs: ['score'] },
      targetBpw: 6,
      probeSamples: 1,
      reprobe: false,
      minFidelity: 0,
      onLog: (m) => logs.push(m),
    });
    expect(one.quality!.outputs!.map((o) => o.name)).toEqual(['score']);
    expect(one.quality!.judged).toEqual(['score']);
    expect(new Archive(join(dir, 'judge-one.nnm')).manifest.quality!.judged).toEqual(['score']);
    expect(describeQuality(one.quality!)).toMatch(/judged on score only\)$/);
    expect(logs).toContain('judged on output score only (--judge-output)');
    await expect(
      compressModel(model, join(dir, 'judge-bad.nnm'), { calibration: { paths: [], outputs: ['mask'] } }),
    ).rejects.toThrow(/--judge-output "mask": the model has no such output; its outputs: score, detail/);
    expect(existsSync(join(dir, 'judge-bad.nnm'))).toBe(false);
    // the flag: repeatable, names checked for being distinct; the config file's key is `outputs`
    expect(calibrationSpecFromFlags({ judgeOutput: ['score', 'detail'] }).outputs).toEqual(['score', 'detail']);
    expect(() => calibrationSpecFromFlags({ judgeOutput: ['score', 'score'] })).toThrow(/distinct output names/);
    expect(calibrationSpecFromConfig({ outputs: 'score' }, join(dir, 'c.json')).outputs).toEqual(['score']);
  }, 300_000);

  it('says when the gate rests on too few held-back samples (fewer than 4), and not when it does not', async () => {
    const built = ifBranchModel();
    const model = await write('few.onnx', built);
    const sample = (k: number): { x: number[][] } => ({ x: [Array.from(gaussian(64, 300 + k, 1))] });
    const run = async (n: number): Promise<string[]> => {
      const file = join(dir, `few-${n}.json`);
      writeFileSync(file, JSON.stringify(Array.from({ length: n }, (_, k) => sample(k))));
      const logs: string[] = [];
      await compressModel(model, join(dir, `few-${n}.nnm`), { calibration: { paths: [file] }, onLog: (m) => logs.push(m) });
      return logs;
    };
    const few = (await run(8)).find((l) => l.startsWith('only '));
    expect(few).toMatch(
      /^only 2 held-back calibration samples: the quality gate's verdict rests on them alone; give at least 16/,
    );
    // (raw tensors: nothing about segments, which only recordings have)
    expect(few).not.toMatch(/--segment/);
    expect((await run(16)).some((l) => l.startsWith('only '))).toBe(false);
    // one sample is the probes' and the gate's alike: said so, in the log and in the record, not "1 held-back"
    const one = await run(1);
    expect(one).toContainEqual(expect.stringMatching(/^one calibration sample: the probes and the quality gate both use it/));
    expect(one.some((l) => l.startsWith('only '))).toBe(false);
    const record = new Archive(join(dir, 'few-1.nnm'));
    try {
      expect(record.manifest.quality).toMatchObject({ samples: 1, shared: true });
      expect(describeQuality(record.manifest.quality!)).toMatch(/1 sample, the probes' too \(not held back\)/);
    } finally {
      record.close();
    }
  }, 120_000);

  it('does not run what it cannot: safetensors get a record saying why', async () => {
    const f = join(dir, 'st.safetensors');
    writeSafetensorsFixture(f);
    const r = await compressModel(f, join(dir, 'st.nnm'));
    expect(r.quality).toMatchObject({ checked: false, reason: expect.stringMatching(/safetensors files hold no graph/) });
  });
});

describe("a sequence's logits", () => {
  it('[N, T, C] named as logits are decided per position; other rank-3 outputs stay values', () => {
    // 64 positions of 50 logits, the candidate moved by 8 % of the spread: a third of the near-ties flip
    const a = gaussian(64 * 50, 21, 1);
    const b = a.map((v, i) => v + 0.08 * gaussian(1, 1000 + i, 1)[0] * 3);
    const f32 = (d: Float32Array) => ({ type: 'float32' as const, dims: [1, 64, 50], data: d });
    for (const name of ['logits', 'lm_logits', 'joint.logits', 'class_queries_logits']) {
      const r = compareOutputs({ [name]: f32(a) }, { [name]: f32(b) });
      expect(r.outputs[0].kind, name).toBe('classes');
      expect(r.outputs[0].decisions).toBe(64);
      // judged as values it would read 1 − relRms (≈ 0.76); decided, it reads the share of positions whose top-1 held
      expect(r.fidelity).toBe(r.outputs[0].agreement);
    }
    for (const name of ['hidden_states', 'features', 'logitech'])
      expect(compareOutputs({ [name]: f32(a) }, { [name]: f32(b) }).outputs[0].kind).toBe('values');
    // a segmentation's logits [N, C, H, W] keep their class axis at 1: decided per pixel, not along the last axis
    const seg = { type: 'float32' as const, dims: [1, 5, 8, 80], data: a };
    expect(compareOutputs({ logits: seg }, { logits: { ...seg, data: b } }).outputs[0]).toMatchObject({
      kind: 'classes',
      decisions: 640,
    });
  });
});

describe("a segmentation's class map", () => {
  const map = (C: number, H: number, W: number, label: (p: number) => number, softmax = false) => {
    const data = new Float32Array(C * H * W);
    for (let p = 0; p < H * W; p++) for (let c = 0; c < C; c++) data[c * H * W + p] = c === label(p) ? 2 : 0.1 * c;
    if (softmax)
      for (let p = 0; p < H * W; p++) {
        let z = 0;
        for (let c = 0; c < C; c++) z += Math.exp(data[c * H * W + p]);
        for (let c = 0; c < C; c++) data[c * H * W + p] = Math.exp(data[c * H * W + p]) / z;
      }
    return { type: 'float32' as const, dims: [1, C, H, W], data };
  };
  it('[N, C, H, W] logits or softmax over C are decided per pixel, and a lost object is not hidden by the background', () => {
    // a 32×32 map of 5 classes: background 0, an object of class 3 in a 10×10 square (~10 % of the pixels)
    const object = (p: number): number => (p % 32 >= 4 && p % 32 < 14 && p >> 5 >= 4 && p >> 5 < 14 ? 3 : 0);
    const lost = (): number => 0;
    for (const [name, softmax] of [
      ['logits', false],
      ['seg_out', false],
      ['out', true],
    ] as const) {
      const same = compareOutputs({ [name]: map(5, 32, 32, object, softmax) }, { [name]: map(5, 32, 32, object, softmax) });
      expect(same.outputs[0]).toMatchObject({ kind: 'classes', decisions: 1024, agreement: 1, iou: 1 });
      const r = compareOutputs({ [name]: map(5, 32, 32, object, softmax) }, { [name]: map(5, 32, 32, lost, softmax) });
      // 90 % of the pixels agree (background), the object is gone: its IoU is 0, and so is the score
      expect(r.outputs[0].agreement).toBeCloseTo(1 - 100 / 1024, 6);
      expect(r.outputs[0].iou).toBe(0);
      expect(r.fidelity).toBe(0);
    }
    // features [N, C, H, W] that are not scores stay values
    const features = map(5, 32, 32, object);
    expect(compareOutputs({ features }, { features }).outputs[0].kind).toBe('values');
    // a flow field named so is no class map, even where its values look like a softmax's
    const flow = map(2, 32, 32, object, true);
    expect(compareOutputs({ flow }, { flow }).outputs[0].kind).not.toBe('classes');
  });
});

describe('keypoint heatmaps', () => {
  // N × K heatmaps of 32 × 24, a Gaussian blob (σ 1.5 px) at each keypoint
  const heatmaps = (peaks: Array<[number, number]>, N = 8) => {
    const [K, H, W] = [peaks.length, 32, 24];
    const data = new Float32Array(N * K * H * W);
    for (let n = 0; n < N; n++)
      peaks.forEach(([r0, c0], k) => {
        for (let r = 0; r < H; r++)
          for (let c = 0; c < W; c++)
            data[((n * K + k) * H + r) * W + c] = Math.exp(-((r - r0 - (n % 3)) ** 2 + (c - c0) ** 2) / (2 * 1.5 ** 2));
      });
    return { type: 'float32' as const, dims: [N, K, H, W], data };
  };
  const peaks: Array<[number, number]> = [
    [5, 5],
    [10, 12],
    [20, 8],
  ];
  it("a clear peak is a keypoint: kept within 5 % of the map's side, lost beyond it, whatever the values say", () => {
    const same = compareOutputs({ heatmaps: heatmaps(peaks) }, { heatmaps: heatmaps(peaks) }).outputs[0];
    expect(same.keypoints).toEqual({ decisions: 24, agreement: 1, tolerance: 2 });
    // every peak 2 px off: kept; 4 px off: lost, and the score with it
    const near = compareOutputs({ heatmaps: heatmaps(peaks) }, { heatmaps: heatmaps(peaks.map(([r, c]) => [r + 2, c])) });
    expect(near.outputs[0].keypoints!.agreement).toBe(1);
    const far = compareOutputs({ hm: heatmaps(peaks) }, { hm: heatmaps(peaks.map(([r, c]) => [r, c + 4])) });
    expect(far.outputs[0].keypoints!.agreement).toBe(0);
    expect(far.fidelity).toBe(0);
    // two modes (a left and a right wrist) whose heights swap: the values move by a few per cent, the keypoint jumps
    // across the map — where one peak clearly led (by 15 % of its height); two near-equal peaks (3 %: a map of two
    // instances, CenterNet's) are no decision
    const twoModes = (a: number, b: number) => {
      const m = heatmaps([[6, 6]], 24);
      const other = heatmaps([[24, 18]], 24);
      return { ...m, data: m.data.map((v, i) => a * v + b * other.data[i]) };
    };
    const swapped = compareOutputs({ heatmaps: twoModes(1, 0.85) }, { heatmaps: twoModes(0.85, 1) }).outputs[0];
    expect(1 - swapped.relRms).toBeGreaterThan(0.75);
    expect(swapped.keypoints!.agreement).toBe(0);
    expect(swapped.score).toBe(0);
    const ties = compareOutputs({ heatmaps: twoModes(1, 0.97) }, { heatmaps: twoModes(0.97, 1) }).outputs[0];
    expect(ties.keypoints).toBeUndefined();
    expect(ties.score).toBeGreaterThan(0.9);
    // a field without a clear peak (random weights' bumps) has no keypoints: judged by its values as before
    const flat = { type: 'float32' as const, dims: [1, 3, 32, 24], data: gaussian(3 * 32 * 24, 5, 1) };
    expect(compareOutputs({ heatmaps: flat }, { heatmaps: flat }).outputs[0].keypoints).toBeUndefined();
    // nor is a map of another name
    expect(compareOutputs({ features: heatmaps(peaks) }, { features: heatmaps(peaks) }).outputs[0].keypoints).toBeUndefined();
  });
});

describe('what calibration never exercises', () => {
  it("the untaken-branch line's count: none, one, several", () => {
    // Silero v5/v6's rate branches hold no coded tensor: "their 0 tensors keep the default grid" said nothing true
    expect(untakenWording(0)).toBe('no weight of their own');
    expect(untakenWording(1)).toBe('their 1 tensor keeps the default grid');
    expect(untakenWording(3)).toBe('their 3 tensors keep the default grid');
  });

  it('an If branch no sample takes keeps the default grid under --target-bpw, and the report names it', async () => {
    const model = await write('if.onnx', ifBranchModel());
    const dflt = join(dir, 'if-default.nnm');
    await compressModel(model, dflt, { check: false });
    const out = join(dir, 'if-budget.nnm');
    const logs: string[] = [];
    const r = await compressModel(model, out, { targetBpw: 4, minFidelity: 0, onLog: (m) => logs.push(m) });
    expect(r.quality!.untakenBranches).toEqual([expect.stringMatching(/: then$/)]);
    expect(logs).toContainEqual(
      expect.stringMatching(/^branches no calibration sample takes \(their 2 tensors keep the default grid\): /),
    );
    const [a, b] = [await snrs(model, dflt), await snrs(model, out)];
    for (const name of ['stage2.w1', 'stage2.w2']) expect(b.get(name)!).toBeGreaterThanOrEqual(a.get(name)! - 0.1);
    // while the tensors the calibration does reach were given fewer bits
    expect(b.get('stage1.w')!).toBeLessThan(a.get('stage1.w')!);
    // a grid the user fixes applies to them too, and the line says so (helper-83: --target-snr said "default grid")
    const snr: string[] = [];
    await compressModel(model, join(dir, 'if-snr.nnm'), { targetSnr: 20, minFidelity: 0, onLog: (m) => snr.push(m) });
    expect(snr).toContainEqual(
      expect.stringMatching(
        /^branches no calibration sample takes \(their 2 tensors are on the grid asked for, and the gate cannot judge them\): /,
      ),
    );
  }, 300_000);

  it('a budget refused because untaken branches keep their default grid says how much of it they take', async () => {
    const model = await write('if-refused.onnx', ifBranchModel());
    // the second stage (85 % of the weights) is never taken by synthetic inputs: ~6.8 of the 4 bits/weight
    const err = await compressModel(model, join(dir, 'if-refused.nnm'), { targetBpw: 4 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QualityError);
    expect((err as Error).message).toMatch(
      /; 8\d % of the coded weights lie in If branches no calibration input takes and keep the default grid \(~8 bits each, 6\.\d bits\/weight of the budget\): calibration inputs that take those branches free it$/,
    );
    expect(existsSync(join(dir, 'if-refused.nnm'))).toBe(false);
    // 16-bit codes asked for: their share of the budget is counted (and said) at that width
    const wide = await compressModel(model, join(dir, 'if-refused16.nnm'), { targetBpw: 4, bits: 16 }).catch((e: unknown) => e);
    expect(wide).toBeInstanceOf(QualityError);
    expect((wide as Error).message).toMatch(
      /; 8\d % of the coded weights lie in If branches no calibration input takes and keep the grid their options give \(~16 bits each, 1[34]\.\d bits\/weight of the budget\)/,
    );
  }, 300_000);

  it('the untaken branch is found by where its tensors sit, not by name: both branches hold stage2.w1 (as Silero v6)', async () => {
    const built = ifBranchModel(1, { sameNames: true });
    const model = await write('if-same.onnx', built);
    const reader = openModel(model);
    // the then branch's tensors, told apart from the else branch's namesakes by their values
    const thenKeys = reader.tensors
      .filter((t) => t.name in built.thenWeights && reader.read(t.key).every((v, i) => v === built.thenWeights[t.name][i]))
      .map((t) => t.key);
    const elseKeys = reader.tensors.filter((t) => t.name.startsWith('stage2.') && !thenKeys.includes(t.key)).map((t) => t.key);
    expect([thenKeys.length, elseKeys.length]).toEqual([2, 2]);
    const cal = await openCalibration(model, reader, undefined);
    reader.close();
    expect(cal.untakenBranches).toEqual([expect.stringMatching(/: then$/)]);
    expect([...cal.untakenTensors].sort()).toEqual([...thenKeys].sort());
    // under a budget the untaken (then) branch keeps the default grid; the taken (else) one may be coarser
    const dflt = join(dir, 'if-same-default.nnm');
    await compressModel(model, dflt, { check: false });
    const out = join(dir, 'if-same-budget.nnm');
    await compressModel(model, out, { targetBpw: 4, minFidelity: 0 });
    const [a, b] = [await snrs(model, dflt, 'key'), await snrs(model, out, 'key')];
    for (const key of thenKeys) expect(b.get(key)!).toBeGreaterThanOrEqual(a.get(key)! - 0.1);
    expect(Math.min(...elseKeys.map((k) => a.get(k)! - b.get(k)!))).toBeGreaterThan(0.1);
  }, 300_000);

  it("an untaken branch's weights held by the main graph (read by name from the branch) keep the default grid too", async () => {
    const model = await write('if-outer.onnx', ifBranchModel(1, { outerWeights: true }));
    const reader = openModel(model);
    // the weights sit at the top of the graph, not in the branch; only the branch's nodes read them
    expect(reader.tensors.find((t) => t.key === 'stage2.w1')!.location).toMatch(/^7\.0\/5\.\d+$/);
    const cal = await openCalibration(model, reader, undefined);
    reader.close();
    expect(cal.untakenBranches).toEqual([expect.stringMatching(/: then$/)]);
    expect([...cal.untakenTensors].sort()).toEqual(['stage2.w1', 'stage2.w2']);
  }, 120_000);

  it('weights that only decide which If branch runs are probed through the deciding value (a wake-word cascade)', async () => {
    const built = cascadeModel();
    const model = await write('cascade.onnx', built);
    // the first stage's score, found behind Not(Less(p1, 0.5)) → Cast → ReduceMax → Cast, is exposed as an output
    const probe = exposeDecisions(built.bytes)!;
    expect(probe.values).toHaveLength(1);
    expect(probe.values[0]).toMatch(/sigmoid/);
    const logs: string[] = [];
    const out = join(dir, 'cascade-budget.nnm');
    await compressModel(model, out, { targetBpw: 4, minFidelity: 0, onLog: (m) => logs.push(m), onDebug: (m) => logs.push(m) });
    expect(logs).toContain(`sensitivity probes also compare the value ${probe.values[0]} that decides which If branch runs`);
    const sensitivity = (name: string): number =>
      Number(
        logs
          .find((l) => l.startsWith(`  ${name}: sensitivity `))!
          .split(' ')
          .pop(),
      );
    // compared on outputs alone the first stage measured exactly nothing (1e-30 a unit of error) and was starved
    expect(sensitivity('stage1.w')).toBeGreaterThan(1e-9);
    // (5.9 dB when only the output was compared, 12.0 dB with the deciding value)
    expect((await snrs(model, out)).get('stage1.w')!).toBeGreaterThan(9);
  }, 300_000);

  it('the probe samples cover every branch the probe part takes: a second stage only one other sample fires is measured', async () => {
    const built = ifBranchModel();
    const model = await write('if-unseen.onnx', built);
    // 16 samples: every 4th held back; with --probe-samples 1 the evenly spaced pick is sample 0 (noise), which
    // never fires the second stage, while another probe-part sample (1) and two held-back ones (3, 7) do
    const triggers = ifTriggerInputs(built.template, 3);
    const at = new Map([
      [1, 0],
      [3, 1],
      [7, 2],
    ]);
    const sample = (k: number): { x: number[][] } => ({
      x: [Array.from(at.has(k) ? triggers.subarray(at.get(k)! * 64, at.get(k)! * 64 + 64) : gaussian(64, 500 + k, 1))],
    });
    const file = join(dir, 'if-unseen.json');
    writeFileSync(file, JSON.stringify(Array.from({ length: 16 }, (_, k) => sample(k))));
    const logs: string[] = [];
    const out = join(dir, 'if-unseen.nnm');
    await compressModel(model, out, {
      targetBpw: 4,
      probeSamples: 1,
      minFidelity: 0,
      calibration: { paths: [file] },
      onLog: (m) => logs.push(m),
    });
    expect(logs.some((l) => l.startsWith('branches no calibration sample takes'))).toBe(false);
    // sample 1 joins the one asked for: it takes the then branch the pick missed
    expect(logs.find((l) => l.startsWith('sensitivity probes: '))).toMatch(/ × 2 samples × 2 passes/);
    expect(logs.some((l) => l.includes('moved no probed output at all'))).toBe(false);
    // probed on noise alone, the second stage measured nothing and got the coarsest grids (5.8 and 5.9 dB)
    const snr = await snrs(model, out);
    for (const name of ['stage2.w1', 'stage2.w2']) expect(snr.get(name)!).toBeGreaterThan(15);
  }, 300_000);

  it('the probe pick: evenly spaced, plus a sample for each branch it misses; unmeasured tensors get the median', () => {
    const probe = Array.from({ length: 8 }, (_, index) => ({ index }) as unknown as Calibration['probe'][number]);
    const taken = new Map(probe.map((s) => [s.index, new Set([s.index === 5 ? 'If: then' : 'If: else'])]));
    expect(probeSamples({ probe }, 2).map((s) => s.index)).toEqual([0, 4]);
    expect(probeSamples({ probe, probeBranches: taken }, 2).map((s) => s.index)).toEqual([0, 4, 5]);
    expect(probeSamples({ probe, probeBranches: taken }, 8).map((s) => s.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const filled = unseen([4, NaN, 1, 9, NaN]);
    expect([...filled]).toEqual([4, 4, 1, 9, 4]);
    expect([...filled.missed]).toEqual([1, 4]);
    expect([...unseen([NaN, NaN])]).toEqual([1, 1]);
    // under --judge-output a tensor that moves none of the judged outputs keeps the floor
    expect([...unseen([4, NaN, 1], true)]).toEqual([4, 1e-30, 1]);
  });

  it('synthetic inputs run an STFT front end that needs ≥ 512 samples; its mel filterbank zeros stay exact', async () => {
    const model = await write('stft.onnx', stftMelModel());
    const r = await compressModel(model, join(dir, 'stft.nnm'));
    expect(r.quality).toMatchObject({ checked: true, passed: true, synthetic: true });
    const zeros = (x: Float32Array): number => x.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
    await decompressArchive(join(dir, 'stft.nnm'), join(dir, 'stft.back.onnx'));
    const [src, back] = [openModel(model), openModel(join(dir, 'stft.back.onnx'))];
    for (const t of src.tensors) {
      const x = src.read(t.key);
      const y = back.read(t.key);
      for (let i = 0; i < x.length; i++) if (x[i] === 0) expect(y[i]).toBe(0);
      expect(zeros(y)).toBeGreaterThanOrEqual(zeros(x));
    }
    src.close();
    back.close();
  });

  it('exact zeros decode to 0.0 in every mode', async () => {
    const model = await write('sparse2.onnx', sparseModel());
    const modes = [{}, { range: 'layer' as const }, { relStep: 0.5 }, { codec: 'webp', quality: 80 }, { targetSnr: 20 }];
    const src = openModel(model);
    for (const [k, o] of modes.entries()) {
      const out = join(dir, `z${k}.nnm`);
      await compressModel(model, out, { ...o, check: false });
      const a = new Archive(out);
      const values = await decodeAllTensors(a);
      a.close();
      for (const [key, v] of values) {
        const x = src.read(key);
        for (let i = 0; i < x.length; i++) if (x[i] === 0) expect(v[i], `${JSON.stringify(o)} ${key}[${i}]`).toBe(0);
      }
    }
    src.close();
  });
});

describe('the caveat of a suggested budget', () => {
  it('names few held-back samples, or a pass within 0.02 of the floor; nothing on a firm pass', () => {
    const q = (samples: number, fidelity: number) => ({
      checked: true,
      passed: fidelity >= 0.9,
      samples,
      fidelity,
      minFidelity: 0.9,
    });
    expect(fewHeldBack(q(2, 0.8), q(2, 0.95))).toMatch(/judged on 2 held-back samples: near the floor/);
    expect(fewHeldBack(q(4, 0.87), q(4, 0.9006))).toMatch(/passed within 0.02 of the floor, on 4 held-back samples/);
    expect(fewHeldBack(q(4, 0.87), q(4, 0.95))).toBe('');
    expect(fewHeldBack(q(16, 0.87))).toBe('');
  });
});
