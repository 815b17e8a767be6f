import { record } from '../autograd.js';
import { normalizeAxis, shapesEqual, type Shape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { reshape } from './layout.js';
import { broadcastTo, mulScalar } from './elementwise.js';
import { common, requireFloat, wrap } from './util.js';

function resolveAxes(x: Tensor, axes: number | readonly number[] | undefined, op: string): number[] {
  if (axes === undefined) return x.shape.map((_d, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  return [...new Set(list.map((a) => normalizeAxis(a, x.rank, op)))].sort((a, b) => a - b);
}

function reducedShape(shape: Shape, axes: readonly number[], keepDims: boolean): number[] {
  return keepDims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_d, i) => !axes.includes(i));
}

/** Sum over `axes` (all by default). */
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = resolveAxes(x, axes, 'sum');
  const kept = reducedShape(x.shape, ax, true);
  const out = wrap(x.backend.reduce('sum', x.storage, x.shape, ax), kept, x.backend);
  const result = keepDims ? out : reshape(out, reducedShape(x.shape, ax, false));
  const inputShape = x.shape;
  return record('sum', result, [x], (g) => [broadcastTo(reshape(g, kept), inputShape)]);
}

export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = resolveAxes(x, axes, 'mean');
  const count = ax.reduce((n, a) => n * x.shape[a]!, 1);
  return mulScalar(sum(x, ax, keepDims), 1 / count);
}

/** Maximum over `axes`; not differentiable. */
export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = resolveAxes(x, axes, 'max');
  const out = wrap(x.backend.reduce('max', x.storage, x.shape, ax), reducedShape(x.shape, ax, true), x.backend);
  return keepDims ? out : reshape(out, reducedShape(x.shape, ax, false));
}

/**
 * [tensors.length]: the sum of the squares of each tensor's elements, in one backend call (the global
 * gradient norm needs one per parameter). Not differentiable.
 */
export function sumsOfSquares(tensors: readonly Tensor[]): Tensor {
  if (tensors.length === 0) throw new Error('sumsOfSquares: no tensors');
  const backend = common('sumsOfSquares', ...tensors);
  requireFloat('sumsOfSquares', tensors[0]!);
  return wrap(backend.sumsOfSquares(tensors.map((t) => t.storage)), [tensors.length], backend);
}

/** Sums a broadcast gradient back to `shape`. */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  g.shape.forEach((d, i) => {
    if (i < lead || (shape[i - lead] === 1 && d !== 1)) axes.push(i);
  });
  return reshape(sum(g, axes, true), shape);
}
