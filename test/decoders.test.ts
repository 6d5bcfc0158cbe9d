/**
 * Decoders as Hugging Face optimum / transformers.js export them (found by a new-user sweep of such exports): a
 * cache's length in the input shapes (`past_sequence_length`, a mask of `past_sequence_length + 1`), a merged decoder
 * whose boolean `use_cache_branch` chooses an If branch, a rotary embedding's cos/sin tables read by Gather, cache
 * inputs whose names hold dots.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { npyInputHint } from '../src/calibration/raw.js';
import { syntheticCalibrationSet } from '../src/calibration/synthetic.js';
import type { CalibrationSample, CalibrationSplit } from '../src/calibration/index.js';
import { compressModel, openModel } from '../src/index.js';
import { heldBackOnEveryBranch } from '../src/pipeline/gate.js';
import { summaryLines, type ArchiveTotals } from '../src/cli/totals.js';
import { planTensors } from '../src/pipeline/plan.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();
const INT64 = onnx.TensorProto.DataType.INT64;
const BOOL = onnx.TensorProto.DataType.BOOL;
const ints = (name: string, v: number[]): onnx.IAttributeProto => ({
  name,
  ints: v,
  type: onnx.AttributeProto.AttributeType.INTS,
});
const int = (name: string, i: number): onnx.IAttributeProto => ({ name, i, type: onnx.AttributeProto.AttributeType.INT });
const VOCAB = 50;
const WIDTH = 8;

/**
 * A decoder step with a cache, shaped as optimum writes it: `attention_mask` [batch, past + 1] must be as long as the
 * past and the new tokens together (the product of the mask with [past scores, new scores] fails otherwise), so it
 * runs only where the cache and the mask agree (stacked with them).
 */
function withPastDecoder(): Uint8Array {
  const nodes: onnx.INodeProto[] = [
    { opType: 'Gather', input: ['embed', 'input_ids'], output: ['e'] },
    { opType: 'MatMul', input: ['e', 'w'], output: ['h'] },
    { opType: 'ReduceMean', input: ['h'], output: ['hs'], attribute: [ints('axes', [2]), int('keepdims', 0)] },
    { opType: 'ReduceMean', input: ['past'], output: ['ps'], attribute: [ints('axes', [1, 3]), int('keepdims', 0)] },
    { opType: 'Concat', input: ['ps', 'hs'], output: ['scores'], attribute: [int('axis', 1)] },
    { opType: 'Cast', input: ['attention_mask'], output: ['m'], attribute: [int('to', 1)] },
    // stacked: the mask and the scores must be equally long
    { opType: 'Concat', input: ['scores', 'm'], output: ['logits'], attribute: [int('axis', 0)] },
  ];
  return modelBytes({
    name: 'with_past',
    node: nodes,
    initializer: [
      floatTensor('embed', [VOCAB, WIDTH], gaussian(VOCAB * WIDTH, 1, 0.5)),
      floatTensor('w', [WIDTH, WIDTH], gaussian(64, 2, 0.5)),
    ],
    input: [
      valueInfo('input_ids', ['batch_size', 'sequence_length'], INT64),
      valueInfo('attention_mask', ['batch_size', 'past_sequence_length + 1'], INT64),
      valueInfo('past_key_values.0.key', ['batch_size', 2, 'past_sequence_length', WIDTH]),
    ],
    output: [valueInfo('logits', ['batch_size', 'total'])],
  }).slice();
}

describe('token ids through a Cast', () => {
  it('ids cast to int64 before the embedding (tf2onnx) still cover its vocabulary', async () => {
    const bytes = modelBytes({
      name: 'cast_ids',
      node: [
        { opType: 'Cast', input: ['input_ids'], output: ['ids64'], attribute: [int('to', INT64)] },
        { opType: 'Gather', input: ['embed', 'ids64'], output: ['e'] },
        { opType: 'ReduceMean', input: ['e'], output: ['y'], attribute: [ints('axes', [1]), int('keepdims', 0)] },
      ],
      initializer: [floatTensor('embed', [500, WIDTH], gaussian(500 * WIDTH, 3, 0.5))],
      input: [valueInfo('input_ids', ['batch', 'sequence'], onnx.TensorProto.DataType.INT32)],
      output: [valueInfo('y', ['batch', WIDTH])],
    });
    const set = await syntheticCalibrationSet(bytes, { count: 2 });
    const data = await set.samples[0].load();
    if (data.kind !== 'feed') throw new Error('a feed sample');
    const ids = [...(data.feed.input_ids.data as Int32Array)];
    expect(Math.max(...ids)).toBeGreaterThan(100);
    expect(Math.max(...ids)).toBeLessThan(500);
  });

  it('hashed ids taken Mod the table size (DLRM) cover the table (they were ids 0–15: 16 of 10,000 rows seen)', async () => {
    const bytes = modelBytes({
      name: 'hashed_ids',
      node: [
        { opType: 'Mod', input: ['hashed', 'buckets'], output: ['ids'] },
        { opType: 'Gather', input: ['embed', 'ids'], output: ['e'] },
        { opType: 'ReduceMean', input: ['e'], output: ['y'], attribute: [ints('axes', [1]), int('keepdims', 0)] },
      ],
      initializer: [
        floatTensor('embed', [500, WIDTH], gaussian(500 * WIDTH, 3, 0.5)),
        { name: 'buckets', dims: [], dataType: INT64, int64Data: [500] },
      ],
      input: [valueInfo('hashed', ['batch', 'sequence'], INT64)],
      output: [valueInfo('y', ['batch', WIDTH])],
    });
    const set = await syntheticCalibrationSet(bytes, { count: 2 });
    expect(set.description).toMatch(/hashed int64\[[^\]]*\]: ids 0–499/);
  });
});

