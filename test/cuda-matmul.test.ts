// Batched matrix products through cuBLASLt against the CPU backend, in each precision mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MatmulPrecision } from '../src/backend/cuda/index.js';
import { assertClose, both, cpu, poison, readGpu, relativeError, requireGpu, rng, size, skip } from './cuda-support.js';

interface Case { a: number[]; b: number[]; ta: boolean; tb: boolean; batch: number[]; m: number; n: number; k: number }

function makeCase(aBatch: number[], bBatch: number[], batch: number[], m: number, n: number, k: number, ta: boolean, tb: boolean): Case {
  return { a: [...aBatch, ...(ta ? [k, m] : [m, k])], b: [...bBatch, ...(tb ? [n, k] : [k, n])], ta, tb, batch, m, n, k };
}

const CASES: Case[] = [];
for (const ta of [false, true]) {
  for (const tb of [false, true]) {
    CASES.push(makeCase([], [], [], 64, 48, 80, ta, tb));
    CASES.push(makeCase([], [], [], 3, 7, 5, ta, tb)); // odd sizes: unaligned rows
    CASES.push(makeCase([4], [4], [4], 33, 17, 29, ta, tb)); // strided batch with odd strides
    CASES.push(makeCase([2, 3], [3], [2, 3], 16, 24, 8, ta, tb)); // broadcast batch
    CASES.push(makeCase([5], [], [5], 31, 40, 64, ta, tb)); // b shared: folded into m when a is not transposed
    CASES.push(makeCase([], [6], [6], 12, 20, 9, ta, tb)); // a shared
    CASES.push(makeCase([2, 1], [1, 3], [2, 3], 9, 10, 11, ta, tb)); // outer loop over a non-mergeable dimension
  }
}
CASES.push(makeCase([], [], [], 1, 1, 1, false, false));
CASES.push(makeCase([], [], [], 257, 300, 129, false, true));
CASES.push(makeCase([3], [3], [3], 4, 5, 0, false, false)); // k = 0 gives zeros
CASES.push(makeCase([12], [12], [12], 128, 128, 64, false, true)); // attention-like

// relative Frobenius error bounds: float32 rounding; TF32's 10-bit and bf16's 7-bit mantissas
const BOUND: Record<MatmulPrecision, number> = { fp32: 2e-6, tf32: 4e-3, bf16: 2e-2 };

for (const precision of ['fp32', 'tf32', 'bf16'] as const) {
  test(`matmul in ${precision} matches the CPU backend (transposes, broadcast batches)`, { skip }, () => {
    const g = requireGpu();
    const previous = g.matmulPrecision();
    g.setMatmulPrecision(precision);
    try {
      for (const c of CASES) {
        const a = both(rng.floats(size(c.a)));
        const b = both(rng.floats(size(c.b)));
        const label = `[${c.a}]${c.ta ? 'T' : ''} x [${c.b}]${c.tb ? 'T' : ''} batch [${c.batch}]`;
        poison([size(c.batch) * c.m * c.n]);
        const got = readGpu(g.matmul(a.g, c.a, b.g, c.b, c.ta, c.tb, c.batch, c.m, c.n, c.k));
        const want = cpu.read(cpu.matmul(a.c, c.a, b.c, c.b, c.ta, c.tb, c.batch, c.m, c.n, c.k));
        assert.ok(got.every(Number.isFinite), `${label}: unwritten or non-finite output`);
        if (c.k === 0) {
          assert.ok(got.every((v) => v === 0), `${label}: k = 0 must give zeros`);
          continue;
        }
        const err = relativeError(got, want);
        assert.ok(err <= BOUND[precision], `${label}: relative error ${err.toExponential(2)} > ${BOUND[precision]}`);
      }
    } finally {
      g.setMatmulPrecision(previous);
    }
  });
}

