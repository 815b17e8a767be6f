/**
 * Forward range kernel of dilated attention. Per unit (batch, chunk, head) and pattern, each segment's
 * selected rows are gathered into contiguous float64 tiles, attended with a tiled online softmax (flash
 * style: no score matrix larger than one tile), and merged into the unit's running output through the
 * log-sum-exp, which makes the patterns one softmax over the multiset of their keys.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { registerRangeKernel } from './kernel-registry.js';
import { headOffset, type AttentionPlan } from './attention-plan.js';
import { Scratch } from './attention-scratch.js';
import { gatherRows } from './attention-rows.js';
import { accumulateRows, scoreTile } from './attention-tiles.js';
import { mergeRow, softmaxStep } from './attention-steps.js';

export const FORWARD_KERNEL = 'attention.forward';

// Query rows per tile, and key rows per tile: with w/r <= 256 (the usual sparse length) a segment is one
// key tile, so no rescaling happens at all; K and V tiles (2 * 256 * D doubles) stay in L2.
const BQ = 32;
const BK = 256;

const scratch = new Scratch();
const Q = 0, K = 1, V = 2, O = 3, L = 4, ACC_O = 5, ACC_L = 6, S = 7, ROW_MAX = 8, ROW_SUM = 9;

/** The plan, the inputs [B, N, H, D] and the outputs o [B, N, H, D], lse [B, N, H]. */
export interface ForwardArgs extends AttentionPlan {
  readonly q: FloatArray; readonly k: FloatArray; readonly v: FloatArray;
  readonly o: FloatArray; readonly lse: FloatArray;
}

function forwardUnits(args: ForwardArgs, start: number, end: number): void {
  const { q, k, v, o, lse } = args;
  try {
    for (let u = start; u < end; u++) forwardUnit(args, q, k, v, o, lse, u);
  } finally {
    scratch.trim();
  }
}

registerRangeKernel(FORWARD_KERNEL, import.meta.url, forwardUnits);

function forwardUnit(
  plan: AttentionPlan, q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, u: number,
): void {
  const { seqLen: N, heads: H, headDim: D, chunk, chunks, patterns, causal, scale, blocked } = plan;
  const h = u % H;
  const c = Math.floor(u / H) % chunks;
  const b = Math.floor(u / (H * chunks));
  const c0 = c * chunk;
  const c1 = Math.min(N, c0 + chunk);
  const len = c1 - c0;
  const rowStride = H * D;
  const headBase = b * N * rowStride + h * D; // element offset of (b, position 0, h)

  const accO = scratch.get(ACC_O, len * D);
  const accL = scratch.get(ACC_L, len);
  accO.fill(0, 0, len * D);
  accL.fill(-Infinity, 0, len);

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
      const os = scratch.get(O, m * D);
      const ls = scratch.get(L, m);
      flashForward(qs, ks, vs, m, D, causal, os, ls);
      mergeRows(os, ls, m, D, accO, accL, first - c0, r);
    }
  }

  for (let row = 0; row < len; row++) {
    const dst = headBase + (c0 + row) * rowStride;
    const src = row * D;
    for (let d = 0; d < D; d++) o[dst + d] = accO[src + d]!;
    lse[(b * N + c0 + row) * H + h] = accL[row]!;
  }
}

/**
 * Softmax attention of m rows on contiguous tiles (q already scaled): writes the normalized output rows
 * into `out` and each row's log-sum-exp into `lseOut`.
 */
function flashForward(
  q: Float64Array, k: Float64Array, v: Float64Array, m: number, D: number, causal: boolean,
  out: Float64Array, lseOut: Float64Array,
): void {
  const s = scratch.get(S, BQ * BK);
  const rowMax = scratch.get(ROW_MAX, BQ);
  const rowSum = scratch.get(ROW_SUM, BQ);
  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    out.fill(0, i0 * D, i1 * D);
    rowMax.fill(-Infinity, 0, i1 - i0);
    rowSum.fill(0, 0, i1 - i0);
    // causal: key tiles past the last query of this tile are all masked, skip them
    const jEnd = causal ? i1 : m;
    for (let j0 = 0; j0 < jEnd; j0 += BK) {
      const j1 = Math.min(jEnd, j0 + BK);
      scoreTile(q, k, D, i0, i1, j0, j1, causal, -Infinity, s, BK);
      softmaxStep(s, BK, j0, j1, i0, i1, D, causal, out, rowMax, rowSum);
      accumulateRows(s, BK, v, D, i0, i1, j0, j1, causal, out);
    }
    for (let i = i0; i < i1; i++) {
      const t = i - i0;
      const inv = 1 / rowSum[t]!;
      const oi = i * D;
      for (let d = 0; d < D; d++) out[oi + d] *= inv;
      lseOut[i] = rowMax[t]! + Math.log(rowSum[t]!);
    }
  }
}

/**
 * Folds one pattern's rows (output `os`, log-sum-exp `ls`) into the unit's running output: rows
 * row0, row0 + r, ... of the chunk. The weights exp(l - L_new) are the paper's mixture weights.
 */
function mergeRows(
  os: Float64Array, ls: Float64Array, m: number, D: number,
  accO: Float64Array, accL: Float64Array, row0: number, r: number,
): void {
  for (let j = 0; j < m; j++) mergeRow(accO, accL, row0 + j * r, os, j, ls[j]!, D);
}
