// The fused bf16 dilated-attention kernels (native/src/kernels/flash_attention.h) behind the CUDA backend's
// 'bf16' attention precision, and the kernels around them (Dsum, device random fill).
//
// FlashAttention's rule, for o, lse, dq, dk and dv: the kernel's largest error against a float64 reference
// (the CPU backend on float64 copies of the same bf16 inputs) is at most twice the largest error of a
// plain implementation in the same precision, plus a small absolute slack. The plain implementation is
// emulated here as PyTorch's eager bf16 math computes attention: bf16 inputs, every matrix product
// accumulated in float32 and rounded to bf16, the scaled scores S and the probabilities P rounded to bf16,
// softmax and its backward computed in float32 from bf16 operands, outputs and gradients rounded to bf16.
// NaN never passes, outputs are poisoned before each run (an element the kernels forget stays NaN), and
// inputs are fresh random values each run (LONGNET_TEST_SEED repeats one).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionConfig, AttentionGeometry, HeadOffsets, Storage } from '../src/backend/backend.js';
import { CudaBackend, attentionPrecisionFromEnv } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { BF16_CODE, type NativeHandle } from '../src/backend/cuda/native.js';
import { headOffset } from '../src/attention/patterns.js';
import { Tensor, dilatedAttention, tidy } from '../src/index.js';
import { createEmulatedAddon, fromBf16Bits, roundToBf16 } from './cuda-emulator.js';
import { cpu, poison, readGpu, relativeError, requireGpu, Random, rng, seed, skip } from './cuda-support.js';

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

/** x rounded to the nearest bfloat16 (ties to even). */
function bf16(x: number): number {
  scratch[0] = x;
  const b = scratchBits[0]!;
  if ((b & 0x7f800000) === 0x7f800000) return scratch[0]!;
  scratchBits[0] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 0) & 0xffff0000;
  return scratch[0]!;
}

interface Result { o: ArrayLike<number>; lse: ArrayLike<number>; dq: ArrayLike<number>; dk: ArrayLike<number>; dv: ArrayLike<number> }
const KEYS = ['o', 'lse', 'dq', 'dk', 'dv'] as const;

/**
 * Plain bf16 dilated attention, forward and backward: one softmax per query over the multiset of keys its
 * patterns reach (a key reached by c patterns carries the logit bias log c), in eager bf16 precision.
 */
function plainBf16(
  q: Float32Array, k: Float32Array, v: Float32Array, dO: Float32Array, g: AttentionGeometry, c: AttentionConfig,
): Result {
  const { batch: B, seqLen: N, heads: H, headDim: D } = g;
  const n = B * N * H * D;
  const o = new Float32Array(n), lse = new Float32Array(B * N * H);
  const dq = new Float32Array(n), dkAcc = new Float64Array(n), dvAcc = new Float64Array(n);
  const at = (b: number, p: number, h: number): number => ((b * N + p) * H + h) * D;
  const counts = new Int32Array(N);
  const keys: number[] = [];
  const S = new Float64Array(N), P = new Float64Array(N), dS = new Float64Array(N);
  for (let h = 0; h < H; h++) {
    const pats = c.patterns.map((p) => ({ w: Math.min(p.segmentLength, N), r: p.dilationRate, off: headOffset(h, H, p.dilationRate, c.headOffsets) }));
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < N; p++) {
        // the multiset of keys of query p
        keys.length = 0;
        for (const { w, r, off } of pats) {
          const s0 = Math.floor(p / w) * w;
          if ((p - s0) % r !== off) continue;
          const end = c.causal ? p : Math.min(s0 + w, N) - 1;
          for (let j = s0 + off; j <= end; j += r) {
            if (counts[j] === 0) keys.push(j);
            counts[j]!++;
          }
        }
        const qi = at(b, p, h);
        const li = (b * N + p) * H + h;
        if (keys.length === 0) {
          lse[li] = -Infinity;
          continue;
        }
        let m = -Infinity;
        for (const j of keys) {
          const kj = at(b, j, h);
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi + d]! * k[kj + d]!;
          S[j] = bf16(bf16(dot) * c.scale);
          m = Math.max(m, S[j]!);
        }
        let z = 0;
        for (const j of keys) z = Math.fround(z + Math.fround(counts[j]! * Math.exp(S[j]! - m)));
        const L = Math.fround(m + Math.log(z));
        lse[li] = L;
        for (const j of keys) P[j] = bf16(counts[j]! * Math.exp(S[j]! - m) / z);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (const j of keys) acc += P[j]! * v[at(b, j, h) + d]!;
          o[qi + d] = bf16(acc);
        }
        // backward: dP = dO v^T, dS = P (dP - sum_k P_k dP_k), then through the scale and the products
        let dot = 0;
        for (const j of keys) {
          const vj = at(b, j, h);
          let dp = 0;
          for (let d = 0; d < D; d++) dp += dO[qi + d]! * v[vj + d]!;
          dS[j] = bf16(dp);
          dot += P[j]! * dS[j]!;
        }
        dot = Math.fround(dot);
        for (const j of keys) dS[j] = bf16(bf16(P[j]! * (dS[j]! - dot)) * c.scale);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (const j of keys) acc += dS[j]! * k[at(b, j, h) + d]!;
          dq[qi + d] = bf16(acc);
        }
        for (const j of keys) {
          const kj = at(b, j, h);
          for (let d = 0; d < D; d++) {
            dkAcc[kj + d] = Math.fround(dkAcc[kj + d]! + dS[j]! * q[qi + d]!);
            dvAcc[kj + d] = Math.fround(dvAcc[kj + d]! + P[j]! * dO[qi + d]!);
          }
        }
        for (const j of keys) counts[j] = 0;
      }
    }
  }
  return { o, lse, dq, dk: dkAcc.map(bf16), dv: dvAcc.map(bf16) };
}

