/**
 * The one validator of a manifest, for Node and the browser alike: the manifest is hostile until every
 * field the decoder reads has the type, the range and the geometry it needs, and every entry it names is
 * listed. Nothing is allocated from a manifest's word before these checks. Isomorphic: no Node module.
 */

import { CorruptArchiveError, UnsupportedError } from '../errors.js';
import { elementCount } from '../formats/model.js';
import { formatMeta } from '../formats/meta.js';
import { layoutElementCount, planeShapes } from '../layout/planes.js';
import { CODE_BITS } from '../quantize/uniform.js';
import { RANGE_DTYPES, rangeByteLength } from '../quantize/tensor.js';
import { codecMeta } from '../codecs/meta.js';
import { ROLES } from '../roles/classify.js';
import {
  FORMAT_VERSION,
  MAX_MANIFEST_BYTES,
  READ_VERSIONS,
  TRANSPOSED_MAX,
  entryBytes,
  expandManifest,
  parseRangeRef,
  sliceAsTensor,
  type Manifest,
  type TensorRecord,
} from './manifest.js';
import { zeroChannelsOf } from './decode.js';

/** Largest tensor we agree to allocate from a manifest's word (2^31 elements = 8 GiB of float32). */
export const MAX_TENSOR_ELEMENTS = 2 ** 31;

function fail(file: string | undefined, msg: string, tensor?: string): never {
  throw new CorruptArchiveError(`manifest: ${msg}`, { file, tensor });
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isPos = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const FLOAT_DTYPES = ['float32', 'float16', 'bfloat16', 'float64'];
const LAYOUT_FIELDS: Record<string, string[]> = {
  fc: ['nin', 'nout'],
  conv: ['nfin', 'nfout', 'kx', 'ky'],
  lstm: ['gates', 'directions', 'hidden', 'nin'],
  gru: ['gates', 'directions', 'hidden', 'nin'],
  stack: ['batch', 'nin', 'nout'],
};

/** The manifest entry's bytes → a checked manifest (size limit, JSON, then `checkManifest`). */
export function parseManifest(bytes: Uint8Array, file?: string): Manifest {
  if (bytes.length > MAX_MANIFEST_BYTES)
    throw new CorruptArchiveError(`manifest of ${bytes.length} bytes is too large`, { file });
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new CorruptArchiveError(`manifest is not valid JSON: ${(e as Error).message}`, { file });
  }
  // version 2 leaves out what it can restore; a version-1 manifest has nothing to restore
  if (typeof parsed === 'object' && parsed !== null && (parsed as { version?: unknown }).version !== 1) expandManifest(parsed);
  return checkManifest(parsed, file);
}

