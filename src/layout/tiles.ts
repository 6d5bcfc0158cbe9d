/**
 * Planes larger than a codec's maximum dimensions are cut into a grid of tiles
 * (row-major), each within the limits; the grid is recorded in the manifest.
 */
import type { AnyTypedArray } from './types.js';

export interface TileRect {
  row: number;
  col: number;
  rows: number;
  cols: number;
}

export function tileGrid(rows: number, cols: number, maxRows: number, maxCols: number): TileRect[] {
  const out: TileRect[] = [];
  for (let r = 0; r < rows; r += maxRows)
    for (let c = 0; c < cols; c += maxCols)
      out.push({ row: r, col: c, rows: Math.min(maxRows, rows - r), cols: Math.min(maxCols, cols - c) });
  return out;
}

export function cutTile<T extends AnyTypedArray>(plane: T, planeCols: number, t: TileRect, alloc: (n: number) => T): T {
  if (t.row === 0 && t.col === 0 && t.cols === planeCols && plane.length === t.rows * t.cols) return plane;
  const out = alloc(t.rows * t.cols);
  for (let r = 0; r < t.rows; r++) {
    const start = (t.row + r) * planeCols + t.col;
    out.set(plane.subarray(start, start + t.cols), r * t.cols);
  }
  return out;
}

export function pasteTile<T extends AnyTypedArray>(plane: T, planeCols: number, t: TileRect, tile: T): void {
  for (let r = 0; r < t.rows; r++) plane.set(tile.subarray(r * t.cols, (r + 1) * t.cols), (t.row + r) * planeCols + t.col);
}
