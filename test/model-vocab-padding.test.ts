// A vocabulary padded to a multiple of vocabPadMultiple (aligned head products on a GPU) leaves the model
// the same function: the same logits, loss and gradients as the unpadded model with the same weights,
// padding that stays zero through training, never a padded id generated, and old checkpoints loading.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer } from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import {
  LongNetDecoder, matmulParameterCount, paddedVocabSize, parameterCountOf, presetConfig, validateConfig, type AnyModelConfig, type ModelConfig,
} from '../src/model/index.js';
import * as T from '../src/tensor/index.js';
import { Rng, type Tensor } from '../src/tensor/index.js';
import { saveCheckpoint, type CheckpointConfig } from '../src/train/checkpoint.js';
import { loadModel } from '../src/train/load-model.js';
import { AdamW } from '../src/train/optimizer.js';
import { sampleToken } from '../src/train/sampling.js';
import { assertClose } from './support/gradcheck.js';

const VOCAB = 11;
const D = 8;
const config = (overrides: Partial<ModelConfig> = {}): ModelConfig => presetConfig('tiny', {
  vocabSize: VOCAB, dModel: D, layers: 2, heads: 2, ffnDim: 12,
  attention: { kind: 'dilated', segmentLengths: [3, 6], dilationRates: [1, 2] }, xposScaleBase: 8, ...overrides,
});
const ids = (rng: Rng, shape: number[]): Tensor =>
  T.tensor(Int32Array.from({ length: shape[0]! * shape[1]! }, () => rng.int(VOCAB)), shape, { dtype: 'int32' });

/** The [rows, D] parameters indexed by vocabulary id: the embedding table and the untied head. */
const vocabRowNames = (model: LongNetDecoder): string[] => ['embedding.weight', ...(model.head ? ['head.weight'] : [])];

/** Overwrites a parameter's values. */
function assign(p: Tensor, data: Float32Array | Float64Array): void {
  const src = p.backend.fromArray(data);
  p.backend.assign(p.storage, src);
  p.backend.free(src);
}

test('paddedVocabSize rounds up to vocabPadMultiple; absent means no padding; bad values are named', () => {
  assert.equal(presetConfig('base').vocabPadMultiple, 64);
  assert.equal(paddedVocabSize(presetConfig('base')), 100288);
  assert.equal(paddedVocabSize(presetConfig('tiny')), 320);
  assert.equal(paddedVocabSize(config({ vocabSize: 64 })), 64);
  assert.equal(paddedVocabSize(config({ vocabPadMultiple: 1 })), VOCAB);
  const { vocabPadMultiple: _, ...old } = config();
  assert.equal(paddedVocabSize(old), VOCAB);
  for (const bad of [0, 1.5, -64, '64']) {
    assert.throws(
      () => validateConfig({ ...config(), vocabPadMultiple: bad as number }),
      (e: unknown) => e instanceof InputError && e.message === `model config: vocabPadMultiple = ${bad} is not a positive integer`,
    );
  }
  // parameters count what is allocated; model FLOPs count the real vocabulary (the padding computes nothing used)
  const model = new LongNetDecoder(config());
  assert.equal(model.paddedVocab, 64);
  assert.equal(model.parameterCount(), parameterCountOf(config()));
  assert.equal(parameterCountOf(config()) - parameterCountOf(config({ vocabPadMultiple: 1 })), 2 * (64 - VOCAB) * D);
  assert.equal(matmulParameterCount(config()), matmulParameterCount(config({ vocabPadMultiple: 1 })));
  model.dispose();
});

