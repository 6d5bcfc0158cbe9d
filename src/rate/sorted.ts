/**
 * Step-grid candidates of 8-bit codes measured from each column's sorted values (issue 16: rate control without a
 * pass over every weight for every candidate).
 *
 * A column's code is a non-decreasing function of its weight (quantizePlane's arithmetic: a subtraction, a
 * division by a positive span and a product, each monotone under rounding, then a floor and a clamp). So on the
 * column's finite weights sorted once, every code holds one run: its ends are found by galloping and bisection
 * with that same arithmetic, its count is exact (the histogram, hence the entropy, is the per-weight pass's to the
 * bit), and its squared error Σ (w − c)² comes from prefix sums over the run (about the column's middle value;
 * runs of up to 32 weights are summed directly). A candidate then
 * costs a few evaluations per occupied code and column instead of one per weight: ~30 codes a column against
 * thousands of rows. The squared error is the same sum in another order and form: equal to the per-weight pass's
 * within 1e-9 relative on the planes fuzzed (columns of up to 70,000 rows, outliers beyond the grid of up to
 * 1e9; test/rate.test.ts asserts 1e-10 on its planes), which moves no
 * allocation on the models measured (bench/golden.ts). The columns are sorted in blocks, so memory is a few MB,
 * not a copy of the plane.
 */

/** One candidate's grid on a plane: per column its range (lowest value, span) and the interval of weights on it. */
export interface ColumnGrid {
  los: Float64Array;
  spans: Float64Array;
  inLo: Float64Array;
  inHi: Float64Array;
  /** The code of weights beyond the grid, non-finite ones and a constant column's (uniform.ts fillCode). */
  fill: number;
}

/** What one candidate measured on a plane: code counts, squared error, weights beyond the grid. */
export interface SortedMeasure {
  hist: Float64Array;
  sse: number;
  beyond: number;
}

/** Values of a block of columns held at once (sorted values and two prefix sums: 20 bytes a value). */
const BLOCK_VALUES = 2 ** 16;

/**
 * Measures every grid of `grids` on the plane (rows × cols, a range per column), 8-bit codes. The plane is stored
 * row by row, or column by column (`columnMajor`: column c at c·rows, as a PyTorch [out, in] matrix holds its
 * plane).
 */
export function measureSorted(
  plane: Float32Array,
  rows: number,
  cols: number,
  grids: readonly ColumnGrid[],
  codeWidth: number,
  columnMajor = false,
): SortedMeasure[] {
  const levels = 2 ** codeWidth;
  const out = grids.map(() => ({ hist: new Float64Array(levels), sse: 0, beyond: 0 }));
  const block = Math.max(1, Math.min(cols, Math.floor(BLOCK_VALUES / Math.max(1, rows))));
  const sorted = new Float32Array(block * rows);
  // the same memory as sortable unsigned keys, and a second buffer for the radix passes
  const keys = new Uint32Array(sorted.buffer);
  const spare = new Uint32Array(rows);
  const counts = new Uint32Array(4 * 256);
  const s1 = new Float64Array(block * (rows + 1));
  const s2 = new Float64Array(block * (rows + 1));
  const finite = new Int32Array(block);
  const refs = new Float64Array(block);
  for (let c0 = 0; c0 < cols; c0 += block) {
    const n = Math.min(block, cols - c0);
    // gather the block's finite values (row by row: contiguous reads), then sort each column
    finite.fill(0);
    if (columnMajor)
      for (let j = 0; j < n; j++) {
        let k = j * rows;
        for (let i = (c0 + j) * rows, end = i + rows; i < end; i++) {
          const v = plane[i];
          if (Number.isFinite(v)) sorted[k++] = v;
        }
        finite[j] = k - j * rows;
      }
    else
      for (let r = 0; r < rows; r++) {
        const at = r * cols + c0;
        for (let j = 0; j < n; j++) {
          const v = plane[at + j];
          if (Number.isFinite(v)) sorted[j * rows + finite[j]++] = v;
        }
      }
    for (let j = 0; j < n; j++) {
      const m = finite[j];
      radixSort(keys.subarray(j * rows, j * rows + m), spare, counts);
      const col = sorted.subarray(j * rows, j * rows + m);
      const base = j * (rows + 1);
      // sums about the column's middle value, anchored there and accumulated outward both ways: an offset
      // column loses no digits to it, and a run's sums hold only the weights between it and the middle, never
      // the weights beyond the grid at the column's ends (an outlier of 1e4 took a run's error to 26 % off when
      // the sums ran from the first weight)
      const mid = m >>> 1;
      const ref = m ? col[mid] : 0;
      refs[j] = ref;
      s1[base + mid] = 0;
      s2[base + mid] = 0;
      let a = 0;
      let b = 0;
      for (let i = mid; i < m; i++) {
        const v = col[i] - ref;
        a += v;
        b += v * v;
        s1[base + i + 1] = a;
        s2[base + i + 1] = b;
      }
      a = 0;
      b = 0;
      for (let i = mid - 1; i >= 0; i--) {
        const v = col[i] - ref;
        a -= v;
        b -= v * v;
        s1[base + i] = a;
        s2[base + i] = b;
      }
    }
    // a column at a time through every grid, while its values and sums are in cache (each grid's sums still
    // add the columns in order)
    for (let j = 0; j < n; j++) {
      const c = c0 + j;
      const m = finite[j];
      const col = sorted.subarray(j * rows, j * rows + m);
      const sums = { s1, s2, base: j * (rows + 1), ref: refs[j] };
      for (let g = 0; g < grids.length; g++) {
        const grid = grids[g];
        measureColumn(col, sums, rows - m, grid.los[c], grid.spans[c], grid.inLo[c], grid.inHi[c], levels, grid.fill, out[g]);
      }
    }
  }
  return out;
}

