/**
 * Layer norm of the CPU backend, its rows split across threads when large enough (the range kernels of
 * nn.ts). The gradients of gamma and beta sum over rows in row order on one thread, so every result is the
 * same, bit for bit, whatever the number of threads.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import { layerNormBackwardRows, layerNormParamGrads, layerNormRows } from './nn.js';
import { allocLike, shareable } from './storage.js';
import { parallelFor, registerRangeKernel, threadCount } from './thread-pool.js';

interface ForwardArgs {
  x: FloatArray; gamma: FloatArray | null; beta: FloatArray | null; cols: number; eps: number;
  y: FloatArray; mean: FloatArray; rstd: FloatArray;
}
interface BackwardArgs { dy: FloatArray; x: FloatArray; gamma: FloatArray | null; mean: FloatArray; rstd: FloatArray; cols: number; dx: FloatArray }

registerRangeKernel<ForwardArgs>('layerNorm', import.meta.url, (g, start, end) =>
  layerNormRows(g.x, g.gamma, g.beta, g.cols, g.eps, g.y, g.mean, g.rstd, start, end));
registerRangeKernel<BackwardArgs>('layerNormBackward', import.meta.url, (g, start, end) =>
  layerNormBackwardRows(g.dy, g.x, g.gamma, g.mean, g.rstd, g.cols, g.dx, start, end));

/** Below about this many elements a thread, a hand-off to another thread costs more than it saves. */
const MIN_ELEMENTS_PER_THREAD = 1 << 16;

/** Whether a loop over `elements` will be split, so that its small arrays must be shared too. */
const willSplit = (elements: number): boolean => elements >= 2 * MIN_ELEMENTS_PER_THREAD && threadCount() > 1;
const share = <T extends FloatArray | null>(a: T, split: boolean): T => (split && a !== null ? shareable(a) : a);

export function layerNormKernel(
  x: FloatArray, gamma: FloatArray | null, beta: FloatArray | null, rows: number, cols: number, eps: number,
): { y: FloatArray; mean: FloatArray; rstd: FloatArray } {
  const split = willSplit(x.length);
  const y = allocLike(x) as FloatArray;
  const mean = share(allocLike(x, rows) as FloatArray, split);
  const rstd = share(allocLike(x, rows) as FloatArray, split);
  const args: ForwardArgs = { x, gamma: share(gamma, split), beta: share(beta, split), cols, eps, y, mean, rstd };
  parallelFor('layerNorm', args, rows, { itemCost: cols, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  return { y, mean, rstd };
}

export function layerNormBackwardKernel(
  dy: FloatArray, x: FloatArray, gamma: FloatArray | null, mean: FloatArray, rstd: FloatArray,
  rows: number, cols: number, hasBeta: boolean,
): { dx: FloatArray; dGamma: FloatArray | null; dBeta: FloatArray | null } {
  const split = willSplit(x.length);
  const dx = allocLike(x) as FloatArray;
  const args: BackwardArgs = { dy, x, gamma: share(gamma, split), mean: share(mean, split), rstd: share(rstd, split), cols, dx };
  parallelFor('layerNormBackward', args, rows, { itemCost: cols, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  const dGamma = gamma ? (allocLike(x, cols) as FloatArray) : null;
  const dBeta = hasBeta ? (allocLike(x, cols) as FloatArray) : null;
  layerNormParamGrads(dy, x, mean, rstd, rows, cols, dGamma, dBeta);
  return { dx, dGamma, dBeta };
}
