import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { threadId } from 'node:worker_threads';
import { InputError } from '../src/errors.js';
import {
  lastLoopThreads, parallelFor, registerRangeKernel, shutdownThreadPool, threadCount,
} from '../src/backend/cpu/thread-pool.js';
import './thread-pool-fixture.js';

// every test asks for two threads, whatever the machine, so that workers are exercised everywhere
process.env['LONGNET_THREADS'] = '2';

function squareArgs(n: number, shared: boolean, delayMs = 0) {
  const make = <T>(C: new (b: ArrayBufferLike) => T, bytes: number) =>
    new C(shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  const a = make(Float64Array, 8 * n);
  for (let i = 0; i < n; i++) a[i] = i - n / 2;
  return { a, out: make(Float64Array, 8 * n), who: make(Int32Array, 4 * n), bias: 0.5, delayMs };
}

function checkSquares(args: ReturnType<typeof squareArgs>): void {
  for (let i = 0; i < args.a.length; i++) assert.equal(args.out[i], args.a[i]! * args.a[i]! + 0.5, `item ${i}`);
}

test('threadCount follows LONGNET_THREADS and rejects nonsense', () => {
  assert.equal(threadCount(), 2);
  const saved = process.env['LONGNET_THREADS'];
  try {
    process.env['LONGNET_THREADS'] = '1';
    assert.equal(threadCount(), 1);
    for (const bad of ['0', '-2', '1.5', 'many']) {
      process.env['LONGNET_THREADS'] = bad;
      assert.throws(() => threadCount(), (e: unknown) => e instanceof InputError && /LONGNET_THREADS/.test(e.message));
    }
  } finally {
    process.env['LONGNET_THREADS'] = saved;
  }
});

test('shared arrays: every item done once, by more than one thread', () => {
  const args = squareArgs(64, true, 3); // slow items, so that the worker gets some however late it starts
  parallelFor('test.square', args, 64, { grain: 1 });
  checkSquares(args);
  assert.equal(lastLoopThreads(), 2);
  const threads = new Set(args.who);
  assert.ok(threads.has(threadId), 'the calling thread takes a share');
  assert.equal(threads.size, 2, 'a worker takes a share');
});

test('many quick loops in a row stay correct', () => {
  const args = squareArgs(1000, true);
  for (let round = 0; round < 200; round++) {
    args.out.fill(0);
    parallelFor('test.square', args, 1000);
    checkSquares(args);
  }
});

test('plain (unshared) arrays, one thread, or little work run serially on the calling thread', () => {
  const plain = squareArgs(50, false);
  parallelFor('test.square', plain, 50);
  checkSquares(plain);
  assert.equal(lastLoopThreads(), 1);
  assert.ok(plain.who.every((t) => t === threadId));

  const small = squareArgs(50, true);
  parallelFor('test.square', small, 50, { itemCost: 1, minCostPerThread: 1000 });
  assert.equal(lastLoopThreads(), 1);
  checkSquares(small);

  const saved = process.env['LONGNET_THREADS'];
  process.env['LONGNET_THREADS'] = '1';
  try {
    const one = squareArgs(50, true);
    parallelFor('test.square', one, 50);
    assert.equal(lastLoopThreads(), 1);
    assert.ok(one.who.every((t) => t === threadId));
  } finally {
    process.env['LONGNET_THREADS'] = saved;
  }
});

test('an error in a worker is thrown on the calling thread, and the pool keeps working', () => {
  assert.throws(
    () => parallelFor('test.fail', { failAt: -1, where: 'worker', kind: 'range' }, 8, { grain: 1 }),
    (e: unknown) => e instanceof RangeError && /test\.fail: item \d+ is bad/.test(e.message)
      && /thread-pool-fixture/.test(e.stack ?? ''),
  );
  // input errors stay input errors (the command line reports them as such)
  assert.throws(
    () => parallelFor('test.fail', { failAt: -1, where: 'worker', kind: 'input' }, 8, { grain: 1 }),
    (e: unknown) => e instanceof InputError && /bad input/.test(e.message),
  );
  const args = squareArgs(64, true, 1);
  parallelFor('test.square', args, 64, { grain: 1 });
  checkSquares(args);
});

test("an error on the calling thread keeps its class and waits for the workers", () => {
  assert.throws(
    () => parallelFor('test.fail', { failAt: -1, where: 'main', kind: 'range' }, 8, { grain: 1 }),
    (e: unknown) => e instanceof RangeError && e.message.startsWith('item'), // the very object thrown
  );
  const args = squareArgs(16, true);
  parallelFor('test.square', args, 16);
  checkSquares(args);
});

test('a worker that exits mid-loop is an error, not a hang; a fresh worker replaces it', () => {
  assert.throws(() => parallelFor('test.exit', {}, 8, { grain: 1 }), /exited during a parallel loop/);
  const args = squareArgs(64, true, 2);
  parallelFor('test.square', args, 64, { grain: 1 });
  checkSquares(args);
  assert.equal(new Set(args.who).size, 2);
});

test('unknown kernels and empty ranges', () => {
  assert.throws(() => parallelFor('no.such.kernel', {}, 4), /no range kernel registered as 'no.such.kernel'/);
  parallelFor('test.fail', { failAt: 0, where: 'any', kind: 'range' }, 0); // nothing to do, nothing thrown
});

test('a kernel registered elsewhere under a taken name is refused', () => {
  assert.throws(() => registerRangeKernel('test.square', 'file:///elsewhere.js', () => {}), /already registered/);
});

test('workers never keep the process alive', async () => {
  await shutdownThreadPool();
  const fixture = fileURLToPath(new URL('./thread-pool-fixture.ts', import.meta.url));
  const pool = fileURLToPath(new URL('../src/backend/cpu/thread-pool.ts', import.meta.url));
  const script = `
    import ${JSON.stringify(fixture)};
    import { parallelFor, lastLoopThreads } from ${JSON.stringify(pool)};
    const n = 32, s = (b) => new SharedArrayBuffer(b);
    const args = {
      a: new Float64Array(s(8 * n)), out: new Float64Array(s(8 * n)), who: new Int32Array(s(4 * n)), bias: 0, delayMs: 2,
    };
    parallelFor('test.square', args, n, { grain: 1 });
    console.log('threads', lastLoopThreads(), new Set(args.who).size);`;
  const started = Date.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, LONGNET_THREADS: '2' }, encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(child.status, 0, child.stderr);
  assert.match(child.stdout, /threads 2 2/);
  assert.ok(Date.now() - started < 30_000);
});
