/**
 * The steps the attention kernels here share (dilated and gathered, forward and backward): the
 * online-softmax update over one tile of scores, folding a partial result into a running (output,
 * log-sum-exp) pair, and one FlashAttention-2 backward tile.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { accumulateColumns, accumulateRows, scoreTile } from './attention-tiles.js';

/**
 * Online-softmax step over one score tile: raises each row's running maximum, rescales its running sum
 * and output row accordingly, and turns the scores into unnormalized probabilities in place.
 */
export function softmaxStep(
  s: Float64Array, ld: number, j0: number, j1: number, i0: number, i1: number, D: number, causal: boolean,
  out: Float64Array, rowMax: Float64Array, rowSum: Float64Array,
): void {
  for (let i = i0; i < i1; i++) {
    const t = i - i0;
    const row = t * ld;
    // keys this row may see; the entry just past them must read 0 (the 2-row products touch it)
    const n = (causal && i + 1 < j1 ? i + 1 : j1) - j0;
    if (n < j1 - j0 && n >= 0) s[row + n] = 0;
    let tileMax = -Infinity;
    for (let x = 0; x < n; x++) {
      const y = s[row + x]!;
      if (y > tileMax) tileMax = y;
    }
    if (tileMax === -Infinity) continue; // no key of this tile is visible to this row
    let mx = rowMax[t]!;
    if (tileMax > mx) {
      if (mx !== -Infinity) {
        const alpha = Math.exp(mx - tileMax);
        rowSum[t]! *= alpha;
        const oi = i * D;
        for (let d = 0; d < D; d++) out[oi + d] *= alpha;
      }
      mx = tileMax;
      rowMax[t] = mx;
    }
    let sum = 0;
    for (let x = 0; x < n; x++) {
      const p = Math.exp(s[row + x]! - mx);
      s[row + x] = p;
      sum += p;
    }
    rowSum[t]! += sum;
  }
}

/**
 * Row `row` of (accO, accLse) absorbs a partial result: row `src` of `o` with log-sum-exp `lp`. The weights
 * exp(l - L_new) are the paper's mixture weights; a partial result with no key (lp = -inf) changes nothing.
 */
export function mergeRow(
  accO: FloatArray, accLse: FloatArray, row: number, o: FloatArray, src: number, lp: number, D: number,
): void {
  if (lp === -Infinity) return;
  const la = accLse[row]!;
  const from = src * D;
  const to = row * D;
  if (la === -Infinity) {
    for (let d = 0; d < D; d++) accO[to + d] = o[from + d]!;
    accLse[row] = lp;
    return;
  }
  const mx = la > lp ? la : lp;
  const ea = Math.exp(la - mx);
  const ep = Math.exp(lp - mx);
  const total = ea + ep;
  const wa = ea / total;
  const wp = ep / total;
  for (let d = 0; d < D; d++) accO[to + d] = wa * accO[to + d]! + wp * o[from + d]!;
  accLse[row] = mx + Math.log(total);
}

/**
 * One backward tile (FlashAttention-2, with the final L and Dsum): queries [i0, i1) against keys [j0, j1).
 * `p` and `ds` are scratch tiles with leading dimension `ld`.
 */
export function backwardTile(
  q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, lse: Float64Array, dsum: Float64Array, D: number,
  i0: number, i1: number, j0: number, j1: number, causal: boolean, p: Float64Array, ds: Float64Array, ld: number,
  dq: Float64Array, dk: Float64Array, dv: Float64Array,
): void {
  scoreTile(q, k, D, i0, i1, j0, j1, causal, 0, p, ld);
  scoreTile(dO, v, D, i0, i1, j0, j1, causal, 0, ds, ld);
  probabilities(p, ds, ld, j0, j1, i0, i1, causal, lse, dsum);
  accumulateRows(ds, ld, k, D, i0, i1, j0, j1, causal, dq);
  accumulateColumns(p, ld, dO, D, i0, i1, j0, j1, causal, dv);
  accumulateColumns(ds, ld, q, D, i0, i1, j0, j1, causal, dk);
}

/**
 * Turns a tile of scores into P = exp(s - L) and a tile of dP = dO v^T into dS = P (dP - Dsum), in place.
 * Entries a causal row may not see are 0 in both; so are rows with no key at all (L = -inf).
 */
function probabilities(
  p: Float64Array, ds: Float64Array, ld: number, j0: number, j1: number, i0: number, i1: number, causal: boolean,
  lse: Float64Array, dsum: Float64Array,
): void {
  for (let i = i0; i < i1; i++) {
    const row = (i - i0) * ld;
    const n = (causal && i + 1 < j1 ? i + 1 : j1) - j0;
    if (n <= 0) continue; // masked entirely; the score tiles hold 0 here already
    const li = lse[i]!;
    if (li === -Infinity) {
      p.fill(0, row, row + n);
      ds.fill(0, row, row + n);
      continue;
    }
    const di = dsum[i]!;
    for (let x = 0; x < n; x++) {
      const e = Math.exp(p[row + x]! - li);
      p[row + x] = e;
      ds[row + x] = e * (ds[row + x]! - di);
    }
  }
}
