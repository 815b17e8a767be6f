/**
 * Backward range kernel of dilated attention. The mixture of patterns is one softmax over the multiset of
 * keys, so its exact gradient is FlashAttention-2's backward run per pattern with the final log-sum-exp L
 * and Dsum = rowsum(dO * O): P = exp(scale q.k - L), dV += P^T dO, dS = P (dO v^T - Dsum),
 * dQ += scale dS K, dK += scale dS^T Q; contributions of all patterns add up in the unit's accumulators.
 * Per tile these are five small matrix products, done by the register-blocked routines of attention-tiles.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { registerRangeKernel } from './kernel-registry.js';
import { headOffset, type AttentionPlan } from './attention-plan.js';
import { Scratch } from './attention-scratch.js';
import { gatherRows, gatherScalars } from './attention-rows.js';
import { backwardTile } from './attention-steps.js';

export const BACKWARD_KERNEL = 'attention.backward';

// rows per query tile and per key tile: the five tiles of a step (Q, dO, K, V and their P, dS) stay in L2
const BQ = 64;
const BK = 64;

const scratch = new Scratch();
const Q = 0, K = 1, V = 2, DO = 3, L = 4, DS = 5, DQ = 6, DK = 7, DV = 8;
const ACC_DQ = 9, ACC_DK = 10, ACC_DV = 11, ACC_DSUM = 12, P = 13, DP = 14;

/** The plan, the forward's inputs and outputs, dO, and the gradients to fill (all [B, N, H, D] but lse). */
export interface BackwardArgs extends AttentionPlan {
  readonly q: FloatArray; readonly k: FloatArray; readonly v: FloatArray;
  readonly o: FloatArray; readonly lse: FloatArray; readonly dO: FloatArray;
  readonly dq: FloatArray; readonly dk: FloatArray; readonly dv: FloatArray;
}

function backwardUnits(args: BackwardArgs, start: number, end: number): void {
  const { q, k, v, o, lse, dO, dq, dk, dv } = args;
  try {
    for (let u = start; u < end; u++) backwardUnit(args, q, k, v, o, lse, dO, dq, dk, dv, u);
  } finally {
    scratch.trim();
  }
}

registerRangeKernel(BACKWARD_KERNEL, import.meta.url, backwardUnits);

function backwardUnit(
  plan: AttentionPlan, q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, dO: FloatArray,
  dq: FloatArray, dk: FloatArray, dv: FloatArray, u: number,
): void {
  const { seqLen: N, heads: H, headDim: D, chunk, chunks, patterns, causal, scale, blocked } = plan;
  const h = u % H;
  const c = Math.floor(u / H) % chunks;
  const b = Math.floor(u / (H * chunks));
  const c0 = c * chunk;
  const c1 = Math.min(N, c0 + chunk);
  const len = c1 - c0;
  const rowStride = H * D;
  const headBase = b * N * rowStride + h * D;

  const accDq = scratch.get(ACC_DQ, len * D);
  const accDk = scratch.get(ACC_DK, len * D);
  const accDv = scratch.get(ACC_DV, len * D);
  accDq.fill(0, 0, len * D);
  accDk.fill(0, 0, len * D);
  accDv.fill(0, 0, len * D);
  // Dsum = rowsum(dO * O), once per row of the chunk
  const dsum = scratch.get(ACC_DSUM, len);
  for (let row = 0; row < len; row++) {
    const at = headBase + (c0 + row) * rowStride;
    let acc = 0;
    for (let d = 0; d < D; d++) acc += dO[at + d]! * o[at + d]!;
    dsum[row] = acc;
  }

  for (let pi = 0; pi < patterns.length; pi += 2) {
    const wp = Math.min(patterns[pi]!, N);
    const r = patterns[pi + 1]!;
    const off = headOffset(h, H, r, blocked);
    for (let s0 = c0; s0 < c1; s0 += wp) {
      const first = s0 + off;
      const s1 = Math.min(s0 + wp, N);
      if (first >= s1) continue;
      const m = Math.ceil((s1 - first) / r);
      const base = headBase + first * rowStride;
      const stride = r * rowStride;
      const qs = gatherRows(q, base, stride, m, D, scratch.get(Q, m * D), scale);
      const ks = gatherRows(k, base, stride, m, D, scratch.get(K, m * D), 1);
      const vs = gatherRows(v, base, stride, m, D, scratch.get(V, m * D), 1);
      const dos = gatherRows(dO, base, stride, m, D, scratch.get(DO, m * D), 1);
      const ls = gatherScalars(lse, (b * N + first) * H + h, r * H, m, scratch.get(L, m));
      const ds = gatherScalars(dsum, first - c0, r, m, scratch.get(DS, m));
      const dqs = scratch.get(DQ, m * D);
      const dks = scratch.get(DK, m * D);
      const dvs = scratch.get(DV, m * D);
      dqs.fill(0, 0, m * D);
      dks.fill(0, 0, m * D);
      dvs.fill(0, 0, m * D);
      flashBackward(qs, ks, vs, dos, ls, ds, m, D, causal, dqs, dks, dvs);
      addRows(dqs, m, D, accDq, first - c0, r, scale); // q was scaled for the scores, dq takes it here
      addRows(dks, m, D, accDk, first - c0, r, 1);
      addRows(dvs, m, D, accDv, first - c0, r, 1);
    }
  }

  for (let row = 0; row < len; row++) {
    const dst = headBase + (c0 + row) * rowStride;
    const src = row * D;
    for (let d = 0; d < D; d++) {
      dq[dst + d] = accDq[src + d]!;
      dk[dst + d] = accDk[src + d]!;
      dv[dst + d] = accDv[src + d]!;
    }
  }
}

/** acc[(row0 + j*r)*D + d] += mul * rows[j*D + d]. */
function addRows(
  rows: Float64Array, m: number, D: number, acc: Float64Array, row0: number, r: number, mul: number,
): void {
  for (let j = 0; j < m; j++) {
    const dst = (row0 + j * r) * D;
    const src = j * D;
    for (let d = 0; d < D; d++) acc[dst + d] += mul * rows[src + d]!;
  }
}

function flashBackward(
  q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, lse: Float64Array, dsum: Float64Array,
  m: number, D: number, causal: boolean, dq: Float64Array, dk: Float64Array, dv: Float64Array,
): void {
  const p = scratch.get(P, BQ * BK);
  const ds = scratch.get(DP, BQ * BK);
  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    const jEnd = causal ? i1 : m; // key tiles wholly above the diagonal contribute nothing
    for (let j0 = 0; j0 < jEnd; j0 += BK) {
      const j1 = Math.min(jEnd, j0 + BK);
      backwardTile(q, k, v, dO, lse, dsum, D, i0, i1, j0, j1, causal, p, ds, BK, dq, dk, dv);
    }
  }
}
