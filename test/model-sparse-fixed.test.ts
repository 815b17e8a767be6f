import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sparseFixedFlops } from '../src/attention/sparse-fixed.js';
import { ByteTokenizer } from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import {
  attentionFlops, attentionPatterns, LongNetDecoder, parameterCountOf, scheduleNotes, validateConfig, type AnyModelConfig, type ModelAttention,
} from '../src/model/index.js';
import { Rng, tensor, type Tensor } from '../src/tensor/index.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { loadModel } from '../src/train/load-model.js';
import { runTraining } from '../src/train/run.js';
import { assertClose } from './support/gradcheck.js';

const config = (attention: ModelAttention): AnyModelConfig => ({
  vocabSize: 257, dModel: 16, layers: 2, heads: 2, ffnDim: 32, attention, xposScaleBase: 512, layerNormEps: 1e-5, tieEmbeddings: false,
});

const tokens = (rng: Rng, n: number): Tensor => tensor(Int32Array.from({ length: n }, () => rng.int(257)), [1, n], { dtype: 'int32' });

function expectInputError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof InputError && pattern.test(e.message));
}

test('the sparse-fixed attention kind is a valid model config; bad strides and summaries are named', () => {
  validateConfig(config({ kind: 'sparse-fixed', stride: 8, summary: 2 }), 64);
  validateConfig(config({ kind: 'sparse-fixed', stride: 1, summary: 1 }));
  expectInputError(() => validateConfig(config({ kind: 'sparse-fixed', stride: 0, summary: 1 })), /attention\.stride = 0 is not a positive integer/);
  expectInputError(() => validateConfig(config({ kind: 'sparse-fixed', stride: 4, summary: 1.5 })), /attention\.summary = 1\.5 is not a positive integer/);
  expectInputError(() => validateConfig(config({ kind: 'sparse-fixed', stride: 4, summary: 5 })), /summary = 5 is larger than attention\.stride = 4/);
  expectInputError(() => validateConfig(config({ kind: 'sparse' } as unknown as ModelAttention)), /attention\.kind = sparse is not 'dilated', 'dense' or 'sparse-fixed'/);
  expectInputError(() => attentionPatterns(config({ kind: 'sparse-fixed', stride: 4, summary: 1 }), 16), /not a schedule of dilated patterns/);
  assert.deepEqual(scheduleNotes(config({ kind: 'sparse-fixed', stride: 8, summary: 2 }), 64), []);
  assert.match(scheduleNotes(config({ kind: 'sparse-fixed', stride: 64, summary: 2 }), 64)[0]!, /covers the whole sequence/);
  // the attention kind changes no parameter
  assert.equal(parameterCountOf(config({ kind: 'sparse-fixed', stride: 8, summary: 2 })), parameterCountOf(config({ kind: 'dense' })));
});

test('a stride covering the sequence is dense attention: the same logits as the vanilla model of the same seed', () => {
  const rng = new Rng(1);
  const input = tokens(rng, 12);
  const dense = new LongNetDecoder(config({ kind: 'dense' }), { seed: 4, dtype: 'float64' });
  const sparse = new LongNetDecoder(config({ kind: 'sparse-fixed', stride: 16, summary: 3 }), { seed: 4, dtype: 'float64' });
  assertClose(sparse.forward(input).toArray(), dense.forward(input).toArray(), 1e-12, 'logits');
});