test('bf16 products round each operand to bf16 and accumulate in fp32', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  g.setMatmulPrecision('bf16');
  try {
    const [m, n, k] = [24, 40, 64];
    // multiples of 1/8 up to 2 are bf16 values and their sums of products are exact in fp32
    const a = both(Float32Array.from({ length: m * k }, (_, i) => ((i * 7) % 33 - 16) / 8));
    const b = both(Float32Array.from({ length: k * n }, (_, i) => ((i * 5) % 33 - 16) / 8));
    const exact = readGpu(g.matmul(a.g, [m, k], b.g, [k, n], false, false, [], m, n, k));
    assert.deepEqual(exact, cpu.read(cpu.matmul(a.c, [m, k], b.c, [k, n], false, false, [], m, n, k)));
    // 1 + 2^-10 is not a bf16 value (7 mantissa bits): it rounds to 1, so a row of it times ones gives k
    const ones = g.fromArray(new Float32Array(k * n).fill(1));
    const near = g.fromArray(new Float32Array(m * k).fill(1 + 2 ** -10));
    const rounded = readGpu(g.matmul(near, [m, k], ones, [k, n], false, false, [], m, n, k));
    assert.ok(rounded.every((v) => v === k), `expected ${k} everywhere (operands rounded to bf16), got ${rounded[0]}`);
  } finally {
    g.setMatmulPrecision(previous);
  }
});

test('the default matmul precision is TF32, and mismatched shapes are refused', { skip }, () => {
  const g = requireGpu();
  assert.equal(g.matmulPrecision(), process.env['LONGNET_MATMUL_PRECISION'] ?? 'tf32');
  const a = g.fromArray(rng.floats(6));
  assert.throws(() => g.matmul(a, [2, 3], a, [2, 3], false, false, [], 2, 3, 3), /operand shapes do not match/);
});

test('a bias added in the epilogue matches the CPU in every precision, and a wrong bias is refused', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  try {
    for (const precision of ['fp32', 'tf32', 'bf16'] as const) {
      g.setMatmulPrecision(precision);
      // a linear layer's shapes: x [rows, in] @ W[out, in]^T + b; odd and aligned sizes, and a batch folded into rows
      for (const [batch, rows, inF, outF] of [[[], 64, 48, 80], [[], 7, 5, 3], [[], 300, 768, 3072], [[3], 10, 16, 24]] as const) {
        const aShape = [...batch, rows, inF];
        const x = both(rng.floats(size(aShape)));
        const w = both(rng.floats(outF * inF));
        const bias = both(rng.floats(outF, (r) => r.normal() * 10));
        poison([size(batch) * rows * outF]);
        const got = readGpu(g.matmul(x.g, aShape, w.g, [outF, inF], false, true, [...batch], rows, outF, inF, bias.g));
        const want = cpu.read(cpu.matmul(x.c, aShape, w.c, [outF, inF], false, true, [...batch], rows, outF, inF, bias.c));
        const label = `${precision} [${aShape}] x [${outF}, ${inF}]^T + bias`;
        assert.ok(got.every(Number.isFinite), `${label}: unwritten or non-finite output`);
        const err = relativeError(got, want);
        assert.ok(err <= BOUND[precision], `${label}: relative error ${err.toExponential(2)} > ${BOUND[precision]}`);
      }
    }
    const a = g.fromArray(rng.floats(6));
    assert.throws(() => g.matmul(a, [2, 3], a, [2, 3], false, true, [], 2, 2, 3, g.fromArray(rng.floats(3))), /matmul bias/);
    assert.throws(() => g.matmul(a, [2, 3], a, [2, 3], false, true, [], 2, 2, 3, null, g.fromArray(rng.floats(3))), /matmul addend/);
  } finally {
    g.setMatmulPrecision(previous);
  }
});

// a linear layer's shapes: odd sizes (no fused epilogue may apply), aligned ones and the model's
const LINEAR_SHAPES = [[7, 5, 3], [64, 48, 80], [300, 96, 160], [2048, 768, 3072]] as const;

