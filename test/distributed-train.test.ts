/**
 * Sequence parallel x data parallel training on in-process CPU ranks against one device on the same
 * global batch: per-step losses, gradient norms, validation losses and final weights agree to rounding
 * (float64 models, so that only the order of additions differs), for several layouts; a run saved under
 * one layout and resumed under another continues exactly the uninterrupted run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer, tokenDatasetFromDocuments, type TokenDataset } from '../src/data/index.js';
import { runRanks } from '../src/distributed/in-process.js';
import { LongNetDecoder, presetConfig, type ModelConfig } from '../src/model/index.js';
import { readModelWeights, readTrainingState, saveCheckpoint } from '../src/train/checkpoint.js';
import { agreeOnStop, groupComms, ParallelTrainer, resolveLayout } from '../src/train/parallel.js';
import type { StopSignal } from '../src/train/signals.js';
import { Trainer, type TrainerOptions } from '../src/train/trainer.js';
import { InputError } from '../src/errors.js';
import type { Device } from '../src/backend/backend.js';

const TEXT = Array.from({ length: 40 }, (_, i) =>
  `function f${i}(a, b) {\n  // adds ${i} to the sum of a and b\n  return a + b + ${i};\n}\n`);

let dataset: Promise<TokenDataset> | null = null;
function corpus(): Promise<TokenDataset> {
  dataset ??= tokenDatasetFromDocuments(TEXT, new ByteTokenizer(), { valFraction: 0.1 });
  return dataset;
}

const SEQ = 16;

/** Two layers whose longer segments cross the ranks' boundaries for P >= 2. */
function config(attention: ModelConfig['attention'] = { kind: 'dilated', segmentLengths: [4, 8, 16], dilationRates: [1, 2, 4] }): ModelConfig {
  return presetConfig('tiny', { dModel: 16, layers: 2, heads: 2, ffnDim: 32, vocabSize: 257, attention });
}

