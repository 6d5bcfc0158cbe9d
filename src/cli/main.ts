#!/usr/bin/env node
/** The nnmedia command line: argument parsing and printing only; the work is in the library. */

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, extname, isAbsolute, join, relative } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { InterruptedError, IoError, OptionError, QualityError } from '../errors.js';
import { detectFormat, openModel, selfContainedModel } from '../formats/registry.js';
import { compressModel } from '../pipeline/compress.js';
import { decompressArchive } from '../pipeline/decompress.js';
import { OPTION_TABLE, loadConfigFile, type CompressOptions, type ConfigFile, type OptionSpec } from '../pipeline/options.js';
import { holdFolder, releaseFolder, removePendingTemps } from '../io/atomic.js';
import { VERSION } from '../version.js';
import { fileKind, inspectPath } from './inspect.js';
import { printCodecs } from './codecs.js';
import { evaluateArchive, type EvaluationReport } from '../report/evaluate.js';
import { PACKAGE_ROOT, detectTask, taskByName, type TaskOptions } from '../eval/tasks/index.js';
import { formatTable, printable } from './table.js';
import {
  checkRequirements,
  parseRequirement,
  requirementFailure,
  requirementLines,
  type Requirement,
  type RequirementResult,
} from './require.js';
import { serveViewer } from './view.js';
import { loadOrt, onOrtFallback, ortBackend } from '../runtime/optional.js';
import { jsonPrinted, jsonReplacer, printJson } from './json-out.js';
import { errorLine, exitStatus, isCommanderError, toNnmediaError } from './errors.js';
import { helpConfiguration, defaultText, helpEpilogue, helpGroupOf, showDefault } from './help.js';
import { clearProgress, logLine, progress } from './progress.js';
import { archiveTotals, bitsPerWeightText, count, sizeChange, summaryLines } from './totals.js';
import {
  CALIBRATION_OPTIONS,
  calibrationSpecFromFlags,
  mergeCalibrationSpecs,
  type CalibrationFlags,
} from '../calibration/options.js';
import { buildCalibrationSet, type CalibrationSpec } from '../calibration/set.js';
import { outputsTask } from '../eval/tasks/outputs.js';
import { checkJudgedOutputs, describeQuality, oneSidedWarning } from '../pipeline/gate.js';

const DEFAULT_MODEL = join(PACKAGE_ROOT, 'models/silero_vad_v4.onnx');

function int(name: string, min = -Infinity, max = Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`Expected integer for ${name} but received ${JSON.stringify(v)}`);
    if (n < min || n > max)
      throw new InvalidArgumentError(
        `Expected ${name} ${max === Infinity ? `of at least ${min}` : `between ${min} and ${max}`} but received ${JSON.stringify(v)}`,
      );
    return n;
  };
}

/** `-o`'s file: `-` names no file here (archives and models are written atomically to a file, never to stdout). */
function outputFile(v: string): string {
  if (v === '-')
    throw new InvalidArgumentError(
      'nnmedia writes to a file (atomically), not to standard output: name a file (./- for one called "-")',
    );
  return v;
}

/** Says when `--jobs` asks for more workers than the machine has cores: they are no faster, and each holds its own working memory. */
function noteJobs(jobs: number | undefined): void {
  const cores = availableParallelism();
  if (jobs !== undefined && jobs > cores)
    logLine(
      `--jobs ${jobs} on ${cores} core${cores === 1 ? '' : 's'}: jobs beyond the cores run no faster, and each holds its own working memory (up to ~0.3 GB for a large tensor)`,
    );
}

/** Parsed flags: every compress option's flag comes from OPTION_TABLE (read by key); these are the CLI's own. */
interface FlagValues {
  [flag: string]: unknown;
  config?: string;
  task?: string;
  json?: boolean;
  force?: boolean;
  jobs?: number;
}

interface CompressFlags extends FlagValues {
  output: string;
}

