import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../src/errors.js';
import * as T from '../src/tensor/index.js';
import { Rng } from '../src/tensor/index.js';
import { LongNetDecoder, presetConfig, type ModelConfig } from '../src/model/decoder.js';
import { Linear, LayerNorm, Embedding, FeedForward, MultiheadDilatedAttention, magnetoGamma, xavierStd } from '../src/model/index.js';
import { assertClose } from './support/gradcheck.js';

// the unpadded layout (vocabulary padding has its own tests: model-vocab-padding.test.ts)
const config = (overrides: Partial<ModelConfig> = {}): ModelConfig => presetConfig('tiny', {
  vocabSize: 11, dModel: 16, layers: 1, heads: 4, ffnDim: 24,
  attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1, 2] }, vocabPadMultiple: 1, ...overrides,
});
const ids = (values: number[], shape: number[]) => T.tensor(Int32Array.from(values), shape, { dtype: 'int32' });

test('parameters have dotted names in registration order', () => {
  const model = new LongNetDecoder(config());
  const block = [
    'attentionNorm.weight', 'attentionNorm.bias',
    'attention.qProj.weight', 'attention.qProj.bias', 'attention.kProj.weight', 'attention.kProj.bias',
    'attention.vProj.weight', 'attention.vProj.bias', 'attention.innerNorm.weight', 'attention.innerNorm.bias',
    'attention.outProj.weight', 'attention.outProj.bias',
    'ffnNorm.weight', 'ffnNorm.bias', 'ffn.fc1.weight', 'ffn.fc1.bias', 'ffn.norm.weight', 'ffn.norm.bias',
    'ffn.fc2.weight', 'ffn.fc2.bias',
  ].map((n) => `blocks.0.${n}`);
  assert.deepEqual([...model.namedParameters().keys()], ['embedding.weight', ...block, 'finalNorm.weight', 'finalNorm.bias', 'head.weight']);
  const params = model.namedParameters();
  assert.deepEqual(params.get('blocks.0.ffn.fc1.weight')!.shape, [24, 16]);
  assert.deepEqual(params.get('head.weight')!.shape, [11, 16]);
  assert.ok([...params.values()].every((t) => t.requiresGrad && t.dtype === 'float32' && t.device === 'cpu'));
  const tied = new LongNetDecoder(config({ tieEmbeddings: true, layers: 2 }));
  assert.ok(!tied.namedParameters().has('head.weight'));
  assert.ok(tied.namedParameters().has('blocks.1.attention.outProj.weight'));
  assert.deepEqual(tied.forward(ids([1, 2, 3], [1, 3])).shape, [1, 3, 11]);
  const f64 = new LongNetDecoder(config(), { dtype: 'float64' });
  assert.ok(f64.parameters().every((t) => t.dtype === 'float64'));
  model.dispose();
  tied.dispose();
  f64.dispose();
});

test('layers compute what they say', () => {
  const lin = new Linear(3, 2, { dtype: 'float64', rng: new Rng(1) });
  const x = T.randn([2, 4, 3], { dtype: 'float64', seed: 2 });
  const y = lin.forward(x);
  assert.deepEqual(y.shape, [2, 4, 2]);
  const w = lin.weight.toArray();
  const xs = x.toArray();
  const ys = y.toArray();
  for (let r = 0; r < 8; r++) for (let o = 0; o < 2; o++) {
    let s = 0;
    for (let i = 0; i < 3; i++) s += xs[r * 3 + i]! * w[o * 3 + i]!;
    assert.ok(Math.abs(ys[r * 2 + o]! - s) < 1e-12);
  }
  assert.throws(() => lin.forward(T.zeros([2, 4], { dtype: 'float64' })), InputError);
  assert.equal(new Linear(3, 2, { bias: false }).parameterCount(), 6);
  assert.equal(new LayerNorm(5, { affine: false }).parameterCount(), 0);
  assert.throws(() => new LayerNorm(5, { eps: 0 }), /eps/);
  const emb = new Embedding(7, 4);
  assert.deepEqual(emb.forward(ids([0, 6], [2])).shape, [2, 4]);
  assert.throws(() => emb.forward(T.zeros([2])), /int32/);
  assert.equal(new FeedForward(8, 12).parameterCount(), 8 * 12 + 12 + 12 * 8 + 8 + 2 * 12);
  // a drop-in for multi-head attention: [B, N, dModel] in and out
  const mha = new MultiheadDilatedAttention(16, 4, { attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1, 2] } });
  assert.deepEqual(mha.forward(T.randn([2, 10, 16], { seed: 3 })).shape, [2, 10, 16]);
  assert.throws(() => new MultiheadDilatedAttention(16, 3), /heads = 3 does not divide/);
});

