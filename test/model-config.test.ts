import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../src/errors.js';
import {
  LongNetDecoder, PRESETS, attentionFlops, modelFlopsPerToken, parameterCountOf, presetConfig, scheduleNotes,
  validateConfig, type ModelConfig,
} from '../src/model/decoder.js';
import { matmulParameterCount } from '../src/model/flops.js';

const small = (overrides: Partial<ModelConfig> = {}): ModelConfig => presetConfig('tiny', {
  vocabSize: 11, dModel: 16, layers: 2, heads: 4, ffnDim: 24,
  attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1, 2] }, ...overrides,
});

test('presets: names, shapes and vocabularies', () => {
  assert.deepEqual([...PRESETS], ['tiny', 'base', '350m', '760m', '2.7b']);
  const expected: Record<string, [number, number, number, number]> = {
    base: [12, 768, 12, 3072], '350m': [24, 1024, 16, 4096], '760m': [24, 1536, 16, 6144], '2.7b': [32, 2560, 32, 10240],
  };
  for (const [name, [layers, dModel, heads, ffnDim]] of Object.entries(expected)) {
    const c = presetConfig(name);
    assert.deepEqual([c.layers, c.dModel, c.heads, c.ffnDim], [layers, dModel, heads, ffnDim], name);
    assert.deepEqual(c.attention, { kind: 'dilated', segmentLengths: [2048, 4096, 8192, 16384, 32768], dilationRates: [1, 2, 4, 6, 12] });
    assert.equal(c.vocabSize, 100277);
  }
  assert.equal(presetConfig('tiny').vocabSize, 257);
  assert.equal(presetConfig('base', { vocabSize: 50257 }).vocabSize, 50257);
  // presets are fresh copies
  presetConfig('base').layers = 99;
  assert.equal(presetConfig('base').layers, 12);
  assert.throws(() => presetConfig('huge'), (e: unknown) => e instanceof InputError && /unknown model preset 'huge'/.test(e.message));
});

test('the parameter formula counts what a model allocates', () => {
  for (const c of [
    small(), small({ tieEmbeddings: true }), small({ attention: { kind: 'dense' } }),
    small({ layers: 3, dModel: 24, heads: 2, ffnDim: 40, vocabSize: 7 }),
  ]) {
    const model = new LongNetDecoder(c);
    assert.equal(model.parameterCount(), parameterCountOf(c), JSON.stringify(c));
    model.dispose();
  }
});

test('preset sizes are near the paper\'s 125M / 350M / 760M / 2.7B with a GPT-2 sized tied vocabulary', (t) => {
  const paper: Record<string, number> = { base: 125e6, '350m': 350e6, '760m': 760e6, '2.7b': 2.7e9 };
  for (const name of PRESETS) {
    const own = parameterCountOf(presetConfig(name));
    const gpt2 = parameterCountOf(presetConfig(name, { vocabSize: 50257, tieEmbeddings: true }));
    t.diagnostic(`${name}: ${own} parameters as preset (vocab ${presetConfig(name).vocabSize}, untied); ${gpt2} with vocab 50257 tied`);
    if (name in paper) assert.ok(Math.abs(gpt2 / paper[name]! - 1) < 0.03, `${name}: ${gpt2} vs ${paper[name]}`);
  }
  // base by hand: per block 4d^2 + 2df + 11d + 3f (projections with biases, 4 norms); embedding; final norm
  const block = 4 * 768 ** 2 + 2 * 768 * 3072 + 11 * 768 + 3 * 3072;
  const gpt2Base = presetConfig('base', { vocabSize: 50257, tieEmbeddings: true, vocabPadMultiple: 1 });
  assert.equal(parameterCountOf(gpt2Base), 12 * block + 2 * 768 + 50257 * 768);
  // the presets pad the vocabulary to a multiple of 64: 100,277 rows become 100,288, all allocated
  assert.equal(parameterCountOf(presetConfig('base')), 12 * block + 2 * 768 + 2 * 100288 * 768);
});

