// The finiteness check of attention inputs on cuda: it queues on the device instead of waiting for it,
// and a NaN or an infinity in q, k or v still fails with an error naming that tensor, at the next wait
// (a read, synchronize). On a machine without a GPU this runs on the emulated addon (test/cuda-emulator.ts),
// which also counts host waits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dilatedAttention } from '../src/attention/dilated.js';
import { cudaAvailable } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { InputError } from '../src/errors.js';
import { tensor, tidy, type Tensor } from '../src/tensor/index.js';
import { useEmulatedCuda, type EmulatorCounters } from './cuda-emulator.js';
import { Random, seed } from './cuda-support.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';

const real = cudaAvailable().ok;
const emulated: EmulatorCounters | null = real ? null : useEmulatedCuda().counters;
const gpu = getBackend('cuda') as CudaBackend;

const shape: readonly number[] = [1, 96, 2, 32];
const options = { segmentLengths: [32, 64], dilationRates: [1, 2], causal: true };
const size = shape.reduce((a, b) => a * b, 1);

function inputs(rng: Random, bad: Partial<Record<'q' | 'k' | 'v', number>> = {}): { q: Tensor; k: Tensor; v: Tensor } {
  const make = (name: 'q' | 'k' | 'v'): Tensor => {
    const data = rng.floats(size);
    const value = bad[name];
    if (value !== undefined) data[rng.int(size)] = value;
    return tensor(data, [...shape], { device: 'cuda' });
  };
  return { q: make('q'), k: make('k'), v: make('v') };
}

const isNonFinite = (name: string) => (e: unknown): boolean =>
  e instanceof InputError && new RegExp(`^${name} contains NaN or infinite values$`).test(e.message);

test('a NaN or infinity in q, k or v fails at the next read, naming the tensor', () => {
  const rng = new Random(seed);
  for (const name of ['q', 'k', 'v'] as const) {
    for (const value of [NaN, Infinity, -Infinity]) {
      tidy(() => {
        const { q, k, v } = inputs(rng, { [name]: value });
        const { output } = dilatedAttention(q, k, v, options);
        assert.throws(() => output.toArray(), isNonFinite(name), `seed ${seed}: ${name} holding ${value}`);
      });
    }
  }
  // the failure is reported once: clean inputs afterwards read back finite values
  tidy(() => {
    const { q, k, v } = inputs(rng);
    const out = dilatedAttention(q, k, v, options).output.toArray() as Float32Array;
    assert.ok(out.every(Number.isFinite), `seed ${seed}: finite inputs after a failure gave non-finite outputs`);
  });
});

test('the first failed check is the one named, and synchronize reports it too', () => {
  const rng = new Random(seed + 1);
  tidy(() => {
    const { q, k, v } = inputs(rng, { k: NaN, v: Infinity });
    dilatedAttention(q, k, v, options);
    assert.throws(() => gpu.synchronize(), isNonFinite('k'), `seed ${seed}`);
  });
  tidy(() => {
    const { q, k, v } = inputs(rng, { q: -Infinity });
    dilatedAttention(q, k, v, options);
    assert.throws(() => gpu.synchronize(), isNonFinite('q'), `seed ${seed}`);
  });
  gpu.synchronize();
});

test('checking attention inputs on cuda does not wait for the device', { skip: real && 'counted on the emulated addon only' }, () => {
  const rng = new Random(seed + 2);
  tidy(() => {
    const { q, k, v } = inputs(rng);
    gpu.synchronize();
    const before = emulated!.syncs;
    const { output } = dilatedAttention(q, k, v, options);
    assert.equal(emulated!.syncs - before, 0, 'host waits during a dilated attention call');
    output.toArray();
  });
});

test('with a rotation, the rotation that writes q and k checks them: the same errors, one check call fewer each', () => {
  const rng = new Random(seed + 3);
  const [, positions, , dim] = shape as [number, number, number, number];
  const table = (value: number): Tensor => tensor(new Float32Array(positions * dim).fill(value), [positions, 1, dim], { device: 'cuda' });
  const original = gpu.checkFinite;
  let checks = 0;
  gpu.checkFinite = (...args: Parameters<CudaBackend['checkFinite']>) => { checks++; original.apply(gpu, args); };
  try {
    tidy(() => {
      const rotation = { qCos: table(0.6), qSin: table(0.8), kCos: table(0.8), kSin: table(0.6) };
      for (const name of ['q', 'k', 'v'] as const) {
        const { q, k, v } = inputs(rng, { [name]: NaN });
        const { output } = dilatedAttention(q, k, v, { ...options, rotation });
        assert.throws(() => output.toArray(), isNonFinite(name), `seed ${seed}: ${name} holding NaN`);
      }
      // finite q whose rotation overflows (tables of XPos scale can exceed 1): what the kernels would read is not finite
      const { q, k, v } = inputs(rng);
      const big = tensor(new Float32Array(size).fill(3e38), [...shape], { device: 'cuda' });
      const grown = { ...rotation, qCos: table(2), qSin: table(0) };
      assert.throws(() => dilatedAttention(big, k, v, { ...options, rotation: grown }).output.toArray(), isNonFinite('q'), 'overflow in the rotation');
      checks = 0;
      const out = dilatedAttention(q, k, v, { ...options, rotation }).output.toArray() as Float32Array;
      assert.ok(out.every(Number.isFinite), `seed ${seed}: clean inputs gave non-finite outputs`);
      assert.equal(checks, 1, 'separate finiteness checks a rotated attention call (v only)');
    });
  } finally {
    gpu.checkFinite = original;
  }
});
