/**
 * Register-blocked tile products of the attention kernels, on contiguous float64 rows of length D.
 * Each inner loop updates a 2 x 4 block of results so that one load serves several multiply-adds
 * (V8 does not vectorize; fewer loads per flop is what speeds scalar code up).
 *
 * Causal tiles: row i may see key j only when j <= i (both indices within the segment). The products
 * skip whole blocks above the diagonal; entries of a score tile that row i may not see are set to the
 * caller's mask value.
 */

/** Last key (exclusive) that row i may see in a tile ending at j1. */
function limit(causal: boolean, i: number, j1: number): number {
  return causal && i + 1 < j1 ? i + 1 : j1;
}

/**
 * S[(i - i0) * ld + (j - j0)] = A_i . B_j for rows i in [i0, i1) and keys j in [j0, j1); entries a causal
 * row may not see get `masked`.
 */
export function scoreTile(
  A: Float64Array, B: Float64Array, D: number, i0: number, i1: number, j0: number, j1: number,
  causal: boolean, masked: number, S: Float64Array, ld: number,
): void {
  let i = i0;
  for (; i + 1 < i1; i += 2) {
    const a0 = i * D, a1 = a0 + D;
    const s0 = (i - i0) * ld - j0, s1 = s0 + ld;
    const jEnd = limit(causal, i + 1, j1);
    let j = j0;
    for (; j + 3 < jEnd; j += 4) {
      const b0 = j * D, b1 = b0 + D, b2 = b1 + D, b3 = b2 + D;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      for (let d = 0; d < D; d++) {
        const x0 = A[a0 + d]!, x1 = A[a1 + d]!;
        const y0 = B[b0 + d]!, y1 = B[b1 + d]!, y2 = B[b2 + d]!, y3 = B[b3 + d]!;
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
      }
      S[s0 + j] = c00; S[s0 + j + 1] = c01; S[s0 + j + 2] = c02; S[s0 + j + 3] = c03;
      S[s1 + j] = c10; S[s1 + j + 1] = c11; S[s1 + j + 2] = c12; S[s1 + j + 3] = c13;
    }
    for (; j < jEnd; j++) {
      const b0 = j * D;
      let c0 = 0, c1 = 0;
      for (let d = 0; d < D; d++) {
        const y = B[b0 + d]!;
        c0 += A[a0 + d]! * y;
        c1 += A[a1 + d]! * y;
      }
      S[s0 + j] = c0;
      S[s1 + j] = c1;
    }
    if (causal) {
      for (let jj = Math.max(limit(true, i, j1), j0); jj < j1; jj++) S[s0 + jj] = masked;
      for (let jj = Math.max(jEnd, j0); jj < j1; jj++) S[s1 + jj] = masked;
    }
  }
  if (i < i1) {
    const a0 = i * D;
    const s0 = (i - i0) * ld - j0;
    const jEnd = limit(causal, i, j1);
    let j = j0;
    for (; j < jEnd; j++) {
      const b0 = j * D;
      let c0 = 0;
      for (let d = 0; d < D; d++) c0 += A[a0 + d]! * B[b0 + d]!;
      S[s0 + j] = c0;
    }
    for (j = Math.max(jEnd, j0); j < j1; j++) S[s0 + j] = masked;
  }
}

/**
 * C_i += sum_j W[(i - i0) * ld + (j - j0)] * B_j for rows i in [i0, i1), keys j in [j0, j1) (j <= i if
 * causal; W must be 0 at masked entries, which the 2-row blocks may read).
 */