function maxAbsError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) {
    if (ref[i] === -Infinity) continue;
    const x = Math.abs(a[i]! - ref[i]!);
    if (!(x <= e)) e = x; // NaN propagates
  }
  return e;
}

function maxAbs(ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) if (Number.isFinite(ref[i]!)) m = Math.max(m, Math.abs(ref[i]!));
  return m;
}

/** Normal values already representable in bf16, so that the reference sees exactly the kernel's inputs. */
function bf16Inputs(r: Random, n: number): Float32Array {
  return roundToBf16(r.floats(n));
}

interface Case {
  B: number; N: number; H: number; w: number[]; r: number[]; offsets?: HeadOffsets; note: string;
}

const SHAPES: Case[] = [
  // the paper's schedule scaled down: N not a multiple of any segment, r = 2, 4 not dividing H = 3
  { B: 1, N: 700, H: 3, w: [64, 128, 256], r: [1, 2, 4], note: 'paper schedule scaled down' },
  { B: 2, N: 300, H: 5, w: [64, 128, 256], r: [1, 2, 4], offsets: 'blocked', note: 'blocked head offsets, batch 2' },
  { B: 1, N: 50, H: 2, w: [64, 128], r: [1, 2], note: 'N below the smallest segment' },
  { B: 1, N: 100, H: 2, w: [12, 40], r: [3, 4], note: 'rows that no pattern selects' },
  { B: 1, N: 640, H: 1, w: [640], r: [1], note: 'one pattern (N, 1): dense attention' },
];

