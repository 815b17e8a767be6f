// Training, evaluation and generation with `device: 'cuda'`, end to end, against the CPU. On a machine
// with a GPU this runs on it; elsewhere on the emulated addon (test/cuda-emulator.ts), which runs the same
// TypeScript (CUDA backend, model, trainer, checkpoints) with CPU arithmetic, and counts device buffers
// and host synchronizations, so that leaks and host reads in the training step show up without a GPU.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cudaAvailable } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { LongNetDecoder } from '../src/model/index.js';
import { crossEntropy, Rng, tensor, tidy, type Tensor } from '../src/tensor/index.js';
import { loadModel } from '../src/train/load-model.js';
import { runTraining, type GivenArgs } from '../src/train/run.js';
import { evaluateLoss, Trainer } from '../src/train/trainer.js';
import { useEmulatedCuda, type EmulatorCounters } from './cuda-emulator.js';
import { corpusFixture, tiny, trainerOptions, warmUpCuda } from './cuda-training-fixture.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';

const real = cudaAvailable().ok;
const emulated: EmulatorCounters | null = real ? null : useEmulatedCuda().counters;
const gpu = getBackend('cuda') as CudaBackend;
// float32 attention kernels, so that only the products' precision separates the devices
gpu.setAttentionPrecision('fp32');
/** Loss agreement between the devices: TF32 products on the GPU, exact float32 on the emulator. */
const LOSS_TOL = real ? 2e-3 : 1e-6;

const lines: string[] = [];
{
  const rng = new Rng(11);
  for (let i = 0; i < 400; i++) {
    const a = rng.int(1000);
    lines.push(`function add${i}(a, b) { return a * ${a} + b - ${i}; } // scaled sum ${a}`);
  }
}
const { work, corpusPath, data } = corpusFixture('longnet-cuda-train-', lines);
warmUpCuda(gpu);

test('training steps on cuda match the CPU and keep device memory flat', async () => {
  const ds = await data();
  const run = (device: 'cpu' | 'cuda'): { losses: number[]; inUse: number[]; syncs: number[] } => {
    const model = new LongNetDecoder(tiny, { seed: 3, device });
    const trainer = new Trainer(model, ds, trainerOptions(device));
    const losses: number[] = [];
    const inUse: number[] = [];
    const syncs: number[] = [];
    for (let i = 0; i < 4; i++) {
      const before = emulated?.syncs ?? 0;
      losses.push(trainer.step().loss);
      syncs.push((emulated?.syncs ?? 0) - before);
      if (device === 'cuda') {
        gpu.synchronize();
        inUse.push(gpu.memoryStats().inUse);
      }
    }
    trainer.optimizer.dispose();
    model.dispose();
    return { losses, inUse, syncs };
  };
  const startInUse = gpu.memoryStats().inUse;
  const c = run('cpu');
  const g = run('cuda');
  for (let i = 0; i < c.losses.length; i++) {
    assert.ok(Number.isFinite(g.losses[i]!), `step ${i + 1}: loss ${g.losses[i]}`);
    const rel = Math.abs(g.losses[i]! - c.losses[i]!) / Math.abs(c.losses[i]!);
    assert.ok(rel < LOSS_TOL * (i + 1), `step ${i + 1}: cuda loss ${g.losses[i]} vs cpu ${c.losses[i]} (relative ${rel.toExponential(2)})`);
  }
  assert.ok(g.losses[3]! < g.losses[0]!, `loss did not fall: ${g.losses.join(', ')}`);
  // after the first step (which creates the moments' final values and any cached tables) nothing grows
  assert.deepEqual(g.inUse.slice(1), g.inUse.slice(1).map(() => g.inUse[1]), `bytes in use after each step: ${g.inUse.join(', ')}`);
  assert.equal(gpu.memoryStats().inUse, startInUse, 'model and optimizer freed: back to the starting bytes');
  if (emulated) {
    // per step, whatever the micro-batches: one read of their losses (after every backward) and the gradient
    // norm together, and the result of the queued checks (the embedding's indices, the loss's targets, the
    // attention layers' inputs), taken at that read
    assert.ok(trainerOptions('cuda').accumulate > 1);
    const expected = 2;
    assert.ok(g.syncs.every((s) => s <= expected), `host synchronizations per step: ${g.syncs.join(', ')} (at most ${expected})`);
  }
});

test('a mean cross-entropy with ignored targets gives the same loss and gradients on cuda', () => {
  const rng = new Rng(5);
  const rows = 37, cols = 11;
  const logits = Float32Array.from({ length: rows * cols }, () => rng.normal());
  const targets = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 2 ? -100 : rng.int(cols)));
  const result = (device: 'cpu' | 'cuda', ignoreAll = false): { loss: number; grad: ArrayLike<number> } => {
    const x = tensor(logits, [rows, cols], { device, requiresGrad: true });
    const t = tensor(ignoreAll ? targets.map(() => -100) : targets, [rows], { dtype: 'int32', device });
    const loss = crossEntropy(x, t);
    loss.backward();
    const r = { loss: loss.item(), grad: x.grad!.toArray() };
    for (const d of [x.grad!, x, t, loss]) d.dispose();
    return r;
  };
  const c = result('cpu');
  const g = result('cuda');
  assert.ok(Math.abs(g.loss - c.loss) <= 1e-6 * Math.abs(c.loss), `loss ${g.loss} vs ${c.loss}`);
  for (let i = 0; i < c.grad.length; i++) assert.ok(Math.abs(g.grad[i]! - c.grad[i]!) <= 1e-6, `grad[${i}] ${g.grad[i]} vs ${c.grad[i]}`);
  // every target ignored: loss 0 and no gradient, not NaN
  const none = result('cuda', true);
  assert.equal(none.loss, 0);
  assert.ok(Array.from(none.grad).every((v) => v === 0));
});

