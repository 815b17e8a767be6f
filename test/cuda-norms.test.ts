// The global gradient norm's sums of squares and AdamW's gradient scale on the GPU, against the CPU backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose, both, cpu, poison, readGpu, requireGpu, rng, skip } from './cuda-support.js';

test('sumsOfSquares over many storages of any size matches the CPU', { skip }, () => {
  const g = requireGpu();
  // empty, tiny, one block, many blocks, past the block cap, and a parameter-count mix
  const sizes = [0, 1, 3, 4096, 4097, 100_003, 3_000_000, 768, 768 * 3072];
  const xs = sizes.map((n) => both(rng.floats(n, (r) => r.normal() * 2)));
  poison([sizes.length]);
  const got = readGpu(g.sumsOfSquares(xs.map((x) => x.g)));
  const want = cpu.read(cpu.sumsOfSquares(xs.map((x) => x.c)));
  // float64 partials on both sides: only the final float32 rounding differs
  assertClose(got, want, 'sumsOfSquares', 1e-6, 0);
  const again = readGpu(g.sumsOfSquares(xs.map((x) => x.g)));
  assert.deepEqual([...again], [...got], 'the same bits on a second call (fixed order of the partial sums)');
});

test('AdamW gradScale matches the CPU', { skip }, () => {
  const g = requireGpu();
  const n = 5_001;
  const p = both(rng.floats(n));
  const m = both(new Float32Array(n));
  const v = both(new Float32Array(n));
  for (let step = 1; step <= 3; step++) {
    const grad = both(rng.floats(n, (r) => r.normal() * 10));
    const hyper = { lr: 6e-4, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01, step, gradScale: 0.3 / step };
    g.adamw(p.g, grad.g, m.g, v.g, hyper);
    cpu.adamw(p.c, grad.c, m.c, v.c, hyper);
  }
  assertClose(readGpu(m.g), cpu.read(m.c), 'm', 1e-5, 1e-7);
  assertClose(readGpu(v.g), cpu.read(v.c), 'v', 1e-5, 1e-9);
  assertClose(readGpu(p.g), cpu.read(p.c), 'param', 1e-5, 1e-6);
});
