/**
 * One benchmark point in its own process, so its peak RSS is its own:
 * compress → decompress with the given options; prints a JSON line.
 */
import { compressModel, decompressArchive } from '../src/index.js';
import { statSync } from 'node:fs';
import { taskByName } from '../src/eval/tasks/index.js';

const [input, archive, restored, optionsJson] = process.argv.slice(2);
const { task, ...rest } = JSON.parse(optionsJson) as Parameters<typeof compressModel>[2] & { task?: string };
const options = { ...rest, ...(task ? { task: taskByName(task) } : {}) };
const t0 = performance.now();
// points of a sweep reuse their file names
const r = await compressModel(input, archive, { check: false, ...options, force: true }); // the bench measures the task itself
const t1 = performance.now();
await decompressArchive(archive, restored, { force: true });
const t2 = performance.now();
const mediaBytes = r.manifest.tensors.reduce((s, t) => s + (t.bytes ?? 0), 0);
console.log(
  JSON.stringify({
    archiveBytes: statSync(archive).size,
    mediaBytes,
    compressedWeights: r.compressedWeights,
    encodeMs: t1 - t0,
    decodeMs: t2 - t1,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
  }),
);