for (const D of [32, 64, 128]) {
  for (const causal of [false, true]) {
    for (const tc of SHAPES) {
      const name = `D=${D}${causal ? ' causal' : ''} ${tc.note}: N=${tc.N} B=${tc.B} H=${tc.H} w=[${tc.w}] r=[${tc.r}]`;
      test(`bf16 dilated attention ${name}: within FlashAttention's rule`, { skip }, (t) => {
        const g = requireGpu();
        g.setAttentionPrecision('bf16');
        assert.equal(g.attentionKernels(D), 'bf16');
        const geometry: AttentionGeometry = { batch: tc.B, seqLen: tc.N, heads: tc.H, headDim: D };
        const config: AttentionConfig = {
          patterns: tc.w.map((w, i) => ({ segmentLength: w, dilationRate: tc.r[i]! })),
          causal, scale: 1 / Math.sqrt(D), headOffsets: tc.offsets ?? 'paper',
        };
        const n = tc.B * tc.N * tc.H * D;
        const rows = tc.B * tc.N * tc.H;
        const [q, k, v, dO] = [bf16Inputs(rng, n), bf16Inputs(rng, n), bf16Inputs(rng, n), bf16Inputs(rng, n)];

        // float64 reference on the same (bf16-representable) inputs
        const c64 = [q, k, v, dO].map((x) => cpu.fromArray(Float64Array.from(x)));
        const rf = cpu.dilatedAttention(c64[0]!, c64[1]!, c64[2]!, geometry, config);
        const rb = cpu.dilatedAttentionBackward(c64[0]!, c64[1]!, c64[2]!, rf.o, rf.lse, c64[3]!, geometry, config);
        const ref: Result = { o: cpu.read(rf.o), lse: cpu.read(rf.lse), dq: cpu.read(rb.dq), dk: cpu.read(rb.dk), dv: cpu.read(rb.dv) };
        const plain = plainBf16(q, k, v, dO, geometry, config);

        const [gq, gk, gv, gdO] = [q, k, v, dO].map((x) => g.fromArray(x));
        poison([n, rows], 4);
        const gf = g.dilatedAttention(gq!, gk!, gv!, geometry, config);
        poison([n, rows], 4);
        const gb = g.dilatedAttentionBackward(gq!, gk!, gv!, gf.o, gf.lse, gdO!, geometry, config);
        const got: Result = { o: readGpu(gf.o), lse: readGpu(gf.lse), dq: readGpu(gb.dq), dk: readGpu(gb.dk), dv: readGpu(gb.dv) };

        const report: string[] = [];
        for (const key of KEYS) {
          const r = ref[key], x = got[key];
          for (let i = 0; i < r.length; i++) {
            if (r[i] === -Infinity) assert.equal(x[i], -Infinity, `${key}[${i}]: a row no pattern selects has lse -Infinity (seed ${seed})`);
            else assert.ok(Number.isFinite(x[i]!), `${key}[${i}] = ${x[i]} (unwritten or non-finite; seed ${seed})`);
          }
          const err = maxAbsError(x, r);
          const errPlain = maxAbsError(plain[key], r);
          const slack = 1e-5 * Math.max(1, maxAbs(r));
          const bound = 2 * errPlain + slack;
          report.push(`${key} ${err.toExponential(1)} (plain bf16 ${errPlain.toExponential(1)})`);
          assert.ok(err <= bound, `${key}: error ${err.toExponential(2)} > 2 x plain bf16 ${errPlain.toExponential(2)} + ${slack.toExponential(1)} (seed ${seed})`);
        }
        t.diagnostic(`max abs error vs float64: ${report.join('; ')}`);
        for (let row = 0; row < rows; row++) {
          if (ref.lse[row] !== -Infinity) continue;
          for (let d = 0; d < D; d++) assert.equal(got.o[row * D + d], 0, `o of a row no pattern selects (seed ${seed})`);
        }
        for (const s of [gq, gk, gv, gdO, gf.o, gf.lse, gb.dq, gb.dk, gb.dv]) g.free(s!);
      });
    }
  }
}

test('bf16 attention through the Tensor op: output and autograd gradients against the CPU', { skip }, () => {
  requireGpu();
  const g = getBackend('cuda') as CudaBackend; // the instance tensors run on
  const [B, N, H, D] = [2, 333, 4, 64];
  const shape = [B, N, H, D];
  const n = B * N * H * D;
  const data = [rng.floats(n), rng.floats(n), rng.floats(n), rng.floats(n)];
  const options = { segmentLengths: [32, 64, 128], dilationRates: [1, 2, 4], causal: true };
  const run = (device: 'cpu' | 'cuda') => tidy(() => {
    const [q, k, v] = data.slice(0, 3).map((x) => Tensor.fromArray(x, shape, { device, requiresGrad: true })) as [Tensor, Tensor, Tensor];
    const { output, lse } = dilatedAttention(q, k, v, options);
    output.backward(Tensor.fromArray(data[3]!, shape, { device }));
    const result = { o: output.toArray(), lse: lse.toArray(), dq: q.grad!.toArray(), dk: k.grad!.toArray(), dv: v.grad!.toArray() };
    for (const x of [q, k, v]) x.grad!.dispose(); // gradients outlive the scope by design
    return result;
  });
  const want = run('cpu');
  const previous = g.attentionPrecision();
  try {
    const before = g.memoryStats().inUse;
    g.setAttentionPrecision('bf16');
    const fused = run('cuda');
    g.setAttentionPrecision('fp32');
    const exact = run('cuda');
    g.synchronize();
    assert.equal(g.memoryStats().inUse, before, 'the bf16 temporaries and Dsum were freed');
    for (const key of KEYS) {
      const errFused = relativeError(fused[key], want[key]);
      const errExact = relativeError(exact[key], want[key]);
      // bf16 inputs (8 significant bits) bound the fused path; the float32 kernels agree far more closely
      assert.ok(errFused < 2e-2, `${key}: bf16 relative error ${errFused.toExponential(2)} (seed ${seed})`);
      assert.ok(errFused > errExact, `${key}: the bf16 setting did not take the fused kernels (seed ${seed})`);
      assert.ok(errExact < 1e-4, `${key}: fp32 relative error ${errExact.toExponential(2)} (seed ${seed})`);
    }
  } finally {
    g.setAttentionPrecision(previous);
  }
});

