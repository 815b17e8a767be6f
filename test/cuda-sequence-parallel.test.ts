// Sequence-parallel attention on the CUDA backend (its gatheredAttention, gatheredAttentionBackward and
// mergeAttention), P in-process ranks sharing the device, against the single-device op on the same
// device. On a machine with a GPU this runs on it; elsewhere on the emulated addon (test/cuda-emulator.ts),
// which checks the TypeScript side (layout checks, tile lists, int32 buffers and their frees).
// NCCL across processes is bench/gpu-sequence-parallel.ts's business (scripts/device-sequence-parallel.sh).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailable, type CudaBackend } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { Tensor, dilatedAttention } from '../src/index.js';
import { runRanks } from '../src/distributed/in-process.js';
import { sequenceParallelAttention } from '../src/distributed/sequence-parallel.js';
import { joinSequence, splitSequence } from '../src/distributed/split.js';
import { useEmulatedCuda } from './cuda-emulator.js';
import { Random, seed } from './cuda-support.js';

const real = cudaAvailable().ok;
if (!real) useEmulatedCuda();
const gpu = getBackend('cuda') as CudaBackend;
// the single-device reference in float32, like the packed kernels the ranks use
gpu.setAttentionPrecision('fp32');
/** float32 on both sides, different summation orders on a real GPU; the emulator computes both on the CPU */
const TOL = real ? 2e-5 : 1e-6;

function relative(a: ArrayLike<number>, e: ArrayLike<number>, label: string): void {
  assert.equal(a.length, e.length, `${label}: length`);
  let err = 0, mag = 0;
  for (let i = 0; i < e.length; i++) {
    const x = a[i]!, y = e[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) {
      assert.ok(x === y, `${label}[${i}]: ${x} vs ${y} (seed ${seed})`);
      continue;
    }
    err = Math.max(err, Math.abs(x - y));
    mag = Math.max(mag, Math.abs(y));
  }
  assert.ok(err <= TOL * Math.max(mag, 1e-30), `${label}: max error ${err} of ${mag} (seed ${seed})`);
}

const CASES = [
  { B: 2, N: 100, H: 2, D: 16, P: 2, ws: [16, 40, 100], rs: [1, 2, 4] },
  { B: 1, N: 77, H: 3, D: 32, P: 3, ws: [10, 30, 90], rs: [1, 2, 3] },
];

for (const c of CASES) {
  for (const causal of [false, true]) {
    test(`cuda: ${c.P} ranks equal one device, N=${c.N} w=[${c.ws}] r=[${c.rs}] causal=${causal}`, async () => {
      const rng = new Random(seed + c.N + (causal ? 1 : 0));
      const shape = [c.B, c.N, c.H, c.D];
      const size = c.B * c.N * c.H * c.D;
      const make = (grad: boolean): Tensor => Tensor.fromArray(rng.floats(size), shape, { device: 'cuda', requiresGrad: grad });
      const [q, k, v, dO] = [make(true), make(true), make(true), make(false)];
      const options = { segmentLengths: c.ws, dilationRates: c.rs, causal };
      const ref = dilatedAttention(q, k, v, options);
      ref.output.backward(dO);
      const [qs, ks, vs, ds] = [q, k, v, dO].map((t) => splitSequence(t, c.P)) as [Tensor[], Tensor[], Tensor[], Tensor[]];
      const results = await runRanks(c.P, async (comm) => {
        const j = comm.rank;
        const r = await sequenceParallelAttention(comm, qs[j]!, ks[j]!, vs[j]!, { ...options, sequenceLength: c.N });
        const g = await r.backward(ds[j]!);
        r.dispose();
        return { o: r.output, lse: r.lse, ...g };
      }, { backend: gpu });
      const join = (pick: (r: (typeof results)[number]) => Tensor): ArrayLike<number> => joinSequence(results.map(pick)).toArray();
      relative(join((r) => r.o), ref.output.toArray(), 'output');
      relative(join((r) => r.lse), ref.lse.toArray(), 'lse');
      relative(join((r) => r.dq), q.grad!.toArray(), 'dq');
      relative(join((r) => r.dk), k.grad!.toArray(), 'dk');
      relative(join((r) => r.dv), v.grad!.toArray(), 'dv');
    });
  }
}
