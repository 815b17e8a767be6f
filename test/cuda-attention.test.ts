// Dilated attention on the GPU against dense attention over the explicit multiset mask (docs/ATTENTION.md).
//
// FlashAttention's rule: the kernel's error against a float64 oracle is at most twice the error of a plain
// implementation in the kernel's precision, plus a floor. Two plain float32 implementations are measured:
// the CPU backend on float32 tensors (it accumulates in float64, so its error is little more than the
// final rounding) and the oracle itself with every operation rounded to float32 (what a naive float32
// kernel does); the bound uses the larger. The floor, 4 float32 ulps of the largest reference value,
// covers outputs that both plain versions happen to get exactly (rows with a single key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionConfig, AttentionGeometry, HeadOffsets } from '../src/backend/backend.js';
import { headOffset } from '../src/attention/patterns.js';
import { both, cpu, gpu, poison, readGpu, requireGpu, rng, seed, skip } from './cuda-support.js';

// these tests are about the exact float32 kernels (the fused bf16 ones: test/cuda-flash-attention.test.ts)
gpu?.setAttentionPrecision('fp32');

type Round = (x: number) => number;
const exact: Round = (x) => x;
const f32: Round = Math.fround;

interface Attn { o: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array }

/** Multiplicity of key p' for query p (the number of patterns that let p see p'), per head. */
function keyCounts(g: AttentionGeometry, c: AttentionConfig, h: number): Int32Array {
  const N = g.seqLen;
  const counts = new Int32Array(N * N);
  for (const { segmentLength, dilationRate: r } of c.patterns) {
    const w = Math.min(segmentLength, N);
    const off = headOffset(h, g.heads, r, c.headOffsets);
    for (let s0 = 0; s0 < N; s0 += w) {
      const sel: number[] = [];
      for (let p = s0 + off; p < Math.min(s0 + w, N); p += r) sel.push(p);
      for (const p of sel) for (const k of sel) if (!c.causal || k <= p) counts[p * N + k]!++;
    }
  }
  return counts;
}

/** Dense attention over the multiset mask, forward and backward, every operation passed through `rd`. */
function oracle(
  q: Float32Array, k: Float32Array, v: Float32Array, dO: Float32Array, g: AttentionGeometry, c: AttentionConfig, rd: Round,
): Attn {
  const { batch: B, seqLen: N, heads: H, headDim: D } = g;
  const n = B * N * H * D;
  const out: Attn = {
    o: new Float64Array(n), lse: new Float64Array(B * N * H), dq: new Float64Array(n), dk: new Float64Array(n), dv: new Float64Array(n),
  };
  const at = (b: number, p: number, h: number): number => ((b * N + p) * H + h) * D;
  const P = new Float64Array(N);
  for (let h = 0; h < H; h++) {
    const counts = keyCounts(g, c, h);
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < N; p++) {
        const qi = at(b, p, h);
        let m = -Infinity;
        for (let j = 0; j < N; j++) {
          P[j] = 0;
          if (!counts[p * N + j]) continue;
          let s = 0;
          const kj = at(b, j, h);
          for (let d = 0; d < D; d++) s = rd(s + rd(q[qi + d]! * k[kj + d]!));
          P[j] = rd(s * c.scale);
          m = Math.max(m, P[j]!);
        }
        const li = (b * N + p) * H + h;
        if (m === -Infinity) {
          out.lse[li] = -Infinity;
          continue;
        }
        let z = 0;
        for (let j = 0; j < N; j++) if (counts[p * N + j]) z = rd(z + rd(counts[p * N + j]! * rd(Math.exp(rd(P[j]! - m)))));
        const lse = rd(m + rd(Math.log(z)));
        out.lse[li] = lse;
        for (let j = 0; j < N; j++) P[j] = counts[p * N + j] ? rd(counts[p * N + j]! * rd(Math.exp(rd(P[j]! - lse)))) : 0;
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < N; j++) if (P[j]) acc = rd(acc + rd(P[j]! * v[at(b, j, h) + d]!));
          out.o[qi + d] = acc;
        }
        // backward of this row: dS = P (dP - Dsum), dq = scale dS k, dk += scale dS q, dv += P dO
        let dsum = 0;
        for (let d = 0; d < D; d++) dsum = rd(dsum + rd(dO[qi + d]! * out.o[qi + d]!));
        for (let j = 0; j < N; j++) {
          if (!P[j]) continue;
          const kj = at(b, j, h);
          let dp = 0;
          for (let d = 0; d < D; d++) dp = rd(dp + rd(dO[qi + d]! * v[kj + d]!));
          const ds = rd(P[j]! * rd(dp - dsum));
          const dss = rd(ds * c.scale);
          for (let d = 0; d < D; d++) {
            out.dq[qi + d] = rd(out.dq[qi + d]! + rd(dss * k[kj + d]!));
            out.dk[kj + d] = rd(out.dk[kj + d]! + rd(dss * q[qi + d]!));
            out.dv[kj + d] = rd(out.dv[kj + d]! + rd(P[j]! * dO[qi + d]!));
          }
        }
      }
    }
  }
  return out;
}

