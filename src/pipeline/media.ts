/**
 * Stage 4, encode media: every plane's codes through a codec — images tile by tile (up to the codec's
 * largest picture), video as one stream of M5/M6 block frames per plane, audio as one signal per plane —
 * and decoded back on request (`decoded()`: the codec sets ask only for the candidate they keep), so a
 * lossless path that is not bit-exact fails before anything is written, and lossy ones are measured on what
 * the decoder will really see.
 */

import type { PlaneRecord } from '../archive/manifest.js';
import type { Codec, CodecOptions } from '../codecs/types.js';
import { CodecError, withContext } from '../errors.js';
import { MIN_FRAME, blockSize, evenUp } from '../layout/blocks.js';
import { cutTile, pasteTile, tileGrid } from '../layout/tiles.js';
import type { LayoutSpec, PlaneShape } from '../layout/types.js';
import { allocCodes, type CodeArray } from '../quantize/uniform.js';

/** A tensor's planes through one codec. */
export interface EncodedMedia {
  readonly codec: Codec;
  readonly options: CodecOptions;
  /** Per plane: its entries' bytes and the plane record (entry names are suffixes, prefixed by the tensor's folder). */
  readonly planes: ReadonlyArray<{ data: Uint8Array[]; record: PlaneRecord }>;
  readonly bytes: number;
  /**
   * Per plane: the codes as decoded back from the entries (decoded on the first call, then kept). A lossless
   * path that is not bit-exact fails here with a CodecError. The codec sets decode only the candidate they
   * keep: the others' round trips were a third of a default encode (a PNG decoded, signs joined) for nothing.
   */
  decoded(): Promise<CodeArray[]>;
}

/** Whether two code arrays hold the same codes (a byte comparison where their types match: memcmp, not a walk). */
function sameCodes(a: CodeArray, b: CodeArray): boolean {
  if (a.length !== b.length) return false;
  if (a.BYTES_PER_ELEMENT === b.BYTES_PER_ELEMENT)
    return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One coded stream of a plane: what went in, what came out, and how its decoded codes go back into the plane. */
interface Piece {
  readonly plane: number;
  readonly input: CodeArray;
  readonly width: number;
  readonly height: number;
  readonly frames?: number;
  readonly enc: Uint8Array;
  /** Writes the decoded stream into the plane's decoded codes; absent: the stream is the whole plane. */
  readonly paste?: (back: CodeArray, got: CodeArray) => void;
}

/** Encodes every plane: images tile by tile, video as one stream of M5/M6 frames, audio as one signal. */
export async function encodePlanes(
  codec: Codec,
  options: CodecOptions,
  codes: readonly CodeArray[],
  shapes: readonly PlaneShape[],
  bits: number,
  layout: LayoutSpec,
  block: readonly [number, number] | undefined,
  ctx: { file: string; tensor: string },
): Promise<EncodedMedia> {
  const planes: Array<{ data: Uint8Array[]; record: PlaneRecord }> = [];
  const pieces: Piece[] = [];
  let bytes = 0;
  const run = async (input: CodeArray, width: number, height: number, frames?: number): Promise<Uint8Array> => {
    try {
      return await codec.encode({ width, height, bits, data: input, frames }, options);
    } catch (e) {
      throw withContext(e, ctx);
    }
  };
  for (let p = 0; p < codes.length; p++) {
    const s = shapes[p];
    const plane = codes[p];
    const record: PlaneRecord = { label: s.label, rows: s.rows, cols: s.cols, tiles: [] };
    const data: Uint8Array[] = [];
    if (codec.media === 'video') {
      const [br, bc] = blockSize(layout, s, block);
      const grid = tileGrid(s.rows, s.cols, br, bc);
      const [fr, fc] = [Math.max(MIN_FRAME, evenUp(br)), Math.max(MIN_FRAME, evenUp(bc))];
      // padding takes the middle code: zero on a step grid, the cheapest symbol for the codecs
      const stack = allocCodes(bits, fr * fc * grid.length).fill(2 ** (bits - 1));
      grid.forEach((t, k) => {
        for (let r = 0; r < t.rows; r++)
          stack.set(plane.subarray((t.row + r) * s.cols + t.col, (t.row + r) * s.cols + t.col + t.cols), (k * fr + r) * fc);
      });
      const enc = await run(stack, fc, fr * grid.length, grid.length);
      grid.forEach((t, k) => record.tiles.push({ ...t, entry: `p${p}.${codec.ext}`, frame: k }));
      record.frame = { rows: fr, cols: fc, count: grid.length };
      data.push(enc);
      pieces.push({
        plane: p,
        input: stack,
        width: fc,
        height: fr * grid.length,
        frames: grid.length,
        enc,
        paste: (back, got) =>
          grid.forEach((t, k) => {
            for (let r = 0; r < t.rows; r++)
              back.set(got.subarray((k * fr + r) * fc, (k * fr + r) * fc + t.cols), (t.row + r) * s.cols + t.col);
          }),
      });
    } else if (codec.media === 'audio') {
      const enc = await run(plane, s.cols, s.rows);
      record.tiles.push({ row: 0, col: 0, rows: s.rows, cols: s.cols, entry: `p${p}.${codec.ext}` });
      data.push(enc);
      pieces.push({ plane: p, input: plane, width: s.cols, height: s.rows, enc });
    } else {
      const grid = tileGrid(s.rows, s.cols, codec.maxHeight, codec.maxWidth);
      for (let t = 0; t < grid.length; t++) {
        const rect = grid[t];
        const tile = cutTile(plane, s.cols, rect, (n) => allocCodes(bits, n));
        const enc = await run(tile, rect.cols, rect.rows);
        record.tiles.push({ ...rect, entry: `p${p}${grid.length > 1 ? `-t${t}` : ''}.${codec.ext}` });
        data.push(enc);
        pieces.push({
          plane: p,
          input: tile,
          width: rect.cols,
          height: rect.rows,
          enc,
          ...(grid.length > 1 ? { paste: (back: CodeArray, got: CodeArray) => pasteTile(back, s.cols, rect, got) } : {}),
        });
      }
    }
    bytes += data.reduce((n, d) => n + d.length, 0);
    planes.push({ data, record });
  }
  let decoded: Promise<CodeArray[]> | undefined;
  const decodeAll = async (): Promise<CodeArray[]> => {
    const out: Array<CodeArray | undefined> = codes.map(() => undefined);
    for (const piece of pieces) {
      let got: CodeArray;
      try {
        got = await codec.decode(piece.enc, { width: piece.width, height: piece.height, bits, frames: piece.frames });
      } catch (e) {
        throw withContext(e, ctx);
      }
      if (options.lossless && !sameCodes(piece.input, got)) {
        let i = 0;
        while (piece.input[i] === got[i]) i++;
        throw new CodecError(`${codec.name} lossless round trip is not exact at sample ${i}`, ctx);
      }
      if (!piece.paste) out[piece.plane] = got;
      else piece.paste((out[piece.plane] ??= allocCodes(bits, codes[piece.plane].length)), got);
    }
    return out.map((c, p) => c ?? allocCodes(bits, codes[p].length));
  };
  return { codec, options, planes, bytes, decoded: () => (decoded ??= decodeAll()) };
}
