/**
 * An archive read from a byte source (bytes in memory, a URL with Range requests) on any platform: the
 * ZIP directory with the same checks as the Node file reader (zip-directory.ts), the manifest through the
 * one validator (check.ts), every entry verified against the manifest's sha256 before it is used (the
 * manifest itself against its CRC-32), and tensors through the one decoder (decode.ts). The platform brings a DecodeBackend.
 */

import { CorruptArchiveError, OptionError } from '../errors.js';
import { concatBytes } from '../io/bytes.js';
import type { DecodeBackend } from './backend.js';
import { parseManifest } from './check.js';
import { type EntrySource, decodeRecord, halfDecoder, sharedValues } from './decode.js';
import {
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  codedParts,
  packMembers,
  recordEntries,
  skeletonContent,
  skeletonEntries,
  type Manifest,
  type TensorRecord,
} from './manifest.js';
import type { ByteSource, FetchStats } from './source.js';
import {
  type CentralRecord,
  type EndRecord,
  LOCAL_HEADER_BYTES,
  MAX_EOCD_SEARCH,
  checkEnd,
  crc32,
  findEnd,
  indexDirectory,
  localDataStart,
  noEndReason,
  zip64End,
} from './zip-directory.js';

/**
 * An entry's bytes as stored in the ZIP: inflated, size checked, and CRC-32 checked unless `crc` is false (an
 * entry whose sha256 the manifest lists is checked against that instead: the CRC-32 would be a second,
 * weaker digest of the same bytes, computed in JavaScript).
 */
async function readStored(
  src: ByteSource,
  backend: DecodeBackend,
  e: CentralRecord,
  crc: boolean,
  tensor?: string,
): Promise<Uint8Array> {
  const fail = (message: string): never => {
    throw new CorruptArchiveError(message, { file: src.name, tensor });
  };
  // local header + name + data in one read (nnmedia writes no extra field; another writer's is read separately)
  let chunk = await src.read(e.offset, Math.min(src.size - e.offset, LOCAL_HEADER_BYTES + e.nameLength + e.compressedSize));
  const start = localDataStart(e, chunk.subarray(0, LOCAL_HEADER_BYTES), fail) - e.offset;
  if (start + e.compressedSize > chunk.length) chunk = await src.read(e.offset, start + e.compressedSize);
  const body = chunk.subarray(start, start + e.compressedSize);
  let data = body;
  if (e.method === 8) {
    try {
      data = await backend.inflateRaw(body, e.size);
    } catch (err) {
      fail(`entry ${e.name}: cannot inflate (${(err as Error).message})`);
    }
  }
  if (data.length !== e.size) fail(`entry ${e.name}: size ${data.length} differs from the recorded ${e.size}`);
  if (crc && crc32(data) !== e.crc) fail(`entry ${e.name}: CRC-32 mismatch (corrupt)`);
  return data;
}

/** An archive's directory and checked manifest over a byte source; entries are fetched when asked for. */
export class SourceArchive implements EntrySource {
  private constructor(
    private readonly src: ByteSource,
    private readonly backend: DecodeBackend,
    private readonly directory: Map<string, CentralRecord>,
    readonly manifest: Manifest,
  ) {}

  get file(): string | undefined {
    return this.src.name;
  }

  static async open(src: ByteSource, backend: DecodeBackend): Promise<SourceArchive> {
    const fail = (message: string): never => {
      throw new CorruptArchiveError(message, { file: src.name });
    };
    // the reason a file without an end record is refused needs its first bytes: read only on that path
    const head = async (): Promise<Uint8Array> => src.read(0, Math.min(4, src.size));
    if (src.size < 22) fail(noEndReason(src.size, await head()));
    const tailLen = Math.min(src.size, MAX_EOCD_SEARCH);
    const tail = await src.read(src.size - tailLen, tailLen);
    const noEnd = new Error('no end record');
    let end: EndRecord;
    try {
      end = findEnd(tail, src.size - tailLen, () => {
        throw noEnd;
      });
    } catch (e) {
      if (e !== noEnd) throw e;
      return fail(noEndReason(src.size, await head(), tail));
    }
    if (end.zip64At !== undefined) zip64End(end, await src.read(end.zip64At, 56), fail);
    checkEnd(end, fail);
    const directory = indexDirectory(await src.read(end.cdOffset, end.cdSize), end, fail);
    const info = directory.get(MANIFEST_NAME);
    if (!info) fail(`no ${MANIFEST_NAME}: not an nnmedia archive`);
    if (info!.size > MAX_MANIFEST_BYTES) fail(`manifest of ${info!.size} bytes is too large`);
    // the manifest has no sha256 of its own: its CRC-32 is its check
    const manifest = parseManifest(await readStored(src, backend, info!, true), src.name);
    for (const name of Object.keys(manifest.entries))
      if (!directory.has(name)) fail(`entry ${name} listed in the manifest is missing`);
    return new SourceArchive(src, backend, directory, manifest);
  }

