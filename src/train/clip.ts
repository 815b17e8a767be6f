/** Global-norm gradient clipping (the paper clips at 2.0). */
import { add, keep, mulScalar, noGrad, square, sum, tidy, type Tensor } from '../tensor/index.js';

/** The L2 norm of all gradients together, as if they were one vector. */
export function globalGradNorm(params: Iterable<Tensor>): number {
  return noGrad(() => tidy(() => {
    let total: Tensor | null = null;
    for (const p of params) {
      if (p.grad === null) continue;
      const s = sum(square(p.grad));
      total = total === null ? s : add(total, s);
    }
    // one read at the end: on a GPU that is one synchronization, not one per parameter
    return total === null ? 0 : Math.sqrt(total.item());
  }));
}

/**
 * Scales every gradient by `maxNorm / norm` when their global norm exceeds `maxNorm` (never up).
 * Returns the norm before clipping, which is what training logs report.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  const list = [...params];
  const norm = globalGradNorm(list);
  if (!(maxNorm > 0) || !(norm > maxNorm)) return norm;
  const factor = maxNorm / (norm + 1e-6);
  noGrad(() => {
    for (const p of list) {
      if (p.grad === null) continue;
      const scaled = keep(mulScalar(p.grad, factor));
      p.grad.dispose();
      p.grad = scaled;
    }
  });
  return norm;
}
