import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../src/errors.js';
import * as T from '../src/tensor/index.js';
import { Rng, type Tensor } from '../src/tensor/index.js';
import { LongNetDecoder, presetConfig, type AttentionSpec, type ModelConfig } from '../src/model/decoder.js';
import { assertClose } from './support/gradcheck.js';

const VOCAB = 13;
const config = (attention: AttentionSpec, overrides: Partial<ModelConfig> = {}): ModelConfig => presetConfig('tiny', {
  vocabSize: VOCAB, dModel: 16, layers: 2, heads: 4, ffnDim: 20, attention, xposScaleBase: 32, ...overrides,
});
const dilated = (segmentLengths: number[], dilationRates: number[]): AttentionSpec => ({ kind: 'dilated', segmentLengths, dilationRates });

const SCHEDULES: [string, AttentionSpec][] = [
  ['geometric (4,1) (8,2) (16,4)', dilated([4, 8, 16], [1, 2, 4])],
  ['not multiples, r > 1 only: (6,2) (10,3)', dilated([6, 10], [2, 3])],
  ['repeated patterns count twice: (5,1) (5,1) (12,4)', dilated([5, 5, 12], [1, 1, 4])],
  ['rate above the head count: (3,1) (24,8)', dilated([3, 24], [1, 8])],
  ['dense', { kind: 'dense' }],
];

function tokens(rng: Rng, batch: number, n: number): Int32Array {
  return Int32Array.from({ length: batch * n }, () => rng.int(VOCAB));
}

/** Columns [from, from + count) of a [B, N] token array. */
function columns(data: Int32Array, batch: number, n: number, from: number, count: number): Tensor {
  const out = new Int32Array(batch * count);
  for (let b = 0; b < batch; b++) out.set(data.subarray(b * n + from, b * n + from + count), b * count);
  return T.tensor(out, [batch, count], { dtype: 'int32' });
}

/** Logits of positions [from, from + count) of a full forward's [B, N, V]. */
function positions(full: Float64Array, batch: number, n: number, from: number, count: number): Float64Array {
  const out = new Float64Array(batch * count * VOCAB);
  for (let b = 0; b < batch; b++) out.set(full.subarray((b * n + from) * VOCAB, (b * n + from + count) * VOCAB), b * count * VOCAB);
  return out;
}

test('causal outputs do not depend on the total length (what the cache relies on)', () => {
  const rng = new Rng(1);
  for (const [label, attention] of SCHEDULES) {
    const model = new LongNetDecoder(config(attention), { seed: 2, dtype: 'float64' });
    const n = 37;
    const data = tokens(rng, 2, n);
    const full = model.forward(columns(data, 2, n, 0, n)).toArray() as Float64Array;
    for (const m of [1, 5, 12, 16, 17, 30]) {
      const prefix = model.forward(columns(data, 2, n, 0, m)).toArray();
      assertClose(prefix, positions(full, 2, n, 0, m), 1e-10, `${label}: prefix of ${m}`);
    }
    model.dispose();
  }
});

test('cached decoding gives the full forward\'s logits at every position, past the largest segment, batch 2', () => {
  const rng = new Rng(2);
  const batch = 2;
  const n = 40;
  for (const [label, attention] of SCHEDULES) {
    const model = new LongNetDecoder(config(attention), { seed: 3, dtype: 'float64' });
    const data = tokens(rng, batch, n);
    const full = model.forward(columns(data, batch, n, 0, n)).toArray() as Float64Array;
    const largest = attention.kind === 'dense' ? Infinity : Math.max(...attention.segmentLengths);
    // prompt in one chunk then token by token; then uneven chunks; then a cache centered for the final length
    const plans: [string, number[], number | undefined][] = [
      ['prompt of 7, then 1 by 1', [7, ...new Array(n - 7).fill(1)], undefined],
      ['chunks', [5, 3, 1, 8, 2, 1, 11, 9], undefined],
      ['maxLength', [1, ...new Array(n - 1).fill(1)], n],
    ];
    for (const [plan, chunks, maxLength] of plans) {
      assert.equal(chunks.reduce((a, b) => a + b, 0), n);
      const cache = model.createCache(batch, maxLength);
      let at = 0;
      for (const count of chunks) {
        const logits = model.step(columns(data, batch, n, at, count), cache);
        assert.deepEqual(logits.shape, [batch, count, VOCAB]);
        assertClose(logits.toArray(), positions(full, batch, n, at, count), 1e-9, `${label}, ${plan}: positions ${at}..${at + count - 1}`);
        logits.dispose();
        at += count;
        assert.equal(cache.position, at);
        if (Number.isFinite(largest)) assert.ok(cache.heldLength <= largest, `${label}: holds ${cache.heldLength} > ${largest}`);
        else assert.equal(cache.heldLength, at);
      }
      cache.dispose();
    }
    model.dispose();
  }
});

test('a long chunk after the prompt is fed in pieces and still matches', () => {
  const rng = new Rng(4);
  const model = new LongNetDecoder(config(dilated([8, 32, 64], [1, 2, 4]), { layers: 1 }), { seed: 5, dtype: 'float64' });
  const n = 300;
  const data = tokens(rng, 1, n);
  const full = model.forward(columns(data, 1, n, 0, n)).toArray() as Float64Array;
  const cache = model.createCache(1);
  model.step(columns(data, 1, n, 0, 3), cache);
  const rest = model.step(columns(data, 1, n, 3, n - 3), cache);
  assert.deepEqual(rest.shape, [1, n - 3, VOCAB]);
  assertClose(rest.toArray(), positions(full, 1, n, 3, n - 3), 1e-9, 'positions 3..299');
  assert.ok(cache.heldLength <= 64);
  cache.dispose();
  model.dispose();
});

test('cached decoding in float32 stays close to the full forward', () => {
  const rng = new Rng(3);
  const model = new LongNetDecoder(config(dilated([4, 8, 16], [1, 2, 4])), { seed: 4 });
  const n = 24;
  const data = tokens(rng, 1, n);
  const full = Float64Array.from(model.forward(columns(data, 1, n, 0, n)).toArray());
  const cache = model.createCache(1);
  const first = model.step(columns(data, 1, n, 0, 10), cache);
  assertClose(first.toArray(), positions(full, 1, n, 0, 10), 1e-4, 'prompt');
  for (let p = 10; p < n; p++) assertClose(model.step(columns(data, 1, n, p, 1), cache).toArray(), positions(full, 1, n, p, 1), 1e-4, `position ${p}`);
  cache.dispose();
  model.dispose();
});

test('the cache rejects a wrong batch and tokens past its maxLength', () => {
  const model = new LongNetDecoder(config(dilated([4], [1])));
  const cache = model.createCache(2, 5);
  const two = (count: number) => T.tensor(new Int32Array(2 * count), [2, count], { dtype: 'int32' });
  assert.throws(() => model.step(T.tensor(new Int32Array(3), [1, 3], { dtype: 'int32' }), cache), (e: unknown) => e instanceof InputError && /batch 1 but the cache was made for 2/.test(e.message));
  model.step(two(4), cache);
  assert.throws(() => model.step(two(2), cache), /6 tokens exceed the cache's maxLength 5/);
  assert.equal(cache.position, 4, 'a rejected step leaves the cache as it was');
  model.step(two(1), cache);
  assert.throws(() => model.createCache(1, 0), /maxLength = 0/);
  assert.throws(() => model.createCache(0), /batch = 0/);
  cache.dispose();
  model.dispose();
});