describe('decoders with a cache', () => {
  it('synthetic inputs give the mask the length of the past and the new tokens ("past_sequence_length + 1")', async () => {
    // (the model reads `past`, named as optimum names it)
    const bytes = withPastDecoder();
    const model = onnx.ModelProto.decode(bytes);
    for (const n of model.graph!.node!) n.input = n.input!.map((i) => (i === 'past' ? 'past_key_values.0.key' : i));
    const fixed = onnx.ModelProto.encode(model).finish();
    const set = await syntheticCalibrationSet(fixed, { count: 4 });
    const data = await set.samples[0].load();
    expect(data.kind).toBe('feed');
    if (data.kind !== 'feed') return;
    const past = data.feed['past_key_values.0.key'].dims[2];
    const tokens = data.feed.input_ids.dims[1];
    expect(data.feed.attention_mask.dims[1]).toBe(past + 1);
    expect(past + 1).toBe(past + tokens); // one decoding step (or an empty cache)
    const file = join(dir, 'with-past.onnx');
    writeFileSync(file, fixed);
    const r = await compressModel(file, join(dir, 'with-past.nnm'));
    expect(r.quality?.passed).toBe(true);
  }, 60_000);

  it('a merged decoder’s boolean use_cache_branch takes both values among the synthetic samples, held back too', async () => {
    const then: onnx.IGraphProto = {
      name: 'cached',
      node: [{ opType: 'MatMul', input: ['x', 'w_then'], output: ['y_then'] }],
      initializer: [floatTensor('w_then', [WIDTH, WIDTH], gaussian(64, 3, 0.5))],
      output: [valueInfo('y_then', ['batch_size', WIDTH])],
    };
    const otherwise: onnx.IGraphProto = {
      name: 'plain',
      node: [{ opType: 'MatMul', input: ['x', 'w_else'], output: ['y_else'] }],
      initializer: [floatTensor('w_else', [WIDTH, WIDTH], gaussian(64, 4, 0.5))],
      output: [valueInfo('y_else', ['batch_size', WIDTH])],
    };
    const g = onnx.AttributeProto.AttributeType.GRAPH;
    const bytes = modelBytes({
      name: 'merged',
      node: [
        {
          opType: 'If',
          input: ['use_cache_branch'],
          output: ['y'],
          attribute: [
            { name: 'then_branch', g: then, type: g },
            { name: 'else_branch', g: otherwise, type: g },
          ],
        },
      ],
      input: [valueInfo('x', ['batch_size', WIDTH]), valueInfo('use_cache_branch', [1], BOOL)],
      output: [valueInfo('y', ['batch_size', WIDTH])],
    });
    const set = await syntheticCalibrationSet(bytes, { count: 16 });
    expect(set.description).toMatch(/use_cache_branch bool\[1\]: false and true in turn/);
    const flags = await Promise.all(
      set.samples.map(async (s) => {
        const d = await s.load();
        return d.kind === 'feed' ? d.feed.use_cache_branch.data[0] : -1;
      }),
    );
    expect(new Set(flags)).toEqual(new Set([0, 1]));
    // the held-back samples (every 4th) see both
    expect(new Set(flags.filter((_, i) => i % 4 === 3))).toEqual(new Set([0, 1]));
    const file = join(dir, 'merged.onnx');
    writeFileSync(file, bytes);
    const logs: string[] = [];
    await compressModel(file, join(dir, 'merged.nnm'), { targetBpw: 4, onLog: (m) => logs.push(m) });
    expect(logs.join('\n')).not.toMatch(/branches no calibration sample takes/);
  }, 120_000);

  it('a branch the probes take and no held-back sample does gets a probe sample held back, or is named', () => {
    const sample = (index: number): CalibrationSample => ({
      index,
      label: `s${index}`,
      kind: 'feed',
      load: async () => ({ kind: 'feed', feed: {} }),
    });
    const all = Array.from({ length: 8 }, (_, i) => sample(i));
    const split: CalibrationSplit = {
      probe: all.filter((_, i) => i % 4 !== 3),
      heldBack: [all[3], all[7]],
      shared: false,
      rule: '',
    };
    // samples 0 and 4 take the prefill branch; every other one (the held-back ones too) a decoding step
    const branch = (i: number): string => (i % 4 === 0 ? 'If_0: else' : 'If_0: then');
    const probeBranches = new Map(split.probe.map((s) => [s.index, new Set([branch(s.index)])]));
    const held = new Map(split.heldBack.map((s) => [s.index, new Set([branch(s.index)])]));
    const logs: string[] = [];
    const out = heldBackOnEveryBranch(split, probeBranches, held, (m) => logs.push(m));
    expect(out.heldBack.map((s) => s.index)).toEqual([3, 4, 7]);
    expect(out.probe.map((s) => s.index)).not.toContain(4);
    expect(probeBranches.has(4)).toBe(false);
    expect(logs[0]).toMatch(/held back s4 instead of probing with it: no other held-back sample takes If_0: else/);
    // one probe sample alone takes it: kept for the probes, and said
    const one = new Map([...probeBranches].filter(([i]) => i !== 0));
    one.set(0, new Set(['If_0: else']));
    const single: CalibrationSplit = { ...split, probe: split.probe.filter((s) => s.index !== 4) };
    one.delete(4);
    const logs2: string[] = [];
    const kept = heldBackOnEveryBranch(single, one, held, (m) => logs2.push(m));
    expect(kept.heldBack.map((s) => s.index)).toEqual([3, 7]);
    expect(logs2[0]).toMatch(/no held-back sample takes If_0: else: the quality gate does not judge that branch/);
    // two Ifs: the sample moved is one whose every branch another probe sample takes too (found by review: moving
    // sample 2 would have left B: else to no probe sample, and the coverage was not counted again)
    const two = Array.from({ length: 4 }, (_, i) => sample(i));
    const takes: Record<number, string[]> = { 0: ['A: then', 'B: then'], 1: ['A: then', 'B: then'], 2: ['A: then', 'B: else'] };
    const pb = new Map(Object.entries(takes).map(([i, b]) => [Number(i), new Set(b)]));
    const out2 = heldBackOnEveryBranch(
      { probe: two.slice(0, 3), heldBack: [two[3]], shared: false, rule: '' },
      pb,
      new Map([[3, new Set(['A: else', 'B: else'])]]),
    );
    expect(out2.heldBack.map((x) => x.index)).toEqual([1, 3]);
    expect(out2.probe.map((x) => x.index)).toEqual([0, 2]);
  });

  it('a boolean that chooses no branch stays false; a hyphenated dimension is a name, not a difference', async () => {
    // a `training` flag (behind Dropout in a real export) would make the outputs random if it were ever true
    const bytes = modelBytes({
      name: 'flag',
      node: [
        { opType: 'Cast', input: ['training'], output: ['t'], attribute: [int('to', 1)] },
        { opType: 'ReduceMax', input: ['x'], output: ['m'], attribute: [int('keepdims', 1)] },
        { opType: 'Add', input: ['m', 't'], output: ['y'] },
      ],
      input: [valueInfo('x', ['batch-size', 16]), valueInfo('training', [1], BOOL)],
      output: [valueInfo('y', [1, 1])],
    });
    const set = await syntheticCalibrationSet(bytes, { count: 8 });
    expect(set.description).toMatch(/training bool\[1\]: false$/);
    for (const s of set.samples) {
      const d = await s.load();
      if (d.kind === 'feed') {
        expect(d.feed.training.data[0]).toBe(0);
        expect(d.feed.x.dims).toEqual([1, 16]); // the batch, as any symbolic first dimension
      }
    }
  });
});

