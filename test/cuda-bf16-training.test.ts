// Mixed-precision training on cuda: bfloat16 activations, float32 parameters, gradients and AdamW state.
// Against float32 training on the CPU from the same init and data. On a machine without a GPU this runs on
// the emulated addon (test/cuda-emulator.ts), whose bfloat16 buffers round every stored value as the GPU does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailable } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { LongNetDecoder } from '../src/model/index.js';
import { cast, Rng, tensor, tidy } from '../src/tensor/index.js';
import { evaluateLoss, Trainer } from '../src/train/trainer.js';
import { useEmulatedCuda, type EmulatorCounters } from './cuda-emulator.js';
import { corpusFixture, tiny, trainerOptions, warmUpCuda } from './cuda-training-fixture.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';

const real = cudaAvailable().ok;
const emulated: EmulatorCounters | null = real ? null : useEmulatedCuda().counters;
const gpu = getBackend('cuda') as CudaBackend;

const lines: string[] = [];
{
  const rng = new Rng(17);
  for (let i = 0; i < 300; i++) lines.push(`const value${i} = compute(${rng.int(1000)}, "${i}") * ${rng.int(50)}; // item ${i}`);
}
const { data } = corpusFixture('longnet-bf16-train-', lines);
warmUpCuda(gpu, 'bfloat16');

test('training with bf16 activations on cuda follows float32 training on the CPU, with float32 state', async () => {
  const ds = await data();
  const run = (device: 'cpu' | 'cuda'): { losses: number[]; model: LongNetDecoder; trainer: Trainer; syncs: number[] } => {
    const model = new LongNetDecoder(tiny, { seed: 3, device, ...(device === 'cuda' ? { activations: 'bfloat16' as const } : {}) });
    const trainer = new Trainer(model, ds, trainerOptions(device));
    const losses: number[] = [];
    const syncs: number[] = [];
    for (let i = 0; i < 4; i++) {
      const before = emulated?.syncs ?? 0;
      losses.push(trainer.step().loss);
      syncs.push((emulated?.syncs ?? 0) - before);
    }
    return { losses, model, trainer, syncs };
  };
  const startInUse = gpu.memoryStats().inUse;
  const c = run('cpu');
  const g = run('cuda');
  try {
    assert.equal(g.model.activations, 'bfloat16');
    for (let i = 0; i < 4; i++) {
      const rel = Math.abs(g.losses[i]! - c.losses[i]!) / c.losses[i]!;
      // bf16 activations: about 3 significant digits a value, a little more drift each step
      assert.ok(rel < 1e-2 * (i + 1), `step ${i + 1}: bf16 loss ${g.losses[i]} vs float32 ${c.losses[i]} (relative ${rel.toExponential(2)})`);
    }
    assert.ok(g.losses[3]! < g.losses[0]!, `loss did not fall: ${g.losses.join(', ')}`);
    for (const [name, p] of g.model.namedParameters()) {
      assert.equal(p.dtype, 'float32', `${name}: parameter stays float32`);
      assert.equal(p.grad?.dtype ?? 'float32', 'float32', `${name}: gradient in float32`);
    }
    if (emulated) {
      // no more host waits than float32 training (test/cuda-train.test.ts): per step one read of the losses
      // with the gradient norm, and the queued checks' result
      const expected = 2;
      assert.ok(g.syncs.every((s) => s <= expected), `host synchronizations per step: ${g.syncs.join(', ')} (at most ${expected})`);
    }
    // float32 weights: they load on the CPU as they are, and evaluate there as on cuda
    const onCpu = new LongNetDecoder(tiny, { seed: 99, device: 'cpu' });
    onCpu.loadState(new Map([...g.model.namedParameters()].map(([name, p]) => [name, p.toArray() as Float32Array])));
    const evalCuda = evaluateLoss(g.model, ds, 128, { batchSize: 2, maxSequences: 4, device: 'cuda' });
    const evalCpu = evaluateLoss(onCpu, ds, 128, { batchSize: 2, maxSequences: 4, device: 'cpu' });
    assert.ok(Math.abs(evalCuda - evalCpu) / evalCpu < 1e-2, `eval loss: cuda bf16 ${evalCuda} vs cpu ${evalCpu}`);
    onCpu.dispose();
  } finally {
    g.trainer.optimizer.dispose();
    g.model.dispose();
    c.trainer.optimizer.dispose();
    c.model.dispose();
  }
  gpu.synchronize();
  assert.equal(gpu.memoryStats().inUse, startInUse, 'every bf16 activation, copy and gradient freed');
});

