import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/index.js';
import { InputError, Rng, Tensor, dilatedAttention, denseAttention } from '../src/index.js';
import { assertClose, gradcheck, randomArray } from './support/gradcheck.js';

const shape = [2, 7, 3, 4];
const rng = new Rng(11);
const qkv = () => [0, 1, 2].map(() => Tensor.fromArray(randomArray(2 * 7 * 3 * 4, rng), shape));

test('the op validates its arguments and names the culprit', () => {
  const [q, k, v] = qkv() as [Tensor, Tensor, Tensor];
  const bad: [Parameters<typeof dilatedAttention>[3], RegExp][] = [
    [{ segmentLengths: [], dilationRates: [] }, /segmentLengths: the pattern list is empty/],
    [{ segmentLengths: [4, 8], dilationRates: [1] }, /segmentLengths has 2 entries but dilationRates has 1/],
    [{ segmentLengths: [4.5], dilationRates: [1] }, /segmentLengths\[0\] = 4.5 is not a positive integer/],
    [{ segmentLengths: [4, 0], dilationRates: [1, 1] }, /segmentLengths\[1\] = 0/],
    [{ segmentLengths: [4], dilationRates: [-1] }, /dilationRates\[0\] = -1/],
    [{ segmentLengths: [4], dilationRates: [8] }, /dilationRates\[0\] = 8 is larger than segmentLengths\[0\] = 4/],
    [{ segmentLengths: [4], dilationRates: [1], scale: NaN }, /scale = NaN/],
    [{ segmentLengths: [4], dilationRates: [1], headOffsets: 'odd' as 'paper' }, /headOffsets/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => dilatedAttention(q, k, v, options), (e: unknown) => e instanceof InputError && message.test((e as Error).message));
  }
  const opts = { segmentLengths: [4], dilationRates: [1] };
  assert.throws(() => dilatedAttention(q, T.reshape(k, [2, 7, 12]), v, opts), /k has shape \[2, 7, 12\] but q has \[2, 7, 3, 4\]/);
  assert.throws(() => dilatedAttention(T.reshape(q, [14, 12]), k, v, opts), /q must be \[batch, seqLen, heads, headDim\]/);
  assert.throws(() => dilatedAttention(q, k, T.cast(v, 'float32'), opts), /v is float32 but q is float64/);
  const poisoned = v.toArray();
  poisoned[5] = NaN;
  assert.throws(() => dilatedAttention(q, k, Tensor.fromArray(poisoned, shape), opts), /v contains NaN or infinite values/);
});

test('one pattern (N, 1) is softmax attention, and denseAttention is that pattern', () => {
  const [q, k, v] = qkv() as [Tensor, Tensor, Tensor];
  for (const causal of [false, true]) {
    const { output } = denseAttention(q, k, v, { causal });
    // the same with plain tensor ops: softmax(q k^T * scale + mask) v, per batch and head
    const qh = T.permute(q, [0, 2, 1, 3]);
    const kh = T.permute(k, [0, 2, 1, 3]);
    const vh = T.permute(v, [0, 2, 1, 3]);
    let scores = T.mulScalar(T.matmul(qh, kh, { transB: true }), 1 / Math.sqrt(4));
    if (causal) {
      const mask = new Float64Array(49);
      for (let i = 0; i < 7; i++) for (let j = i + 1; j < 7; j++) mask[i * 7 + j] = -1e30;
      scores = T.add(scores, Tensor.fromArray(mask, [7, 7]));
    }
    const expected = T.permute(T.matmul(T.softmax(scores), vh), [0, 2, 1, 3]);
    assertClose(output.toArray(), expected.toArray(), 1e-5, `causal=${causal}`);
  }
});

test('the op is differentiable through autograd, composed with other ops', () => {
  const n = 2 * 5 * 2 * 3;
  const inputs = [0, 1, 2].map(() => [randomArray(n, rng), [2, 5, 2, 3]] as const);
  const weights = Tensor.fromArray(randomArray(n, rng), [2, 5, 2, 3]);
  for (const causal of [false, true]) {
    gradcheck(([q, k, v]) => T.sum(T.mul(T.tanh(dilatedAttention(T.mulScalar(q!, 1.5), k!, v!, {
      segmentLengths: [2, 4], dilationRates: [1, 2], causal,
    }).output), T.cast(weights, 'float64'))), inputs, { label: `causal=${causal}` });
  }
});

test('rotary tables rotate q and k inside the op: the composition with rotatePairs, values and gradients', () => {
  const [b, n, h, d] = [2, 6, 2, 4];
  const table = () => Tensor.fromArray(randomArray(n * d, rng), [n, 1, d]);
  const rotation = { qCos: table(), qSin: table(), kCos: table(), kSin: table() };
  const opts = { segmentLengths: [2, 6], dilationRates: [1, 2], causal: true };
  const inputs = [0, 1, 2].map(() => [randomArray(b * n * h * d, rng), [b, n, h, d]] as const);
  const [q, k, v] = inputs.map(([data, dims]) => Tensor.fromArray(data, [...dims]));
  const composed = dilatedAttention(T.rotatePairs(q!, rotation.qCos, rotation.qSin), T.rotatePairs(k!, rotation.kCos, rotation.kSin), v!, opts);
  const fused = dilatedAttention(q!, k!, v!, { ...opts, rotation });
  assertClose(fused.output.toArray(), composed.output.toArray(), 1e-12, 'output');
  assertClose(fused.lse.toArray(), composed.lse.toArray(), 1e-12, 'lse');
  gradcheck(([q, k, v]) => T.sum(T.tanh(dilatedAttention(q!, k!, v!, { ...opts, rotation }).output)), inputs, { label: 'rotation' });
  assert.throws(() => dilatedAttention(q!, k!, v!, { ...opts, rotation: { ...rotation, kSin: T.reshape(rotation.kSin, [n * d]) } }),
    /rotatePairs: sin of shape \[24\] is not \[6, 1, 4\]/);
});

test('lse is returned but not differentiable; rows with no key give 0 and -Infinity', () => {
  const q = T.randn([1, 4, 3, 2], { seed: 1, dtype: 'float64', requiresGrad: true });
  // r = 4 > H = 3: head offsets 0..2, so in a segment of 4 the position with offset 3 has no key
  const { output, lse } = dilatedAttention(q, q, q, { segmentLengths: [4], dilationRates: [4] });
  assert.equal(lse.requiresGrad, false);
  const l = lse.toArray();
  const o = output.toArray();
  // position 3, every head: offset 3 is nobody's
  for (let h = 0; h < 3; h++) {
    assert.equal(l[3 * 3 + h], -Infinity);
    for (let d = 0; d < 2; d++) assert.equal(o[(3 * 3 + h) * 2 + d], 0);
  }
  assert.ok(Number.isFinite(l[0]!));
});
