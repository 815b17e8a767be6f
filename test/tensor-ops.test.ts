import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/index.js';
import { Rng, Tensor } from '../src/index.js';
import { assertClose, gradcheck, randomArray } from './support/gradcheck.js';

const rng = new Rng(7);
const input = (...shape: number[]) => [randomArray(shape.reduce((a, b) => a * b, 1), rng), shape] as const;
const f64 = (data: number[], shape: number[]) => T.tensor(data, shape, { dtype: 'float64' });
/** A fixed random weighting, so that every output element matters to the checked scalar. */
const weigh = (t: Tensor): Tensor => {
  const w = Tensor.fromArray(randomArray(t.size, new Rng(t.size)), t.shape);
  return T.sum(T.mul(t, w));
};

test('elementwise ops broadcast like NumPy', () => {
  const a = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = f64([10, 20, 30], [3]);
  assert.deepEqual([...T.add(a, b).toArray()], [11, 22, 33, 14, 25, 36]);
  const c = f64([1, 2], [2, 1]);
  assert.deepEqual([...T.mul(a, c).toArray()], [1, 2, 3, 8, 10, 12]);
  assert.deepEqual(T.add(f64([1, 2], [2, 1]), f64([1, 2, 3], [1, 3])).shape, [2, 3]);
  assert.throws(() => T.add(a, f64([1, 2], [2])), /do not broadcast/);
});

test('reductions over chosen axes', () => {
  const a = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  assert.deepEqual([...T.sum(a, 0).toArray()], [5, 7, 9]);
  assert.deepEqual([...T.sum(a, -1, true).toArray()], [6, 15]);
  assert.deepEqual(T.sum(a, -1, true).shape, [2, 1]);
  assert.equal(T.mean(a).item(), 3.5);
  assert.deepEqual([...T.max(a, 1).toArray()], [3, 6]);
  assert.equal(T.sum(T.tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2], { dtype: 'float64' }), [0, 2]).toArray()[1], 3 + 4 + 7 + 8);
});

test('matmul, batched with broadcasting and transposes, matches a naive product', () => {
  const a = T.randn([2, 3, 4, 5], { dtype: 'float64', seed: 1 });
  const b = T.randn([3, 5, 6], { dtype: 'float64', seed: 2 });
  const c = T.matmul(a, b);
  assert.deepEqual(c.shape, [2, 3, 4, 6]);
  const A = a.toArray();
  const B = b.toArray();
  const C = c.toArray();
  for (let x = 0; x < 2; x++) for (let y = 0; y < 3; y++) for (let i = 0; i < 4; i++) for (let j = 0; j < 6; j++) {
    let s = 0;
    for (let p = 0; p < 5; p++) s += A[((x * 3 + y) * 4 + i) * 5 + p]! * B[(y * 5 + p) * 6 + j]!;
    assert.ok(Math.abs(C[((x * 3 + y) * 4 + i) * 6 + j]! - s) < 1e-12);
  }
  const ct = T.matmul(T.transpose(a), T.transpose(b), { transA: true, transB: true });
  assertClose(ct.toArray(), C, 1e-12, 'transposed operands');
  assert.throws(() => T.matmul(a, a), /inner dimensions/);
});