test('MAGNETO init: W_v, W_o, W_1, W_2 scaled by sqrt(log 2L) over Xavier normal, the rest not', () => {
  const layers = 6;
  const c = config({ layers, dModel: 64, heads: 4, ffnDim: 256, vocabSize: 50 });
  const model = new LongNetDecoder(c, { seed: 5 });
  const gamma = magnetoGamma(layers);
  assert.ok(Math.abs(gamma - Math.sqrt(Math.log(12))) < 1e-15);
  const std = (name: string): number => {
    const a = model.namedParameters().get(name)!.toArray();
    let s = 0;
    for (const v of a) s += v * v;
    return Math.sqrt(s / a.length);
  };
  const expected: [string, number][] = [
    ['attention.qProj.weight', xavierStd(64, 64)],
    ['attention.kProj.weight', xavierStd(64, 64)],
    ['attention.vProj.weight', xavierStd(64, 64) * gamma],
    ['attention.outProj.weight', xavierStd(64, 64) * gamma],
    ['ffn.fc1.weight', xavierStd(64, 256) * gamma],
    ['ffn.fc2.weight', xavierStd(256, 64) * gamma],
  ];
  for (let layer = 0; layer < layers; layer += 5) {
    for (const [name, s] of expected) {
      const got = std(`blocks.${layer}.${name}`);
      assert.ok(Math.abs(got / s - 1) < 0.05, `${name}: std ${got}, expected ${s}`);
    }
  }
  assert.ok(Math.abs(std('embedding.weight') / 64 ** -0.5 - 1) < 0.05);
  assert.ok(Math.abs(std('head.weight') / 64 ** -0.5 - 1) < 0.05);
  assert.equal(std('blocks.0.attention.qProj.bias'), 0);
  assert.deepEqual([...model.namedParameters().get('blocks.0.ffn.norm.weight')!.toArray()], new Array(256).fill(1));
  model.dispose();
});

test('the same seed gives the same model; stateDict and loadState round-trip', () => {
  const a = new LongNetDecoder(config(), { seed: 1 });
  const b = new LongNetDecoder(config(), { seed: 1 });
  const c = new LongNetDecoder(config(), { seed: 2, dtype: 'float64' });
  const tokens = ids([1, 5, 2, 9, 3, 3], [2, 3]);
  assert.deepEqual([...a.forward(tokens).toArray()], [...b.forward(tokens).toArray()]);
  assert.notDeepEqual([...a.forward(tokens).toArray()], [...c.forward(tokens).toArray()]);
  c.loadState(a.stateDict()); // float32 values into a float64 model
  assertClose(c.forward(tokens).toArray(), a.forward(tokens).toArray(), 1e-5, 'loaded logits');
  // with shapes, as from safetensors
  const withShapes = new Map([...a.namedParameters()].map(([n, t]) => [n, { data: t.toArray() as Float32Array, shape: t.shape }]));
  b.loadState(withShapes);
  [a, b, c].forEach((m) => m.dispose());
});

test('loadState rejects missing, unexpected and mis-shaped parameters and writes nothing', () => {
  const model = new LongNetDecoder(config());
  const before = model.stateDict();
  const state = (edit: (m: Map<string, Float32Array | { data: Float32Array; shape: number[] }>) => void) => {
    const m = new Map<string, Float32Array | { data: Float32Array; shape: number[] }>(
      [...before].map(([k, v]) => [k, new Float32Array(v.length).fill(0.5)]),
    );
    edit(m);
    return m;
  };
  const cases: [Parameters<typeof state>[0], RegExp][] = [
    [(m) => m.delete('blocks.0.attention.qProj.weight'), /missing parameter 'blocks\.0\.attention\.qProj\.weight' \(shape \[16, 16\]\)/],
    [(m) => m.set('blocks.7.ffn.fc1.weight', new Float32Array(4)), /unexpected parameter 'blocks\.7\.ffn\.fc1\.weight'/],
    [(m) => m.set('head.weight', new Float32Array(10)), /parameter 'head\.weight' has 10 values but the model's shape \[11, 16\] holds 176/],
    [(m) => m.set('head.weight', { data: new Float32Array(176), shape: [16, 11] }), /parameter 'head\.weight' has shape \[16, 11\] but the model's is \[11, 16\]/],
    [(m) => m.set('head.weight', [1, 2] as unknown as Float32Array), /'head\.weight' is not a Float32Array/],
  ];
  for (const [edit, message] of cases) {
    assert.throws(() => model.loadState(state(edit)), (e: unknown) => e instanceof InputError && message.test(e.message), String(message));
  }
  for (const [name, values] of model.stateDict()) assert.deepEqual(values, before.get(name), `${name} was written`);
  model.loadState(state(() => {}));
  assert.ok(model.stateDict().get('head.weight')!.every((v) => v === 0.5));
  model.dispose();
});

test('zeroGrad and dispose release gradients and parameters', () => {
  const model = new LongNetDecoder(config());
  const loss = model.loss(ids([1, 2, 3, 4], [1, 4]), ids([2, 3, 4, 5], [1, 4]));
  loss.backward();
  assert.ok(model.parameters().every((t) => t.grad !== null));
  model.zeroGrad();
  assert.ok(model.parameters().every((t) => t.grad === null));
  model.dispose();
  assert.ok(model.parameters().every((t) => t.isDisposed));
});
