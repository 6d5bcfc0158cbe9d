/**
 * The ZIP directory, read and written without I/O so the Node file reader and
 * the isomorphic byte-source reader (browser, URLs) share it: the end record
 * (classic, or Zip64 when an offset, size or count does not fit 32/16 bits),
 * the central directory records with their Zip64 extra fields, the checks on
 * names, methods and duplicates, and the local header. Every number is checked
 * against the file size by the callers' `fail`.
 */

export const SIG_LOCAL = 0x04034b50;
export const SIG_CENTRAL = 0x02014b50;
export const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EXTRA = 0x0001;
const U32 = 0xffffffff;
const U16 = 0xffff;
/** The end record comment is at most 64 KiB, so the record sits in the file's last 64 KiB + 22 bytes. */
export const MAX_EOCD_SEARCH = 65_557;
/** More entries than any model has tensors × tiles; bounds the central directory parse. */
export const MAX_ENTRIES = 1_000_000;
/** Longest entry name we accept. */
export const MAX_NAME_BYTES = 1024;
/** Bytes of a local file header before its name. */
export const LOCAL_HEADER_BYTES = 30;
/** Compression methods we read: stored and deflated. */
const METHODS = [0, 8];

export type Fail = (message: string) => never;

export interface CentralRecord {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  offset: number;
  nameLength: number;
}

export interface EndRecord {
  count: number;
  cdOffset: number;
  cdSize: number;
  /** Where the end records begin (the Zip64 end record if there is one): the directory must end before. */
  endAt: number;
  /** Zip64: where its end record is; the caller reads 56 bytes there and passes them to `zip64End`. */
  zip64At?: number;
}

const u64 = (v: DataView, at: number): number => Number(v.getBigUint64(at, true));

/**
 * Why a file without a ZIP end record (or too short for one) is refused, from its size and first bytes: empty,
 * not a ZIP at all, or a ZIP cut short or damaged (every ZIP nnmedia writes starts with a local header).
 */
export function noEndReason(size: number, head: Uint8Array, tail?: Uint8Array): string {
  if (size === 0) return 'empty file (0 bytes): not an nnmedia archive';
  // an archive gzipped on its way (a web server's or a transfer's compression) and saved as it came
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b)
    return 'a gzip file, not an nnmedia archive (compressed on its way?): gunzip it first';
  const zip = head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === SIG_LOCAL;
  if (!zip) return 'not an nnmedia archive: not a ZIP file (it does not start with "PK")';
  const extra = tail && bytesAfterEnd(tail);
  if (extra)
    return `${extra} byte${extra === 1 ? '' : 's'} follow the archive's end-of-central-directory record (appended to the file?): remove them (the archive is the file without its last ${extra} bytes)`;
  return `truncated or damaged: a ZIP file of ${size} bytes without its end-of-central-directory record`;
}

/** How many bytes follow the last complete end record in `tail` (0: none found, or none follow). */
function bytesAfterEnd(tail: Uint8Array): number {
  const v = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  for (let i = tail.length - 22; i >= 0; i--)
    if (v.getUint32(i, true) === SIG_EOCD) {
      const after = tail.length - (i + 22 + v.getUint16(i + 20, true));
      if (after > 0) return after;
    }
  return 0;
}

/** The end record, from the file's last bytes (`tail`, which starts at file offset `tailStart`). */
export function findEnd(tail: Uint8Array, tailStart: number, fail: Fail): EndRecord {
  const v = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--)
    if (v.getUint32(i, true) === SIG_EOCD && i + 22 + v.getUint16(i + 20, true) === tail.length) {
      eocd = i;
      break;
    }
  if (eocd < 0) fail('not a ZIP archive or truncated (no end-of-central-directory record)');
  const end: EndRecord = {
    count: v.getUint16(eocd + 10, true),
    cdSize: v.getUint32(eocd + 12, true),
    cdOffset: v.getUint32(eocd + 16, true),
    endAt: tailStart + eocd,
  };
  if (end.count === U16 || end.cdSize === U32 || end.cdOffset === U32) {
    const loc = eocd - 20;
    if (loc < 0 || v.getUint32(loc, true) !== SIG_ZIP64_LOCATOR) fail('Zip64 end-of-directory locator missing');
    const at = u64(v, loc + 8);
    if (at + 56 > tailStart + loc) fail('Zip64 end record lies outside the file');
    end.endAt = at;
    end.zip64At = at;
  }
  return end;
}

