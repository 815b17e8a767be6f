/**
 * Global-norm gradient clipping (the paper clips at 2.0): the trainer hands clipScale's factor to AdamW,
 * which scales each gradient as it reads it; or, where AdamW's update runs on the device, the sum of the
 * squares there (gradientSquares), from which the update takes the factor itself.
 */
import { clipFactor } from '../backend/backend.js';
import { add, concat, mulScalar, noGrad, reshape, sum, sumsOfSquares, tidy, type Tensor } from '../tensor/index.js';

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

/**
 * The sum of the squares of every gradient, as a tensor [1] where they are (one backend call), and
 * `guard`: the same sum, or NaN where a loss of `alongside` is not finite. The update that clips on the
 * device takes guard, so that it changes nothing on a step the host will refuse. Null without gradients,
 * or with losses of another dtype or device.
 */
export function gradientSquares(params: Iterable<Tensor>, alongside: readonly Tensor[]): { squares: Tensor; guard: Tensor } | null {
  const grads = [...params].flatMap((p) => (p.grad === null ? [] : [p.grad]));
  if (grads.length === 0 || !sameKind(grads[0]!, alongside)) return null;
  return noGrad(() => tidy(() => {
    const squares = reshape(sum(sumsOfSquares(grads)), [1]);
    // 0 * a loss is 0, or NaN for an infinite or NaN loss
    const guard = alongside.length > 0 ? add(squares, mulScalar(sum(concat(alongside.map((l) => reshape(l, [1])), 0)), 0)) : squares;
    return { squares, guard };
  }));
}

/** The values of scalar tensors: with one read when they share a dtype and device, else one read each. */
export function readTogether(scalars: readonly Tensor[]): number[] {
  if (scalars.length <= 1 || !sameKind(scalars[0]!, scalars)) return scalars.map((x) => x.item());
  return Array.from(concat(scalars.map((x) => reshape(x, [1])), 0).toArray());
}

/**
 * readTogether's values, read later: where the backend reads that way, the read is queued now and the
 * function returned waits for it, so that work queued in between (an optimizer update) need not end before
 * the host has the values; elsewhere they are read now.
 */
export function readTogetherLater(scalars: readonly Tensor[]): () => number[] {
  const backend = scalars[0]?.backend;
  if (!backend?.readLater || !sameKind(scalars[0]!, scalars)) {
    const values = readTogether(scalars);
    return () => values;
  }
  const wait = backend.readLater([concat(scalars.map((x) => reshape(x, [1])), 0).storage]);
  return () => Array.from(wait()[0]!);
}

function sameKind(like: Tensor, xs: readonly Tensor[]): boolean {
  return xs.every((x) => x.dtype === like.dtype && x.device === like.device);
}

/** The factor that brings a global norm `norm` down to `maxNorm`: 1 when it is within it, or when maxNorm is 0 (no clipping). */
export const clipScale = clipFactor;
