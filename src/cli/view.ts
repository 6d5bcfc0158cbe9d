/**
 * `nnmedia view`: a local page that shows a network as pictures — every layer's
 * images (zoomable, pixels kept sharp so conv kernels show as their tiles), its
 * code histogram, bits/weight and recorded error, with the original model
 * given its error map (|w − ŵ| per weight, laid out like the layer's picture),
 * and the model's rate–distortion plot when a benchmark result is given.
 * Static files only, served from memory on 127.0.0.1.
 */

import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { Archive } from '../archive/node.js';
import { decodeTensor } from '../pipeline/decompress.js';
import { elementCount, rowElements } from '../formats/model.js';
import { openModel } from '../formats/registry.js';
import { gatherPlanes } from '../layout/planes.js';
import { codedParts, type TensorRecord } from '../archive/manifest.js';
import { UnsupportedError } from '../errors.js';

const IMAGE_MIME: Record<string, string> = { png: 'image/png', webp: 'image/webp', avif: 'image/avif', jpeg: 'image/jpeg' };

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface ViewerOptions {
  /** A benchmark's rate–distortion plot (PNG) to show on top. */
  plot?: string;
  /** The original model: each layer gets its error map. */
  model?: string;
}

/**
 * Error maps of a tensor: |original − restored| per weight, laid out as the layer's planes, as
 * grey PNGs scaled so white is the tensor's largest error.
 */
async function errorMaps(a: Archive, t: TensorRecord, original: Float32Array): Promise<{ pngs: Uint8Array[]; maxErr: number }> {
  const restored = await decodeTensor(a, t.sameAs ? a.manifest.tensors.find((x) => x.key === t.sameAs)! : t);
  const err = new Float32Array(original.length);
  let maxErr = 0;
  for (let i = 0; i < err.length; i++) {
    const e = Math.abs(original[i] - restored[i]);
    err[i] = Number.isFinite(e) ? e : 0;
    if (err[i] > maxErr) maxErr = err[i];
  }
  const planes = gatherPlanes(err, t.layout!, (n) => new Float32Array(n));
  const pngs = await Promise.all(
    planes.map((pl, k) => {
      const grey = Uint8Array.from(pl, (e) => (maxErr > 0 ? Math.round((255 * e) / maxErr) : 0));
      const { rows, cols } = t.planes![k];
      return sharp(grey, { raw: { width: cols, height: rows, channels: 1 } })
        .png()
        .toBuffer();
    }),
  );
  return { pngs, maxErr };
}

