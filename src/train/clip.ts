/**
 * Global-norm gradient clipping (the paper clips at 2.0): the trainer hands clipScale's factor to AdamW,
 * which scales each gradient as it reads it.
 */
import { noGrad, sum, sumsOfSquares, tidy, type Tensor } from '../tensor/index.js';

/** The L2 norm of all gradients together, as if they were one vector. */
export function globalGradNorm(params: Iterable<Tensor>): number {
  const grads = [...params].flatMap((p) => (p.grad === null ? [] : [p.grad]));
  if (grads.length === 0) return 0;
  // one backend call for every gradient, and one read: on a GPU that is one synchronization
  return noGrad(() => tidy(() => Math.sqrt(sum(sumsOfSquares(grads)).item())));
}

/** The factor that brings a global norm `norm` down to `maxNorm`: 1 when it is within it, or when maxNorm is 0 (no clipping). */
export function clipScale(norm: number, maxNorm: number): number {
  return maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}
