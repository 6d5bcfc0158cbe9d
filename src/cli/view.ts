/**
 * `nnmedia view`: a local page that shows a network as pictures. A summary (model, sizes, ratio,
 * bits/weight, fidelity), an overview of every coded layer in graph order (bits/weight and SNR as bars,
 * each linking to its layer), then one card per layer on a grid as wide as the window: its planes as
 * pictures — decoded in Node through the codec registry, so video shows its frames and audio its signal
 * too — its code histogram with axes and, given the original model, its error map
 * (|w − ŵ| per weight, laid out like the layer's picture). Static files only, served from memory on
 * 127.0.0.1.
 */

import { createServer, type Server } from 'node:http';
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import { availableParallelism } from 'node:os';
import { sharp } from '../codecs/image/sharp-io.js';
import { Archive } from '../archive/node.js';
import { decodeTensor } from '../pipeline/decompress.js';
import { elementCount, rowElements } from '../formats/model.js';
import { openModel } from '../formats/registry.js';
import { archiveScopes } from '../report/scopes.js';
import { fsReason, readInputFile } from '../io/files.js';
import { checkSourceModel } from '../archive/source-model.js';
import { MAX_FRAME_AREA } from '../layout/blocks.js';
import { gatherPlanes } from '../layout/planes.js';
import { channelView, gatherChannels, keptChannels } from '../layout/channels.js';
import { zeroChannelsOf } from '../archive/decode.js';
import { pasteTile } from '../layout/tiles.js';
import { codedParts, ownEntries, type PlaneRecord, type TensorRecord } from '../archive/manifest.js';
import { getCodec } from '../codecs/registry.js';
import { allocCodes, type CodeArray } from '../quantize/uniform.js';
import { CorruptArchiveError, IoError, OptionError, UnsupportedError } from '../errors.js';
import { onnxGraphOrder } from './graph-order.js';
import { runOrdered } from '../pipeline/pool.js';

export interface ViewerOptions {
  /** A benchmark's rate–distortion plot (PNG) to show on top. */
  plot?: string;
  /** The original model: each layer gets its error map. */
  model?: string;
}

/** Pictures larger than this many pixels are shown scaled down (nearest neighbour). */
const MAX_PIXELS = 4_000_000;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmt(n: number): string {
  return n.toLocaleString('en-US');
}

function compact(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n));
}

function snrText(db: number | undefined): string {
  if (db === undefined) return '–';
  return Number.isFinite(db) ? db.toFixed(1) : '∞';
}

interface DecodedPlane {
  record: PlaneRecord;
  /** The plane's codes with every tile (or video block) pasted in place: rows × cols. */
  codes: CodeArray;
  /** Video: the stream as the codec coded it, `count` frames of rows × cols stacked. */
  frames?: { rows: number; cols: number; count: number; codes: CodeArray };
  /** Audio: the samples, tile after tile, in the order the codec coded them. */
  signal?: CodeArray;
}

/** The codes of every plane of a coded tensor (or slice), decoded from its media entries. */
async function decodePlanes(a: Archive, t: TensorRecord): Promise<DecodedPlane[]> {
  const codec = getCodec(t.codec!.name, { file: a.file, tensor: t.name });
  const bits = t.quant!.bits;
  const bad = (message: string): never => {
    throw new CorruptArchiveError(message, { file: a.file, tensor: t.name });
  };
  const decode = async (entry: string, expected: Parameters<typeof codec.decode>[1]): Promise<CodeArray> => {
    try {
      return await codec.decode(a.entry(entry, t.name), expected);
    } catch (e) {
      if (e instanceof CorruptArchiveError) throw e;
      return bad(`cannot decode ${entry}: ${(e as Error).message}`);
    }
  };
  const out: DecodedPlane[] = [];
  for (const [p, pr] of t.planes!.entries()) {
    const codes = allocCodes(bits, pr.rows * pr.cols);
    if (pr.frame) {
      const f = pr.frame;
      if (f.count !== pr.tiles.length || f.rows * f.cols * f.count > MAX_FRAME_AREA(pr.rows * pr.cols))
        bad(`plane ${p} has an implausible frame geometry`);
      const stream = await decode(pr.tiles[0].entry, { width: f.cols, height: f.rows * f.count, bits, frames: f.count });
      for (const tile of pr.tiles) {
        const k = tile.frame ?? 0;
        if (k < 0 || k >= f.count || tile.rows > f.rows || tile.cols > f.cols) bad(`bad frame record in plane ${p}`);
        for (let r = 0; r < tile.rows; r++)
          codes.set(
            stream.subarray((k * f.rows + r) * f.cols, (k * f.rows + r) * f.cols + tile.cols),
            (tile.row + r) * pr.cols + tile.col,
          );
      }
      out.push({ record: pr, codes, frames: { ...f, codes: stream } });
      continue;
    }
    const audio = codec.media === 'audio';
    const signal = audio ? allocCodes(bits, pr.rows * pr.cols) : undefined;
    let at = 0;
    for (const tile of pr.tiles) {
      const back = await decode(tile.entry, { width: tile.cols, height: tile.rows, bits });
      if (back.length !== tile.rows * tile.cols)
        bad(`${tile.entry} decoded to ${back.length} codes, not ${tile.rows}×${tile.cols}`);
      pasteTile(codes, pr.cols, tile, back);
      if (signal) signal.set(back, (at += back.length) - back.length);
    }
    out.push({ record: pr, codes, signal });
  }
  return out;
}

