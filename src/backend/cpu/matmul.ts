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
  const acc = new Float64Array(n);
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
    if (transB && rows === ROW_BLOCK) {
      dotTile(aRows, b, bBase, c, row * n, n, k);
    } else if (transB) {
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
      axpyTile(aRows, b, bBase, c, row * n, n, k);
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

/**
 * Four rows of C = A B^T (B is [n, k]) as dot products of contiguous rows, four columns at a time: the 16
 * sums are independent, so they overlap, and each loaded value of A and B serves four of them. Every output
 * still adds its k products in order, so the result is the same as one dot product at a time.
 */
function dotTile(aRows: Float64Array, b: FloatArray, bBase: number, c: FloatArray, cBase: number, n: number, k: number): void {
  const k2 = 2 * k;
  const k3 = 3 * k;
  const n2 = 2 * n;
  const n3 = 3 * n;
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const b0 = bBase + j * k;
    const b1 = b0 + k;
    const b2 = b1 + k;
    const b3 = b2 + k;
    let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
    for (let p = 0; p < k; p++) {
      const a0 = aRows[p]!;
      const a1 = aRows[k + p]!;
      const a2 = aRows[k2 + p]!;
      const a3 = aRows[k3 + p]!;
      const v0 = b[b0 + p]!;
      const v1 = b[b1 + p]!;
      const v2 = b[b2 + p]!;
      const v3 = b[b3 + p]!;
      s00 += a0 * v0; s01 += a0 * v1; s02 += a0 * v2; s03 += a0 * v3;
      s10 += a1 * v0; s11 += a1 * v1; s12 += a1 * v2; s13 += a1 * v3;
      s20 += a2 * v0; s21 += a2 * v1; s22 += a2 * v2; s23 += a2 * v3;
      s30 += a3 * v0; s31 += a3 * v1; s32 += a3 * v2; s33 += a3 * v3;
    }
    const c0 = cBase + j;
    c[c0] = s00; c[c0 + 1] = s01; c[c0 + 2] = s02; c[c0 + 3] = s03;
    c[c0 + n] = s10; c[c0 + n + 1] = s11; c[c0 + n + 2] = s12; c[c0 + n + 3] = s13;
    c[c0 + n2] = s20; c[c0 + n2 + 1] = s21; c[c0 + n2 + 2] = s22; c[c0 + n2 + 3] = s23;
    c[c0 + n3] = s30; c[c0 + n3 + 1] = s31; c[c0 + n3 + 2] = s32; c[c0 + n3 + 3] = s33;
  }
  for (; j < n; j++) {
    const bj = bBase + j * k;
    for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += aRows[r * k + p]! * b[bj + p]!;
      c[cBase + r * n + j] = s;
    }
  }
}

/**
 * Four rows of C = A B (B is [k, n]), four columns at a time: 16 independent sums kept in registers while
 * p runs over k, each loaded value of A and B serving four of them. Every output adds its k products in
 * order, as a row-at-a-time accumulation would. (dotTile with B's other layout: one function taking both
 * layouts as strides ran about 30% slower.)
 */
function axpyTile(aRows: Float64Array, b: FloatArray, bBase: number, c: FloatArray, cBase: number, n: number, k: number): void {
  const k2 = 2 * k;
  const k3 = 3 * k;
  const n2 = 2 * n;
  const n3 = 3 * n;
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
    let bp = bBase + j;
    for (let p = 0; p < k; p++, bp += n) {
      const a0 = aRows[p]!;
      const a1 = aRows[k + p]!;
      const a2 = aRows[k2 + p]!;
      const a3 = aRows[k3 + p]!;
      const v0 = b[bp]!;
      const v1 = b[bp + 1]!;
      const v2 = b[bp + 2]!;
      const v3 = b[bp + 3]!;
      s00 += a0 * v0; s01 += a0 * v1; s02 += a0 * v2; s03 += a0 * v3;
      s10 += a1 * v0; s11 += a1 * v1; s12 += a1 * v2; s13 += a1 * v3;
      s20 += a2 * v0; s21 += a2 * v1; s22 += a2 * v2; s23 += a2 * v3;
      s30 += a3 * v0; s31 += a3 * v1; s32 += a3 * v2; s33 += a3 * v3;
    }
    const c0 = cBase + j;
    c[c0] = s00; c[c0 + 1] = s01; c[c0 + 2] = s02; c[c0 + 3] = s03;
    c[c0 + n] = s10; c[c0 + n + 1] = s11; c[c0 + n + 2] = s12; c[c0 + n + 3] = s13;
    c[c0 + n2] = s20; c[c0 + n2 + 1] = s21; c[c0 + n2 + 2] = s22; c[c0 + n2 + 3] = s23;
    c[c0 + n3] = s30; c[c0 + n3 + 1] = s31; c[c0 + n3 + 2] = s32; c[c0 + n3 + 3] = s33;
  }
  for (; j < n; j++) {
    for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += aRows[r * k + p]! * b[bBase + p * n + j]!;
      c[cBase + r * n + j] = s;
    }
  }
}