/** Fills the end record from the 56 bytes of the Zip64 end record, then checks its bounds. */
export function zip64End(end: EndRecord, b: Uint8Array, fail: Fail): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 56 || v.getUint32(0, true) !== SIG_ZIP64_EOCD) fail('Zip64 end record damaged');
  end.count = u64(v, 32);
  end.cdSize = u64(v, 40);
  end.cdOffset = u64(v, 48);
}

/** Bounds of the directory: entry count, and the directory between the data and the end records. */
export function checkEnd(end: EndRecord, fail: Fail): void {
  if (end.count > MAX_ENTRIES) fail(`too many entries (${end.count})`);
  if (end.cdOffset + end.cdSize > end.endAt) fail('central directory lies outside the file');
}

/** The central directory's records; names are checked by `checkName`. */
export function parseCentral(
  cd: Uint8Array,
  end: EndRecord,
  fail: Fail,
  checkName: (name: string) => void = () => {},
): CentralRecord[] {
  const v = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const text = new TextDecoder();
  const out: CentralRecord[] = [];
  let p = 0;
  // the directory ends where the end records begin in every ZIP we know of: a gap there is as many bytes put before
  // the archive (a self-extractor's stub, a prefix), which moved everything by that much
  const gap = end.endAt - (end.cdOffset + end.cdSize);
  for (let i = 0; i < end.count; i++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== SIG_CENTRAL)
      fail(
        i === 0 && gap > 0
          ? `${gap} byte${gap === 1 ? '' : 's'} before the archive (a prefix, a self-extractor's stub?): the archive is the file without its first ${gap} bytes`
          : `central directory record ${i} is damaged`,
      );
    const nameLength = v.getUint16(p + 28, true);
    const extraLength = v.getUint16(p + 30, true);
    const commentLength = v.getUint16(p + 32, true);
    if (p + 46 + nameLength + extraLength > cd.length) fail(`central directory record ${i} is damaged`);
    const name = text.decode(cd.subarray(p + 46, p + 46 + nameLength));
    checkName(name);
    const r: CentralRecord = {
      name,
      method: v.getUint16(p + 10, true),
      crc: v.getUint32(p + 16, true),
      compressedSize: v.getUint32(p + 20, true),
      size: v.getUint32(p + 24, true),
      offset: v.getUint32(p + 42, true),
      nameLength,
    };
    if (r.size === U32 || r.compressedSize === U32 || r.offset === U32) {
      // Zip64 extended information: the 64-bit values of the fields set to 0xFFFFFFFF, in this order
      let q = p + 46 + nameLength;
      const stop = q + extraLength;
      let found = false;
      while (q + 4 <= stop) {
        const id = v.getUint16(q, true);
        const len = v.getUint16(q + 2, true);
        if (q + 4 + len > stop) break;
        if (id === ZIP64_EXTRA) {
          let k = q + 4;
          const take = (): number => {
            if (k + 8 > q + 4 + len) fail(`entry ${name}: Zip64 field too short`);
            const x = u64(v, k);
            k += 8;
            return x;
          };
          if (r.size === U32) r.size = take();
          if (r.compressedSize === U32) r.compressedSize = take();
          if (r.offset === U32) r.offset = take();
          found = true;
        }
        q += 4 + len;
      }
      if (!found) fail(`entry ${name}: Zip64 field missing`);
    }
    if (r.offset + 30 + r.compressedSize > end.cdOffset) fail(`entry ${name} lies outside the data area`);
    out.push(r);
    p += 46 + nameLength + extraLength + commentLength;
  }
  return out;
}

/** Names of ZIP compression methods a re-packing tool may choose. */
const METHOD_NAMES: Record<number, string> = { 9: 'Deflate64', 12: 'bzip2', 14: 'LZMA', 93: 'zstd', 95: 'xz', 98: 'PPMd' };

/** Refuses names that could escape a folder when extracted (zip-slip), absolute or drive paths, and empty parts. */
export function checkEntryName(name: string, fail: Fail): void {
  if (
    !name ||
    new TextEncoder().encode(name).length > MAX_NAME_BYTES ||
    name.startsWith('/') ||
    name.includes('\\') ||
    name.includes('\0') ||
    /^[a-zA-Z]:/.test(name) ||
    name.split('/').some((p) => p === '..' || p === '.' || p === '')
  )
    fail(`unsafe entry name ${JSON.stringify(name)}`);
}

