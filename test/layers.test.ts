/**
 * The import picture stays as docs/architecture.md draws it: every module imports only from its own layer
 * or a lower one (nothing below pipeline/ imports from it), there is no import cycle in src/ or bench/, and
 * the browser entry reaches no Node module.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAYERS, benchCycles, folderOf, importGraph, layerOf, reachable, render } from '../scripts/layers.js';

const graph = importGraph();

/** What the browser bundle must never pull in. */
const NODE_ONLY = ['sharp', 'onnxruntime-node', '@mongodb-js/zstd', '@ffmpeg-installer/ffmpeg', 'cli-progress', 'commander'];

describe('import layers', () => {
  it('every folder of src/ has a layer', () => {
    const folders = new Set([...graph.edges.keys()].map(folderOf));
    expect([...folders].filter((f) => layerOf(f) < 0)).toEqual([]);
  });
  it('no module imports from a layer above its own', () => {
    expect(graph.violations).toEqual([]);
  });
  it('nothing below pipeline/ imports from it', () => {
    const pipeline = LAYERS.findIndex((l) => l.folders.includes('pipeline'));
    const below = [...graph.edges].filter(([from]) => layerOf(from) < pipeline);
    expect(
      below.flatMap(([from, tos]) => [...tos].filter((t) => folderOf(t) === 'pipeline').map((t) => `${from} → ${t}`)),
    ).toEqual([]);
  });
  it('no import cycle in src/ (type imports included) nor in bench/', () => {
    expect(graph.cycles).toEqual([]);
    expect(benchCycles()).toEqual([]);
  });
  it('the browser entry reaches no Node builtin and no Node-only package', () => {
    const modules = reachable(graph, 'browser/index.ts');
    expect(modules.has('archive/decode.ts') && modules.has('archive/check.ts')).toBe(true);
    const bad = [...modules].flatMap((m) =>
      [...graph.packages.get(m)!].filter((p) => p.startsWith('node:') || NODE_ONLY.includes(p)).map((p) => `${m}: ${p}`),
    );
    expect(bad).toEqual([]);
  });
  it('docs/architecture.md shows the current picture', () => {
    const doc = readFileSync(join(import.meta.dirname, '../docs/architecture.md'), 'utf8');
    const block = /<!-- layers:begin -->\s*```\n([\s\S]*?)\n```\s*<!-- layers:end -->/.exec(doc)?.[1];
    expect(block, 'regenerate with npx tsx scripts/layers.ts --markdown').toBe(render(graph));
  });
});