function options(batch: number, accumulate: number, steps = 4): TrainerOptions {
  return {
    seqLen: SEQ, batch, accumulate, schedule: { lr: 1e-2, totalSteps: steps, warmup: 1 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 0.5, seed: 5, device: 'cpu',
  };
}

interface Run {
  losses: number[];
  norms: number[];
  valLoss: number;
  weights: Map<string, Float64Array>;
}

function weightsOf(model: LongNetDecoder): Map<string, Float64Array> {
  return new Map([...model.namedParameters()].map(([n, p]) => [n, p.toArray() as Float64Array]));
}

async function single(data: TokenDataset, opts: TrainerOptions, steps: number, cfg = config()): Promise<Run> {
  const model = new LongNetDecoder(cfg, { seed: 7, dtype: 'float64' });
  const trainer = new Trainer(model, data, opts);
  const losses: number[] = [];
  const norms: number[] = [];
  for (let s = 0; s < steps; s++) {
    const r = trainer.step();
    losses.push(r.loss);
    norms.push(r.gradNorm);
  }
  return { losses, norms, valLoss: trainer.evaluate(5), weights: weightsOf(model) };
}

async function parallel(data: TokenDataset, opts: TrainerOptions, steps: number, world: number, P: number, cfg = config()): Promise<Run[]> {
  return runRanks(world, async (comm) => {
    const model = new LongNetDecoder(cfg, { seed: 7, dtype: 'float64' });
    const trainer = new ParallelTrainer(model, data, opts, groupComms(comm, P));
    const losses: number[] = [];
    const norms: number[] = [];
    for (let s = 0; s < steps; s++) {
      const r = await trainer.step();
      losses.push(r.loss);
      norms.push(r.gradNorm);
    }
    return { losses, norms, valLoss: await trainer.evaluate(5), weights: weightsOf(model) };
  });
}

function close(a: number, b: number, tol: number, what: string): void {
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b} (difference ${Math.abs(a - b)})`);
}

function assertSameRun(got: Run, want: Run, tol: number, what: string): void {
  got.losses.forEach((l, i) => close(l, want.losses[i]!, tol, `${what}: loss of step ${i + 1}`));
  got.norms.forEach((l, i) => close(l, want.norms[i]!, tol, `${what}: gradient norm of step ${i + 1}`));
  close(got.valLoss, want.valLoss, tol, `${what}: validation loss`);
  for (const [name, w] of want.weights) {
    const g = got.weights.get(name)!;
    let worst = 0;
    for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(g[i]! - w[i]!));
    assert.ok(worst <= tol, `${what}: ${name} differs by ${worst}`);
  }
}

const LAYOUTS: { P: number; D: number; accumulate: number }[] = [
  { P: 2, D: 1, accumulate: 1 },
  { P: 1, D: 2, accumulate: 1 },
  { P: 2, D: 2, accumulate: 2 },
  { P: 3, D: 1, accumulate: 1 }, // 16 tokens over 3 ranks: 5, 5, 6
  { P: 4, D: 1, accumulate: 1 },
];

for (const { P, D, accumulate } of LAYOUTS) {
  test(`P = ${P} sequence-parallel x D = ${D} data-parallel ranks train as one device on the same global batch`, async () => {
    const data = await corpus();
    const steps = 3;
    const opts = options(4, accumulate);
    const want = await single(data, opts, steps);
    const got = await parallel(data, opts, steps, P * D, P);
    for (const [r, run] of got.entries()) assertSameRun(run, want, 1e-10, `rank ${r}`);
    // the ranks hold bit-identical weights
    for (const run of got.slice(1)) for (const [n, w] of got[0]!.weights) assert.deepEqual(run.weights.get(n), w, n);
  });
}

test('dense attention splits over the ranks too (the single pattern (N, 1))', async () => {
  const data = await corpus();
  const cfg = config({ kind: 'dense' });
  const want = await single(data, options(2, 1), 2, cfg);
  const got = await parallel(data, options(2, 1), 2, 4, 2, cfg);
  for (const run of got) assertSameRun(run, want, 1e-10, 'dense');
});

test('a run saved under one layout resumes under another and continues the uninterrupted run', async () => {
  const data = await corpus();
  const opts = options(4, 1, 4);
  const straight = await single(data, opts, 4);
  const dir = mkdtempSync(join(tmpdir(), 'longnet-parallel-resume-'));
  try {
    // steps 1-2 on P = 2 x D = 2, saved by rank 0
    await runRanks(4, async (comm) => {
      const model = new LongNetDecoder(config(), { seed: 7, dtype: 'float64' });
      const trainer = new ParallelTrainer(model, data, opts, groupComms(comm, 2));
      for (let s = 0; s < 2; s++) close((await trainer.step()).loss, straight.losses[s]!, 1e-10, `step ${s + 1}`);
      if (comm.rank === 0) {
        const p = trainer.progress;
        saveCheckpoint(dir, {
          params: trainer.params,
          config: { format: 'longnet-checkpoint', version: 1, model: config(), tokenizer: new ByteTokenizer().toJSON(), training: null },
          optimizer: trainer.optimizer,
          state: { step: p.step, data: p.data, dataContentHash: data.contentHash, tokens: p.tokens, elapsedSeconds: 1, lastValLoss: null, bestValLoss: null, random: { dataSeed: 5 } },
        });
      }
    });
    // steps 3-4 on P = 1 x D = 2 (and then on P = 4 x D = 1) from the checkpoint
    for (const [world, P] of [[2, 1], [4, 4]] as const) {
      const runs = await runRanks(world, async (comm) => {
        const model = new LongNetDecoder(config(), { seed: 99, dtype: 'float64' });
        const trainer = new ParallelTrainer(model, data, opts, groupComms(comm, P));
        const { weights, saveId } = readModelWeights(dir, trainer.params);
        const { state, moments, optimizerStep } = readTrainingState(dir, trainer.params, saveId);
        model.loadState(weights);
        trainer.optimizer.loadState(moments, optimizerStep, 'optimizer');
        trainer.progress = { step: state.step, data: state.data, tokens: state.tokens };
        const losses = [(await trainer.step()).loss, (await trainer.step()).loss];
        return { losses, weights: weightsOf(model) };
      });
      for (const run of runs) {
        run.losses.forEach((l, i) => close(l, straight.losses[i + 2]!, 1e-10, `resumed on ${world}/${P}: step ${i + 3}`));
        for (const [name, w] of straight.weights) {
          const g = run.weights.get(name)!;
          let worst = 0;
          for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(g[i]! - w[i]!));
          assert.ok(worst <= 1e-10, `resumed on ${world}/${P}: ${name} differs by ${worst}`);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('layouts that do not fit are one clear InputError each', () => {
  const run: { device: Device; seqLen: number; batch: number; attention: string } = { device: 'cpu', seqLen: 16, batch: 4, attention: 'dilated' };
  const fails = (r: typeof run, request: { ranks?: number; seqParallel?: number }, env: NodeJS.ProcessEnv, pattern: RegExp): void => {
    assert.throws(() => resolveLayout(r, request, env), (e: unknown) => e instanceof InputError && pattern.test(e.message) && !e.message.includes('\n'));
  };
  assert.deepEqual(resolveLayout(run, { ranks: 4, seqParallel: 2 }, {}), { world: 4, seqParallel: 2, dataParallel: 2, mode: 'in-process' });
  assert.deepEqual(resolveLayout(run, {}, {}), { world: 1, seqParallel: 1, dataParallel: 1, mode: 'single' });
  assert.deepEqual(resolveLayout({ ...run, device: 'cuda' }, { seqParallel: 2 }, { WORLD_SIZE: '4' }),
    { world: 4, seqParallel: 2, dataParallel: 2, mode: 'processes' });
  fails(run, { ranks: 4, seqParallel: 3 }, {}, /--seq-parallel 3 does not divide the 4 ranks/);
  fails(run, { seqParallel: 2 }, {}, /--seq-parallel 2 needs at least 2 ranks, but the job has 1/);
  fails(run, { ranks: 8, seqParallel: 1 }, {}, /--batch 4 .* does not split evenly over 8 data-parallel replicas/);
  fails({ ...run, seqLen: 2 }, { ranks: 4, seqParallel: 4 }, {}, /--seq-len 2 is shorter than --seq-parallel 4/);
  fails({ ...run, attention: 'sparse-fixed' }, { ranks: 2, seqParallel: 2 }, {}, /dilated or dense attention, not sparse-fixed/);
  fails({ ...run, device: 'cuda' }, { ranks: 2 }, {}, /--ranks runs in-process ranks on the CPU/);
  fails(run, { ranks: 2 }, { WORLD_SIZE: '2' }, /on the CPU the ranks of a job run in one process/);
  fails({ ...run, device: 'cuda' }, { seqParallel: 2 }, {}, /needs at least 2 ranks.*longnet launch/);
});

test('a stop request seen by any rank stops every rank (SIGTERM over SIGINT)', async () => {
  const cases: { seen: (StopSignal | null)[]; want: StopSignal | null }[] = [
    { seen: [null, null, null], want: null },
    { seen: [null, 'SIGINT', null], want: 'SIGINT' },
    { seen: ['SIGINT', null, 'SIGTERM'], want: 'SIGTERM' },
  ];
  for (const { seen, want } of cases) {
    const got = await runRanks(seen.length, (comm) => agreeOnStop(comm, seen[comm.rank]!));
    assert.deepEqual(got, seen.map(() => want));
  }
});