/** The library options from the parsed flags: each table option under its own key, then the CLI-only ones. */
async function compressOptionsFrom(f: CompressFlags, model: string): Promise<CompressOptions> {
  // a task (vad, ocr, outputs) judges models that run: ONNX. A safetensors file under --target-bpw is allocated
  // by its weight error alone (it was read whole and handed to onnxruntime here, which failed)
  const runs = detectFormat(model) === 'onnx';
  if (f.maxLoss !== undefined && !runs)
    throw new OptionError(`--max-loss measures a task loss by running the model; a ${detectFormat(model)} file cannot be run`);
  const needsTask = runs && (f.maxLoss !== undefined || f.targetBpw !== undefined);
  const task = needsTask ? await resolveTask(f.task ?? 'auto', modelForRunning(model), undefined, model) : undefined;
  const fromTable = Object.fromEntries(
    OPTION_TABLE.filter((o) => o.flags).map((o) => [o.key, f[attributeOf(o.flags![0].flag)]]),
  ) as CompressOptions;
  const log = logLine;
  const config = f.config ? configFile(f.config) : undefined;
  return {
    ...fromTable,
    task,
    // (with --json too: messages go to stderr, the one JSON object to stdout)
    onLog: log,
    // detail of rate control, for whoever debugs it
    onDebug: process.env.NNMEDIA_DEBUG ? log : undefined,
    rules: config?.rules,
    force: f.force,
    // the config file's calibration settings, the flags over them (paths and --input add up)
    calibration: mergeCalibrationSpecs(config?.calibration, calibrationSpecFromFlags(f as CalibrationFlags)),
  };
}

/**
 * A config file (`--config`, compress and eval), its calibration paths as a flag would name them where they lie under
 * the working folder: the record (and so the archive) does not depend on where the project is checked out.
 */
function configFile(file: string): ConfigFile {
  const config = loadConfigFile(file);
  if (!config.calibration) return config;
  const asGiven = (p: string): string => {
    const inside = relative(process.cwd(), p);
    return inside && !inside.startsWith('..') && !isAbsolute(inside) ? inside : p;
  };
  return { ...config, calibration: { ...config.calibration, paths: config.calibration.paths.map(asGiven) } };
}

/**
 * A model's bytes for onnxruntime: the file, or with its external data placed inline (onnxruntime looks for
 * external data relative to the working directory when a model comes from memory).
 */
function modelForRunning(file: string): Uint8Array {
  const reader = openModel(file);
  try {
    return selfContainedModel(file, reader);
  } finally {
    reader.close();
  }
}

/** The calibration flags (`--calibration PATH` and the preprocessing), on compress and eval. */
function addCalibrationOptions(cmd: Command): Command {
  for (const o of CALIBRATION_OPTIONS)
    if (o.repeatable) cmd.option(o.flags, o.description, (v: string, prev: string[] = []) => [...prev, v]);
    else cmd.option(o.flags, o.description);
  return cmd;
}

/** The key commander stores a flag's value under (`--no-half-kept` → halfKept). */
function attributeOf(flag: string): string {
  return new Option(flag).attributeName();
}

/** The commander option of a table flag, with its argument parser. */
function flagOption(spec: OptionSpec, flag: { flag: string; help: string }): Option {
  const o = new Option(flag.flag, flag.help).helpGroup(helpGroupOf(spec.key));
  if (!flag.flag.startsWith('--no-')) showDefault(o, defaultText(spec, flag.help));
  const arg = spec.argument;
  if (arg === 'int') o.argParser(int(spec.key));
  else if (arg === 'number') o.argParser(Number);
  else if (arg === 'block')
    o.argParser((v: string) => {
      const m = /^(\d+)x(\d+)$/i.exec(v);
      if (!m) throw new InvalidArgumentError(`Expected RxC (e.g. 64x64) for block but received ${JSON.stringify(v)}`);
      return [Number(m[1]), Number(m[2])];
    });
  else if (arg) {
    o.choices(arg.choices);
    if (arg.numeric) o.argParser(Number);
  }
  return o;
}

function num(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return v > 0 ? '∞' : String(v);
  if (v !== 0 && Math.abs(v) < 10 ** -digits) return v.toExponential(2);
  return v.toFixed(digits);
}

