// The GPU kernels on bfloat16 storage (the activations of mixed-precision training) against the CPU backend
// in float32 on the same bf16-rounded inputs: the only difference allowed is the rounding of the results to
// bfloat16 (and, in attention, the fused kernels' bf16 probabilities). Outputs start as NaN (poisoned
// blocks), so an element a kernel forgets to write fails the comparison.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionConfig, Storage } from '../src/backend/backend.js';
import { decodeBf16, encodeBf16 } from '../src/io/halfFloat.js';
import { cpu, poisonBf16, relativeError, requireGpu, rng, seed, skip, size } from './cuda-support.js';

/** Relative (Frobenius) error of results rounded once to bf16: about 2^-9 / sqrt(3); a few times that. */
const ROUNDED = 4e-3;

function rounded(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  decodeBf16(encodeBf16(x), out);
  return out;
}

/** bf16-representable values on the CPU (float32) and the same values in a bfloat16 GPU storage. */
function input(n: number, f?: (r: typeof rng) => number): { c: Storage; g: Storage } {
  const g = requireGpu();
  const values = rounded(rng.floats(n, f));
  const staged = g.fromArray(values);
  const out = { c: cpu.fromArray(values), g: g.cast(staged, 'bfloat16') };
  g.free(staged);
  return out;
}

function expectClose(got: Storage, want: Storage, label: string, tol = ROUNDED): void {
  assert.equal(got.dtype, 'bfloat16', `${label}: result dtype`);
  const a = requireGpu().read(got) as Float32Array;
  const e = cpu.read(want) as Float32Array;
  assert.equal(a.length, e.length, `${label}: length`);
  const err = relativeError(a, e);
  assert.ok(err <= tol, `${label}: relative error ${err} over ${tol} (seed ${seed})`);
}

test('bf16 elementwise ops, broadcasts and reductions match the CPU on the same inputs', { skip }, () => {
  const g = requireGpu();
  const n = 100_003;
  const x = input(n, (r) => r.normal() * 2);
  const y = input(n);
  poisonBf16([n]);
  expectClose(g.unary('gelu', x.g), cpu.unary('gelu', x.c), 'gelu');
  expectClose(g.unary('exp', x.g), cpu.unary('exp', x.c), 'exp');
  expectClose(g.binary('add', x.g, [n], y.g, [n], [n]), cpu.binary('add', x.c, [n], y.c, [n], [n]), 'add');
  expectClose(g.binary('geluBackward', x.g, [n], y.g, [n], [n]), cpu.binary('geluBackward', x.c, [n], y.c, [n], [n]), 'geluBackward');
  expectClose(g.binaryScalar('mul', x.g, 0.37), cpu.binaryScalar('mul', x.c, 0.37), 'mulScalar');
  const rows = input(96 * 300), bias = input(300);
  poisonBf16([96 * 300]);
  expectClose(g.binary('add', rows.g, [96, 300], bias.g, [300], [96, 300]), cpu.binary('add', rows.c, [96, 300], bias.c, [300], [96, 300]), 'add [96, 300] + [300]');
  // a bias gradient (sum over rows) and row sums; float64 sums on both sides, one rounding here
  const big = input(4096 * 768);
  poisonBf16([768]);
  expectClose(g.reduce('sum', big.g, [4096, 768], [0]), cpu.reduce('sum', big.c, [4096, 768], [0]), 'sum over rows');
  expectClose(g.reduce('sum', big.g, [4096, 768], [1]), cpu.reduce('sum', big.c, [4096, 768], [1]), 'sum over columns');
  expectClose(g.reduce('max', big.g, [4096, 768], [1]), cpu.reduce('max', big.c, [4096, 768], [1]), 'max over columns', 0);
});

test('bf16 products (fp32 accumulation, bf16 results) with a bias, transposes and a batch match the CPU', { skip }, () => {
  const g = requireGpu();
  const [m, k, n] = [257, 96, 160];
  const x = input(m * k), w = input(n * k), bias = input(n), dy = input(m * n);
  poisonBf16([m * n, n * k]);
  expectClose(
    g.matmul(x.g, [m, k], w.g, [n, k], false, true, [], m, n, k, bias.g),
    cpu.matmul(x.c, [m, k], w.c, [n, k], false, true, [], m, n, k, bias.c), 'x W^T + b',
  );
  poisonBf16([m * n]);
  expectClose(
    g.matmul(x.g, [m, k], w.g, [n, k], false, true, [], m, n, k, bias.g, dy.g),
    cpu.matmul(x.c, [m, k], w.c, [n, k], false, true, [], m, n, k, bias.c, dy.c), 'x W^T + b + a residual',
  );
  expectClose(g.matmul(dy.g, [m, n], x.g, [m, k], true, false, [], n, k, m), cpu.matmul(dy.c, [m, n], x.c, [m, k], true, false, [], n, k, m), 'dy^T x');
  expectClose(g.matmul(dy.g, [m, n], w.g, [n, k], false, false, [], m, k, n), cpu.matmul(dy.c, [m, n], w.c, [n, k], false, false, [], m, k, n), 'dy W');
  const a = input(3 * 64 * 32), b = input(3 * 32 * 48);
  poisonBf16([3 * 64 * 48]);
  expectClose(
    g.matmul(a.g, [3, 64, 32], b.g, [3, 32, 48], false, false, [3], 64, 48, 32),
    cpu.matmul(a.c, [3, 64, 32], b.c, [3, 32, 48], false, false, [3], 64, 48, 32), 'batched',
  );
});

