import type { FloatArray } from '../../tensor/dtype.js';

/** Everything a range of output rows needs; plain data so that worker threads can take a share. */
export interface MatmulArgs {
  a: FloatArray; b: FloatArray; c: FloatArray;
  aOffsets: Int32Array; bOffsets: Int32Array; // per output batch, where that batch's matrix starts
  m: number; n: number; k: number;
  transA: boolean; transB: boolean;
}

/** Rows of C computed together, so that each row of B is read once per block rather than once per row. */
const ROW_BLOCK = 4;

/** Computes output rows [begin, end) of the flattened [batch * m, n] result. */
export function matmulRows(args: MatmulArgs, begin: number, end: number): void {
  const { a, b, c, aOffsets, bOffsets, m, n, k, transA, transB } = args;
  const acc = new Float64Array(ROW_BLOCK * n);
  const aRows = new Float64Array(ROW_BLOCK * k);
  let row = begin;
  while (row < end) {
    const batch = (row / m) | 0;
    const i0 = row - batch * m;
    // a block never crosses a batch boundary
    const rows = Math.min(ROW_BLOCK, end - row, m - i0);
    const aBase = aOffsets[batch]!;
    const bBase = bOffsets[batch]!;
    for (let r = 0; r < rows; r++) {
      const i = i0 + r;
      if (transA) for (let p = 0; p < k; p++) aRows[r * k + p] = a[aBase + p * m + i]!;
      else for (let p = 0; p < k; p++) aRows[r * k + p] = a[aBase + i * k + p]!;
    }
    if (transB) {
      // B is [n, k]: each output is a dot product of two contiguous rows
      for (let r = 0; r < rows; r++) {
        const ar = r * k;
        const cBase = (row + r) * n;
        for (let j = 0; j < n; j++) {
          const bj = bBase + j * k;
          let s = 0;
          for (let p = 0; p < k; p++) s += aRows[ar + p]! * b[bj + p]!;
          c[cBase + j] = s;
        }
      }
    } else if (rows === ROW_BLOCK) {
      // B is [k, n]: accumulate scaled rows of B into four rows of C at once
      acc.fill(0);
      const n2 = 2 * n;
      const n3 = 3 * n;
      for (let p = 0; p < k; p++) {
        const a0 = aRows[p]!;
        const a1 = aRows[k + p]!;
        const a2 = aRows[2 * k + p]!;
        const a3 = aRows[3 * k + p]!;
        const bp = bBase + p * n;
        for (let j = 0; j < n; j++) {
          const bv = b[bp + j]!;
          acc[j] += a0 * bv;
          acc[n + j] += a1 * bv;
          acc[n2 + j] += a2 * bv;
          acc[n3 + j] += a3 * bv;
        }
      }
      for (let j = 0; j < ROW_BLOCK * n; j++) c[row * n + j] = acc[j]!;
    } else {
      for (let r = 0; r < rows; r++) {
        acc.fill(0, 0, n);
        for (let p = 0; p < k; p++) {
          const ap = aRows[r * k + p]!;
          const bp = bBase + p * n;
          for (let j = 0; j < n; j++) acc[j] += ap * b[bp + j]!;
        }
        const cBase = (row + r) * n;
        for (let j = 0; j < n; j++) c[cBase + j] = acc[j]!;
      }
    }
    row += rows;
  }
}