test('a padded vocabulary on cuda: the unpadded loss, and padding rows that stay zero through training', async () => {
  assert.equal(tiny.vocabPadMultiple, 64); // 257 classes in 320 rows
  const ds = await data();
  const ids = (): Tensor => tensor(Int32Array.from({ length: 96 }, (_, i) => (i * 37) % 257), [1, 96], { dtype: 'int32', device: 'cuda' });
  const lossOf = (vocabPadMultiple: number): number => {
    const model = new LongNetDecoder({ ...tiny, vocabPadMultiple }, { seed: 4, device: 'cuda' });
    const loss = tidy(() => model.loss(ids(), ids()).item());
    model.dispose();
    return loss;
  };
  // float32 products: only the summation order may differ between the two head widths
  const precision = gpu.matmulPrecision();
  gpu.setMatmulPrecision('fp32');
  let padded: number, plain: number;
  try {
    [padded, plain] = [lossOf(64), lossOf(1)];
  } finally {
    gpu.setMatmulPrecision(precision);
  }
  assert.ok(Math.abs(padded - plain) <= 1e-5 * plain, `padded loss ${padded} vs unpadded ${plain}`);
  const model = new LongNetDecoder(tiny, { seed: 3, device: 'cuda' });
  const trainer = new Trainer(model, ds, trainerOptions('cuda'));
  for (let i = 0; i < 3; i++) trainer.step();
  for (const name of ['embedding.weight', 'head.weight']) {
    const values = model.namedParameters().get(name)!.toArray();
    assert.ok(values.subarray(257 * tiny.dModel).every((v) => v === 0), `${name}: padding rows stayed zero on cuda`);
  }
  trainer.optimizer.dispose();
  model.dispose();
});

test('a checkpoint trained on cuda evaluates alike on cuda and cpu, and one trained on cpu alike too', async () => {
  const ds = await data();
  const given = (device: 'cpu' | 'cuda'): GivenArgs => ({
    data: corpusPath, steps: 3, seqLen: 128, batch: 2, evalEvery: 3, evalSequences: 2, device,
  });
  const quiet = { resume: false, overwrite: true, log: () => {}, progress: { write: () => true } };
  for (const trainedOn of ['cuda', 'cpu'] as const) {
    const out = join(work, `run-${trainedOn}`);
    const r = await runTraining(given(trainedOn), { ...quiet, out });
    assert.equal(r.step, 3);
    assert.ok(r.lastValLoss !== null && Number.isFinite(r.lastValLoss), `${trainedOn}: validation loss ${r.lastValLoss}`);
    const losses: Record<string, number> = {};
    for (const device of ['cpu', 'cuda'] as const) {
      const { model } = loadModel(out, device);
      try {
        losses[device] = evaluateLoss(model, ds, 128, { batchSize: 2, maxSequences: 4, device });
      } finally {
        model.dispose();
      }
    }
    const rel = Math.abs(losses['cuda']! - losses['cpu']!) / losses['cpu']!;
    assert.ok(rel < LOSS_TOL, `trained on ${trainedOn}: eval loss cuda ${losses['cuda']} vs cpu ${losses['cpu']}`);
  }
});

test('generation on cuda gives the CPU tokens (greedy) and frees what it allocates', () => {
  gpu.synchronize();
  const startInUse = gpu.memoryStats().inUse;
  const model = { cpu: new LongNetDecoder(tiny, { seed: 9, device: 'cpu' }), cuda: new LongNetDecoder(tiny, { seed: 9, device: 'cuda' }) };
  const greedy = (device: 'cpu' | 'cuda'): number[] => {
    const m = model[device];
    const cache = m.createCache(1, 64);
    const out: number[] = [];
    let input = [256, 102, 117, 110];
    for (let i = 0; i < 12; i++) {
      const t = tensor(Int32Array.from(input), [1, input.length], { dtype: 'int32', device });
      const logits = m.step(t, cache);
      t.dispose();
      const all = logits.toArray();
      logits.dispose();
      const row = all.subarray(all.length - 257);
      let best = 0;
      for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
      out.push(best);
      input = [best];
    }
    cache.dispose();
    return out;
  };
  const c = greedy('cpu');
  // float32 products (not TF32), so that a close second-best token cannot flip the argmax
  const precision = gpu.matmulPrecision();
  gpu.setMatmulPrecision('fp32');
  let g: number[];
  try {
    g = greedy('cuda');
  } finally {
    gpu.setMatmulPrecision(precision);
  }
  assert.deepEqual(g, c);
  model.cpu.dispose();
  model.cuda.dispose();
  gpu.synchronize();
  // the model's parameters and the positions it keeps go with it; a step's or the cache's leftovers would stay
  assert.equal(gpu.memoryStats().inUse, startInUse, 'the decode cache, every step and the model were freed');
});
