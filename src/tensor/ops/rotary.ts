import { record } from '../autograd.js';
import { formatShape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { common, requireFloat, wrap } from './util.js';

/**
 * Rotary positions over pairs of the last axis: x [..., N, H, D] (D even) with constant tables cos, sin
 * [N, 1, D] (or [N, D]): y[e] = x[e] * cos[e] + x[e ^ 1] * sin[e], where e ^ 1 is the other element of
 * e's pair. One fused op where the elementwise form takes a pair swap (two slices and a concat), two
 * products and a sum; its gradient is the same op on the transposed tables. The tables are constants:
 * no gradient flows to them. Tables of float32 also serve bfloat16 x (positions keep float32 precision).
 */
export function rotatePairs(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const y = rotateUntracked(x, cos, sin, false);
  return record('rotatePairs', y, [x], (g) => [rotateUntracked(g, cos, sin, true)]);
}

/**
 * rotatePairs' result (its adjoint with `transpose`) with no gradient recorded: for ops that rotate their
 * inputs themselves (dilatedAttention's rotation) and own the gradient. With `checkAs`, the result is
 * checked for NaN and infinities under that name (Backend.checkFinite) as it is written.
 */
export function rotateUntracked(x: Tensor, cos: Tensor, sin: Tensor, transpose: boolean, checkAs?: string): Tensor {
  const { outer, positions, inner, dim } = rotationShape(x, cos, sin);
  const backend = x.backend;
  return wrap(backend.rotatePairs(x.storage, cos.storage, sin.storage, outer, positions, inner, dim, transpose, checkAs), x.shape, backend);
}

/**
 * Checks rotatePairs' operands (x [..., positions, heads, dim], constant tables [positions, 1, dim]) and
 * returns the backend's view of x: [outer, positions, inner, dim].
 */
function rotationShape(x: Tensor, cos: Tensor, sin: Tensor): { outer: number; positions: number; inner: number; dim: number } {
  requireFloat('rotatePairs', x);
  // bfloat16 x with float32 tables; else one dtype for all three
  if (x.dtype === 'bfloat16' && cos.dtype === 'float32') common('rotatePairs', cos, sin);
  else common('rotatePairs', x, cos, sin);
  if (x.device !== cos.device) throw new Error(`rotatePairs: tensors on different devices (${x.device} and ${cos.device})`);
  if (x.rank < 3) throw new Error(`rotatePairs: x must be [..., positions, heads, dim], got ${formatShape(x.shape)}`);
  const [positions, inner, dim] = x.shape.slice(-3) as [number, number, number];
  if (dim % 2 !== 0) throw new Error(`rotatePairs: the last axis (${dim}) must be even`);
  for (const [name, t] of [['cos', cos], ['sin', sin]] as const) {
    const rows = t.shape[0];
    if (rows !== positions || t.size !== positions * dim || t.shape[t.rank - 1] !== dim) {
      throw new Error(`rotatePairs: ${name} of shape ${formatShape(t.shape)} is not [${positions}, 1, ${dim}] for x ${formatShape(x.shape)}`);
    }
    if (t.requiresGrad) throw new Error(`rotatePairs: ${name} is a constant table and cannot require gradients`);
  }
  const outer = positions * inner * dim === 0 ? 0 : x.size / (positions * inner * dim);
  return { outer, positions, inner, dim };
}
