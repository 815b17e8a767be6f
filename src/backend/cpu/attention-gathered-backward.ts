/**
 * Backward range kernel of packed (varlen) attention, one item per group: FlashAttention-2's backward with
 * the caller's final log-sum-exp L and Dsum = rowsum(dO * O_final), so that groups which are only part of
 * a query's softmax (one pattern, or one device's share of the keys) get their exact share:
 * P = exp(scale q.k - L), dV += P^T dO, dS = P (dO v^T - Dsum), dQ += scale dS K, dK += scale dS^T Q.
 * Groups own disjoint key rows, so items write disjoint memory.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { registerRangeKernel } from './kernel-registry.js';
import { Scratch } from './attention-scratch.js';
import { gatherRows, gatherScalars } from './attention-rows.js';
import { accumulateColumns, accumulateRows, scoreTile } from './attention-tiles.js';
import { groupShape, type GatheredPlan } from './attention-gathered-forward.js';

export const GATHERED_BACKWARD_KERNEL = 'attention.gathered.backward';

const BQ = 64;
const BK = 64;

const scratch = new Scratch();
const Q = 0, K = 1, V = 2, DO = 3, L = 4, DSUM = 5, DQ = 6, DK = 7, DV = 8, P = 9, DP = 10;

/** The plan, packed inputs, the final lse and dsum [rowsQ], dO, and the gradients to fill. */
export interface GatheredBackwardArgs extends GatheredPlan {
  readonly q: FloatArray; readonly k: FloatArray; readonly v: FloatArray;
  readonly lse: FloatArray; readonly dsum: FloatArray; readonly dO: FloatArray;
  readonly dq: FloatArray; readonly dk: FloatArray; readonly dv: FloatArray;
}

function backwardGroups(args: GatheredBackwardArgs, start: number, end: number): void {
  try {
    for (let g = start; g < end; g++) backwardGroup(args, g);
  } finally {
    scratch.trim();
  }
}

registerRangeKernel(GATHERED_BACKWARD_KERNEL, import.meta.url, backwardGroups);

function backwardGroup(args: GatheredBackwardArgs, g: number): void {
  const { qOffsets, kOffsets, headDim: D, causal, scale, q, k, v, lse, dsum, dO, dq, dk, dv } = args;
  const qa = qOffsets[g]!;
  const mq = qOffsets[g + 1]! - qa;
  const ka = kOffsets[g]!;
  const mk = kOffsets[g + 1]! - ka;
  const { skip, m, full } = groupShape(mq, mk, causal);
  // outputs start zeroed: rows of skipped queries and of unseen keys keep 0
  if (m === 0) return;
  const q0 = qa + skip;
  const qs = gatherRows(q, q0 * D, D, m, D, scratch.get(Q, m * D), scale);
  const ks = gatherRows(k, ka * D, D, mk, D, scratch.get(K, mk * D), 1);
  const vs = gatherRows(v, ka * D, D, mk, D, scratch.get(V, mk * D), 1);
  const dos = gatherRows(dO, q0 * D, D, m, D, scratch.get(DO, m * D), 1);
  const ls = gatherScalars(lse, q0, 1, m, scratch.get(L, m));
  const ds = gatherScalars(dsum, q0, 1, m, scratch.get(DSUM, m));
  const dqs = scratch.get(DQ, m * D);
  const dks = scratch.get(DK, mk * D);
  const dvs = scratch.get(DV, mk * D);
  dqs.fill(0, 0, m * D);
  dks.fill(0, 0, mk * D);
  dvs.fill(0, 0, mk * D);
  const p = scratch.get(P, BQ * BK);
  const dp = scratch.get(DP, BQ * BK);
  const tail = full * D; // the causal run of keys, indexed so that query i sees keys 0..i
  const kTail = ks.subarray(tail), vTail = vs.subarray(tail), dkTail = dks.subarray(tail), dvTail = dvs.subarray(tail);

  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    for (let j0 = 0; j0 < full; j0 += BK) {
      const j1 = Math.min(full, j0 + BK);
      tileStep(qs, ks, vs, dos, ls, ds, D, i0, i1, j0, j1, false, p, dp, dqs, dks, dvs);
    }
    if (causal) {
      for (let j0 = 0; j0 < i1; j0 += BK) {
        const j1 = Math.min(i1, j0 + BK);
        tileStep(qs, kTail, vTail, dos, ls, ds, D, i0, i1, j0, j1, true, p, dp, dqs, dkTail, dvTail);
      }
    }
  }

  for (let i = 0; i < m; i++) {
    const from = i * D;
    const to = (q0 + i) * D;
    for (let d = 0; d < D; d++) dq[to + d] = scale * dqs[from + d]!; // q was scaled for the scores
  }
  const kBase = ka * D;
  for (let x = 0; x < mk * D; x++) {
    dk[kBase + x] = dks[x]!;
    dv[kBase + x] = dvs[x]!;
  }
}

function tileStep(
  q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, lse: Float64Array, dsum: Float64Array, D: number,
  i0: number, i1: number, j0: number, j1: number, causal: boolean,
  p: Float64Array, ds: Float64Array, dq: Float64Array, dk: Float64Array, dv: Float64Array,
): void {
  scoreTile(q, k, D, i0, i1, j0, j1, causal, 0, p, BK);
  scoreTile(dO, v, D, i0, i1, j0, j1, causal, 0, ds, BK);
  probabilities(p, ds, BK, j0, j1, i0, i1, causal, lse, dsum);
  accumulateRows(ds, BK, k, D, i0, i1, j0, j1, causal, dq);
  accumulateColumns(p, BK, dO, D, i0, i1, j0, j1, causal, dv);
  accumulateColumns(ds, BK, q, D, i0, i1, j0, j1, causal, dk);
}

/**
 * Turns a tile of scores into P = exp(s - L) and a tile of dP = dO v^T into dS = P (dP - Dsum), in place.
 * Entries a causal row may not see stay 0 in both; so do rows with no key at all (L = -inf).
 */
function probabilities(
  p: Float64Array, ds: Float64Array, ld: number, j0: number, j1: number, i0: number, i1: number, causal: boolean,
  lse: Float64Array, dsum: Float64Array,
): void {
  for (let i = i0; i < i1; i++) {
    const row = (i - i0) * ld;
    const n = (causal && i + 1 < j1 ? i + 1 : j1) - j0;
    if (n <= 0) continue;
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
