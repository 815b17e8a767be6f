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