  /** Packs read so far (each fetched and checked once). */
  private readonly packs = new Map<string, Promise<Uint8Array>>();

  /** An entry's bytes, checked against the manifest's sha256 and size (a pack member: its pack's). */
  async entry(name: string, tensor?: string): Promise<Uint8Array> {
    const place = Object.hasOwn(this.manifest.entries, name) ? undefined : packMembers(this.manifest).get(name);
    if (place) {
      let pack = this.packs.get(place.pack);
      if (!pack) {
        pack = this.zipEntry(place.pack, tensor);
        this.packs.set(place.pack, pack);
        // a failed read is not cached: the next asks again
        pack.catch(() => this.packs.delete(place.pack));
      }
      const data = (await pack).subarray(place.offset, place.offset + place.bytes);
      if (place.size === undefined) return data;
      // a compressed member (the ranges every plane reads, the kept tensors, the skeleton) is decompressed once
      let content = this.inflated.get(name);
      if (!content) {
        content = this.inflateMember(name, place.pack, data, place.size, tensor);
        this.inflated.set(name, content);
        content.catch(() => this.inflated.delete(name));
      }
      return content;
    }
    return this.zipEntry(name, tensor);
  }

  /** Compressed pack members decompressed so far. */
  private readonly inflated = new Map<string, Promise<Uint8Array>>();

  private async inflateMember(name: string, pack: string, data: Uint8Array, size: number, tensor?: string): Promise<Uint8Array> {
    const bad = (message: string): never => {
      throw new CorruptArchiveError(`entry ${name} in ${pack}: ${message} (corrupt)`, { file: this.file, tensor });
    };
    let out: Uint8Array;
    try {
      out = await this.backend.unbrotli(data, size);
    } catch (e) {
      return bad(`cannot decompress (${(e as Error).message})`);
    }
    return out.length === size ? out : bad(`decompresses to ${out.length} bytes, not the recorded ${size}`);
  }

  private async zipEntry(name: string, tensor?: string): Promise<Uint8Array> {
    const want = Object.hasOwn(this.manifest.entries, name) ? this.manifest.entries[name] : undefined;
    if (!want) throw new CorruptArchiveError(`entry ${name} is not listed in the manifest`, { file: this.file, tensor });
    const e = this.directory.get(name);
    if (!e) throw new CorruptArchiveError(`missing entry ${name}`, { file: this.file, tensor });
    const data = await readStored(this.src, this.backend, e, false, tensor);
    const got = await this.backend.sha256(data);
    if (got !== want.sha256 || data.length !== want.bytes)
      throw new CorruptArchiveError(`entry ${name}: ${got !== want.sha256 ? 'sha256' : 'size'} mismatch (corrupt)`, {
        file: this.file,
        tensor,
      });
    return data;
  }

  get stats(): FetchStats {
    return this.src.stats;
  }
}

export interface DecodedArchive {
  manifest: Manifest;
  /** Restored tensors by key (compressed ones, and kept ones stored as float16), in the file's memory order. */
  tensors: Map<string, Float32Array>;
  /** The model with compressed tensors' data taken out (tensors kept exact are inside); absent when only some tensors were asked for. */
  skeleton?: Uint8Array;
  /** Requests and bytes it took (a URL read with Range requests fetches only what was asked for). */
  fetch: FetchStats;
}

export interface DecodeOptions {
  /** Decode only these tensors (names or keys); all by default. The model skeleton is fetched only for all. */
  tensors?: readonly string[];
}

/** The verified entries an archive's tensors are decoded from: each checked against the manifest before it is here. */
export interface VerifiedEntries extends EntrySource {
  /** Every entry the decode needs, by name (ZIP entries and pack members), already verified. */
  readonly bytes: ReadonlyMap<string, Uint8Array>;
}

/**
 * How the coded tensors of one decode are turned into values: `decode` gets them in the manifest's order (each
 * tensor once: duplicates are resolved after) and answers their values in the same order, or rejects with the
 * error the first failing tensor in that order gives (as decoding them one by one would). `close` is called
 * when the decode ends, whether it got to `decode` or failed before (a checksum).
 */
