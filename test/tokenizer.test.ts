import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ByteTokenizer,
  createTokenizer,
  TextStreamDecoder,
  tokenizerFromSpec,
  type Tokenizer,
} from '../src/data/index.js';
import { InputError } from '../src/errors.js';

const isInputError = (err: unknown): boolean => err instanceof InputError;

describe('byte tokenizer', () => {
  const tok = createTokenizer('byte');

  it('has 256 byte ids plus an end-of-document id', () => {
    assert.equal(tok.vocabSize, 257);
    assert.equal(tok.eotId, 256);
    assert.deepEqual(tok.encode('hi'), [104, 105]);
    assert.deepEqual(tok.encode('é'), [0xc3, 0xa9]);
    assert.deepEqual(tok.encode('🌍'), [0xf0, 0x9f, 0x8c, 0x8d]);
    assert.deepEqual(tok.encode(''), []);
  });

  it('round-trips any well-formed Unicode text (emoji, astral planes, controls, BOM)', () => {
    for (const s of ['\uFEFFbom first', 'a\u0000b', '👩‍👩‍👧‍👦 family', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '\r\n\t']) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 64 }), (s) => {
        const ids = tok.encode(s);
        assert.ok(ids.every((id) => id >= 0 && id < 256));
        assert.equal(tok.decode(ids), s);
      }),
      { numRuns: 300 },
    );
  });

  it('decodes invalid UTF-8 without throwing, as U+FFFD', () => {
    assert.equal(tok.decode([0xff]), '\uFFFD');
    assert.equal(tok.decode([0x61, 0xc3]), 'a\uFFFD'); // truncated sequence
    assert.equal(tok.decode([0xed, 0xa0, 0x80]), '\uFFFD\uFFFD\uFFFD'); // an encoded surrogate
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 256 }), { maxLength: 64 }), (ids) => {
        assert.equal(typeof tok.decode(ids), 'string');
      }),
      { numRuns: 300 },
    );
  });

  it('decodes the end-of-document id to nothing', () => {
    assert.equal(tok.decode([104, 256, 105, 256]), 'hi');
  });

  it('rejects ids outside the vocabulary', () => {
    assert.throws(() => tok.decode([257]), isInputError);
    assert.throws(() => tok.decode([-1]), isInputError);
    assert.throws(() => tok.decode([1.5]), isInputError);
  });

  it('gives its bytes directly', () => {
    assert.deepEqual(Array.from(new ByteTokenizer().encodeBytes('ab')), [97, 98]);
  });
});

describe('cl100k_base tokenizer', () => {
  const tok = createTokenizer('cl100k_base');

  it('matches known encodings', () => {
    assert.deepEqual(tok.encode('hello world'), [15339, 1917]);
    assert.deepEqual(tok.encode(''), []);
    assert.equal(tok.decode([15339, 1917]), 'hello world');
  });

  it('covers every id it can produce: vocabulary 100277, <|endoftext|> = 100257', () => {
    assert.equal(tok.vocabSize, 100277);
    assert.equal(tok.eotId, 100257);
    assert.equal(tok.decode([tok.eotId]), '<|endoftext|>');
    assert.equal(tok.decode([100276]), '<|endofprompt|>');
  });

  it('encodes text that spells a special token as ordinary text', () => {
    const ids = tok.encode('a <|endoftext|> b');
    assert.ok(!ids.includes(tok.eotId));
    assert.equal(tok.decode(ids), 'a <|endoftext|> b');
  });

  it('round-trips Unicode text and code', () => {
    for (const s of ['\uFEFFbom first', 'const x = () => 42;\n', 'naïve café 🌍🚀', '日本語のテキスト', '    indented\n\t\ttabs']) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        const ids = tok.encode(s);
        assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
        assert.equal(tok.decode(ids), s);
      }),
      { numRuns: 200 },
    );
  });

  it('decodes a token sequence that splits a character without throwing', () => {
    const ids = tok.encode('🌍');
    assert.ok(ids.length > 1, 'the emoji takes several tokens');
    assert.match(tok.decode(ids.slice(0, 1)), /\uFFFD/);
  });

  it('rejects ids outside the vocabulary', () => {
    assert.throws(() => tok.decode([100277]), isInputError);
  });
});

describe('tokenizer specs', () => {
  for (const name of ['byte', 'cl100k_base']) {
    it(`round-trips ${name} through JSON`, () => {
      const tok = createTokenizer(name);
      const spec = JSON.parse(JSON.stringify({ tokenizer: tok })).tokenizer;
      assert.deepEqual(spec, { name, vocabSize: tok.vocabSize, eotId: tok.eotId });
      const back: Tokenizer = tokenizerFromSpec(spec);
      assert.equal(back.name, name);
      assert.equal(back.vocabSize, tok.vocabSize);
      assert.deepEqual(back.encode('same ids'), tok.encode('same ids'));
    });
  }

  it('rejects unknown names and mismatched specs', () => {
    assert.throws(() => createTokenizer('gpt2'), /unknown tokenizer "gpt2" \(known: byte, cl100k_base\)/);
    assert.throws(() => tokenizerFromSpec({ name: 'nope' }), isInputError);
    assert.throws(() => tokenizerFromSpec(null), isInputError);
    assert.throws(() => tokenizerFromSpec('byte'), isInputError);
    assert.throws(() => tokenizerFromSpec({ name: 'byte', vocabSize: 256 }), /vocabSize 256 .* has 257/);
    assert.throws(() => tokenizerFromSpec({ name: 'cl100k_base', eotId: 0 }), isInputError);
    assert.equal(tokenizerFromSpec({ name: 'byte' }).vocabSize, 257);
  });
});

describe('streaming decode', () => {
  for (const name of ['byte', 'cl100k_base']) {
    it(`holds back partial characters (${name})`, () => {
      const tok = createTokenizer(name);
      const text = 'a🌍b 日本 — done';
      const stream = new TextStreamDecoder(tok);
      let out = '';
      for (const id of tok.encode(text)) {
        const piece = stream.push(id);
        assert.ok(!piece.includes('\uFFFD'), `no replacement character in ${JSON.stringify(piece)}`);
        out += piece;
      }
      out += stream.flush();
      assert.equal(out, text);
    });
  }
});
