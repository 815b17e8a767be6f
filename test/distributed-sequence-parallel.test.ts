import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError, Rng, Tensor, dilatedAttention, type HeadOffsets } from '../src/index.js';
import { runRanks } from '../src/distributed/in-process.js';
import { sequenceParallelAttention } from '../src/distributed/sequence-parallel.js';
import { planSequenceParallel } from '../src/distributed/sequence-plan.js';
import { joinSequence, splitSequence } from '../src/distributed/split.js';
import { TrafficLog } from '../src/distributed/traffic.js';
import { randomArray } from './support/gradcheck.js';

interface Case {
  B: number; N: number; H: number; D: number; P: number;
  ws: number[]; rs: number[];
  headOffsets?: HeadOffsets;
  balance?: boolean;
}

function same(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (a === e) continue; // -Infinity rows included
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${label}[${i}]: ${a} vs ${e}`);
  }
}

/** Runs a case on P in-process ranks and compares everything with the single-device op. */
async function compare(c: Case, causal: boolean, seed: number): Promise<TrafficLog> {
  const rng = new Rng(seed);
  const shape = [c.B, c.N, c.H, c.D];
  const size = c.B * c.N * c.H * c.D;
  const make = (): Tensor => Tensor.fromArray(randomArray(size, rng), shape, { requiresGrad: true });
  const [q, k, v] = [make(), make(), make()];
  const dO = Tensor.fromArray(randomArray(size, rng), shape);
  const options = {
    segmentLengths: c.ws, dilationRates: c.rs, causal, ...(c.headOffsets ? { headOffsets: c.headOffsets } : {}),
  };
  const ref = dilatedAttention(q, k, v, options);
  ref.output.backward(dO);
  const [qs, ks, vs, ds] = [q, k, v, dO].map((t) => splitSequence(t, c.P)) as [Tensor[], Tensor[], Tensor[], Tensor[]];
  const traffic = new TrafficLog(c.P);
  const results = await runRanks(c.P, async (comm) => {
    const j = comm.rank;
    const r = await sequenceParallelAttention(comm, qs[j]!, ks[j]!, vs[j]!, {
      ...options, sequenceLength: c.N, ...(c.balance !== undefined ? { balance: c.balance } : {}),
    });
    const g = await r.backward(ds[j]!);
    return { o: r.output, lse: r.lse, ...g };
  }, { traffic });
  const label = `P=${c.P} N=${c.N} w=${c.ws} r=${c.rs} causal=${causal}`;
  const join = (pick: (r: (typeof results)[number]) => Tensor): ArrayLike<number> => joinSequence(results.map(pick)).toArray();
  same(join((r) => r.o), ref.output.toArray(), 1e-12, `${label} output`);
  same(join((r) => r.lse), ref.lse.toArray(), 1e-12, `${label} lse`);
  same(join((r) => r.dq), q.grad!.toArray(), 1e-11, `${label} dq`);
  same(join((r) => r.dk), k.grad!.toArray(), 1e-11, `${label} dk`);
  same(join((r) => r.dv), v.grad!.toArray(), 1e-11, `${label} dv`);
  return traffic;
}

const CASES: Case[] = [
  // geometric schedule up to w' = N; batch 2
  { B: 2, N: 16, H: 2, D: 4, P: 2, ws: [4, 8, 16], rs: [1, 2, 4] },
  // N not divisible by P, w not dividing N, w > N (w' = N > l), segments straddling ranks
  { B: 2, N: 23, H: 3, D: 4, P: 3, ws: [5, 8, 30], rs: [1, 2, 3] },
  { B: 1, N: 37, H: 4, D: 3, P: 4, ws: [6, 12, 40], rs: [1, 2, 4] },
  // every pattern dilated, one head: rows that no pattern selects (output 0, lse -inf)
  { B: 1, N: 30, H: 1, D: 4, P: 4, ws: [8, 30], rs: [2, 3] },
  // torchscale's head offsets, fewer heads than r
  { B: 1, N: 24, H: 3, D: 4, P: 3, ws: [6, 24], rs: [2, 4], headOffsets: 'blocked' },
  // a segment inside one rank next to segments crossing it (l = 10, w = 4)
  { B: 1, N: 20, H: 2, D: 4, P: 2, ws: [4, 7], rs: [1, 1] },
];

for (const c of CASES) {
  for (const causal of [false, true]) {
    test(`P=${c.P} ranks equal one device: N=${c.N} w=[${c.ws}] r=[${c.rs}]${c.headOffsets ? ' blocked' : ''} causal=${causal}`, async () => {
      await compare(c, causal, 7 + c.N);
    });
  }
}

test('causal without balancing gives the same result', async () => {
  await compare({ B: 1, N: 24, H: 2, D: 4, P: 4, ws: [6, 24], rs: [1, 2], balance: false }, true, 3);
});

/** Pairs (query, key) of the single-device multiset mask (docs/ATTENTION.md), counted directly. */
function oracleWork(N: number, H: number, B: number, ws: number[], rs: number[], causal: boolean): number {
  let total = 0;
  ws.forEach((w0, i) => {
    const w = Math.min(w0, N);
    const r = rs[i]!;
    for (let h = 0; h < H; h++) {
      for (let s = 0; s < N; s += w) {
        const m = Math.max(0, Math.ceil((Math.min(s + w, N) - s - (h % r)) / r));
        total += causal ? (m * (m + 1)) / 2 : m * m;
      }
    }
  });
  return B * total;
}

test('causal work is balanced across ranks, and no work is lost or duplicated', () => {
  const base = { batch: 1, heads: 4, causal: true, headOffsets: 'paper' as const };
  for (const [N, P, ws, rs] of [[64, 4, [64], [1]], [96, 3, [8, 32, 96], [1, 2, 4]], [128, 4, [16, 64, 128], [1, 2, 4]]] as const) {
    const patterns = ws.map((w, i) => ({ segmentLength: w, dilationRate: rs[i]! }));
    const balanced = planSequenceParallel({ ...base, seqLen: N, ranks: P, patterns, balance: true });
    const plain = planSequenceParallel({ ...base, seqLen: N, ranks: P, patterns, balance: false });
    const expected = oracleWork(N, 4, 1, [...ws], [...rs], true);
    const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
    assert.equal(sum(balanced.loads), expected);
    assert.equal(sum(plain.loads), expected);
    const imbalance = (xs: readonly number[]): number => Math.max(...xs) / (sum(xs) / xs.length);
    // without balancing the last rank of a shared segment does the most (up to (2P - 1) / P of the mean)
    assert.ok(imbalance(balanced.loads) < 1.05, `balanced ${balanced.loads}`);
    assert.ok(imbalance(plain.loads) > 1.15, `plain ${plain.loads}`);
    // what the ranks run adds up to the plan's loads
    for (let j = 0; j < P; j++) {
      const rp = balanced.rank(j);
      const run = rp.execs.reduce((a, e) => a + e.own.work + (e.offloaded?.work ?? 0), 0);
      const local = oracleWorkOfRank(N, P, j, 4, ws, rs, rp.localPatterns);
      assert.equal(run + local, balanced.loads[j], `rank ${j}`);
    }
  }
});

/** Work of the patterns a rank computes alone (all of their segments touching it lie inside it). */
function oracleWorkOfRank(N: number, P: number, j: number, H: number, ws: readonly number[], rs: readonly number[], local: readonly number[]): number {
  const lo = Math.floor((j * N) / P);
  const hi = Math.floor(((j + 1) * N) / P);
  let total = 0;
  for (const pi of local) {
    const w = Math.min(ws[pi]!, N);
    const r = rs[pi]!;
    for (let s = lo; s < hi; s += w) {
      for (let h = 0; h < H; h++) {
        const m = Math.max(0, Math.ceil((Math.min(s + w, N) - s - (h % r)) / r));
        total += (m * (m + 1)) / 2;
      }
    }
  }
  return total;
}

test('bytes exchanged per rank stay flat as N doubles under a geometric schedule', async () => {
  const P = 4, H = 2, D = 4;
  for (const causal of [false, true]) {
    const perN: number[][] = [];
    for (const N of [64, 128, 256]) {
      const ws: number[] = [], rs: number[] = [];
      for (let w = 8, r = 1; w <= N; w *= 2, r *= 2) { ws.push(w); rs.push(r); }
      const rng = new Rng(N);
      const x = Tensor.fromArray(randomArray(N * H * D, rng), [1, N, H, D]);
      const parts = splitSequence(x, P);
      const traffic = new TrafficLog(P);
      await runRanks(P, async (comm) => {
        const xl = parts[comm.rank]!;
        const r = await sequenceParallelAttention(comm, xl, xl, xl, { segmentLengths: ws, dilationRates: rs, causal });
        await r.backward(xl);
      }, { traffic });
      perN.push(traffic.totals().map((t) => t.sent + t.received));
    }
    for (let j = 0; j < P; j++) {
      const series = perN.map((row) => row[j]!);
      assert.ok(series[0]! > 0, `rank ${j} exchanged nothing`);
      for (const b of series) assert.ok(Math.abs(b / series[0]! - 1) < 0.1, `causal=${causal} rank ${j}: ${series}`);
    }
  }
});

test('only the ranks of a segment exchange data; causal keys flow only forward', async () => {
  const P = 4, N = 32, H = 2, D = 4;
  const rng = new Rng(5);
  const x = Tensor.fromArray(randomArray(N * H * D, rng), [1, N, H, D]);
  const parts = splitSequence(x, P);
  for (const causal of [false, true]) {
    // l = 8: w = 8 is local, w = 16 spans ranks {0, 1} and {2, 3}
    const traffic = new TrafficLog(P);
    await runRanks(P, async (comm) => {
      const xl = parts[comm.rank]!;
      const r = await sequenceParallelAttention(comm, xl, xl, xl, { segmentLengths: [8, 16], dilationRates: [1, 2], causal });
      await r.backward(xl);
    }, { traffic });
    for (let a = 0; a < P; a++) {
      for (let b = 0; b < P; b++) {
        if (a === b) continue;
        const sameHalf = Math.floor(a / 2) === Math.floor(b / 2);
        if (sameHalf) assert.ok(traffic.between(a, b) > 0, `causal=${causal}: ${a} -> ${b} silent`);
        else assert.equal(traffic.between(a, b), 0, `causal=${causal}: ${a} -> ${b}`);
      }
    }
  }
  // forward only, no balancing: nothing moves from a later rank to an earlier one
  const traffic = new TrafficLog(P);
  await runRanks(P, async (comm) => {
    const xl = parts[comm.rank]!;
    await sequenceParallelAttention(comm, xl, xl, xl, { segmentLengths: [32], dilationRates: [1], causal: true, balance: false });
  }, { traffic });
  for (let a = 0; a < P; a++) {
    for (let b = 0; b < P; b++) {
      if (b < a) assert.equal(traffic.between(a, b), 0, `${a} -> ${b}`);
      else if (b > a) assert.ok(traffic.between(a, b) > 0, `${a} -> ${b}`);
    }
  }
});

test('bad input is a clear error on the rank that has it', async () => {
  const x = Tensor.fromArray(new Float64Array(2 * 5 * 1 * 2), [2, 5, 1, 2]);
  const opts = { segmentLengths: [4], dilationRates: [1] };
  await assert.rejects(
    runRanks(2, (comm) => sequenceParallelAttention(comm, x, x, x, { ...opts, sequenceLength: 11 })),
    (e: unknown) => e instanceof InputError && /rank 0 holds 5 positions, but splitting N = 11 over 2 ranks gives it 5|rank 1 holds 5 positions/.test((e as Error).message),
  );
  await assert.rejects(
    runRanks(2, (comm) => sequenceParallelAttention(comm, x, x, x, { segmentLengths: [4], dilationRates: [8] })),
    /dilationRates\[0\] = 8 is larger than segmentLengths\[0\] = 4/,
  );
  await runRanks(2, async (comm) => {
    const r = await sequenceParallelAttention(comm, x, x, x, opts);
    await r.backward(x);
    await assert.rejects(r.backward(x), /already called/);
  });
});

test('one rank is the single-device op; a rank with bad data fails every rank', async () => {
  await compare({ B: 1, N: 12, H: 2, D: 4, P: 1, ws: [4, 12], rs: [1, 2] }, true, 1);
  const good = Tensor.fromArray(new Float64Array(1 * 4 * 1 * 2).fill(0.5), [1, 4, 1, 2]);
  const bad = Tensor.fromArray(Float64Array.from([0, 1, NaN, 2, 0, 0, 0, 0]), [1, 4, 1, 2]);
  const seen: string[] = [];
  await assert.rejects(
    runRanks(2, async (comm) => {
      try {
        await sequenceParallelAttention(comm, comm.rank === 1 ? bad : good, good, good, { segmentLengths: [8], dilationRates: [1] });
      } catch (e) {
        seen[comm.rank] = (e as Error).message;
        throw e;
      }
    }),
    (e: unknown) => e instanceof InputError && /q contains NaN or infinite values/.test((e as Error).message),
  );
  assert.match(seen[0]!, /rank 1 failed: q contains NaN/);
});

test('composes with data parallelism: sequence groups inside a larger world', async () => {
  // 4 ranks: two replicas (samples) of a 2-rank sequence-parallel group; gradients all-reduced across replicas
  const N = 20, H = 2, D = 4;
  const rng = new Rng(12);
  const samples = [0, 1].map(() => [0, 1, 2, 3].map(() => Tensor.fromArray(randomArray(N * H * D, rng), [1, N, H, D], { requiresGrad: true })));
  const opts = { segmentLengths: [4, 20], dilationRates: [1, 2], causal: true };
  let expected = new Float64Array(N * H * D);
  for (const [q, k, v, dO] of samples) {
    dilatedAttention(q!, k!, v!, opts).output.backward(dO!);
    expected = expected.map((x, i) => x + (q!.grad!.toArray()[i] ?? 0));
  }
  const parts = samples.map((s) => s.map((t) => splitSequence(t, 2)));
  const got = await runRanks(4, async (world) => {
    const replica = Math.floor(world.rank / 2);
    const sp = world.group(replica === 0 ? [0, 1] : [2, 3]);
    const dp = world.group(world.rank % 2 === 0 ? [0, 2] : [1, 3]);
    const [q, k, v, dO] = parts[replica]!.map((p) => p[sp.rank]!) as [Tensor, Tensor, Tensor, Tensor];
    const r = await sequenceParallelAttention(sp, q, k, v, opts);
    const { dq } = await r.backward(dO);
    const summed = await dp.allReduce(dq.storage);
    return Tensor.fromStorage(summed, dq.shape, dq.backend);
  });
  const joined = joinSequence([got[0]!, got[1]!]).toArray();
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(joined[i]! - expected[i]!) < 1e-11, `dq[${i}]`);
  assert.deepEqual(joinSequence([got[2]!, got[3]!]).toArray(), joined);
});