/** The top 8 bits of each code. */
function top8(codes: CodeArray, bits: number): Uint8Array {
  if (bits === 8) return codes as Uint8Array;
  const out = new Uint8Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = codes[i] >>> (bits - 8);
  return out;
}

/** Raw pixels as a PNG, scaled down (nearest neighbour) to at most MAX_PIXELS; resolves with the scale used. */
async function toPng(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3,
): Promise<{ png: Buffer; scale: number }> {
  let img = sharp(pixels, { raw: { width, height, channels } });
  const scale = Math.min(1, Math.sqrt(MAX_PIXELS / (width * height)));
  if (scale < 1)
    img = img.resize(Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale)), { kernel: 'nearest' });
  return { png: await img.png({ compressionLevel: 6 }).toBuffer(), scale };
}

/** Video frames side by side on a grid (a strip when few), 2-pixel light-blue gutters between them. */
function frameGrid(
  f: NonNullable<DecodedPlane['frames']>,
  bits: number,
): { pixels: Uint8Array; width: number; height: number; across: number } {
  const gap = 2;
  // about as wide as three times its height, never wider than all frames in a row
  const across = Math.max(1, Math.min(f.count, Math.round(Math.sqrt((3 * f.count * f.rows) / f.cols))));
  const down = Math.ceil(f.count / across);
  const width = across * f.cols + (across - 1) * gap;
  const height = down * f.rows + (down - 1) * gap;
  const pixels = new Uint8Array(width * height * 3);
  for (let i = 0; i < pixels.length; i += 3) pixels.set([196, 214, 240], i);
  const grey = top8(f.codes, bits);
  for (let k = 0; k < f.count; k++) {
    const x0 = (k % across) * (f.cols + gap);
    const y0 = Math.floor(k / across) * (f.rows + gap);
    for (let r = 0; r < f.rows; r++)
      for (let c = 0; c < f.cols; c++) {
        const v = grey[(k * f.rows + r) * f.cols + c];
        pixels.set([v, v, v], ((y0 + r) * width + x0 + c) * 3);
      }
  }
  return { pixels, width, height, across };
}

/**
 * A picture in a figure: small planes enlarged by a whole factor (pixels stay sharp) to fit about
 * `target` px wide and 3/4 of that high; the caption gets at least 140 px however thin the picture.
 */
function figure(
  cls: string,
  url: string,
  alt: string,
  cols: number,
  rows: number,
  target: number,
  caption: string,
  data = '',
): string {
  const zoom = Math.max(1, Math.min(Math.floor(target / cols), Math.floor((target * 0.75) / Math.max(rows, 1))));
  const w = cols * zoom;
  return `<figure class="${cls}" style="width:${Math.max(w, 140)}px"><img src="${url}" alt="${escapeHtml(alt)}" style="width:${w}px"${data}><figcaption>${caption}</figcaption></figure>`;
}

