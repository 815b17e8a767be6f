// Elementwise maps, broadcasting, reductions and layout ops against the CPU backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BinaryOp, UnaryOp } from '../src/backend/backend.js';
import { assertClose, both, cpu, poison, readGpu, requireGpu, rng, size, skip } from './cuda-support.js';

const UNARY: readonly UnaryOp[] = ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'abs', 'relu', 'gelu', 'sigmoid', 'square', 'reciprocal'];
const BINARY: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'pow', 'greater', 'reluBackward', 'geluBackward'];
const POSITIVE = new Set<string>(['log', 'sqrt', 'rsqrt', 'reciprocal', 'pow', 'div']);

// float32 maps: the CPU rounds a float64 result once, the GPU computes in float32 (a few ulps apart)
const RTOL = 4e-6;
const ATOL = 1e-6;

test('unary ops match the CPU backend', { skip }, () => {
  const g = requireGpu();
  for (const op of UNARY) {
    const n = 1 + rng.int(5000);
    const data = rng.floats(n, (r) => (POSITIVE.has(op) ? r.uniform(0.05, 4) : r.normal() * 3));
    data[0] = 0;
    const x = both(data);
    poison([n]);
    assertClose(readGpu(g.unary(op, x.g)), cpu.read(cpu.unary(op, x.c)), op, RTOL, ATOL);
  }
});

test('unary ops carry NaN and infinities like the CPU backend', { skip }, () => {
  const g = requireGpu();
  const data = new Float32Array([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0, -1, 1]);
  const x = both(data);
  for (const op of UNARY) assertClose(readGpu(g.unary(op, x.g)), cpu.read(cpu.unary(op, x.c)), `${op} on specials`, RTOL, ATOL);
});

const SHAPES: readonly (readonly [number[], number[], number[]])[] = [
  [[37], [37], [37]],
  [[2, 3, 4], [4], [2, 3, 4]],
  [[2, 1, 4], [3, 1], [2, 3, 4]],
  [[5, 1], [1, 6], [5, 6]],
  [[], [3, 2], [3, 2]],
  [[1], [7], [7]],
  [[2, 3, 1, 5, 1], [3, 4, 1, 6], [2, 3, 4, 5, 6]],
  [[64, 1, 33], [1, 17, 33], [64, 17, 33]],
  [[1000, 300], [300], [1000, 300]],
];

test('binary ops broadcast like the CPU backend', { skip }, () => {
  const g = requireGpu();
  for (const op of BINARY) {
    for (const [aShape, bShape, outShape] of SHAPES) {
      const draw = POSITIVE.has(op) ? (r: typeof rng) => r.uniform(0.1, 3) : (r: typeof rng) => r.normal() * 2;
      const a = both(rng.floats(size(aShape), draw));
      const b = both(rng.floats(size(bShape), draw));
      poison([size(outShape)]);
      const got = readGpu(g.binary(op, a.g, aShape, b.g, bShape, outShape));
      const want = cpu.read(cpu.binary(op, a.c, aShape, b.c, bShape, outShape));
      assertClose(got, want, `${op} [${aShape}] with [${bShape}]`, RTOL, ATOL);
    }
  }
});

test('binary ops on specials: NaN wins in maximum and minimum, pow follows Math.pow', { skip }, () => {
  const g = requireGpu();
  const va = [Number.NaN, 1, -1, 2, 0, Number.POSITIVE_INFINITY, 3, -0, 1];
  const vb = [1, Number.NaN, Number.POSITIVE_INFINITY, Number.NaN, 0, 0, Number.NEGATIVE_INFINITY, 0, Number.NEGATIVE_INFINITY];
  const a = both(new Float32Array(va));
  const b = both(new Float32Array(vb));
  for (const op of BINARY) {
    assertClose(readGpu(g.binary(op, a.g, [9], b.g, [9], [9])), cpu.read(cpu.binary(op, a.c, [9], b.c, [9], [9])), `${op} specials`);
  }
});

test('binaryScalar matches the CPU backend', { skip }, () => {
  const g = requireGpu();
  for (const op of BINARY) {
    const n = 1 + rng.int(3000);
    const a = both(rng.floats(n, (r) => (POSITIVE.has(op) ? r.uniform(0.1, 3) : r.normal())));
    const s = POSITIVE.has(op) ? rng.uniform(0.5, 2) : rng.normal();
    poison([n]);
    assertClose(readGpu(g.binaryScalar(op, a.g, s)), cpu.read(cpu.binaryScalar(op, a.c, s)), `${op} scalar ${s}`, RTOL, ATOL);
  }
});

