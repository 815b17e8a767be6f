// The bindings sequence-parallel forwards drive the fused kernels through (native/src/napi/bind_flash.cc):
// flashAttentionForward with a bf16 output and `accumulate`, flashProblemsForward (packed problems, keys
// from another storage) and copyRows. Kernel results are checked against the emulated addon's CPU
// computation on the same bf16 inputs (test/cuda-emulator.ts), which the sequence-parallel test of
// bench/billion-forward-shard.ts relies on too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BF16_CODE, type NativeAddon, type NativeHandle } from '../src/backend/cuda/native.js';
import { createEmulatedAddon, fromBf16Bits } from './cuda-emulator.js';
import { requireGpu, rng, seed, skip } from './cuda-support.js';

const F32 = 0;

function bits(x: Float32Array): Uint16Array {
  return new Uint16Array(new Uint32Array(x.buffer.slice(0)).map((b) => b >>> 16));
}


/** A bf16 buffer of random values on `a`, and the same bits on the emulated addon `e`. */
function pair(a: NativeAddon, e: NativeAddon, values: Uint16Array): [NativeHandle, NativeHandle] {
  const g = a.alloc(BF16_CODE, values.length, false), c = e.alloc(BF16_CODE, values.length, false);
  a.upload(g, values);
  e.upload(c, values);
  return [g, c];
}

function readAny(a: NativeAddon, h: NativeHandle, size: number, code: number): Float32Array {
  if (code === BF16_CODE) {
    const b = new Uint16Array(size);
    a.download(h, b);
    return fromBf16Bits(b);
  }
  const out = new Float32Array(size);
  a.download(h, out);
  return out;
}

function maxRelative(got: Float32Array, want: Float32Array): number {
  let err = 0, mag = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isFinite(want[i]!) !== Number.isFinite(got[i]!) || (!Number.isFinite(want[i]!) && want[i] !== got[i])) return Infinity;
    if (!Number.isFinite(want[i]!)) continue;
    err = Math.max(err, Math.abs(got[i]! - want[i]!));
    mag = Math.max(mag, Math.abs(want[i]!));
  }
  return err / Math.max(mag, 1e-30);
}