export interface TensorDecoding {
  decode(tensors: readonly TensorRecord[], entries: VerifiedEntries): Promise<Float32Array[]>;
  close(): void;
}

/**
 * Made as soon as the manifest is read and the tensors to decode are known (before any entry is fetched and
 * verified), so that what it prepares (a browser's worker pool) starts while the entries arrive.
 */
export type TensorDecodingFactory = (manifest: Manifest, tensors: readonly TensorRecord[]) => TensorDecoding;

/** The tensors one after another on this thread, through the backend's code decoder. */
export const sequentialDecoding =
  (backend: DecodeBackend): TensorDecodingFactory =>
  () => ({
    async decode(tensors, entries) {
      const out: Float32Array[] = [];
      for (const t of tensors) out.push(await decodeRecord(t, entries, backend.decodeCodes));
      return out;
    },
    close() {},
  });

/**
 * Reads an archive from a byte source, verifies the checksum of every entry it
 * needs before decoding any, and decodes the tensors through the backend.
 */
export async function decodeArchiveSource(
  src: ByteSource,
  backend: DecodeBackend,
  options: DecodeOptions = {},
  decoding: TensorDecodingFactory = sequentialDecoding(backend),
): Promise<DecodedArchive> {
  const archive = await SourceArchive.open(src, backend);
  const { manifest } = archive;
  const asked = options.tensors;
  const named = (t: { name: string; key: string }): boolean => !asked || asked.includes(t.name) || asked.includes(t.key);
  if (asked)
    for (const n of asked)
      if (!manifest.tensors.some((t) => (t.layout || t.half) && (t.name === n || t.key === n)))
        throw new OptionError(`no restored tensor named ${JSON.stringify(n)} in the archive`);
  const wanted = manifest.tensors.filter((t) => t.layout && named(t));
  const byKey = new Map(manifest.tensors.map((t) => [t.key, t]));
  // a duplicate is decoded from the tensor it is the same as (checkManifest made sure that one exists)
  const decodeSet = [...new Set(wanted.map((t) => (t.sameAs ? byKey.get(t.sameAs)! : t)))];
  const halves = manifest.tensors.filter((t) => t.half && named(t));
  const skeletonParts = skeletonEntries(manifest);
  // each entry with the (first) tensor it is read for, named in an error as the Node decoder names it
  const names = new Map<string, string | undefined>();
  const add = (name: string, tensor?: string): void => {
    if (!names.has(name)) names.set(name, tensor);
  };
  for (const t of decodeSet) for (const { record } of codedParts(t)) for (const n of recordEntries(record)) add(n, t.name);
  for (const t of halves) add(t.half!.entry, t.name);
  if (!asked) for (const p of skeletonParts) add(p);
  const tensors = new Map<string, Float32Array>();
  const entries = new Map<string, Uint8Array>();
  const verified: VerifiedEntries = {
    file: archive.file,
    bytes: entries,
    entry: (name, tensor) => {
      const data = entries.get(name);
      if (!data) throw new CorruptArchiveError(`entry ${name} was not verified`, { file: archive.file, tensor });
      return data;
    },
  };
  const coded = decoding(manifest, decodeSet);
  try {
    // every checksum first (the entries are in memory anyway): nothing is decoded from a corrupt archive
    for (const [name, tensor] of names) entries.set(name, await archive.entry(name, tensor));
    const values = await coded.decode(decodeSet, verified);
    decodeSet.forEach((t, i) => tensors.set(t.key, values[i]));
  } finally {
    coded.close();
  }
  for (const t of wanted) if (t.sameAs) tensors.set(t.key, sharedValues(t, tensors.get(t.sameAs)!));
  for (const t of decodeSet) if (!wanted.includes(t)) tensors.delete(t.key);
  const half = halfDecoder(verified);
  for (const t of halves) tensors.set(t.key, await half(t));
  const part = (name: string): Uint8Array =>
    skeletonContent(name, entries.get(name)!, manifest.source.bytes, (message) => {
      throw new CorruptArchiveError(message, { file: archive.file });
    });
  const skeleton = asked
    ? undefined
    : skeletonParts.length === 1
      ? part(manifest.skeleton)
      : concatBytes(skeletonParts.map(part));
  return { manifest, tensors, skeleton, fetch: archive.stats };
}