/** A bar chart of code counts with labelled axes, as inline SVG: 256 bins at most (code >> (bits − 8)). */
function histogramSvg(planes: readonly CodeArray[], bits: number): string {
  const bins = Math.min(256, 2 ** bits);
  const shift = bits - Math.log2(bins);
  const h = new Float64Array(bins);
  for (const codes of planes) for (let i = 0; i < codes.length; i++) h[codes[i] >>> shift]++;
  let max = 0;
  for (const v of h) if (v > max) max = v;
  const [W, H, left, right, top, bottom] = [320, 104, 44, 10, 8, 30];
  const pw = W - left - right;
  const ph = H - top - bottom;
  let d = '';
  h.forEach((v, k) => {
    if (!v) return;
    const y = (ph * v) / max;
    d += `M${(left + (k * pw) / bins).toFixed(2)} ${(top + ph).toFixed(2)}v${(-y).toFixed(2)}h${(pw / bins).toFixed(3)}v${y.toFixed(2)}z`;
  });
  const top1 = 2 ** bits - 1;
  const xTicks = [0, 2 ** (bits - 1), top1].map((c) => {
    const x = left + ((c >>> shift) + 0.5) * (pw / bins);
    return `<line x1="${x.toFixed(1)}" y1="${top + ph}" x2="${x.toFixed(1)}" y2="${top + ph + 4}"/><text x="${x.toFixed(1)}" y="${top + ph + 14}" text-anchor="middle">${c}</text>`;
  });
  const yTicks = [0, max / 2, max].map((v) => {
    const y = top + ph - (ph * v) / (max || 1);
    return `<line x1="${left - 4}" y1="${y.toFixed(1)}" x2="${left}" y2="${y.toFixed(1)}"/><text x="${left - 6}" y="${(y + 3).toFixed(1)}" text-anchor="end">${compact(v)}</text>`;
  });
  return `<svg class="hist" viewBox="0 0 ${W} ${H}" role="img" aria-label="code histogram"><path class="bars" d="${d}"/>
<g class="axis"><line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}"/><line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}"/>${xTicks.join('')}${yTicks.join('')}
<text x="${left + pw / 2}" y="${H - 2}" text-anchor="middle" class="label">code (${bits}-bit)</text><text x="10" y="${top + ph / 2}" text-anchor="middle" class="label" transform="rotate(-90 10 ${top + ph / 2})">weights</text></g></svg>`;
}

/**
 * The audio signals of a layer's planes one after another as a waveform (the min–max envelope per
 * column), planes separated and named, with labelled axes, as inline SVG.
 */
function waveformSvg(signals: ReadonlyArray<{ label: string; codes: CodeArray }>, bits: number): string {
  const [W, H, left, right, top, bottom] = [640, 118, 44, 10, 16, 30];
  const pw = W - left - right;
  const ph = H - top - bottom;
  const top1 = 2 ** bits - 1;
  const total = signals.reduce((n, s) => n + s.codes.length, 0);
  const columns = Math.min(pw * 2, total);
  const y = (c: number): number => top + ph - (ph * c) / top1;
  // sample i of the whole sequence: which signal, which sample of it
  const starts: number[] = [];
  signals.reduce((n, s) => (starts.push(n), n + s.codes.length), 0);
  const at = (i: number): number => {
    let k = starts.length - 1;
    while (starts[k] > i) k--;
    return signals[k].codes[i - starts[k]];
  };
  let d = '';
  for (let k = 0; k < columns; k++) {
    const a = Math.floor((k * total) / columns);
    const b = Math.max(a + 1, Math.floor(((k + 1) * total) / columns));
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = a; i < b; i++) {
      const v = at(i);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const x = left + ((k + 0.5) * pw) / columns;
    d += `M${x.toFixed(2)} ${y(hi).toFixed(2)}V${(y(lo) + 0.6).toFixed(2)}`;
  }
  const xOf = (i: number): number => left + (i * pw) / total;
  const parts = signals.map((s, k) => {
    const x0 = xOf(starts[k]);
    const x1 = xOf(starts[k] + s.codes.length);
    const divider = k
      ? `<line class="divider" x1="${x0.toFixed(1)}" y1="${top - 12}" x2="${x0.toFixed(1)}" y2="${top + ph}"/>`
      : '';
    const name =
      x1 - x0 > 60
        ? `<text x="${((x0 + x1) / 2).toFixed(1)}" y="${top - 4}" text-anchor="middle">${escapeHtml(s.label)}</text>`
        : '';
    return divider + name;
  });
  const yTicks = [0, 2 ** (bits - 1), top1].map(
    (c) =>
      `<line x1="${left - 4}" y1="${y(c).toFixed(1)}" x2="${left}" y2="${y(c).toFixed(1)}"/><text x="${left - 6}" y="${(y(c) + 3).toFixed(1)}" text-anchor="end">${compact(c)}</text>`,
  );
  const xTicks = [0, total].map((n, i) => {
    const x = left + i * pw;
    return `<line x1="${x}" y1="${top + ph}" x2="${x}" y2="${top + ph + 4}"/><text x="${x}" y="${top + ph + 14}" text-anchor="${i ? 'end' : 'start'}">${fmt(n)}</text>`;
  });
  return `<svg class="wave" viewBox="0 0 ${W} ${H}" role="img" aria-label="waveform"><line class="mid" x1="${left}" y1="${y(2 ** (bits - 1)).toFixed(1)}" x2="${left + pw}" y2="${y(2 ** (bits - 1)).toFixed(1)}"/><path class="signal" d="${d}"/>
<g class="axis">${parts.join('')}<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}"/><line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}"/>${yTicks.join('')}${xTicks.join('')}
<text x="${left + pw / 2}" y="${H - 2}" text-anchor="middle" class="label">sample (48 kHz nominal)</text></g></svg>`;
}