function maxAbsError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) {
    if (ref[i] === -Infinity) continue;
    e = Math.max(e, Math.abs(a[i]! - ref[i]!));
  }
  return e;
}

function maxAbs(ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) if (Number.isFinite(ref[i]!)) m = Math.max(m, Math.abs(ref[i]!));
  return m;
}

interface Case {
  B: number; N: number; H: number; D: number;
  w: number[]; r: number[]; causal: boolean; offsets?: HeadOffsets;
}

const CASES: Case[] = [];
for (const causal of [false, true]) {
  CASES.push({ B: 2, N: 77, H: 3, D: 16, w: [77], r: [1], causal }); // vanilla attention
  CASES.push({ B: 1, N: 150, H: 4, D: 64, w: [16, 32, 64], r: [1, 2, 4], causal });
  CASES.push({ B: 1, N: 100, H: 2, D: 24, w: [9], r: [3], causal }); // offset 2 is no head's: empty rows
  CASES.push({ B: 1, N: 97, H: 3, D: 32, w: [8, 16, 32], r: [1, 2, 4], causal, offsets: 'blocked' });
  CASES.push({ B: 1, N: 700, H: 2, D: 64, w: [128, 256, 512], r: [1, 2, 4], causal }); // several tiles a segment
  CASES.push({ B: 2, N: 45, H: 2, D: 8, w: [4096, 20], r: [2, 1], causal }); // segments longer than N
}
CASES.push({ B: 1, N: 90, H: 2, D: 40, w: [30, 90], r: [1, 3], causal: true });
CASES.push({ B: 1, N: 90, H: 2, D: 80, w: [30, 90], r: [1, 3], causal: false });
CASES.push({ B: 1, N: 70, H: 1, D: 136, w: [35, 70], r: [1, 2], causal: true });
CASES.push({ B: 1, N: 65, H: 2, D: 256, w: [65], r: [1], causal: false });

