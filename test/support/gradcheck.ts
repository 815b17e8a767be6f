import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad, tidy } from '../../src/index.js';

export function randomArray(size: number, rng: Rng, scale = 1): Float64Array {
  const a = new Float64Array(size);
  for (let i = 0; i < size; i++) a[i] = rng.normal() * scale;
  return a;
}

/**
 * Compares the gradients autograd gives for scalar f(inputs) with central finite differences, in float64.
 * `inputs` are [data, shape] pairs; all get requiresGrad.
 */
export function gradcheck(
  f: (inputs: Tensor[]) => Tensor,
  inputs: readonly (readonly [Float64Array, readonly number[]])[],
  options: { eps?: number; tolerance?: number; label?: string } = {},
): void {
  const eps = options.eps ?? 1e-6;
  const tolerance = options.tolerance ?? 1e-6;
  const label = options.label ?? 'gradcheck';
  tidy(() => {
    const leaves = inputs.map(([data, shape]) => Tensor.fromArray(data, shape, { requiresGrad: true }));
    const out = f(leaves);
    assert.equal(out.size, 1, `${label}: f must return one element`);
    out.backward();
    const analytic = leaves.map((t) => (t.grad ? (t.grad.toArray() as Float64Array) : new Float64Array(t.size)));
    leaves.forEach((t) => t.grad?.dispose());
    const evaluate = (values: Float64Array[]): number =>
      tidy(() => noGrad(() => f(values.map((v, i) => Tensor.fromArray(v, inputs[i]![1]))).item()));
    const values = inputs.map(([data]) => Float64Array.from(data));
    values.forEach((v, which) => {
      for (let i = 0; i < v.length; i++) {
        const saved = v[i]!;
        v[i] = saved + eps;
        const plus = evaluate(values);
        v[i] = saved - eps;
        const minus = evaluate(values);
        v[i] = saved;
        const numeric = (plus - minus) / (2 * eps);
        const a = analytic[which]![i]!;
        const err = Math.abs(a - numeric) / Math.max(1, Math.abs(numeric));
        assert.ok(err < tolerance, `${label}: input ${which}[${i}] analytic ${a} vs numeric ${numeric}`);
      }
    });
  });
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, label = 'values'): void {
  assert.equal(actual.length, expected.length, `${label}: lengths differ`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Object.is(a, e) || (a === e)) continue;
    const err = Math.abs(a - e) / Math.max(1, Math.abs(e));
    assert.ok(err <= tolerance, `${label}[${i}]: ${a} vs ${e} (error ${err})`);
  }
}
