import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import fc from 'fast-check';
import type { AttentionConfig, AttentionGeometry, AttentionPattern, HeadOffsets } from '../src/backend/backend.js';
import { dilatedAttentionBackward, dilatedAttentionForward } from '../src/backend/cpu/attention-kernel.js';
import { lastLoopThreads } from '../src/backend/cpu/thread-pool.js';
import { accumulateColumns, accumulateRows, scoreTile } from '../src/backend/cpu/attention-tiles.js';
import type { FloatArray } from '../src/tensor/dtype.js';

// ---------------------------------------------------------------------------------------------------
// helpers

/** A small seeded generator (mulberry32) so that failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randArray(n: number, rand: () => number, amplitude = 1.5): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * rand() - 1) * amplitude;
  return a;
}

function shared64(a: Float64Array): Float64Array {
  const s = new Float64Array(new SharedArrayBuffer(a.length * 8));
  s.set(a);
  return s;
}

interface Case {
  geometry: AttentionGeometry;
  patterns: [number, number][];
  causal: boolean;
  headOffsets: HeadOffsets;
}

function configOf(c: Case, scale?: number): AttentionConfig {
  const patterns: AttentionPattern[] = c.patterns.map(([w, r]) => ({ segmentLength: w, dilationRate: r }));
  return { patterns, causal: c.causal, scale: scale ?? 1 / Math.sqrt(c.geometry.headDim), headOffsets: c.headOffsets };
}

function describe(c: Case): string {
  const g = c.geometry;
  return `B=${g.batch} N=${g.seqLen} H=${g.heads} D=${g.headDim} patterns=${JSON.stringify(c.patterns)} ` +
    `causal=${c.causal} offsets=${c.headOffsets}`;
}

function inputs(c: Case, seed: number): { q: Float64Array; k: Float64Array; v: Float64Array } {
  const { batch, seqLen, heads, headDim } = c.geometry;
  const n = batch * seqLen * heads * headDim;
  const rand = rng(seed);
  return { q: randArray(n, rand), k: randArray(n, rand), v: randArray(n, rand) };
}

/** Largest |a - b|, with equal infinities counting as equal; NaN anywhere counts as infinite. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (x === y) continue;
    const d = Math.abs(x - y);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  const d = maxDiff(a, b);
  assert.ok(d <= tol, `${what}: max difference ${d} > ${tol}`);
}

// ---------------------------------------------------------------------------------------------------
// the oracle: dense attention over the explicit multiset mask of docs/ATTENTION.md

function headOffsetOf(h: number, H: number, r: number, mode: HeadOffsets): number {
  return mode === 'paper' ? h % r : Math.floor(h / Math.ceil(H / r));
}

/** C[p][p'] for one head: how many patterns let query p see key p'. */
function countMatrix(N: number, H: number, h: number, config: AttentionConfig): Int32Array {
  const C = new Int32Array(N * N);
  for (const { segmentLength: w, dilationRate: r } of config.patterns) {
    const wp = Math.min(w, N);
    const off = headOffsetOf(h, H, r, config.headOffsets);
    for (let p = 0; p < N; p++) {
      const s = Math.floor(p / wp);
      if ((p - s * wp) % r !== off) continue;
      for (let p2 = s * wp; p2 < Math.min((s + 1) * wp, N); p2++) {
        if ((p2 - s * wp) % r !== off) continue;
        if (config.causal && p2 > p) continue;
        C[p * N + p2]! += 1;
      }
    }
  }
  return C;
}

interface Dense { o: Float64Array; lse: Float64Array; dq?: Float64Array; dk?: Float64Array; dv?: Float64Array }

