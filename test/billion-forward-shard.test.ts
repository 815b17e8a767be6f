// The sequence-parallel forward of bench/gpu-billion-forward.ts (bench/billion-forward-shard.ts) on the
// emulated addon: P ranks simulated in one process, the all-gather done by copies, against the
// single-device fused forward of the whole sequence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BF16_CODE, type NativeHandle } from '../src/backend/cuda/native.js';
import { ShardForward, geometricSchedule, planShards } from '../bench/billion-forward-shard.js';
import { createEmulatedAddon } from './cuda-emulator.js';

test('geometricSchedule reaches N with w / r constant; planShards splits local and cross-rank patterns', () => {
  assert.deepEqual(geometricSchedule(2 ** 30), [
    [2048, 1], [16384, 8], [131072, 64], [1048576, 512], [8388608, 4096], [67108864, 32768], [536870912, 262144], [2 ** 30, 2 ** 19],
  ]);
  const plan = planShards(2 ** 30, 4, 1, 64, geometricSchedule(2 ** 30), true);
  assert.equal(plan.local.length, 6);
  assert.deepEqual(plan.cross.map((c) => [c.w, c.ranks, c.rows]), [[536870912, 2, 1024], [2 ** 30, 4, 512]]);
  assert.throws(() => planShards(3 * 2048, 2, 1, 64, [[2048, 1]], true), /cross the shard boundaries/);
  assert.throws(() => planShards(4096, 2, 1, 64, [[4096, 4096]], true), /not a multiple of r/);
  assert.throws(() => geometricSchedule(1_000_000_000), /multiple of 2048/);
});

test('sharded forward on simulated ranks equals the single-device forward', () => {
  const { addon: a, counters } = createEmulatedAddon();
  const [N, H, D] = [512, 2, 32];
  const patterns = geometricSchedule(N, 16, 4); // (16, 1), (64, 4), (256, 16), (512, 32)
  const n = N * H * D;
  const [qF, kF, vF] = [1, 2, 3].map((s) => {
    const h = a.alloc(BF16_CODE, n, false);
    a.fillRandomNormal(h, s, 1);
    return h;
  }) as [NativeHandle, NativeHandle, NativeHandle];
  const live = counters.live;
  for (const causal of [true, false]) {
    const oRef = a.alloc(0, n, false), lseRef = a.alloc(0, N * H, false);
    a.flashAttentionForward(qF, kF, vF, oRef, lseRef, 1, N, H, D, patterns.flat(), causal, 1 / Math.sqrt(D), false);
    const want = new Float32Array(n), wantLse = new Float32Array(N * H);
    a.download(oRef, want);
    a.download(lseRef, wantLse);
    for (const P of [1, 2, 4]) {
      const plan = planShards(N, P, H, D, patterns, causal);
      const l = N / P;
      const ranks = Array.from({ length: P }, (_, rank) => {
        const io = {
          q: a.alloc(BF16_CODE, l * H * D, false), k: a.alloc(BF16_CODE, l * H * D, false), v: a.alloc(BF16_CODE, l * H * D, false),
          o: a.alloc(0, l * H * D, false), lse: a.alloc(0, l * H, false),
        };
        a.copyRows(io.q, 0, qF, rank * l * H, 1, l * H, D);
        a.copyRows(io.k, 0, kF, rank * l * H, 1, l * H, D);
        a.copyRows(io.v, 0, vF, rank * l * H, 1, l * H, D);
        return new ShardForward(a, plan, rank, io);
      });
      for (const r of ranks) r.pack();
      // the all-gather of every group
      plan.cross.forEach((c, i) => {
        for (let g = 0; g < P / c.ranks; g++) {
          for (const key of ['K', 'V'] as const) {
            const parts = Array.from({ length: c.ranks }, (_, m) => {
              const part = new Uint16Array(H * c.rows * D);
              a.download(ranks[g * c.ranks + m]!.exchanges[i]![`send${key}`], part);
              return part;
            });
            const all = new Uint16Array(c.ranks * H * c.rows * D);
            parts.forEach((p, m) => all.set(p, m * p.length));
            for (let m = 0; m < c.ranks; m++) a.upload(ranks[g * c.ranks + m]!.exchanges[i]![`recv${key}`], all);
          }
        }
      });
      for (const r of ranks) r.attend();
      for (const [rank, r] of ranks.entries()) {
        const got = new Float32Array(l * H * D), gotLse = new Float32Array(l * H);
        a.download(r.io.o, got);
        a.download(r.io.lse, gotLse);
        for (let i = 0; i < got.length; i++) {
          const e = want[rank * l * H * D + i]!;
          assert.ok(Math.abs(got[i]! - e) <= 1e-5 * (1 + Math.abs(e)), `P=${P} causal=${causal} rank ${rank} o[${i}] ${got[i]} vs ${e}`);
        }
        for (let i = 0; i < gotLse.length; i++) {
          const e = wantLse[rank * l * H + i]!;
          assert.ok(Math.abs(gotLse[i]! - e) <= 1e-5 * (1 + Math.abs(e)), `P=${P} causal=${causal} rank ${rank} lse[${i}] ${gotLse[i]} vs ${e}`);
        }
        r.free();
        for (const h of Object.values(r.io)) a.free(h);
      }
      if (P === 4) assert.equal(plan.cross.length, 2, 'P = 4 has a two-rank group and the whole world');
    }
    a.free(oRef);
    a.free(lseRef);
  }
  assert.equal(counters.live, live, 'every buffer freed');
});
