/**
 * A model of quantization-aware training holds float weights the graph rounds onto int8 at run time
 * (QuantizeLinear → DequantizeLinear): coded on the model's own grid, its decompressed model computes exactly what
 * the original computes (pipeline/model-grid.ts).
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { compressModel, decompressArchive } from '../src/index.js';
import { openOnnx } from '../src/formats/onnx/reader.js';
import { archiveTotals } from '../src/cli/totals.js';
import { qatModel } from './helpers/onnx-builder.js';
import { gaussian } from './helpers/random.js';
import { tempDir } from './helpers/tmp.js';

const dir = tempDir();

/** The largest |Δ| of the two models' logits over `n` inputs. */
async function largestChange(a: string, b: string, n = 64): Promise<number> {
  const sa = await ort.InferenceSession.create(a);
  const sb = await ort.InferenceSession.create(b);
  let most = 0;
  for (let k = 0; k < n; k++) {
    const feed = { x: new ort.Tensor('float32', gaussian(64, 1000 + k, 1), [1, 64]) };
    const ya = (await sa.run(feed)).logits.data as Float32Array;
    const yb = (await sb.run(feed)).logits.data as Float32Array;
    for (let i = 0; i < ya.length; i++) most = Math.max(most, Math.abs(ya[i] - yb[i]));
  }
  return most;
}

describe("a QAT model's weights on its own int8 grid", () => {
  for (const [label, options] of [
    ['int8, a scale per output channel that clips', { clip: 0.6 }],
    ['uint8, one scale, zero point 128', { uint8: true, clip: 0.8 }],
    // (a negative axis was read as an unsigned varint, 2^64, and never matched)
    ['int8, the axis given as −1', { clip: 0.6, axis: -1 }],
  ] as const)
    it(`${label}: the decompressed model computes exactly what the original does (its logits moved by up to 0.1)`, async () => {
      const name = 'uint8' in options ? 'qat-u8' : 'axis' in options ? 'qat-neg' : 'qat';
      const model = join(dir, `${name}.onnx`);
      writeFileSync(model, qatModel(options).bytes);
      const reader = openOnnx(model);
      const w0 = reader.tensors.find((t) => t.name === 'w0')!;
      expect(w0.quantizedBy).toMatchObject(
        'uint8' in options ? { axis: -1, signed: false, zeroPoints: [128] } : { axis: 1, signed: true },
      );
      // the scales are not weights of their own: kept exact
      const archive = join(dir, `${name}.nnm`);
      const r = await compressModel(model, archive, { jobs: 1 });
      expect(r.quality!.fidelity).toBe(1);
      // recorded, and said by compress
      expect(archiveTotals(r.manifest, r.archiveBytes).modelGrid).toBe(3);
      expect(r.manifest.tensors.find((t) => t.name === 'w0')!.quant).toMatchObject({ modelGrid: true, bits: 8 });
      const out = join(dir, `${name}.out.onnx`);
      await decompressArchive(archive, out);
      expect(await largestChange(model, out)).toBe(0);
      // every integer the model's QuantizeLinear makes of the decoded weights is the original's
      const back = openOnnx(out);
      for (const l of [0, 1, 2]) {
        const w = reader.read(`w${l}`);
        const v = back.read(`w${l}`);
        const s = reader.read(`w${l}.scale`);
        const q = (x: number, i: number): number => Math.round(x / s[s.length === 1 ? 0 : i % s.length]);
        let moved = 0;
        for (let i = 0; i < w.length; i++)
          if (Math.max(-128, Math.min(127, q(w[i], i))) !== Math.max(-128, Math.min(127, q(v[i], i)))) moved++;
        expect(moved).toBe(0);
      }
      expect(readFileSync(out).length).toBeGreaterThan(0);
    }, 60_000);

  it('a plain weight of the same values is not one with it: it keeps a grid of its own (it took the clipped grid, 17 dB)', async () => {
    const model = join(dir, 'qat-twin.onnx');
    writeFileSync(model, qatModel({ twin: true }).bytes);
    const r = await compressModel(model, join(dir, 'qat-twin.nnm'), { jobs: 1 });
    const twin = r.manifest.tensors.find((t) => t.name === 'w0.twin')!;
    expect(twin.sameAs).toBeUndefined();
    expect(twin.quant!.modelGrid).toBeUndefined();
    expect(r.manifest.tensors.find((t) => t.name === 'w0')!.quant!.modelGrid).toBe(true);
    expect(twin.stats!.snrDb).toBeGreaterThan(35);
  }, 60_000);

  it('another grid than the default (a step grid) is quantized as any weight: the QuantizeLinear rounds what it decodes to', async () => {
    const model = join(dir, 'qat-step.onnx');
    writeFileSync(model, qatModel().bytes);
    const archive = join(dir, 'qat-step.nnm');
    const r = await compressModel(model, archive, { jobs: 1, relStep: 0.25, minFidelity: 0 });
    expect(r.manifest.tensors.find((t) => t.name === 'w0')!.quant!.modelGrid).toBeUndefined();
    const out = join(dir, 'qat-step.out.onnx');
    await decompressArchive(archive, out);
    expect(await largestChange(model, out)).toBeGreaterThan(0);
  }, 60_000);
});