/** Forward (and with dO, the analytic backward) of the multiset-masked softmax, computed densely. */
function oracle(
  q: FloatArray, k: FloatArray, v: FloatArray, g: AttentionGeometry, config: AttentionConfig, dO?: Float64Array,
): Dense {
  const { batch: B, seqLen: N, heads: H, headDim: D } = g;
  const o = new Float64Array(B * N * H * D);
  const lse = new Float64Array(B * N * H);
  const dq = new Float64Array(o.length), dk = new Float64Array(o.length), dv = new Float64Array(o.length);
  const at = (b: number, p: number, h: number) => ((b * N + p) * H + h) * D;
  for (let h = 0; h < H; h++) {
    const C = countMatrix(N, H, h, config);
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < N; p++) {
        const s = new Float64Array(N);
        let mx = -Infinity;
        for (let p2 = 0; p2 < N; p2++) {
          if (C[p * N + p2] === 0) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[at(b, p, h) + d]! * k[at(b, p2, h) + d]!;
          s[p2] = config.scale * dot;
          mx = Math.max(mx, s[p2]!);
        }
        if (mx === -Infinity) { lse[(b * N + p) * H + h] = -Infinity; continue; }
        let sum = 0;
        for (let p2 = 0; p2 < N; p2++) if (C[p * N + p2]! > 0) sum += C[p * N + p2]! * Math.exp(s[p2]! - mx);
        const L = mx + Math.log(sum);
        lse[(b * N + p) * H + h] = L;
        const P = new Float64Array(N);
        for (let p2 = 0; p2 < N; p2++) {
          if (C[p * N + p2] === 0) continue;
          P[p2] = C[p * N + p2]! * Math.exp(s[p2]! - L);
          for (let d = 0; d < D; d++) o[at(b, p, h) + d]! += P[p2]! * v[at(b, p2, h) + d]!;
        }
        if (dO === undefined) continue;
        // dP = dO . v, dS = P (dP - dO . O)
        let dsum = 0;
        for (let d = 0; d < D; d++) dsum += dO[at(b, p, h) + d]! * o[at(b, p, h) + d]!;
        for (let p2 = 0; p2 < N; p2++) {
          if (P[p2] === 0) continue;
          let dp = 0;
          for (let d = 0; d < D; d++) dp += dO[at(b, p, h) + d]! * v[at(b, p2, h) + d]!;
          const dS = P[p2]! * (dp - dsum);
          for (let d = 0; d < D; d++) {
            dv[at(b, p2, h) + d]! += P[p2]! * dO[at(b, p, h) + d]!;
            dq[at(b, p, h) + d]! += config.scale * dS * k[at(b, p2, h) + d]!;
            dk[at(b, p2, h) + d]! += config.scale * dS * q[at(b, p, h) + d]!;
          }
        }
      }
    }
  }
  return dO === undefined ? { o, lse } : { o, lse, dq, dk, dv };
}

function checkAgainstOracle(c: Case, seed: number, tol = 1e-10): { emptyRows: number } {
  const { q, k, v } = inputs(c, seed);
  const config = configOf(c);
  const dO = randArray(q.length, rng(seed + 7));
  const got = dilatedAttentionForward(q, k, v, c.geometry, config);
  const want = oracle(q, k, v, c.geometry, config, dO);
  assertClose(got.o, want.o, tol, `o, ${describe(c)}`);
  assertClose(got.lse, want.lse, tol, `lse, ${describe(c)}`);
  const grads = dilatedAttentionBackward(q, k, v, got.o, got.lse, dO, c.geometry, config);
  assertClose(grads.dq, want.dq!, tol, `dq, ${describe(c)}`);
  assertClose(grads.dk, want.dk!, tol, `dk, ${describe(c)}`);
  assertClose(grads.dv, want.dv!, tol, `dv, ${describe(c)}`);
  // rows no pattern selects: o = 0 and lse = -inf exactly, never NaN
  let emptyRows = 0;
  const D = c.geometry.headDim;
  for (let i = 0; i < got.lse.length; i++) {
    assert.ok(!Number.isNaN(got.lse[i]!), 'lse has NaN');
    if (got.lse[i] !== -Infinity) continue;
    emptyRows++;
    for (let d = 0; d < D; d++) assert.equal(got.o[i * D + d], 0, 'a row without keys must give o = 0');
  }
  for (const a of [got.o, grads.dq, grads.dk, grads.dv]) assert.ok(a.every((x) => !Number.isNaN(x)), 'NaN in output');
  return { emptyRows };
}

const geom = (batch: number, seqLen: number, heads: number, headDim: number): AttentionGeometry =>
  ({ batch, seqLen, heads, headDim });

// ---------------------------------------------------------------------------------------------------
// tests

