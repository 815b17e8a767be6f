import { record } from '../autograd.js';
import { broadcastShapes, formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { sumToShape } from './reduce.js';
import { common, requireFloat, wrap } from './util.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** Batched matrix product op(a) @ op(b) over the last two axes; leading axes broadcast. */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const backend = common('matmul', a, b);
  requireFloat('matmul', a);
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul: operands need at least 2 dimensions, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (k !== kb) {
    throw new Error(`matmul: inner dimensions differ: ${formatShape(a.shape)}${transA ? '^T' : ''} @ ${formatShape(b.shape)}${transB ? '^T' : ''}`);
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul');
  const out = wrap(backend.matmul(a.storage, a.shape, b.storage, b.shape, transA, transB, batchShape, m, n, k), [...batchShape, m, n], backend);
  return record('matmul', out, [a, b], (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (a.requiresGrad) {
      da = transA
        ? matmul(b, g, { transA: transB, transB: true })
        : matmul(g, b, { transA: false, transB: !transB });
      da = sumToShape(da, a.shape);
    }
    if (b.requiresGrad) {
      db = transB
        ? matmul(g, a, { transA: true, transB: transA })
        : matmul(a, g, { transA: !transA, transB: false });
      db = sumToShape(db, b.shape);
    }
    return [da, db];
  });
}

/**
 * A linear layer's product: x [R, in] @ weight^T + bias, weight [out, in] and bias [out]: [R, out]. One
 * backend call (a GPU adds the bias in the product's epilogue, with no pass of its own).
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor): Tensor {
  const backend = common('linear', x, weight, bias);
  requireFloat('linear', x);
  if (x.rank !== 2 || weight.rank !== 2 || bias.rank !== 1) {
    throw new Error(`linear: needs x [rows, in], weight [out, in] and bias [out], got ${formatShape(x.shape)}, ${formatShape(weight.shape)} and ${formatShape(bias.shape)}`);
  }
  const [rows, inFeatures] = x.shape as [number, number];
  const [outFeatures, k] = weight.shape as [number, number];
  if (k !== inFeatures || bias.shape[0] !== outFeatures || inFeatures === 0) {
    throw new Error(`linear: x ${formatShape(x.shape)}, weight ${formatShape(weight.shape)} and bias ${formatShape(bias.shape)} do not fit (in > 0)`);
  }
  const out = wrap(
    backend.matmul(x.storage, x.shape, weight.storage, weight.shape, false, true, [], rows, outFeatures, inFeatures, bias.storage),
    [rows, outFeatures], backend,
  );
  return record('linear', out, [x, weight, bias], (g) => [
    x.requiresGrad ? matmul(g, weight) : null,
    weight.requiresGrad ? matmul(g, x, { transA: true }) : null,
    bias.requiresGrad ? sumToShape(g, bias.shape) : null,
  ]);
}