const REDUCTIONS: readonly (readonly [number[], number[]])[] = [
  [[7, 5, 3], [0]], [[7, 5, 3], [1]], [[7, 5, 3], [2]], [[7, 5, 3], [0, 2]], [[7, 5, 3], [0, 1, 2]], [[7, 5, 3], []],
  [[3, 5000], [1]], [[20000, 3], [0]], [[300, 40], [1]], [[2, 3, 4, 5, 6], [1, 3]], [[100_000], [0]], [[4, 0, 3], [1]],
  [[17, 1, 9], [1]], [[129, 1030], [0]],
  // sums over the leading axis with 8 | columns (a bias gradient): 16-byte loads, then chunks of rows
  [[129, 1032], [0]], [[1500, 16], [0]], [[2, 5, 64], [0, 1]], [[40_000, 776], [0]],
  // few long rows: split over many blocks, then the partial results reduced again
  [[3, 1_000_003], [1]], [[2_500_001], [0]], [[5, 70_000], [0, 1]],
];

test('sum and max over any axes match the CPU backend', { skip }, () => {
  const g = requireGpu();
  for (const [shape, axes] of REDUCTIONS) {
    const x = both(rng.floats(size(shape)));
    const outSize = size(shape.map((d, i) => (axes.includes(i) ? 1 : d)));
    for (const op of ['sum', 'max'] as const) {
      poison([outSize]);
      const got = readGpu(g.reduce(op, x.g, shape, axes));
      const want = cpu.read(cpu.reduce(op, x.c, shape, axes));
      // sums: the GPU accumulates in float64 (or float32 in chunks of rows); the CPU rounds to float32 after
      // each element on some layouts, an error up to about n ulps of the running sum. 2e-7 n holds for sums
      // of the typical size of n normal values (about sqrt(n)); a larger sum (the largest of many columns)
      // has proportionally larger ulps.
      const reduced = size(shape) / Math.max(outSize, 1);
      const largest = Math.max(0, ...Array.from(want, Math.abs));
      const tolerance = 2e-7 * reduced * Math.max(1, largest / Math.sqrt(reduced));
      assertClose(got, want, `${op} of [${shape}] over [${axes}]`, 1e-6, op === 'sum' ? tolerance : 0);
    }
  }
});

test('max propagates NaN, as the CPU backend does', { skip }, () => {
  const g = requireGpu();
  const data = rng.floats(4 * 300);
  data[5] = Number.NaN;
  data[3 * 300 + 299] = Number.NaN;
  const x = both(data);
  for (const axes of [[1], [0], [0, 1]]) {
    assertClose(readGpu(g.reduce('max', x.g, [4, 300], axes)), cpu.read(cpu.reduce('max', x.c, [4, 300], axes)), `max over [${axes}]`);
  }
  // columns of a tall matrix, reduced in chunks of rows
  const tall = rng.floats(3000 * 16);
  tall[2500 * 16 + 3] = Number.NaN;
  const columnMax = readGpu(g.reduce('max', g.fromArray(tall), [3000, 16], [0]));
  assert.ok(Number.isNaN(columnMax[3]!) && columnMax.filter(Number.isNaN).length === 1, 'max over the rows of one column with a NaN');
  // a long row, reduced in chunks: the NaN of one chunk reaches the result
  const long = rng.floats(200_000);
  long[150_001] = Number.NaN;
  assert.ok(Number.isNaN(readGpu(g.reduce('max', g.fromArray(long), [200_000], [0]))[0]!), 'max of a long row with a NaN');
});

function randomPermutation(n: number): number[] {
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

test('permute, slice and addSliceInto match the CPU backend', { skip }, () => {
  const g = requireGpu();
  const cases: [number[], number[]][] = [
    [[300, 257], [1, 0]], [[3, 65, 33], [0, 2, 1]], [[2, 37, 3, 16], [0, 2, 1, 3]], [[4, 5, 6], [2, 0, 1]],
  ];
  for (let i = 0; i < 6; i++) {
    const rank = 1 + rng.int(6);
    const shape = Array.from({ length: rank }, () => 1 + rng.int(6));
    cases.push([shape, randomPermutation(rank)]);
  }
  for (const [shape, perm] of cases) {
    const data = rng.floats(size(shape));
    const x = both(data);
    poison([size(shape)]);
    assert.deepEqual(readGpu(g.permute(x.g, shape, perm)), cpu.read(cpu.permute(x.c, shape, perm)), `permute [${shape}] by [${perm}]`);
    const ints = both(Int32Array.from(data, (v) => Math.round(v * 1000)));
    assert.deepEqual(readGpu(g.permute(ints.g, shape, perm)), cpu.read(cpu.permute(ints.c, shape, perm)), 'int32 permute');

    const begin = shape.map((d) => rng.int(d));
    const extent = shape.map((d, j) => 1 + rng.int(d - begin[j]!));
    poison([size(extent)]);
    assert.deepEqual(readGpu(g.slice(x.g, shape, begin, extent)), cpu.read(cpu.slice(x.c, shape, begin, extent)), `slice [${shape}]`);

    const src = both(rng.floats(size(extent)));
    g.addSliceInto(x.g, shape, src.g, extent, begin);
    cpu.addSliceInto(x.c, shape, src.c, extent, begin);
    assertClose(readGpu(x.g), cpu.read(x.c), `addSliceInto [${shape}]`, 0, 0);
  }
});
