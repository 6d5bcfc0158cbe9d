/**
 * MatMul weights on either side: a constant left operand (y = W·x, as exported by graphs that keep features in
 * columns) was kept whole as an unknown use, and a batched constant ([heads, K, N]) too. Both are coded now, one
 * range per output channel: a row of A, a column of B. Weights that reach their layer through Identity (PyTorch's
 * shared weights), Transpose (TensorFlow's HWIO kernels) or an Einsum were kept whole too.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compressModel, decompressArchive, openModel } from '../src/index.js';
import { classifyTensor } from '../src/roles/classify.js';
import { planTensors } from '../src/pipeline/plan.js';
import { floatTensor, modelBytes, valueInfo } from './helpers/onnx-fixtures.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const matmul = (inputIndex: number): { op: string; inputIndex: number; attrs: Record<string, never> } => ({
  op: 'MatMul',
  inputIndex,
  attrs: {},
});
const entry = (shape: number[], inputIndex: number): Parameters<typeof classifyTensor>[0] => ({
  key: 'w',
  name: 'w',
  dtype: 'float32',
  shape,
  uses: [matmul(inputIndex)],
  location: '',
});

describe('MatMul constants', () => {
  it('B [K, N] keeps its layout; A [M, K] is [out, in]; a batched B is a stack of matrices, a batched A rows of them', () => {
    expect(classifyTensor(entry([64, 32], 1), 'onnx')).toEqual({
      role: 'fc',
      layout: { kind: 'fc', nin: 64, nout: 32, order: 'in_out' },
      reason: 'MatMul constant operand',
    });
    expect(classifyTensor(entry([96, 48], 0), 'onnx')).toMatchObject({
      role: 'fc',
      layout: { kind: 'fc', nout: 96, nin: 48, order: 'out_in' },
    });
    expect(classifyTensor(entry([4, 32, 16], 1), 'onnx').layout).toEqual({
      kind: 'stack',
      batch: 4,
      nin: 32,
      nout: 16,
      order: 'in_out',
    });
    expect(classifyTensor(entry([4, 16, 32], 0), 'onnx').layout).toEqual({ kind: 'fc', nout: 64, nin: 32, order: 'out_in' });
  });

  it('a model y = W·x (W the left operand) and a batched B are compressed and pass the gate', async () => {
    const dir = tempDir();
    const graph: onnx.IGraphProto = {
      name: 'sides',
      initializer: [
        floatTensor('W', [96, 48], gaussian(96 * 48, 1, 0.1)),
        floatTensor('B', [4, 96, 24], gaussian(4 * 96 * 24, 2, 0.1)),
      ],
      node: [
        // [96, 48]·[48, n] → [96, n]; transposed to [n, 96]; [4, n, 96]·[4, 96, 24] → [4, n, 24]
        { opType: 'MatMul', input: ['W', 'x'], output: ['h'] },
        { opType: 'Transpose', input: ['h'], output: ['ht'] },
        { opType: 'MatMul', input: ['ht', 'B'], output: ['y'] },
      ],
      input: [valueInfo('x', [48, 'n'])],
      output: [valueInfo('y', [4, 'n', 24])],
    };
    const file = join(dir, 'sides.onnx');
    writeFileSync(file, modelBytes(graph));
    const r = await compressModel(file, join(dir, 'sides.nnm'));
    expect(r.compressedWeights).toBe(96 * 48 + 4 * 96 * 24);
    expect(r.quality?.passed).toBe(true);
    expect(r.quality!.fidelity).toBeGreaterThan(0.98);
    // and the rebuilt model runs
    const restored = join(dir, 'restored.onnx');
    await decompressArchive(join(dir, 'sides.nnm'), restored);
    const s = await ort.InferenceSession.create(restored);
    const out = await s.run({ x: new ort.Tensor('float32', gaussian(48 * 5, 3, 1), [48, 5]) });
    expect(out.y.dims).toEqual([4, 5, 24]);
    await s.release();
  });
});

describe('a depthwise ConvTranspose (an upsampling layer)', () => {
  it('its kernel [C, 1, k, k] gets a range per channel: as accurate as per-channel int8, where one range for all was 13 dB worse', async () => {
    const dir = tempDir();
    const file = join(dir, 'deconv.onnx');
    const C = 64;
    const w = gaussian(C * 16, 3, 0.1);
    for (let c = 0; c < C; c += 8) for (let i = 0; i < 16; i++) w[c * 16 + i] *= 30; // a few channels 30× larger
    const P = onnx.AttributeProto.AttributeType;
    writeFileSync(
      file,
      modelBytes({
        name: 'deconv',
        initializer: [floatTensor('dw', [C, 1, 4, 4], w)],
        node: [
          {
            opType: 'ConvTranspose',
            input: ['x', 'dw'],
            output: ['y'],
            attribute: [
              { name: 'group', i: C, type: P.INT },
              { name: 'strides', ints: [2, 2], type: P.INTS },
            ],
          },
        ],
        input: [valueInfo('x', [1, C, 8, 8])],
        output: [valueInfo('y', [1, C, 18, 18])],
      }),
    );
    expect(layoutsOf(file).dw).toMatchObject({ role: 'conv', layout: { kind: 'conv', nfout: C, nfin: 1, order: 'out_in' } });
    const r = await compressModel(file, join(dir, 'deconv.nnm'));
    expect(r.quality).toMatchObject({ checked: true, passed: true });
    await decompressArchive(join(dir, 'deconv.nnm'), join(dir, 'back.onnx'));
    const back = openModel(join(dir, 'back.onnx'));
    const restored = back.read(back.tensors[0].key);
    back.close();
    // per-output-channel int8 round-to-nearest of the same kernel
    const int8 = new Float32Array(w.length);
    for (let c = 0; c < C; c++) {
      const row = w.subarray(c * 16, (c + 1) * 16);
      const scale = row.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 127;
      row.forEach((v, i) => (int8[c * 16 + i] = Math.round(v / scale) * scale));
    }
    const snr = (q: Float32Array): number => {
      let s = 0;
      let e = 0;
      w.forEach((v, i) => ((s += v * v), (e += (v - q[i]) ** 2)));
      return 10 * Math.log10(s / e);
    };
    expect(snr(restored)).toBeGreaterThanOrEqual(snr(int8) - 0.1);
  });
});

describe('safetensors names holding "norm"', () => {
  const named = (name: string, shape: number[]) =>
    classifyTensor({ ...entry(shape, 1), key: name, name, uses: [] }, 'safetensors');
  it('a matrix is a weight whatever its name holds; a norm vector stored as [1, n] is kept', () => {
    for (const name of ['denorm.weight', 'abnormal.weight', 'normalizer.proj.weight', 'enc.norm_proj.weight'])
      expect(named(name, [256, 512]), name).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 256, nin: 512 } });
    expect(named('model.embed_tokens.weight', [1000, 64]).role).toBe('fc');
    for (const name of ['model.norm.weight', 'layers.0.input_layernorm.weight', 'embeddings.LayerNorm.weight'])
      expect(named(name, [1, 768]).role, name).toBe('other');
    // per-head norms: a norm module's parameter, [heads, head_dim]
    for (const name of ['layers.0.self_attn.q_norm.weight', 'layers.0.self_attn.k_norm.weight', 'blocks.2.norm1.weight'])
      expect(named(name, [64, 128]).role, name).toBe('other');
  });
});

describe("onnxruntime's channels-last convolutions", () => {
  it('an NhwcConv or NhwcFusedConv kernel [M, kH, kW, C] is a row of kH·kW·C weights per output channel', () => {
    for (const op of ['NhwcConv', 'NhwcFusedConv'])
      expect(
        classifyTensor(
          { ...entry([32, 3, 3, 16], 1), uses: [{ op, domain: 'com.microsoft', inputIndex: 1, attrs: {} }] },
          'onnx',
        ),
      ).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 32, nin: 3 * 3 * 16, order: 'out_in' } });
  });
});

describe('weights reached through data movement, and Einsum operands', () => {
  const model = (): Uint8Array => {
    const P = onnx.AttributeProto.AttributeType;
    const graph: onnx.IGraphProto = {
      name: 'hidden',
      initializer: [
        floatTensor('onnx::MatMul_5', [64, 128], gaussian(64 * 128, 1, 0.1)),
        floatTensor('dense/kernel:0', [96, 128], gaussian(96 * 128, 2, 0.1)),
        floatTensor('conv_w', [3, 3, 8, 16], gaussian(3 * 3 * 8 * 16, 3, 0.1)),
        floatTensor('einsum_w', [128, 32], gaussian(128 * 32, 4, 0.1)),
        floatTensor('dw/depthwise_kernel', [7, 7, 8, 1], gaussian(7 * 7 * 8, 5, 0.3)),
      ],
      node: [
        { opType: 'Identity', input: ['onnx::MatMul_5'], output: ['w1'] },
        { opType: 'MatMul', input: ['x', 'w1'], output: ['h'] },
        {
          opType: 'Transpose',
          input: ['dense/kernel:0'],
          output: ['w2'],
          attribute: [{ name: 'perm', ints: [1, 0], type: P.INTS }],
        },
        { opType: 'MatMul', input: ['h', 'w2'], output: ['y'] },
        // HWIO → OIHW, as TensorFlow exports leave it
        {
          opType: 'Transpose',
          input: ['conv_w'],
          output: ['cw'],
          attribute: [{ name: 'perm', ints: [3, 2, 0, 1], type: P.INTS }],
        },
        { opType: 'Conv', input: ['img', 'cw'], output: ['c'], attribute: [{ name: 'pads', ints: [1, 1, 1, 1], type: P.INTS }] },
        // a depthwise HWCM kernel [kH, kW, C, multiplier] → [C·M, 1, kH, kW], as tf2onnx leaves it (7×7: coded, not small)
        {
          opType: 'Transpose',
          input: ['dw/depthwise_kernel'],
          output: ['dw'],
          attribute: [{ name: 'perm', ints: [2, 3, 0, 1], type: P.INTS }],
        },
        {
          opType: 'Conv',
          input: ['img', 'dw'],
          output: ['d'],
          attribute: [
            { name: 'pads', ints: [3, 3, 3, 3], type: P.INTS },
            { name: 'group', i: 8, type: P.INT },
          ],
        },
        {
          opType: 'Einsum',
          input: ['z', 'einsum_w'],
          output: ['e'],
          attribute: [{ name: 'equation', s: new TextEncoder().encode('bi,ij->bj'), type: P.STRING }],
        },
      ],
      input: [valueInfo('x', [1, 64]), valueInfo('img', [1, 8, 10, 10]), valueInfo('z', [1, 128])],
      output: [valueInfo('y', [1, 96]), valueInfo('c', [1, 16, 10, 10]), valueInfo('e', [1, 32]), valueInfo('d', [1, 8, 10, 10])],
    };
    return modelBytes(graph);
  };

  it('each is coded with its output channels as the ranged axis, and the model passes the gate', async () => {
    const dir = tempDir();
    const file = join(dir, 'hidden.onnx');
    writeFileSync(file, model());
    const layouts = layoutsOf(file);
    expect(layouts['onnx::MatMul_5']).toMatchObject({
      layout: { kind: 'fc', nin: 64, nout: 128, order: 'in_out' },
      reason: 'MatMul constant operand (through Identity)',
    });
    // stored [96 out, 128 in], transposed to MatMul's [in, out]
    expect(layouts['dense/kernel:0'].layout).toEqual({ kind: 'fc', nin: 128, nout: 96, order: 'out_in' });
    // HWIO: the 16 output channels are the last axis
    expect(layouts.conv_w.layout).toEqual({ kind: 'fc', nin: 72, nout: 16, order: 'in_out' });
    // HWCM: the 8 channels (× a multiplier of 1) are axis 2, whatever the name says ("…kernel" of rank 4 read as
    // [out, in, k, k] gave 3 ranges over the kernel's rows)
    expect(layouts['dw/depthwise_kernel']).toMatchObject({
      layout: { kind: 'fc', nin: 49, nout: 8, order: 'in_out' },
      reason: 'Conv weight (through Transpose [2, 3, 0, 1]: output channels on stored axis 2)',
    });
    expect(layouts.einsum_w).toMatchObject({
      layout: { kind: 'fc', nin: 128, nout: 32, order: 'in_out' },
      reason: 'Einsum operand ij',
    });
    const r = await compressModel(file, join(dir, 'hidden.nnm'));
    expect(r.compressedWeights).toBe(64 * 128 + 96 * 128 + 3 * 3 * 8 * 16 + 128 * 32 + 7 * 7 * 8);
    expect(r.quality?.passed).toBe(true);
  });

  it('the name rules come before a guess through slicing: an LSTM weight sliced into gates stays an LSTM weight', () => {
    const lstm = { op: 'LSTM', inputIndex: 1, attrs: {}, through: ['Slice', 'Concat', 'Unsqueeze'] };
    const c = classifyTensor(
      { key: 'w', name: 'decoder.rnn.weight_ih', dtype: 'float32', shape: [512, 128], uses: [], consumers: [lstm], location: '' },
      'onnx',
    );
    expect(c.role).toBe('lstm');
  });

  it('weights stored as float16 and cast to float32 before their layer are coded, and stay float16', async () => {
    // a model delivered with float16 weights computing in float32 (Cast → Conv, Cast → MatMul): every kernel
    // sat behind a Cast and was kept whole (M-LSD with float16 weights: 1.14× smaller, now 1.96×)
    const dir = tempDir();
    const P = onnx.AttributeProto.AttributeType;
    const half = (name: string, dims: number[], seed: number): onnx.ITensorProto => ({
      name,
      dims,
      dataType: onnx.TensorProto.DataType.FLOAT16,
      rawData: halfBytes(
        gaussian(
          dims.reduce((a, b) => a * b, 1),
          seed,
          0.1,
        ),
      ),
    });
    const toFloat = [{ name: 'to', i: onnx.TensorProto.DataType.FLOAT, type: P.INT }];
    const file = join(dir, 'cast.onnx');
    writeFileSync(
      file,
      modelBytes({
        name: 'cast',
        initializer: [half('k16', [16, 8, 3, 3], 5), half('w16', [128, 32], 6)],
        node: [
          { opType: 'Cast', input: ['k16'], output: ['k'], attribute: toFloat },
          { opType: 'Conv', input: ['img', 'k'], output: ['c'], attribute: [{ name: 'pads', ints: [1, 1, 1, 1], type: P.INTS }] },
          { opType: 'Cast', input: ['w16'], output: ['w'], attribute: toFloat },
          { opType: 'MatMul', input: ['x', 'w'], output: ['y'] },
        ],
        input: [valueInfo('img', [1, 8, 10, 10]), valueInfo('x', [1, 128])],
        output: [valueInfo('c', [1, 16, 10, 10]), valueInfo('y', [1, 32])],
      }),
    );
    const layouts = layoutsOf(file);
    expect(layouts.k16).toMatchObject({ role: 'conv', reason: 'Conv weight (through Cast)' });
    expect(layouts.w16).toMatchObject({ role: 'fc', layout: { kind: 'fc', nin: 128, nout: 32, order: 'in_out' } });
    const r = await compressModel(file, join(dir, 'cast.nnm'));
    expect(r.compressedWeights).toBe(16 * 8 * 9 + 128 * 32);
    expect(r.quality?.passed).toBe(true);
    await decompressArchive(join(dir, 'cast.nnm'), join(dir, 'cast.out.onnx'));
    const back = openModel(join(dir, 'cast.out.onnx'));
    expect(back.tensors.map((t) => [t.key, t.dtype])).toEqual([
      ['k16', 'float16'],
      ['w16', 'float16'],
    ]);
    back.close();
    const session = await ort.InferenceSession.create(join(dir, 'cast.out.onnx'));
    const out = await session.run({
      img: new ort.Tensor('float32', new Float32Array(800).fill(0.5), [1, 8, 10, 10]),
      x: new ort.Tensor('float32', new Float32Array(128).fill(0.25), [1, 128]),
    });
    expect(out.y.dims).toEqual([1, 32]);
  });
});

describe('tables added to the activations', () => {
  it('a positional embedding (added directly or through Slice) is coded a range per row; a bias and a -inf mask stay kept', async () => {
    const dir = tempDir();
    const file = join(dir, 'added.onnx');
    const mask = new Float32Array(16 * 16).map((_, i) => (i % 16 > Math.floor(i / 16) ? -Infinity : 0));
    const i64 = (name: string, v: number): onnx.ITensorProto => ({
      name,
      dims: [1],
      dataType: onnx.TensorProto.DataType.INT64,
      int64Data: [v],
    });
    writeFileSync(
      file,
      modelBytes({
        name: 'added',
        initializer: [
          floatTensor('pos_embed', [1, 16, 32], gaussian(16 * 32, 11, 0.02)),
          floatTensor('positions', [64, 32], gaussian(64 * 32, 12, 0.02)),
          floatTensor('bias', [1, 32 * 16], gaussian(32 * 16, 13, 0.1)),
          floatTensor('mask', [16, 16], mask),
          floatTensor('Wv', [32, 16], gaussian(32 * 16, 14, 0.2)),
          i64('start', 0),
          i64('end', 16),
        ],
        node: [
          { opType: 'Add', input: ['x', 'pos_embed'], output: ['h0'] },
          { opType: 'Slice', input: ['positions', 'start', 'end'], output: ['p'] },
          { opType: 'Add', input: ['h0', 'p'], output: ['h'] },
          { opType: 'MatMul', input: ['h', 'Wv'], output: ['s'] },
          { opType: 'Add', input: ['s', 'mask'], output: ['y'] },
          { opType: 'Reshape', input: ['h', 'flat'], output: ['hf'] },
          { opType: 'Add', input: ['hf', 'bias'], output: ['z'] },
        ],
        input: [valueInfo('x', [1, 16, 32])],
        output: [valueInfo('y', [1, 16, 16]), valueInfo('z', [1, 512])],
      }),
    );
    // the Reshape's target shape as a constant node (an initializer of int64 would be a tensor of its own)
    const withShape = onnx.ModelProto.decode(readFileSync(file));
    withShape.graph!.node!.unshift({
      opType: 'Constant',
      output: ['flat'],
      attribute: [
        {
          name: 'value',
          t: { dims: [2], dataType: onnx.TensorProto.DataType.INT64, int64Data: [1, 512] },
          type: onnx.AttributeProto.AttributeType.TENSOR,
        },
      ],
    });
    writeFileSync(file, onnx.ModelProto.encode(withShape).finish());
    const layouts = layoutsOf(file);
    expect(layouts.pos_embed).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 16, nin: 32, order: 'out_in' } });
    expect(layouts.pos_embed.reason).toMatch(/^Add table/);
    expect(layouts.positions).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 64, nin: 32, order: 'out_in' } });
    expect(layouts.positions.reason).toMatch(/through Slice/);
    expect(layouts.bias.role).toBe('other');
    const r = await compressModel(file, join(dir, 'added.nnm'));
    // the mask is a table by shape, but -inf: kept (it was never a weight), exactly
    expect(r.compressedWeights).toBe(16 * 32 + 64 * 32 + 32 * 16);
    expect(r.quality).toMatchObject({ checked: true, passed: true });
    await decompressArchive(join(dir, 'added.nnm'), join(dir, 'back.onnx'));
    const back = openModel(join(dir, 'back.onnx'));
    try {
      const m = back.tensors.find((t) => t.name === 'mask')!;
      expect(Array.from(back.read(m.key))).toEqual(Array.from(mask));
    } finally {
      back.close();
    }
  });
});

describe('what an Add of a constant is not', () => {
  it('anchors on a lattice, a bias with a unit axis, and a layer weight also added somewhere stay what they were', () => {
    const dir = tempDir();
    const file = join(dir, 'not-tables.onnx');
    // YOLOv8's anchor points (half-integers, [1, 2, N]) added to box offsets
    const anchors = new Float32Array(2 * 256).map((_, i) => (i % 16) + 0.5);
    writeFileSync(
      file,
      modelBytes({
        name: 'not-tables',
        initializer: [
          floatTensor('anchors', [1, 2, 256], anchors),
          floatTensor('colbias', [1, 64, 32, 1], gaussian(64 * 32, 21, 0.1)),
          floatTensor('W', [64, 32], gaussian(64 * 32, 22, 0.1)),
        ],
        node: [
          { opType: 'Add', input: ['boxes', 'anchors'], output: ['b'] },
          { opType: 'Add', input: ['fmap', 'colbias'], output: ['f'] },
          { opType: 'Add', input: ['a', 'W'], output: ['aw'] },
          { opType: 'MatMul', input: ['x', 'W'], output: ['y'] },
        ],
        input: [
          valueInfo('boxes', [1, 2, 256]),
          valueInfo('fmap', [1, 64, 32, 8]),
          valueInfo('a', [64, 32]),
          valueInfo('x', [1, 64]),
        ],
        output: [valueInfo('b', [1, 2, 256]), valueInfo('f', [1, 64, 32, 8]), valueInfo('aw', [64, 32]), valueInfo('y', [1, 32])],
      }),
    );
    const reader = openModel(file);
    try {
      const plans = Object.fromEntries(planTensors(reader).map((p) => [p.entry.name, p]));
      expect(plans.anchors).toMatchObject({ kind: 'kept' });
      expect(plans.anchors.reason).toMatch(/lattice of 1\/256/);
      expect(plans.colbias).toMatchObject({ kind: 'kept' });
      // the MatMul's layout (a range per output column), though the Add comes first in the graph
      expect(plans.W).toMatchObject({ kind: 'coded', layout: { kind: 'fc', nin: 64, nout: 32, order: 'in_out' } });
    } finally {
      reader.close();
    }
  });
});

describe('a plain RNN', () => {
  it('W and R are coded with a range per hidden unit, and the model passes the gate', async () => {
    const dir = tempDir();
    const P = onnx.AttributeProto.AttributeType;
    const file = join(dir, 'rnn.onnx');
    writeFileSync(
      file,
      modelBytes({
        name: 'rnn',
        initializer: [
          floatTensor('W', [2, 48, 24], gaussian(2 * 48 * 24, 7, 0.2)),
          floatTensor('R', [2, 48, 48], gaussian(2 * 48 * 48, 8, 0.1)),
          floatTensor('B', [2, 96], gaussian(2 * 96, 9, 0.1)),
        ],
        node: [
          {
            opType: 'RNN',
            input: ['x', 'W', 'R', 'B'],
            output: ['y'],
            attribute: [
              { name: 'hidden_size', i: 48, type: P.INT },
              { name: 'direction', s: new TextEncoder().encode('bidirectional'), type: P.STRING },
            ],
          },
        ],
        input: [valueInfo('x', [6, 1, 24])],
        output: [valueInfo('y', [6, 2, 1, 48])],
      }),
    );
    const layouts = layoutsOf(file);
    expect(layouts.W).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 96, nin: 24, order: 'out_in' } });
    expect(layouts.R).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 96, nin: 48, order: 'out_in' } });
    const r = await compressModel(file, join(dir, 'rnn.nnm'));
    expect(r.compressedWeights).toBe(2 * 48 * 24 + 2 * 48 * 48);
    expect(r.quality).toMatchObject({ checked: true, passed: true });
  });
});

describe("onnxruntime's contrib ops (com.microsoft)", () => {
  it('the weights of FusedConv, FusedMatMul, Attention and EmbedLayerNormalization are coded, and the model passes the gate', async () => {
    // a model saved after onnxruntime's optimizations (or its transformer optimizer) holds fused contrib ops
    // instead of Conv, MatMul and Gather: their weights were kept whole as unknown uses
    const dir = tempDir();
    const P = onnx.AttributeProto.AttributeType;
    const H = 32;
    const graph: onnx.IGraphProto = {
      name: 'contrib',
      initializer: [
        floatTensor('word', [100, H], gaussian(100 * H, 1, 0.1)),
        floatTensor('pos', [16, H], gaussian(16 * H, 2, 0.1)),
        floatTensor('gamma', [H], new Float32Array(H).fill(1)),
        floatTensor('beta', [H], new Float32Array(H)),
        floatTensor('qkv', [H, 3 * H], gaussian(H * 3 * H, 3, 0.1)),
        floatTensor('qkv_b', [3 * H], new Float32Array(3 * H)),
        floatTensor('w2', [16, H], gaussian(16 * H, 4, 0.1)),
        floatTensor('k', [8, 4, 3, 3], gaussian(8 * 4 * 9, 5, 0.1)),
        floatTensor('kb', [8], new Float32Array(8)),
      ],
      node: [
        {
          opType: 'EmbedLayerNormalization',
          domain: 'com.microsoft',
          input: ['ids', '', 'word', 'pos', '', 'gamma', 'beta'],
          output: ['emb', 'mask_index'],
          attribute: [{ name: 'epsilon', f: 1e-5, type: P.FLOAT }],
        },
        {
          opType: 'Attention',
          domain: 'com.microsoft',
          input: ['emb', 'qkv', 'qkv_b'],
          output: ['att'],
          attribute: [{ name: 'num_heads', i: 4, type: P.INT }],
        },
        // B stored [N, K]: transB
        {
          opType: 'FusedMatMul',
          domain: 'com.microsoft',
          input: ['att', 'w2'],
          output: ['y'],
          attribute: [
            { name: 'alpha', f: 1, type: P.FLOAT },
            { name: 'transB', i: 1, type: P.INT },
          ],
        },
        {
          opType: 'FusedConv',
          domain: 'com.microsoft',
          input: ['img', 'k', 'kb'],
          output: ['c'],
          attribute: [
            { name: 'pads', ints: [1, 1, 1, 1], type: P.INTS },
            { name: 'activation', s: new TextEncoder().encode('Relu'), type: P.STRING },
          ],
        },
      ],
      input: [valueInfo('ids', [1, 8], onnx.TensorProto.DataType.INT32), valueInfo('img', [1, 4, 8, 8])],
      output: [valueInfo('y', [1, 8, 16]), valueInfo('c', [1, 8, 8, 8])],
    };
    const file = join(dir, 'contrib.onnx');
    writeFileSync(
      file,
      onnx.ModelProto.encode({
        irVersion: 8,
        opsetImport: [
          { domain: '', version: 17 },
          { domain: 'com.microsoft', version: 1 },
        ],
        producerName: 'nnmedia-test',
        graph,
      }).finish(),
    );
    const layouts = layoutsOf(file);
    expect(layouts.k).toMatchObject({ role: 'conv', reason: 'FusedConv weight' });
    expect(layouts.w2).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 16, nin: H, order: 'out_in' } });
    expect(layouts.qkv).toMatchObject({ role: 'fc', layout: { kind: 'fc', nin: H, nout: 3 * H, order: 'in_out' } });
    expect(layouts.word).toMatchObject({ role: 'fc', layout: { kind: 'fc', nout: 100, nin: H, order: 'out_in' } });
    expect(layouts.pos.reason).toMatch(/EmbedLayerNormalization position table/);
    expect(layouts.qkv_b.role).not.toBe('fc');
    const r = await compressModel(file, join(dir, 'contrib.nnm'));
    expect(r.compressedWeights).toBe(100 * H + 16 * H + H * 3 * H + 16 * H + 8 * 4 * 9);
    expect(r.quality).toMatchObject({ checked: true, passed: true });
  });
});

describe('a model from quantization-aware training (float weights behind QuantizeLinear → DequantizeLinear)', () => {
  it('its weights are coded as the layers they reach, and the model passes the gate', async () => {
    // PyTorch's and TensorRT's QAT exports keep float weights and quantize them at run time: every kernel sat
    // behind a QuantizeLinear, was kept whole and exact (the graph rounds), and the archive was float32's size
    const dir = tempDir();
    const T = onnx.TensorProto.DataType;
    const P = onnx.AttributeProto.AttributeType;
    const k = gaussian(16 * 8 * 9, 11, 0.1);
    const scale = new Float32Array(16).map((_, c) => Math.max(...k.subarray(c * 72, c * 72 + 72).map(Math.abs)) / 127);
    const w = gaussian(72 * 32, 12, 0.1);
    const int8 = (name: string, dims: number[]): onnx.ITensorProto => ({
      name,
      dims,
      dataType: T.INT8,
      rawData: new Uint8Array(dims.reduce((a, b) => a * b, 1)),
    });
    const axis0 = [{ name: 'axis', i: 0, type: P.INT }];
    const file = join(dir, 'qat.onnx');
    writeFileSync(
      file,
      modelBytes({
        name: 'qat',
        initializer: [
          floatTensor('k', [16, 8, 3, 3], k),
          floatTensor('k_scale', [16], scale),
          int8('k_zero', [16]),
          floatTensor('w', [72, 32], w),
          floatTensor('w_scale', [], Float32Array.of(0.3 / 127)),
          int8('w_zero', []),
          floatTensor('a_scale', [], Float32Array.of(4 / 127)),
          int8('a_zero', []),
        ],
        node: [
          { opType: 'QuantizeLinear', input: ['img', 'a_scale', 'a_zero'], output: ['img_q'] },
          { opType: 'DequantizeLinear', input: ['img_q', 'a_scale', 'a_zero'], output: ['img_d'] },
          { opType: 'QuantizeLinear', input: ['k', 'k_scale', 'k_zero'], output: ['k_q'], attribute: axis0 },
          { opType: 'DequantizeLinear', input: ['k_q', 'k_scale', 'k_zero'], output: ['k_d'], attribute: axis0 },
          {
            opType: 'Conv',
            input: ['img_d', 'k_d'],
            output: ['c'],
            attribute: [{ name: 'pads', ints: [1, 1, 1, 1], type: P.INTS }],
          },
          { opType: 'QuantizeLinear', input: ['w', 'w_scale', 'w_zero'], output: ['w_q'] },
          { opType: 'DequantizeLinear', input: ['w_q', 'w_scale', 'w_zero'], output: ['w_d'] },
          { opType: 'MatMul', input: ['x', 'w_d'], output: ['y'] },
        ],
        input: [valueInfo('img', [1, 8, 10, 10]), valueInfo('x', [1, 72])],
        output: [valueInfo('c', [1, 16, 10, 10]), valueInfo('y', [1, 32])],
      }),
    );
    const layouts = layoutsOf(file);
    expect(layouts.k).toMatchObject({ role: 'conv', reason: 'Conv weight (through QuantizeLinear, DequantizeLinear)' });
    expect(layouts.w).toMatchObject({ role: 'fc', layout: { kind: 'fc', nin: 72, nout: 32, order: 'in_out' } });
    expect(layouts.k_scale.role).toBe('other');
    const r = await compressModel(file, join(dir, 'qat.nnm'));
    expect(r.compressedWeights).toBe(16 * 8 * 9 + 72 * 32);
    expect(r.quality).toMatchObject({ checked: true, passed: true });
    expect(r.quality!.fidelity!).toBeGreaterThan(0.95);
  });
});

/** IEEE float16 bits of each value (round to nearest; values under float16's normal range become ±0). */
function halfBytes(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  values.forEach((v, i) => {
    const a = Math.abs(v);
    const sign = v < 0 ? 0x8000 : 0;
    if (a < 2 ** -14) return void (out[i] = sign);
    let e = Math.floor(Math.log2(a));
    let m = Math.round((a / 2 ** e - 1) * 1024);
    if (m === 1024) [e, m] = [e + 1, 0];
    out[i] = sign | ((e + 15) << 10) | m;
  });
  return new Uint8Array(out.buffer);
}

/** Each tensor's classification by key, as compress plans it. */
function layoutsOf(file: string): Record<string, ReturnType<typeof classifyTensor>> {
  const reader = openModel(file);
  try {
    return Object.fromEntries(reader.tensors.map((t) => [t.key, classifyTensor(t, 'onnx')]));
  } finally {
    reader.close();
  }
}
