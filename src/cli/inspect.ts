import { describeQuality } from '../pipeline/gate.js';
import { codedParts, tileEntries } from '../archive/manifest.js';
import { elementCount } from '../formats/model.js';
import { BYTES_PER_ELEMENT } from '../formats/model.js';
import { planeShapes } from '../layout/planes.js';
import { Archive } from '../archive/node.js';
import { openModel } from '../formats/registry.js';
import { DEFAULT_SLICE_WEIGHTS } from '../pipeline/options.js';
import { planTensors, slicesOf } from '../pipeline/plan.js';
import { isZipFile } from '../archive/zip.js';
import { getFfmpegInfo } from './ffmpeg-info.js';
import { formatTable } from './table.js';

export async function inspectPath(file: string, json: boolean): Promise<void> {
  if (isZipFile(file)) return inspectArchive(file, json);
  const reader = openModel(file);
  try {
    const plans = planTensors(reader, {});
    const rows = plans.map((p) => ({
      name: p.entry.name,
      role: p.role,
      reason: p.reason,
      dtype: p.entry.dtype,
      shape: p.entry.shape,
      bytes: elementCount(p.entry.shape) * BYTES_PER_ELEMENT[p.entry.dtype],
      planes: p.kind === 'coded' ? planeShapes(p.layout).map((s) => `${s.rows}×${s.cols}`) : [],
      // coded in this many slices at the default slice size (memory follows the slice)
      slices: slicesOf(p, DEFAULT_SLICE_WEIGHTS)?.length ?? 1,
    }));
    if (json) {
      console.log(JSON.stringify({ file, format: reader.format, tensors: rows }, null, 1));
      return;
    }
    console.log(`${file}: ${reader.format}, ${rows.length} float tensors\n`);
    console.log(
      formatTable(
        ['tensor', 'role', 'shape', 'dtype', 'bytes', 'media geometry', 'why'],
        rows.map((r) => [
          r.name,
          r.role,
          r.shape.join('×'),
          r.dtype,
          String(r.bytes),
          (r.planes.length > 1 ? `${r.planes.length} × ${r.planes[0]}` : (r.planes[0] ?? 'kept exact')) +
            (r.slices > 1 ? ` in ${r.slices} slices` : ''),
          r.reason,
        ]),
      ),
    );
  } finally {
    reader.close();
  }
}

function inspectArchive(file: string, json: boolean): void {
  const a = new Archive(file);
  try {
    const m = a.manifest;
    const sizes = a.entrySizes();
    const rows = m.tensors.map((t) => {
      const n = elementCount(t.shape);
      const bytes = [...tileEntries(t)].reduce((s, e) => s + (sizes.get(e) ?? 0), 0);
      // a sliced tensor: its slices' geometry and codecs (auto can pick a different one per slice)
      const parts = codedParts(t).map((c) => c.record);
      const codecs = [
        ...new Set(
          parts
            .filter((c) => c.codec)
            .map((c) => `${c.codec!.name}${c.codec!.lossless ? ' lossless' : ` q${c.codec!.quality ?? ''}`}`),
        ),
      ];
      const geometry = (parts[0].planes ?? []).map(
        (p) => `${p.rows}×${p.cols}${p.tiles.length > 1 ? ` in ${p.tiles.length} tiles` : ''}`,
      );
      return {
        name: t.name,
        role: t.role,
        shape: t.shape,
        geometry: t.slices ? geometry.map((g) => `${t.slices!.length} slices, the first ${g}`) : geometry,
        codec: t.sameAs ? `same as ${t.sameAs}` : codecs.length ? codecs.join(' / ') : t.half ? 'kept as float16' : 'kept exact',
        bits: parts[0].quant?.bits,
        range: parts[0].quant?.range,
        bytes,
        bitsPerWeight: t.layout ? (bytes * 8) / n : undefined,
        stats: t.stats,
      };
    });
    const info = {
      file,
      source: m.source,
      createdBy: m.createdBy,
      options: m.options,
      quality: m.quality,
      ffmpeg: getFfmpegInfo(),
      tensors: rows,
    };
    if (json) {
      console.log(JSON.stringify(info, (_k, v) => (v === Infinity ? 'Infinity' : v), 1));
      return;
    }
    const ff = info.ffmpeg;
    console.log(`${file}: ${m.createdBy}, ${m.source.format} source ${m.source.file} (${m.source.bytes} bytes)`);
    console.log(`ffmpeg for video/audio: ${ff ? `${ff.path} (${ff.version}, ${ff.source})` : 'none found'}`);
    const q = m.quality;
    console.log(
      q ? `quality: ${describeQuality(q)}${q.calibration ? `\n  calibration: ${q.calibration}` : ''}` : 'quality: not recorded',
    );
    if (q?.untakenBranches?.length) console.log(`  branches never taken (default grid): ${q.untakenBranches.join(', ')}`);
    console.log('');
    console.log(
      formatTable(
        ['tensor', 'role', 'shape', 'media geometry', 'codec', 'bits', 'bytes', 'bits/w', 'max abs', 'RMSE', 'SNR dB'],
        rows.map((r) => [
          r.name,
          r.role,
          r.shape.join('×'),
          r.geometry.length > 1 ? `${r.geometry.length} × ${r.geometry[0]}` : (r.geometry[0] ?? ''),
          r.codec,
          r.bits ? String(r.bits) : '',
          String(r.bytes),
          r.bitsPerWeight !== undefined ? r.bitsPerWeight.toFixed(2) : '',
          r.stats ? r.stats.maxAbs.toExponential(2) : '',
          r.stats ? r.stats.rmse.toExponential(2) : '',
          r.stats ? (Number.isFinite(r.stats.snrDb) ? r.stats.snrDb.toFixed(1) : '∞') : '',
        ]),
      ),
    );
  } finally {
    a.close();
  }
}
