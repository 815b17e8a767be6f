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
import { backwardTile } from './attention-steps.js';
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
      backwardTile(qs, ks, vs, dos, ls, ds, D, i0, i1, j0, j1, false, p, dp, BK, dqs, dks, dvs);
    }
    if (causal) {
      for (let j0 = 0; j0 < i1; j0 += BK) {
        const j1 = Math.min(i1, j0 + BK);
        backwardTile(qs, kTail, vTail, dos, ls, ds, D, i0, i1, j0, j1, true, p, dp, BK, dqs, dkTail, dvTail);
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