test('linear parameter gradients from bf16 dy and x: float32 (fp32 accumulators) or bf16, as the CPU; gelu(x W^T + b) in one product', { skip }, () => {
  const g = requireGpu();
  for (const [rows, inF, outF] of [[257, 96, 160], [2048, 768, 3072]] as const) {
    const dy = input(rows * outF), x = input(rows * inF);
    const want = cpu.linearGrads(dy.c, x.c, rows, inF, outF, true, 'float32');
    const label = `rows ${rows}, in ${inF}, out ${outF}`;
    const f32 = g.linearGrads(dy.g, x.g, rows, inF, outF, true, 'float32');
    for (const [name, got, e] of [['dW', f32.weight, want.weight], ['dBias', f32.bias!, want.bias!]] as const) {
      assert.equal(got.dtype, 'float32', `${label}: ${name} dtype`);
      // products of bf16 values are exact in fp32: only the order of the sums differs
      const err = relativeError(g.read(got), cpu.read(e));
      assert.ok(err < 1e-5, `${label}: float32 ${name} relative error ${err} (seed ${seed})`);
    }
    poisonBf16([outF * inF, outF]);
    const bf = g.linearGrads(dy.g, x.g, rows, inF, outF, true, 'bfloat16');
    expectClose(bf.weight, want.weight, `${label}: bf16 dW`);
    expectClose(bf.bias!, want.bias!, `${label}: bf16 dBias`);
    const w = input(outF * inF, (r) => r.normal() * 0.1), b = input(outF);
    poisonBf16([rows * outF]);
    const got = g.linearGelu(x.g, w.g, b.g, rows, inF, outF);
    const ref = cpu.linearGelu(x.c, w.c, b.c, rows, inF, outF);
    expectClose(got.pre, ref.pre, `${label}: pre-activation`);
    expectClose(got.y, ref.y, `${label}: gelu`);
  }
  const x = input(6);
  assert.throws(() => g.linearGrads(x.g, x.g, 2, 3, 3, false, 'float64'), /bfloat16 operands cannot give float64|linearGrads dWeight/);
});

for (const cols of [768, 3072]) {
  test(`bf16 layer norm forward and backward (${cols} columns) match the CPU`, { skip }, () => {
    const g = requireGpu();
    const rows = 300;
    const x = input(rows * cols, (r) => r.normal() * 3 + 1);
    const dy = input(rows * cols);
    // float32 scale and shift, as the model keeps them
    const gammaV = rng.floats(cols, (r) => 1 + 0.2 * r.normal()), betaV = rng.floats(cols);
    const gamma = { c: cpu.fromArray(gammaV), g: g.fromArray(gammaV) }, beta = { c: cpu.fromArray(betaV), g: g.fromArray(betaV) };
    poisonBf16([rows * cols, cols]);
    const got = g.layerNorm(x.g, gamma.g, beta.g, rows, cols, 1e-5);
    const want = cpu.layerNorm(x.c, gamma.c, beta.c, rows, cols, 1e-5);
    expectClose(got.y, want.y, 'y');
    assert.equal(got.mean.dtype, 'float32', 'mean stays float32');
    const gb = g.layerNormBackward(dy.g, x.g, gamma.g, got.mean, got.rstd, rows, cols, true);
    const cb = cpu.layerNormBackward(dy.c, x.c, gamma.c, want.mean, want.rstd, rows, cols, true);
    expectClose(gb.dx, cb.dx, 'dx');
    // float32 parameter gradients: sums of float32 products on both sides
    for (const [name, got, want] of [['dGamma', gb.dGamma!, cb.dGamma!], ['dBeta', gb.dBeta!, cb.dBeta!]] as const) {
      assert.equal(got.dtype, 'float32', `${name} dtype`);
      const err = relativeError(g.read(got), cpu.read(want));
      assert.ok(err < 1e-4, `${name}: relative error ${err} (seed ${seed})`);
    }
  });
}