test('the fused kernels refuse wrong dtypes, sizes and head dims by argument', { skip }, () => {
  const g = requireGpu();
  const a = g.addon;
  const [B, N, H] = [1, 16, 2];
  const make = (code: number, size: number) => a.alloc(code, size, true);
  const bf = (D: number) => make(BF16_CODE, B * N * H * D);
  const f32 = (size: number) => make(0, size);
  const geo = (D: number) => [B, N, H, D, [8, 1], true, 1 / Math.sqrt(D), false] as const;
  const handles = [bf(64), bf(64), bf(64), f32(B * N * H * 64), f32(B * N * H), bf(96), f32(B * N * H * 96), f32(B * N * H * 64), make(2, 4)];
  type H = NativeHandle;
  const [q, k, v, o, lse, q96, o96, qf, ints] = handles as [H, H, H, H, H, H, H, H, H];
  try {
    assert.throws(() => a.flashAttentionForward(qf, k, v, o, lse, ...geo(64)), { name: 'RangeError', message: /flashAttentionForward: q must be bfloat16, got float32/ });
    assert.throws(() => a.flashAttentionForward(q, k, v, o, o, ...geo(64)), { name: 'RangeError', message: /flashAttentionForward: lse has \d+ elements, expected 32/ });
    assert.throws(() => a.flashAttentionForward(q96, q96, q96, o96, lse, ...geo(96)), { name: 'RangeError', message: /headDim must be 32, 64 or 128, got 96/ });
    assert.throws(
      () => a.flashAttentionBackward(q, k, v, o, lse, lse, o, o, o, ...geo(64)),
      { name: 'RangeError', message: /flashAttentionBackward: dO must be bfloat16, got float32/ },
    );
    assert.throws(() => a.attentionDsum(o, o, o, B * N * H, 64), { name: 'RangeError', message: /attentionDsum: dsum has/ });
    assert.throws(() => a.fillRandomNormal(ints, 1, 1), { name: 'RangeError', message: /fillRandomNormal: x must be float32 or bfloat16, got int32/ });
  } finally {
    for (const h of handles) a.free(h);
  }
});

test('attentionDsum: rowsum(o * dO) in float32 for float32 and bfloat16 operands', { skip }, () => {
  const g = requireGpu();
  const a = g.addon;
  for (const dim of [32, 64, 100, 128]) {
    const rows = 1 + rng.int(700);
    const o = roundToBf16(rng.floats(rows * dim)), dO = roundToBf16(rng.floats(rows * dim));
    const want = new Float64Array(rows);
    for (let r = 0; r < rows; r++) for (let d = 0; d < dim; d++) want[r] += o[r * dim + d]! * dO[r * dim + d]!;
    const upload = (x: Float32Array, code: number) => {
      const h = a.alloc(code, x.length, false);
      if (code === 0) a.upload(h, x);
      else a.upload(h, new Uint16Array(new Uint32Array(x.buffer.slice(0)).map((b) => b >>> 16)));
      return h;
    };
    for (const [co, cd] of [[0, 0], [0, BF16_CODE], [BF16_CODE, 0], [BF16_CODE, BF16_CODE]] as const) {
      const ho = upload(o, co), hd = upload(dO, cd);
      const out = a.alloc(0, rows, false);
      a.fill(out, Number.NaN);
      a.attentionDsum(ho, hd, out, rows, dim);
      const got = new Float32Array(rows);
      a.download(out, got);
      for (let r = 0; r < rows; r++) {
        const tol = 1e-5 * Math.sqrt(dim) * 4;
        assert.ok(Math.abs(got[r]! - want[r]!) <= tol * (1 + Math.abs(want[r]!)), `dim ${dim} (${co}, ${cd}) row ${r}: ${got[r]} vs ${want[r]} (seed ${seed})`);
      }
      for (const h of [ho, hd, out]) a.free(h);
    }
  }
});