/**
 * Error maps of a tensor: |original − restored| per weight, laid out as the layer's planes, as
 * grey PNGs scaled so white is the tensor's largest error.
 */
async function errorMaps(a: Archive, t: TensorRecord, original: Float32Array): Promise<{ pngs: Buffer[]; maxErr: number }> {
  const restored = await decodeTensor(a, t);
  const err = new Float32Array(original.length);
  let maxErr = 0;
  for (let i = 0; i < err.length; i++) {
    const e = Math.abs(original[i] - restored[i]);
    err[i] = Number.isFinite(e) ? e : 0;
    if (err[i] > maxErr) maxErr = err[i];
  }
  // the planes hold the output channels a record did not leave out as zeros
  const zero = zeroChannelsOf(t, (m: string): never => {
    throw new CorruptArchiveError(m, { tensor: t.name });
  });
  const coded = zero ? gatherChannels(err, zero.view, keptChannels(zero.mask, zero.view.channels)) : err;
  const planes = gatherPlanes(coded, t.layout!, (n) => new Float32Array(n));
  const pngs = await Promise.all(
    planes.map(async (pl, k) => {
      const grey = Uint8Array.from(pl, (e) => (maxErr > 0 ? Math.round((255 * e) / maxErr) : 0));
      const { rows, cols } = t.planes![k];
      return (await toPng(grey, cols, rows, 1)).png;
    }),
  );
  return { pngs, maxErr };
}

