/**
 * A small ZIP writer and reader for the .nnm archive. Media entries are stored
 * (they are compressed already); manifest and model skeleton may be deflated.
 * Output is deterministic (fixed 1980-01-01 timestamps, entries in the order
 * written). The reader treats the file as hostile: every offset and size is
 * checked against the file, names that would escape a folder are refused, and
 * every entry's CRC-32 is verified.
 */

import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import { CorruptArchiveError } from '../errors.js';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1;

/** ZIP without the Zip64 extension addresses 4 GiB; larger archives are refused, not corrupted. */
const MAX_ZIP32 = 0xffffffff;
/** More entries than any model has tensors × tiles; bounds the central directory parse. */
const MAX_ENTRIES = 1_000_000;
/** The end record comment is at most 64 KiB, so the record sits in the file's last 64 KiB + 22 bytes. */
const MAX_EOCD_SEARCH = 65_557;
/** Longest entry name we accept. */
const MAX_NAME_BYTES = 1024;

export type ZipMethod = 'store' | 'deflate';

interface CentralRecord {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  offset: number;
}

/** Appends entries to a file descriptor; `finish()` writes the central directory. */
export class ZipWriter {
  private offset = 0;
  private readonly records: CentralRecord[] = [];
  private readonly names = new Set<string>();

  constructor(private readonly fd: number) {}

  add(name: string, data: Uint8Array, method: ZipMethod = 'store'): void {
    checkEntryName(name);
    if (this.names.has(name)) throw new CorruptArchiveError(`duplicate entry name ${name}`);
    this.names.add(name);
    const nameBytes = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    const body = method === 'deflate' ? deflateRawSync(data, { level: 9 }) : data;
    const m = method === 'deflate' ? 8 : 0;
    if (this.offset + 30 + nameBytes.length + body.length > MAX_ZIP32)
      throw new CorruptArchiveError('archive would exceed 4 GiB (Zip64 is not supported yet)');
    const h = Buffer.alloc(30);
    h.writeUInt32LE(SIG_LOCAL, 0);
    h.writeUInt16LE(20, 4); // version needed
    h.writeUInt16LE(0x0800, 6); // UTF-8 names
    h.writeUInt16LE(m, 8);
    h.writeUInt16LE(0, 10); // time 00:00
    h.writeUInt16LE(DOS_DATE_1980, 12);
    h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(body.length, 18);
    h.writeUInt32LE(data.length, 22);
    h.writeUInt16LE(nameBytes.length, 26);
    h.writeUInt16LE(0, 28);
    this.write(h);
    this.write(nameBytes);
    this.records.push({
      name,
      method: m,
      crc,
      compressedSize: body.length,
      size: data.length,
      offset: this.offset - 30 - nameBytes.length,
    });
    this.write(body);
  }

  finish(): void {
    const cdStart = this.offset;
    for (const r of this.records) {
      const nameBytes = Buffer.from(r.name, 'utf8');
      const h = Buffer.alloc(46);
      h.writeUInt32LE(SIG_CENTRAL, 0);
      h.writeUInt16LE(20, 4);
      h.writeUInt16LE(20, 6);
      h.writeUInt16LE(0x0800, 8);
      h.writeUInt16LE(r.method, 10);
      h.writeUInt16LE(0, 12);
      h.writeUInt16LE(DOS_DATE_1980, 14);
      h.writeUInt32LE(r.crc, 16);
      h.writeUInt32LE(r.compressedSize, 20);
      h.writeUInt32LE(r.size, 24);
      h.writeUInt16LE(nameBytes.length, 28);
      h.writeUInt32LE(r.offset, 42);
      this.write(h);
      this.write(nameBytes);
    }
    const e = Buffer.alloc(22);
    e.writeUInt32LE(SIG_EOCD, 0);
    e.writeUInt16LE(this.records.length, 8);
    e.writeUInt16LE(this.records.length, 10);
    e.writeUInt32LE(this.offset - cdStart, 12);
    e.writeUInt32LE(cdStart, 16);
    this.write(e);
  }

  get bytesWritten(): number {
    return this.offset;
  }

  private write(b: Uint8Array): void {
    let done = 0;
    while (done < b.length) done += writeSync(this.fd, b, done, b.length - done);
    this.offset += b.length;
  }
}