test('validateConfig names what is wrong', () => {
  const bad: [Partial<ModelConfig>, RegExp][] = [
    [{ heads: 3 }, /heads = 3 does not divide dModel = 16/],
    [{ dModel: 12, heads: 4 }, /head dim .* must be even/],
    [{ vocabSize: 0 }, /vocabSize = 0 is not a positive integer/],
    [{ layers: 1.5 }, /layers = 1.5/],
    [{ ffnDim: -1 }, /ffnDim/],
    [{ xposScaleBase: 0 }, /xposScaleBase/],
    [{ layerNormEps: Number.NaN }, /layerNormEps/],
    [{ attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1] } }, /attention\.segmentLengths has 2 entries but dilationRates has 1/],
    [{ attention: { kind: 'dilated', segmentLengths: [4], dilationRates: [8] } }, /attention\.dilationRates\[0\] = 8 is larger than segmentLengths\[0\] = 4/],
    [{ attention: { kind: 'dilated', segmentLengths: [], dilationRates: [] } }, /attention\.segmentLengths: the pattern list is empty/],
    [{ attention: { kind: 'dilated', segmentLengths: [0], dilationRates: [1] } }, /segmentLengths\[0\] = 0/],
    [{ attention: { kind: 'sparse' } as unknown as ModelConfig['attention'] }, /attention\.kind = sparse/],
  ];
  for (const [overrides, message] of bad) {
    const config = { ...small(), ...overrides };
    assert.throws(() => validateConfig(config), (e: unknown) => e instanceof InputError && message.test(e.message), JSON.stringify(overrides));
    assert.throws(() => new LongNetDecoder(config), InputError);
  }
  validateConfig(small(), 1);
  validateConfig(small(), 3); // shorter than every segment: clipped, allowed
  assert.throws(() => validateConfig(small(), 0), /sequence length 0/);
  assert.throws(() => validateConfig(small(), 2.5), /sequence length 2.5/);
  assert.throws(() => validateConfig(small(), 60000), /past XPos's float32-safe 56657/);
  validateConfig(small({ xposScaleBase: 2048 }), 60000);
  assert.deepEqual(scheduleNotes(small(), 6), ['pattern 1 (w=8, r=2) is clipped to the sequence length 6']);
  assert.deepEqual(scheduleNotes(presetConfig('base'), 32768), []);
  assert.deepEqual(scheduleNotes(small({ heads: 2, dModel: 16, attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1, 4] } }), 8),
    ['pattern 1 (w=8, r=4) has more offsets than the 2 heads cover']);
});

test('attention FLOPs follow docs/ATTENTION.md and modelFlopsPerToken adds 6 per weight', () => {
  const c = small({ layers: 3, heads: 2, dModel: 16 }); // D = 8, patterns (4, 1), (8, 2)
  const n = 32;
  const perLayer = 2 * (n / 4) * 2 * 4 ** 2 * 8 + 2 * (n / 8) * 2 * (8 / 2) ** 2 * 8;
  assert.equal(attentionFlops(c, n), 3 * perLayer);
  assert.equal(attentionFlops(c, n, false), 6 * perLayer);
  // clipped to w' = min(w, N): at N = 6, (4, 1) stays and (8, 2) becomes (6, 2)
  assert.equal(attentionFlops(c, 6), 3 * (2 * (6 / 4) * 2 * 16 * 8 + 2 * 1 * 2 * 9 * 8));
  // linear in N once N passes every segment; quadratic for dense
  assert.equal(attentionFlops(c, 2 * n), 2 * attentionFlops(c, n));
  const dense = small({ attention: { kind: 'dense' }, heads: 2 });
  assert.equal(attentionFlops(dense, n), 2 * 2 * 2 * n * n * 8);
  assert.equal(attentionFlops(dense, 2 * n), 4 * attentionFlops(dense, n));
  const weights = 2 * (4 * 16 * 16 + 2 * 16 * 24) + 11 * 16;
  assert.equal(matmulParameterCount(dense), weights);
  assert.equal(modelFlopsPerToken(dense, n), 6 * weights + (3.5 * attentionFlops(dense, n)) / n);
  // the paper schedule at 32K: every pattern is whole
  const base = presetConfig('base');
  const expected = 12 * [[2048, 1], [4096, 2], [8192, 4], [16384, 6], [32768, 12]]
    .reduce((s, [w, r]) => s + 12 * (32768 / w!) * 2 * (w! / r!) ** 2 * 64, 0);
  assert.equal(attentionFlops(base, 32768), expected);
});
