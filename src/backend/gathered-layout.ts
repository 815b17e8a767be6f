import type { GatheredAttentionLayout } from './backend.js';

/**
 * Checks a packed attention layout against the row counts of its operands, for every backend: a mistake
 * here would make a kernel read out of bounds.
 */
export function checkGatheredLayout(layout: GatheredAttentionLayout, rowsQ: number, rowsK: number): void {
  const { qOffsets, kOffsets, headDim } = layout;
  if (!(Number.isInteger(headDim) && headDim > 0)) throw new RangeError(`gatheredAttention: headDim ${headDim}`);
  if (!Number.isInteger(rowsQ) || !Number.isInteger(rowsK)) {
    throw new RangeError(`gatheredAttention: sizes are not multiples of headDim ${headDim}`);
  }
  const groups = qOffsets.length - 1;
  if (groups < 0 || kOffsets.length !== qOffsets.length) {
    throw new RangeError(`gatheredAttention: ${qOffsets.length} query offsets but ${kOffsets.length} key offsets`);
  }
  for (const [name, offsets, rows] of [['query', qOffsets, rowsQ], ['key', kOffsets, rowsK]] as const) {
    if (offsets[0] !== 0 || offsets[groups] !== rows) {
      throw new RangeError(`gatheredAttention: ${name} offsets span [${offsets[0]}, ${offsets[groups]}) but there are ${rows} rows`);
    }
    for (let g = 0; g < groups; g++) {
      if (offsets[g + 1]! < offsets[g]!) throw new RangeError(`gatheredAttention: ${name} offsets decrease at group ${g}`);
    }
  }
}
