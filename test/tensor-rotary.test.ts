// rotatePairs: the fused rotary op against its elementwise definition, its gradient, and bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/index.js';
import { Rng, Tensor } from '../src/index.js';
import { assertClose, gradcheck, randomArray } from './support/gradcheck.js';

const rng = new Rng(11);
const f64 = (data: Float64Array, shape: readonly number[]) => Tensor.fromArray(data, shape);

/** The definition, elementwise: y[e] = x[e] cos[e] + x[e ^ 1] sin[e], tables broadcast over [.., N, H, D]. */
function reference(x: Float64Array, shape: readonly number[], cos: Float64Array, sin: Float64Array, transpose: boolean): Float64Array {
  const [n, h, d] = shape.slice(-3) as [number, number, number];
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const e = i % d;
    const p = Math.floor(i / (h * d)) % n;
    y[i] = x[i]! * cos[p * d + e]! + x[i ^ 1]! * sin[p * d + (transpose ? e ^ 1 : e)]!;
  }
  return y;
}

test('rotatePairs matches its definition on [B, N, H, D] and on [N, H, D]', () => {
  for (const shape of [[2, 5, 3, 4], [7, 1, 6], [1, 3, 2, 2]]) {
    const [n, , d] = shape.slice(-3) as [number, number, number];
    const x = randomArray(shape.reduce((a, b) => a * b, 1), rng);
    const cos = randomArray(n * d, rng);
    const sin = randomArray(n * d, rng);
    const y = T.rotatePairs(f64(x, shape), f64(cos, [n, 1, d]), f64(sin, [n, 1, d]));
    assert.deepEqual(y.shape, shape);
    assertClose(y.toArray(), reference(x, shape, cos, sin, false), 1e-15, `rotatePairs ${shape.join('x')}`);
  }
});

test('rotatePairs gradient: finite differences, and the adjoint identity <R x, g> = <x, R^T g>', () => {
  const shape = [2, 3, 2, 4];
  const cos = f64(randomArray(12, rng), [3, 1, 4]);
  const sin = f64(randomArray(12, rng), [3, 1, 4]);
  const w = f64(randomArray(48, rng), shape);
  gradcheck(([x]) => T.sum(T.mul(T.rotatePairs(x!, cos, sin), w)), [[randomArray(48, rng), shape]], { label: 'rotatePairs' });
  // the backend's transpose mode is the definition's adjoint
  const x = randomArray(48, rng);
  const g = randomArray(48, rng);
  const cosData = cos.toArray() as Float64Array;
  const sinData = sin.toArray() as Float64Array;
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);
  const forward = reference(x, shape, cosData, sinData, false);
  const adjoint = reference(g, shape, cosData, sinData, true);
  assert.ok(Math.abs(dot(forward, g) - dot(x, adjoint)) < 1e-12);
});

test('rotatePairs in float32 keeps the dtype and agrees with float64 to float32 rounding', () => {
  const shape = [1, 4, 2, 8];
  const x = randomArray(64, rng);
  const cos = randomArray(32, rng);
  const sin = randomArray(32, rng);
  const f32 = (d: Float64Array, s: number[]) => Tensor.fromArray(Float32Array.from(d), s);
  const y = T.rotatePairs(f32(x, shape), f32(cos, [4, 1, 8]), f32(sin, [4, 1, 8]));
  assert.equal(y.dtype, 'float32');
  assertClose(y.toArray(), reference(x, shape, cos, sin, false), 1e-6, 'float32');
});

test('rotatePairs names what is wrong with its input', () => {
  const x = f64(randomArray(24, rng), [1, 2, 3, 4]);
  const table = (shape: number[]) => f64(randomArray(shape.reduce((a, b) => a * b, 1), rng), shape);
  assert.throws(() => T.rotatePairs(f64(randomArray(18, rng), [1, 2, 3, 3]), table([2, 1, 3]), table([2, 1, 3])), /last axis \(3\) must be even/);
  assert.throws(() => T.rotatePairs(x, table([3, 1, 4]), table([2, 1, 4])), /cos of shape \[3, 1, 4\] is not \[2, 1, 4\]/);
  assert.throws(() => T.rotatePairs(x, table([2, 1, 4]), table([2, 4, 1])), /sin of shape/);
  assert.throws(() => T.rotatePairs(f64(randomArray(4, rng), [2, 2]), table([2, 2]), table([2, 2])), /\[\.\.\., positions, heads, dim\]/);
  const learned = Tensor.fromArray(randomArray(8, rng), [2, 1, 4], { requiresGrad: true });
  assert.throws(() => T.rotatePairs(x, learned, table([2, 1, 4])), /cos is a constant table/);
  const f32 = Tensor.fromArray(new Float32Array(8), [2, 1, 4]);
  assert.throws(() => T.rotatePairs(x, f32, table([2, 1, 4])), /different dtypes/);
});
