/**
 * The archive on Node: a file read by offset (ZipReader: directory; CRC-32 of the manifest), its manifest
 * through the one validator, entries checked against the manifest's sha256 when read (decoding reads an
 * entry once and checks it then; `checkEntry` for inspect adds the CRC-32); and Node's side of the platform seam
 * (sha256 and inflate from node:crypto and node:zlib, codes through the codec registry's decoders).
 */

import { createHash } from 'node:crypto';
import { brotliDecompressSync, inflateRawSync } from 'node:zlib';
import { getCodec } from '../codecs/registry.js';
import { CorruptArchiveError } from '../errors.js';
import { concatBytes } from '../io/bytes.js';
import type { DecodeBackend } from './backend.js';
import { parseManifest } from './check.js';
import type { CodeDecoder, EntrySource } from './decode.js';
import {
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  RANGES_ENTRY,
  modelEntries,
  memberContent,
  packMembers,
  skeletonContent,
  skeletonEntries,
  type Manifest,
} from './manifest.js';
import { ZipReader } from './zip.js';

/** Codes of a media entry through the Node codec of its name (sharp/libvips, ffmpeg, zstd). */
export const decodeCodesNode: CodeDecoder = (codec, bytes, expected) => getCodec(codec.name).decode(bytes, expected);

const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Node's side of the platform seam. */
export const nodeBackend: DecodeBackend = {
  sha256: async (data) => sha256Hex(data),
  inflateRaw: async (data, size) => inflateRawSync(data, { maxOutputLength: Math.max(1, size) }),
  unbrotli: async (data, size) => brotliDecompressSync(data, { maxOutputLength: Math.max(1, size) }),
  decodeCodes: decodeCodesNode,
};

/** An opened archive file: manifest parsed and checked, entries verified on read. */
export class Archive implements EntrySource {
  readonly manifest: Manifest;
  private readonly zip: ZipReader;

  constructor(readonly file: string) {
    this.zip = new ZipReader(file);
    try {
      const info = this.zip.list().find((e) => e.name === MANIFEST_NAME);
      if (!info) throw new CorruptArchiveError(`no ${MANIFEST_NAME}: not an nnmedia archive`, { file });
      if (info.size > MAX_MANIFEST_BYTES) throw new CorruptArchiveError(`manifest of ${info.size} bytes is too large`, { file });
      this.manifest = parseManifest(this.zip.read(MANIFEST_NAME), file);
      for (const name of Object.keys(this.manifest.entries))
        if (!this.zip.has(name)) throw new CorruptArchiveError(`entry ${name} listed in the manifest is missing`, { file });
    } catch (e) {
      this.zip.close();
      throw e;
    }
  }

  /** The ranges entry, read and checked once: every plane's decode reads its bytes from it. */
  private ranges?: Uint8Array;

  /** The pack last read (checked): a tensor's members are read one after another from the same pack. */
  private pack?: { name: string; data: Uint8Array };

  /** An entry's bytes, checked against the manifest's sha256 (a pack member: its pack's). */
  entry(name: string, tensor?: string): Uint8Array {
    if (name === RANGES_ENTRY) return (this.ranges ??= this.entryOrMember(name, tensor));
    return this.entryOrMember(name, tensor);
  }

  private entryOrMember(name: string, tensor?: string): Uint8Array {
    const place = Object.hasOwn(this.manifest.entries, name) ? undefined : packMembers(this.manifest).get(name);
    if (place) {
      if (this.pack?.name !== place.pack) this.pack = { name: place.pack, data: this.readEntry(place.pack, tensor) };
      const data = this.pack.data.subarray(place.offset, place.offset + place.bytes);
      return memberContent(
        place,
        data,
        (d, size) => brotliDecompressSync(d, { maxOutputLength: Math.max(1, size) }),
        (message) => {
          throw new CorruptArchiveError(`entry ${name} in ${place.pack}: ${message} (corrupt)`, { file: this.file, tensor });
        },
      );
    }
    return this.readEntry(name, tensor);
  }

  /**
   * A ZIP entry's bytes against the manifest's sha256 and size. The CRC-32 is left out unless asked for: the
   * sha256 is the stronger check of the same bytes (and the CRC-32 cost as much as reading them).
   */
  private readEntry(name: string, tensor?: string, crc = false): Uint8Array {
    const want = Object.hasOwn(this.manifest.entries, name) ? this.manifest.entries[name] : undefined;
    if (!want) throw new CorruptArchiveError(`entry ${name} is not listed in the manifest`, { file: this.file, tensor });
    const data = this.zip.read(name, { crc, tensor });
    const got = sha256Hex(data);
    if (got !== want.sha256 || data.length !== want.bytes)
      throw new CorruptArchiveError(`entry ${name}: ${got !== want.sha256 ? 'sha256' : 'size'} mismatch (corrupt)`, {
        file: this.file,
        tensor,
      });
    return data;
  }

  /** The skeleton's entries, in order: one, unless a large skeleton was written in parts. */
  skeletonParts(): string[] {
    return skeletonEntries(this.manifest);
  }

  /** The whole skeleton in memory (ONNX, and in-memory rebuilds). */
  skeleton(): Uint8Array {
    const parts = this.skeletonParts().map((p) => this.skeletonPart(p));
    return parts.length === 1 ? parts[0] : concatBytes(parts);
  }

  /** One part of the skeleton, checked, as the model's bytes (through zstd for a `.zst` entry). */
  skeletonPart(name: string): Uint8Array {
    return skeletonContent(name, this.entry(name), this.manifest.source.bytes, (message) => {
      throw new CorruptArchiveError(message, { file: this.file });
    });
  }

  /** A ZIP entry (a pack as a whole) checked against its CRC-32 and the manifest's sha256 and size (inspect). */
  checkEntry(name: string): void {
    this.readEntry(name, undefined, true);
  }

  /** Verifies every entry's checksums (CRC-32 and sha256). */
  verify(): void {
    for (const name of Object.keys(this.manifest.entries)) this.checkEntry(name);
  }

  /**
   * Verifies the ZIP entries that restoring the model does not read (none in an archive nnmedia wrote): every
   * other entry is checked when it is read for decoding, so with this no entry goes unchecked.
   */
  verifyUnread(): void {
    const members = packMembers(this.manifest);
    const read = new Set([...modelEntries(this.manifest)].map((n) => members.get(n)?.pack ?? n));
    for (const name of Object.keys(this.manifest.entries)) if (!read.has(name)) this.checkEntry(name);
  }

  /**
   * Bytes each entry takes in the file: ZIP entries compressed, pack members as stored in their pack, and a
   * member of a deflated pack (exact side values) its share of the pack's compressed bytes, by its stored bytes.
   */
  entrySizes(): Map<string, number> {
    const list = this.zip.list();
    const sizes = new Map(list.map((e) => [e.name, e.compressedSize]));
    const ratio = new Map(list.map((e) => [e.name, e.size > 0 ? e.compressedSize / e.size : 1]));
    for (const [name, place] of packMembers(this.manifest))
      sizes.set(name, Math.round(place.bytes * (ratio.get(place.pack) ?? 1)));
    return sizes;
  }

  close(): void {
    this.zip.close();
  }
}
