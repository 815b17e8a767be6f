import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ByteTokenizer, PASSKEY_FILLER, PASSKEY_INTRO, PASSKEY_QUESTION, passkeyMinLength, passkeySample,
} from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import { Rng } from '../src/tensor/index.js';

test('a sample has exactly the asked length, ends with the key, and hides the key in its needle', () => {
  for (const length of [passkeyMinLength(), 200, 513, 4096]) {
    for (const depth of [0, 0.3, 0.5, 1]) {
      const s = passkeySample({ length, depth, rng: length });
      assert.equal(s.text.length, length);
      assert.match(s.key, /^\d{5}$/);
      assert.equal(s.answerStart, length - 5);
      assert.equal(s.text.slice(s.answerStart), s.key);
      assert.ok(s.text.startsWith(PASSKEY_INTRO));
      assert.equal(s.text.slice(s.answerStart - PASSKEY_QUESTION.length, s.answerStart), PASSKEY_QUESTION);
      assert.equal(s.text.slice(s.needleStart, s.keyStart), 'The pass key is ');
      assert.equal(s.text.slice(s.keyStart, s.keyStart + 5), s.key);
      // ASCII: one byte token a character
      assert.equal(new ByteTokenizer().encode(s.text).length, length);
      // the key's digits occur only in the needle and the answer
      const occurrences = [...s.text.matchAll(/\d+/g)].map((m) => m[0]);
      assert.deepEqual(occurrences, [s.key, s.key, s.key]);
    }
  }
});

test('depth places the needle: 0 right after the intro, 1 at the end of the filler, at sentence boundaries', () => {
  const length = 1000;
  const filler = length - passkeyMinLength();
  const first = passkeySample({ length, depth: 0 });
  assert.equal(first.needleStart, PASSKEY_INTRO.length);
  assert.equal(first.depth, 0);
  const last = passkeySample({ length, depth: 1 });
  assert.ok(last.needleStart <= PASSKEY_INTRO.length + filler);
  assert.ok(last.needleStart > PASSKEY_INTRO.length + filler - PASSKEY_FILLER.length);
  let previous = -1;
  for (const depth of [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]) {
    const s = passkeySample({ length, depth });
    assert.ok(s.needleStart >= previous, 'deeper needles come later');
    previous = s.needleStart;
    assert.ok(Math.abs(s.depth - depth) * filler <= PASSKEY_FILLER.length, `depth ${depth} -> ${s.depth}`);
    if (s.needleStart > PASSKEY_INTRO.length) assert.equal(s.text.slice(s.needleStart - 2, s.needleStart), '. ');
  }
});

test('samples are a function of the seed; a drawn depth lies in [0, 1]', () => {
  assert.deepEqual(passkeySample({ length: 300, rng: 9 }), passkeySample({ length: 300, rng: 9 }));
  const keys = new Set(Array.from({ length: 20 }, (_, i) => passkeySample({ length: 300, rng: i }).key));
  assert.ok(keys.size >= 18, 'different seeds give different keys');
  const rng = new Rng(3);
  const a = passkeySample({ length: 300, rng });
  const b = passkeySample({ length: 300, rng });
  assert.notDeepEqual([a.key, a.needleStart], [b.key, b.needleStart], 'a shared generator moves on');
  for (let i = 0; i < 20; i++) {
    const s = passkeySample({ length: 400, rng: 100 + i });
    assert.ok(s.depth >= 0 && s.depth <= 1);
  }
  assert.equal(passkeySample({ length: 300, digits: 8, rng: 1 }).key.length, 8);
});

test('bad options are InputErrors naming the value', () => {
  const bad = (fn: () => unknown, pattern: RegExp): void => {
    assert.throws(fn, (e: unknown) => e instanceof InputError && pattern.test(e.message));
  };
  bad(() => passkeySample({ length: 20 }), /length = 20 is shorter than the \d+ characters a sample needs/);
  bad(() => passkeySample({ length: 300, depth: 1.5 }), /depth = 1\.5 is not in \[0, 1\]/);
  bad(() => passkeySample({ length: 300, digits: 0 }), /digits = 0/);
  bad(() => passkeySample({ length: 300.5 }), /length = 300\.5/);
});
