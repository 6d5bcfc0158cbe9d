/**
 * Where a tensor sits in an ONNX model's subgraphs, for reports: Silero VAD v6 holds its 8 kHz and 16 kHz networks
 * in the two branches of an `If` under the same tensor names, and a table that lists both must tell them apart.
 * A scope is a subgraph attribute (`If` then_branch / else_branch, `Loop` and `Scan` bodies) at any depth, named
 * by its node and attribute; its path is spelt as the ONNX reader spells tensor locations (protobuf field path).
 */

import { parseOnnxGraph, type OnnxGraph } from '../compensate/graph.js';
import type { Manifest } from '../archive/manifest.js';

export interface Scope {
  /** The subgraph's field path: a tensor inside it has a location starting with it and a `/`. */
  path: string;
  /** "If_0 else_branch", nested ones joined: "Loop_2 body › If_7 then_branch". */
  label: string;
}

/** Every subgraph of the model (a skeleton will do: tensors' data is not read), outer ones first. */
export function subgraphScopes(model: Uint8Array): Scope[] {
  const labels = new Map<OnnxGraph, string>();
  const out: Scope[] = [];
  // (graphs come main first, then subgraphs depth-first: a graph's owner's label is known before its own)
  for (const g of parseOnnxGraph(model).graphs) {
    if (!g.owner) continue;
    const own = `${g.owner.name || g.owner.outputs[0] || g.owner.op} ${g.ownerAttr ?? ''}`.trim();
    const outer = labels.get(g.owner.graph);
    const label = outer ? `${outer} › ${own}` : own;
    labels.set(g, label);
    out.push({ path: g.path, label });
  }
  return out;
}

/** The innermost scope a location lies in, or undefined for the main graph. */
export function scopeOf(scopes: readonly Scope[], location: string): Scope | undefined {
  let best: Scope | undefined;
  for (const s of scopes) if (location.startsWith(`${s.path}/`) && (!best || s.path.length > best.path.length)) best = s;
  return best;
}

/**
 * Names for a table: each name that occurs more than once gets its scope after it ("w (If_0 else_branch)", "w
 * (main graph)"); others stay as they are. `scopes` is only asked for where some name repeats.
 */
export function scopedNames(
  rows: ReadonlyArray<{ name: string; location?: string }>,
  scopes: () => readonly Scope[],
): { names: string[]; scopes: Array<string | undefined> } {
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.name, (counts.get(r.name) ?? 0) + 1);
  const repeated = rows.some((r) => counts.get(r.name)! > 1);
  let all: readonly Scope[] = [];
  if (repeated)
    try {
      all = scopes();
    } catch {
      all = [];
    }
  const labels = rows.map((r) =>
    repeated && counts.get(r.name)! > 1 && r.location !== undefined && all.length
      ? (scopeOf(all, r.location)?.label ?? 'main graph')
      : undefined,
  );
  return { names: rows.map((r, i) => (labels[i] ? `${r.name} (${labels[i]})` : r.name)), scopes: labels };
}

/**
 * The scope of each of an archive's tensors (manifest order) whose name the model repeats, else undefined: what
 * inspect, eval and the viewer show beside the name. The skeleton is read only where a name repeats.
 */
export function archiveScopes(archive: { readonly manifest: Manifest; skeleton(): Uint8Array }): Array<string | undefined> {
  const m = archive.manifest;
  return scopedNames(
    m.tensors.map((t) => ({
      name: t.name,
      location: m.source.format === 'onnx' ? (t.storage as { path?: string }).path : undefined,
    })),
    () => subgraphScopes(archive.skeleton()),
  ).scopes;
}