test('layout ops: reshape, permute, slice, concat', () => {
  const a = T.tensor([0, 1, 2, 3, 4, 5], [2, 3]);
  assert.deepEqual([...T.transpose(a).toArray()], [0, 3, 1, 4, 2, 5]);
  assert.deepEqual(T.reshape(a, [3, -1]).shape, [3, 2]);
  assert.deepEqual([...T.slice(a, [0, 1], [2, 2]).toArray()], [1, 2, 4, 5]);
  assert.deepEqual([...T.concat([a, a], 0).toArray()], [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
  assert.deepEqual([...T.concat([a, T.slice(a, [0, 0], [2, 1])], 1).toArray()], [0, 1, 2, 0, 3, 4, 5, 3]);
  assert.throws(() => T.reshape(a, [4, 2]), /cannot reshape/);
  assert.throws(() => T.slice(a, [1, 0], [2, 1]), /outside/);
});

test('gradients of elementwise ops match finite differences', () => {
  const ops: [string, (x: Tensor) => Tensor][] = [
    ['neg', T.neg], ['exp', T.exp], ['tanh', T.tanh], ['sigmoid', T.sigmoid], ['square', T.square], ['gelu', T.gelu],
    ['relu', T.relu], ['abs', T.abs], ['pow', (x) => T.powScalar(T.add(T.square(x), 1), 1.5)],
    ['log', (x) => T.log(T.add(T.square(x), 0.5))], ['sqrt', (x) => T.sqrt(T.add(T.square(x), 0.5))],
    ['rsqrt', (x) => T.rsqrt(T.add(T.square(x), 0.5))], ['cast', (x) => T.cast(T.cast(x, 'float32'), 'float64')],
  ];
  for (const [name, op] of ops) {
    // the float32 round trip quantizes: a wider finite-difference step keeps its noise below the tolerance
    const viaFloat32 = name === 'cast';
    gradcheck(([x]) => weigh(op(x!)), [input(3, 4)], { label: name, eps: viaFloat32 ? 1e-2 : 1e-6, tolerance: viaFloat32 ? 1e-3 : 1e-6 });
  }
});

test('gradients of broadcasting binary ops', () => {
  gradcheck(([a, b]) => weigh(T.add(a!, b!)), [input(2, 3, 4), input(3, 1)], { label: 'add' });
  gradcheck(([a, b]) => weigh(T.sub(a!, b!)), [input(4), input(2, 3, 4)], { label: 'sub' });
  gradcheck(([a, b]) => weigh(T.mul(a!, b!)), [input(2, 3), input(1, 3)], { label: 'mul' });
  gradcheck(([a, b]) => weigh(T.div(a!, T.add(T.square(b!), 1))), [input(2, 3), input(2, 1)], { label: 'div' });
  gradcheck(([a, b]) => weigh(T.maximum(a!, b!)), [input(2, 3), input(3)], { label: 'maximum' });
  gradcheck(([a]) => weigh(T.mul(a!, a!)), [input(5)], { label: 'same input twice' });
});

test('gradients of reductions, matmul, layout ops', () => {
  gradcheck(([a]) => weigh(T.sum(a!, 1)), [input(2, 3, 4)], { label: 'sum' });
  gradcheck(([a]) => weigh(T.mean(a!, [0, 2], true)), [input(2, 3, 4)], { label: 'mean' });
  gradcheck(([a, b]) => weigh(T.matmul(a!, b!)), [input(2, 3, 4), input(4, 5)], { label: 'matmul broadcast' });
  gradcheck(([a, b]) => weigh(T.matmul(a!, b!, { transA: true })), [input(4, 3), input(4, 2)], { label: 'matmul transA' });
  gradcheck(([a, b]) => weigh(T.matmul(a!, b!, { transB: true })), [input(3, 4), input(2, 4)], { label: 'matmul transB' });
  gradcheck(([a, b]) => weigh(T.matmul(a!, b!, { transA: true, transB: true })), [input(2, 4, 3), input(2, 5, 4)], { label: 'matmul both' });
  gradcheck(([a]) => weigh(T.permute(a!, [2, 0, 1])), [input(2, 3, 4)], { label: 'permute' });
  gradcheck(([a]) => weigh(T.slice(T.reshape(a!, [4, 6]), [1, 2], [2, 3])), [input(2, 3, 4)], { label: 'slice' });
  gradcheck(([a, b]) => weigh(T.concat([a!, b!, a!], 1)), [input(2, 3), input(2, 1)], { label: 'concat' });
});

test('gradients of softmax, log-softmax, layer norm, cross-entropy, embedding', () => {
  gradcheck(([a]) => weigh(T.softmax(a!)), [input(3, 5)], { label: 'softmax' });
  gradcheck(([a]) => weigh(T.logSoftmax(a!)), [input(3, 5)], { label: 'logSoftmax' });
  gradcheck(([x, g, b]) => weigh(T.layerNorm(x!, g!, b!)), [input(3, 6), input(6), input(6)], { label: 'layerNorm' });
  gradcheck(([x]) => weigh(T.layerNorm(x!, null, null)), [input(2, 5)], { label: 'layerNorm plain' });
  const targets = T.tensor([2, 0, 4, -100, 1, 3], [2, 3], { dtype: 'int32' });
  gradcheck(([x]) => T.crossEntropy(x!, targets), [input(2, 3, 5)], { label: 'crossEntropy mean' });
  gradcheck(([x]) => T.crossEntropy(x!, targets, { reduction: 'sum' }), [input(2, 3, 5)], { label: 'crossEntropy sum' });
  gradcheck(([x]) => weigh(T.crossEntropy(x!, targets, { reduction: 'none' })), [input(2, 3, 5)], { label: 'crossEntropy none' });
  const ids = T.tensor([1, 3, 1, 0], [2, 2], { dtype: 'int32' });
  gradcheck(([table]) => weigh(T.embedding(table!, ids)), [input(4, 3)], { label: 'embedding' });
});

test('cross-entropy with the gradient written in the forward: the same loss and gradient, whatever the backward', () => {
  const data = randomArray(4 * 7, new Rng(7));
  const targets = T.tensor([3, -100, 0, 4], [4], { dtype: 'int32' });
  const gradOf = (reduction: 'mean' | 'sum', gradientInForward: boolean, seedScale: number | null): { loss: number; grad: number[] } => {
    const logits = T.tensor(data, [4, 7], { dtype: 'float64', requiresGrad: true });
    // 5 classes: the last 2 columns are padding
    const loss = T.crossEntropy(logits, targets, { reduction, classes: 5, gradientInForward });
    (seedScale === null ? loss : T.mulScalar(loss, seedScale)).backward();
    return { loss: loss.item(), grad: Array.from(logits.grad!.toArray()) };
  };
  for (const reduction of ['mean', 'sum'] as const) {
    // a unit seed takes the forward's gradient; another seed computes it again
    for (const seedScale of [null, 0.5]) {
      const want = gradOf(reduction, false, seedScale);
      const got = gradOf(reduction, true, seedScale);
      assert.equal(got.loss, want.loss, `${reduction} loss`);
      assert.deepEqual(got.grad, want.grad, `${reduction} gradient, seed ${seedScale ?? 'unit'}`);
    }
  }
  // without gradients recorded it is the plain loss
  const plain = T.noGrad(() => T.crossEntropy(T.tensor(data, [4, 7], { dtype: 'float64' }), targets, { classes: 5, gradientInForward: true }).item());
  assert.equal(plain, gradOf('mean', false, null).loss);
});

test('cross-entropy equals -log softmax at the target and ignores ignoreIndex', () => {
  const logits = f64([1, 2, 3, 1, 1, 1], [2, 3]);
  const expected = -Math.log(Math.exp(3) / (Math.exp(1) + Math.exp(2) + Math.exp(3)));
  const loss = T.crossEntropy(logits, T.tensor([2, -100], [2], { dtype: 'int32' }));
  assert.ok(Math.abs(loss.item() - expected) < 1e-12);
  assert.throws(() => T.crossEntropy(logits, T.tensor([5, 0], [2], { dtype: 'int32' })), /outside/);
});

test('layer norm normalizes each row', () => {
  const y = T.layerNorm(T.randn([4, 16], { dtype: 'float64', seed: 3 }), null, null, 0).toArray();
  for (let r = 0; r < 4; r++) {
    const row = Array.from(y.subarray(r * 16, r * 16 + 16));
    const mu = row.reduce((a, b) => a + b, 0) / 16;
    const variance = row.reduce((a, b) => a + (b - mu) ** 2, 0) / 16;
    assert.ok(Math.abs(mu) < 1e-12 && Math.abs(variance - 1) < 1e-12);
  }
});

test('gradients accumulate across backward calls and through shared subexpressions', () => {
  const x = T.tensor([1, 2, 3], [3], { dtype: 'float64', requiresGrad: true });
  const y = T.mul(x, x);
  T.sum(T.add(y, y)).backward();
  assert.deepEqual([...x.grad!.toArray()], [4, 8, 12]);
  T.sum(x).backward();
  assert.deepEqual([...x.grad!.toArray()], [5, 9, 13]);
  assert.throws(() => T.sum(T.tensor([1], [1])).backward(), /does not require gradients/);
  assert.throws(() => T.mul(x, 2).backward(), /non-scalar/);
});

test('tidy disposes intermediates and keeps results and gradients', () => {
  const x = T.tensor([1, 2], [2], { requiresGrad: true });
  let inner: Tensor | undefined;
  const out = T.tidy(() => {
    inner = T.mul(x, 3);
    const loss = T.sum(inner);
    loss.backward();
    return T.add(inner, 1);
  });
  assert.equal(inner!.isDisposed, true);
  assert.equal(out.isDisposed, false);
  assert.equal(x.grad!.isDisposed, false);
  assert.deepEqual([...x.grad!.toArray()], [3, 3]);
  assert.throws(() => inner!.toArray(), /disposed/);
  const view = T.reshape(out, [1, 2]);
  out.dispose();
  assert.deepEqual([...view.toArray()], [4, 7], 'a view keeps the shared storage alive');
  assert.throws(() => T.tidy(() => { throw new Error('boom'); }), /boom/);
});

test('Rng is deterministic and restorable', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const first = [a.normal(), a.next(), a.int(10)];
  assert.deepEqual(first, [b.normal(), b.next(), b.int(10)]);
  const state = a.getState();
  const next = [a.normal(), a.next()];
  a.setState(state);
  assert.deepEqual([a.normal(), a.next()], next);
  assert.notDeepEqual(new Rng(1).next(), new Rng(2).next());
});

test('linear is matmul with the weight transposed plus the bias, with the same gradients', () => {
  const [xd, xs] = input(5, 3);
  const [wd, ws] = input(4, 3);
  const [bd, bs] = input(4);
  const x = f64([...xd], [...xs]);
  const w = f64([...wd], [...ws]);
  const b = f64([...bd], [...bs]);
  assert.deepEqual([...T.linear(x, w, b).toArray()], [...T.add(T.matmul(x, w, { transB: true }), b).toArray()]);
  gradcheck(([x, w, b]) => weigh(T.linear(x!, w!, b!)), [[xd, xs], [wd, ws], [bd, bs]], { label: 'linear' });
  assert.throws(() => T.linear(x, f64([...wd], [3, 4]), b), /do not fit/);
  assert.throws(() => T.linear(T.reshape(x, [15]), w, b), /needs x \[\.\.\., rows, in\]/);
  assert.throws(() => T.linear(x, T.cast(w, 'float32'), b), /a float64 input needs float64 parameters, got float32/);
});

test('linear without a bias and with the GELU activation: the composed ops, with the same gradients', () => {
  const [xd, xs] = input(6, 4);
  const [wd, ws] = input(5, 4);
  const [bd, bs] = input(5);
  const x = f64([...xd], [...xs]);
  const w = f64([...wd], [...ws]);
  const b = f64([...bd], [...bs]);
  assert.deepEqual([...T.linear(x, w, null).toArray()], [...T.matmul(x, w, { transB: true }).toArray()]);
  assertClose(T.linear(x, w, b, { activation: 'gelu' }).toArray(), T.gelu(T.add(T.matmul(x, w, { transB: true }), b)).toArray(), 1e-12, 'gelu');
  gradcheck(([x, w]) => weigh(T.linear(x!, w!, null)), [[xd, xs], [wd, ws]], { label: 'linear without bias' });
  gradcheck(([x, w, b]) => weigh(T.linear(x!, w!, b!, { activation: 'gelu' })), [[xd, xs], [wd, ws], [bd, bs]], { label: 'linear gelu' });
  gradcheck(([x, w]) => weigh(T.linear(x!, w!, null, { activation: 'gelu' })), [[xd, xs], [wd, ws]], { label: 'linear gelu without bias' });
});

test('geluLayerNorm is layerNorm of gelu(x), with the same gradients', () => {
  const [xd, xs] = input(3, 6);
  const [gd, gs] = input(6);
  const [bd, bs] = input(6);
  const x = f64([...xd], [...xs]);
  const [g, b] = [f64([...gd], [...gs]), f64([...bd], [...bs])];
  assertClose(T.geluLayerNorm(x, g, b).toArray(), T.layerNorm(T.gelu(x), g, b).toArray(), 1e-12, 'geluLayerNorm');
  gradcheck(([x, g, b]) => weigh(T.geluLayerNorm(x!, g!, b!)), [[xd, xs], [gd, gs], [bd, bs]], { label: 'geluLayerNorm' });
  gradcheck(([x]) => weigh(T.geluLayerNorm(x!, null, null)), [[xd, xs]], { label: 'geluLayerNorm plain' });
  assert.throws(() => T.geluLayerNorm(x, T.reshape(g, [2, 3]), b), /geluLayerNorm: gamma of shape \[2, 3\] does not match the last axis \(6\)/);
});

test('an input used several times: linear and layer norm add the gradient gathered so far in their own pass', () => {
  const [xd, xs] = input(5, 4);
  const [ad, as] = input(6, 4);
  const [bd, bs] = input(6, 4);
  const [cd, cs] = input(4, 6);
  // a decoder block's pattern: x feeds a layer norm and (first in the backward) a residual; h feeds two products
  const block = ([x, a, b, c]: Tensor[]): Tensor => {
    const h = T.layerNorm(x!, null, null);
    return weigh(T.linear(T.mul(T.linear(h, a!, null), T.linear(h, b!, null)), c!, null, { residual: x! }));
  };
  const inputs = [[xd, xs], [ad, as], [bd, bs], [cd, cs]] as const;
  gradcheck(block, inputs, { label: 'sums in the formulas' });
  const leaves = inputs.map(([d, shape]) => T.tensor([...d], [...shape], { dtype: 'float64', requiresGrad: true }));
  const loss = block(leaves);
  const backend = loss.backend;
  const binary = backend.binary.bind(backend);
  const sums: string[] = [];
  backend.binary = (op, a, aShape, b, bShape, outShape) => {
    // a sum of two whole gradients (a broadcast's add has a smaller operand)
    if (op === 'add' && aShape.length === bShape.length && aShape.every((d, i) => d === bShape[i])) sums.push(`[${aShape.join(', ')}]`);
    return binary(op, a, aShape, b, bShape, outShape);
  };
  try {
    loss.backward();
  } finally {
    backend.binary = binary;
  }
  assert.deepEqual(sums, []);
});

test('linear with a residual adds it in the same call, and hands the output gradient to it', () => {
  const [xd, xs] = input(6, 4);
  const [wd, ws] = input(5, 4);
  const [bd, bs] = input(5);
  const [rd, rs] = input(6, 5);
  const x = f64([...xd], [...xs]);
  const w = f64([...wd], [...ws]);
  const b = f64([...bd], [...bs]);
  const r = f64([...rd], [...rs]);
  assertClose(T.linear(x, w, b, { residual: r }).toArray(), T.add(r, T.linear(x, w, b)).toArray(), 1e-12, 'x W^T + b + r');
  gradcheck(([x, w, b, r]) => weigh(T.linear(x!, w!, b!, { residual: r! })), [[xd, xs], [wd, ws], [bd, bs], [rd, rs]], { label: 'linear residual' });
  gradcheck(([x, w, r]) => weigh(T.linear(x!, w!, null, { residual: r! })), [[xd, xs], [wd, ws], [rd, rs]], { label: 'linear residual without bias' });
  assert.throws(() => T.linear(x, w, b, { residual: T.reshape(r, [5, 6]) }), /residual of shape \[5, 6\] for an output of \[6, 5\]/);
  // leading axes: one product over all the rows
  const x3 = T.reshape(x, [2, 3, 4]);
  const r3 = T.reshape(r, [2, 3, 5]);
  const y3 = T.linear(x3, w, b, { residual: r3 });
  assert.deepEqual(y3.shape, [2, 3, 5]);
  assertClose(y3.toArray(), T.linear(x, w, b, { residual: r }).toArray(), 0, 'x [2, 3, 4]');
  gradcheck(([x, w, b, r]) => weigh(T.linear(x!, w!, b!, { residual: r! })), [[xd, [2, 3, 4]], [wd, ws], [bd, bs], [rd, [2, 3, 5]]], { label: 'linear 3-D' });
  assert.throws(() => T.linear(x3, w, b, { residual: r }), /residual of shape \[6, 5\] for an output of \[2, 3, 5\]/);
  assert.throws(() => T.linear(x, w, b, { residual: r, activation: 'gelu' }), /cannot follow an activation/);
});
