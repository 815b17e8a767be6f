/**
 * Backward range kernel of dilated attention. The mixture of patterns is one softmax over the multiset of
 * keys, so its exact gradient is FlashAttention-2's backward run per pattern with the final log-sum-exp L
 * and Dsum = rowsum(dO * O): P = exp(scale q.k - L), dV += P^T dO, dS = P (dO v^T - Dsum),
 * dQ += scale dS K, dK += scale dS^T Q; contributions of all patterns add up in the unit's accumulators.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { registerRangeKernel, type KernelArgs } from './kernel-registry.js';
import { headOffset, planFromArgs, type AttentionPlan } from './attention-plan.js';
import { Scratch } from './attention-scratch.js';
import { gatherRows, gatherScalars } from './attention-rows.js';

export const BACKWARD_KERNEL = 'attention.backward';

const BQ = 64;
const BK = 32; // K, V, dK, dV tiles (4 * 32 * D doubles) stay in L1 across the query rows

const scratch = new Scratch();
const Q = 0, K = 1, V = 2, DO = 3, L = 4, DS = 5, DQ = 6, DK = 7, DV = 8;
const ACC_DQ = 9, ACC_DK = 10, ACC_DV = 11, ACC_DSUM = 12;

function backwardUnits(args: KernelArgs, start: number, end: number): void {
  const plan = planFromArgs(args);
  const get = (name: string) => args[name] as FloatArray;
  const q = get('q'), k = get('k'), v = get('v'), o = get('o'), lse = get('lse'), dO = get('dO');
  const dq = get('dq'), dk = get('dk'), dv = get('dv');
  try {
    for (let u = start; u < end; u++) backwardUnit(plan, q, k, v, o, lse, dO, dq, dk, dv, u);
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
      const qs = gatherRows(q, base, stride, m, D, scratch.get(Q, m * D), 1);
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
      flashBackward(qs, ks, vs, dos, ls, ds, m, D, causal, scale, dqs, dks, dvs);
      addRows(dqs, m, D, accDq, first - c0, r);
      addRows(dks, m, D, accDk, first - c0, r);
      addRows(dvs, m, D, accDv, first - c0, r);
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

/** acc[(row0 + j*r)*D + d] += rows[j*D + d]. */
function addRows(rows: Float64Array, m: number, D: number, acc: Float64Array, row0: number, r: number): void {
  for (let j = 0; j < m; j++) {
    const dst = (row0 + j * r) * D;
    const src = j * D;
    for (let d = 0; d < D; d++) acc[dst + d] += rows[src + d]!;
  }
}

function flashBackward(
  q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, lse: Float64Array, dsum: Float64Array,
  m: number, D: number, causal: boolean, scale: number, dq: Float64Array, dk: Float64Array, dv: Float64Array,
): void {
  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    const jEnd = causal ? i1 : m;
    for (let j0 = 0; j0 < jEnd; j0 += BK) {
      const j1 = Math.min(jEnd, j0 + BK);
      for (let i = i0; i < i1; i++) {
        const li = lse[i]!;
        if (li === -Infinity) continue; // a row with no key has no gradient
        const jn = causal && i + 1 < j1 ? i + 1 : j1;
        if (jn > j0) rowBackward(q, k, v, dO, D, i, j0, jn, li, dsum[i]!, scale, dq, dk, dv);
      }
    }
  }
}

/** Gradient contributions of query row i against keys [j0, jn). */
function rowBackward(
  q: Float64Array, k: Float64Array, v: Float64Array, dO: Float64Array, D: number, i: number, j0: number, jn: number,
  li: number, di: number, scale: number, dq: Float64Array, dk: Float64Array, dv: Float64Array,
): void {
  const qi = i * D;
  let j = j0;
  // two keys at a time: each q and dO element loaded serves two products
  for (; j + 1 < jn; j += 2) {
    const a = j * D, b = a + D;
    let s0 = 0, s1 = 0, t0 = 0, t1 = 0;
    for (let d = 0; d < D; d++) {
      const x = q[qi + d]!;
      const g = dO[qi + d]!;
      s0 += x * k[a + d]!;
      s1 += x * k[b + d]!;
      t0 += g * v[a + d]!;
      t1 += g * v[b + d]!;
    }
    const p0 = Math.exp(scale * s0 - li);
    const p1 = Math.exp(scale * s1 - li);
    const g0 = scale * p0 * (t0 - di);
    const g1 = scale * p1 * (t1 - di);
    for (let d = 0; d < D; d++) {
      const x = q[qi + d]!;
      const g = dO[qi + d]!;
      const ka = k[a + d]!, kb = k[b + d]!;
      dv[a + d] += p0 * g;
      dv[b + d] += p1 * g;
      dk[a + d] += g0 * x;
      dk[b + d] += g1 * x;
      dq[qi + d] += g0 * ka + g1 * kb;
    }
  }
  for (; j < jn; j++) {
    const a = j * D;
    let s0 = 0, t0 = 0;
    for (let d = 0; d < D; d++) {
      s0 += q[qi + d]! * k[a + d]!;
      t0 += dO[qi + d]! * v[a + d]!;
    }
    const p0 = Math.exp(scale * s0 - li);
    const g0 = scale * p0 * (t0 - di);
    for (let d = 0; d < D; d++) {
      dv[a + d] += p0 * dO[qi + d]!;
      dk[a + d] += g0 * q[qi + d]!;
      dq[qi + d] += g0 * k[a + d]!;
    }
  }
}
