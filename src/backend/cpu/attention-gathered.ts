/**
 * CPU packed (varlen) attention and the log-sum-exp merge of partial results: the primitives of
 * sequence-parallel attention (Backend.gatheredAttention, gatheredAttentionBackward, mergeAttention).
 * Groups run on the thread pool when the arrays are shared and the work pays for it.
 */
import type { GatheredAttentionLayout } from '../backend.js';
import { dtypeOfArray, newTypedArray, type FloatArray } from '../../tensor/dtype.js';
import { parallelFor } from './thread-pool.js';
import { GATHERED_FORWARD_KERNEL, groupShape, type GatheredForwardArgs, type GatheredPlan } from './attention-gathered-forward.js';
import { GATHERED_BACKWARD_KERNEL, type GatheredBackwardArgs } from './attention-gathered-backward.js';
import { mergeRow } from './attention-steps.js';
import { checkGatheredLayout } from '../gathered-layout.js';

const MIN_WORK_PER_THREAD = 3e6;

function newLike(a: FloatArray, size: number): FloatArray {
  return newTypedArray(dtypeOfArray(a), size, a.buffer instanceof SharedArrayBuffer) as FloatArray;
}

/** Workers read the offsets too: put them on shared memory when the data is. */
function shareLike(a: Int32Array, like: FloatArray): Int32Array {
  if (!(like.buffer instanceof SharedArrayBuffer) || a.buffer instanceof SharedArrayBuffer) return a;
  const out = new Int32Array(new SharedArrayBuffer(4 * a.length));
  out.set(a);
  return out;
}

/** The layout, checked, with its offsets on shared buffers like the operands (for worker threads). */
function checkedPlan(layout: GatheredAttentionLayout, rowsQ: number, rowsK: number, like: FloatArray): GatheredPlan {
  checkGatheredLayout(layout, rowsQ, rowsK);
  const { qOffsets, kOffsets, headDim } = layout;
  return {
    qOffsets: shareLike(qOffsets, like), kOffsets: shareLike(kOffsets, like), headDim,
    causal: layout.causal, scale: layout.scale,
  };
}

/** Score entries computed over all groups, about (for the thread split). */
function pairs(plan: GatheredPlan): number {
  let total = 0;
  for (let g = 0; g + 1 < plan.qOffsets.length; g++) {
    const mq = plan.qOffsets[g + 1]! - plan.qOffsets[g]!;
    const mk = plan.kOffsets[g + 1]! - plan.kOffsets[g]!;
    const { m, full } = groupShape(mq, mk, plan.causal);
    total += m * full + (plan.causal ? (m * (m + 1)) / 2 : 0);
  }
  return total;
}

export function gatheredAttentionForward(
  q: FloatArray, k: FloatArray, v: FloatArray, layout: GatheredAttentionLayout,
): { o: FloatArray; lse: FloatArray } {
  const D = layout.headDim;
  const plan = checkedPlan(layout, q.length / D, k.length / D, q);
  if (v.length !== k.length) throw new RangeError(`gatheredAttention: v has ${v.length} values but k has ${k.length}`);
  const o = newLike(q, q.length);
  const lse = newLike(q, q.length / D);
  const groups = plan.qOffsets.length - 1;
  const cost = (pairs(plan) * 4 * D) / Math.max(1, groups);
  parallelFor<GatheredForwardArgs>(GATHERED_FORWARD_KERNEL, { ...plan, q, k, v, o, lse }, groups, {
    itemCost: cost, minCostPerThread: MIN_WORK_PER_THREAD,
  });
  return { o, lse };
}

export function gatheredAttentionBackward(
  q: FloatArray, k: FloatArray, v: FloatArray, lse: FloatArray, dsum: FloatArray, dO: FloatArray,
  layout: GatheredAttentionLayout,
): { dq: FloatArray; dk: FloatArray; dv: FloatArray } {
  const D = layout.headDim;
  const plan = checkedPlan(layout, q.length / D, k.length / D, q);
  const rowsQ = q.length / D;
  if (lse.length !== rowsQ || dsum.length !== rowsQ || dO.length !== q.length) {
    throw new RangeError('gatheredAttentionBackward: lse, dsum and dO must match the query rows');
  }
  const dq = newLike(q, q.length);
  const dk = newLike(q, k.length);
  const dv = newLike(q, v.length);
  const groups = plan.qOffsets.length - 1;
  const cost = (pairs(plan) * 10 * D) / Math.max(1, groups);
  parallelFor<GatheredBackwardArgs>(GATHERED_BACKWARD_KERNEL, { ...plan, q, k, v, lse, dsum, dO, dq, dk, dv }, groups, {
    itemCost: cost, minCostPerThread: MIN_WORK_PER_THREAD,
  });
  return { dq, dk, dv };
}

/** In place: row rows[i] of (accO, accLse) absorbs packed row i of (o, lse). */
export function mergeAttentionRows(
  accO: FloatArray, accLse: FloatArray, o: FloatArray, lse: FloatArray, rows: Int32Array, D: number,
): void {
  if (o.length !== rows.length * D || lse.length !== rows.length) {
    throw new RangeError(`mergeAttention: ${rows.length} rows but o has ${o.length} values and lse ${lse.length}`);
  }
  const total = accLse.length;
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    if (!(row >= 0 && row < total)) throw new RangeError(`mergeAttention: row ${row} is outside [0, ${total})`);
    mergeRow(accO, accLse, row, o, i, lse[i]!, D);
  }
}
