/**
 * Zip64: archives past 4 GiB (a 7B model at 8 bits is ~7 GB). The directory
 * writer adds Zip64 records only where a value does not fit; tested on a
 * sparse file with an entry beyond 4 GiB (nothing written in between), read
 * back by nnmedia's reader and by Python's zipfile.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ZipReader } from '../src/archive/zip.js';
import { type CentralRecord, checkEnd, findEnd, parseCentral, writeDirectory, zip64End } from '../src/archive/zip-directory.js';
import { tempDir } from './helpers/tmp.js';
import { concatBytes } from '../src/io/bytes.js';

const dir = tempDir();
const DOS_DATE = (0 << 9) | (1 << 5) | 1;
const fail = (m: string): never => {
  throw new Error(m);
};
function localHeader(name: string, data: Uint8Array): Uint8Array {
  const n = Buffer.from(name);
  const h = Buffer.alloc(30);
  h.writeUInt32LE(0x04034b50, 0);
  h.writeUInt16LE(20, 4);
  h.writeUInt16LE(0x0800, 6);
  h.writeUInt16LE(DOS_DATE, 12);
  h.writeUInt32LE(crc32(data), 14);
  h.writeUInt32LE(data.length, 18);
  h.writeUInt32LE(data.length, 22);
  h.writeUInt16LE(n.length, 26);
  return Buffer.concat([h, n]);
}

describe('Zip64', () => {
  it('small archives stay classic ZIP: no Zip64 record is written', () => {
    const rec: CentralRecord = { name: 'a', method: 0, crc: 0, compressedSize: 1, size: 1, offset: 0, nameLength: 1 };
    const bytes = concatBytes(writeDirectory([rec], 32, DOS_DATE));
    expect(Buffer.from(bytes).indexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06]))).toBe(-1);
  });

  it('more than 65,535 entries and offsets past 4 GiB round-trip through the directory', () => {
    const records: CentralRecord[] = Array.from({ length: 70_000 }, (_, i) => ({
      name: `t/${i}.png`,
      method: 0,
      crc: i,
      compressedSize: 100,
      size: 100,
      offset: i * 100_000,
      nameLength: `t/${i}.png`.length,
    }));
    const cdStart = 70_000 * 100_000;
    const dirBytes = concatBytes(writeDirectory(records, cdStart, DOS_DATE));
    const tail = dirBytes.subarray(dirBytes.length - 65_557);
    const end = findEnd(tail, cdStart + dirBytes.length - tail.length, fail);
    expect(end.zip64At).toBeDefined();
    const at = end.zip64At! - cdStart;
    zip64End(end, dirBytes.subarray(at, at + 56), fail);
    checkEnd(end, fail);
    expect(end.count).toBe(70_000);
    expect(end.cdOffset).toBe(cdStart);
    const back = parseCentral(dirBytes.subarray(0, end.cdSize), end, fail);
    expect(back).toHaveLength(70_000);
    expect(back[69_999]).toEqual(records[69_999]);
    expect(back[42_950].offset).toBe(42_950 * 100_000); // past 4 GiB
  });

  it('an entry beyond 4 GiB in a (sparse) file reads back in nnmedia and in Python zipfile', () => {
    const file = join(dir, 'big.zip');
    const fd = openSync(file, 'w');
    const put = (b: Uint8Array, at: number): void => {
      let done = 0;
      while (done < b.length) done += writeSync(fd, b, done, b.length - done, at + done);
    };
    const a = Buffer.from('first entry');
    const b = Buffer.from('an entry past the 4 GiB mark');
    const farAt = 2 ** 32 + 12345;
    const records: CentralRecord[] = [];
    for (const [name, data, at] of [
      ['a.bin', a, 0],
      ['far/b.bin', b, farAt],
    ] as const) {
      const h = localHeader(name, data);
      put(h, at);
      put(data, at + h.length);
      records.push({
        name,
        method: 0,
        crc: crc32(data),
        compressedSize: data.length,
        size: data.length,
        offset: at,
        nameLength: name.length,
      });
    }
    const cdStart = farAt + 30 + 'far/b.bin'.length + b.length;
    put(concatBytes(writeDirectory(records, cdStart, DOS_DATE)), cdStart);
    closeSync(fd);
    const z = new ZipReader(file);
    expect(Buffer.from(z.read('far/b.bin')).toString()).toBe(b.toString());
    expect(Buffer.from(z.read('a.bin')).toString()).toBe(a.toString());
    z.close();
    const py = execFileSync('python3', [
      '-c',
      `import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); print(z.read('far/b.bin').decode())`,
      file,
    ]);
    expect(py.toString().trim()).toBe(b.toString());
  });
});