export function printEvaluation(r: EvaluationReport): void {
  const rows = r.tensors.map((t) => [
    (t.name.length > 44 ? '…' + t.name.slice(-43) : t.name) + (t.scope ? ` (${t.scope})` : ''),
    t.role,
    t.shape.join('×'),
    t.sameAs ? (t.transposed ? '(dup, transposed)' : '(dup)') : t.codec,
    String(t.bytes),
    num(t.bitsPerWeight, 2),
    num(t.stats.maxAbs, 5),
    num(t.stats.rmse, 6),
    num(t.stats.snrDb, 1),
  ]);
  console.log(formatTable(['tensor', 'role', 'shape', 'codec', 'bytes', 'bits/w', 'max abs', 'RMSE', 'SNR dB'], rows));
  console.log('');
  const summary = [
    ['model', `${r.model} (${count(r.modelBytes)} bytes)`],
    ['archive', `${r.archive} (${count(r.archiveBytes)} bytes, ${sizeChange(r.ratio)})`],
    ['compressed weights', `${count(r.compressedWeights)} (kept: ${count(r.keptWeights)})`],
    ['bits per weight', `${bitsPerWeightText(r)} (all archive bytes × 8 / compressed weights)`],
  ];
  if (r.task) {
    for (const m of r.task.baseline) summary.push([`original ${m.label}`, num(m.value, 4)]);
    for (const m of r.task.metrics) summary.push([`${r.task.name}: ${m.label}`, num(m.value, 4)]);
  }
  console.log(formatTable(['', ''], summary, { header: false }));
}

async function resolveTask(name: string, model: Uint8Array, limit?: number, file?: string, options: TaskOptions = {}) {
  if (name === 'none') return undefined;
  const resolved = name === 'auto' ? await detectTask(model, file) : name;
  return resolved ? taskByName(resolved, { limit, ...options }) : undefined;
}

/**
 * eval without calibration data: `--resize-kernel` and `--audio-rate` set the second preprocessing of the built-in
 * tasks (ocr lines resized with another kernel; vad at 8 kHz), the judges' check that a result is no accident of
 * one preprocessing (docs/judges.md).
 */
function builtInTaskOptions(spec: CalibrationSpec): TaskOptions {
  const rate = spec.audio?.rate;
  if (rate !== undefined && rate !== 8000 && rate !== 16000)
    throw new OptionError(`Expected 8000 or 16000 for --audio-rate (the vad task) but received ${rate}`);
  return { resize: spec.image?.kernel, sampleRate: rate };
}

function addCompressOptions(cmd: Command): Command {
  for (const spec of OPTION_TABLE) for (const flag of spec.flags ?? []) cmd.addOption(flagOption(spec, flag));
  addCalibrationOptions(cmd);
  return cmd
    .option(
      '--config <file>',
      'a JSON file of per-tensor rules and calibration settings: {"tensors": [{"match": "glob", "role": …, "codec": …}], "calibration": {"paths": […], "image": {…}, …}} (either or both; flags override it)',
    )
    .addOption(
      new Option('--task <name>', 'task evaluator for --max-loss and calibration')
        .choices(['auto', 'vad', 'ocr', 'none'])
        .default('auto')
        .helpGroup(helpGroupOf('maxLoss')),
    );
}

