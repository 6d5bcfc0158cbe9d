/**
 * Is this model the one an archive was made from? The manifest records the source's size and sha256; a file
 * with the same sha256 is it. Another file still is, for comparing weights, when it holds every compressed
 * tensor under the same key and shape (the same model saved again); otherwise it is refused with both files
 * named, instead of failing later on the first tensor it lacks.
 */

import { basename } from 'node:path';
import { OptionError } from '../errors.js';
import type { ModelReader } from '../formats/model.js';
import { sha256File } from '../io/atomic.js';
import type { Manifest } from './manifest.js';

export async function checkSourceModel(manifest: Manifest, archiveFile: string, reader: ModelReader): Promise<void> {
  const { source } = manifest;
  if ((await sha256File(reader.file)) === source.sha256) return;
  const byKey = new Map(reader.tensors.map((t) => [t.key, t]));
  for (const t of manifest.tensors) {
    if (!t.layout) continue;
    const there = byKey.get(t.key);
    const problem = !there
      ? `it has no tensor ${t.key}`
      : there.shape.join('×') !== t.shape.join('×')
        ? `its tensor ${t.key} is ${there.shape.join('×')}, the archive's ${t.shape.join('×')}`
        : undefined;
    if (problem)
      throw new OptionError(
        `model ${reader.file} is not the one archive ${archiveFile} was made from (${source.file}, ${source.bytes.toLocaleString('en-US')} bytes, sha256 ${source.sha256.slice(0, 12)}…): ${problem}; give that model with -m (e.g. -m ${basename(source.file)})`,
      );
  }
}
