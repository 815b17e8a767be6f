// Storage on the GPU: transfers, fill, copy, cast, assign, finiteness, the caching allocator, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpu, poison, readGpu, requireGpu, rng, skip } from './cuda-support.js';

test('fromArray and read round-trip every dtype, including empty storages', { skip }, () => {
  const g = requireGpu();
  for (const data of [rng.floats(1000), new Float64Array([1.5, -2.25, 1e300]), new Int32Array([7, -8, 2147483647]), new Float32Array(0)]) {
    const s = g.fromArray(data);
    assert.equal(s.dtype, cpu.fromArray(data).dtype);
    assert.equal(s.size, data.length);
    assert.deepEqual(g.read(s), data);
    g.free(s);
  }
});

test('alloc is zero-filled, fill writes every element', { skip }, () => {
  const g = requireGpu();
  poison([1234]);
  const z = g.alloc('float32', 1234);
  assert.ok(readGpu(z).every((v) => Object.is(v, 0)));
  g.fill(z, -3.5);
  assert.ok(readGpu(z).every((v) => v === -3.5));
  const i = g.alloc('int32', 17);
  g.fill(i, 42.9);
  assert.ok(readGpu(i).every((v) => v === 42));
  const d = g.alloc('float64', 5);
  g.fill(d, Math.PI);
  assert.ok(readGpu(d).every((v) => v === Math.PI));
});

test('copy, cast and assign match the CPU backend', { skip }, () => {
  const g = requireGpu();
  const values = new Float32Array([0, -0.5, 0.5, -1.7, 1.7, 1e9, -3e9, 5e9, Number.NaN, Number.POSITIVE_INFINITY, 123456.78]);
  const src = g.fromArray(values);
  const copy = g.copy(src);
  assert.deepEqual(g.read(copy), values);
  for (const dtype of ['int32', 'float64', 'float32'] as const) {
    poison([values.length]);
    assert.deepEqual(g.read(g.cast(src, dtype)), cpu.read(cpu.cast(cpu.fromArray(values), dtype)), `cast to ${dtype}`);
  }
  const ints = new Int32Array([1, -2, 3, 1 << 30]);
  assert.deepEqual(g.read(g.cast(g.fromArray(ints), 'float32')), new Float32Array([1, -2, 3, 1 << 30]));
  const dst = g.alloc('float32', values.length);
  g.assign(dst, src);
  assert.deepEqual(g.read(dst), values);
  const dst64 = g.alloc('float64', values.length);
  g.assign(dst64, src);
  assert.deepEqual(g.read(dst64), new Float64Array(values));
  assert.throws(() => g.assign(g.alloc('float32', 3), src), /sizes differ/);
});

test('allFinite finds one NaN or infinity anywhere', { skip }, () => {
  const g = requireGpu();
  const n = 100_003;
  const data = rng.floats(n);
  assert.equal(g.allFinite(g.fromArray(data)), true);
  // anywhere: the first 16-byte piece, the middle, the last element (past the last whole piece)
  for (const at of [0, rng.int(n), n - 1]) {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const copy = data.slice();
      copy[at] = bad;
      const f32 = g.fromArray(copy);
      assert.equal(g.allFinite(f32), false, `${bad} at ${at}`);
      assert.equal(g.allFinite(g.cast(f32, 'bfloat16')), false, `bfloat16 ${bad} at ${at}`);
      assert.equal(g.allFinite(g.fromArray(new Float64Array(copy))), false, `float64 ${bad} at ${at}`);
    }
  }
  assert.equal(g.allFinite(g.fromArray(new Int32Array([1, 2]))), true);
  assert.equal(g.allFinite(g.alloc('float32', 0)), true);
});

test('the allocator reuses freed blocks and reports use after free', { skip }, () => {
  const g = requireGpu();
  const before = g.memoryStats();
  const a = g.alloc('float32', 300_000);
  g.free(a);
  const b = g.alloc('float32', 300_001); // same size class
  const after = g.memoryStats();
  assert.ok(after.cacheHits > before.cacheHits, 'a freed block was not reused');
  assert.throws(() => g.read(a), /used after it was freed/);
  g.free(a); // freeing twice is harmless
  g.free(b);
  g.emptyCache();
  assert.equal(g.memoryStats().cached, 0);
});

test('running out of memory is a clear error and the process carries on', { skip }, () => {
  const g = requireGpu();
  const huge = 2 ** 48; // 1 PiB of float32
  assert.throws(() => g.alloc('float32', huge), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.equal((e as Error & { code?: string }).code, 'ERR_CUDA_OUT_OF_MEMORY');
    assert.match(e.message, /CUDA out of memory: requested 1125899906842624 bytes .* free of .* on device \d+/);
    return true;
  });
  const s = g.fromArray(new Float32Array([1, 2, 3]));
  assert.deepEqual([...g.read(s)], [1, 2, 3]);
});

test('storages from another device are refused by name', { skip }, () => {
  const g = requireGpu();
  assert.throws(() => g.read(cpu.fromArray(new Float32Array(2))), /read is on cpu, not cuda/);
  assert.throws(() => g.unary('exp', g.fromArray(new Int32Array(2))), /needs a float32 or bfloat16 tensor, got int32/);
});
