/**
 * Global-norm gradient clipping (the paper clips at 2.0): the trainer hands clipScale's factor to AdamW,
 * which scales each gradient as it reads it.
 */
import { concat, noGrad, reshape, sum, sumsOfSquares, tidy, type Tensor } from '../tensor/index.js';

/** The L2 norm of all gradients together, as if they were one vector. */
export function globalGradNorm(params: Iterable<Tensor>): number {
  return globalGradNormWith(params, []).norm;
}

/**
 * The global gradient norm and the values of the scalar tensors `alongside`, read together where they
 * share the sum of squares' dtype and device: on a GPU one wait for the device instead of two.
 */
export function globalGradNormWith(params: Iterable<Tensor>, alongside: readonly Tensor[]): { norm: number; values: number[] } {
  const grads = [...params].flatMap((p) => (p.grad === null ? [] : [p.grad]));
  return noGrad(() => tidy(() => {
    if (grads.length === 0) return { norm: 0, values: readTogether(alongside) };
    // one backend call for every gradient
    const squares = reshape(sum(sumsOfSquares(grads)), [1]);
    if (sameKind(squares, alongside)) {
      const [total, ...values] = readTogether([squares, ...alongside]);
      return { norm: Math.sqrt(total!), values };
    }
    return { norm: Math.sqrt(squares.item()), values: readTogether(alongside) };
  }));
}

/** The values of scalar tensors: with one read when they share a dtype and device, else one read each. */
function readTogether(scalars: readonly Tensor[]): number[] {
  if (scalars.length <= 1 || !sameKind(scalars[0]!, scalars)) return scalars.map((x) => x.item());
  return Array.from(concat(scalars.map((x) => reshape(x, [1])), 0).toArray());
}

function sameKind(like: Tensor, xs: readonly Tensor[]): boolean {
  return xs.every((x) => x.dtype === like.dtype && x.device === like.device);
}

/** The factor that brings a global norm `norm` down to `maxNorm`: 1 when it is within it, or when maxNorm is 0 (no clipping). */
export function clipScale(norm: number, maxNorm: number): number {
  return maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}