test('fillRandomNormal: deterministic per seed, normal statistics, bf16 equal to the rounded float32 fill', { skip }, () => {
  const g = requireGpu();
  const a = g.addon;
  const n = 1_000_001; // odd: the last pair is half written
  const s = seed % 1_000_000;
  const fill = (code: number, sd: number, stddev = 2) => {
    const h = a.alloc(code, n, false);
    a.fill(h, Number.NaN);
    a.fillRandomNormal(h, sd, stddev);
    const out = code === 0 ? new Float32Array(n) : new Uint16Array(n);
    a.download(h, out);
    a.free(h);
    return code === 0 ? (out as Float32Array) : fromBf16Bits(out as Uint16Array);
  };
  const x = fill(0, s), again = fill(0, s), other = fill(0, s + 1), half = fill(BF16_CODE, s);
  assert.deepEqual(again, x, 'the same seed gives the same values');
  let mean = 0, sq = 0, same = 0, tail = 0;
  for (let i = 0; i < n; i++) {
    assert.ok(Number.isFinite(x[i]!), `element ${i} = ${x[i]}`);
    mean += x[i]!;
    sq += x[i]! * x[i]!;
    if (x[i] === other[i]) same++;
    if (Math.abs(x[i]!) > 2 * 1.959964) tail++;
  }
  mean /= n;
  const std = Math.sqrt(sq / n - mean * mean);
  assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
  assert.ok(Math.abs(std - 2) < 0.02, `stddev ${std}`);
  assert.ok(Math.abs(tail / n - 0.05) < 0.003, `two-sided 5% tail holds ${tail / n}`);
  assert.ok(same < 100, `seeds ${s} and ${s + 1} share ${same} values`);
  assert.deepEqual(half, roundToBf16(x), 'the bf16 fill is the float32 fill rounded to nearest');
});

test('resetPeakMemory starts a new peak at the bytes in use', { skip }, () => {
  const g = requireGpu();
  const big = g.alloc('float32', 1 << 22);
  g.free(big);
  assert.ok(g.memoryStats().peakInUse >= 4 << 22);
  g.resetPeakMemory();
  const stats = g.memoryStats();
  assert.equal(stats.peakInUse, stats.inUse);
});

// Without a GPU: the TypeScript side of the 'bf16' path on the emulated addon (test/cuda-emulator.ts),
// which computes each kernel on the CPU from the bf16 values it was given.
test('bf16 attention path of the CUDA backend on the emulated addon: casts, Dsum, kernels, frees', () => {
  const { addon, counters } = createEmulatedAddon();
  const g = new CudaBackend(addon, addon.init(0));
  assert.equal(g.attentionPrecision(), 'bf16');
  assert.equal(g.attentionKernels(64), 'bf16');
  assert.equal(g.attentionKernels(48), 'fp32');
  const r = new Random(seed);
  const geometry: AttentionGeometry = { batch: 1, seqLen: 90, heads: 3, headDim: 32 };
  const config: AttentionConfig = {
    patterns: [{ segmentLength: 16, dilationRate: 1 }, { segmentLength: 64, dilationRate: 4 }], causal: true, scale: 0.2, headOffsets: 'paper',
  };
  const n = 90 * 3 * 32;
  // dO already bf16, so that the Dsum of the float32 dO is the Dsum of the rounded one the CPU sees
  const [q, k, v, dO] = [r.floats(n), r.floats(n), r.floats(n), roundToBf16(r.floats(n))];
  const live = counters.live;
  const [gq, gk, gv, gdO] = [q, k, v, dO].map((x) => g.fromArray(x));
  const f = g.dilatedAttention(gq!, gk!, gv!, geometry, config);
  const b = g.dilatedAttentionBackward(gq!, gk!, gv!, f.o, f.lse, gdO!, geometry, config);
  // the CPU on the rounded q, k, v and dO, in float32 like the emulator
  const [cq, ck, cv, cdO] = [q, k, v, dO].map((x) => cpu.fromArray(roundToBf16(x)));
  const cf = cpu.dilatedAttention(cq!, ck!, cv!, geometry, config);
  const cb = cpu.dilatedAttentionBackward(cq!, ck!, cv!, cf.o, cf.lse, cdO!, geometry, config);
  const pairs = [[f.o, cf.o], [f.lse, cf.lse], [b.dq, cb.dq], [b.dk, cb.dk], [b.dv, cb.dv]] as const;
  for (const [i, [got, want]] of pairs.entries()) {
    const err = relativeError(g.read(got), cpu.read(want));
    assert.ok(err < 1e-4, `${KEYS[i]}: relative error ${err} (seed ${seed})`);
  }
  for (const s of [gq, gk, gv, gdO, f.o, f.lse, b.dq, b.dk, b.dv]) g.free(s!);
  assert.equal(counters.live, live, 'every temporary was freed');

  // other head dims and the fp32 setting take the float32 kernels, which never see a bf16 buffer
  g.setAttentionPrecision('fp32');
  assert.equal(g.attentionKernels(64), 'fp32');
  assert.throws(() => g.setAttentionPrecision('fp16' as never), /attention precision must be fp32 or bf16, got fp16/);
});

