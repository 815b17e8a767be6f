// The index checks of cuda's embedding lookup (and its gradient) and of cross-entropy's targets: they queue
// on the device instead of waiting for it, and a bad index or target still fails with the CPU backend's
// message (the op, the value, its row) at the next wait (a read, synchronize, allFinite). On a machine
// without a GPU this runs on the emulated addon (test/cuda-emulator.ts), which also counts host waits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dilatedAttention } from '../src/attention/dilated.js';
import { cudaAvailable } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { InputError } from '../src/errors.js';
import { LongNetDecoder, presetConfig } from '../src/model/index.js';
import { add, cast, crossEntropy, embedding, tensor, tidy, type Tensor } from '../src/tensor/index.js';
import { useEmulatedCuda, type EmulatorCounters } from './cuda-emulator.js';
import { Random, seed } from './cuda-support.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';

const real = cudaAvailable().ok;
const emulated: EmulatorCounters | null = real ? null : useEmulatedCuda().counters;
const gpu = getBackend('cuda') as CudaBackend;
const rng = new Random(seed);

const ints = (values: number[], device: 'cpu' | 'cuda' = 'cuda'): Tensor =>
  tensor(Int32Array.from(values), [values.length], { dtype: 'int32', device });
const floats = (n: number, shape: number[], device: 'cpu' | 'cuda' = 'cuda'): Tensor => tensor(rng.floats(n), shape, { device });

/** Asserts that `wait` throws the RangeError `message`. */
function throwsRange(wait: () => unknown, message: string): void {
  assert.throws(wait, (e: unknown) => {
    assert.ok(e instanceof RangeError, `seed ${seed}: ${String(e)}`);
    assert.equal(e.message, message, `seed ${seed}`);
    return true;
  });
}

test('a bad target fails at the next read with the row and value, as on the CPU at once', () => {
  const message = 'crossEntropy: target 7 at row 2 is outside [0, 5)';
  // targets 7 (row 2) and -4 (row 4): the first row is named
  const targets = [1, -100, 7, 0, -4];
  throwsRange(() => crossEntropy(floats(25, [5, 5], 'cpu'), ints(targets, 'cpu')), message);
  tidy(() => {
    const loss = crossEntropy(floats(25, [5, 5]), ints(targets));
    throwsRange(() => loss.item(), message);
  });
  // reported once: a clean loss afterwards reads back finite
  tidy(() => assert.ok(Number.isFinite(crossEntropy(floats(25, [5, 5]), ints([1, 2, 3, 4, 0])).item())));
  // the padding of a padded vocabulary is outside the classes
  tidy(() => {
    crossEntropy(floats(16, [2, 8]), ints([1, 6]), { classes: 6 });
    throwsRange(() => gpu.synchronize(), 'crossEntropy: target 6 at row 1 is outside [0, 6)');
  });
});

test('a bad embedding index fails at the next wait, naming it, as on the CPU at once', () => {
  throwsRange(() => embedding(floats(12, [4, 3], 'cpu'), ints([0, 9, 2], 'cpu')), 'embedding: index 9 is outside [0, 4)');
  tidy(() => {
    const out = embedding(floats(12, [4, 3]), ints([0, 9, -1, 2]));
    throwsRange(() => out.toArray(), 'embedding: index 9 is outside [0, 4)');
  });
  tidy(() => {
    embedding(floats(12, [4, 3]), ints([3, 1]), { validRows: 3 });
    throwsRange(() => gpu.allFinite(gpu.fromArray(new Float32Array(1))), 'embedding: index 3 is outside [0, 3)');
  });
  // the gradient's scatter checks its indices too
  tidy(() => {
    gpu.scatterAdd(gpu.fromArray(rng.floats(6)), gpu.fromArray(Int32Array.from([1, 5])), 4, 3);
    throwsRange(() => gpu.synchronize(), 'embedding: index 5 is outside [0, 4)');
  });
  gpu.synchronize();
});

test('a model fed an id outside its vocabulary fails at the read of its loss', () => {
  const model = new LongNetDecoder(presetConfig('tiny', { vocabSize: 40 }), { seed: 1, device: 'cuda' });
  try {
    tidy(() => {
      const loss = model.loss(tensor(Int32Array.from([1, 2, 45, 3]), [1, 4], { dtype: 'int32', device: 'cuda' }),
        tensor(Int32Array.from([2, 3, 4, 5]), [1, 4], { dtype: 'int32', device: 'cuda' }));
      throwsRange(() => loss.item(), 'embedding: index 45 is outside [0, 40)');
    });
  } finally {
    model.dispose();
  }
});

test('the first failed check is the one reported, among index and finiteness checks', () => {
  const shape = [1, 32, 2, 32];
  const size = shape.reduce((a, b) => a * b, 1);
  const options = { segmentLengths: [16], dilationRates: [1], causal: true };
  tidy(() => {
    embedding(floats(12, [4, 3]), ints([4]));
    const bad = rng.floats(size);
    bad[3] = NaN;
    dilatedAttention(tensor(bad, shape, { device: 'cuda' }), floats(size, shape), floats(size, shape), options);
    throwsRange(() => gpu.synchronize(), 'embedding: index 4 is outside [0, 4)');
  });
  tidy(() => {
    const bad = rng.floats(size);
    bad[5] = Infinity;
    dilatedAttention(tensor(bad, shape, { device: 'cuda' }), floats(size, shape), floats(size, shape), options);
    crossEntropy(floats(6, [2, 3]), ints([0, 3]));
    assert.throws(() => gpu.synchronize(), (e: unknown) => e instanceof InputError && /^q contains NaN/.test(e.message));
  });
  gpu.synchronize();
});

test('the index checks do not wait for the device', { skip: real && 'counted on the emulated addon only' }, () => {
  tidy(() => {
    const table = tensor(rng.floats(12), [4, 3], { device: 'cuda', requiresGrad: true });
    const logits = floats(12, [4, 3]);
    const [ids, targets] = [ints([0, 3, 1, 2]), ints([2, 1, 0, 2])];
    gpu.synchronize();
    const before = emulated!.syncs;
    const loss = crossEntropy(add(embedding(table, ids), logits), targets);
    loss.backward();
    assert.equal(emulated!.syncs - before, 0, 'host waits in a forward and backward through embedding and crossEntropy');
    assert.ok(Number.isFinite(loss.item()));
  });
});

test('a read queued before more work gives the values as they were, and reports a failed check queued before it', () => {
  tidy(() => {
    const x = floats(6, [6]);
    const want = Array.from(x.toArray());
    const wait = gpu.readLater([x.storage, cast(x, 'bfloat16').storage]);
    // work queued after the read, changing x in place, is not in it
    gpu.fill(x.storage, 3);
    const [got, rounded] = wait();
    assert.deepEqual(Array.from(got!), want);
    rounded!.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) <= Math.abs(want[i]!) * 2 ** -8, `bf16 ${v} against ${want[i]}`));
    assert.deepEqual(Array.from(x.toArray()), new Array(6).fill(3));
    // one read at a time
    const again = gpu.readLater([x.storage]);
    assert.throws(() => gpu.readLater([x.storage]), /already waiting/);
    again();
    // a bad index queued before the read fails at its wait, with the message a read would give
    const table = floats(12, [4, 3]);
    embedding(table, ints([0, 9]));
    const bad = gpu.readLater([x.storage]);
    throwsRange(bad, 'embedding: index 9 is outside [0, 4)');
  });
});
