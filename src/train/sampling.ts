/**
 * Choosing the next token from one row of logits: greedy (temperature 0), or sampling with temperature,
 * top-k and top-p (nucleus) filtering, in that order (the convention of most generation libraries).
 * Pure functions of the logits and a seeded generator, so a seed gives the same text everywhere.
 */
import { check } from '../errors.js';
import type { Rng } from '../tensor/index.js';

export interface SamplingOptions {
  /** 0 means greedy; otherwise logits are divided by it. */
  temperature: number;
  /** Keep only the k most likely tokens (0 or undefined: no limit). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or undefined: all). */
  topP?: number;
}

export function checkSampling(o: SamplingOptions): void {
  check(Number.isFinite(o.temperature) && o.temperature >= 0, `temperature must be a number >= 0, got ${o.temperature}`);
  check(o.topK === undefined || (Number.isInteger(o.topK) && o.topK >= 0), `top-k must be a non-negative integer, got ${o.topK}`);
  check(o.topP === undefined || (Number.isFinite(o.topP) && o.topP > 0 && o.topP <= 1), `top-p must be in (0, 1], got ${o.topP}`);
}

/** Indices of `logits` from most to least likely; ties keep index order, so results are reproducible. */
function rankOrder(logits: ArrayLike<number>): number[] {
  const order = Array.from({ length: logits.length }, (_, i) => i);
  order.sort((a, b) => logits[b]! - logits[a]! || a - b);
  return order;
}

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** A copy of `logits` with all but the `k` largest set to -Infinity (ties at the boundary: lower index wins). */
export function filterTopK(logits: ArrayLike<number>, k: number): Float64Array {
  const out = Float64Array.from(logits);
  if (k <= 0 || k >= logits.length) return out;
  const order = rankOrder(logits);
  for (let j = k; j < order.length; j++) out[order[j]!] = -Infinity;
  return out;
}

/** Softmax of a row, in float64; -Infinity entries get probability 0. */
export function softmaxRow(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const out = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = logits[i] === -Infinity ? 0 : Math.exp(logits[i]! - max);
    out[i] = e;
    total += e;
  }
  for (let i = 0; i < out.length; i++) out[i]! /= total;
  return out;
}

/**
 * A copy of `logits` keeping the smallest set of most likely tokens whose total probability is at least
 * `p` (always at least one token), the others set to -Infinity.
 */
export function filterTopP(logits: ArrayLike<number>, p: number): Float64Array {
  const out = Float64Array.from(logits);
  if (p >= 1) return out;
  const probs = softmaxRow(logits);
  const order = rankOrder(logits);
  let cumulative = 0;
  let kept = 0;
  while (kept < order.length) {
    cumulative += probs[order[kept]!]!;
    kept++;
    if (cumulative >= p) break;
  }
  for (let j = kept; j < order.length; j++) out[order[j]!] = -Infinity;
  return out;
}

/** The filtered distribution sampling draws from (temperature, then top-k, then top-p). */
export function samplingDistribution(logits: ArrayLike<number>, o: SamplingOptions): Float64Array {
  check(o.temperature > 0, 'samplingDistribution needs a positive temperature');
  let row: Float64Array = Float64Array.from(logits, (x) => x / o.temperature);
  if (o.topK !== undefined && o.topK > 0) row = filterTopK(row, o.topK);
  if (o.topP !== undefined && o.topP < 1) row = filterTopP(row, o.topP);
  return softmaxRow(row);
}

/** The next token: argmax at temperature 0, else one draw from the filtered distribution. */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: Rng): number {
  if (o.temperature === 0) return argmax(logits);
  const probs = samplingDistribution(logits, o);
  const u = rng.next();
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    last = i;
    cumulative += probs[i]!;
    if (u < cumulative) return i;
  }
  return last; // rounding left the total a hair below u
}
