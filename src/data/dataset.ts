import { check } from '../errors.js';
import { checkSeqLen, epochPlan, RangeStream, type EpochPlan } from './packing.js';
import { complementRanges, selectValidation, type DocumentTable } from './split.js';
import type { TokenizerSpec } from './tokenizer.js';
import type { TokenStore } from './token-store.js';

export interface BatchOptions {
  seqLen: number;
  batchSize: number;
  /** Fixes the shuffled order and the sequence offsets of every epoch (an integer, used mod 2^32; default 0). */
  seed?: number;
  /** Data parallelism: each global batch has `batchSize * count` sequences; rank `rank` gets its own `batchSize`. */
  shard?: { rank: number; count: number };
}

/** Where training stands in the data: the next batch is number `position` of epoch `epoch`. */
export interface BatchPosition {
  epoch: number;
  position: number;
}

export interface Batch {
  /** `[batchSize, seqLen + 1]`, row-major: inputs are columns 0..seqLen-1, targets columns 1..seqLen. */
  tokens: Int32Array;
  epoch: number;
  position: number;
  /** Save this in a checkpoint; resuming from it yields exactly the batches that would have followed. */
  next: BatchPosition;
}

export interface DatasetSummary {
  source: string;
  tokenizer: TokenizerSpec;
  documents: number;
  tokens: number;
  trainTokens: number;
  valTokens: number;
  valFraction: number;
  /** Identifies the token stream (documents' text and order, and tokenizer): check it when resuming. */
  contentHash: string;
}

export function checkInteger(value: number, min: number, what: string): void {
  check(Number.isInteger(value) && value >= min, () => `${what} must be an integer >= ${min}, got ${value}`);
}

function checkShard(shard: BatchOptions['shard']): { rank: number; count: number } {
  if (!shard) return { rank: 0, count: 1 };
  checkInteger(shard.count, 1, 'shard.count');
  check(
    Number.isInteger(shard.rank) && shard.rank >= 0 && shard.rank < shard.count,
    () => `shard.rank must be an integer in [0, ${shard.count}), got ${shard.rank}`,
  );
  return shard;
}

/**
 * A tokenized corpus split into training and validation tokens, serving batches. Training batches are
 * random-access by (epoch, position), so a run resumed from a checkpoint sees exactly the batches it
 * would have seen; validation sequences come in order at any length.
 */
export class TokenDataset {
  readonly train: RangeStream;
  readonly validation: RangeStream;
  private plans = new Map<string, EpochPlan>();

  constructor(
    private readonly store: TokenStore,
    private readonly docs: DocumentTable,
    readonly source: string,
    readonly tokenizer: TokenizerSpec,
    readonly valFraction: number,
    readonly contentHash: string,
  ) {
    const val = selectValidation(docs, store.length, valFraction);
    this.validation = new RangeStream(store, val);
    this.train = new RangeStream(store, complementRanges(val, store.length));
  }

  get documents(): number {
    return this.docs.count;
  }

  get tokens(): number {
    return this.store.length;
  }

  summary(): DatasetSummary {
    return {
      source: this.source,
      tokenizer: this.tokenizer,
      documents: this.documents,
      tokens: this.tokens,
      trainTokens: this.train.length,
      valTokens: this.validation.length,
      valFraction: this.valFraction,
      contentHash: this.contentHash,
    };
  }

  /** Tokens [start, start + count) of the whole corpus, in reading order. */
  readTokens(start: number, count: number): Int32Array {
    const out = new Int32Array(count);
    this.store.read(start, count, out, 0);
    return out;
  }

  /** Training batches in one epoch (sequences left over after the last whole batch wait for the next epoch's order). */
  batchesPerEpoch(options: BatchOptions): number {
    checkSeqLen(options.seqLen);
    checkInteger(options.batchSize, 1, 'batchSize');
    const { count } = checkShard(options.shard);
    const perBatch = options.batchSize * count;
    const n = Math.floor(this.train.sequenceCount(options.seqLen) / perBatch);
    check(n > 0, () => {
      const need = perBatch * options.seqLen + 1;
      return (
        `${this.source}: ${this.train.length} training tokens (after holding out ${this.validation.length} for ` +
        `validation) are fewer than one batch of ${perBatch} sequences of ${options.seqLen}+1 tokens ` +
        `(${need} tokens); use a larger corpus, a shorter seqLen or a smaller batch`
      );
    });
    return n;
  }

  private plan(seqLen: number, seed: number, epoch: number): EpochPlan {
    const key = `${seqLen}/${seed}/${epoch}`;
    let plan = this.plans.get(key);
    if (!plan) {
      plan = epochPlan(this.train.length, seqLen, seed, epoch);
      if (this.plans.size >= 2) this.plans.delete(this.plans.keys().next().value as string);
      this.plans.set(key, plan);
    }
    return plan;
  }