test('an addend (a residual) summed by the product matches the CPU, with a bias, a batch and k = 0', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  try {
    for (const precision of ['fp32', 'bf16'] as const) {
      g.setMatmulPrecision(precision);
      for (const [batch, rows, inF, outF] of [[[], 7, 5, 3], [[], 300, 768, 768], [[3], 10, 16, 24], [[2], 4, 0, 6]] as const) {
        const aShape = [...batch, rows, inF];
        const outSize = size(batch) * rows * outF;
        const x = both(rng.floats(size(aShape))), w = both(rng.floats(outF * inF)), addend = both(rng.floats(outSize, (r) => r.normal() * 10));
        const bias = inF > 0 ? both(rng.floats(outF)) : null;
        poison([outSize]);
        const got = readGpu(g.matmul(x.g, aShape, w.g, [outF, inF], false, true, [...batch], rows, outF, inF, bias?.g, addend.g));
        const want = cpu.read(cpu.matmul(x.c, aShape, w.c, [outF, inF], false, true, [...batch], rows, outF, inF, bias?.c, addend.c));
        const label = `${precision} [${aShape}] x [${outF}, ${inF}]^T + addend`;
        assert.ok(got.every(Number.isFinite), `${label}: unwritten or non-finite output`);
        const err = relativeError(got, want);
        assert.ok(err <= BOUND[precision], `${label}: relative error ${err.toExponential(2)} > ${BOUND[precision]}`);
      }
    }
  } finally {
    g.setMatmulPrecision(previous);
  }
});

test('linearGrads: dW = dy^T x and the bias gradient (from the product\'s epilogue or the sums) match the CPU in every precision', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  try {
    for (const precision of ['fp32', 'tf32', 'bf16'] as const) {
      g.setMatmulPrecision(precision);
      for (const [rows, inF, outF] of LINEAR_SHAPES) {
        const dy = both(rng.floats(rows * outF)), x = both(rng.floats(rows * inF));
        for (const withBias of [true, false]) {
          poison([outF * inF, outF]);
          const got = g.linearGrads(dy.g, x.g, rows, inF, outF, withBias, 'float32');
          const want = cpu.linearGrads(dy.c, x.c, rows, inF, outF, withBias, 'float32');
          const label = `${precision} rows ${rows}, in ${inF}, out ${outF}${withBias ? ', bias' : ''}`;
          const dw = readGpu(got.weight);
          assert.ok(dw.every(Number.isFinite), `${label}: unwritten dW`);
          const err = relativeError(dw, cpu.read(want.weight));
          assert.ok(err <= BOUND[precision], `${label}: dW relative error ${err.toExponential(2)} > ${BOUND[precision]}`);
          assert.equal(got.bias === null, !withBias, `${label}: a bias gradient exactly when asked`);
          if (got.bias) {
            // sums of the same float32 values in another order, or of the TF32/bf16-rounded operand
            const db = readGpu(got.bias);
            const dbErr = relativeError(db, cpu.read(want.bias!));
            assert.ok(dbErr <= BOUND[precision], `${label}: dBias relative error ${dbErr.toExponential(2)}`);
          }
        }
      }
    }
    const zero = g.linearGrads(g.alloc('float32', 0), g.alloc('float32', 0), 0, 4, 3, true, 'float32');
    assert.deepEqual([...readGpu(zero.weight), ...readGpu(zero.bias!)], new Array(15).fill(0), 'no rows: zero gradients');
    const a = g.fromArray(rng.floats(6));
    assert.throws(() => g.linearGrads(a, a, 2, 3, 4, false, 'float32'), /linearGrads dy/);
  } finally {
    g.setMatmulPrecision(previous);
  }
});

test('linearGelu: gelu(x W^T + b) and the pre-activation match the CPU', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  try {
    g.setMatmulPrecision('fp32');
    for (const [rows, inF, outF] of LINEAR_SHAPES) {
      const x = both(rng.floats(rows * inF)), w = both(rng.floats(outF * inF, (r) => r.normal() * 0.2)), b = both(rng.floats(outF));
      poison([rows * outF]);
      const got = g.linearGelu(x.g, w.g, b.g, rows, inF, outF);
      const want = cpu.linearGelu(x.c, w.c, b.c, rows, inF, outF);
      const label = `rows ${rows}, in ${inF}, out ${outF}`;
      // element by element, with an absolute bound for outputs near zero: float32 sums of `in` products of
      // about 5 in size (cancelling there) differ by their rounding, about 1e-5
      for (const [name, a, e] of [['y', got.y, want.y], ['pre', got.pre, want.pre]] as const) {
        const values = readGpu(a);
        assert.ok(values.every(Number.isFinite), `${label}: unwritten ${name}`);
        assertClose(values, cpu.read(e), `${label}: ${name}`, 1e-4, 1e-4);
      }
    }
  } finally {
    g.setMatmulPrecision(previous);
  }
});
