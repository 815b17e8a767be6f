// The CPU matmul kernel's tiled paths against a reference that adds each output's products in order: the
// tiles keep that order, so the results must be identical, bit for bit (the CPU backend is the reference
// the GPU backend is tested against).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matmulRows } from '../src/backend/cpu/matmul.js';
import { Rng } from '../src/index.js';

const rng = new Rng(11);
const SIZES: [number, number, number][] = [[4, 4, 1], [5, 7, 3], [9, 13, 17], [64, 33, 70], [3, 2, 5], [8, 4, 0], [12, 9, 4]];

for (const dtype of ['float32', 'float64'] as const) {
  test(`CPU matmul (${dtype}): every transpose, remainder rows and columns, bit-identical to in-order sums`, () => {
    const F = dtype === 'float32' ? Float32Array : Float64Array;
    for (const [m, n, k] of SIZES) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const batches = 2;
          const a = new F(batches * m * k).map(() => rng.normal());
          const b = new F(batches * n * k).map(() => rng.normal());
          const c = new F(batches * m * n).fill(Number.NaN);
          const aOffsets = Int32Array.from({ length: batches }, (_, i) => i * m * k);
          const bOffsets = Int32Array.from({ length: batches }, (_, i) => i * n * k);
          // two ranges, as two threads would take them, the first ending inside a row block
          const split = Math.min(batches * m, 5);
          const args = { a, b, c, aOffsets, bOffsets, m, n, k, transA, transB };
          matmulRows(args, 0, split);
          matmulRows(args, split, batches * m);
          for (let x = 0; x < batches; x++) {
            for (let i = 0; i < m; i++) {
              for (let j = 0; j < n; j++) {
                let s = 0;
                for (let p = 0; p < k; p++) {
                  s += a[aOffsets[x]! + (transA ? p * m + i : i * k + p)]! * b[bOffsets[x]! + (transB ? j * k + p : p * n + j)]!;
                }
                const want = dtype === 'float32' ? Math.fround(s) : s;
                const got = c[(x * m + i) * n + j]!;
                assert.ok(Object.is(got, want), `[${m}x${k}]${transA ? 'T' : ''} x [${k}x${n}]${transB ? 'T' : ''} batch ${x} (${i}, ${j}): ${got} != ${want}`);
              }
            }
          }
        }
      }
    }
  });
}