describe('rotary position tables and cache input names', () => {
  it('a Gather table of sinusoids of the row is kept, a learnt one coded', () => {
    const rows = 256;
    const half = 16;
    const cos = new Float32Array(rows * 2 * half);
    for (let p = 0; p < rows; p++)
      for (let j = 0; j < 2 * half; j++) cos[p * 2 * half + j] = Math.cos(p * 10000 ** (-(j % half) / half));
    const sin = cos.map((_, i) => Math.sin(Math.floor(i / (2 * half)) * 10000 ** (-((i % (2 * half)) % half) / half)));
    const node = (table: string, out: string): onnx.INodeProto => ({
      opType: 'Gather',
      input: [table, 'position_ids'],
      output: [out],
    });
    const file = join(dir, 'rope.onnx');
    writeFileSync(
      file,
      modelBytes({
        name: 'rope',
        node: [
          node('cos_cached', 'c'),
          node('sin_cached', 's'),
          node('learnt', 'l'),
          { opType: 'Sum', input: ['c', 's', 'l'], output: ['y'] },
        ],
        initializer: [
          floatTensor('cos_cached', [rows, 2 * half], cos),
          floatTensor('sin_cached', [rows, 2 * half], sin),
          floatTensor('learnt', [rows, 2 * half], gaussian(rows * 2 * half, 9, 0.02)),
        ],
        input: [valueInfo('position_ids', [1, 'n'], INT64)],
        output: [valueInfo('y', [1, 'n', 2 * half])],
      }),
    );
    const reader = openModel(file);
    const plans = planTensors(reader);
    const role = (name: string): string => plans.find((p) => p.entry.name === name)!.kind;
    expect(role('cos_cached')).toBe('kept');
    expect(role('sin_cached')).toBe('kept');
    expect(plans.find((p) => p.entry.name === 'sin_cached')!.reason).toMatch(/sinusoids of the row/);
    expect(role('learnt')).toBe('coded');
    reader.close();
  });

  it('a .npy file of a cache input (a name with dots) is matched by the longest input name', () => {
    const inputs = ['input_ids', 'past_key_values.0.key', 'key'];
    expect(npyInputHint('/d/s0.past_key_values.0.key.npy', inputs)).toEqual({
      stem: 's0.past_key_values.0.key',
      group: 's0',
      input: 'past_key_values.0.key',
    });
    expect(npyInputHint('/d/s0.input_ids.npy', inputs)).toEqual({ stem: 's0.input_ids', group: 's0', input: 'input_ids' });
    expect(npyInputHint('/d/input_ids.npy', inputs)).toEqual({ stem: 'input_ids', input: 'input_ids' });
  });
});

