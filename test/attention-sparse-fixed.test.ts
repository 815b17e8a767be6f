import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../src/index.js';
import { InputError, Rng, Tensor, denseAttention, dilatedAttentionFlops, sparseFixedAttention, sparseFixedFlops } from '../src/index.js';
import { assertClose, gradcheck, randomArray } from './support/gradcheck.js';

/** The fixed pattern's mask, written from its definition: (A) own block, causal; (B) earlier blocks' summaries. */
function fixedMask(n: number, l: number, c: number): boolean[][] {
  const mask: boolean[][] = [];
  for (let i = 0; i < n; i++) {
    const row: boolean[] = [];
    for (let j = 0; j < n; j++) {
      const own = j <= i && Math.floor(j / l) === Math.floor(i / l);
      const summary = j % l >= l - c && Math.floor(j / l) < Math.floor(i / l);
      assert.ok(!(own && summary), `the two key sets overlap at (${i}, ${j})`);
      row.push(own || summary);
    }
    mask.push(row);
  }
  return mask;
}

/** Dense masked softmax attention on [B, N, H, D] arrays, in float64: output and lse. */
function oracle(q: Float64Array, k: Float64Array, v: Float64Array, shape: number[], mask: boolean[][], scale: number) {
  const [B, N, H, D] = shape as [number, number, number, number];
  const o = new Float64Array(q.length);
  const lse = new Float64Array(B * N * H);
  const at = (b: number, n: number, h: number) => ((b * N + n) * H + h) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const s: number[] = [];
        const js: number[] = [];
        for (let j = 0; j < N; j++) {
          if (!mask[i]![j]) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[at(b, i, h) + d]! * k[at(b, j, h) + d]!;
          s.push(dot * scale);
          js.push(j);
        }
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((x, y) => x + y, 0);
        lse[(b * N + i) * H + h] = m + Math.log(z);
        js.forEach((j, t) => {
          for (let d = 0; d < D; d++) o[at(b, i, h) + d]! += (e[t]! / z) * v[at(b, j, h) + d]!;
        });
      }
    }
  }
  return { o, lse };
}

const rng = new Rng(5);

test('sparseFixedAttention equals dense attention under the fixed mask', () => {
  // [B, N, H, D], stride, summary: N not a multiple of l, c = l, c = 1, l > N, l = N, batch > 1, odd D
  const cases: [number[], number, number][] = [
    [[1, 11, 2, 3], 4, 1],
    [[2, 11, 3, 5], 4, 2],
    [[1, 10, 1, 3], 3, 3],
    [[2, 9, 2, 4], 3, 1],
    [[1, 6, 2, 3], 8, 2],
    [[1, 6, 1, 2], 6, 6],
    [[1, 13, 2, 3], 1, 1],
    [[3, 16, 2, 7], 5, 2],
  ];
  for (const [shape, l, c] of cases) {
    const size = shape.reduce((a, b) => a * b, 1);
    const [qa, ka, va] = [0, 1, 2].map(() => randomArray(size, rng));
    const scale = c === 2 ? 0.7 : 1 / Math.sqrt(shape[3]!);
    const { output, lse } = sparseFixedAttention(
      Tensor.fromArray(qa!, shape), Tensor.fromArray(ka!, shape), Tensor.fromArray(va!, shape),
      { stride: l, summary: c, ...(c === 2 ? { scale } : {}) },
    );
    const expected = oracle(qa!, ka!, va!, shape, fixedMask(shape[1]!, l, c), scale);
    const label = `shape [${shape.join(', ')}], l=${l}, c=${c}`;
    assert.deepEqual(output.shape, shape);
    assert.deepEqual(lse.shape, shape.slice(0, 3));
    assertClose(output.toArray(), expected.o, 1e-10, `${label} output`);
    assertClose(lse.toArray(), expected.lse, 1e-10, `${label} lse`);
  }
});

test('with summary = stride every earlier key is reached: dense causal attention', () => {
  const shape = [2, 10, 2, 3];
  const [q, k, v] = [0, 1, 2].map(() => Tensor.fromArray(randomArray(120, rng), shape)) as [Tensor, Tensor, Tensor];
  for (const l of [1, 3, 4, 10, 12]) {
    const got = sparseFixedAttention(q, k, v, { stride: l, summary: l });
    const want = denseAttention(q, k, v, { causal: true });
    assertClose(got.output.toArray(), want.output.toArray(), 1e-10, `l=${l} output`);
    assertClose(got.lse.toArray(), want.lse.toArray(), 1e-10, `l=${l} lse`);
  }
  // and with c < l it is not
  const sparse = sparseFixedAttention(q, k, v, { stride: 4, summary: 1 });
  const dense = denseAttention(q, k, v, { causal: true });
  assert.ok(sparse.output.toArray().some((x, i) => Math.abs(x - dense.output.toArray()[i]!) > 1e-3));
});