export function checkEntryName(name: string, file?: string): void {
  if (
    !name ||
    Buffer.byteLength(name) > MAX_NAME_BYTES ||
    name.startsWith('/') ||
    name.includes('\\') ||
    name.includes('\0') ||
    /^[a-zA-Z]:/.test(name) ||
    name.split('/').some((p) => p === '..' || p === '.' || p === '')
  )
    throw new CorruptArchiveError(`unsafe entry name ${JSON.stringify(name)}`, { file });
}

export interface ZipEntryInfo {
  name: string;
  size: number;
  compressedSize: number;
}

/** Random access to the entries of a ZIP file; reads only what is asked for. */
export class ZipReader {
  private readonly fd: number;
  private readonly fileSize: number;
  private readonly entries = new Map<string, CentralRecord>();

  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, 'r');
    } catch (e) {
      throw new CorruptArchiveError(`cannot open archive: ${(e as Error).message}`, { file });
    }
    this.fileSize = fstatSync(this.fd).size;
    try {
      this.readDirectory();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private fail(msg: string): never {
    throw new CorruptArchiveError(msg, { file: this.file });
  }

  private readAt(offset: number, length: number): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.fileSize)
      this.fail(`truncated: needs bytes ${offset}…${offset + length} but the file has ${this.fileSize}`);
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, b, done, length - done, offset + done);
      if (n === 0) this.fail('unexpected end of file');
      done += n;
    }
    return b;
  }

  private readDirectory(): void {
    if (this.fileSize < 22) this.fail('not a ZIP archive (too short)');
    const tailLen = Math.min(this.fileSize, MAX_EOCD_SEARCH);
    const tail = this.readAt(this.fileSize - tailLen, tailLen);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === SIG_EOCD && i + 22 + tail.readUInt16LE(i + 20) === tail.length) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) this.fail('not a ZIP archive or truncated (no end-of-central-directory record)');
    const count = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    if (count > MAX_ENTRIES) this.fail(`too many entries (${count})`);
    if (cdOffset + cdSize > this.fileSize - tailLen + eocd) this.fail('central directory lies outside the file');
    const cd = this.readAt(cdOffset, cdSize);
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) this.fail(`central directory record ${i} is damaged`);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      const compressedSize = cd.readUInt32LE(p + 20);
      const size = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      const offset = cd.readUInt32LE(p + 42);
      if (p + 46 + nameLen > cd.length) this.fail(`central directory record ${i} is damaged`);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
      checkEntryName(name, this.file);
      if (method !== 0 && method !== 8) this.fail(`entry ${name} uses unsupported compression method ${method}`);
      if (offset + 30 + compressedSize > cdOffset) this.fail(`entry ${name} lies outside the data area`);
      if (this.entries.has(name)) this.fail(`duplicate entry ${name}`);
      this.entries.set(name, { name, method, crc, compressedSize, size, offset });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  list(): ZipEntryInfo[] {
    return [...this.entries.values()].map((e) => ({ name: e.name, size: e.size, compressedSize: e.compressedSize }));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The entry's bytes, CRC-checked. */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (!e) this.fail(`missing entry ${name}`);
    const h = this.readAt(e.offset, 30);
    if (h.readUInt32LE(0) !== SIG_LOCAL) this.fail(`entry ${name}: local header damaged`);
    const start = e.offset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    const body = this.readAt(start, e.compressedSize);
    let data: Uint8Array = body;
    if (e.method === 8) {
      try {
        data = inflateRawSync(body, { maxOutputLength: Math.max(1, e.size) });
      } catch (err) {
        this.fail(`entry ${name}: cannot inflate (${(err as Error).message})`);
      }
    }
    if (data.length !== e.size) this.fail(`entry ${name}: size ${data.length} differs from the recorded ${e.size}`);
    if (crc32(data) !== e.crc) this.fail(`entry ${name}: CRC-32 mismatch (corrupt)`);
    return data;
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

/** Whether a file opens as a ZIP archive (false for anything the reader rejects as not one). */
export function isZipFile(file: string): boolean {
  try {
    new ZipReader(file).close();
    return true;
  } catch (e) {
    if (e instanceof CorruptArchiveError) return false;
    throw e;
  }
}