/** One coded tensor or slice: what the overview row and the card show. */
interface Layer {
  id: string;
  /** The tensor's name, with its subgraph where the model repeats the name (report/scopes.ts). */
  name: string;
  record: TensorRecord;
  whole: TensorRecord;
  weights: number;
  bytes: number;
  bitsPerWeight: number;
  snrDb?: number;
  card: string;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The `--plot` file, which must be a PNG: the page serves it as one, and any other file would be served too. */
function plotPng(file: string): Uint8Array {
  const bytes = readInputFile(file, 'plot');
  if (!PNG_SIGNATURE.every((b, i) => bytes[i] === b))
    throw new OptionError(`--plot ${file} is not a PNG file (the rate–distortion plot \`npm run bench\` writes)`);
  return bytes;
}

/** The page and the files it refers to (pictures, error maps, optional plot), keyed by URL path. */
export async function buildViewer(
  archivePath: string,
  options: ViewerOptions = {},
): Promise<Map<string, { type: string; body: Uint8Array }>> {
  const files = new Map<string, { type: string; body: Uint8Array }>();
  const png = (url: string, body: Uint8Array): string => {
    files.set(url, { type: 'image/png', body });
    return url;
  };
  const a = new Archive(archivePath);
  const model = options.model ? openModel(options.model) : undefined;
  try {
    if (model) await checkSourceModel(a.manifest, archivePath, model);
    const m = a.manifest;
    const sizes = a.entrySizes();
    // graph order: the order the network's nodes first use each tensor (ONNX); file order otherwise
    const order = m.source.format === 'onnx' ? onnxGraphOrder(a.skeleton(), a.file) : new Map<string, number>();
    const rank = (t: TensorRecord): number => order.get(t.name) ?? order.get(t.key) ?? Infinity;
    const tensors = m.tensors.map((t, i) => ({ t, i })).sort((x, y) => rank(x.t) - rank(y.t) || x.i - y.i);
    const scopes = archiveScopes(a);
    const shownName = new Map(m.tensors.map((t, i) => [t, scopes[i] ? `${t.name} (${scopes[i]})` : t.name]));
    const parts = tensors.flatMap(({ t: whole }) =>
      codedParts(whole)
        .filter(({ record: t }) => t.layout && t.planes && t.codec && t.quant)
        .map((c) => ({ ...c, whole })),
    );
    const layers: Layer[] = [];
    // layers decoded side by side (ffmpeg runs as processes of its own), the page built in graph order
    await runOrdered(
      parts,
      availableParallelism(),
      async ({ record: t, offset, whole }, index): Promise<Layer> => {
        const id = `L${index + 1}`;
        const n = elementCount(t.shape);
        // every media entry once: a video plane's blocks are frames of one entry
        const bytes = [...ownEntries(t)].reduce((s, e) => s + (sizes.get(e) ?? 0), 0);
        const bits = t.quant!.bits;
        const codecRecord = t.codec!;
        const decoded = await decodePlanes(a, t);
        const target = t.planes!.length > 1 ? 200 : 560;
        const pictures: string[] = [];
        const extras: string[] = [];
        for (const [k, d] of decoded.entries()) {
          const { rows, cols, label } = d.record;
          const { png: body, scale } = await toPng(top8(d.codes, bits), cols, rows, 1);
          const url = png(`/plane/${id}-${k}.png`, body);
          const pieces = d.frames
            ? `, ${d.frames.count} video frame${d.frames.count > 1 ? 's' : ''}`
            : d.record.tiles.length > 1
              ? `, ${d.record.tiles.length} tiles`
              : '';
          pictures.push(
            figure(
              'plane',
              url,
              `${t.name} ${label}`,
              Math.round(cols * scale),
              Math.round(rows * scale),
              target,
              `${escapeHtml(label)}: ${rows}×${cols}${pieces}${scale < 1 ? ` (shown at 1/${(1 / scale).toFixed(1)})` : ''}`,
              ` data-cols="${cols}" data-rows="${rows}"`,
            ),
          );
          // a plane coded as several video frames: the frames as the codec saw them
          if (d.frames && d.frames.count > 1) {
            const g = frameGrid(d.frames, bits);
            const shot = await toPng(g.pixels, g.width, g.height, 3);
            const furl = png(`/frames/${id}-${k}.png`, shot.png);
            extras.push(
              figure(
                'frames',
                furl,
                `${t.name} ${label} frames`,
                Math.round(g.width * shot.scale),
                Math.round(g.height * shot.scale),
                560,
                `${escapeHtml(label)}: ${d.frames.count} frames of ${d.frames.rows}×${d.frames.cols} as ${escapeHtml(codecRecord.name)} coded them (blocks padded to the frame), ${g.across} across`,
              ),
            );
          }
        }
        const signals = decoded.filter((d) => d.signal).map((d) => ({ label: d.record.label, codes: d.signal! }));
        if (signals.length)
          extras.push(
            `<figure class="waveform">${waveformSvg(signals, bits)}<figcaption>${signals.length > 1 ? `the ${signals.length} planes` : 'the plane'} as ${escapeHtml(codecRecord.name)} coded ${signals.length > 1 ? 'them' : 'it'}: ${fmt(signals.reduce((n, x) => n + x.codes.length, 0))} samples</figcaption></figure>`,
          );
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
            .map((body, k) => {
              const { rows, cols, label } = t.planes![k];
              const url = png(`/error/${id}-${k}.png`, body);
              const scale = Math.min(1, Math.sqrt(MAX_PIXELS / (rows * cols)));
              return figure(
                'err',
                url,
                `error map of ${t.name} ${label}`,
                Math.round(cols * scale),
                Math.round(rows * scale),
                target,
                `|error| of ${escapeHtml(label)}`,
              );
            })
            .join('')}</div><p class="note">error maps: |w − ŵ| per weight, black = 0, white = ${maxErr.toExponential(2)}</p>`;
        }
        const s = t.stats;
        const bitsPerWeight = (bytes * 8) / n;
        // output channels of zeros the record left out of its planes (format version 5)
        const zero = zeroChannelsOf(t, (message: string): never => {
          throw new CorruptArchiveError(message, { file: a.file, tensor: t.name });
        });
        const leftOut = zero ? zero.view.channels - channelView(t.layout!)!.channels : 0;
        const codec = `${codecRecord.name}${codecRecord.lossless ? ' lossless' : ` q${codecRecord.quality ?? ''}`}`;
        const card = `<section class="layer" id="${id}" data-key="${escapeHtml(t.key)}" data-media="${escapeHtml(String(codecRecord.media))}" data-bytes="${bytes}">
<h2><a href="#${id}">${escapeHtml(shownName.get(whole) ?? t.name)}</a></h2>
<p class="meta">${escapeHtml(String(t.role))} · shape ${t.shape.join('×')} · ${escapeHtml(codec)} (${escapeHtml(String(codecRecord.media))}) · ${bits}-bit codes · ${fmt(bytes)} bytes · <b>${bitsPerWeight.toFixed(2)} bits/weight</b>${leftOut ? ` · ${leftOut} output channel${leftOut > 1 ? 's' : ''} of zeros left out of the planes` : ''}${s ? ` · max |err| ${s.maxAbs.toExponential(2)} · SNR ${snrText(s.snrDb)} dB` : ''}</p>
<div class="pictures">${pictures.join('')}</div>${extras.join('')}${errors}
<figure class="histogram">${histogramSvg(
          decoded.map((d) => d.codes),
          bits,
        )}<figcaption>codes of all ${decoded.length > 1 ? `${decoded.length} planes` : 'the plane'}</figcaption></figure></section>`;
        return {
          id,
          name: shownName.get(whole) ?? t.name,
          record: t,
          whole,
          weights: n,
          bytes,
          bitsPerWeight,
          snrDb: s?.snrDb,
          card,
        };
      },
      (layer) => void layers.push(layer),
    );
    const plotUrl = options.plot ? '/rd.png' : undefined;
    if (options.plot) files.set('/rd.png', { type: 'image/png', body: plotPng(options.plot) });
    files.set('/', { type: 'text/html; charset=utf-8', body: Buffer.from(page(archivePath, a, layers, plotUrl)) });
    return files;
  } finally {
    a.close();
    model?.close?.();
  }
}

/** The summary header, the overview table and the grid of cards. */
function page(archivePath: string, a: Archive, layers: Layer[], plotUrl: string | undefined): string {
  const m = a.manifest;
  const archiveBytes = statSync(archivePath).size;
  let coded = 0;
  let kept = 0;
  let se = 0;
  let sp = 0;
  for (const t of m.tensors) {
    const n = elementCount(t.shape);
    if (!t.layout) {
      kept += n;
      continue;
    }
    coded += n;
    // the archive-wide weight SNR from each tensor's recorded RMSE and SNR: Σ signal power / Σ error power
    const s = t.stats;
    if (s && Number.isFinite(s.rmse)) {
      const e = s.rmse * s.rmse * n;
      se += e;
      sp += Number.isFinite(s.snrDb) ? e * 10 ** (s.snrDb / 10) : 0;
    }
  }
  const keptNames = m.tensors.filter((t) => !t.layout).map((t) => t.name);
  const dups = m.tensors.filter((t) => t.sameAs).length;
  const codecs = [...new Set(layers.map((l) => `${l.record.codec!.name} (${l.record.codec!.media})`))];
  const o = m.options;
  const fidelity: string[] = [];
  if (layers.some((l) => l.snrDb !== undefined))
    fidelity.push(`weight SNR ${se > 0 ? (10 * Math.log10(sp / se)).toFixed(1) : '∞'} dB`);
  if (typeof o.targetBpw === 'number') fidelity.push(`target ${o.targetBpw} bits/weight`);
  if (typeof o.maxLoss === 'number')
    fidelity.push(`max task loss ${o.maxLoss}${typeof o.task === 'string' ? ` (${o.task})` : ''}`);
  if (typeof o.targetSnr === 'number') fidelity.push(`target SNR ${o.targetSnr} dB per tensor`);
  const stat = (label: string, value: string, note = ''): string =>
    `<div class="stat"><span>${label}</span><b>${value}</b>${note ? `<small>${note}</small>` : ''}</div>`;
  const maxBpw = Math.max(...layers.map((l) => l.bitsPerWeight), 1e-9);
  const finiteSnr = layers.map((l) => l.snrDb).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const maxSnr = Math.max(...finiteSnr, 1e-9);
  const bar = (fraction: number, text: string, cls: string): string =>
    `<td class="bar ${cls}"><span style="width:${(100 * Math.max(0, Math.min(1, fraction))).toFixed(1)}%"></span><b>${text}</b></td>`;
  const rows = layers.map(
    (l, i) =>
      `<tr data-target="${l.id}"><td class="num">${i + 1}</td><td class="name"><a href="#${l.id}">${escapeHtml(l.name)}</a></td><td>${escapeHtml(String(l.record.role))}</td><td>${l.record.shape.join('×')}</td><td>${escapeHtml(l.record.codec!.name)}</td>${bar(l.bitsPerWeight / maxBpw, l.bitsPerWeight.toFixed(2), 'bpw')}${bar(l.snrDb === undefined ? 0 : Number.isFinite(l.snrDb) ? l.snrDb / maxSnr : 1, snrText(l.snrDb), 'snr')}<td class="num">${fmt(l.bytes)}</td></tr>`,
  );
  return `<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>nnmedia view: ${escapeHtml(m.source.file)}</title>
<style>
:root{--fg:#1c232b;--muted:#5d6875;--line:#d9dee4;--bg:#f3f5f7;--accent:#2f6fbf;--accent2:#d08a2e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:var(--bg);color:var(--fg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 24px 16px}
h1{font-size:20px;margin:0 0 2px}
.sub{color:var(--muted);margin:0 0 12px}
.summary{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:8px}
.stat{background:var(--bg);border-radius:6px;padding:6px 10px}
.stat span{display:block;color:var(--muted);font-size:12px}
.stat b{display:block;font-size:17px}
.stat small{color:var(--muted)}
.rd{max-width:min(760px,100%);margin-top:12px}
.overview{padding:12px 24px 0}
.overview h2,.layers>h2{font-size:16px;margin:6px 0}
.table{overflow:auto;background:#fff;border:1px solid var(--line);border-radius:8px;max-height:min(60vh,400px)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{position:sticky;top:0;background:#fff;text-align:left;font-weight:600;border-bottom:1px solid var(--line);padding:5px 8px}
td{padding:3px 8px;border-bottom:1px solid #eef1f4;white-space:nowrap}
td.name{max-width:26em;overflow:hidden;text-overflow:ellipsis}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.bar{position:relative;min-width:150px}
td.bar span{position:absolute;left:8px;top:5px;bottom:5px;border-radius:2px;opacity:.8;max-width:calc(100% - 16px)}
td.bpw span{background:var(--accent)}
td.snr span{background:var(--accent2)}
td.bar b{position:relative;font-weight:500;padding-left:4px;text-shadow:0 0 3px #fff}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
details{margin:8px 0;color:var(--muted)}
.layers{padding:8px 24px 24px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(460px,100%),1fr));gap:14px;align-items:start}
.layer{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:0;scroll-margin-top:8px}
.layer:target{outline:2px solid var(--accent)}
.layer h2{font-size:15px;margin:2px 0;overflow-wrap:anywhere}
.layer h2 a{color:inherit}
.meta{margin:0 0 8px;color:var(--muted);font-size:12.5px}
.meta b{color:var(--fg)}
.pictures,.errors{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;overflow-x:auto}
.errors{margin-top:8px}
figure{margin:0;max-width:100%}
figure.zoomed img{max-width:none}
figcaption{font-size:11.5px;color:var(--muted)}
img{display:block;image-rendering:pixelated;max-width:100%;height:auto;border:1px solid #c9cfd6;cursor:zoom-in;background:#fff}
figure.zoomed{width:auto!important;max-width:none}
img.zoom{max-width:none;cursor:zoom-out}
.frames,.waveform{margin-top:8px}
.note{margin:2px 0 0;font-size:11.5px;color:var(--muted)}
svg{display:block;width:100%;max-width:640px;height:auto;font:10px system-ui,sans-serif}
svg .axis line{stroke:#7a848f;stroke-width:1}
svg .axis text{fill:#4d5762}
svg .label{fill:var(--muted)}
svg .bars{fill:var(--accent)}
svg .signal{stroke:var(--accent);stroke-width:1;fill:none}
svg .mid{stroke:#c5ccd4;stroke-dasharray:3 3}
svg .divider{stroke:#7a848f;stroke-dasharray:2 2}
.histogram{margin-top:8px;max-width:360px}
</style>
<header>
<h1>${escapeHtml(m.source.file)} <span style="font-weight:400;color:var(--muted)">as pictures</span></h1>
<p class="sub">${escapeHtml(basename(archivePath))} · ${escapeHtml(m.createdBy)} · pixel (row, column) = (input, output) code; conv kernels are Kx×Ky tiles; click a picture to enlarge it</p>
<div class="summary">
${stat('model', `${fmt(m.source.bytes)} bytes`, `${m.source.format}`)}
${stat('archive', `${fmt(archiveBytes)} bytes`, `ratio ${(m.source.bytes / archiveBytes).toFixed(2)}×`)}
${stat('bits per weight', coded ? ((archiveBytes * 8) / coded).toFixed(3) : '–', 'all archive bytes × 8 / coded weights')}
${stat('coded weights', fmt(coded), `${fmt(kept)} kept exact`)}
${stat('layers shown', String(layers.length), `${m.tensors.filter((t) => t.layout).length} coded tensors${dups ? `, ${dups} duplicates stored once` : ''}`)}
${stat('codec', escapeHtml(codecs.join(', ') || '–'))}
${fidelity.length ? stat('fidelity', escapeHtml(fidelity[0]), escapeHtml(fidelity.slice(1).join(' · '))) : ''}
</div>
${plotUrl ? `<img class="rd" src="${plotUrl}" alt="rate–distortion plot" style="image-rendering:auto">` : ''}
</header>
<section class="overview"><h2>Layers in graph order</h2>
<div class="table"><table><thead><tr><th>#</th><th>layer</th><th>role</th><th>shape</th><th>codec</th><th>bits/weight</th><th>SNR dB</th><th>bytes</th></tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div>
${keptNames.length ? `<details><summary>${keptNames.length} tensors kept exact in the model skeleton (biases, norms, small or unclassified tensors)</summary>${keptNames.map(escapeHtml).join(', ')}</details>` : ''}
</section>
<section class="layers"><h2>Layers</h2><div class="grid">
${layers.map((l) => l.card).join('\n')}
</div></section>
<script>
for (const img of document.querySelectorAll('.layer img')) {
  img.addEventListener('click', () => {
    const on = img.classList.toggle('zoom');
    img.parentElement.classList.toggle('zoomed', on);
    img.dataset.width ??= img.style.width;
    img.style.width = on ? img.naturalWidth * Math.max(2, Math.ceil(640 / img.naturalWidth)) + 'px' : img.dataset.width;
  });
}
Promise.all([...document.images].map((i) => i.decode().catch(() => (i.dataset.broken = 'true')))).then(() => {
  document.body.dataset.ready = 'true';
});
</script></html>`;
}

/**
 * Serves the viewer on 127.0.0.1 (port 0: any free port); resolves with the server and its URL. The port is
 * taken first, so a port in use fails at once, before the pages are built.
 */
export async function serveViewer(
  archivePath: string,
  port = 0,
  options: ViewerOptions = {},
): Promise<{ server: Server; url: string }> {
  let files: Map<string, { type: string; body: Uint8Array }> | undefined;
  const server = createServer((req, res) => {
    // a page on another site reaching this port through DNS rebinding names its own host: only ours is served
    const host = (req.headers.host ?? '').toLowerCase();
    const address = server.address();
    const ours = typeof address === 'object' && address ? [`127.0.0.1:${address.port}`, `localhost:${address.port}`] : [];
    if (!ours.includes(host)) return void res.writeHead(421).end('misdirected request');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    if (!files) return void res.writeHead(503, { 'retry-after': '1' }).end('building the page…');
    let path: string;
    try {
      path = decodeURIComponent((req.url ?? '/').split(/[?#]/)[0]);
    } catch {
      // `/%`: a malformed escape threw in the handler and ended the server (one fetch from any page did it)
      return void res.writeHead(400).end('bad request');
    }
    const f = files.get(path);
    if (!f) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': f.type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.end(f.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new IoError(
          e.code === 'EADDRINUSE'
            ? `port ${port} on 127.0.0.1 is in use; pick another with --port, or 0 for any free one`
            : `cannot serve on port ${port} of 127.0.0.1: ${fsReason(e)}`,
          {},
          e,
        ),
      ),
    );
    server.listen(port, '127.0.0.1', () => resolve());
  });
  try {
    files = await buildViewer(archivePath, options);
  } catch (e) {
    server.close();
    throw e;
  }
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/` };
}
