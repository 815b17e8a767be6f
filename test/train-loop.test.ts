import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer, tokenDatasetFromDocuments, type TokenDataset } from '../src/data/index.js';
import { LongNetDecoder, presetConfig, type ModelConfig } from '../src/model/index.js';
import { add, crossEntropy, embedding, keep, randn, type Tensor } from '../src/tensor/index.js';
import { InputError } from '../src/errors.js';
import { readModelWeights, readTrainingState, saveCheckpoint } from '../src/train/checkpoint.js';
import { evaluateLoss, Trainer, type TrainableModel, type TrainerOptions } from '../src/train/trainer.js';

const TEXT = Array.from({ length: 40 }, (_, i) =>
  `function f${i}(a, b) {\n  // adds ${i} to the sum of a and b\n  return a + b + ${i};\n}\n`);

async function corpus(): Promise<TokenDataset> {
  return tokenDatasetFromDocuments(TEXT, new ByteTokenizer(), { valFraction: 0.1 });
}

/** A bigram model in float64: logits = table[token] + bias. Small, exact, and a real language model. */
class Bigram implements TrainableModel {
  readonly table = keep(randn([257, 257], { dtype: 'float64', seed: 3, std: 0.1, requiresGrad: true }));
  readonly bias = keep(randn([257], { dtype: 'float64', seed: 4, std: 0.1, requiresGrad: true }));
  namedParameters(): Map<string, Tensor> {
    return new Map([['table', this.table], ['bias', this.bias]]);
  }
  loss(inputs: Tensor, targets: Tensor): Tensor {
    return crossEntropy(add(embedding(this.table, inputs), this.bias), targets);
  }
}

function options(batch: number, accumulate: number, steps = 6): TrainerOptions {
  return {
    seqLen: 16, batch, accumulate, schedule: { lr: 1e-2, totalSteps: steps, warmup: 2 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 5, device: 'cpu',
  };
}

test('gradient accumulation over K micro-batches equals one batch K times larger', async () => {
  const data = await corpus();
  const results = [[4, 1], [2, 2], [1, 4]].map(([batch, accumulate]) => {
    const model = new Bigram();
    const trainer = new Trainer(model, data, options(batch!, accumulate!));
    const losses = [0, 1, 2].map(() => trainer.step().loss);
    return { losses, table: model.table.toArray(), tokens: trainer.progress.tokens };
  });
  for (const r of results.slice(1)) {
    assert.equal(r.tokens, results[0]!.tokens);
    r.losses.forEach((l, i) => assert.ok(Math.abs(l - results[0]!.losses[i]!) < 1e-12, `loss ${i}: ${l} vs ${results[0]!.losses[i]}`));
    let worst = 0;
    r.table.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - results[0]!.table[i]!))));
    assert.ok(worst < 1e-12, `parameters differ by ${worst}`);
  }
});

test('evaluateLoss is the token-weighted mean loss over the validation sequences', async () => {
  const data = await corpus();
  const model = new Bigram();
  const seqLen = 16;
  const all = evaluateLoss(model, data, seqLen, { batchSize: 3, device: 'cpu' });
  // the same one sequence at a time
  let sum = 0;
  let n = 0;
  for (const tokens of data.validationBatches(seqLen, { batchSize: 1 })) {
    sum += evaluateLoss(model, { validationBatches: () => [tokens][Symbol.iterator]() } as unknown as TokenDataset, seqLen, { batchSize: 1, device: 'cpu' });
    n++;
  }
  assert.ok(n > 1);
  assert.ok(Math.abs(all - sum / n) < 1e-12);
});

function smallConfig(): ModelConfig {
  return presetConfig('tiny', {
    dModel: 16, layers: 2, heads: 2, ffnDim: 32, vocabSize: 257,
    attention: { kind: 'dilated', segmentLengths: [4, 8, 16], dilationRates: [1, 2, 2] },
  });
}

test('a run saved and resumed from disk continues with bit-identical losses and weights (float64)', async () => {
  const data = await corpus();
  const dir = mkdtempSync(join(tmpdir(), 'longnet-resume-'));
  try {
    const make = (): { model: LongNetDecoder; trainer: Trainer } => {
      const model = new LongNetDecoder(smallConfig(), { seed: 9, dtype: 'float64' });
      return { model, trainer: new Trainer(model, data, options(2, 2)) };
    };
    const straight = make();
    const want = Array.from({ length: 6 }, () => straight.trainer.step().loss);

    const first = make();
    const got = Array.from({ length: 3 }, () => first.trainer.step().loss);
    const p = first.trainer.progress;
    saveCheckpoint(dir, {
      params: first.trainer.params,
      config: { format: 'longnet-checkpoint', version: 1, model: smallConfig(), tokenizer: new ByteTokenizer().toJSON(), training: null },
      optimizer: first.trainer.optimizer,
      state: { step: p.step, data: p.data, dataContentHash: data.contentHash, tokens: p.tokens, elapsedSeconds: 1, lastValLoss: null, bestValLoss: null, random: { dataSeed: 5 } },
    });

    const second = make();
    const { weights, saveId } = readModelWeights(dir, second.trainer.params);
    const { state, moments, optimizerStep } = readTrainingState(dir, second.trainer.params, saveId);
    second.model.loadState(weights);
    second.trainer.optimizer.loadState(moments, optimizerStep, 'optimizer');
    second.trainer.progress = { step: state.step, data: state.data, tokens: state.tokens };
    got.push(...Array.from({ length: 3 }, () => second.trainer.step().loss));

    assert.deepEqual(got, want);
    const a = straight.model.stateDict();
    const b = second.model.stateDict();
    for (const [name, values] of a) assert.deepEqual([...b.get(name)!], [...values], name);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a step whose loss or gradient norm is not finite is refused: an error naming the step, and no parameter or count changed', async () => {
  const data = await corpus();
  for (const poison of ['table', 'bias'] as const) {
    const model = new Bigram();
    const trainer = new Trainer(model, data, options(2, 2));
    trainer.step();
    // a NaN weight that every batch reads (the space's row of the table; a bias): the loss is NaN
    const values = model[poison].toArray();
    values[poison === 'table' ? 32 * 257 : 0] = NaN;
    const p = model[poison];
    p.backend.assign(p.storage, p.backend.fromArray(values));
    const before = new Map([...model.namedParameters()].map(([name, t]) => [name, t.toArray().slice()]));
    const m = trainer.optimizer.moments.get(poison)!.m.toArray().slice();
    assert.throws(() => trainer.step(), (e: unknown) => e instanceof InputError && /training diverged at step 2/.test(e.message));
    assert.equal(trainer.optimizer.step, 1, 'the refused update is not counted');
    assert.equal(trainer.progress.step, 1);
    for (const [name, t] of model.namedParameters()) assert.deepEqual(t.toArray(), before.get(name)!, `${name} unchanged`);
    assert.deepEqual(trainer.optimizer.moments.get(poison)!.m.toArray(), m, 'moments unchanged');
  }
});