test('a sparse-fixed decoder is causal and trains: gradients reach every parameter', () => {
  const rng = new Rng(2);
  const n = 20;
  const model = new LongNetDecoder(config({ kind: 'sparse-fixed', stride: 4, summary: 1 }), { seed: 5, dtype: 'float64' });
  const a = tokens(rng, n);
  const data = a.toArray() as Int32Array;
  const changed = Int32Array.from(data);
  changed[13] = (changed[13]! + 1) % 257;
  const la = model.forward(a).toArray();
  const lb = model.forward(tensor(changed, [1, n], { dtype: 'int32' })).toArray();
  const cut = 13 * 257;
  assertClose(lb.slice(0, cut), la.slice(0, cut), 0, 'logits before the changed token');
  assert.ok([...la.slice(cut)].some((v, i) => v !== lb[cut + i]), 'the changed token changes later logits');
  const targets = tensor(Int32Array.from({ length: n }, () => rng.int(257)), [1, n], { dtype: 'int32' });
  model.loss(a, targets).backward();
  for (const [name, p] of model.namedParameters()) {
    assert.ok(p.grad !== null, `${name} has a gradient`);
    const g = p.grad.toArray();
    assert.ok([...g].every(Number.isFinite), `${name} gradient is finite`);
  }
  // the summary keys matter: another summary gives other logits past the first block
  const other = new LongNetDecoder(config({ kind: 'sparse-fixed', stride: 4, summary: 2 }), { seed: 5, dtype: 'float64' });
  const lo = other.forward(a).toArray();
  assertClose(lo.slice(0, 4 * 257), la.slice(0, 4 * 257), 1e-12, 'first block');
  assert.ok([...lo.slice(4 * 257)].some((v, i) => Math.abs(v - la[4 * 257 + i]!) > 1e-9));
});

test('attention FLOPs of a sparse-fixed model are its layers times sparseFixedFlops', () => {
  const c = config({ kind: 'sparse-fixed', stride: 64, summary: 16 });
  assert.equal(attentionFlops(c, 8192), 2 * sparseFixedFlops(8192, 2, 8, 64, 16));
  // summary = stride is dense attention's count
  assert.equal(attentionFlops(config({ kind: 'sparse-fixed', stride: 32, summary: 32 }), 256), attentionFlops(config({ kind: 'dense' }), 256));
});

test('cached decoding refuses sparse-fixed with a clear error', () => {
  const model = new LongNetDecoder(config({ kind: 'sparse-fixed', stride: 4, summary: 1 }), { seed: 1 });
  expectInputError(() => model.createCache(1), /cached decoding .* not sparse-fixed/);
});

test('the attention kind is saved with the checkpoint: a reloaded model gives the same logits', () => {
  const dir = mkdtempSync(join(tmpdir(), 'longnet-sparse-ckpt-'));
  try {
    const c = config({ kind: 'sparse-fixed', stride: 4, summary: 2 });
    const model = new LongNetDecoder(c, { seed: 7 });
    saveCheckpoint(dir, {
      params: model.namedParameters(),
      config: { format: 'longnet-checkpoint', version: 1, model: c, tokenizer: new ByteTokenizer().toJSON(), training: null },
    });
    const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model: AnyModelConfig };
    assert.deepEqual(saved.model.attention, { kind: 'sparse-fixed', stride: 4, summary: 2 });
    const loaded = loadModel(dir, 'cpu');
    assert.deepEqual(loaded.model.config.attention, c.attention);
    const input = tokens(new Rng(4), 11);
    assertClose(loaded.model.forward(input).toArray(), model.forward(input).toArray(), 0, 'logits');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('runTraining trains a given model config and records its attention kind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longnet-sparse-train-'));
  try {
    const corpus = join(dir, 'corpus.js');
    writeFileSync(corpus, Array.from({ length: 200 }, (_, i) => `const v${i} = ${i} * 2; // value ${i}`).join('\n'));
    const out = join(dir, 'run');
    const c = config({ kind: 'sparse-fixed', stride: 8, summary: 2 });
    const result = await runTraining(
      { data: corpus, steps: 2, seqLen: 32, batch: 2, evalSequences: 1 },
      { out, resume: false, overwrite: false, model: c, log: () => {}, progress: { write: () => true } },
    );
    assert.equal(result.step, 2);
    const saved = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { model: AnyModelConfig; training: { attention: string } };
    assert.deepEqual(saved.model, c);
    assert.equal(saved.training.attention, 'sparse-fixed');
    await assert.rejects(
      runTraining({ data: corpus, steps: 1, seqLen: 32 }, {
        out: join(dir, 'other'), resume: false, overwrite: false, model: { ...c, vocabSize: 300 }, log: () => {}, progress: { write: () => true },
      }),
      (e: unknown) => e instanceof InputError && /vocabSize 300 is not the byte tokenizer's 257/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