export function buildProgram(): Command {
  // set before any subcommand is made, so every one inherits them: errors come back to main() (one line, one
  // exit status) instead of commander printing its own and exiting; the help shows the options' defaults
  const program = new Command('nnmedia')
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .configureHelp(helpConfiguration)
    .version(VERSION)
    .description('Compress neural-network weights as images, video and audio with real codecs, and back.')
    .showHelpAfterError(false)
    .addHelpText('after', helpEpilogue());

  addCompressOptions(
    program
      .command('compress <model>')
      .description('model (.onnx, .safetensors) → .nnm archive')
      .requiredOption('-o, --output <file>', 'output archive (.nnm)', outputFile)
      .option(
        '--force',
        'replace an existing output file (never the input); also keep an archive the quality gate refused (exit 7 all the same)',
      )
      .option('--json', 'print a JSON summary'),
  ).action(async (model: string, f: CompressFlags) => {
    noteJobs(f.jobs as number | undefined);
    const bar = progress(!f.json);
    const r = await compressModel(model, f.output, {
      ...(await compressOptionsFrom(f, model)),
      onProgress: bar.onProgress,
    }).finally(bar.stop);
    const t = archiveTotals(r.manifest, r.archiveBytes);
    if (f.json)
      printJson(
        JSON.stringify({
          output: f.output,
          archiveBytes: r.archiveBytes,
          sourceBytes: t.sourceBytes,
          ratio: t.ratio,
          compressedWeights: r.compressedWeights,
          bitsPerWeight: r.bitsPerWeight,
          tensors: t.compressedTensors,
          keptTensors: t.keptExact + t.keptHalf,
          keptWeights: t.keptWeights,
          quality: r.quality,
          ...(r.manifest.options.escalated ? { escalated: r.manifest.options.escalated } : {}),
        }),
      );
    else {
      // paths and tensor names shown printable: a newline in a file name split the one-line report
      const say = (line: string): void => console.log(printable(line));
      for (const line of summaryLines(f.output, t, basename(model))) say(line);
      const q = r.quality;
      if (q) say(`  ${describeQuality(q)}`);
      if (q?.synthetic) say('  (measured on SYNTHETIC inputs: give real ones with --calibration PATH)');
      const oneSided = q && oneSidedWarning(q);
      if (oneSided) say(`  weak evidence: ${oneSided}`);
      if (q?.untakenBranches?.length)
        say(`  branches the calibration never takes (their tensors unjudged by the gate): ${q.untakenBranches.join(', ')}`);
      const e = r.manifest.options.escalated as { fidelity?: number; bitsPerWeight?: number; by?: string } | undefined;
      if (e)
        console.log(
          `  escalated: the default 8-bit grid gave fidelity ${e.fidelity} at ${e.bitsPerWeight} bits/weight (${e.by === 'allocation' ? 'finer grids allocated across layers' : e.by} instead; --no-escalate: fail)`,
        );
    }
  });

  program
    .command('decompress <archive>')
    .description('.nnm archive → model in its original format')
    .requiredOption('-o, --output <file>', 'output model file', outputFile)
    .option('--force', 'replace an existing output file (never the original model the archive was made from)')
    .option('--jobs <n>', 'worker threads decoding tensors at once (default: cores)', int('jobs', 1))
    .option('--json', 'print a JSON summary')
    .action(async (archive: string, f: { output: string; jobs?: number; json?: boolean; force?: boolean }) => {
      noteJobs(f.jobs);
      const bar = progress(!f.json);
      const r = await decompressArchive(archive, f.output, { jobs: f.jobs, force: f.force, onProgress: bar.onProgress }).finally(
        bar.stop,
      );
      if (f.json) printJson(JSON.stringify({ output: f.output, ...r }));
      else {
        console.log(printable(`${f.output}: ${r.format} model, ${count(r.bytes)} bytes, restored from ${archive}`));
        if (r.externalData)
          console.log(
            printable(
              `  its weights in ${r.externalData.file} (${count(r.externalData.bytes)} bytes, external data: one ONNX file holds at most 2 GiB); keep the two together`,
            ),
          );
      }
      if (r.quality?.checked && r.quality.passed === false)
        process.stderr.write(
          `nnmedia decompress: warning: the quality gate refused this archive when it was made (${describeQuality(r.quality)}); it was kept with --force, and the restored model may not do its job\n`,
        );
    });

  program
    .command('inspect <file>')
    .description('per tensor: role, geometry, codec, bytes, bits/weight, error; then totals (an archive: checksums verified)')
    .option('--all', 'list every tensor, the kept ones too (default: summed up in one line)')
    .option('--json', 'print JSON (every tensor, and the totals)')
    .action(async (file: string, f: { json?: boolean; all?: boolean }) => {
      await inspectPath(file, { json: f.json, all: f.all });
    });

  addCalibrationOptions(program.command('eval <archive>'))
    .description('run the original and the reconstructed model on real data and report errors and the task metric')
    .requiredOption('-m, --model <file>', 'the original model (the one the archive was made from)')
    .addOption(
      new Option('--task <name>', 'task evaluator').choices(['auto', 'vad', 'ocr', 'isnet', 'outputs', 'none']).default('auto'),
    )
    .option('--limit <n>', 'evaluate only the first n samples (ocr, isnet)', int('limit', 1))
    .option('--config <file>', 'a compress config file: its "calibration" settings (flags override them)')
    .option('--json', 'print JSON')
    .option(
      '--require <bound>',
      "fail (exit 7) unless a measured value holds this bound: a task metric by its key, bitsPerWeight or ratio, e.g. 'agreement>=0.99' (quoted: the shell reads > and <); repeatable",
      parseRequirement,
    )
    .addHelpText(
      'after',
      "\nWithout --calibration, --resize-kernel resizes the ocr task's lines (e.g. nearest, bilinear) and --audio-rate 8000 runs the vad task at 8 kHz: a second preprocessing of the same data.",
    )
    .action(
      async (
        archive: string,
        f: {
          model: string;
          task: string;
          limit?: number;
          json?: boolean;
          require?: Requirement[];
          config?: string;
        } & CalibrationFlags,
      ) => {
        // a config file's calibration settings (its tensor rules are compress's), the flags over them
        const spec = mergeCalibrationSpecs(f.config ? configFile(f.config).calibration : undefined, calibrationSpecFromFlags(f));
        // a model without a graph (safetensors) cannot run: its tensors are compared, nothing else
        const format = detectFormat(f.model);
        const runs = format === 'onnx';
        if (!runs && (spec.paths.length || spec.outputs || !['auto', 'none'].includes(f.task)))
          throw new OptionError(
            `${spec.paths.length ? '--calibration' : spec.outputs ? '--judge-output' : `--task ${f.task}`} runs the model, and ${format} files hold no graph to run: eval compares their tensors`,
          );
        // a built-in task reads its own data: with calibration data or judged outputs eval compares outputs, and a
        // task named beside them would be silently replaced
        if ((spec.paths.length || spec.outputs) && !['auto', 'outputs'].includes(f.task))
          throw new OptionError(
            `--task ${f.task} ${f.task === 'none' ? 'measures no task' : 'runs on its own data'}, and ${spec.paths.length ? '--calibration' : '--judge-output'} compares the model's outputs (--task outputs): give one of the two`,
          );
        // calibration data given: the outputs of the original and the rebuilt model compared on it
        // --judge-output: those outputs compared, on the calibration data or synthetic inputs
        const outputs = spec.outputs ? checkJudgedOutputs(modelForRunning(f.model), spec.outputs, f.model) : undefined;
        const task = spec.paths.length
          ? outputsTask({ calibration: await buildCalibrationSet(modelForRunning(f.model), spec), outputs })
          : outputs
            ? outputsTask({ outputs })
            : runs
              ? await resolveTask(f.task, modelForRunning(f.model), f.limit, f.model, builtInTaskOptions(spec))
              : undefined;
        // --limit shortens the ocr and isnet tasks' lists of samples; elsewhere it is said, not silently dropped
        if (f.limit !== undefined && !(task && !spec.paths.length && ['ocr', 'isnet'].includes(task.name)))
          process.stderr.write(
            `nnmedia eval: --limit ${f.limit} ignored: it shortens the ocr and isnet tasks; ${spec.paths.length ? 'calibration data is evaluated whole' : `the ${task?.name ?? 'none'} task runs on all its data`}\n`,
          );
        const r = await evaluateArchive(archive, f.model, task);
        // a key eval did not measure is said after the report, not instead of it (the evaluation may take minutes)
        let required: RequirementResult[] | undefined;
        let unknownKey: unknown;
        try {
          required = f.require ? checkRequirements(r, f.require) : undefined;
        } catch (e) {
          unknownKey = e;
        }
        // the data and preprocessing the task ran on (a second preprocessing shows here)
        if (f.json)
          printJson(
            JSON.stringify(
              { ...r, ...(task ? { taskDescription: task.description } : {}), ...(required ? { requirements: required } : {}) },
              (_k, v) => (v === Infinity ? 'Infinity' : v),
            ),
          );
        else {
          printEvaluation(r);
          if (task) console.log(`\ntask: ${printable(task.description)}`);
          else if (!runs)
            console.log(`\ntask: none (${format} files hold no graph to run: the tensors above are what is compared)`);
          if (required) console.log(`\n${requirementLines(required).join('\n')}`);
        }
        if (unknownKey) throw unknownKey;
        const failure = required && requirementFailure(required, archive);
        if (failure) throw failure;
      },
    );

  addCompressOptions(
    program
      .command('demo [model]')
      .description('compress → decompress → evaluate the bundled default model (Silero VAD v4)')
      .option('--json', 'print JSON'),
  ).action(async (model: string | undefined, f: FlagValues) => {
    const input = model ?? DEFAULT_MODEL;
    await loadOrt('nnmedia demo (it runs the model before and after)'); // fail before any work
    // a kept folder, named in the output, so the printed paths still exist after the demo exits; a fresh one each
    // run, so that two demos at once (two terminals, CI jobs sharing /tmp) do not write over each other's files
    let dir: string;
    try {
      dir = mkdtempSync(join(tmpdir(), 'nnmedia-demo-'));
    } catch (e) {
      // the folder comes from TMPDIR (or /tmp): say so, not just "no such file"
      const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new IoError(
        `the demo cannot make its folder in ${tmpdir()} (${why})${process.env.TMPDIR ? ', which TMPDIR names' : ''}: set TMPDIR to a writable folder`,
        { file: tmpdir() },
        e,
      );
    }
    const archive = join(dir, 'model.nnm');
    const restored = join(dir, `restored${extname(input) || '.onnx'}`);
    // a demo that fails or is interrupted (the signal handler's removePendingTemps) leaves no folder behind
    holdFolder(dir);
    let t0 = 0;
    let t1 = 0;
    let t2 = 0;
    let r: Awaited<ReturnType<typeof evaluateArchive>>;
    try {
      t0 = performance.now();
      const bar = progress(!f.json);
      await compressModel(input, archive, {
        ...(await compressOptionsFrom({ ...f, output: archive }, input)),
        // a fresh folder: nothing to replace; and an archive the gate refuses is not kept (the folder goes with it),
        // so the refusal must not say "kept (--force)"
        force: false,
        onProgress: bar.onProgress,
      }).finally(bar.stop);
      t1 = performance.now();
      await decompressArchive(archive, restored, { jobs: f.jobs, force: true });
      t2 = performance.now();
      const task = await resolveTask('auto', modelForRunning(input), undefined, input);
      r = await evaluateArchive(archive, input, task);
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      // the demo keeps no refused archive (its folder goes with it): the advice to keep one is for `compress`
      if (e instanceof QualityError && !e.details.kept)
        e.message = e.message.replace(
          ', or --force to keep it',
          '; the demo keeps no refused archive (`nnmedia compress … --force` keeps one)',
        );
      throw e;
    } finally {
      releaseFolder(dir); // kept from here: the output names it
    }
    if (f.json) printJson(JSON.stringify({ ...r, restored }, (_k, v) => (v === Infinity ? 'Infinity' : v)));
    else {
      printEvaluation(r);
      console.log(
        `\ncompress ${(t1 - t0).toFixed(0)} ms, decompress ${(t2 - t1).toFixed(0)} ms; restored model ${count(statSync(restored).size)} bytes, loads and runs in ${ortBackend() ?? 'onnxruntime'}`,
      );
      console.log(
        `archive and restored model kept in ${dir}/ (model.nnm, ${basename(restored)}); try: nnmedia view ${shellWord(archive)}`,
      );
    }
  });

  program
    .command('view <file>')
    .description('serve a local page that shows each layer as its picture, with histograms, bits/weight and errors')
    .option('--port <n>', 'port on 127.0.0.1 (default: any free port)', int('port', 0, 65535))
    .option('--plot <png>', 'a rate–distortion plot from `npm run bench` to show too')
    .option('-m, --model <file>', "the original model: show each layer's error map (automatic when a model is viewed)")
    .action(async (file: string, f: { port?: number; plot?: string; model?: string }) => {
      let archive = file;
      let model = f.model;
      if (fileKind(file) === 'model') {
        model = file;
        const dir = mkdtempSync(join(tmpdir(), 'nnmedia-view-'));
        archive = join(dir, 'model.nnm');
        process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
        process.stderr.write(
          `nnmedia view: compressing ${basename(file)} with the default options first (compress it yourself to choose them, then view the archive)\n`,
        );
        const r = await compressModel(file, archive, {});
        const t = archiveTotals(r.manifest, r.archiveBytes);
        process.stderr.write(
          `nnmedia view: ${bitsPerWeightText(t)} bits/weight${r.quality ? `; ${describeQuality(r.quality)}` : ''}\n`,
        );
      }
      const { url } = await serveViewer(archive, f.port, { plot: f.plot, model });
      console.log(`nnmedia view: ${url} (Ctrl-C to stop)`);
      serving = true;
      await new Promise(() => {});
    });

  program
    .command('codecs')
    .description('list the codecs: medium, code bits they carry, lossless mode, quality scale, and what they are')
    .action(printCodecs);
  return program;
}