test('a padded model and the same weights unpadded: same logits, loss and gradients, even with junk in the padding', () => {
  for (const tieEmbeddings of [false, true]) {
    const label = tieEmbeddings ? 'tied' : 'untied';
    const padded = new LongNetDecoder(config({ tieEmbeddings, vocabPadMultiple: 8 }), { seed: 3, dtype: 'float64' });
    const plain = new LongNetDecoder(config({ tieEmbeddings, vocabPadMultiple: 1 }), { seed: 3, dtype: 'float64' });
    assert.equal(padded.paddedVocab, 16);
    const pp = padded.namedParameters();
    const qp = plain.namedParameters();
    // the init draws the real rows alike and leaves the padding zero
    for (const name of vocabRowNames(padded)) {
      const values = pp.get(name)!.toArray();
      assert.deepEqual(pp.get(name)!.shape, [16, D], name);
      assert.deepEqual([...values.subarray(0, VOCAB * D)], [...qp.get(name)!.toArray()], `${label} ${name}: real rows`);
      assert.ok(values.subarray(VOCAB * D).every((v) => v === 0), `${label} ${name}: padding starts at zero`);
      // large values in the padding would dominate any softmax they entered
      const junk = Float64Array.from(values);
      for (let i = VOCAB * D; i < junk.length; i++) junk[i] = 40 + (i % 7);
      assign(pp.get(name)!, junk);
    }
    for (const [name, p] of qp) if (!vocabRowNames(plain).includes(name)) assert.deepEqual([...pp.get(name)!.toArray()], [...p.toArray()], name);

    const rng = new Rng(4);
    const inputs = ids(rng, [2, 9]);
    const targets = ids(rng, [2, 9]);
    const logits = padded.forward(inputs);
    assert.deepEqual(logits.shape, [2, 9, VOCAB], `${label}: public logits are [.., vocabSize]`);
    assertClose(logits.toArray(), plain.forward(inputs).toArray(), 1e-12, `${label} logits`);
    const lossPadded = padded.loss(inputs, targets);
    const lossPlain = plain.loss(inputs, targets);
    assertClose([lossPadded.item()], [lossPlain.item()], 1e-12, `${label} loss`);
    lossPadded.backward();
    lossPlain.backward();
    for (const [name, q] of qp) {
      const g = pp.get(name)!.grad!.toArray();
      const real = vocabRowNames(plain).includes(name) ? g.subarray(0, VOCAB * D) : g;
      assertClose(real, q.grad!.toArray(), 1e-12, `${label} ${name} gradient`);
      if (real !== g) assert.ok(g.subarray(VOCAB * D).every((v) => v === 0), `${label} ${name}: padding gets no gradient`);
    }
    // the cached decode path returns the real vocabulary too
    const cache = padded.createCache(2, 9);
    const stepped = padded.step(inputs, cache);
    assert.deepEqual(stepped.shape, [2, 9, VOCAB]);
    assertClose(stepped.toArray(), logits.toArray(), 1e-10, `${label} cached logits`);
    cache.dispose();
    padded.dispose();
    plain.dispose();
  }
});

test('padding rows stay exactly zero through AdamW training with weight decay', () => {
  for (const tieEmbeddings of [false, true]) {
    const model = new LongNetDecoder(config({ tieEmbeddings }), { seed: 5 });
    const optimizer = new AdamW(model.namedParameters(), { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.1 });
    const rng = new Rng(6);
    const before = model.stateDict();
    for (let step = 0; step < 4; step++) {
      T.tidy(() => model.loss(ids(rng, [2, 7]), ids(rng, [2, 7])).backward());
      optimizer.update(1e-2);
    }
    for (const name of vocabRowNames(model)) {
      const values = model.namedParameters().get(name)!.toArray();
      assert.ok(values.subarray(VOCAB * D).every((v) => v === 0), `${name} (tied ${tieEmbeddings}): padding rows stayed zero`);
      assert.notDeepEqual([...values.subarray(0, VOCAB * D)], [...before.get(name)!.subarray(0, VOCAB * D)], `${name}: real rows trained`);
      const { m, v } = optimizer.moments.get(name)!;
      assert.ok(m.toArray().subarray(VOCAB * D).every((x) => x === 0) && v.toArray().subarray(VOCAB * D).every((x) => x === 0),
        `${name}: padding moments stayed zero`);
    }
    optimizer.dispose();
    model.dispose();
  }
});