test('matches the dense multiset oracle (forward and gradients) on edge-case shapes', () => {
  const cases: Case[] = [
    { geometry: geom(1, 13, 2, 3), patterns: [[4, 1], [8, 2]], causal: false, headOffsets: 'paper' },
    { geometry: geom(1, 13, 2, 3), patterns: [[4, 1], [8, 2]], causal: true, headOffsets: 'paper' },
    { geometry: geom(2, 11, 3, 5), patterns: [[3, 1], [6, 3], [20, 4]], causal: true, headOffsets: 'paper' },
    { geometry: geom(2, 11, 3, 5), patterns: [[3, 1], [6, 3], [20, 4]], causal: false, headOffsets: 'blocked' },
    // w > N
    { geometry: geom(1, 7, 1, 4), patterns: [[16, 1]], causal: true, headOffsets: 'paper' },
    // a pattern given twice
    { geometry: geom(1, 17, 4, 2), patterns: [[5, 2], [5, 2], [17, 1]], causal: true, headOffsets: 'paper' },
    // several query and key tiles in one segment
    { geometry: geom(1, 300, 2, 3), patterns: [[300, 1]], causal: true, headOffsets: 'paper' },
    { geometry: geom(1, 600, 1, 2), patterns: [[600, 1], [600, 2]], causal: false, headOffsets: 'paper' },
    // work units: chunks of lcm(w') = 140, the last one shorter
    { geometry: geom(1, 200, 2, 3), patterns: [[70, 1], [140, 2]], causal: false, headOffsets: 'paper' },
    // lcm(6, 10) = 30 > N: one chunk; and three chunks, the last of 5 positions
    { geometry: geom(1, 29, 2, 4), patterns: [[6, 1], [10, 2]], causal: true, headOffsets: 'blocked' },
    { geometry: geom(2, 65, 3, 2), patterns: [[6, 1], [10, 2]], causal: true, headOffsets: 'paper' },
  ];
  cases.forEach((c, i) => checkAgainstOracle(c, 100 + i));
});

test('rows that no pattern selects (r > H) give o = 0 and lse = -Infinity', () => {
  const cases: Case[] = [
    { geometry: geom(2, 19, 2, 3), patterns: [[8, 4]], causal: false, headOffsets: 'paper' },
    { geometry: geom(1, 19, 3, 5), patterns: [[12, 6], [19, 5]], causal: true, headOffsets: 'paper' },
    { geometry: geom(1, 19, 2, 3), patterns: [[8, 8]], causal: true, headOffsets: 'blocked' },
  ];
  cases.forEach((c, i) => {
    const { emptyRows } = checkAgainstOracle(c, 200 + i);
    assert.ok(emptyRows > 0, `expected rows without keys in ${describe(c)}`);
  });
});

test('gradients match central finite differences of sum(O * G)', () => {
  const cases: Case[] = [
    { geometry: geom(1, 9, 2, 3), patterns: [[4, 1], [8, 2]], causal: true, headOffsets: 'paper' },
    { geometry: geom(1, 9, 2, 3), patterns: [[4, 1], [8, 2]], causal: false, headOffsets: 'paper' },
    { geometry: geom(2, 7, 3, 2), patterns: [[3, 1], [7, 3], [7, 1]], causal: true, headOffsets: 'blocked' },
    { geometry: geom(1, 10, 2, 3), patterns: [[5, 2], [10, 5]], causal: false, headOffsets: 'paper' }, // empty rows
    { geometry: geom(1, 8, 1, 2), patterns: [[8, 1], [8, 1]], causal: false, headOffsets: 'paper' }, // duplicate
  ];
  const eps = 1e-5;
  cases.forEach((c, ci) => {
    const config = configOf(c, 0.7);
    const { q, k, v } = inputs(c, 300 + ci);
    const G = randArray(q.length, rng(400 + ci));
    const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array): number => {
      const { o } = dilatedAttentionForward(qq, kk, vv, c.geometry, config);
      let s = 0;
      for (let i = 0; i < o.length; i++) s += o[i]! * G[i]!;
      return s;
    };
    const fwd = dilatedAttentionForward(q, k, v, c.geometry, config);
    const grads = dilatedAttentionBackward(q, k, v, fwd.o, fwd.lse, G, c.geometry, config);
    const named: [string, Float64Array, FloatArray][] = [['dq', q, grads.dq], ['dk', k, grads.dk], ['dv', v, grads.dv]];
    for (const [name, x, analytic] of named) {
      for (let i = 0; i < x.length; i++) {
        const keep = x[i]!;
        x[i] = keep + eps;
        const up = loss(q, k, v);
        x[i] = keep - eps;
        const down = loss(q, k, v);
        x[i] = keep;
        const numeric = (up - down) / (2 * eps);
        assert.ok(Math.abs(numeric - analytic[i]!) < 1e-7,
          `${name}[${i}]: analytic ${analytic[i]} vs numeric ${numeric}, ${describe(c)}`);
      }
    }
  });
});

