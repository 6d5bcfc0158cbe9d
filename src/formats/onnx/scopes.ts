/**
 * Where a tensor sits in an ONNX model's subgraphs, for reports: Silero VAD v6 holds its 8 kHz and 16 kHz networks
 * in the two branches of an `If` under the same tensor names, and a table that lists both must tell them apart.
 * A scope is a subgraph attribute (`If` then_branch / else_branch, `Loop` and `Scan` bodies) at any depth, named
 * by its node and attribute; its path is spelt as the ONNX reader spells tensor locations (protobuf field path).
 */

import { MAX_NESTING, WIRE_LEN, utf8, wireFields } from './protobuf.js';
import { occurrenceCounter, pathJoin } from './rebuild.js';

export interface Scope {
  /** The subgraph's field path: a tensor inside it has a location starting with it and a `/`. */
  path: string;
  /** "If_0 else_branch", nested ones joined: "Loop_2 body › If_7 then_branch". */
  label: string;
}

const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const NODE_OUTPUT = 2;
const NODE_NAME = 3;
const NODE_ATTRIBUTE = 5;
const ATTR_NAME = 1;
const ATTR_G = 6;
const ATTR_GRAPHS = 11;

function graphScopes(
  model: Uint8Array,
  start: number,
  end: number,
  path: string,
  label: string,
  depth: number,
  out: Scope[],
): void {
  if (depth > MAX_NESTING) return;
  const graphCount = occurrenceCounter();
  for (const f of wireFields(model, start, end)) {
    const nodeOcc = graphCount(f.field);
    if (f.field !== GRAPH_NODE || f.wire !== WIRE_LEN) continue;
    const nodePath = pathJoin(path, f.field, nodeOcc);
    const nodeCount = occurrenceCounter();
    let name = '';
    let firstOutput = '';
    const graphs: Array<{ attr: string; start: number; end: number; path: string; list: boolean }> = [];
    for (const n of wireFields(model, f.valueStart, f.end)) {
      const attrOcc = nodeCount(n.field);
      if (n.wire !== WIRE_LEN) continue;
      if (n.field === NODE_NAME) name = utf8(model, n.valueStart, n.end);
      else if (n.field === NODE_OUTPUT && !firstOutput) firstOutput = utf8(model, n.valueStart, n.end);
      else if (n.field === NODE_ATTRIBUTE) {
        const attrPath = pathJoin(nodePath, n.field, attrOcc);
        const attrCount = occurrenceCounter();
        let attr = '';
        const found: Array<{ start: number; end: number; path: string; list: boolean }> = [];
        for (const a of wireFields(model, n.valueStart, n.end)) {
          const occ = attrCount(a.field);
          if (a.wire !== WIRE_LEN) continue;
          if (a.field === ATTR_NAME) attr = utf8(model, a.valueStart, a.end);
          else if (a.field === ATTR_G || a.field === ATTR_GRAPHS)
            found.push({
              start: a.valueStart,
              end: a.end,
              path: pathJoin(attrPath, a.field, occ),
              list: a.field === ATTR_GRAPHS,
            });
        }
        for (const g of found) graphs.push({ attr, ...g });
      }
    }
    const node = name || firstOutput || `node ${nodeOcc}`;
    graphs.forEach((g, i) => {
      const own = `${node} ${g.attr}${g.list ? `[${graphs.filter((x, j) => j < i && x.attr === g.attr).length}]` : ''}`;
      const full = label ? `${label} › ${own}` : own;
      out.push({ path: g.path, label: full });
      graphScopes(model, g.start, g.end, g.path, full, depth + 1, out);
    });
  }
}

/** Every subgraph of the model (a skeleton will do: tensors' data is not read), outer ones first. */
export function subgraphScopes(model: Uint8Array): Scope[] {
  const out: Scope[] = [];
  const modelCount = occurrenceCounter();
  for (const m of wireFields(model, 0, model.length)) {
    const occ = modelCount(m.field);
    if (m.field !== MODEL_GRAPH || m.wire !== WIRE_LEN) continue;
    graphScopes(model, m.valueStart, m.end, pathJoin('', m.field, occ), '', 0, out);
    break;
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