test('the products read bf16 copies of the weights that AdamW rewrites as it updates them: no weight casts after the first step', async () => {
  const ds = await data();
  const model = new LongNetDecoder(tiny, { seed: 4, device: 'cuda', activations: 'bfloat16' });
  const trainer = new Trainer(model, ds, trainerOptions('cuda'));
  const weights = new Set([...model.namedParameters().values()].map((p) => p.storage));
  const original = gpu.cast;
  let casts = 0;
  gpu.cast = (...args: Parameters<CudaBackend['cast']>) => {
    if (weights.has(args[0])) casts++;
    return original.apply(gpu, args);
  };
  try {
    const perStep: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = casts;
      trainer.step();
      perStep.push(casts - before);
    }
    assert.ok(perStep[0]! > 0, 'the first step makes the copies');
    assert.deepEqual(perStep.slice(1), [0, 0], `weight casts per step: ${perStep.join(', ')}`);
    let copies = 0;
    for (const [name, p] of model.namedParameters()) {
      const copy = p.keptCopy;
      if (!copy) continue;
      copies++;
      assert.equal(copy.dtype, 'bfloat16', name);
      // the copy holds the updated float32 values rounded to bf16: exactly what a cast of them gives
      const fresh = tidy(() => cast(p, 'bfloat16').toArray());
      assert.deepEqual(copy.toArray(), fresh, `${name}: the copy follows the parameter`);
    }
    assert.ok(copies >= 2 * tiny.layers, `copies kept: ${copies}`);
    // new weights loaded in place drop the copies, so the next forward reads the new values
    const named = [...model.namedParameters()];
    model.loadState(new Map(named.map(([name, p]) => [name, (p.toArray() as Float32Array).map((x) => x * 0.5)])));
    assert.ok(named.every(([, p]) => p.keptCopy === null), 'copies dropped by loadState');
  } finally {
    gpu.cast = original;
    trainer.optimizer.dispose();
    model.dispose();
  }
});

test('forward gives float32 logits with bf16 activations; generation stays in the parameters\' dtype', () => {
  const model = new LongNetDecoder(tiny, { seed: 5, device: 'cuda', activations: 'bfloat16' });
  try {
    tidy(() => {
      const ids = tensor(Int32Array.from({ length: 64 }, (_, i) => (i * 11) % 257), [1, 64], { dtype: 'int32', device: 'cuda' });
      const logits = model.forward(ids);
      assert.equal(logits.dtype, 'float32');
      assert.deepEqual(logits.shape, [1, 64, 257]);
      const cache = model.createCache(1, 64);
      assert.equal(model.step(ids, cache).dtype, 'float32');
    });
  } finally {
    model.dispose();
  }
});

test('bf16 activations are refused on the CPU and for float64 parameters, with the reason', () => {
  assert.throws(() => new LongNetDecoder(tiny, { device: 'cpu', activations: 'bfloat16' }), /activations: bfloat16 is not float32 .*on cuda, bfloat16/);
  const model = new LongNetDecoder(tiny, { device: 'cuda' });
  try {
    assert.equal(model.activations, 'float32');
    assert.throws(() => model.setActivations('float64'), /activations: float64 is not float32/);
  } finally {
    model.dispose();
  }
  assert.throws(() => cast(tensor([1, 2], [2]), 'bfloat16'), /bfloat16 storage is for the cuda backend/);
});
