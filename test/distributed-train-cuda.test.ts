// Sequence x data parallel training on the CUDA backend, the ranks in-process and sharing the device,
// against one device on the same global batch. On a machine with a GPU this runs on it; elsewhere on the
// emulated addon (test/cuda-emulator.ts), which also counts device buffers: a parallel step must not leave
// any behind. NCCL across processes is scripts/device-train-parallel.sh's business.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailable, type CudaBackend } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { ByteTokenizer, tokenDatasetFromDocuments, type TokenDataset } from '../src/data/index.js';
import { runRanks } from '../src/distributed/in-process.js';
import { LongNetDecoder, presetConfig } from '../src/model/index.js';
import { groupComms, ParallelTrainer } from '../src/train/parallel.js';
import { Trainer, type TrainerOptions } from '../src/train/trainer.js';
import { useEmulatedCuda, type EmulatorCounters } from './cuda-emulator.js';

const real = cudaAvailable().ok;
const emulated: EmulatorCounters | null = real ? null : useEmulatedCuda().counters;
const gpu = getBackend('cuda') as CudaBackend;
gpu.setAttentionPrecision('fp32');
/** TF32 products and other summation orders on a GPU; exact float32 on the emulator. */
const TOL = real ? 2e-3 : 1e-5;

const TEXT = Array.from({ length: 40 }, (_, i) =>
  `function f${i}(a, b) {\n  // adds ${i} to the sum of a and b\n  return a + b + ${i};\n}\n`);
let dataset: Promise<TokenDataset> | null = null;
const corpus = (): Promise<TokenDataset> => (dataset ??= tokenDatasetFromDocuments(TEXT, new ByteTokenizer(), { valFraction: 0.1 }));

const config = presetConfig('tiny', {
  dModel: 32, layers: 2, heads: 2, ffnDim: 64, vocabSize: 257,
  attention: { kind: 'dilated', segmentLengths: [8, 16, 32], dilationRates: [1, 2, 4] },
});

const options: TrainerOptions = {
  seqLen: 32, batch: 2, accumulate: 1, schedule: { lr: 3e-3, totalSteps: 4, warmup: 1 },
  adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 3, device: 'cuda',
};

test('cuda: 2 sequence-parallel x 2 data-parallel in-process ranks train as one device, leaving no buffers behind', async () => {
  const data = await corpus();
  const model = new LongNetDecoder(config, { seed: 4, device: 'cuda' });
  const single = new Trainer(model, data, options);
  const want = [single.step().loss, single.step().loss, single.step().loss];
  const wantVal = single.evaluate(4);

  const live: number[] = [];
  const runs = await runRanks(4, async (comm) => {
    const m = new LongNetDecoder(config, { seed: 4, device: 'cuda' });
    const trainer = new ParallelTrainer(m, data, options, groupComms(comm, 2));
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      losses.push((await trainer.step()).loss);
      // every rank's step is over here (the all-reduce of the step waits for all of them)
      if (comm.rank === 0 && emulated !== null) live.push(emulated.live);
    }
    return { losses, val: await trainer.evaluate(4) };
  }, { backend: gpu });
  for (const [r, run] of runs.entries()) {
    run.losses.forEach((l, i) => assert.ok(Math.abs(l - want[i]!) <= TOL * want[i]!, `rank ${r}, step ${i + 1}: ${l} vs ${want[i]}`));
    assert.ok(Math.abs(run.val - wantVal) <= TOL * wantVal, `rank ${r}: validation ${run.val} vs ${wantVal}`);
  }
  if (emulated !== null) assert.equal(live[2], live[1], `device buffers grew from ${live[1]} to ${live[2]} over a step`);
});