/** The shape of every field of a tensor record the decoder reads: types first, then the geometry checks. */
function checkRecordTypes(t: TensorRecord, format: string, version: number, file: string | undefined): void {
  const bad: (what: string) => never = (what) => fail(file, `bad ${what}`, typeof t.key === 'string' ? t.key : undefined);
  if (!FLOAT_DTYPES.includes(t.dtype)) bad('dtype');
  if (typeof t.name !== 'string') bad('name');
  // (shown by inspect and view as a class name: a crafted string must not reach a page)
  if (!ROLES.includes(t.role)) bad('role');
  // (a reason names the model's op types, which may hold anything: it is escaped where it is shown)
  if (t.reason !== undefined && typeof t.reason !== 'string') bad('reason');
  if (!isObj(t.storage) || !formatMeta(format)?.isStorage(t.storage)) bad('storage');
  if (t.sameAs !== undefined && typeof t.sameAs !== 'string') bad('sameAs');
  if (t.transposed !== undefined && (t.transposed !== true || t.sameAs === undefined)) bad('transposed');
  if (
    t.zeroChannels !== undefined &&
    (typeof t.zeroChannels !== 'string' || t.sameAs !== undefined || t.half !== undefined || t.slices !== undefined)
  )
    bad('zero channels');
  if (t.half !== undefined && !(isObj(t.half) && typeof t.half.entry === 'string' && isCount(t.half.offset) && !t.layout))
    bad('half record');
  if (t.layout === undefined) return;
  const l = t.layout as unknown as Record<string, unknown>;
  if (!isObj(l)) bad('layout');
  const need = typeof l.kind === 'string' && Object.hasOwn(LAYOUT_FIELDS, l.kind) ? LAYOUT_FIELDS[l.kind] : undefined;
  if (!need || !need.every((k) => isPos(l[k]))) bad('layout');
  if ((l.kind === 'fc' || l.kind === 'conv' || l.kind === 'stack') && l.order !== 'in_out' && l.order !== 'out_in')
    bad('layout order');
  // recurrent layouts are one plane per gate and direction: bound them before any plane list is made
  if ((l.kind === 'lstm' && l.gates !== 4) || (l.kind === 'gru' && l.gates !== 3)) bad('gate count');
  if ((l.kind === 'lstm' || l.kind === 'gru') && l.directions !== 1 && l.directions !== 2) bad('direction count');
  // stacked matrices (version 7): one plane each, bounded by the shape check before any plane list is made
  if (l.kind === 'stack' && version < 7) bad('layout (a stack of matrices needs version 7)');
  if (t.sameAs !== undefined) return;
  if (t.slices !== undefined) {
    if (
      !Array.isArray(t.slices) ||
      t.planes !== undefined ||
      t.quant !== undefined ||
      t.codec !== undefined ||
      t.shape.length < 2
    )
      bad('slices');
    return;
  }
  if (!Array.isArray(t.planes) || !isObj(t.quant) || !isObj(t.codec)) bad('planes, quantization or codec');
  if (!isPos(t.quant.bits)) bad('bits');
  if (typeof t.codec.name !== 'string' || typeof t.codec.media !== 'string') bad('codec');
  // a codec this build knows must be of its own medium (a newer codec name is the decoder's to refuse)
  const meta = codecMeta(t.codec.name);
  if (meta && meta.media !== t.codec.media) bad('codec medium');
  const q = t.quant;
  if (!Array.isArray(q.ranges) || !q.ranges.every((r) => typeof r === 'string')) bad('ranges');
  if (!Array.isArray(q.channelWidth) || !q.channelWidth.every(isPos)) bad('channel widths');
  if (
    q.rangeDtype !== undefined &&
    !(Array.isArray(q.rangeDtype) && q.rangeDtype.every((d) => (RANGE_DTYPES as readonly unknown[]).includes(d)))
  )
    bad('range dtypes');
  if (
    q.rotation !== undefined &&
    !(isObj(q.rotation) && q.rotation.kind === 'hadamard' && Array.isArray(q.rotation.seeds) && q.rotation.seeds.every(isCount))
  )
    bad('rotation');
  for (const pr of t.planes as unknown[]) {
    if (!isObj(pr) || !Array.isArray(pr.tiles)) bad('plane record');
    const rec = pr as unknown as Record<string, unknown> & { tiles: unknown[] };
    if (
      rec.frame !== undefined &&
      !(isObj(rec.frame) && isPos(rec.frame.rows) && isPos(rec.frame.cols) && isPos(rec.frame.count))
    )
      bad('frame record');
    // video planes are streams of frames, every other medium's are tiles: the decoder reads one or the other
    if ((rec.frame !== undefined) !== (t.codec.media === 'video')) bad('frame record');
    for (const tile of rec.tiles)
      if (
        !isObj(tile) ||
        typeof tile.entry !== 'string' ||
        !['row', 'col', 'rows', 'cols'].every((k) => isCount(tile[k])) ||
        (tile.frame !== undefined && !isCount(tile.frame))
      )
        bad('tile record');
  }
  if (t.nonFinite !== undefined && typeof t.nonFinite !== 'string') bad('exact-values entry');
}