test('copyRows: strided rows into consecutive ones, same dtype, bounds checked by argument', { skip }, () => {
  const a = requireGpu().addon;
  const src = a.alloc(F32, 40, false), dst = a.alloc(F32, 16, false);
  a.upload(src, Float32Array.from({ length: 40 }, (_, i) => i));
  a.fill(dst, -1);
  a.copyRows(dst, 1, src, 1, 3, 3, 4); // src rows 1, 4, 7 (of 4 elements) -> dst rows 1, 2, 3
  const got = new Float32Array(16);
  a.download(dst, got);
  assert.deepEqual(Array.from(got), [-1, -1, -1, -1, 4, 5, 6, 7, 16, 17, 18, 19, 28, 29, 30, 31]);
  const half = a.alloc(BF16_CODE, 40, false), half2 = a.alloc(BF16_CODE, 8, false);
  const values = bits(Float32Array.from({ length: 40 }, (_, i) => i / 4));
  a.upload(half, values);
  a.copyRows(half2, 0, half, 0, 5, 2, 4); // rows 0 and 5
  const b = new Uint16Array(8);
  a.download(half2, b);
  assert.deepEqual(Array.from(b), [...values.subarray(0, 4), ...values.subarray(20, 24)]);
  a.copyRows(dst, 0, src, 0, 1, 0, 4); // nothing
  assert.throws(() => a.copyRows(dst, 0, half, 0, 1, 1, 4), { name: 'RangeError', message: /copyRows: dst is float32 but src is bfloat16/ });
  assert.throws(() => a.copyRows(dst, 2, src, 0, 1, 3, 4), { name: 'RangeError', message: /copyRows: dst rows \[2, 5\) leave dst's 4 rows/ });
  assert.throws(() => a.copyRows(dst, 0, src, 2, 4, 3, 4), { name: 'RangeError', message: /copyRows: src rows 2 \+ i \* 4 for i < 3 leave src's 10 rows/ });
  assert.throws(() => a.copyRows(dst, 0, src, 0, 0, 2, 4), { name: 'RangeError', message: /copyRows: srcStride must be >= 1/ });
  assert.throws(() => a.copyRows(dst, 0, dst, 1, 1, 1, 4), { name: 'RangeError', message: /different storages/ });
  for (const h of [src, dst, half, half2]) a.free(h);
});

test('flashAttentionForward: bf16 output and accumulate merge as one call with every pattern', { skip }, () => {
  const a = requireGpu().addon;
  const [N, H, D] = [1000, 3, 64];
  const n = N * H * D, scale = 1 / Math.sqrt(D);
  const [q, k, v] = [1, 2, 3].map(() => {
    const h = a.alloc(BF16_CODE, n, false);
    a.upload(h, bits(rng.floats(n)));
    return h;
  }) as [NativeHandle, NativeHandle, NativeHandle];
  for (const causal of [true, false]) {
    const oAll = a.alloc(F32, n, false), lseAll = a.alloc(F32, N * H, false);
    a.flashAttentionForward(q, k, v, oAll, lseAll, 1, N, H, D, [128, 1, 512, 2, 1000, 4], causal, scale, false);
    const want = readAny(a, oAll, n, F32), wantLse = readAny(a, lseAll, N * H, F32);
    for (const code of [F32, BF16_CODE]) {
      const o = a.alloc(code, n, false), lse = a.alloc(F32, N * H, false);
      a.fill(o, Number.NaN);
      a.flashAttentionForward(q, k, v, o, lse, 1, N, H, D, [128, 1], causal, scale, false);
      a.flashAttentionForward(q, k, v, o, lse, 1, N, H, D, [512, 2, 1000, 4], causal, scale, false, true);
      const err = maxRelative(readAny(a, o, n, code), want), lseErr = maxRelative(readAny(a, lse, N * H, F32), wantLse);
      const limit = code === F32 ? 1e-5 : 1e-2;
      assert.ok(err <= limit, `causal ${causal} o ${code === F32 ? 'f32' : 'bf16'}: ${err} (seed ${seed})`);
      assert.ok(lseErr <= 1e-5, `causal ${causal} lse: ${lseErr} (seed ${seed})`);
      a.free(o);
      a.free(lse);
    }
    a.free(oAll);
    a.free(lseAll);
  }
  const o = a.alloc(2, n, false), lse = a.alloc(F32, N * H, false);
  assert.throws(() => a.flashAttentionForward(q, k, v, o, lse, 1, N, H, D, [128, 1], true, scale, false),
    { name: 'RangeError', message: /flashAttentionForward: o must be float32 or bfloat16, got int32/ });
  for (const h of [q, k, v, o, lse]) a.free(h);
});

test('flashProblemsForward: strided problems over another storage\'s keys, merged, against the CPU', { skip }, () => {
  const a = requireGpu().addon;
  const { addon: e } = createEmulatedAddon();
  const D = 64, scale = 1 / Math.sqrt(D);
  const qRows = 900, kRows = 700;
  const [q, qc] = pair(a, e, bits(rng.floats(qRows * D)));
  const [k, kc] = pair(a, e, bits(rng.floats(kRows * D)));
  const [v, vc] = pair(a, e, bits(rng.floats(kRows * D)));
  // distinct query rows: problem p takes rows p, p + 4, ... (strided, as a pattern's selected rows)
  const problems = [
    0, 4, 200, 0, 1, 300, // more keys than queries: bottom-right causal alignment
    1, 4, 150, 10, 3, 100, // fewer keys than queries: the first queries see nothing when causal
    2, 4, 1, 699, 1, 1,
    3, 4, 100, 5, 2, 0, // no keys: unchanged
  ];
  for (const causal of [true, false]) {
    for (const code of [F32, BF16_CODE]) {
      const start = rng.floats(qRows * D), startLse = rng.floats(qRows).map((x, i) => (i % 3 === 0 ? -Infinity : 3 * x));
      for (let i = 0; i < qRows; i++) if (startLse[i] === -Infinity) start.fill(0, i * D, (i + 1) * D);
      const [o, oc] = code === F32 ? [a.alloc(F32, qRows * D, false), e.alloc(F32, qRows * D, false)] : pair(a, e, bits(start));
      if (code === F32) {
        a.upload(o, start);
        e.upload(oc, start);
      }
      const lse = a.alloc(F32, qRows, false), lsec = e.alloc(F32, qRows, false);
      a.upload(lse, startLse);
      e.upload(lsec, startLse);
      a.flashProblemsForward(q, k, v, o, lse, problems, D, causal, scale);
      e.flashProblemsForward(qc, kc, vc, oc, lsec, problems, D, causal, scale);
      const err = maxRelative(readAny(a, o, qRows * D, code), readAny(e, oc, qRows * D, code));
      const lseErr = maxRelative(readAny(a, lse, qRows, F32), readAny(e, lsec, qRows, F32));
      // the kernels round P to bf16 before P V (as FlashAttention does); the emulator does not
      assert.ok(err <= (code === F32 ? 5e-3 : 1e-2), `causal ${causal} o ${code}: ${err} (seed ${seed})`);
      assert.ok(lseErr <= 1e-5, `causal ${causal} lse: ${lseErr} (seed ${seed})`);
      for (const h of [o, lse]) a.free(h);
    }
  }
  const o = a.alloc(F32, qRows * D, false), lse = a.alloc(F32, qRows, false);
  const call = (p: number[], kk = k) => () => a.flashProblemsForward(q, kk, v, o, lse, p, D, true, scale);
  assert.throws(call([0, 1, 10, 0, 1, 10, 5, 2, 449, 0, 1, 1]), { name: 'RangeError', message: /flashProblemsForward: problem 1: query rows 5 \+ i \* 2 for i < 449 leave q's 900 rows/ });
  assert.throws(call([0, 1, 10, 695, 1, 6]), { name: 'RangeError', message: /problem 0: key rows 695 \+ i \* 1 for i < 6 leave k's 700 rows/ });
  assert.throws(call([0, 0, 2, 0, 1, 1]), { name: 'RangeError', message: /problem 0: query stride must be >= 1/ });
  assert.throws(call([0, 1, 2, 0, 1]), { name: 'RangeError', message: /problems must be \[qRow0, qStride, nQ, kRow0, kStride, nK, \.\.\.\]/ });
  assert.throws(() => a.flashProblemsForward(q, k, q, o, lse, [0, 1, 1, 0, 1, 1], D, true, scale), { name: 'RangeError', message: /flashProblemsForward: v has 57600 elements, expected 44800/ });
  for (const h of [q, k, v, o, lse]) a.free(h);
});