/** The page and the files it refers to (entry images, error maps, optional plot), keyed by URL path. */
export async function buildViewer(
  archivePath: string,
  options: ViewerOptions = {},
): Promise<Map<string, { type: string; body: Uint8Array }>> {
  const plotPng = options.plot;
  const files = new Map<string, { type: string; body: Uint8Array }>();
  const a = new Archive(archivePath);
  const model = options.model ? openModel(options.model) : undefined;
  try {
    const m = a.manifest;
    const sizes = a.entrySizes();
    const cards: string[] = [];
    // a sliced tensor shows as one card per slice
    for (const { record: t, offset, whole } of m.tensors.flatMap((w) => codedParts(w).map((c) => ({ ...c, whole: w })))) {
      if (!t.layout || !t.planes || !t.codec) continue;
      const n = elementCount(t.shape);
      const bytes = t.planes.flatMap((p) => p.tiles).reduce((s, x) => s + (sizes.get(x.entry) ?? 0), 0);
      const mime = IMAGE_MIME[t.codec.name];
      const images = t.planes
        .map((p, k) => {
          if (!mime)
            return `<div class="note">plane ${k} (${p.rows}×${p.cols}) is ${t.codec!.media} (${t.codec!.name}): not shown as a picture</div>`;
          return p.tiles
            .map((tile, j) => {
              const url = `/media/${encodeURIComponent(tile.entry)}`;
              if (!files.has(url)) files.set(url, { type: mime, body: a.entry(tile.entry) });
              return `<figure><img src="${url}" alt="${escapeHtml(`${t.name} ${p.label}`)}" data-bits="${t.quant?.bits}" width="${tile.cols}" height="${tile.rows}"><figcaption>${escapeHtml(p.label)}${p.tiles.length > 1 ? ` tile ${j}` : ''}: ${tile.rows}×${tile.cols}</figcaption></figure>`;
            })
            .join('');
        })
        .join('');
      let errors = '';
      const original = model?.tensors.find((x) => x.key === t.key);
      if (model && !original)
        throw new UnsupportedError(`the model has no tensor ${t.key}: not the archive's source`, { file: options.model });
      if (model && original) {
        if (original.shape.join('x') !== whole.shape.join('x'))
          throw new UnsupportedError(`shape [${original.shape}] differs from the archive's [${whole.shape}]`, {
            file: options.model,
            tensor: t.name,
          });
        const values = whole.slices ? model.readRows(t.key, offset / rowElements(whole.shape), t.shape[0]) : model.read(t.key);
        const { pngs, maxErr } = await errorMaps(a, t, values);
        errors = `<div class="errors">${pngs
          .map((png, k) => {
            const url = `/error/${cards.length}-${k}.png`;
            files.set(url, { type: 'image/png', body: png });
            return `<figure><img class="err" src="${url}" alt="${escapeHtml(`error map of ${t.name} ${t.planes![k].label}`)}" width="${t.planes![k].cols}" height="${t.planes![k].rows}"><figcaption>|error| of ${escapeHtml(t.planes![k].label)} (white = ${maxErr.toExponential(2)})</figcaption></figure>`;
          })
          .join('')}</div>`;
      }
      const s = t.stats;
      cards.push(`<section class="layer"><h2>${escapeHtml(t.name)}</h2>
<p>${t.role} · shape ${t.shape.join('×')} · ${t.codec.name}${t.codec.lossless ? ' lossless' : ` q${t.codec.quality ?? ''}`} · ${t.quant?.bits}-bit codes · ${bytes} bytes · <b>${((bytes * 8) / n).toFixed(2)} bits/weight</b>${s ? ` · max |err| ${s.maxAbs.toExponential(2)} · SNR ${Number.isFinite(s.snrDb) ? s.snrDb.toFixed(1) : '∞'} dB` : ''}</p>
<div class="images">${images}</div>${errors}<canvas class="hist" width="256" height="60"></canvas></section>`);
    }
    if (plotPng) files.set('/rd.png', { type: 'image/png', body: readFileSync(plotPng) });
    const page = `<!doctype html><meta charset="utf-8"><title>nnmedia view: ${escapeHtml(m.source.file)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
.layer{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.layer h2{font-size:15px;margin:4px 0}
.images{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure{margin:0}
img{image-rendering:pixelated;min-width:96px;max-width:480px;height:auto;border:1px solid #ccc;cursor:zoom-in}
img.zoom{max-width:none;width:auto;transform-origin:top left;cursor:zoom-out}
figcaption{font-size:11px;color:#666}
.hist{display:block;margin-top:4px;background:#f3f3f3}
.errors{display:flex;flex-wrap:wrap;gap:8px;margin-top:6px}
</style>
<h1>${escapeHtml(m.source.file)} as pictures</h1>
<p>${escapeHtml(m.createdBy)} · ${m.tensors.filter((t) => t.layout).length} compressed tensors · pixel (row, column) = (input, output) code; conv kernels are Kx×Ky tiles. Click an image to zoom.</p>
${plotPng ? '<img src="/rd.png" alt="rate–distortion plot" style="max-width:760px;image-rendering:auto">' : ''}
${cards.join('\n')}
<script>
for (const img of document.querySelectorAll('.images img, .errors img')) {
  img.addEventListener('click', () => { img.classList.toggle('zoom'); img.style.width = img.classList.contains('zoom') ? img.naturalWidth * 8 + 'px' : ''; });
}
// code histogram of each layer, read back from its images
for (const sec of document.querySelectorAll('.layer')) {
  const imgs = [...sec.querySelectorAll('img')];
  const canvas = sec.querySelector('canvas.hist');
  Promise.all(imgs.map((i) => i.decode().then(() => i))).then((list) => {
    const h = new Float64Array(256);
    for (const i of list) {
      const c = new OffscreenCanvas(i.naturalWidth, i.naturalHeight).getContext('2d');
      c.drawImage(i, 0, 0);
      const d = c.getImageData(0, 0, i.naturalWidth, i.naturalHeight).data;
      for (let k = 0; k < d.length; k += 4) h[d[k]]++;
    }
    const max = Math.max(...h);
    const g = canvas.getContext('2d');
    g.fillStyle = '#4a78c2';
    h.forEach((v, k) => { const y = max ? (v / max) * 60 : 0; g.fillRect(k, 60 - y, 1, y); });
    sec.dataset.histogram = 'done';
  });
}
document.body.dataset.ready = 'true';
</script>`;
    files.set('/', { type: 'text/html; charset=utf-8', body: Buffer.from(page) });
    return files;
  } finally {
    a.close();
    model?.close?.();
  }
}

/** Serves the viewer on 127.0.0.1 (port 0: any free port); resolves with the server and its URL. */
export async function serveViewer(
  archivePath: string,
  port = 0,
  options: ViewerOptions = {},
): Promise<{ server: Server; url: string }> {
  const files = await buildViewer(archivePath, options);
  const server = createServer((req, res) => {
    const f = files.get(
      decodeURIComponent((req.url ?? '/').split('?')[0]).replace(
        /^\/media\/(.*)$/,
        (_, e: string) => `/media/${encodeURIComponent(e)}`,
      ),
    );
    if (!f) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-store' });
    res.end(f.body);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/` };
}