test('one pattern (N, 1) is plain softmax attention', () => {
  for (const causal of [false, true]) {
    const g = geom(2, 37, 3, 5);
    const c: Case = { geometry: g, patterns: [[37, 1]], causal, headOffsets: 'paper' };
    const { q, k, v } = inputs(c, causal ? 11 : 12);
    const config = configOf(c);
    const got = dilatedAttentionForward(q, k, v, g, config);
    const { batch: B, seqLen: N, heads: H, headDim: D } = g;
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) {
      const row = (b * N + i) * H + h;
      const last = causal ? i : N - 1;
      const scores: number[] = [];
      for (let j = 0; j <= last; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[row * D + d]! * k[((b * N + j) * H + h) * D + d]!;
        scores.push(s * config.scale);
      }
      const mx = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - mx));
      const z = e.reduce((x, y) => x + y, 0);
      assert.ok(Math.abs(got.lse[row]! - (mx + Math.log(z))) < 1e-12);
      for (let d = 0; d < D; d++) {
        let want = 0;
        for (let j = 0; j <= last; j++) want += (e[j]! / z) * v[((b * N + j) * H + h) * D + d]!;
        assert.ok(Math.abs(got.o[row * D + d]! - want) < 1e-12, `o[${row}, ${d}]`);
      }
    }
  }
});

test("the mixture is the paper's alpha-weighted sum of per-pattern outputs", () => {
  const g = geom(2, 23, 4, 3);
  const patterns: [number, number][] = [[4, 1], [8, 2], [16, 4]];
  for (const causal of [false, true]) {
    const c: Case = { geometry: g, patterns, causal, headOffsets: 'paper' };
    const { q, k, v } = inputs(c, 21);
    const all = dilatedAttentionForward(q, k, v, g, configOf(c));
    const alone = patterns.map((p) => dilatedAttentionForward(q, k, v, g, configOf({ ...c, patterns: [p] })));
    const D = g.headDim;
    for (let row = 0; row < all.lse.length; row++) {
      const L = all.lse[row]!;
      // L is the log-sum-exp of the per-pattern lse
      const parts = alone.map((a) => a.lse[row]!).filter((x) => x !== -Infinity);
      const mx = Math.max(...parts);
      assert.ok(Math.abs(L - (mx + Math.log(parts.reduce((s, x) => s + Math.exp(x - mx), 0)))) < 1e-12);
      for (let d = 0; d < D; d++) {
        let mix = 0;
        for (const a of alone) if (a.lse[row] !== -Infinity) mix += Math.exp(a.lse[row]! - L) * a.o[row * D + d]!;
        assert.ok(Math.abs(all.o[row * D + d]! - mix) < 1e-12, `row ${row}`);
      }
    }
  }
});

const caseArb: fc.Arbitrary<Case> = fc.record({
  batch: fc.integer({ min: 1, max: 2 }),
  seqLen: fc.integer({ min: 1, max: 40 }),
  heads: fc.integer({ min: 1, max: 4 }),
  headDim: fc.integer({ min: 1, max: 6 }),
  patterns: fc.array(
    fc.integer({ min: 1, max: 48 }).chain((w) => fc.tuple(fc.constant(w), fc.integer({ min: 1, max: Math.min(w, 8) }))),
    { minLength: 1, maxLength: 4 },
  ),
  causal: fc.boolean(),
  headOffsets: fc.constantFrom<HeadOffsets>('paper', 'blocked'),
}).map((r) => ({
  geometry: geom(r.batch, r.seqLen, r.heads, r.headDim),
  patterns: r.patterns as [number, number][],
  causal: r.causal,
  headOffsets: r.headOffsets,
}));