export function accumulateRows(
  W: Float64Array, ld: number, B: Float64Array, D: number, i0: number, i1: number, j0: number, j1: number,
  causal: boolean, C: Float64Array,
): void {
  let i = i0;
  for (; i + 1 < i1; i += 2) {
    const c0 = i * D, c1 = c0 + D;
    const w0 = (i - i0) * ld - j0, w1 = w0 + ld;
    const jEnd = limit(causal, i + 1, j1);
    let j = j0;
    for (; j + 3 < jEnd; j += 4) {
      const b0 = j * D, b1 = b0 + D, b2 = b1 + D, b3 = b2 + D;
      const p00 = W[w0 + j]!, p01 = W[w0 + j + 1]!, p02 = W[w0 + j + 2]!, p03 = W[w0 + j + 3]!;
      const p10 = W[w1 + j]!, p11 = W[w1 + j + 1]!, p12 = W[w1 + j + 2]!, p13 = W[w1 + j + 3]!;
      for (let d = 0; d < D; d++) {
        const y0 = B[b0 + d]!, y1 = B[b1 + d]!, y2 = B[b2 + d]!, y3 = B[b3 + d]!;
        C[c0 + d] += p00 * y0 + p01 * y1 + p02 * y2 + p03 * y3;
        C[c1 + d] += p10 * y0 + p11 * y1 + p12 * y2 + p13 * y3;
      }
    }
    for (; j < jEnd; j++) {
      const b0 = j * D;
      const p0 = W[w0 + j]!, p1 = W[w1 + j]!;
      for (let d = 0; d < D; d++) {
        const y = B[b0 + d]!;
        C[c0 + d] += p0 * y;
        C[c1 + d] += p1 * y;
      }
    }
  }
  if (i < i1) {
    const c0 = i * D;
    const w0 = (i - i0) * ld - j0;
    const jEnd = limit(causal, i, j1);
    for (let j = j0; j < jEnd; j++) {
      const b0 = j * D;
      const p = W[w0 + j]!;
      for (let d = 0; d < D; d++) C[c0 + d] += p * B[b0 + d]!;
    }
  }
}

/**
 * C_j += sum_i W[(i - i0) * ld + (j - j0)] * A_i for keys j in [j0, j1), rows i in [i0, i1) (i >= j if
 * causal; W must be 0 at masked entries, which the 2-key blocks may read).
 */
export function accumulateColumns(
  W: Float64Array, ld: number, A: Float64Array, D: number, i0: number, i1: number, j0: number, j1: number,
  causal: boolean, C: Float64Array,
): void {
  let j = j0;
  for (; j + 1 < j1; j += 2) {
    const c0 = j * D, c1 = c0 + D;
    const w = j - j0;
    let i = causal && j > i0 ? j : i0;
    for (; i + 3 < i1; i += 4) {
      const a0 = i * D, a1 = a0 + D, a2 = a1 + D, a3 = a2 + D;
      const r0 = (i - i0) * ld + w, r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
      const p00 = W[r0]!, p10 = W[r1]!, p20 = W[r2]!, p30 = W[r3]!;
      const p01 = W[r0 + 1]!, p11 = W[r1 + 1]!, p21 = W[r2 + 1]!, p31 = W[r3 + 1]!;
      for (let d = 0; d < D; d++) {
        const x0 = A[a0 + d]!, x1 = A[a1 + d]!, x2 = A[a2 + d]!, x3 = A[a3 + d]!;
        C[c0 + d] += p00 * x0 + p10 * x1 + p20 * x2 + p30 * x3;
        C[c1 + d] += p01 * x0 + p11 * x1 + p21 * x2 + p31 * x3;
      }
    }
    for (; i < i1; i++) {
      const a0 = i * D;
      const r0 = (i - i0) * ld + w;
      const p0 = W[r0]!, p1 = W[r0 + 1]!;
      for (let d = 0; d < D; d++) {
        const x = A[a0 + d]!;
        C[c0 + d] += p0 * x;
        C[c1 + d] += p1 * x;
      }
    }
  }
  if (j < j1) {
    const c0 = j * D;
    const w = j - j0;
    for (let i = causal && j > i0 ? j : i0; i < i1; i++) {
      const a0 = i * D;
      const p = W[(i - i0) * ld + w]!;
      for (let d = 0; d < D; d++) C[c0 + d] += p * A[a0 + d]!;
    }
  }
}