/** The directory's records by name: names checked, methods we read, no name twice. */
export function indexDirectory(cd: Uint8Array, end: EndRecord, fail: Fail): Map<string, CentralRecord> {
  const entries = new Map<string, CentralRecord>();
  // a folder's own entry (`dir/`, empty) is what zip -r, Python, 7-Zip and Finder add when an archive is unzipped
  // and zipped again: its name checked as a folder's, and nothing to read
  const checkName = (name: string): void =>
    name.endsWith('/')
      ? checkEntryName(name.slice(0, -1), () => fail(`unsafe entry name ${JSON.stringify(name)}`))
      : checkEntryName(name, fail);
  for (const r of parseCentral(cd, end, fail, checkName)) {
    if (r.name.endsWith('/')) {
      if (r.size !== 0) fail(`folder entry ${JSON.stringify(r.name)} holds ${r.size} bytes`);
      continue;
    }
    if (!METHODS.includes(r.method))
      fail(
        `entry ${r.name} uses compression method ${r.method}${METHOD_NAMES[r.method] ? ` (${METHOD_NAMES[r.method]})` : ''}; nnmedia reads stored and deflated entries (re-pack with plain zip)`,
      );
    if (entries.has(r.name)) fail(`duplicate entry ${r.name}`);
    entries.set(r.name, r);
  }
  return entries;
}

/** Where an entry's data starts, from the first LOCAL_HEADER_BYTES of its local header. */
export function localDataStart(r: CentralRecord, header: Uint8Array, fail: Fail): number {
  const v = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (header.length < LOCAL_HEADER_BYTES || v.getUint32(0, true) !== SIG_LOCAL) fail(`entry ${r.name}: local header damaged`);
  return r.offset + LOCAL_HEADER_BYTES + v.getUint16(26, true) + v.getUint16(28, true);
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE), for readers without zlib's (the Node reader uses zlib's own). */
export function crc32(data: Uint8Array): number {
  const table = (crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  }));
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * The central directory and end record for the given entries (Zip64 records
 * only where a value does not fit: small archives are classic ZIP, byte for byte).
 */
export function writeDirectory(records: readonly CentralRecord[], cdStart: number, dosDate: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  let cdSize = 0;
  for (const r of records) {
    const name = new TextEncoder().encode(r.name);
    const big = r.offset >= U32;
    const h = new DataView(new ArrayBuffer(46));
    h.setUint32(0, SIG_CENTRAL, true);
    h.setUint16(4, big ? 45 : 20, true);
    h.setUint16(6, big ? 45 : 20, true);
    h.setUint16(8, 0x0800, true); // UTF-8 names
    h.setUint16(10, r.method, true);
    h.setUint16(12, 0, true);
    h.setUint16(14, dosDate, true);
    h.setUint32(16, r.crc, true);
    h.setUint32(20, r.compressedSize, true);
    h.setUint32(24, r.size, true);
    h.setUint16(28, name.length, true);
    h.setUint16(30, big ? 12 : 0, true);
    h.setUint32(42, big ? U32 : r.offset, true);
    parts.push(new Uint8Array(h.buffer), name);
    cdSize += 46 + name.length;
    if (big) {
      const x = new DataView(new ArrayBuffer(12));
      x.setUint16(0, ZIP64_EXTRA, true);
      x.setUint16(2, 8, true);
      x.setBigUint64(4, BigInt(r.offset), true);
      parts.push(new Uint8Array(x.buffer));
      cdSize += 12;
    }
  }
  const zip64 = records.length >= U16 || cdStart >= U32 || cdSize >= U32;
  if (zip64) {
    const z = new DataView(new ArrayBuffer(56 + 20));
    z.setUint32(0, SIG_ZIP64_EOCD, true);
    z.setBigUint64(4, 44n, true); // size of the rest of this record
    z.setUint16(12, 45, true);
    z.setUint16(14, 45, true);
    z.setBigUint64(24, BigInt(records.length), true);
    z.setBigUint64(32, BigInt(records.length), true);
    z.setBigUint64(40, BigInt(cdSize), true);
    z.setBigUint64(48, BigInt(cdStart), true);
    z.setUint32(56, SIG_ZIP64_LOCATOR, true);
    z.setBigUint64(64, BigInt(cdStart + cdSize), true);
    z.setUint32(72, 1, true); // total disks
    parts.push(new Uint8Array(z.buffer));
  }
  const e = new DataView(new ArrayBuffer(22));
  e.setUint32(0, SIG_EOCD, true);
  e.setUint16(8, zip64 ? U16 : records.length, true);
  e.setUint16(10, zip64 ? U16 : records.length, true);
  e.setUint32(12, zip64 ? U32 : cdSize, true);
  e.setUint32(16, zip64 ? U32 : cdStart, true);
  parts.push(new Uint8Array(e.buffer));
  return parts;
}
