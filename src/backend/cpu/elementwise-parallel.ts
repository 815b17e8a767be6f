/**
 * Elementwise ops of the CPU backend, split across threads when they are large enough: the range kernels
 * of elementwise.ts registered with the thread pool. Each element is computed as on one thread, so the
 * results do not depend on the number of threads.
 */
import type { BinaryOp, UnaryOp } from '../backend.js';
import type { TypedArray } from '../../tensor/dtype.js';
import { broadcastStrides, type Shape } from '../../tensor/shape.js';
import { broadcastRange, flatRange, scalarRange, unaryRange } from './elementwise.js';
import { rowCount } from './index-walk.js';
import { allocLike, shareable } from './storage.js';
import { parallelFor, registerRangeKernel, threadCount } from './thread-pool.js';

interface UnaryArgs { op: UnaryOp; x: TypedArray; out: TypedArray }
interface ScalarArgs { op: BinaryOp; a: TypedArray; scalar: number; out: TypedArray }
interface FlatArgs { op: BinaryOp; a: TypedArray; b: TypedArray; out: TypedArray }
interface BroadcastArgs extends FlatArgs { shape: Shape; aStrides: number[]; bStrides: number[] }

registerRangeKernel<UnaryArgs>('unary', import.meta.url, (g, start, end) => unaryRange(g.op, g.x, g.out, start, end));
registerRangeKernel<ScalarArgs>('binaryScalar', import.meta.url, (g, start, end) => scalarRange(g.op, g.a, g.scalar, g.out, start, end));
registerRangeKernel<FlatArgs>('binaryFlat', import.meta.url, (g, start, end) => flatRange(g.op, g.a, g.b, g.out, start, end));
registerRangeKernel<BroadcastArgs>('binaryBroadcast', import.meta.url, (g, start, end) =>
  broadcastRange(g.op, g.a, g.b, g.out, g.shape, g.aStrides, g.bStrides, start, end));

/**
 * Below about this many element operations per thread, posting work to another thread costs more than it
 * saves (a hand-off is tens of microseconds; a simple op does about one element a nanosecond).
 */
const MIN_COST_PER_THREAD = 1 << 17;

/** Relative cost of one element: the transcendental ops take tens of times an add. */
const EXPENSIVE = new Set<string>(['exp', 'log', 'tanh', 'gelu', 'sigmoid', 'pow', 'geluBackward']);
const elementCost = (op: string): number => (EXPENSIVE.has(op) ? 16 : 1);

export function unaryKernel(op: UnaryOp, x: TypedArray): TypedArray {
  const out = allocLike(x);
  parallelFor('unary', { op, x, out }, x.length, { itemCost: elementCost(op), minCostPerThread: MIN_COST_PER_THREAD });
  return out;
}

export function binaryScalarKernel(op: BinaryOp, a: TypedArray, scalar: number): TypedArray {
  const out = allocLike(a);
  parallelFor('binaryScalar', { op, a, scalar, out }, a.length, { itemCost: elementCost(op), minCostPerThread: MIN_COST_PER_THREAD });
  return out;
}

export function binaryKernel(op: BinaryOp, a: TypedArray, aShape: Shape, b: TypedArray, bShape: Shape, outShape: Shape): TypedArray {
  let size = 1;
  for (const d of outShape) size *= d;
  const out = allocLike(a, size);
  const cost = elementCost(op);
  if (a.length === size && b.length === size) {
    parallelFor('binaryFlat', { op, a, b, out }, size, { itemCost: cost, minCostPerThread: MIN_COST_PER_THREAD });
    return out;
  }
  const shape = [...outShape];
  const rows = rowCount(shape);
  // worth splitting: then the operands must be shared too
  const split = out.buffer instanceof SharedArrayBuffer && size * cost >= 2 * MIN_COST_PER_THREAD && threadCount() > 1;
  const args: BroadcastArgs = {
    op, a: split ? shareable(a) : a, b: split ? shareable(b) : b, out, shape,
    aStrides: broadcastStrides(aShape, outShape), bStrides: broadcastStrides(bShape, outShape),
  };
  parallelFor('binaryBroadcast', args, rows, { itemCost: cost * (size / Math.max(1, rows)), minCostPerThread: MIN_COST_PER_THREAD });
  return out;
}