test('generation never emits a padded id, whatever the padding holds', () => {
  const model = new LongNetDecoder(config(), { seed: 7 });
  // padding that would win every argmax and nearly every draw if it reached the logits
  const head = model.head!;
  const junk = Float32Array.from(head.weight.toArray());
  for (let i = VOCAB * D; i < junk.length; i++) junk[i] = 100;
  assign(head.weight, junk);
  const rng = new Rng(8);
  for (const temperature of [0, 1.5]) {
    const cache = model.createCache(1, 41);
    let input = [1, 2, 3];
    for (let i = 0; i < 38; i++) {
      const logits = model.step(T.tensor(Int32Array.from(input), [1, input.length], { dtype: 'int32' }), cache);
      assert.equal(logits.shape[2], VOCAB);
      const all = logits.toArray();
      const next = sampleToken(all.subarray(all.length - VOCAB), { temperature }, rng);
      assert.ok(next >= 0 && next < VOCAB, `generated id ${next} is outside the real vocabulary [0, ${VOCAB})`);
      input = [next];
    }
    cache.dispose();
  }
  model.dispose();
});

test('an input id in the padding is out of range, as it was before the padding', () => {
  const model = new LongNetDecoder(config(), { seed: 2 });
  assert.equal(model.forward(T.tensor(Int32Array.from([0, VOCAB - 1]), [1, 2], { dtype: 'int32' })).shape[2], VOCAB);
  for (const id of [VOCAB, 63]) {
    assert.throws(() => model.forward(T.tensor(Int32Array.from([1, id]), [1, 2], { dtype: 'int32' })),
      { name: 'RangeError', message: `embedding: index ${id} is outside [0, ${VOCAB})` });
  }
  const table = T.zeros([4, 2]);
  const at = T.tensor(Int32Array.from([3]), [1], { dtype: 'int32' });
  assert.throws(() => T.embedding(table, at, { validRows: 3 }), /embedding: index 3 is outside \[0, 3\)/);
  assert.throws(() => T.embedding(table, at, { validRows: 5 }),
    { name: 'RangeError', message: "embedding: validRows = 5 is not an integer in [0, 4] (the table's rows)" });
  model.dispose();
});

test('checkpoints: a padded one round-trips; one without vocabPadMultiple loads in the old, unpadded layout', () => {
  const work = mkdtempSync(join(tmpdir(), 'longnet-vocab-pad-'));
  const tokenizer = new ByteTokenizer();
  const save = (dir: string, model: LongNetDecoder, modelConfig: AnyModelConfig): void => {
    const checkpoint: CheckpointConfig = { format: 'longnet-checkpoint', version: 1, model: modelConfig, tokenizer: tokenizer.toJSON(), training: null };
    saveCheckpoint(dir, { params: model.namedParameters(), config: checkpoint });
  };
  const tokens = T.tensor(Int32Array.from([256, 102, 117, 110, 99]), [1, 5], { dtype: 'int32' });
  try {
    const paddedConfig = presetConfig('tiny', { dModel: 16, layers: 1, heads: 2, ffnDim: 32 });
    const padded = new LongNetDecoder(paddedConfig, { seed: 1 });
    save(join(work, 'padded'), padded, paddedConfig);
    const loaded = loadModel(join(work, 'padded'), 'cpu').model;
    assert.equal(loaded.paddedVocab, 320);
    assert.deepEqual([...loaded.forward(tokens).toArray()], [...padded.forward(tokens).toArray()]);

    // a config.json written before the field existed: [257, 16] tables, no padding
    const { vocabPadMultiple: _, ...oldConfig } = paddedConfig;
    const old = new LongNetDecoder(oldConfig, { seed: 1 });
    save(join(work, 'old'), old, oldConfig);
    assert.ok(!('vocabPadMultiple' in JSON.parse(readFileSync(join(work, 'old', 'config.json'), 'utf8')).model));
    const reloaded = loadModel(join(work, 'old'), 'cpu').model;
    assert.equal(reloaded.paddedVocab, 257);
    assert.deepEqual(reloaded.namedParameters().get('head.weight')!.shape, [257, 16]);
    assert.deepEqual([...reloaded.forward(tokens).toArray()], [...old.forward(tokens).toArray()]);
    // the same weights as the padded model: the same function
    assertClose(reloaded.forward(tokens).toArray(), padded.forward(tokens).toArray(), 1e-6, 'old layout vs padded');
    for (const m of [padded, loaded, old, reloaded]) m.dispose();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