test('property: random geometry and schedule agree with the oracle', () => {
  fc.assert(fc.property(caseArb, fc.integer(), (c, seed) => { checkAgainstOracle(c, seed); }), { numRuns: 150 });
});

test('property: pattern order is irrelevant; duplicating every pattern keeps O and adds log 2 to L', () => {
  fc.assert(fc.property(caseArb, fc.integer(), (c, seed) => {
    const { q, k, v } = inputs(c, seed);
    const base = dilatedAttentionForward(q, k, v, c.geometry, configOf(c));
    const run = (patterns: [number, number][]) =>
      dilatedAttentionForward(q, k, v, c.geometry, configOf({ ...c, patterns }));
    const reversed = run([...c.patterns].reverse());
    assertClose(reversed.o, base.o, 1e-12, 'reversed o');
    assertClose(reversed.lse, base.lse, 1e-12, 'reversed lse');
    const doubled = run([...c.patterns, ...c.patterns]);
    assertClose(doubled.o, base.o, 1e-12, 'doubled o');
    assertClose(doubled.lse, base.lse.map((x) => x + Math.LN2), 1e-12, 'doubled lse');
  }), { numRuns: 100 });
});

test('property: moving whole segments from the front to the back moves the outputs the same way', () => {
  // segments are independent, so with N a multiple of every w a rotation by a segment multiple commutes
  fc.assert(fc.property(
    fc.constantFrom<[number, number][]>([[4, 1], [8, 2]], [[6, 3], [3, 1]], [[12, 4]]),
    fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.integer(),
    (patterns, chunks, heads, causal, seed) => {
      const chunk = Math.max(...patterns.map(([w]) => w)); // each w here divides the largest
      const N = chunk * (chunks + 1);
      const c: Case = { geometry: geom(1, N, heads, 3), patterns, causal, headOffsets: 'paper' };
      const { q, k, v } = inputs(c, seed);
      const rotate = (a: FloatArray, perPosition: number): Float64Array => {
        const cut = chunk * perPosition;
        const out = new Float64Array(a.length);
        out.set(a.subarray(cut), 0);
        out.set(a.subarray(0, cut), a.length - cut);
        return out;
      };
      const row = heads * 3;
      const base = dilatedAttentionForward(q, k, v, c.geometry, configOf(c));
      const moved = dilatedAttentionForward(rotate(q, row), rotate(k, row), rotate(v, row), c.geometry, configOf(c));
      assertClose(moved.o, rotate(base.o, row), 1e-12, 'rotated o');
      assertClose(moved.lse, rotate(base.lse, heads), 1e-12, 'rotated lse');
    },
  ), { numRuns: 30 });
});

test('property: tile products match naive loops for any tile position, parity and causal mask', () => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 7 }), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 9 }),
    fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 9 }), fc.boolean(), fc.integer(),
    (D, i0, rows, j0, cols, causal, seed) => {
      const i1 = i0 + rows, j1 = j0 + cols, ld = cols + 3;
      const rand = rng(seed);
      const A = randArray(i1 * D, rand), B = randArray(j1 * D, rand);
      const sees = (i: number, j: number) => !causal || j <= i;
      const S = new Float64Array(rows * ld).fill(NaN);
      scoreTile(A, B, D, i0, i1, j0, j1, causal, -7, S, ld);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) {
        let want = -7;
        if (sees(i, j)) { want = 0; for (let d = 0; d < D; d++) want += A[i * D + d]! * B[j * D + d]!; }
        assert.ok(Math.abs(S[(i - i0) * ld + j - j0]! - want) < 1e-12, `S[${i}][${j}]`);
      }
      // weights: random where visible, 0 where masked (the contract of the accumulating products)
      const W = new Float64Array(rows * ld);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) W[(i - i0) * ld + j - j0] = sees(i, j) ? rand() : 0;
      const Crows = randArray(i1 * D, rand), Ccols = randArray(j1 * D, rand);
      const wantRows = Crows.slice(), wantCols = Ccols.slice();
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) for (let d = 0; d < D; d++) {
        const w = W[(i - i0) * ld + j - j0]!;
        wantRows[i * D + d]! += w * B[j * D + d]!;
        wantCols[j * D + d]! += w * A[i * D + d]!;
      }
      accumulateRows(W, ld, B, D, i0, i1, j0, j1, causal, Crows);
      accumulateColumns(W, ld, A, D, i0, i1, j0, j1, causal, Ccols);
      assertClose(Crows, wantRows, 1e-12, 'accumulateRows');
      assertClose(Ccols, wantCols, 1e-12, 'accumulateColumns');
    },
  ), { numRuns: 300 });
});