for (const tc of CASES) {
  const name = `N=${tc.N} B=${tc.B} H=${tc.H} D=${tc.D} w=[${tc.w}] r=[${tc.r}]${tc.causal ? ' causal' : ''}${tc.offsets === 'blocked' ? ' blocked' : ''}`;
  test(`dilated attention ${name}: forward and backward within FlashAttention's rule`, { skip }, (t) => {
    const g = requireGpu();
    const geometry: AttentionGeometry = { batch: tc.B, seqLen: tc.N, heads: tc.H, headDim: tc.D };
    const config: AttentionConfig = {
      patterns: tc.w.map((w, i) => ({ segmentLength: w, dilationRate: tc.r[i]! })),
      causal: tc.causal, scale: 1 / Math.sqrt(tc.D), headOffsets: tc.offsets ?? 'paper',
    };
    const n = tc.B * tc.N * tc.H * tc.D;
    const rows = tc.B * tc.N * tc.H;
    const q = rng.floats(n), k = rng.floats(n), v = rng.floats(n), dO = rng.floats(n);
    const ref = oracle(q, k, v, dO, geometry, config, exact);
    const plain = oracle(q, k, v, dO, geometry, config, f32);

    const cq = both(q), ck = both(k), cv = both(v), cdO = both(dO);
    const cf = cpu.dilatedAttention(cq.c, ck.c, cv.c, geometry, config);
    const cb = cpu.dilatedAttentionBackward(cq.c, ck.c, cv.c, cf.o, cf.lse, cdO.c, geometry, config);
    const cpuOut = { o: cpu.read(cf.o), lse: cpu.read(cf.lse), dq: cpu.read(cb.dq), dk: cpu.read(cb.dk), dv: cpu.read(cb.dv) };

    poison([n, rows]);
    const gf = g.dilatedAttention(cq.g, ck.g, cv.g, geometry, config);
    poison([n, rows]);
    const gb = g.dilatedAttentionBackward(cq.g, ck.g, cv.g, gf.o, gf.lse, cdO.g, geometry, config);
    const gpuOut = { o: readGpu(gf.o), lse: readGpu(gf.lse), dq: readGpu(gb.dq), dk: readGpu(gb.dk), dv: readGpu(gb.dv) };

    const report: string[] = [];
    for (const key of ['o', 'lse', 'dq', 'dk', 'dv'] as const) {
      const r = ref[key];
      const got = gpuOut[key];
      for (let i = 0; i < r.length; i++) {
        if (r[i] === -Infinity) assert.equal(got[i], -Infinity, `${key}[${i}]: a row no pattern selects has lse -Infinity (seed ${seed})`);
        else assert.ok(Number.isFinite(got[i]!), `${key}[${i}] = ${got[i]} (unwritten or non-finite; seed ${seed})`);
      }
      const errGpu = maxAbsError(got, r);
      const errCpu = maxAbsError(cpuOut[key], r);
      const errPlain = maxAbsError(plain[key], r);
      // a few ulps of the largest value: the maximum over a few hundred rows of float32 rounding fluctuates
      const floor = 8 * 2 ** -23 * maxAbs(r);
      const bound = 2 * Math.max(errCpu, errPlain) + floor;
      report.push(`${key} ${errGpu.toExponential(1)} (plain ${errPlain.toExponential(1)}, bound ${bound.toExponential(1)})`);
      assert.ok(
        errGpu <= bound,
        `${key}: GPU error ${errGpu.toExponential(2)} > 2 x max(CPU ${errCpu.toExponential(2)}, plain float32 ${errPlain.toExponential(2)}) + ${floor.toExponential(2)} (seed ${seed})`,
      );
    }
    t.diagnostic(`max abs error vs float64: ${report.join('; ')}`);
    // rows that no pattern selects get exactly zero
    for (let row = 0; row < rows; row++) {
      if (ref.lse[row] !== -Infinity) continue;
      for (let d = 0; d < tc.D; d++) assert.equal(gpuOut.o[row * tc.D + d], 0, `o of an empty row (seed ${seed})`);
    }

    // deterministic: no atomics, so a second run gives the same bits
    const again = g.dilatedAttention(cq.g, ck.g, cv.g, geometry, config);
    assert.deepEqual(readGpu(again.o), gpuOut.o, 'forward is not deterministic');
    const againB = g.dilatedAttentionBackward(cq.g, ck.g, cv.g, gf.o, gf.lse, cdO.g, geometry, config);
    assert.deepEqual(readGpu(againB.dk), gpuOut.dk, 'backward is not deterministic');
  });
}

test('head dimensions beyond the kernels are refused with a clear error', { skip }, () => {
  const g = requireGpu();
  const geometry: AttentionGeometry = { batch: 1, seqLen: 2, heads: 1, headDim: 300 };
  const x = g.fromArray(rng.floats(600));
  const config: AttentionConfig = { patterns: [{ segmentLength: 2, dilationRate: 1 }], causal: false, scale: 1, headOffsets: 'paper' };
  assert.throws(() => g.dilatedAttention(x, x, x, geometry, config), /supports headDim up to 256, got 300/);
});
