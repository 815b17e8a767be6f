const BQ = 64, BK = 64;
const s = new Float64Array(BK), rowMax = new Float64Array(BQ), rowSum = new Float64Array(BQ);
export function flashForwardOld(q: Float64Array, k: Float64Array, v: Float64Array, m: number, D: number, causal: boolean, out: Float64Array, lseOut: Float64Array): void {
  for (let i0 = 0; i0 < m; i0 += BQ) {
    const i1 = Math.min(m, i0 + BQ);
    out.fill(0, i0 * D, i1 * D); rowMax.fill(-Infinity, 0, i1 - i0); rowSum.fill(0, 0, i1 - i0);
    const jEnd = causal ? i1 : m;
    for (let j0 = 0; j0 < jEnd; j0 += BK) {
      const j1 = Math.min(jEnd, j0 + BK);
      for (let i = i0; i < i1; i++) {
        const jn = causal && i + 1 < j1 ? i + 1 : j1;
        if (jn > j0) rowTile(q, k, v, D, i, j0, jn, out, i - i0);
      }
    }
    for (let i = i0; i < i1; i++) {
      const t = i - i0; const inv = 1 / rowSum[t]!; const oi = i * D;
      for (let d = 0; d < D; d++) out[oi + d] *= inv;
      lseOut[i] = rowMax[t]! + Math.log(rowSum[t]!);
    }
  }
}
function rowTile(q: Float64Array, k: Float64Array, v: Float64Array, D: number, i: number, j0: number, jn: number, out: Float64Array, t: number): void {
  const qi = i * D; let tileMax = -Infinity; let j = j0;
  for (; j + 3 < jn; j += 4) {
    const k0 = j * D, k1 = k0 + D, k2 = k1 + D, k3 = k2 + D;
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let d = 0; d < D; d++) { const x = q[qi + d]!; a0 += x * k[k0 + d]!; a1 += x * k[k1 + d]!; a2 += x * k[k2 + d]!; a3 += x * k[k3 + d]!; }
    const n = j - j0; s[n] = a0; s[n + 1] = a1; s[n + 2] = a2; s[n + 3] = a3;
    const mm = Math.max(a0, a1, a2, a3); if (mm > tileMax) tileMax = mm;
  }
  for (; j < jn; j++) { const kj = j * D; let a = 0; for (let d = 0; d < D; d++) a += q[qi + d]! * k[kj + d]!; s[j - j0] = a; if (a > tileMax) tileMax = a; }
  const oi = i * D; let mx = rowMax[t]!;
  if (tileMax > mx) { if (mx !== -Infinity) { const alpha = Math.exp(mx - tileMax); rowSum[t]! *= alpha; for (let d = 0; d < D; d++) out[oi + d] *= alpha; } mx = tileMax; rowMax[t] = mx; }
  let sum = 0; const n = jn - j0;
  for (let x = 0; x < n; x++) { const p = Math.exp(s[x]! - mx); s[x] = p; sum += p; }
  rowSum[t]! += sum;
  j = j0;
  for (; j + 3 < jn; j += 4) { const n0 = j - j0; const p0 = s[n0]!, p1 = s[n0 + 1]!, p2 = s[n0 + 2]!, p3 = s[n0 + 3]!; const v0 = j * D, v1 = v0 + D, v2 = v1 + D, v3 = v2 + D;
    for (let d = 0; d < D; d++) out[oi + d] += p0 * v[v0 + d]! + p1 * v[v1 + d]! + p2 * v[v2 + d]! + p3 * v[v3 + d]!; }
  for (; j < jn; j++) { const p = s[j - j0]!; const vj = j * D; for (let d = 0; d < D; d++) out[oi + d] += p * v[vj + d]!; }
}
