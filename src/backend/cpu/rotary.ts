import type { FloatArray } from '../../tensor/dtype.js';
import { allocLike } from './storage.js';

/**
 * Rotary positions over pairs (Backend.rotatePairs): x [outer, positions, inner, dim], tables
 * [positions, dim]. Each output element is a sum of two products, so the result is the same whatever the
 * order of the loops.
 */
export function rotatePairsKernel(
  x: FloatArray, cos: FloatArray, sin: FloatArray, outer: number, positions: number, inner: number, dim: number, transpose: boolean,
): FloatArray {
  const y = allocLike(x) as FloatArray;
  // in transpose mode the partner's sine multiplies the partner: its index is e ^ 1, as for x
  const sinShift = transpose ? 1 : 0;
  let base = 0;
  for (let b = 0; b < outer; b++) {
    for (let p = 0; p < positions; p++) {
      const table = p * dim;
      for (let h = 0; h < inner; h++, base += dim) {
        for (let e = 0; e < dim; e++) {
          const partner = e ^ 1;
          y[base + e] = x[base + e]! * cos[table + e]! + x[base + partner]! * sin[table + (e ^ sinShift)]!;
        }
      }
    }
  }
  return y;
}
