// The CPU backend's ops that split across threads (elementwise, permute, layer norm, softmax,
// cross-entropy): the same results, bit for bit, as one thread computing the whole array.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import type { BinaryOp, UnaryOp } from '../src/backend/backend.js';
import { binaryKernel, binaryScalarKernel, unaryKernel } from '../src/backend/cpu/elementwise-parallel.js';
import { walkStrided } from '../src/backend/cpu/index-walk.js';
import { permuteKernel } from '../src/backend/cpu/layout-parallel.js';
import {
  crossEntropyBackwardKernel, crossEntropyKernel, layerNormBackwardKernel, layerNormKernel, softmaxBackwardKernel, softmaxKernel,
} from '../src/backend/cpu/nn-parallel.js';
import { allocArray } from '../src/backend/cpu/storage.js';
import { lastLoopThreads } from '../src/backend/cpu/thread-pool.js';
import { Rng } from '../src/index.js';

const rng = new Rng(5);
function random(size: number): Float32Array {
  const a = allocArray('float32', size) as Float32Array; // shared: large arrays live on SharedArrayBuffers
  for (let i = 0; i < a.length; i++) a[i] = rng.normal();
  return a;
}

/** Runs `fn` once on one thread and once on several, returning both results. */
function bothWays(fn: () => Float32Array | Float64Array | Int32Array | (Float32Array | Float64Array | null)[]): {
  serial: number[]; threaded: number[]; threads: number;
} {
  const flat = (r: ReturnType<typeof fn>): number[] => (Array.isArray(r) ? r.flatMap((a) => (a === null ? [] : Array.from(a))) : Array.from(r));
  const saved = process.env['LONGNET_THREADS'];
  try {
    process.env['LONGNET_THREADS'] = '1';
    const serial = flat(fn());
    process.env['LONGNET_THREADS'] = String(Math.max(2, Math.min(4, availableParallelism())));
    const threaded = flat(fn());
    return { serial, threaded, threads: lastLoopThreads() };
  } finally {
    if (saved === undefined) delete process.env['LONGNET_THREADS'];
    else process.env['LONGNET_THREADS'] = saved;
  }
}

test('elementwise ops on several threads equal one thread, bit for bit', () => {
  const x = random(600_000);
  const y = random(600_000);
  const row = random(600);
  const column = random(1000);
  const cases: [string, () => Float32Array | Float64Array | Int32Array][] = [
    ...(['exp', 'gelu', 'neg', 'square'] as UnaryOp[]).map((op): [string, () => Float32Array | Float64Array | Int32Array] =>
      [`unary ${op}`, () => unaryKernel(op, x)]),
    ...(['add', 'mul', 'pow'] as BinaryOp[]).map((op): [string, () => Float32Array | Float64Array | Int32Array] =>
      [`scalar ${op}`, () => binaryScalarKernel(op, x, 1.5)]),
    ...(['add', 'sub', 'mul', 'div', 'geluBackward'] as BinaryOp[]).map((op): [string, () => Float32Array | Float64Array | Int32Array] =>
      [`same-shape ${op}`, () => binaryKernel(op, x, [1000, 600], y, [1000, 600], [1000, 600])]),
    ['broadcast add over rows', () => binaryKernel('add', x, [1000, 600], row, [600], [1000, 600])],
    ['broadcast mul over columns', () => binaryKernel('mul', x, [1000, 600], column, [1000, 1], [1000, 600])],
    ['broadcast sub, three axes', () => binaryKernel('sub', x, [10, 100, 600], row, [1, 1, 600], [10, 100, 600])],
  ];
  for (const [name, fn] of cases) {
    const { serial, threaded, threads } = bothWays(fn);
    assert.ok(threads > 1, `${name}: expected the threaded run to use several threads`);
    assert.deepEqual(threaded, serial, name);
  }
});

test('a walk over a range of rows visits exactly those rows of the full walk, with the same offsets', () => {
  const shape = [3, 4, 5, 7];
  const strides = [[140, 35, 7, 1], [0, 5, 1, 0]];
  const visits = (start?: number, end?: number): string[] => {
    const seen: string[] = [];
    walkStrided(shape, strides, (outStart, length, starts, inner) => seen.push(`${outStart}:${length}:${starts[0]},${starts[1]}:${inner.join(',')}`), start, end);
    return seen;
  };
  const all = visits();
  assert.equal(all.length, 60);
  for (const [start, end] of [[0, 60], [1, 2], [7, 33], [59, 60], [20, 20], [45, 1000]] as const) {
    assert.deepEqual(visits(start, end), all.slice(start, Math.min(end, 60)), `rows [${start}, ${end})`);
  }
});

