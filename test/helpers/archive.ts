import { closeSync, openSync } from 'node:fs';
import { ZipWriter } from '../../src/archive/zip.js';
import { Archive } from '../../src/archive/node.js';
import type { Manifest } from '../../src/archive/manifest.js';

export type Entries = ReadonlyArray<readonly [string, Uint8Array]>;

/** An archive's manifest and every other entry's bytes, to write back with a manifest of our choosing. */
export function readArchive(file: string): { manifest: Manifest; entries: Entries } {
  const archive = new Archive(file);
  try {
    const manifest = archive.manifest;
    return { manifest, entries: Object.keys(manifest.entries).map((n) => [n, archive.entry(n)] as const) };
  } finally {
    archive.close();
  }
}

/** An archive of the given entries and a manifest of our choosing (the ZIP itself valid: CRCs match). */
export function writeArchive(file: string, entries: Entries, manifest: unknown): void {
  const fd = openSync(file, 'w');
  const zip = new ZipWriter(fd);
  for (const [n, d] of entries) zip.add(n, d, n.endsWith('.png') ? 'store' : 'deflate');
  zip.add('manifest.json', Buffer.from(JSON.stringify(manifest)), 'deflate');
  zip.finish();
  closeSync(fd);
}