  /** The training batch at `at`, `[batchSize, seqLen + 1]`. */
  batchAt(options: BatchOptions, at: BatchPosition): Int32Array {
    const perEpoch = this.batchesPerEpoch(options);
    checkInteger(at.epoch, 0, 'epoch');
    check(
      Number.isInteger(at.position) && at.position >= 0 && at.position < perEpoch,
      () =>
        `batch position ${at.position} is outside epoch ${at.epoch}'s ${perEpoch} batches ` +
        `(was the corpus, seqLen, batchSize or shard count changed since the checkpoint?)`,
    );
    const { seqLen, batchSize, seed = 0 } = options;
    check(Number.isSafeInteger(seed), () => `seed must be an integer, got ${seed}`);
    const { rank, count } = checkShard(options.shard);
    const plan = this.plan(seqLen, seed, at.epoch);
    const out = new Int32Array(batchSize * (seqLen + 1));
    const first = (at.position * count + rank) * batchSize;
    for (let i = 0; i < batchSize; i++) {
      this.train.read(plan.offset + plan.order[first + i] * seqLen, seqLen + 1, out, i * (seqLen + 1));
    }
    return out;
  }

  /**
   * Training batches from `start` on (default the very beginning), epoch after epoch without end.
   * Checks eagerly that the corpus holds one batch.
   */
  batches(options: BatchOptions, start: BatchPosition = { epoch: 0, position: 0 }): Generator<Batch, never> {
    const perEpoch = this.batchesPerEpoch(options);
    checkInteger(start.epoch, 0, 'resume epoch');
    checkInteger(start.position, 0, 'resume position');
    check(
      start.position <= perEpoch,
      () =>
        `resume position ${start.position} is past the end of an epoch of ${perEpoch} batches ` +
        `(was the corpus, seqLen, batchSize or shard count changed since the checkpoint?)`,
    );
    // A checkpoint taken right after an epoch's last batch may say position == perEpoch.
    let epoch = start.position === perEpoch ? start.epoch + 1 : start.epoch;
    let position = start.position === perEpoch ? 0 : start.position;
    const self = this;
    return (function* (): Generator<Batch, never> {
      for (;;) {
        const tokens = self.batchAt(options, { epoch, position });
        const next = position + 1 === perEpoch ? { epoch: epoch + 1, position: 0 } : { epoch, position: position + 1 };
        yield { tokens, epoch, position, next };
        ({ epoch, position } = next);
      }
    })();
  }

  /** Validation sequences of `seqLen + 1` tokens (stride `seqLen`) that the held-out tokens hold. */
  validationSequenceCount(seqLen: number): number {
    checkSeqLen(seqLen);
    return this.validation.sequenceCount(seqLen);
  }

  /**
   * The validation set as sequences of `seqLen + 1` tokens in order (stride `seqLen`), in batches of up
   * to `batchSize` rows (the last may be smaller): for evaluation at any length, e.g. 2K, 8K, 32K.
   * `maxSequences` caps the work; `shard` deals the sequences out round-robin. Throws an InputError at
   * once when the held-out tokens are fewer than one sequence.
   */
  validationBatches(
    seqLen: number,
    options: { batchSize?: number; maxSequences?: number; shard?: BatchOptions['shard'] } = {},
  ): Generator<Int32Array, void> {
    const batchSize = options.batchSize ?? 1;
    checkInteger(batchSize, 1, 'batchSize');
    const { rank, count } = checkShard(options.shard);
    const available = this.validationSequenceCount(seqLen);
    check(available > 0, () =>
      this.validation.length === 0
        ? `${this.source}: no validation tokens (valFraction ${this.valFraction} of ${this.tokens} tokens); raise valFraction`
        : `${this.source}: the validation split holds ${this.validation.length} tokens, fewer than one sequence of ` +
          `${seqLen}+1; evaluate at a shorter length, raise valFraction (now ${this.valFraction}) or use a larger corpus`,
    );
    let total = available;
    if (options.maxSequences !== undefined) {
      checkInteger(options.maxSequences, 1, 'maxSequences');
      total = Math.min(total, options.maxSequences);
    }
    const mine: number[] = [];
    for (let j = rank; j < total; j += count) mine.push(j);
    const validation = this.validation;
    return (function* () {
      for (let b = 0; b < mine.length; b += batchSize) {
        const rows = Math.min(batchSize, mine.length - b);
        const out = new Int32Array(rows * (seqLen + 1));
        for (let i = 0; i < rows; i++) validation.read(mine[b + i] * seqLen, seqLen + 1, out, i * (seqLen + 1));
        yield out;
      }
    })();
  }

  close(): void {
    this.store.close();
  }
}
