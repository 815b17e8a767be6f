import { check } from '../errors.js';
import { mix32, permutation } from './hash.js';
import type { Tokenizer } from './tokenizer.js';
import type { TokenStore } from './token-store.js';

/**
 * Packing: documents become one token stream, each document followed by the tokenizer's end-of-document
 * id; the stream is cut into training sequences of `seqLen + 1` tokens (inputs are the first `seqLen`,
 * targets the last `seqLen`). Consecutive sequences overlap by one token (stride `seqLen`), so every
 * token but the first is a target exactly once per epoch.
 */

/** The tokens of each document followed by the end-of-document id, as a stream. */
export async function* tokenizeDocuments(
  documents: AsyncIterable<string> | Iterable<string>,
  tokenizer: Tokenizer,
): AsyncGenerator<Int32Array> {
  for await (const doc of documents) {
    if (doc.length === 0) continue;
    const ids = tokenizer.encode(doc);
    const out = new Int32Array(ids.length + 1);
    out.set(ids);
    out[ids.length] = tokenizer.eotId;
    yield out;
  }
}

/**
 * Streams training sequences of `seqLen + 1` tokens straight from documents, in reading order, with
 * nothing held but one sequence (for corpora read once; the TokenDataset adds the split and shuffling).
 * The tail shorter than a sequence is dropped.
 */
export async function* packSequences(
  documents: AsyncIterable<string> | Iterable<string>,
  tokenizer: Tokenizer,
  seqLen: number,
): AsyncGenerator<Int32Array> {
  checkSeqLen(seqLen);
  let seq = new Int32Array(seqLen + 1);
  let filled = 0;
  for await (const ids of tokenizeDocuments(documents, tokenizer)) {
    let i = 0;
    while (i < ids.length) {
      const n = Math.min(ids.length - i, seq.length - filled);
      seq.set(ids.subarray(i, i + n), filled);
      filled += n;
      i += n;
      if (filled === seq.length) {
        const next = new Int32Array(seqLen + 1);
        next[0] = seq[seqLen]; // the last target is the next sequence's first input
        yield seq;
        seq = next;
        filled = 1;
      }
    }
  }
}

export function checkSeqLen(seqLen: number, what = 'seqLen'): void {
  check(Number.isInteger(seqLen) && seqLen >= 1, () => `${what} must be a positive integer, got ${seqLen}`);
}

/** Splits a batch `[batch, seqLen + 1]` into inputs and targets, each `[batch, seqLen]`. */
export function splitBatch(tokens: Int32Array, seqLen: number): { inputs: Int32Array; targets: Int32Array } {
  const rows = tokens.length / (seqLen + 1);
  check(Number.isInteger(rows), () => `batch of ${tokens.length} tokens is not rows of seqLen + 1 = ${seqLen + 1}`);
  const inputs = new Int32Array(rows * seqLen);
  const targets = new Int32Array(rows * seqLen);
  for (let r = 0; r < rows; r++) {
    const row = tokens.subarray(r * (seqLen + 1), (r + 1) * (seqLen + 1));
    inputs.set(row.subarray(0, seqLen), r * seqLen);
    targets.set(row.subarray(1), r * seqLen);
  }
  return { inputs, targets };
}

/** A logical stream of tokens made of ranges of a store (the train or validation part of a corpus). */
export class RangeStream {
  readonly length: number;
  /** Stream position where each range starts. */
  private readonly starts: Float64Array;

  constructor(
    private readonly store: TokenStore,
    /** Flat [start, end, ...] in store positions, sorted, disjoint. */
    readonly ranges: Float64Array,
  ) {
    this.starts = new Float64Array(ranges.length / 2);
    let total = 0;
    for (let i = 0; i < ranges.length; i += 2) {
      this.starts[i / 2] = total;
      total += ranges[i + 1] - ranges[i];
    }
    this.length = total;
  }

  /** Copies stream tokens [pos, pos + count) into `out` at `outOffset`. */
  read(pos: number, count: number, out: Int32Array, outOffset: number): void {
    if (!(pos >= 0 && count >= 0 && pos + count <= this.length)) {
      throw new RangeError(`stream range [${pos}, ${pos + count}) outside [0, ${this.length})`);
    }
    // The last range starting at or before pos.
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= pos) lo = mid;
      else hi = mid - 1;
    }
    let r = lo;
    while (count > 0) {
      const within = pos - this.starts[r];
      const n = Math.min(count, this.ranges[2 * r + 1] - this.ranges[2 * r] - within);
      if (n > 0) {
        this.store.read(this.ranges[2 * r] + within, n, out, outOffset);
        pos += n;
        count -= n;
        outOffset += n;
      }
      r++;
    }
  }

  /** Number of whole sequences of `seqLen + 1` tokens at stride `seqLen`. */
  sequenceCount(seqLen: number): number {
    return this.length > seqLen ? Math.floor((this.length - 1) / seqLen) : 0;
  }
}

/**
 * Where the sequences of one training epoch come from: a start offset (so sequence boundaries move
 * between epochs, using the tokens a whole number of sequences leaves over) and a shuffled order; both
 * fixed by (seed, epoch).
 */
export interface EpochPlan {
  offset: number;
  order: Uint32Array;
}

export function epochPlan(streamLength: number, seqLen: number, seed: number, epoch: number): EpochPlan {
  const count = streamLength > seqLen ? Math.floor((streamLength - 1) / seqLen) : 0;
  const spare = streamLength - 1 - count * seqLen; // in [0, seqLen)
  return {
    offset: count > 0 ? mix32(seed, epoch, 0x6f6666) % (spare + 1) : 0,
    order: permutation(count, mix32(seed, epoch, 0x6f7264)),
  };
}
