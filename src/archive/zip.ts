/**
 * A small ZIP writer and reader for the .nnm archive. Media entries are stored
 * (they are compressed already); manifest and model skeleton may be deflated.
 * Output is deterministic (fixed 1980-01-01 timestamps, entries in the order
 * written). The reader treats the file as hostile: every offset and size is
 * checked against the file, names that would escape a folder are refused, and
 * every entry's CRC-32 is verified, unless the caller checks a stronger digest
 * of the same bytes instead (the archive reader: sha256 against the manifest).
 */

import { closeSync, fstatSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { writeAll } from '../io/atomic.js';
import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import { CorruptArchiveError } from '../errors.js';
import { checkInputFile, fsError } from '../io/files.js';

import {
  type CentralRecord,
  LOCAL_HEADER_BYTES,
  MAX_ENTRIES,
  MAX_EOCD_SEARCH,
  SIG_LOCAL,
  checkEnd,
  checkEntryName as checkName,
  findEnd,
  indexDirectory,
  localDataStart,
  noEndReason,
  writeDirectory,
  zip64End,
} from './zip-directory.js';

const DOS_DATE_1980 = (0 << 9) | (1 << 5) | 1;
/** One entry's sizes stay 32-bit (no medium comes near 4 GiB); offsets past 4 GiB use Zip64 records. */
const MAX_ENTRY = 0xfffffffe;

export type ZipMethod = 'store' | 'deflate';

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
    if (body.length > MAX_ENTRY || data.length > MAX_ENTRY) throw new CorruptArchiveError(`entry ${name} is 4 GiB or larger`);
    if (this.records.length >= MAX_ENTRIES) throw new CorruptArchiveError(`more than ${MAX_ENTRIES} entries`);
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
      nameLength: nameBytes.length,
    });
    this.write(body);
  }

  finish(): void {
    for (const part of writeDirectory(this.records, this.offset, DOS_DATE_1980)) this.write(part);
  }

  /**
   * Takes back the last entry and the directory after it (the file is cut where that entry began), so that a
   * finished archive can be given another last entry: the manifest, once the archive's quality is known.
   */
  dropLast(): void {
    const last = this.records.pop();
    if (!last) throw new Error('no entry to drop');
    this.names.delete(last.name);
    this.offset = last.offset;
    ftruncateSync(this.fd, this.offset);
  }

  get bytesWritten(): number {
    return this.offset;
  }

  private write(b: Uint8Array): void {
    writeAll(this.fd, b, this.offset);
    this.offset += b.length;
  }
}

export function checkEntryName(name: string, file?: string): void {
  checkName(name, (message) => {
    throw new CorruptArchiveError(message, { file });
  });
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
  private entries = new Map<string, CentralRecord>();

  constructor(readonly file: string) {
    checkInputFile(file, 'archive');
    try {
      this.fd = openSync(file, 'r');
      this.fileSize = fstatSync(this.fd).size;
    } catch (e) {
      throw fsError('cannot open the archive', file, e);
    }
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
    // not zeroed: every byte is read into below, or the read fails
    const b = Buffer.allocUnsafeSlow(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, b, done, length - done, offset + done);
      if (n === 0) this.fail('unexpected end of file');
      done += n;
    }
    return b;
  }

  private readDirectory(): void {
    const fail = (m: string): never => this.fail(m);
    const tailLen = Math.min(this.fileSize, MAX_EOCD_SEARCH);
    const tail = this.readAt(this.fileSize - tailLen, tailLen);
    const noEnd = (): never => fail(noEndReason(this.fileSize, this.readAt(0, Math.min(4, this.fileSize)), tail));
    if (this.fileSize < 22) noEnd();
    const end = findEnd(tail, this.fileSize - tailLen, noEnd);
    if (end.zip64At !== undefined) zip64End(end, this.readAt(end.zip64At, 56), fail);
    checkEnd(end, fail);
    this.entries = indexDirectory(this.readAt(end.cdOffset, end.cdSize), end, fail);
  }

  list(): ZipEntryInfo[] {
    return [...this.entries.values()].map((e) => ({ name: e.name, size: e.size, compressedSize: e.compressedSize }));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /**
   * The entry's bytes, size-checked and CRC-checked. `crc: false` leaves out the CRC-32 for a caller that
   * checks a stronger digest of the same bytes (the archive reader's sha256 against the manifest); `tensor`
   * names the tensor the entry is read for in an error.
   */
  read(name: string, options: { crc?: boolean; tensor?: string } = {}): Uint8Array {
    const fail = (m: string): never => {
      throw new CorruptArchiveError(m, { file: this.file, tensor: options.tensor });
    };
    const e = this.entries.get(name);
    if (!e) return fail(`missing entry ${name}`);
    const start = localDataStart(e, this.readAt(e.offset, LOCAL_HEADER_BYTES), fail);
    const body = this.readAt(start, e.compressedSize);
    let data: Uint8Array = body;
    if (e.method === 8) {
      try {
        data = inflateRawSync(body, { maxOutputLength: Math.max(1, e.size) });
      } catch (err) {
        fail(`entry ${name}: cannot inflate (${(err as Error).message})`);
      }
    }
    if (data.length !== e.size) fail(`entry ${name}: size ${data.length} differs from the recorded ${e.size}`);
    if (options.crc !== false && crc32(data) !== e.crc) fail(`entry ${name}: CRC-32 mismatch (corrupt)`);
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
