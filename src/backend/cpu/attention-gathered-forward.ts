/**
 * Forward range kernel of packed (varlen) attention: one item per group. A group's rows are copied into
 * float64 tiles and attended with a tiled online softmax. With a causal mask aligned bottom-right, the
 * keys split in two runs: those every query sees (before the queries' own positions), attended without a
 * mask, and the last ones, attended with the ordinary causal triangle on shifted indices.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { registerRangeKernel } from './kernel-registry.js';
import { Scratch } from './attention-scratch.js';
import { gatherRows } from './attention-rows.js';
import { accumulateRows, scoreTile } from './attention-tiles.js';
import { softmaxStep } from './attention-steps.js';

export const GATHERED_FORWARD_KERNEL = 'attention.gathered.forward';

const BQ = 32;
const BK = 256;

const scratch = new Scratch();
const Q = 0, K = 1, V = 2, O = 3, S = 4, ROW_MAX = 5, ROW_SUM = 6;

/** Plain values describing the groups (posted as-is to worker threads). */
export interface GatheredPlan {
  readonly qOffsets: Int32Array;
  readonly kOffsets: Int32Array;
  readonly headDim: number;
  readonly causal: boolean;
  readonly scale: number;
}

/** The plan, packed q [rowsQ, D], k and v [rowsK, D], and the outputs o [rowsQ, D], lse [rowsQ]. */
export interface GatheredForwardArgs extends GatheredPlan {
  readonly q: FloatArray; readonly k: FloatArray; readonly v: FloatArray;
  readonly o: FloatArray; readonly lse: FloatArray;
}

/**
 * How a group's queries meet its keys: the first `skip` queries see no key at all; the other m queries
 * all see keys [0, full), and query i of them (0-based) also keys full .. full + i when causal.
 */
export function groupShape(mq: number, mk: number, causal: boolean): { skip: number; m: number; full: number } {
  if (mk === 0) return { skip: mq, m: 0, full: 0 };
  if (!causal) return { skip: 0, m: mq, full: mk };
  const skip = Math.max(0, mq - mk);
  const m = mq - skip;
  return { skip, m, full: mk - m };
}

function forwardGroups(args: GatheredForwardArgs, start: number, end: number): void {
  try {
    for (let g = start; g < end; g++) forwardGroup(args, g);
  } finally {
    scratch.trim();
  }
}

registerRangeKernel(GATHERED_FORWARD_KERNEL, import.meta.url, forwardGroups);

function forwardGroup(args: GatheredForwardArgs, g: number): void {
  const { qOffsets, kOffsets, headDim: D, causal, scale, q, k, v, o, lse } = args;
  const qa = qOffsets[g]!;
  const mq = qOffsets[g + 1]! - qa;
  const ka = kOffsets[g]!;
  const mk = kOffsets[g + 1]! - ka;
  const { skip, m, full } = groupShape(mq, mk, causal);
  for (let i = 0; i < skip; i++) {
    o.fill(0, (qa + i) * D, (qa + i + 1) * D);
    lse[qa + i] = -Infinity;
  }
  if (m === 0) return;
  const q0 = qa + skip;
  const qs = gatherRows(q, q0 * D, D, m, D, scratch.get(Q, m * D), scale);
  const ks = gatherRows(k, ka * D, D, mk, D, scratch.get(K, mk * D), 1);
  const vs = gatherRows(v, ka * D, D, mk, D, scratch.get(V, mk * D), 1);
  const os = scratch.get(O, m * D);
  const s = scratch.get(S, BQ * BK);
  const rowMax = scratch.get(ROW_MAX, BQ);
  const rowSum = scratch.get(ROW_SUM, BQ);
  // the causal run: keys from `full` on, indexed so that query i sees keys 0..i
  const kTail = ks.subarray(full * D);
  const vTail = vs.subarray(full * D);
  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    os.fill(0, i0 * D, i1 * D);
    rowMax.fill(-Infinity, 0, i1 - i0);
    rowSum.fill(0, 0, i1 - i0);
    for (let j0 = 0; j0 < full; j0 += BK) {
      const j1 = Math.min(full, j0 + BK);
      scoreTile(qs, ks, D, i0, i1, j0, j1, false, -Infinity, s, BK);
      softmaxStep(s, BK, j0, j1, i0, i1, D, false, os, rowMax, rowSum);
      accumulateRows(s, BK, vs, D, i0, i1, j0, j1, false, os);
    }
    if (causal) {
      for (let j0 = 0; j0 < i1; j0 += BK) {
        const j1 = Math.min(i1, j0 + BK);
        scoreTile(qs, kTail, D, i0, i1, j0, j1, true, -Infinity, s, BK);
        softmaxStep(s, BK, j0, j1, i0, i1, D, true, os, rowMax, rowSum);
        accumulateRows(s, BK, vTail, D, i0, i1, j0, j1, true, os);
      }
    }
    for (let i = i0; i < i1; i++) {
      const t = i - i0;
      const inv = 1 / rowSum[t]!;
      const from = i * D;
      const to = (q0 + i) * D;
      for (let d = 0; d < D; d++) o[to + d] = os[from + d]! * inv;
      lse[q0 + i] = rowMax[t]! + Math.log(rowSum[t]!);
    }
  }
}
