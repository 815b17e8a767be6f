/** Permutations of the CPU backend, their output rows split across threads when large enough. */
import type { TypedArray } from '../../tensor/dtype.js';
import { stridesOf, type Shape } from '../../tensor/shape.js';
import { rowCount } from './index-walk.js';
import { permuteRows } from './layout.js';
import { allocLike } from './storage.js';
import { parallelFor, registerRangeKernel } from './thread-pool.js';

interface PermuteArgs { x: TypedArray; out: TypedArray; shape: Shape; readStrides: number[] }

registerRangeKernel<PermuteArgs>('permute', import.meta.url, (g, start, end) => permuteRows(g.x, g.out, g.shape, g.readStrides, start, end));

/** Below about this many elements a thread, a hand-off to another thread costs more than it saves. */
const MIN_ELEMENTS_PER_THREAD = 1 << 17;

export function permuteKernel(x: TypedArray, shape: Shape, perm: readonly number[]): TypedArray {
  const inStrides = stridesOf(shape);
  const outShape = perm.map((p) => shape[p]!);
  const out = allocLike(x);
  const rows = rowCount(outShape);
  parallelFor('permute', { x, out, shape: outShape, readStrides: perm.map((p) => inStrides[p]!) }, rows, {
    itemCost: x.length / Math.max(1, rows), minCostPerThread: MIN_ELEMENTS_PER_THREAD,
  });
  return out;
}