/** Structural checks on a hostile manifest before any allocation is based on it. */
export function checkManifest(m: unknown, file?: string): Manifest {
  const man = m as Manifest;
  if (typeof man !== 'object' || man === null || man.format !== 'nnmedia') fail(file, 'not an nnmedia manifest');
  // a newer archive is sound, only beyond this build: say so, and what to do, rather than call it corrupt
  if (isPos(man.version) && man.version > FORMAT_VERSION)
    throw new UnsupportedError(
      `archive format version ${man.version} is newer than this nnmedia reads (${FORMAT_VERSION}): update nnmedia to read it`,
      { file },
    );
  if (!READ_VERSIONS.includes(man.version))
    fail(file, `unsupported format version ${JSON.stringify(man.version)} (this build reads ${READ_VERSIONS.join(', ')})`);
  if (!isObj(man.source) || typeof man.source.format !== 'string' || !formatMeta(man.source.format))
    fail(file, 'unknown source format');
  // the bound of every decompressed member and skeleton: a count, not whatever the manifest says
  if (!isCount(man.source.bytes)) fail(file, 'bad source size');
  if (!Array.isArray(man.tensors) || !isObj(man.entries)) fail(file, 'tensors or entries missing');
  for (const [name, e] of Object.entries(man.entries))
    if (!isObj(e) || typeof e.sha256 !== 'string' || !isCount(e.bytes)) fail(file, `bad entry record ${JSON.stringify(name)}`);
  checkPacks(man, file);
  // a ZIP entry, or (version 4, a small skeleton) a member of the archive's pack
  const listed = (name: unknown): boolean =>
    typeof name === 'string' && (Object.hasOwn(man.entries, name) || (man.version >= 4 && entryBytes(man, name) !== undefined));
  if (!listed(man.skeleton)) fail(file, 'skeleton entry missing');
  if (
    man.skeletonParts !== undefined &&
    !(Array.isArray(man.skeletonParts) && man.skeletonParts[0] === man.skeleton && man.skeletonParts.every(listed))
  )
    fail(file, 'bad skeleton parts');
  const keys = new Set<string>();
  for (const t of man.tensors) {
    if (!isObj(t) || typeof t.key !== 'string' || !Array.isArray(t.shape)) fail(file, 'tensor record without key or shape');
    checkRecordTypes(t, man.source.format, man.version, file);
    if (keys.has(t.key)) fail(file, `duplicate tensor key`, t.key);
    keys.add(t.key);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(file, 'invalid shape', t.key);
    const n = elementCount(t.shape);
    if (n > MAX_TENSOR_ELEMENTS) fail(file, `tensor of ${n} elements exceeds the limit`, t.key);
    if (t.half) {
      const bytes = entryBytes(man, t.half.entry);
      if (bytes === undefined || (t.half.offset + n) * 2 > bytes) fail(file, 'half-precision values outside their entry', t.key);
    }
    if (t.sameAs !== undefined) {
      const first = man.tensors.find((x) => x.key === t.sameAs);
      // a duplicate of a coded tensor (one kept in the skeleton or as float16 has no values to share)
      if (!first || first.sameAs !== undefined || !first.layout || elementCount(first.shape) !== n)
        fail(file, `bad sameAs reference ${JSON.stringify(t.sameAs)}`, t.key);
      // its transpose (version 6): both 2-D, the shapes the other way round
      if (
        t.transposed &&
        (man.version < 6 ||
          t.shape.length !== 2 ||
          first.shape.length !== 2 ||
          t.shape[0] !== first.shape[1] ||
          t.shape[1] !== first.shape[0] ||
          n > TRANSPOSED_MAX ||
          t.layout?.kind !== 'fc' ||
          first.layout.kind !== 'fc' ||
          t.slices !== undefined)
      )
        fail(
          file,
          `bad transposed copy of ${JSON.stringify(t.sameAs)}: shape [${t.shape}] against [${first.shape}] (a copy is 2-D, of the other shape, fully connected, not sliced, at most ${TRANSPOSED_MAX} weights, in version 6)`,
          t.key,
        );
      continue;
    }
    if (!t.layout) {
      if (t.zeroChannels !== undefined) fail(file, 'zero channels without a layout', t.key);
      continue;
    }
    // a coded tensor's planes hold its output channels less those of zeros it leaves out (version 5)
    const zero = t.slices ? undefined : checkedZeroChannels(t, man, (m) => fail(file, m, t.key));
    if (!zero && layoutElementCount(t.layout) !== n) fail(file, 'layout does not match the shape', t.key);
    if (t.slices) checkSlices(t, man, file);
    else checkCoded(t, man, file);
  }
  return man;
}

/**
 * Packs (version 2): each a listed entry whose members' sizes add up to its own, every member named once
 * and not also an entry of its own (a name resolves to one set of bytes); a compressed member's size (version
 * 4) a count no larger than the source model's, bounded when it is decompressed.
 */
function checkPacks(man: Manifest, file: string | undefined): void {
  if (man.packs === undefined) return;
  if (man.version < 2 || !isObj(man.packs)) fail(file, 'bad packs');
  const names = new Set<string>();
  for (const [pack, members] of Object.entries(man.packs)) {
    const e = Object.hasOwn(man.entries, pack) ? man.entries[pack] : undefined;
    if (!e || !Array.isArray(members)) fail(file, `bad pack ${JSON.stringify(pack)}`);
    let total = 0;
    for (const m of members as unknown[]) {
      // [name, bytes], or [name, bytes, size] for a brotli member (version 4)
      // (no larger than the source model, which bounds a hostile member's decompression)
      const compressed =
        Array.isArray(m) && m.length === 3 && man.version >= 4 && isCount(m[2]) && m[2] <= Math.max(man.source.bytes, 1 << 20);
      if (!Array.isArray(m) || (m.length !== 2 && !compressed) || typeof m[0] !== 'string' || !isCount(m[1]))
        fail(file, `bad member record in pack ${JSON.stringify(pack)}`);
      const [name, bytes] = m as [string, number];
      if (names.has(name) || Object.hasOwn(man.entries, name)) fail(file, `entry ${JSON.stringify(name)} listed twice`);
      names.add(name);
      total += bytes;
    }
    if (total !== e!.bytes)
      fail(file, `pack ${JSON.stringify(pack)}: members add up to ${total} bytes, the entry has ${e!.bytes}`);
  }
}

