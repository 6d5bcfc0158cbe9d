/**
 * What differs between two archives: every entry but the manifest compared by bytes, then the manifests
 * field by field (parsed, so a difference of key order alone shows as such).
 *
 *   npx tsx bench/archive-diff.ts a.nnm b.nnm
 *
 * Used to check that a format change touches what it means to and nothing else (e.g. only the manifest's
 * `options` block).
 */
import { isDeepStrictEqual } from 'node:util';
import { Archive } from '../src/archive/node.js';
import { MANIFEST_NAME } from '../src/archive/manifest.js';

export interface ArchiveDiff {
  /** Entries (not the manifest) missing on one side or with other bytes. */
  entries: string[];
  /** Top-level manifest fields whose values differ. */
  fields: string[];
  /** Tensor records whose values differ (by key). */
  tensors: string[];
  /** The manifests are equal as values but not as text (key order). */
  orderOnly: boolean;
  /** The manifests' text is the same once the differing fields are blanked on both sides (nothing else moved). */
  sameTextOutside: boolean;
}

export function archiveDiff(a: string, b: string): ArchiveDiff {
  const [x, y] = [new Archive(a), new Archive(b)];
  try {
    const names = new Set([...Object.keys(x.manifest.entries), ...Object.keys(y.manifest.entries)]);
    const entries = [...names].filter(
      (n) =>
        n !== MANIFEST_NAME &&
        (!(n in x.manifest.entries) || !(n in y.manifest.entries) || Buffer.compare(x.entry(n), y.entry(n)) !== 0),
    );
    const mx = x.manifest as unknown as Record<string, unknown>;
    const my = y.manifest as unknown as Record<string, unknown>;
    const fields = [...new Set([...Object.keys(mx), ...Object.keys(my)])].filter((k) => !isDeepStrictEqual(mx[k], my[k]));
    const tensors = x.manifest.tensors.filter((t, i) => !isDeepStrictEqual(t, y.manifest.tensors[i])).map((t) => t.key);
    const orderOnly = fields.length === 0 && JSON.stringify(mx) !== JSON.stringify(my);
    const blank = (m: Record<string, unknown>): string =>
      JSON.stringify({ ...m, ...Object.fromEntries(fields.map((f) => [f, null])) });
    return { entries, fields, tensors, orderOnly, sameTextOutside: blank(mx) === blank(my) };
  } finally {
    x.close();
    y.close();
  }
}

if (process.argv[1]?.endsWith('archive-diff.ts')) {
  const [a, b] = process.argv.slice(2);
  const d = archiveDiff(a, b);
  console.log(JSON.stringify(d, null, 1));
  if (d.fields.includes('options')) {
    const [x, y] = [new Archive(a), new Archive(b)];
    console.log('options:', JSON.stringify(x.manifest.options), '→', JSON.stringify(y.manifest.options));
    x.close();
    y.close();
  }
}
