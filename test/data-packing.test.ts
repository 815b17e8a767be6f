import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  buildTokenDataset,
  createTokenizer,
  DEFAULT_VAL_FRACTION,
  defaultCorpusDescription,
  defaultCorpusPath,
  packSequences,
  splitBatch,
  tokenDatasetFromDocuments,
  type BatchOptions,
  type BatchPosition,
  type TokenDataset,
  type Tokenizer,
  type TokenizerSpec,
} from '../src/data/index.js';
import { InputError } from '../src/errors.js';

/**
 * A tokenizer for exact bookkeeping: a document "5 6 7" is the ids [5, 6, 7], and 0 ends documents.
 * Giving every document its own ids makes every token of a corpus unique (but the separators).
 */
class NumberTokenizer implements Tokenizer {
  readonly name = 'byte' as const; // any known name: only the spec's shape matters here
  readonly vocabSize = 1 << 30;
  readonly eotId = 0;
  encode(text: string): number[] {
    return text.split(' ').map(Number);
  }
  decode(ids: ArrayLike<number>): string {
    return Array.from(ids).join(' ');
  }
  toJSON(): TokenizerSpec {
    return { name: this.name, vocabSize: this.vocabSize, eotId: this.eotId };
  }
}
const numbers = new NumberTokenizer();

/** `count` documents of distinct ids; document i has 1 + (i * 37) % maxLen tokens. */
function numberDocs(count: number, maxLen: number): string[] {
  let next = 1;
  return Array.from({ length: count }, (_, i) => {
    const len = 1 + ((i * 37) % maxLen);
    return Array.from({ length: len }, () => next++).join(' ');
  });
}

const root = mkdtempSync(join(tmpdir(), 'longnet-packing-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const d = join(root, `case${counter++}`);
  mkdirSync(d);
  return d;
}

function rejectsInput(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  };
}

/** All tokens of a stream part of the dataset. */
function streamTokens(ds: TokenDataset, part: 'train' | 'validation'): Int32Array {
  const s = ds[part];
  const out = new Int32Array(s.length);
  s.read(0, s.length, out, 0);
  return out;
}

/** The held-out text, as the pieces between separators of each validation range. */
function validationPieces(ds: TokenDataset): string[] {
  const pieces: string[] = [];
  const r = ds.validation.ranges;
  for (let i = 0; i < r.length; i += 2) {
    const ids = Array.from(ds.readTokens(r[i], r[i + 1] - r[i]));
    let cur: number[] = [];
    for (const id of ids) {
      if (id === numbers.eotId) {
        pieces.push(`${cur.join(' ')}|`);
        cur = [];
      } else cur.push(id);
    }
    if (cur.length) pieces.push(cur.join(' '));
  }
  return pieces.sort();
}

describe('streamed packing', () => {
  it('cuts the separated token stream into sequences of seqLen+1 overlapping by one', async () => {
    const tok = createTokenizer('byte');
    const docs = ['hello', '', 'wide 🌍 world', 'x'];
    const stream = docs.filter((d) => d).flatMap((d) => [...tok.encode(d), tok.eotId]);
    for (const seqLen of [1, 3, 8, 25]) {
      const seqs: Int32Array[] = [];
      for await (const s of packSequences(docs, tok, seqLen)) seqs.push(s);
      assert.equal(seqs.length, Math.floor((stream.length - 1) / seqLen));
      seqs.forEach((s, j) => {
        assert.equal(s.length, seqLen + 1);
        assert.deepEqual(Array.from(s), stream.slice(j * seqLen, j * seqLen + seqLen + 1));
      });
    }
    const seqs: number[][] = [];
    for await (const s of packSequences(docs, tok, 4)) seqs.push(Array.from(s));
    assert.deepEqual(seqs[1].slice(0, 2), [111, tok.eotId], 'the separator follows "hello"');
    await assert.rejects(async () => {
      for await (const _ of packSequences(docs, tok, 0)) void _;
    }, rejectsInput(/seqLen must be a positive integer, got 0/));
  });

  it('splits batches into inputs and targets shifted by one', () => {
    const tokens = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const { inputs, targets } = splitBatch(tokens, 3);
    assert.deepEqual(Array.from(inputs), [1, 2, 3, 5, 6, 7]);
    assert.deepEqual(Array.from(targets), [2, 3, 4, 6, 7, 8]);
    assert.throws(() => splitBatch(tokens, 2), rejectsInput(/not rows of seqLen \+ 1 = 3/));
  });
});