test('permute and layer norm (forward and backward) on several threads equal one thread, bit for bit', () => {
  const x = random(600_000);
  const dy = random(600_000);
  const gamma = Float32Array.from({ length: 600 }, () => rng.normal()); // small: not on a shared buffer
  const beta = Float32Array.from({ length: 600 }, () => rng.normal());
  const cases: [string, () => (Float32Array | Float64Array | null)[]][] = [
    ['permute [10, 100, 600] -> [600, 10, 100]', () => [permuteKernel(x, [10, 100, 600], [2, 0, 1]) as Float32Array]],
    ['permute [1000, 600] -> [600, 1000]', () => [permuteKernel(x, [1000, 600], [1, 0]) as Float32Array]],
    ['layer norm with gamma and beta', () => {
      const r = layerNormKernel(x, gamma, beta, 1000, 600, 1e-5);
      return [r.y, r.mean, r.rstd];
    }],
    ['layer norm backward', () => {
      const f = layerNormKernel(x, gamma, beta, 1000, 600, 1e-5);
      const g = layerNormBackwardKernel(dy, x, gamma, f.mean, f.rstd, 1000, 600, true);
      return [g.dx, g.dGamma, g.dBeta];
    }],
    ['layer norm without parameters, backward', () => {
      const f = layerNormKernel(x, null, null, 1000, 600, 1e-5);
      const g = layerNormBackwardKernel(dy, x, null, f.mean, f.rstd, 1000, 600, false);
      return [f.y, g.dx, g.dGamma, g.dBeta];
    }],
  ];
  for (const [name, fn] of cases) {
    const { serial, threaded, threads } = bothWays(fn);
    assert.ok(threads > 1, `${name}: expected the threaded run to use several threads`);
    assert.deepEqual(threaded, serial, name);
  }
});

test('softmax and cross-entropy (forward and backward) on several threads equal one thread, bit for bit', () => {
  const [rows, cols] = [2000, 300];
  const x = random(rows * cols);
  const dy = random(rows * cols);
  // every fifth target ignored; the arrays of one value a row are small, on ordinary buffers
  const targets = Int32Array.from({ length: rows }, (_, r) => (r % 5 === 0 ? -100 : (r * 7) % cols));
  const dLoss = Float32Array.from({ length: rows }, () => rng.normal());
  const cases: [string, () => (Float32Array | Float64Array | null)[]][] = [];
  for (const log of [false, true]) {
    cases.push([`${log ? 'log-' : ''}softmax and its backward`, () => {
      const y = softmaxKernel(x, rows, cols, log);
      return [y, softmaxBackwardKernel(y, dy, rows, cols, log)];
    }]);
  }
  cases.push(['cross-entropy and its backward', () => {
    const f = crossEntropyKernel(x, targets, rows, cols, -100, cols);
    return [f.loss, f.lse, crossEntropyBackwardKernel(x, targets, f.lse, dLoss, rows, cols, -100, cols)];
  }]);
  // a padded vocabulary: the softmax over the first 257 columns only
  cases.push(['cross-entropy over 257 classes of 300 columns and its backward', () => {
    const padded = Int32Array.from(targets, (t) => (t === -100 ? t : t % 257));
    const f = crossEntropyKernel(x, padded, rows, cols, -100, 257);
    return [f.loss, f.lse, crossEntropyBackwardKernel(x, padded, f.lse, dLoss, rows, cols, -100, 257)];
  }]);
  for (const [name, fn] of cases) {
    const { serial, threaded, threads } = bothWays(fn);
    assert.ok(threads > 1, `${name}: expected the threaded run to use several threads`);
    assert.deepEqual(threaded, serial, name);
  }
  const bad = Int32Array.from(targets);
  bad[1234] = cols;
  assert.throws(() => crossEntropyKernel(x, bad, rows, cols, -100, cols), /target 300 at row 1234 is outside \[0, 300\)/);
});
