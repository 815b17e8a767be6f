/**
 * The row-wise kernels of the CPU backend (softmax, cross-entropy, layer norm), their rows split across
 * threads when large enough (the range kernels of nn.ts). The gradients of gamma and beta sum over rows in
 * row order on one thread, so every result is the same, bit for bit, whatever the number of threads.
 */
import type { FloatArray } from '../../tensor/dtype.js';
import {
  checkTargets, crossEntropyBackwardRows, crossEntropyRows, layerNormBackwardRows, layerNormParamGrads, layerNormRows,
  softmaxBackwardRows, softmaxRows,
} from './nn.js';
import { allocLike, shareable } from './storage.js';
import { parallelFor, registerRangeKernel, threadCount } from './thread-pool.js';

interface ForwardArgs {
  x: FloatArray; gamma: FloatArray | null; beta: FloatArray | null; cols: number; eps: number;
  y: FloatArray; mean: FloatArray; rstd: FloatArray;
}
interface SoftmaxArgs { x: FloatArray; cols: number; log: boolean; out: FloatArray }
interface SoftmaxBackwardArgs { y: FloatArray; dy: FloatArray; cols: number; log: boolean; dx: FloatArray }
interface CrossEntropyArgs {
  logits: FloatArray; targets: Int32Array; cols: number; classes: number; ignoreIndex: number; loss: FloatArray; lse: FloatArray;
}
interface CrossEntropyBackwardArgs {
  logits: FloatArray; targets: Int32Array; lse: FloatArray; dLoss: FloatArray; cols: number; classes: number; ignoreIndex: number; d: FloatArray;
}
interface BackwardArgs { dy: FloatArray; x: FloatArray; gamma: FloatArray | null; mean: FloatArray; rstd: FloatArray; cols: number; dx: FloatArray }

registerRangeKernel<SoftmaxArgs>('softmax', import.meta.url, (g, start, end) => softmaxRows(g.x, g.cols, g.log, g.out, start, end));
registerRangeKernel<SoftmaxBackwardArgs>('softmaxBackward', import.meta.url, (g, start, end) =>
  softmaxBackwardRows(g.y, g.dy, g.cols, g.log, g.dx, start, end));
registerRangeKernel<CrossEntropyArgs>('crossEntropy', import.meta.url, (g, start, end) =>
  crossEntropyRows(g.logits, g.targets, g.cols, g.classes, g.ignoreIndex, g.loss, g.lse, start, end));
registerRangeKernel<CrossEntropyBackwardArgs>('crossEntropyBackward', import.meta.url, (g, start, end) =>
  crossEntropyBackwardRows(g.logits, g.targets, g.lse, g.dLoss, g.cols, g.classes, g.ignoreIndex, g.d, start, end));
registerRangeKernel<ForwardArgs>('layerNorm', import.meta.url, (g, start, end) =>
  layerNormRows(g.x, g.gamma, g.beta, g.cols, g.eps, g.y, g.mean, g.rstd, start, end));
registerRangeKernel<BackwardArgs>('layerNormBackward', import.meta.url, (g, start, end) =>
  layerNormBackwardRows(g.dy, g.x, g.gamma, g.mean, g.rstd, g.cols, g.dx, start, end));

/** Below about this many elements a thread, a hand-off to another thread costs more than it saves. */
const MIN_ELEMENTS_PER_THREAD = 1 << 16;

/** Whether a loop over `elements` will be split, so that its small arrays must be shared too. */
const willSplit = (elements: number): boolean => elements >= 2 * MIN_ELEMENTS_PER_THREAD && threadCount() > 1;
const share = <T extends FloatArray | Int32Array | null>(a: T, split: boolean): T => (split && a !== null ? shareable(a) : a);
/** Rows of softmax-like kernels cost a few exponentials an element. */
const EXP_COST = 8;

export function softmaxKernel(x: FloatArray, rows: number, cols: number, log: boolean): FloatArray {
  const out = allocLike(x) as FloatArray;
  parallelFor('softmax', { x, cols, log, out }, rows, { itemCost: cols * EXP_COST, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  return out;
}

export function softmaxBackwardKernel(y: FloatArray, dy: FloatArray, rows: number, cols: number, log: boolean): FloatArray {
  const dx = allocLike(y) as FloatArray;
  parallelFor('softmaxBackward', { y, dy, cols, log, dx }, rows, { itemCost: cols * EXP_COST, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  return dx;
}

/**
 * Cross-entropy over the first `classes` columns of [rows, cols] logits (classes < cols: the rest is
 * padding, out of the softmax). Rows cost their classes, not their padded width.
 */
export function crossEntropyKernel(
  logits: FloatArray, targets: Int32Array, rows: number, cols: number, ignoreIndex: number, classes: number,
): { loss: FloatArray; lse: FloatArray } {
  checkClasses(classes, cols);
  checkTargets(targets, rows, classes, ignoreIndex);
  const split = willSplit(rows * classes * EXP_COST);
  const loss = share(allocLike(logits, rows) as FloatArray, split);
  const lse = share(allocLike(logits, rows) as FloatArray, split);
  const args: CrossEntropyArgs = { logits, targets: share(targets, split), cols, classes, ignoreIndex, loss, lse };
  parallelFor('crossEntropy', args, rows, { itemCost: classes * EXP_COST, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  return { loss, lse };
}

/** The gradient of crossEntropyKernel's loss; zero on the padding columns past `classes`. */
export function crossEntropyBackwardKernel(
  logits: FloatArray, targets: Int32Array, lse: FloatArray, dLoss: FloatArray, rows: number, cols: number, ignoreIndex: number,
  classes: number,
): FloatArray {
  checkClasses(classes, cols);
  const split = willSplit(rows * classes * EXP_COST);
  const d = allocLike(logits) as FloatArray;
  const args: CrossEntropyBackwardArgs = {
    logits, targets: share(targets, split), lse: share(lse, split), dLoss: share(dLoss, split), cols, classes, ignoreIndex, d,
  };
  parallelFor('crossEntropyBackward', args, rows, { itemCost: classes * EXP_COST, minCostPerThread: MIN_ELEMENTS_PER_THREAD });
  return d;
}

function checkClasses(classes: number, cols: number): void {
  if (!(Number.isInteger(classes) && classes >= 1 && classes <= cols)) {
    throw new RangeError(`crossEntropy: classes = ${classes} is not an integer in [1, ${cols}] (the logits' row length)`);
  }
}

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