describe('validation split', () => {
  it('partitions the tokens: nothing lost, nothing duplicated, the fraction met exactly', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 200 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        async (count, maxLen, valFraction) => {
          const ds = await tokenDatasetFromDocuments(numberDocs(count, maxLen), numbers, { valFraction });
          const all = Array.from(ds.readTokens(0, ds.tokens));
          const train = Array.from(streamTokens(ds, 'train'));
          const val = Array.from(streamTokens(ds, 'validation'));
          assert.equal(train.length + val.length, ds.tokens);
          assert.equal(val.length, Math.round(valFraction * ds.tokens));
          const ids = (xs: number[]) => xs.filter((x) => x !== 0).sort((a, b) => a - b);
          assert.deepEqual(ids([...train, ...val]), ids(all));
          assert.equal([...train, ...val].filter((x) => x === 0).length, count);
          assert.equal(new Set(ids(all)).size, ids(all).length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('is the same on every run and does not depend on the order documents are read', async () => {
    const docs = numberDocs(80, 50);
    const a = await tokenDatasetFromDocuments(docs, numbers, { valFraction: 0.2 });
    const b = await tokenDatasetFromDocuments(docs, numbers, { valFraction: 0.2 });
    assert.deepEqual(a.validation.ranges, b.validation.ranges);
    const shuffled = [...docs].reverse();
    [shuffled[3], shuffled[40]] = [shuffled[40], shuffled[3]];
    const c = await tokenDatasetFromDocuments(shuffled, numbers, { valFraction: 0.2 });
    assert.equal(c.validation.length, a.validation.length);
    assert.deepEqual(validationPieces(c), validationPieces(a));
    assert.notEqual(c.contentHash, a.contentHash, 'the order of the stream is part of its identity');
  });

  it('holds out a contiguous slice of a corpus of one document', async () => {
    const doc = Array.from({ length: 999 }, (_, i) => i + 1).join(' '); // 999 tokens + separator
    const ds = await tokenDatasetFromDocuments([doc], numbers, { valFraction: 0.1 });
    assert.equal(ds.validation.ranges.length, 2, 'one range');
    assert.equal(ds.validation.length, 100);
    const val = streamTokens(ds, 'validation');
    for (let i = 1; i < val.length; i++) if (val[i] !== 0) assert.equal(val[i], val[i - 1] + 1);
    const tiny = await tokenDatasetFromDocuments(['1'], numbers, { valFraction: 0.1 });
    assert.equal(tiny.validation.length, 0, 'round(0.1 * 2) = 0');
  });
});

describe('training batches', () => {
  const docs = numberDocs(50, 40);
  const opts: BatchOptions = { seqLen: 16, batchSize: 3, seed: 7 };

  it('rows are windows of the training stream: targets are inputs shifted by one', async () => {
    const ds = await tokenDatasetFromDocuments(docs, numbers);
    const train = streamTokens(ds, 'train');
    const where = new Map<number, number>();
    train.forEach((t, i) => t !== 0 && where.set(t, i));
    const it = ds.batches(opts);
    for (let b = 0; b < 5; b++) {
      const { tokens } = it.next().value;
      assert.equal(tokens.length, 3 * 17);
      for (let r = 0; r < 3; r++) {
        const row = tokens.subarray(r * 17, (r + 1) * 17);
        const first = row.findIndex((t) => t !== 0);
        const start = where.get(row[first])! - first;
        assert.deepEqual(Array.from(row), Array.from(train.subarray(start, start + 17)));
      }
    }
  });

  it('one epoch uses every whole sequence once, at stride seqLen, in a shuffled order', async () => {
    const ds = await tokenDatasetFromDocuments(docs, numbers);
    const train = streamTokens(ds, 'train');
    const o = { seqLen: 16, batchSize: 1, seed: 3 };
    const perEpoch = ds.batchesPerEpoch(o);
    assert.equal(perEpoch, Math.floor((train.length - 1) / 16));
    const starts = (epoch: number): number[] => {
      const out: number[] = [];
      for (let p = 0; p < perEpoch; p++) {
        const row = ds.batchAt(o, { epoch, position: p });
        const k = row.findIndex((t) => t !== 0);
        out.push(train.indexOf(row[k]) - k);
      }
      return out;
    };
    for (const epoch of [0, 1]) {
      const s = starts(epoch);
      const sorted = [...s].sort((a, b) => a - b);
      const offset = sorted[0];
      assert.ok(offset >= 0 && offset < 16);
      assert.deepEqual(sorted, sorted.map((_, j) => offset + 16 * j));
      assert.notDeepEqual(s, sorted, 'the order is shuffled');
    }
    assert.notDeepEqual(starts(0), starts(1), 'each epoch has its own order');
  });

  it('the order is fixed by the seed', async () => {
    const a = await tokenDatasetFromDocuments(docs, numbers);
    const b = await tokenDatasetFromDocuments(docs, numbers);
    const take = (ds: TokenDataset, o: BatchOptions, n: number) => {
      const it = ds.batches(o);
      return Array.from({ length: n }, () => Array.from(it.next().value.tokens));
    };
    assert.deepEqual(take(a, opts, 12), take(b, opts, 12));
    assert.notDeepEqual(take(a, opts, 12), take(a, { ...opts, seed: 8 }, 12));
  });

  it('resumes from a saved position to exactly the same batches, across epochs', async () => {
    const ds = await tokenDatasetFromDocuments(docs, numbers);
    const perEpoch = ds.batchesPerEpoch(opts);
    const it = ds.batches(opts);
    const run = Array.from({ length: 2 * perEpoch + 3 }, () => it.next().value);
    assert.deepEqual(run[perEpoch - 1].next, { epoch: 1, position: 0 });
    assert.equal(run[perEpoch].epoch, 1);
    for (const k of [0, 2, perEpoch - 1, perEpoch + 1]) {
      const saved: BatchPosition = JSON.parse(JSON.stringify(run[k].next));
      const rebuilt = await tokenDatasetFromDocuments(docs, numbers);
      const resumed = rebuilt.batches(opts, saved);
      for (let j = k + 1; j < run.length; j++) {
        const b = resumed.next().value;
        assert.deepEqual([b.epoch, b.position], [run[j].epoch, run[j].position]);
        assert.deepEqual(b.tokens, run[j].tokens);
      }
    }
    // A checkpoint taken after an epoch's last batch may store position == batchesPerEpoch.
    assert.deepEqual(ds.batches(opts, { epoch: 0, position: perEpoch }).next().value.tokens, run[perEpoch].tokens);
    assert.throws(() => ds.batches(opts, { epoch: 0, position: perEpoch + 1 }), rejectsInput(/past the end of an epoch/));
    assert.throws(() => ds.batches(opts, { epoch: -1, position: 0 }), rejectsInput(/resume epoch/));
  });

  it('shards a global batch between data-parallel ranks', async () => {
    const ds = await tokenDatasetFromDocuments(docs, numbers);
    const global = ds.batchAt({ seqLen: 16, batchSize: 4, seed: 1 }, { epoch: 2, position: 1 });
    const parts = [0, 1].map((rank) =>
      ds.batchAt({ seqLen: 16, batchSize: 2, seed: 1, shard: { rank, count: 2 } }, { epoch: 2, position: 1 }),
    );
    assert.deepEqual(Array.from(global), [...parts[0], ...parts[1]]);
    const sharded = (rank: number) => ({ seqLen: 16, batchSize: 2, shard: { rank, count: 2 } });
    assert.equal(ds.batchesPerEpoch(sharded(1)), ds.batchesPerEpoch({ seqLen: 16, batchSize: 4 }));
    assert.throws(() => ds.batchesPerEpoch(sharded(2)), rejectsInput(/shard\.rank/));
  });

  it('refuses a corpus too small for one batch, naming it', async () => {
    const ds = await tokenDatasetFromDocuments(['1 2 3 4 5 6 7 8 9'], numbers, { source: 'tiny.txt', valFraction: 0.2 });
    assert.throws(
      () => ds.batches({ seqLen: 8, batchSize: 1 }),
      rejectsInput(/tiny\.txt: 8 training tokens \(after holding out 2 for validation\) are fewer than one batch/),
    );
    assert.equal(ds.batchesPerEpoch({ seqLen: 7, batchSize: 1 }), 1);
    assert.throws(() => ds.batchesPerEpoch({ seqLen: 4, batchSize: 0 }), rejectsInput(/batchSize must be an integer >= 1/));
  });
});

describe('validation batches', () => {
  it('cover the held-out stream in order at any length', async () => {
    const ds = await tokenDatasetFromDocuments(numberDocs(40, 60), numbers, { valFraction: 0.3 });
    const val = streamTokens(ds, 'validation');
    for (const seqLen of [4, 32, 100]) {
      const n = ds.validationSequenceCount(seqLen);
      assert.equal(n, Math.floor((val.length - 1) / seqLen));
      const rows: number[][] = [];
      for (const batch of ds.validationBatches(seqLen, { batchSize: 3 })) {
        assert.ok(batch.length <= 3 * (seqLen + 1) && batch.length % (seqLen + 1) === 0);
        for (let r = 0; r < batch.length / (seqLen + 1); r++) {
          rows.push(Array.from(batch.subarray(r * (seqLen + 1), (r + 1) * (seqLen + 1))));
        }
      }
      assert.equal(rows.length, n);
      rows.forEach((row, j) => assert.deepEqual(row, Array.from(val.subarray(j * seqLen, j * seqLen + seqLen + 1))));
    }
    const capped = [...ds.validationBatches(4, { maxSequences: 5 })];
    assert.equal(capped.length, 5);
    const shards = [0, 1, 2].map((rank) => [...ds.validationBatches(4, { maxSequences: 7, shard: { rank, count: 3 } })]);
    assert.deepEqual(shards.map((s) => s.length), [3, 2, 2]);
    assert.deepEqual(shards[1][0], capped[1]);
  });

  it('too few held-out tokens for one sequence is an InputError naming the corpus', async () => {
    const ds = await tokenDatasetFromDocuments(numberDocs(10, 10), numbers, { source: 'small.jsonl', valFraction: 0.1 });
    assert.throws(
      () => ds.validationBatches(1000),
      rejectsInput(/small\.jsonl: the validation split holds \d+ tokens, fewer than one sequence of 1000\+1/),
    );
    const none = await tokenDatasetFromDocuments(numberDocs(10, 10), numbers, { source: 'c', valFraction: 0 });
    assert.throws(() => none.validationBatches(4), rejectsInput(/c: no validation tokens \(valFraction 0/));
  });
});

describe('building from files', () => {
  it('tokenizes a directory with separators, same as from documents', async () => {
    const d = freshDir();
    writeFileSync(join(d, 'a.txt'), 'alpha');
    writeFileSync(join(d, 'b.jsonl'), '{"text":"beta"}\n{"text":"gamma"}\n');
    const tok = createTokenizer('cl100k_base');
    const ds = await buildTokenDataset(d, tok, { valFraction: 0 });
    const ids = Array.from(ds.readTokens(0, ds.tokens));
    const expected = ['alpha', 'beta', 'gamma'].flatMap((t) => [...tok.encode(t), tok.eotId]);
    assert.deepEqual(ids, expected);
    assert.equal(ds.documents, 3);
    assert.equal(ds.summary().tokenizer.name, 'cl100k_base');
    const same = await tokenDatasetFromDocuments(['alpha', 'beta', 'gamma'], tok, { valFraction: 0 });
    assert.equal(same.contentHash, ds.contentHash);
  });

  it('an empty corpus is an InputError naming the path', async () => {
    const d = freshDir();
    writeFileSync(join(d, 'empty.txt'), '');
    writeFileSync(join(d, 'nulls.jsonl'), '{"text":null}\n');
    await assert.rejects(
      buildTokenDataset(d, createTokenizer('byte')),
      rejectsInput(/case\d+: empty corpus \(no text, zero tokens\)/),
    );
    await assert.rejects(buildTokenDataset(join(d, 'missing'), createTokenizer('byte')), rejectsInput(/missing: no such file/));
  });

  it('refuses more tokens than the memory limit, pointing at the cache', async () => {
    await assert.rejects(
      tokenDatasetFromDocuments(numberDocs(100, 100), numbers, { maxMemoryTokens: 1000, source: 'big' }),
      rejectsInput(/big: more than 1000 tokens to hold in memory; give a token cache directory/),
    );
    await assert.rejects(
      tokenDatasetFromDocuments(['1'], numbers, { valFraction: 2 }),
      rejectsInput(/valFraction must be in \[0, 1\]/),
    );
  });

  it('caches tokens on disk and reuses them until the files change', async () => {
    const d = freshDir();
    const cacheDir = join(d, 'cache');
    const corpus = join(d, 'corpus');
    mkdirSync(corpus);
    writeFileSync(join(corpus, 'a.txt'), 'the first file, '.repeat(200));
    writeFileSync(join(corpus, 'b.txt'), 'and the second one. '.repeat(150));
    const tok = createTokenizer('byte');
    const memory = await buildTokenDataset(corpus, tok);
    const first = await buildTokenDataset(corpus, tok, { cacheDir });
    assert.deepEqual(first.summary(), memory.summary());
    assert.deepEqual(readdirSync(cacheDir).map((f) => f.replace(/^[0-9a-f]+/, '')).sort(), ['.docs', '.json', '.tokens']);
    // A cache hit does not tokenize: a tokenizer that cannot encode still opens it.
    const noEncode: Tokenizer = {
      name: 'byte',
      vocabSize: 257,
      eotId: 256,
      encode: () => assert.fail('tokenized again'),
      decode: (ids) => tok.decode(ids),
      toJSON: () => tok.toJSON(),
    };
    const second = await buildTokenDataset(corpus, noEncode, { cacheDir });
    assert.deepEqual(second.summary(), memory.summary());
    const o = { seqLen: 64, batchSize: 2, seed: 5 };
    const a = memory.batches(o);
    const b = second.batches(o);
    for (let i = 0; i < 10; i++) assert.deepEqual(b.next().value.tokens, a.next().value.tokens);
    assert.deepEqual([...second.validationBatches(32)], [...memory.validationBatches(32)]);
    second.close();
    first.close();
    writeFileSync(join(corpus, 'b.txt'), 'changed');
    const third = await buildTokenDataset(corpus, tok, { cacheDir });
    assert.notEqual(third.tokens, memory.tokens);
    third.close();
    // Another tokenizer is another cache entry.
    const cl = await buildTokenDataset(corpus, createTokenizer('cl100k_base'), { cacheDir });
    assert.equal(cl.tokenizer.name, 'cl100k_base');
    cl.close();
    assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith('.json')).length, 3);
  });
});

describe('default corpus', () => {
  it('is lodash.js, and holds out enough bytes for one 32K evaluation sequence', async () => {
    const path = defaultCorpusPath();
    assert.match(path, /lodash[/\\]lodash\.js$/);
    assert.match(defaultCorpusDescription(), /^lodash [\d.]+ source \(lodash\.js, \d+ KB of JavaScript\)$/);
    assert.equal(DEFAULT_VAL_FRACTION, 0.1);
    const ds = await buildTokenDataset(path, createTokenizer('byte'));
    assert.ok(ds.tokens > 500_000);
    assert.equal(ds.documents, 1);
    assert.equal(ds.validation.ranges.length, 2, 'one contiguous held-out slice');
    assert.equal(ds.validationSequenceCount(32768), 1);
    assert.ok(ds.batchesPerEpoch({ seqLen: 2048, batchSize: 8 }) > 20);
  });
});
