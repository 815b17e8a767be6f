import { check } from '../errors.js';

/**
 * Default share of a corpus's tokens held out for validation: 10%, so that the default corpus (546K
 * bytes) holds out one contiguous 32K-token sequence for evaluation at the paper's longest length with
 * the byte tokenizer (5% would not).
 */
export const DEFAULT_VAL_FRACTION = 0.1;

/** The documents of a tokenized corpus: where each starts, how many tokens (with its separator), its text hash. */
export interface DocumentTable {
  count: number;
  offsets: Float64Array;
  lengths: Float64Array;
  hashes: Float64Array;
}

/**
 * Chooses the validation tokens: `round(valFraction * totalTokens)` of them, as whole documents taken in
 * the order of their text hash, and, for the document where the quota runs out, one contiguous slice of
 * it at a position also fixed by its hash. So the split
 * - is the same on every run and does not depend on the order documents were read (only on their text);
 * - keeps held-out text contiguous, as evaluation at long lengths needs;
 * - meets the fraction exactly, even for a corpus of one document (the default corpus is one file).
 * Returns the validation ranges as flat [start, end, start, end, ...], sorted and disjoint.
 */
export function selectValidation(docs: DocumentTable, totalTokens: number, valFraction: number): Float64Array {
  check(
    Number.isFinite(valFraction) && valFraction >= 0 && valFraction <= 1,
    () => `valFraction must be in [0, 1], got ${valFraction}`,
  );
  let need = Math.round(valFraction * totalTokens);
  const order = Array.from({ length: docs.count }, (_, i) => i);
  order.sort((a, b) => docs.hashes[a] - docs.hashes[b] || docs.offsets[a] - docs.offsets[b]);
  const ranges: number[] = [];
  for (const i of order) {
    if (need <= 0) break;
    const offset = docs.offsets[i];
    const length = docs.lengths[i];
    if (length <= need) {
      ranges.push(offset, offset + length);
      need -= length;
    } else {
      const start = offset + (docs.hashes[i] % (length - need + 1));
      ranges.push(start, start + need);
      need = 0;
    }
  }
  // Sort the [start, end) pairs by start and merge neighbours.
  const pairs: [number, number][] = [];
  for (let i = 0; i < ranges.length; i += 2) pairs.push([ranges[i], ranges[i + 1]]);
  pairs.sort((a, b) => a[0] - b[0]);
  const merged: number[] = [];
  for (const [s, e] of pairs) {
    if (merged.length > 0 && merged[merged.length - 1] === s) merged[merged.length - 1] = e;
    else merged.push(s, e);
  }
  return Float64Array.from(merged);
}

/** The ranges of [0, total) not covered by `ranges` (flat, sorted, disjoint). */
export function complementRanges(ranges: Float64Array, total: number): Float64Array {
  const out: number[] = [];
  let at = 0;
  for (let i = 0; i < ranges.length; i += 2) {
    if (ranges[i] > at) out.push(at, ranges[i]);
    at = ranges[i + 1];
  }
  if (at < total) out.push(at, total);
  return Float64Array.from(out);
}