/**
 * Sorts float32 values (as their bits, in place) ascending: each key mapped to an unsigned integer of the same
 * order (negatives' bits flipped, positives' sign bit set), least significant byte first, four passes of 256
 * buckets (a pass whose byte is the same for every key is skipped), mapped back. The four bytes' counts are taken
 * in one pass with the mapping (`counts`: 4 × 256). TypedArray#sort took ~75 ns a value here; this ~10.
 */
function radixSort(a: Uint32Array, spare: Uint32Array, counts: Uint32Array): void {
  const n = a.length;
  if (n < 2) return;
  counts.fill(0);
  for (let i = 0; i < n; i++) {
    const v = a[i];
    const k = v & 0x80000000 ? ~v >>> 0 : (v | 0x80000000) >>> 0;
    a[i] = k;
    counts[k & 255]++;
    counts[256 + ((k >>> 8) & 255)]++;
    counts[512 + ((k >>> 16) & 255)]++;
    counts[768 + (k >>> 24)]++;
  }
  let from = a;
  let to = spare.subarray(0, n);
  for (let pass = 0, shift = 0; pass < 4; pass++, shift += 8) {
    const off = pass * 256;
    if (counts[off + ((from[0] >>> shift) & 255)] === n) continue;
    let sum = 0;
    for (let d = off; d < off + 256; d++) {
      const c = counts[d];
      counts[d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const k = from[i];
      to[counts[off + ((k >>> shift) & 255)]++] = k;
    }
    const t = from;
    from = to;
    to = t;
  }
  for (let i = 0; i < n; i++) {
    const k = from[i];
    a[i] = k & 0x80000000 ? (k & 0x7fffffff) >>> 0 : ~k >>> 0;
  }
}

/** First index in col[from, to) whose value is not below x (to if none). */
function firstNotBelow(col: Float32Array, x: number, from: number, to: number): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (col[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in col[from, to) whose value is above x (to if none). */
function firstAbove(col: Float32Array, x: number, from: number, to: number): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (col[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A sorted column's sums of (w − ref) and (w − ref)² from its middle position to each position (negated below
 * the middle), from `base` in the block's arrays: the sum over positions [i, j) is s[j] − s[i] on either side.
 */
interface ColumnSums {
  s1: Float64Array;
  s2: Float64Array;
  base: number;
  ref: number;
}

/** Runs up to this long have their error summed weight by weight (fine steps: the prefix sums would cancel). */
const DIRECT_RUN = 32;

/**
 * Σ (w − c)² over sorted positions [i, j) of a column: weight by weight for a short run, else from the prefix
 * sums about the column's middle value (never below 0).
 */
function runError(col: Float32Array, sums: ColumnSums, i: number, j: number, c: number): number {
  if (j - i <= DIRECT_RUN) {
    let e = 0;
    for (let k = i; k < j; k++) e += (col[k] - c) ** 2;
    return e;
  }
  const { s1, s2, base } = sums;
  const d = c - sums.ref;
  const e = s2[base + j] - s2[base + i] - 2 * d * (s1[base + j] - s1[base + i]) + (j - i) * d * d;
  return e > 0 ? e : 0;
}

function measureColumn(
  col: Float32Array,
  sums: ColumnSums,
  nonFinite: number,
  lo: number,
  span: number,
  inLo: number,
  inHi: number,
  levels: number,
  fill: number,
  o: SortedMeasure,
): void {
  const m = col.length;
  const hist = o.hist;
  // beyond the grid (stored exactly) and non-finite (side data): the fill code, no error counted
  const a = firstNotBelow(col, inLo, 0, m);
  const b = firstAbove(col, inHi, a, m);
  o.beyond += a + (m - b);
  hist[fill] += a + (m - b) + nonFinite;
  if (a === b) return;
  if (!(span > 0)) {
    hist[fill] += b - a;
    o.sse += runError(col, sums, a, b, Math.fround(lo));
    return;
  }
  const perLevel = 1 / levels;
  const top = levels - 1;
  // the code of a weight, as quantizePlane finds it
  const codeOf = (v: number): number => {
    const q = Math.floor(((v - lo) / span) * levels);
    return q < 0 ? 0 : q > top ? top : q;
  };
  // a weight this far below a code's predicted edge has a code below it: the rounding of the code arithmetic and
  // of the edge is ~1e-16 of the grid's magnitude
  const tol = 1e-9 * (Math.abs(lo) + span);
  let i = a;
  let code = codeOf(col[i]);
  while (i < b) {
    // the run's end: where the next code's interval begins, by the grid's arithmetic, found by galloping and
    // bisecting with comparisons only; then moved onto the exact end with the code arithmetic itself (rounding
    // can put the first weight of the next code a position either side of the predicted edge). The next run's
    // code is the first code after this run.
    let j = b;
    let next = top;
    if (code < top) {
      const edge = lo + (code + 1) * span * perLevel;
      let step = 1;
      let below = i;
      while (i + step < b && col[i + step] < edge) {
        below = i + step;
        step *= 2;
      }
      j = firstNotBelow(col, edge, below + 1, Math.min(i + step, b));
      if (!(col[j - 1] < edge - tol)) while (j > i + 1 && codeOf(col[j - 1]) !== code) j--;
      for (; j < b; j++) {
        next = codeOf(col[j]);
        if (next !== code) break;
      }
    }
    hist[code] += j - i;
    o.sse += runError(col, sums, i, j, Math.fround(lo + (code + 0.5) * span * perLevel));
    i = j;
    code = next;
  }
}
