/**
 * The import picture of src/, drawn from the code: every relative import (type-only ones included, since a
 * type cycle is a design cycle too) between the folders, checked against the layers below, and every import
 * cycle between modules.
 *
 *   npx tsx scripts/layers.ts            print the layers, the folder edges and any violation or cycle
 *   npx tsx scripts/layers.ts --markdown the same as the markdown block of docs/architecture.md
 *
 * test/layers.test.ts runs `importGraph` and fails on a violation or a cycle.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/**
 * Layers, lowest first: a module may import from its own layer or a lower one, never from a higher one.
 * A folder not listed here is a violation of its own (every folder must have a place).
 */
export const LAYERS: ReadonlyArray<{ name: string; folders: readonly string[]; what: string }> = [
  {
    name: 'base',
    folders: ['errors.ts', 'version.ts', 'runtime', 'io'],
    what: 'typed errors, version, optional deps, atomic output',
  },
  {
    name: 'leaves',
    folders: ['formats', 'layout', 'quantize', 'transform', 'codecs', 'roles', 'rate', 'eval', 'calibration', 'compensate'],
    what: 'model formats, M2–M7 layouts, M1 quantizers, rotation, codecs, roles, rate models, metrics and tasks, calibration data, layer statistics and error-compensating rounding',
  },
  { name: 'archive', folders: ['archive'], what: 'the .nnm file: manifest, validator, isomorphic decoder, ZIP' },
  { name: 'pipeline', folders: ['pipeline'], what: 'compression stages and orchestration, decompression, workers' },
  { name: 'report', folders: ['report'], what: 'evaluation of an archive against its model (decompresses)' },
  { name: 'entries', folders: ['cli', 'browser', 'index.ts'], what: 'the command line, the browser entry, the library entry' },
];

export interface ImportGraph {
  /** Module (path relative to the root) → the modules it imports. */
  edges: Map<string, Set<string>>;
  /** Module → the packages and Node builtins it imports (`node:fs`, `sharp`, …). */
  packages: Map<string, Set<string>>;
  /** Imports from a higher layer than the importer's, as "from → to". */
  violations: string[];
  /** Import cycles, each as a list of modules (the first repeated at the end). */
  cycles: string[][];
}

const SRC = resolve(import.meta.dirname, '../src');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const f = join(dir, n);
    return statSync(f).isDirectory() ? walk(f) : f.endsWith('.ts') ? [f] : [];
  });
}

/** The top-level folder (or file) of a module: `pipeline`, `errors.ts`, … */
export const folderOf = (module: string): string => module.split('/')[0];

export function layerOf(module: string): number {
  return LAYERS.findIndex((l) => l.folders.includes(folderOf(module)));
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** The import graph of the .ts files under `root`; imports leaving `root` are left out. */
export function importGraph(root = SRC): ImportGraph {
  const edges = new Map<string, Set<string>>();
  const packages = new Map<string, Set<string>>();
  for (const file of walk(root)) {
    const from = relative(root, file);
    const to = new Set<string>();
    const bare = new Set<string>();
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const spec = m[1] ?? m[2];
      if (!spec.startsWith('.')) bare.add(spec);
      else {
        const target = relative(root, resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
        if (!target.startsWith('..')) to.add(target);
      }
    }
    edges.set(from, to);
    packages.set(from, bare);
  }
  const violations: string[] = [];
  for (const [from, tos] of edges)
    for (const to of tos) {
      const [a, b] = [layerOf(from), layerOf(to)];
      if (a < 0 || b < 0 || b > a) violations.push(`${from} → ${to}`);
    }
  return { edges, packages, violations, cycles: findCycles(edges) };
}

/** Every module reachable from `entry` through relative imports (itself included). */
export function reachable(g: ImportGraph, entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (m: string): void => {
    if (seen.has(m) || !g.edges.has(m)) return;
    seen.add(m);
    for (const n of g.edges.get(m)!) visit(n);
  };
  visit(entry);
  return seen;
}

/** Import cycles among the benchmark scripts (bench/ has no layers, but no cycles either). */
export function benchCycles(): string[][] {
  return importGraph(resolve(import.meta.dirname, '../bench')).cycles;
}

/** Every strongly connected component of more than one module (or a module importing itself), as one cycle. */
function findCycles(edges: Map<string, Set<string>>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!edges.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || edges.get(v)?.has(v)) out.push([...component.reverse(), component[0]]);
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

/** Folder → the folders it imports from (its own left out). */
export function folderEdges(g: ImportGraph): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  for (const [from, tos] of g.edges)
    for (const to of tos) {
      const [a, b] = [folderOf(from), folderOf(to)];
      if (a === b) continue;
      if (!out.has(a)) out.set(a, new Set());
      out.get(a)!.add(b);
    }
  return new Map([...out].sort(([a], [b]) => layerOf(b) - layerOf(a) || a.localeCompare(b)).map(([k, v]) => [k, [...v].sort()]));
}

export function render(g: ImportGraph): string {
  const lines: string[] = [];
  [...LAYERS].reverse().forEach((l) => lines.push(`${l.name.padEnd(9)} ${l.folders.join(', ')}`));
  lines.push('');
  for (const [from, tos] of folderEdges(g)) lines.push(`${from} → ${tos.join(', ')}`);
  lines.push('');
  lines.push(g.violations.length ? `layer violations:\n  ${g.violations.join('\n  ')}` : 'layer violations: none');
  lines.push(g.cycles.length ? `import cycles:\n  ${g.cycles.map((c) => c.join(' → ')).join('\n  ')}` : 'import cycles: none');
  return lines.join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const g = importGraph();
  const bench = benchCycles();
  const text = render(g) + (bench.length ? `\nbench/ import cycles:\n  ${bench.map((c) => c.join(' → ')).join('\n  ')}` : '');
  console.log(process.argv.includes('--markdown') ? '```\n' + text + '\n```' : text);
  process.exitCode = g.violations.length || g.cycles.length || bench.length ? 1 : 0;
}