test('cross-entropy over bf16 logits with padding columns: float32 loss, bf16 gradient, both as the CPU', { skip }, () => {
  const g = requireGpu();
  const [rows, cols, classes] = [64, 1088, 1000];
  const logits = input(rows * cols, (r) => r.normal() * 3);
  const t = Int32Array.from({ length: rows }, (_, i) => (i === 5 ? -100 : rng.int(classes)));
  const [tc, tg] = [cpu.fromArray(t), g.fromArray(t)];
  const got = g.crossEntropy(logits.g, tg, rows, cols, -100, classes);
  const want = cpu.crossEntropy(logits.c, tc, rows, cols, -100, classes);
  assert.equal(got.loss.dtype, 'float32');
  const loss = g.read(got.loss), wantLoss = cpu.read(want.loss);
  assert.ok(relativeError(loss, wantLoss) < 1e-5, `loss: relative error ${relativeError(loss, wantLoss)} (seed ${seed})`);
  const dLoss = rng.floats(rows);
  const [dc, dg] = [cpu.fromArray(dLoss), g.fromArray(dLoss)];
  poisonBf16([rows * cols]);
  expectClose(
    g.crossEntropyBackward(logits.g, tg, got.lse, dg, rows, cols, -100, classes),
    cpu.crossEntropyBackward(logits.c, tc, want.lse, dc, rows, cols, -100, classes), 'dlogits',
  );
});

test('rotatePairs on bf16 x with float32 tables, and its transpose, match the CPU', { skip }, () => {
  const g = requireGpu();
  const [outer, positions, inner, dim] = [2, 64, 3, 32];
  const x = input(outer * positions * inner * dim);
  const cosV = rng.floats(positions * dim), sinV = rng.floats(positions * dim);
  const [cc, cg] = [cpu.fromArray(cosV), g.fromArray(cosV)];
  const [sc, sg] = [cpu.fromArray(sinV), g.fromArray(sinV)];
  poisonBf16([x.g.size]);
  for (const transpose of [false, true]) {
    expectClose(
      g.rotatePairs(x.g, cg, sg, outer, positions, inner, dim, transpose),
      cpu.rotatePairs(x.c, cc, sc, outer, positions, inner, dim, transpose), `rotatePairs transpose=${transpose}`,
    );
  }
});

test('dilated attention on bf16 q, k, v: bf16 o and gradients as the CPU on the same inputs', { skip }, () => {
  const g = requireGpu();
  const geometry = { batch: 1, seqLen: 384, heads: 4, headDim: 64 };
  const config: AttentionConfig = {
    patterns: [{ segmentLength: 128, dilationRate: 1 }, { segmentLength: 256, dilationRate: 2 }],
    causal: true, scale: 1 / 8, headOffsets: 'paper',
  };
  const n = size([geometry.batch, geometry.seqLen, geometry.heads, geometry.headDim]);
  const [q, k, v, dO] = [input(n), input(n), input(n), input(n)];
  for (const kernels of ['bf16', 'fp32'] as const) {
    g.setAttentionPrecision(kernels);
    try {
      poisonBf16([n]);
      const got = g.dilatedAttention(q.g, k.g, v.g, geometry, config);
      const want = cpu.dilatedAttention(q.c, k.c, v.c, geometry, config);
      // the fused kernels round the probabilities to bf16 for P V: FlashAttention's usual error
      const tol = kernels === 'bf16' ? 2e-2 : ROUNDED;
      expectClose(got.o, want.o, `o (${kernels} kernels)`, tol);
      const lse = g.read(got.lse), wantLse = cpu.read(want.lse);
      assert.ok(relativeError(lse, wantLse) < 1e-3, `lse (${kernels} kernels): ${relativeError(lse, wantLse)} (seed ${seed})`);
      const gb = g.dilatedAttentionBackward(q.g, k.g, v.g, got.o, got.lse, dO.g, geometry, config);
      const cb = cpu.dilatedAttentionBackward(q.c, k.c, v.c, want.o, want.lse, dO.c, geometry, config);
      for (const name of ['dq', 'dk', 'dv'] as const) expectClose(gb[name], cb[name], `${name} (${kernels} kernels)`, kernels === 'bf16' ? 3e-2 : 1e-2);
    } finally {
      g.setAttentionPrecision('bf16');
    }
  }
});

test('a NaN in bf16 attention inputs is reported by name at the next read', { skip }, () => {
  const g = requireGpu();
  const values = rounded(rng.floats(2 * 64 * 2 * 32));
  values[77] = Number.NaN;
  const staged = g.fromArray(values);
  const bad = g.cast(staged, 'bfloat16');
  g.checkFinite(bad, 'v');
  assert.throws(() => g.read(staged), /^InputError: v contains NaN or infinite values$|v contains NaN or infinite values/);
  g.free(staged);
  g.free(bad);
});
