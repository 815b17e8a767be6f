import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, getBackend } from '../src/index.js';
import type { GatheredAttentionLayout } from '../src/backend/backend.js';
import { lastLoopThreads, threadCount } from '../src/backend/cpu/thread-pool.js';
import { randomArray } from './support/gradcheck.js';

const cpu = getBackend('cpu');

/** Straightforward packed attention in float64: per group, bottom-right causal mask. */
function reference(q: Float64Array, k: Float64Array, v: Float64Array, lay: GatheredAttentionLayout): { o: Float64Array; lse: Float64Array } {
  const D = lay.headDim;
  const o = new Float64Array(q.length);
  const lse = new Float64Array(q.length / D).fill(-Infinity);
  for (let g = 0; g + 1 < lay.qOffsets.length; g++) {
    const qa = lay.qOffsets[g]!, mq = lay.qOffsets[g + 1]! - qa;
    const ka = lay.kOffsets[g]!, mk = lay.kOffsets[g + 1]! - ka;
    for (let i = 0; i < mq; i++) {
      const visible = lay.causal ? Math.min(mk, i + mk - mq + 1) : mk;
      if (visible <= 0) continue;
      const s = Array.from({ length: visible }, (_, j) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(qa + i) * D + d]! * k[(ka + j) * D + d]!;
        return dot * lay.scale;
      });
      const mx = Math.max(...s);
      const e = s.map((x) => Math.exp(x - mx));
      const sum = e.reduce((a, b) => a + b, 0);
      lse[qa + i] = mx + Math.log(sum);
      for (let j = 0; j < visible; j++) for (let d = 0; d < D; d++) o[(qa + i) * D + d] += (e[j]! / sum) * v[(ka + j) * D + d]!;
    }
  }
  return { o, lse };
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, label: string): void {
  assert.equal(a.length, b.length, label);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    assert.ok(Math.abs(a[i]! - b[i]!) <= tol * (1 + Math.abs(b[i]!)), `${label}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

function layoutOf(groups: [number, number][], D: number, causal: boolean): GatheredAttentionLayout {
  const qOffsets = new Int32Array(groups.length + 1);
  const kOffsets = new Int32Array(groups.length + 1);
  groups.forEach(([mq, mk], g) => {
    qOffsets[g + 1] = qOffsets[g]! + mq;
    kOffsets[g + 1] = kOffsets[g]! + mk;
  });
  return { qOffsets, kOffsets, headDim: D, causal, scale: 0.4 };
}

// groups with more keys than queries, equal, fewer (causal: the first queries see nothing), empty
const GROUPS: [number, number][] = [[3, 7], [5, 5], [6, 2], [0, 4], [4, 0], [1, 1], [40, 300]];

test('packed attention: forward matches the definition, causal aligned bottom-right', () => {
  const D = 5;
  const rng = new Rng(1);
  for (const causal of [false, true]) {
    const lay = layoutOf(GROUPS, D, causal);
    const rq = lay.qOffsets[GROUPS.length]!, rk = lay.kOffsets[GROUPS.length]!;
    const q = randomArray(rq * D, rng), k = randomArray(rk * D, rng), v = randomArray(rk * D, rng);
    const got = cpu.gatheredAttention!(cpu.fromArray(q), cpu.fromArray(k), cpu.fromArray(v), lay);
    const want = reference(q, k, v, lay);
    close(cpu.read(got.o), want.o, 1e-12, `o causal=${causal}`);
    close(cpu.read(got.lse), want.lse, 1e-12, `lse causal=${causal}`);
  }
});

test('packed attention: backward with an outside L and Dsum matches finite differences', () => {
  // f = sum(dO * O_total) where O_total merges the group's partial result with a fixed outside part:
  // the group's gradient must use the merged L and Dsum, as sequence parallelism does
  const D = 3;
  const rng = new Rng(2);
  for (const causal of [false, true]) {
    const groups: [number, number][] = [[2, 3], [3, 2], [2, 2]];
    const lay = layoutOf(groups, D, causal);
    const rq = 7, rk = 7;
    const q = randomArray(rq * D, rng), k = randomArray(rk * D, rng), v = randomArray(rk * D, rng);
    const dO = randomArray(rq * D, rng);
    const outO = randomArray(rq * D, rng), outL = randomArray(rq, rng);
    const total = (qq: Float64Array, kk: Float64Array, vv: Float64Array): { o: Float64Array; lse: Float64Array } => {
      const r = reference(qq, kk, vv, lay);
      const accO = cpu.fromArray(outO), accL = cpu.fromArray(outL);
      cpu.mergeAttention!(accO, accL, cpu.fromArray(r.o), cpu.fromArray(r.lse), cpu.fromArray(Int32Array.from({ length: rq }, (_, i) => i)), D);
      return { o: cpu.read(accO) as Float64Array, lse: cpu.read(accL) as Float64Array };
    };
    const f = (qq: Float64Array, kk: Float64Array, vv: Float64Array): number => {
      const o = total(qq, kk, vv).o;
      let s = 0;
      for (let i = 0; i < o.length; i++) s += o[i]! * dO[i]!;
      return s;
    };
    const final = total(q, k, v);
    const dsum = new Float64Array(rq);
    for (let i = 0; i < rq; i++) for (let d = 0; d < D; d++) dsum[i]! += dO[i * D + d]! * final.o[i * D + d]!;
    const g = cpu.gatheredAttentionBackward!(
      cpu.fromArray(q), cpu.fromArray(k), cpu.fromArray(v), cpu.fromArray(final.lse), cpu.fromArray(dsum), cpu.fromArray(dO), lay,
    );
    const eps = 1e-6;
    const inputs = [q, k, v];
    [g.dq, g.dk, g.dv].forEach((grad, which) => {
      const analytic = cpu.read(grad);
      const x = inputs[which]!;
      for (let i = 0; i < x.length; i++) {
        const saved = x[i]!;
        x[i] = saved + eps;
        const plus = f(q, k, v);
        x[i] = saved - eps;
        const minus = f(q, k, v);
        x[i] = saved;
        const numeric = (plus - minus) / (2 * eps);
        assert.ok(Math.abs(numeric - analytic[i]!) < 1e-7, `causal=${causal} input ${which}[${i}]: ${analytic[i]} vs ${numeric}`);
      }
    });
  }
});

test('packed attention runs on worker threads with the same result', () => {
  const D = 16;
  const groups: [number, number][] = Array.from({ length: 12 }, (_, g) => [200 + g, 260 + g]);
  const lay = layoutOf(groups, D, true);
  const rng = new Rng(3);
  const rq = lay.qOffsets[12]!, rk = lay.kOffsets[12]!;
  const q = randomArray(rq * D, rng), k = randomArray(rk * D, rng), v = randomArray(rk * D, rng);
  const got = cpu.gatheredAttention!(cpu.fromArray(q), cpu.fromArray(k), cpu.fromArray(v), lay);
  if (threadCount() > 1) assert.ok(lastLoopThreads() > 1, 'the loop ran on one thread');
  const want = reference(q, k, v, lay);
  close(cpu.read(got.o), want.o, 1e-12, 'o');
  const back = cpu.gatheredAttentionBackward!(
    cpu.fromArray(q), cpu.fromArray(k), cpu.fromArray(v), got.lse, cpu.fromArray(new Float64Array(rq)), cpu.fromArray(q), lay,
  );
  assert.ok(cpu.allFinite(back.dk));
});

test('bad offsets are refused before any memory is touched', () => {
  const s = cpu.fromArray(new Float64Array(8));
  const bad = { qOffsets: Int32Array.from([0, 3]), kOffsets: Int32Array.from([0, 2]), headDim: 2, causal: false, scale: 1 };
  assert.throws(() => cpu.gatheredAttention!(s, s, s, bad), /query offsets span \[0, 3\) but there are 4 rows/);
  assert.throws(() => cpu.mergeAttention!(s, cpu.fromArray(new Float64Array(4)), cpu.fromArray(new Float64Array(2)),
    cpu.fromArray(new Float64Array(1)), cpu.fromArray(Int32Array.from([9])), 2), /row 9 is outside/);
});
