import { check, InputError } from '../errors.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { AnyModelConfig } from './config.js';

/**
 * Exact cached decoding for causal dilated attention.
 *
 * Why it is exact: for a query at position p of a sequence of N > p tokens, pattern (w, r) clips its
 * segments to w' = min(w, N). If N <= w there is one segment [0, N), which starts at 0 = floor(p/w)*w
 * since p < N <= w; otherwise the segment holding p starts at floor(p/w)*w. Either way the segment
 * start, the residue (p - start) mod r and the causal keys (positions start + o + j*r <= p) do not
 * depend on N. So the output at p is the same for every length past p, and a decode step attends each
 * new query to exactly those keys of the cache, one softmax over the multiset of all patterns' keys
 * (a key two patterns select counts twice), as docs/ATTENTION.md defines.
 *
 * Memory stays bounded: a query at position p or later only reaches keys at floor(p/w_i)*w_i or later,
 * so keys before min_i floor(p/w_i)*w_i are dropped (at most the largest segment is kept).
 */

/** A pattern as the cache sees it: dense attention is one segment of unbounded length. */
export interface CachePattern {
  readonly segmentLength: number; // Infinity for dense
  readonly dilationRate: number;
}

export function cachePatterns(config: AnyModelConfig): CachePattern[] {
  const a = config.attention;
  if (a.kind === 'dense') return [{ segmentLength: Infinity, dilationRate: 1 }];
  if (a.kind === 'sparse-fixed') {
    throw new InputError('cached decoding supports dilated and dense attention, not sparse-fixed (score it with a full forward pass)');
  }
  return a.segmentLengths.map((w, i) => ({ segmentLength: w, dilationRate: a.dilationRates[i]! }));
}

function segmentStart(p: number, w: number): number {
  return Number.isFinite(w) ? Math.floor(p / w) * w : 0;
}

/** The first position a query at `position` or later can attend to. */
export function firstReachable(patterns: readonly CachePattern[], position: number): number {
  return Math.min(...patterns.map((pat) => segmentStart(position, pat.segmentLength)));
}

/** Finite stand-in for -inf (safe in float32): keys no pattern selects get weight exp(-1e30) = 0. */
const NO_KEY = -1e30;

/**
 * The multiset mask of queries [queryStart, queryStart + queries) against keys [keyStart, keyStart + keys):
 * `logCount` [H, T, L] is log(how many patterns select the key for that head and query), NO_KEY for
 * none; `selected` [H, T, 1] is 1 where some pattern selects the query (others output 0, as docs/ATTENTION.md defines).
 * Head h uses offset h mod r (the paper's rule).
 */
export function decodeMask(
  patterns: readonly CachePattern[], heads: number, queryStart: number, queries: number, keyStart: number, keys: number,
): { logCount: Float64Array; selected: Float64Array } {
  const counts = new Uint16Array(heads * queries * keys);
  const selected = new Float64Array(heads * queries);
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < queries; t++) {
      const p = queryStart + t;
      const row = (h * queries + t) * keys;
      for (const { segmentLength, dilationRate: r } of patterns) {
        const start = segmentStart(p, segmentLength);
        const o = h % r;
        if ((p - start) % r !== o) continue;
        selected[h * queries + t] = 1;
        for (let j = start + o; j <= p; j += r) {
          const at = j - keyStart;
          if (at < 0 || at >= keys) throw new Error(`internal: decode needs key ${j}, the cache holds [${keyStart}, ${keyStart + keys})`);
          counts[row + at]!++;
        }
      }
    }
  }
  const logCount = new Float64Array(counts.length);
  for (let i = 0; i < counts.length; i++) logCount[i] = counts[i] === 0 ? NO_KEY : Math.log(counts[i]!);
  return { logCount, selected };
}

/**
 * Attention of new rotated queries q [B, T, H, D] to cached keys and values [B, H, L, D] under a mask
 * from `decodeMask` (as tensors [H, T, L] and [H, T, 1]): [B, T, H, D].
 */
export function cachedAttention(q: Tensor, keys: Tensor, values: Tensor, mask: { logCount: Tensor; selected: Tensor }, scale: number): Tensor {
  const qh = T.permute(q, [0, 2, 1, 3]);
  const scores = T.add(T.mulScalar(T.matmul(qh, keys, { transB: true }), scale), mask.logCount);
  const weights = T.mul(T.softmax(scores), mask.selected);
  return T.permute(T.matmul(weights, values), [0, 2, 1, 3]);
}

/**
 * Keys (after XPos) and values of every layer for the positions [start, position) that later queries
 * can still reach, each [B, H, L, D]. XPos factors use one center for the cache's whole life.
 */
export class DecoderCache {
  /** Tokens processed so far: the position of the next token. */
  position = 0;
  /** The first position held. */
  start = 0;
  private readonly keyStates: (Tensor | null)[];
  private readonly valueStates: (Tensor | null)[];

  constructor(
    readonly batch: number,
    readonly layers: number,
    /** The XPos center of every position in this cache. */
    readonly center: number,
    /** The most tokens this cache accepts, or null for no limit but XPos's. */
    readonly maxLength: number | null,
  ) {
    check(Number.isInteger(batch) && batch > 0, `cache: batch = ${batch} is not a positive integer`);
    this.keyStates = new Array<Tensor | null>(layers).fill(null);
    this.valueStates = new Array<Tensor | null>(layers).fill(null);
  }

  /** Positions held per layer (bounded by the largest segment for dilated schedules). */
  get heldLength(): number {
    return this.position - this.start;
  }

  keys(layer: number): Tensor | null {
    return this.keyStates[layer] ?? null;
  }

  values(layer: number): Tensor | null {
    return this.valueStates[layer] ?? null;
  }

  /** The held keys and values of `layer` followed by new ones [B, H, T, D] (the cache is not changed). */
  extended(layer: number, keys: Tensor, values: Tensor): { keys: Tensor; values: Tensor } {
    const k = this.keyStates[layer];
    const v = this.valueStates[layer];
    return { keys: k ? T.concat([k, keys], 2) : keys, values: v ? T.concat([v, values], 2) : values };
  }

  /**
   * Advances by `count` tokens: `layers[i]` holds layer i's keys and values for [start, position + count);
   * positions before `keepFrom` are dropped. Takes the tensors out of any tidy scope.
   */
  commit(layers: readonly { keys: Tensor; values: Tensor }[], count: number, keepFrom: number): void {
    const end = this.position + count;
    const from = Math.max(this.start, Math.min(keepFrom, end));
    const drop = from - this.start;
    layers.forEach(({ keys, values }, i) => {
      const trim = (t: Tensor): Tensor => {
        if (drop === 0) return t;
        const [b, h, l, d] = t.shape as [number, number, number, number];
        return T.slice(t, [0, 0, drop, 0], [b, h, l - drop, d]);
      };
      const k = T.keep(trim(keys));
      const v = T.keep(trim(values));
      if (this.keyStates[i] !== k) this.keyStates[i]?.dispose();
      if (this.valueStates[i] !== v) this.valueStates[i]?.dispose();
      this.keyStates[i] = k;
      this.valueStates[i] = v;
    });
    this.position = end;
    this.start = from;
  }

  dispose(): void {
    for (let i = 0; i < this.layers; i++) {
      this.keyStates[i]?.dispose();
      this.valueStates[i]?.dispose();
      this.keyStates[i] = null;
      this.valueStates[i] = null;
    }
  }
}