test('float32 results are close to float64', () => {
  const c: Case = {
    geometry: geom(2, 300, 3, 16), patterns: [[64, 1], [128, 2], [300, 4]], causal: true, headOffsets: 'paper',
  };
  const { q, k, v } = inputs(c, 5);
  const config = configOf(c);
  const dO = randArray(q.length, rng(6));
  const f64 = dilatedAttentionForward(q, k, v, c.geometry, config);
  const g64 = dilatedAttentionBackward(q, k, v, f64.o, f64.lse, dO, c.geometry, config);
  const to32 = (a: Float64Array) => Float32Array.from(a);
  const f32 = dilatedAttentionForward(to32(q), to32(k), to32(v), c.geometry, config);
  assert.ok(f32.o instanceof Float32Array && f32.lse instanceof Float32Array);
  const g32 = dilatedAttentionBackward(to32(q), to32(k), to32(v), f32.o, f32.lse, to32(dO), c.geometry, config);
  assert.ok(g32.dq instanceof Float32Array);
  assertClose(f32.o, f64.o, 2e-6, 'o');
  assertClose(f32.lse, f64.lse, 2e-6, 'lse');
  assertClose(g32.dq, g64.dq, 2e-5, 'dq');
  assertClose(g32.dk, g64.dk, 2e-5, 'dk');
  assertClose(g32.dv, g64.dv, 2e-5, 'dv');
});

test('the threaded path (shared buffers) gives bitwise the same result as the serial path', () => {
  const saved = process.env['LONGNET_THREADS'];
  delete process.env['LONGNET_THREADS'];
  if (availableParallelism() < 2) process.env['LONGNET_THREADS'] = '2'; // still exercise the workers
  try {
    for (const causal of [true, false]) {
      const c: Case = {
        geometry: geom(2, 1000, 3, 8), patterns: [[64, 1], [128, 2], [256, 4]], causal, headOffsets: 'paper',
      };
      const config = configOf(c);
      const { q, k, v } = inputs(c, 9);
      const dO = randArray(q.length, rng(10));
      const serial = dilatedAttentionForward(q, k, v, c.geometry, config);
      assert.equal(lastLoopThreads(), 1);
      const serialGrads = dilatedAttentionBackward(q, k, v, serial.o, serial.lse, dO, c.geometry, config);
      const [qs, ks, vs, dOs] = [q, k, v, dO].map(shared64) as [Float64Array, Float64Array, Float64Array, Float64Array];
      const par = dilatedAttentionForward(qs, ks, vs, c.geometry, config);
      assert.ok(lastLoopThreads() > 1, 'the forward should run on several threads');
      assert.ok(par.o.buffer instanceof SharedArrayBuffer, 'outputs of shared inputs are shared');
      const parGrads = dilatedAttentionBackward(qs, ks, vs, par.o, par.lse, dOs, c.geometry, config);
      assert.ok(lastLoopThreads() > 1, 'the backward should run on several threads');
      assert.deepEqual(Array.from(par.o), Array.from(serial.o));
      assert.deepEqual(Array.from(par.lse), Array.from(serial.lse));
      assert.deepEqual(Array.from(parGrads.dq), Array.from(serialGrads.dq));
      assert.deepEqual(Array.from(parGrads.dk), Array.from(serialGrads.dk));
      assert.deepEqual(Array.from(parGrads.dv), Array.from(serialGrads.dv));
    }
  } finally {
    if (saved === undefined) delete process.env['LONGNET_THREADS'];
    else process.env['LONGNET_THREADS'] = saved;
  }
});
