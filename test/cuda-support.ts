// Shared by the cuda-*.test.ts files: the GPU backend (or why the tests skip), fresh random inputs,
// comparisons, and poisoning of the allocator's cache so that unwritten outputs show up as NaN.
import assert from 'node:assert/strict';
import type { Storage } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { cudaAvailable, createCudaBackend, type CudaBackend } from '../src/backend/cuda/index.js';

const status = cudaAvailable();

/** The GPU backend, or null when the tests skip. */
export const gpu: CudaBackend | null = status.ok ? createCudaBackend() : null;
/** `false` when a GPU is there, else the reason every GPU test skips (shown by the test runner). */
export const skip: string | false = status.ok ? false : `no GPU: ${status.reason}`;
export const cpu = new CpuBackend();

export function requireGpu(): CudaBackend {
  if (!gpu) throw new Error('internal: GPU test ran without a GPU');
  return gpu;
}

/** A fresh seed per run (LONGNET_TEST_SEED repeats one); failures print it. */
export const seed = Number(process.env['LONGNET_TEST_SEED'] ?? (Date.now() % 2147483647));

/** Mulberry32 with normal samples by Box-Muller. */
export class Random {
  private state: number;
  constructor(s: number) { this.state = s >>> 0; }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  int(n: number): number { return Math.floor(this.next() * n); }
  uniform(lo: number, hi: number): number { return lo + (hi - lo) * this.next(); }
  floats(n: number, f: (r: Random) => number = (r) => r.normal()): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = f(this);
    return a;
  }
}

export const rng = new Random(seed);

export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** |a - e| <= atol + rtol |e| everywhere; NaN must match NaN and infinities must match exactly. */
export function assertClose(
  actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = 1e-5, atol = 1e-6,
): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) || Number.isNaN(a) || !Number.isFinite(e) || !Number.isFinite(a)) {
      if (Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e)) || a === e) continue;
      assert.fail(`${label}: element ${i} is ${a}, expected ${e} (seed ${seed})`);
    }
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (err > worstErr) {
      worstErr = err;
      worst = i;
    }
  }
  if (worst >= 0) {
    assert.fail(`${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol}, seed ${seed})`);
  }
}

/** ||a - e|| / ||e|| (Frobenius). */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i]! - expected[i]!) ** 2;
    den += expected[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/**
 * Fills the allocator's cache with NaN blocks of these element counts (float32), so that the next outputs
 * of those sizes start as NaN: an element a kernel forgets to write stays NaN and fails the comparison.
 */
export function poison(sizes: readonly number[], copies = 2, dtype: 'float32' | 'bfloat16' = 'float32'): void {
  const g = requireGpu();
  const blocks: Storage[] = [];
  for (const n of sizes) {
    for (let c = 0; c < copies; c++) {
      const s = g.alloc(dtype, n);
      g.fill(s, Number.NaN);
      blocks.push(s);
    }
  }
  for (const s of blocks) g.free(s);
}

/** poison for bfloat16 outputs. */
export function poisonBf16(sizes: readonly number[], copies = 2): void {
  poison(sizes, copies, 'bfloat16');
}

/** Uploads host data to both backends. */
export function both(data: Float32Array | Float64Array | Int32Array): { c: Storage; g: Storage } {
  return { c: cpu.fromArray(data), g: requireGpu().fromArray(data) };
}

export function readGpu(s: Storage): Float32Array | Float64Array | Int32Array {
  return requireGpu().read(s);
}