/** Set once `view` serves: Ctrl-C then stops the server, which is how it is meant to end. */
let serving = false;

/** The subcommand being run, for the usage hint of an option error. */
function commandOf(argv: readonly string[], program: Command): string | undefined {
  const names = new Set(program.commands.map((c) => c.name()));
  return argv.slice(2).find((a) => names.has(a));
}

export async function main(argv: string[]): Promise<number> {
  const onSignal = (signal: NodeJS.Signals): void => {
    clearProgress();
    removePendingTemps();
    if (serving) {
      process.stderr.write('nnmedia view: stopped\n');
      process.exit(0);
    }
    const e = new InterruptedError(`interrupted; no output written (${signal === 'SIGINT' ? 'Ctrl-C, SIGINT' : signal})`);
    try {
      process.stderr.write(`${errorLine(e)}\n`); // (after SIGHUP the terminal may be gone)
    } catch {
      /* nowhere to say it */
    }
    process.exit(exitStatus(e.code, signal));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // the terminal closed (ssh dropped): as SIGTERM, the temporary outputs removed (they were left, exit 129)
  process.once('SIGHUP', onSignal);
  // `nnmedia inspect … | head`: the reader went away; that is not an error of ours
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') {
      removePendingTemps();
      process.exit(0);
    }
  });
  // `nnmedia compress … 2>&1 | head -1`: the log's reader went away; the work goes on, its messages are dropped
  // (an unhandled EPIPE crashed the run and left its temporary file)
  process.stderr.on('error', () => undefined);
  const program = buildProgram();
  // models run on onnxruntime-web where onnxruntime-node is not installed: said once, on stderr
  onOrtFallback((m) => logLine(`note: ${m}`));
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    // help or version asked for: printed already
    if (isCommanderError(e) && (e.code === 'commander.helpDisplayed' || e.code === 'commander.version')) return 0;
    // `nnmedia help [command]`: the help asked for, printed (commander ends it as it ends a missing command)
    if (
      isCommanderError(e) &&
      e.code === 'commander.help' &&
      argv[2] === 'help' &&
      (argv[3] === undefined || program.commands.some((c) => c.name() === argv[3]))
    )
      return 0;
    clearProgress();
    removePendingTemps();
    // no command given: commander printed the commands to stderr; a usage error all the same
    const err =
      isCommanderError(e) && e.code === 'commander.help'
        ? new OptionError(
            argv[2] === 'help'
              ? `unknown command ${JSON.stringify(argv[3])} (commands: ${program.commands.map((c) => c.name()).join(', ')})`
              : 'no command given (see: nnmedia --help)',
          )
        : toNnmediaError(e, commandOf(argv, program));
    process.stderr.write(`${errorLine(err)}\n`);
    // --json: a script reads the failure on stdout too (a refused budget's fidelity, the smallest passing size)
    // (not after a result already printed: `eval --json --require` prints its report, then fails; one object on stdout)
    if (argv.slice(2).includes('--json') && !jsonPrinted())
      printJson(
        JSON.stringify(
          {
            error: {
              code: err.code,
              message: err.message,
              ...(err.file !== undefined ? { file: err.file } : {}),
              ...(err.tensor !== undefined ? { tensor: err.tensor } : {}),
              ...(err instanceof QualityError ? err.details : {}),
            },
          },
          jsonReplacer,
        ),
      );
    if (process.env.NNMEDIA_DEBUG) process.stderr.write(`${(err.cause as Error | undefined)?.stack ?? err.stack}\n`);
    return exitStatus(err.code);
  }
}

/** A path as one word of a POSIX shell command line, quoted only where it needs to be (a TMPDIR with spaces). */
function shellWord(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
}

main(process.argv).then((code) => {
  process.exitCode = code;
});