/** Planes, quantization and tiles of a coded tensor (or slice) against its layout and the listed entries. */
function checkCoded(t: TensorRecord, man: Manifest, file: string | undefined): void {
  if (!t.layout) fail(file, 'layout missing', t.key);
  // a stack has a plane per matrix: its count checked before a list of that many plane shapes is made (a crafted
  // [B, 1, 1] stack of 64M matrices ran the reader out of memory)
  if (t.layout.kind === 'stack' && t.planes?.length !== t.layout.batch)
    fail(file, `a stack of ${t.layout.batch} matrices with ${t.planes?.length ?? 0} planes`, t.key);
  const shapes = planeShapes(t.layout);
  if (
    !t.planes ||
    !t.quant ||
    !t.codec ||
    t.planes.length !== shapes.length ||
    t.quant.ranges.length !== shapes.length ||
    t.quant.channelWidth.length !== shapes.length ||
    (t.quant.rangeDtype !== undefined && t.quant.rangeDtype.length !== shapes.length) ||
    (t.quant.rotation !== undefined && t.quant.rotation.seeds.length !== shapes.length)
  )
    fail(file, 'planes, quantization or codec missing', t.key);
  if (!(CODE_BITS as readonly number[]).includes(t.quant.bits)) fail(file, `invalid bits ${JSON.stringify(t.quant.bits)}`, t.key);
  const listed = (entry: string): boolean => entryBytes(man, entry) !== undefined;
  if (t.nonFinite !== undefined && !listed(t.nonFinite)) fail(file, `exact-values entry ${t.nonFinite} not listed`, t.key);
  shapes.forEach((s, p) => {
    const pr = t.planes![p];
    if (pr.rows !== s.rows || pr.cols !== s.cols) fail(file, `plane ${p} geometry differs from the layout`, t.key);
    // ranges in a binary entry: inside it, as many bytes as the plane's channels need
    const ref = parseRangeRef(t.quant!.ranges[p]);
    if (t.quant!.ranges[p].startsWith('@')) {
      const channels = Math.ceil(s.cols / t.quant!.channelWidth[p]);
      const bytes = rangeByteLength(t.quant!.rangeDtype?.[p] ?? 'float32', channels);
      const size = ref ? entryBytes(man, ref.entry) : undefined;
      if (!ref || size === undefined || ref.offset + bytes > size) fail(file, `plane ${p}: ranges outside their entry`, t.key);
    }
    let covered = 0;
    for (const tile of pr.tiles) {
      if (!(
        tile.row >= 0 &&
        tile.col >= 0 &&
        tile.rows > 0 &&
        tile.cols > 0 &&
        tile.row + tile.rows <= s.rows &&
        tile.col + tile.cols <= s.cols
      ))
        fail(file, `tile outside plane ${p}`, t.key);
      if (!listed(tile.entry)) fail(file, `tile entry ${tile.entry} not listed`, t.key);
      covered += tile.rows * tile.cols;
    }
    if (covered !== s.rows * s.cols) fail(file, `tiles do not cover plane ${p}`, t.key);
  });
}

/** A coded record's (or slice's) output channels of zeros (zeroChannelsOf), refused in an archive before version 5. */
function checkedZeroChannels(t: TensorRecord, man: Manifest, bad: (message: string) => never): ReturnType<typeof zeroChannelsOf> {
  if (t.zeroChannels !== undefined && man.version < 5) bad('zero channels in an archive before version 5');
  return zeroChannelsOf(t, bad);
}

/** Slices: contiguous blocks of the leading dimension from row 0 to the end, each a coded tensor of its own. */
function checkSlices(t: TensorRecord, man: Manifest, file: string | undefined): void {
  let next = 0;
  for (const s of t.slices!) {
    if (!isObj(s) || !isCount(s.row) || !isPos(s.rows) || s.row !== next || s.row + s.rows > t.shape[0])
      fail(file, 'slices do not tile the leading dimension', t.key);
    next = s.row + s.rows;
    const { record } = sliceAsTensor(t, s);
    checkRecordTypes(record, man.source.format, man.version, file);
    const bad = (m: string): never => fail(file, `slice at row ${s.row}: ${m}`, t.key);
    const zero = record.layout ? checkedZeroChannels(record, man, bad) : undefined;
    if (!record.layout || (!zero && layoutElementCount(record.layout) !== elementCount(record.shape)))
      fail(file, `slice at row ${s.row}: layout does not match its shape`, t.key);
    checkCoded(record, man, file);
  }
  if (next !== t.shape[0]) fail(file, 'slices do not tile the leading dimension', t.key);
}