test('LONGNET_CUDA_ATTENTION accepts fp32 and bf16 and refuses anything else', () => {
  assert.equal(attentionPrecisionFromEnv(undefined), undefined);
  assert.equal(attentionPrecisionFromEnv(''), undefined);
  assert.equal(attentionPrecisionFromEnv('fp32'), 'fp32');
  assert.equal(attentionPrecisionFromEnv('bf16'), 'bf16');
  assert.throws(() => attentionPrecisionFromEnv('tf32'), /LONGNET_CUDA_ATTENTION=tf32: expected fp32 or bf16/);
});

test('dilated attention on the emulated addon: an allocation that fails frees what was allocated', () => {
  for (const precision of ['fp32', 'bf16'] as const) {
    const { addon, counters } = createEmulatedAddon();
    const g = new CudaBackend(addon, addon.init(0));
    g.setAttentionPrecision(precision);
    const geometry: AttentionGeometry = { batch: 1, seqLen: 40, heads: 2, headDim: 32 };
    const config: AttentionConfig = { patterns: [{ segmentLength: 16, dilationRate: 2 }], causal: true, scale: 0.2, headOffsets: 'paper' };
    const n = 40 * 2 * 32;
    const r = new Random(seed);
    const [q, k, v, dO] = [r.floats(n), r.floats(n), r.floats(n), r.floats(n)].map((x) => g.fromArray(x));
    const alloc = addon.alloc.bind(addon);
    const before = counters.live;
    addon.alloc = (code, size, zero) => {
      if (size === 40 * 2) throw Object.assign(new Error('CUDA out of memory (emulated)'), { code: 'ERR_CUDA_OUT_OF_MEMORY' });
      return alloc(code, size, zero);
    };
    assert.throws(() => g.dilatedAttention(q!, k!, v!, geometry, config), /out of memory/);
    addon.alloc = alloc;
    assert.equal(counters.live, before, `${precision}: the forward's o was freed when its lse could not be allocated`);
    const f = g.dilatedAttention(q!, k!, v!, geometry, config);
    const live = counters.live;
    // every allocation position inside the backward, in turn, runs out of memory
    for (let failAt = 1; ; failAt++) {
      let calls = 0;
      addon.alloc = (code, size, zero) => {
        if (++calls === failAt) throw Object.assign(new Error('CUDA out of memory (emulated)'), { code: 'ERR_CUDA_OUT_OF_MEMORY' });
        return alloc(code, size, zero);
      };
      let grads: { dq: Storage; dk: Storage; dv: Storage } | null = null;
      try {
        grads = g.dilatedAttentionBackward(q!, k!, v!, f.o, f.lse, dO!, geometry, config);
      } catch (e) {
        assert.match(String(e), /out of memory/);
        assert.equal(counters.live, live, `${precision}: allocation ${failAt} failed and left buffers behind`);
        continue;
      } finally {
        addon.alloc = alloc;
      }
      for (const x of Object.values(grads)) g.free(x);
      assert.equal(counters.live, live, `${precision}: a successful backward leaves only its gradients`);
      assert.ok(failAt > 3, `${precision}: the backward allocated its three gradients`);
      break;
    }
  }
});