test('gradients in q, k and v match finite differences', () => {
  const cases: [number[], number, number][] = [
    [[2, 7, 2, 3], 3, 1],
    [[1, 9, 1, 2], 2, 2],
    [[1, 5, 2, 3], 8, 3],
  ];
  for (const [shape, l, c] of cases) {
    const size = shape.reduce((a, b) => a * b, 1);
    const inputs = [0, 1, 2].map(() => [randomArray(size, rng), shape] as const);
    const weights = Tensor.fromArray(randomArray(size, rng), shape);
    gradcheck(([q, k, v]) => T.sum(T.mul(T.tanh(sparseFixedAttention(T.mulScalar(q!, 1.3), k!, v!, {
      stride: l, summary: c,
    }).output), weights)), inputs, { label: `shape [${shape.join(', ')}], l=${l}, c=${c}` });
  }
});

test('lse is returned but not differentiable', () => {
  const q = T.randn([1, 6, 2, 3], { seed: 2, dtype: 'float64', requiresGrad: true });
  const { output, lse } = sparseFixedAttention(q, q, q, { stride: 2, summary: 1 });
  assert.equal(output.requiresGrad, true);
  assert.equal(lse.requiresGrad, false);
  assert.ok(lse.toArray().every((x) => Number.isFinite(x)));
});

test('arguments are validated and the culprit named', () => {
  const shape = [1, 5, 2, 3];
  const [q, k, v] = [0, 1, 2].map(() => Tensor.fromArray(randomArray(30, rng), shape)) as [Tensor, Tensor, Tensor];
  const bad: [Parameters<typeof sparseFixedAttention>[3], RegExp][] = [
    [{ stride: 0, summary: 1 }, /stride = 0 is not a positive integer/],
    [{ stride: 2.5, summary: 1 }, /stride = 2.5 is not a positive integer/],
    [{ stride: 4, summary: 0 }, /summary = 0 is not a positive integer/],
    [{ stride: 4, summary: -1 }, /summary = -1 is not a positive integer/],
    [{ stride: 4, summary: 1.5 }, /summary = 1.5 is not a positive integer/],
    [{ stride: 4, summary: 5 }, /summary = 5 is larger than stride = 4/],
    [{ stride: 'x' as unknown as number, summary: 1 }, /stride = x is not a positive integer/],
    [{ stride: 4, summary: 1, scale: Infinity }, /scale = Infinity is not a finite number/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => sparseFixedAttention(q, k, v, options), (e: unknown) => e instanceof InputError && message.test((e as Error).message));
  }
  const opts = { stride: 2, summary: 1 };
  assert.throws(() => sparseFixedAttention(q, T.reshape(k, [1, 5, 6]), v, opts), /k has shape \[1, 5, 6\] but q has \[1, 5, 2, 3\]/);
  assert.throws(() => sparseFixedAttention(T.reshape(q, [5, 6]), k, v, opts), /q must be \[batch, seqLen, heads, headDim\]/);
  assert.throws(() => sparseFixedAttention(q, k, T.cast(v, 'float32'), opts), /v is float32 but q is float64/);
});

test('sparseFixedFlops: 4 * D * H per pair of the mask, the diagonal counted half (docs/ATTENTION.md causal convention)', () => {
  // docs/ATTENTION.md counts a causal segment of length w as 2 * w^2 * D per head: QK^T and PV (2 * D each)
  // over w^2 / 2 pairs. So the count is 4 * D * H * (mask pairs - N / 2): each diagonal pair is half a pair.
  for (const [n, h, d, l, c] of [[11, 2, 3, 4, 1], [16, 3, 8, 4, 2], [6, 1, 5, 8, 3], [30, 4, 4, 7, 7], [9, 2, 2, 1, 1]] as const) {
    const mask = fixedMask(n, l, c);
    let pairs = 0;
    for (const row of mask) for (const x of row) if (x) pairs++;
    assert.equal(sparseFixedFlops(n, h, d, l, c), 4 * d * h * (pairs - n / 2), `N=${n}, l=${l}, c=${c}`);
  }
  // summary = stride: dense causal, the cost of LongNet's single pattern (N, 1)
  const dense = dilatedAttentionFlops([{ segmentLength: 64, dilationRate: 1 }], 4, 16, 64, true);
  assert.equal(sparseFixedFlops(64, 4, 16, 8, 8), dense);
  // and a sparser summary costs less
  assert.ok(sparseFixedFlops(64, 4, 16, 8, 1) < dense);
});

test('float32 inputs run too', () => {
  const shape = [1, 7, 2, 4];
  const [qa, ka, va] = [0, 1, 2].map(() => randomArray(56, rng));
  const t = (a: Float64Array) => T.cast(Tensor.fromArray(a, shape), 'float32');
  const { output } = sparseFixedAttention(t(qa!), t(ka!), t(va!), { stride: 3, summary: 2 });
  assert.equal(output.dtype, 'float32');
  const expected = oracle(qa!, ka!, va!, shape, fixedMask(7, 3, 2), 0.5);
  assertClose(output.toArray(), expected.o, 1e-4, 'float32 output');
});
