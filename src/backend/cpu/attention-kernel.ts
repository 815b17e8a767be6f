/**
 * CPU dilated attention (docs/ATTENTION.md): exact forward and backward, memory linear in N, work split over
 * the thread pool when the tensors live on shared buffers. Arguments are validated by the caller.
 */
import type { AttentionConfig, AttentionGeometry } from '../backend.js';
import { dtypeOfArray, newTypedArray, type FloatArray } from '../../tensor/dtype.js';
import { parallelFor } from './thread-pool.js';
import { planAttention } from './attention-plan.js';
import { FORWARD_KERNEL, type ForwardArgs } from './attention-forward.js';
import { BACKWARD_KERNEL, type BackwardArgs } from './attention-backward.js';

// below about this many flops (~1 ms) per thread, waking a worker costs more than it saves
const MIN_WORK_PER_THREAD = 3e6;

function isShared(a: FloatArray): boolean {
  return a.buffer instanceof SharedArrayBuffer;
}

function newLike(a: FloatArray, size: number): FloatArray {
  return newTypedArray(dtypeOfArray(a), size, isShared(a)) as FloatArray;
}

/** o [B, N, H, D] and lse [B, N, H] (natural log; -Infinity on rows that no pattern selects). */
export function dilatedAttentionForward(
  q: FloatArray, k: FloatArray, v: FloatArray, geometry: AttentionGeometry, config: AttentionConfig,
): { o: FloatArray; lse: FloatArray } {
  const { batch, seqLen, heads, headDim } = geometry;
  const o = newLike(q, batch * seqLen * heads * headDim);
  const lse = newLike(q, batch * seqLen * heads);
  const plan = planAttention(geometry, config);
  parallelFor<ForwardArgs>(FORWARD_KERNEL, { ...plan, q, k, v, o, lse }, plan.units, {
    itemCost: plan.unitCost, minCostPerThread: MIN_WORK_PER_THREAD,
  });
  return { o, lse };
}

/** Exact gradients of the forward above, given its o and lse and the output gradient dO. */
export function dilatedAttentionBackward(
  q: FloatArray, k: FloatArray, v: FloatArray, o: FloatArray, lse: FloatArray, dO: FloatArray,
  geometry: AttentionGeometry, config: AttentionConfig,
): { dq: FloatArray; dk: FloatArray; dv: FloatArray } {
  const size = geometry.batch * geometry.seqLen * geometry.heads * geometry.headDim;
  const dq = newLike(q, size);
  const dk = newLike(q, size);
  const dv = newLike(q, size);
  const plan = planAttention(geometry, config);
  parallelFor<BackwardArgs>(BACKWARD_KERNEL, { ...plan, q, k, v, o, lse, dO, dq, dk, dv }, plan.units, {
    itemCost: 2.5 * plan.unitCost, minCostPerThread: MIN_WORK_PER_THREAD,
  });
  return { dq, dk, dv };
}
