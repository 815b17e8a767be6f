// The cross-entropy's `classes` option (a padded vocabulary): softmax over the first `classes` columns,
// gradient 0 on the rest, checked against a direct computation (cpu-threads.test.ts: the threaded kernels).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/index.js';
import { Rng } from '../src/index.js';
import { crossEntropyBackwardKernel, crossEntropyKernel } from '../src/backend/cpu/nn-parallel.js';
import { assertClose, gradcheck, randomArray } from './support/gradcheck.js';

const rng = new Rng(11);

/** Per-row loss and d(sum_r w_r loss_r)/dlogits by the definition, in float64, over the first `classes` columns. */
function direct(
  logits: ArrayLike<number>, targets: Int32Array, weights: ArrayLike<number>, cols: number, classes: number,
): { loss: Float64Array; grad: Float64Array } {
  const rows = targets.length;
  const loss = new Float64Array(rows);
  const grad = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t === -100) continue;
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(logits[r * cols + j]!);
    loss[r] = Math.log(sum) - logits[r * cols + t]!;
    for (let j = 0; j < classes; j++) grad[r * cols + j] = weights[r]! * (Math.exp(logits[r * cols + j]!) / sum - (j === t ? 1 : 0));
  }
  return { loss, grad };
}

/** Logits whose padding columns are large: any that entered the softmax would move the loss a lot. */
function paddedLogits(rows: number, cols: number, classes: number): Float64Array {
  const x = randomArray(rows * cols, rng);
  for (let r = 0; r < rows; r++) for (let j = classes; j < cols; j++) x[r * cols + j] = 30 + x[r * cols + j]!;
  return x;
}

test('crossEntropy with classes equals the loss over the real columns, with gradient 0 on the padding', () => {
  const [rows, cols, classes] = [6, 16, 11];
  const x = paddedLogits(rows, cols, classes);
  const t = Int32Array.from({ length: rows }, () => rng.int(classes));
  t[2] = -100;
  t[4] = classes - 1;
  const targets = T.tensor(t, [rows], { dtype: 'int32' });
  const expected = direct(x, t, new Float64Array(rows).fill(1 / (rows - 1)), cols, classes);
  const logits = T.tensor(x, [rows, cols], { dtype: 'float64' });
  logits.requiresGrad = true;
  const loss = T.crossEntropy(logits, targets, { classes });
  assert.ok(Math.abs(loss.item() - expected.loss.reduce((a, b) => a + b, 0) / (rows - 1)) < 1e-12);
  loss.backward();
  const grad = logits.grad!.toArray();
  assertClose(grad, expected.grad, 1e-12, 'dlogits');
  for (let r = 0; r < rows; r++) for (let j = classes; j < cols; j++) assert.equal(grad[r * cols + j], 0, `padding gradient [${r}, ${j}]`);
  // per row, and the same as the unpadded logits
  const perRow = T.crossEntropy(logits, targets, { classes, reduction: 'none' }).toArray();
  assertClose(perRow, expected.loss, 1e-12, 'per-row loss');
  const real = T.slice(T.tensor(x, [rows, cols], { dtype: 'float64' }), [0, 0], [rows, classes]);
  assertClose(perRow, T.crossEntropy(real, targets, { reduction: 'none' }).toArray(), 1e-12, 'padded vs sliced');
  // classes = cols is the plain cross-entropy
  assertClose([T.crossEntropy(logits, targets, { classes: cols }).item()], [T.crossEntropy(logits, targets).item()], 0, 'classes = cols');
});

test('crossEntropy with classes: gradients match finite differences, padding included', () => {
  const targets = T.tensor([2, 0, 4, -100, 1, 3], [2, 3], { dtype: 'int32' });
  const input = [randomArray(2 * 3 * 8, rng), [2, 3, 8]] as const;
  gradcheck(([x]) => T.crossEntropy(x!, targets, { classes: 5 }), [input], { label: 'crossEntropy classes 5 of 8' });
  gradcheck(([x]) => T.crossEntropy(x!, targets, { classes: 5, reduction: 'sum' }), [input], { label: 'crossEntropy classes sum' });
});

test('the CPU kernels with classes on [rows, 320] logits (the byte vocabulary padded to 64) match the direct computation', () => {
  const [rows, cols, classes] = [300, 320, 257];
  const x = Float32Array.from(paddedLogits(rows, cols, classes));
  const targets = Int32Array.from({ length: rows }, (_, r) => (r % 7 === 0 ? -100 : (r * 13) % classes));
  const dLoss = Float32Array.from({ length: rows }, () => rng.normal());
  const f = crossEntropyKernel(x, targets, rows, cols, -100, classes);
  const d = crossEntropyBackwardKernel(x, targets, f.lse, dLoss, rows, cols, -100, classes);
  const expected = direct(x, targets, dLoss, cols, classes);
  assertClose(f.loss, expected.loss, 1e-5, 'loss');
  assertClose(d, expected.grad, 1e-5, 'dlogits');
  for (let r = 0; r < rows; r++) for (let j = classes; j < cols; j++) assert.equal(d[r * cols + j], 0, `padding gradient [${r}, ${j}]`);
});

test('bad classes values and targets in the padding are errors naming them', () => {
  const logits = T.tensor(randomArray(2 * 8, rng), [2, 8], { dtype: 'float64' });
  const targets = T.tensor([1, 3], [2], { dtype: 'int32' });
  for (const classes of [0, -1, 9, 2.5, Number.NaN]) {
    assert.throws(() => T.crossEntropy(logits, targets, { classes }), (e: unknown) => {
      assert.ok(e instanceof RangeError, String(e));
      assert.equal(e.message, `crossEntropy: classes = ${classes} is not an integer in [1, 8] (the logits' last axis)`);
      return true;
    });
  }
  assert.throws(() => T.crossEntropy(logits, T.tensor([1, 5], [2], { dtype: 'int32' }), { classes: 5 }),
    /crossEntropy: target 5 at row 1 is outside \[0, 5\)/);
  // the backend kernels check it too (the CUDA binding does the same)
  const x = new Float32Array(16);
  const t = new Int32Array([1, 3]);
  assert.throws(() => crossEntropyKernel(x, t, 2, 8, -100, 0), /classes = 0 is not an integer in \[1, 8\]/);
  assert.throws(() => crossEntropyBackwardKernel(x, t, new Float32Array(2), new Float32Array(2), 2, 8, -100, 9), /classes = 9/);
});
