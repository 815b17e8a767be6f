import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/tensor/random.js';
import {
  argmax, checkSampling, filterTopK, filterTopP, sampleToken, samplingDistribution, softmaxRow,
} from '../src/train/sampling.js';
import { InputError } from '../src/errors.js';

const logits = [Math.log(0.1), Math.log(0.4), Math.log(0.2), Math.log(0.3)]; // probabilities 0.1 0.4 0.2 0.3

test('top-k keeps exactly the k largest logits (ties go to the lower index)', () => {
  assert.deepEqual([...filterTopK(logits, 2)], [-Infinity, logits[1], -Infinity, logits[3]]);
  assert.deepEqual([...filterTopK(logits, 1)], [-Infinity, logits[1], -Infinity, -Infinity]);
  assert.deepEqual([...filterTopK(logits, 0)], logits);
  assert.deepEqual([...filterTopK(logits, 9)], logits);
  assert.deepEqual([...filterTopK([1, 2, 2, 0], 2)], [-Infinity, 2, 2, -Infinity]);
  assert.deepEqual([...filterTopK([2, 1, 2, 2], 2)], [2, -Infinity, 2, -Infinity]);
});

test('top-p keeps the smallest most-likely set reaching p, at least one token', () => {
  // sorted: 0.4 (1), 0.3 (3), 0.2 (2), 0.1 (0)
  assert.deepEqual([...filterTopP(logits, 0.5)], [-Infinity, logits[1], -Infinity, logits[3]]);
  assert.deepEqual([...filterTopP(logits, 0.7)].map((x) => x === -Infinity), [true, false, true, false]);
  assert.deepEqual([...filterTopP(logits, 0.71)].map((x) => x === -Infinity), [true, false, false, false]);
  assert.deepEqual([...filterTopP(logits, 0.3)], [-Infinity, logits[1], -Infinity, -Infinity]);
  assert.deepEqual([...filterTopP(logits, 1)], logits);
  const dist = samplingDistribution(logits, { temperature: 1, topP: 0.5 });
  assert.ok(Math.abs(dist[1]! - 4 / 7) < 1e-15 && Math.abs(dist[3]! - 3 / 7) < 1e-15 && dist[0] === 0 && dist[2] === 0);
});

test('temperature scales logits before filtering; temperature 0 is greedy', () => {
  const hot = samplingDistribution(logits, { temperature: 2 });
  const want = softmaxRow(logits.map((x) => x / 2));
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(hot[i]! - want[i]!) < 1e-15);
  // top-k then top-p on the tempered row: k=3 keeps 0.4, 0.3, 0.2 (renormalized 4/9, 3/9, 2/9); p=0.6 keeps two
  const both = samplingDistribution(logits, { temperature: 1, topK: 3, topP: 0.6 });
  assert.ok(Math.abs(both[1]! - 4 / 7) < 1e-15 && Math.abs(both[3]! - 3 / 7) < 1e-15 && both[2] === 0);
  assert.equal(argmax(logits), 1);
  const rng = new Rng(1);
  for (let i = 0; i < 5; i++) assert.equal(sampleToken(logits, { temperature: 0 }, rng), 1);
});

test('sampling is seeded: the same seed gives the same tokens, and frequencies follow the distribution', () => {
  const draw = (seed: number, n: number, topK?: number): number[] => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => sampleToken(logits, { temperature: 1, ...(topK ? { topK } : {}) }, rng));
  };
  assert.deepEqual(draw(42, 50), draw(42, 50));
  assert.notDeepEqual(draw(42, 50), draw(43, 50));
  const counts = [0, 0, 0, 0];
  for (const t of draw(7, 20000)) counts[t]!++;
  [0.1, 0.4, 0.2, 0.3].forEach((p, i) => assert.ok(Math.abs(counts[i]! / 20000 - p) < 0.015, `token ${i}: ${counts[i]}`));
  assert.ok(draw(9, 2000, 2).every((t) => t === 1 || t === 3));
});

test('bad sampling options are input errors', () => {
  assert.throws(() => checkSampling({ temperature: -1 }), InputError);
  assert.throws(() => checkSampling({ temperature: 1, topK: 1.5 }), /top-k/);
  assert.throws(() => checkSampling({ temperature: 1, topP: 0 }), /top-p/);
  assert.throws(() => checkSampling({ temperature: 1, topP: 1.2 }), /top-p/);
  checkSampling({ temperature: 0.7, topK: 40, topP: 0.95 });
});