describe('the summary of an already quantized export', () => {
  it("gives the coded tensors' own bits per weight where most of the archive is the rest of the model", () => {
    const base: ArchiveTotals = {
      tensors: 105,
      compressedTensors: 3,
      duplicates: 0,
      transposed: 0,
      keptExact: 10,
      keptHalf: 92,
      compressedWeights: 643_584,
      keptWeights: 23_076,
      mediaBytes: 600_000,
      sideBytes: 0,
      archiveBytes: 3_569_538,
      sourceBytes: 5_857_042,
      ratio: 5_857_042 / 3_569_538,
      bitsPerWeight: (3_569_538 * 8) / 643_584,
      modelGrid: 0,
    };
    expect(summaryLines('q.nnm', base, 'model_qdq.onnx')[1]).toMatch(
      /3 tensors compressed \(643,584 weights\) at 44\.371 bits\/weight \(their codes 7\.458; most of the archive is the rest of the model/,
    );
    // a model whose coded tensors are the archive: no note
    const coded = { ...base, mediaBytes: 3_400_000, archiveBytes: 3_569_538 };
    expect(summaryLines('m.nnm', coded, 'm.onnx')[1]).not.toMatch(/their codes/);
  });
});

describe('synthetic pictures for a vision export', () => {
  it('take the value range the user gives (--image-range 0,1 alone), not the synthetic [−1, 1]', async () => {
    const bytes = modelBytes({
      name: 'conv',
      node: [{ opType: 'Conv', input: ['images', 'w'], output: ['y'] }],
      initializer: [floatTensor('w', [4, 3, 3, 3], gaussian(108, 11, 0.3))],
      input: [valueInfo('images', [1, 3, 32, 32])],
      output: [valueInfo('y', [1, 4, 30, 30])],
    });
    const within = async (image: { range?: [number, number] }): Promise<[number, number, string]> => {
      const set = await syntheticCalibrationSet(bytes, { count: 2, image });
      const d = await set.samples[0].load();
      const x = d.kind === 'feed' ? (d.feed.images.data as Float32Array) : new Float32Array();
      return [Math.min(...x), Math.max(...x), set.description];
    };
    const [lo, hi, description] = await within({ range: [0, 1] });
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThanOrEqual(1);
    expect(description).toMatch(/x\/255/);
    const [lo2] = await within({});
    expect(lo2).toBeLessThan(0); // the synthetic default: [−1, 1]
  });
});
