/**
 * Splitting a [B, N, ...] tensor into the per-rank blocks of sequence parallelism and joining them back
 * (rank j holds positions [floor(j N / P), floor((j + 1) N / P))).
 */
import { check } from '../errors.js';
import { noGrad } from '../tensor/autograd.js';
import { concat, slice } from '../tensor/ops/layout.js';
import type { Tensor } from '../tensor/tensor.js';
import { sequenceStarts } from './sequence-plan.js';

/** The blocks of `t` along axis 1, one per rank. */
export function splitSequence(t: Tensor, ranks: number): Tensor[] {
  check(t.rank >= 2, `splitSequence: needs a [batch, seqLen, ...] tensor, got rank ${t.rank}`);
  const N = t.shape[1]!;
  check(Number.isInteger(ranks) && ranks >= 1 && ranks <= N, `cannot split ${N} positions over ${ranks} ranks (at least one each)`);
  const starts = sequenceStarts(N, ranks);
  return noGrad(() => Array.from({ length: ranks }, (_, j) => {
    const begin = t.shape.map((_d, i) => (i === 1 ? starts[j]! : 0));
    const size = t.shape.map((d, i) => (i === 1 ? starts[j + 1]! - starts[j]! : d));
    return slice(t, begin, size);
  }));
}

/** The inverse of splitSequence. */
export function joinSequence(parts: readonly Tensor[]): Tensor {
  return noGrad(() => concat(parts, 1));
}
