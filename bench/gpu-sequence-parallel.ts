/**
 * Sequence-parallel dilated attention on GPUs over NCCL, one process per GPU:
 *
 *   longnet launch --nproc-per-node 2 -- node --import tsx bench/gpu-sequence-parallel.ts [check|time]
 *   node --import tsx bench/gpu-sequence-parallel.ts time        # the 1-GPU baseline (no launcher)
 *
 * `check`: every rank builds the same random q, k, v, dO of a whole sequence, runs the single-device op
 * on it (its own GPU) and the sequence-parallel op on its share, and compares outputs, log-sum-exps and
 * gradients, for a schedule whose longer segments cross the ranks, causal and not; and the bytes the NCCL
 * communicator counted for this rank (NcclCommunicator.traffic) against those of the same problem run on P
 * in-process ranks on this GPU. Runs on any number of ranks (2 and 4 in scripts/device-scaling.sh). With OUT
 * set, rank 0 writes $OUT/sp-check-P<P>.json (read by `bench/gpu-scaling.ts record`).
 * `time`: forward + backward of one attention layer (the op alone: no projections) at LONGNET_SP_TOKENS
 * tokens per GPU (default 2^20), median of LONGNET_SP_REPEAT runs after one warm-up.
 */
import { Tensor, dilatedAttention } from '../src/index.js';
import { getBackend } from '../src/backend/registry.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNcclCommunicator, type NcclCommunicator } from '../src/backend/cuda/nccl-communicator.js';
import type { Communicator } from '../src/distributed/communicator.js';
import { runRanks } from '../src/distributed/in-process.js';
import { TrafficLog } from '../src/distributed/traffic.js';
import { sequenceParallelAttention } from '../src/distributed/sequence-parallel.js';
import { splitSequence } from '../src/distributed/split.js';

const mode = process.argv[2] ?? 'check';
const distributed = process.env['WORLD_SIZE'] !== undefined;
const backend = getBackend('cuda') as CudaBackend;
// the single-device reference in float32, like the packed kernels the ranks use
backend.setAttentionPrecision('fp32');
const nccl: NcclCommunicator | null = distributed ? await createNcclCommunicator(backend) : null;
const comm: Communicator | null = nccl;
const rank = comm?.rank ?? 0;
const P = comm?.size ?? 1;
const log = (s: string): void => { if (rank === 0) console.log(s); };

function randoms(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}

function cuda(data: Float32Array, shape: number[], grad = false): Tensor {
  return Tensor.fromArray(data, shape, { device: 'cuda', requiresGrad: grad });
}

/** max |a - e| / max |e|, and whether -inf entries agree */
function compare(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let err = 0, mag = 0;
  for (let i = 0; i < e.length; i++) {
    const x = a[i]!, y = e[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) {
      if (x !== y) return Infinity;
      continue;
    }
    err = Math.max(err, Math.abs(x - y));
    mag = Math.max(mag, Math.abs(y));
  }
  return err / Math.max(mag, 1e-30);
}

/** Each collective of the communicator (uneven counts, a sub-group, point-to-point) against its definition. */
async function collectives(c: Communicator): Promise<boolean> {
  const fails: string[] = [];
  const same = (what: string, got: ArrayLike<number>, want: ArrayLike<number>): void => {
    if (got.length !== want.length || Array.from(want).some((x, i) => got[i] !== x)) fails.push(what);
  };
  const vals = (r: number, n: number, base = 0): Float32Array => Float32Array.from({ length: n }, (_, i) => base + 100 * r + i);
  const counts = Array.from({ length: P }, (_, r) => 3 + 2 * r);
  same('allGather uneven', backend.read(await c.allGather(backend.fromArray(vals(rank, counts[rank]!)), counts)),
    counts.flatMap((n, r) => Array.from(vals(r, n))));
  same('allGather', backend.read(await c.allGather(backend.fromArray(vals(rank, 5)))), counts.flatMap((_, r) => Array.from(vals(r, 5))));
  const total = counts.reduce((a, b) => a + b, 0);
  const start = counts.slice(0, rank).reduce((a, b) => a + b, 0);
  const sumOf = (n: number, off: number): number[] =>
    Array.from({ length: n }, (_, i) => Array.from({ length: P }, (_, r) => 100 * r + off + i).reduce((a, b) => a + b, 0));
  same('reduceScatter uneven', backend.read(await c.reduceScatter(backend.fromArray(vals(rank, total)), counts)), sumOf(counts[rank]!, start));
  same('reduceScatter', backend.read(await c.reduceScatter(backend.fromArray(vals(rank, 4 * P)))), sumOf(4, 4 * rank));
  same('allReduce', backend.read(await c.allReduce(backend.fromArray(vals(rank, 7)))), sumOf(7, 0));
  same('allReduce max', backend.read(await c.allReduce(backend.fromArray(vals(rank, 7)), 'max')), Array.from(vals(P - 1, 7)));
  same('broadcast', backend.read(await c.broadcast(backend.fromArray(vals(rank, 6)), P - 1)), Array.from(vals(P - 1, 6)));
  const next = (rank + 1) % P, prev = (rank + P - 1) % P;
  const got = await c.exchange([{ peer: next, data: backend.fromArray(vals(rank, 3 + rank)) }], [{ peer: prev, size: 3 + prev, dtype: 'float32' }]);
  same('exchange', backend.read(got[0]!), Array.from(vals(prev, 3 + prev)));
  const solo = c.group([rank]);
  same('group of one allReduce', backend.read(await solo.allReduce(backend.fromArray(vals(rank, 5)))), Array.from(vals(rank, 5)));
  if (P >= 2) {
    const pair = [0, 1];
    if (pair.includes(rank)) {
      const g = c.group(pair);
      same('group allReduce', backend.read(await g.allReduce(backend.fromArray(vals(rank, 9)))), Array.from({ length: 9 }, (_, i) => 100 + 2 * i));
      same('group broadcast', backend.read(await g.broadcast(backend.fromArray(vals(rank, 4)), 1)), Array.from(vals(1, 4)));
    }
  }
  await c.barrier();
  console.log(`rank ${rank} collectives: ${fails.length === 0 ? 'PASS' : `FAIL (${fails.join(', ')})`}`);
  return fails.length === 0;
}

async function check(): Promise<boolean> {
  if (comm === null) throw new Error('check runs under longnet launch');
  const B = 1, N = 6000, H = 4, D = 64;
  const shape = [B, N, H, D];
  const size = B * N * H * D;
  const collectivesOk = await collectives(comm);
  let ok = collectivesOk;
  let bytesMatch = true;
  const worstBy: Record<string, number> = {};
  log(`check: P=${P} B=${B} N=${N} H=${H} D=${D} w=[1024, 4000, 6000] r=[1, 2, 3] (4000 and 6000 cross the ranks)`);
  for (const causal of [false, true]) {
    const options = { segmentLengths: [1024, 4000, 6000], dilationRates: [1, 2, 3], causal };
    const [q, k, v] = [1, 2, 3].map((s) => cuda(randoms(size, s * 7919 + (causal ? 1 : 0)), shape, true)) as [Tensor, Tensor, Tensor];
    const dO = cuda(randoms(size, 99), shape);
    const ref = dilatedAttention(q, k, v, options);
    ref.output.backward(dO);
    const shards = [q, k, v, dO].map((t) => splitSequence(t, P)) as [Tensor[], Tensor[], Tensor[], Tensor[]];
    const [qs, ks, vs, ds] = shards.map((x) => x[rank]!) as [Tensor, Tensor, Tensor, Tensor];
    const me = nccl!.members[nccl!.rank]!;
    const before = { sent: nccl!.traffic.sent(me), received: nccl!.traffic.received(me) };
    const r = await sequenceParallelAttention(comm, qs, ks, vs, { ...options, sequenceLength: N });
    const g = await r.backward(ds);
    const counted = { sent: nccl!.traffic.sent(me) - before.sent, received: nccl!.traffic.received(me) - before.received };
    // the same problem on P in-process ranks on this GPU: the messages, hence the bytes, must be the same
    const log = new TrafficLog(P);
    await runRanks(P, async (c) => {
      const x = await sequenceParallelAttention(c, shards[0][c.rank]!, shards[1][c.rank]!, shards[2][c.rank]!, { ...options, sequenceLength: N });
      const y = await x.backward(shards[3][c.rank]!);
      for (const t of [x.output, x.lse, y.dq, y.dk, y.dv]) t.dispose();
    }, { backend, traffic: log });
    const bytesOk = counted.sent === log.sent(me) && counted.received === log.received(me);
    bytesMatch &&= bytesOk;
    console.log(`rank ${rank} causal=${causal}: bytes sent ${counted.sent}, received ${counted.received} (in process: ${log.sent(me)}, ${log.received(me)}) ` +
      `${bytesOk ? 'PASS' : 'FAIL'}`);
    const mine = (t: Tensor): Float32Array | Float64Array | Int32Array => splitSequence(t, P)[rank]!.toArray();
    const errs = {
      o: compare(r.output.toArray(), mine(ref.output)), lse: compare(r.lse.toArray(), mine(ref.lse)),
      dq: compare(g.dq.toArray(), mine(q.grad!)), dk: compare(g.dk.toArray(), mine(k.grad!)), dv: compare(g.dv.toArray(), mine(v.grad!)),
    };
    const worst = Math.max(...Object.values(errs));
    const pass = worst <= 1e-4;
    worstBy[String(causal)] = worst;
    ok &&= pass && bytesOk;
    console.log(`rank ${rank} causal=${causal}: ${Object.entries(errs).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(', ')} ${pass ? 'PASS' : 'FAIL'}`);
    r.dispose();
  }
  // every rank's verdict and errors, for rank 0's summary
  const mine = backend.fromArray(Float32Array.of(ok ? 1 : 0, collectivesOk ? 1 : 0, bytesMatch ? 1 : 0, worstBy['false'] ?? 0, worstBy['true'] ?? 0));
  const all = backend.read(await comm.allGather(mine));
  const at = (i: number): number[] => Array.from({ length: P }, (_, p) => all[5 * p + i]!);
  const summary = {
    P, pass: at(0).every((x) => x === 1), collectives: at(1).every((x) => x === 1), bytesMatch: at(2).every((x) => x === 1),
    errors: { false: Math.max(...at(3)), true: Math.max(...at(4)) }, device: backend.info.name, date: new Date().toISOString(),
  };
  log(`check: P=${P} ${summary.pass ? 'PASS' : 'FAIL'} (collectives ${summary.collectives ? 'PASS' : 'FAIL'}, worst relative error ` +
    `${summary.errors.false.toExponential(2)} non-causal, ${summary.errors.true.toExponential(2)} causal, bytes as in process: ${summary.bytesMatch ? 'yes' : 'NO'})`);
  const out = process.env['OUT'];
  if (rank === 0 && out) {
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, `sp-check-P${P}.json`), JSON.stringify(summary, null, 1) + '\n');
  }
  return ok;
}

async function time(): Promise<void> {
  const l = Number(process.env['LONGNET_SP_TOKENS'] ?? 2 ** 20);
  const repeat = Number(process.env['LONGNET_SP_REPEAT'] ?? 3);
  const H = 4, D = 64, N = l * P;
  const ws = [2048, 8192, 32768, 131072, 524288, 2097152, 4194304];
  const rs = [1, 2, 4, 8, 16, 32, 64];
  const keep = ws.map((w, i) => [w, rs[i]!] as const).filter(([w], i) => i === 0 || w / 2 < N);
  const options = { segmentLengths: keep.map(([w]) => w), dilationRates: keep.map(([, r]) => r), causal: true };
  const shape = [1, l, H, D];
  const size = l * H * D;
  const [q, k, v] = [1, 2, 3].map((s) => cuda(randoms(size, s + 17 * rank), shape, comm === null)) as [Tensor, Tensor, Tensor];
  const dO = cuda(randoms(size, 5 + rank), shape);
  const times: number[] = [];
  for (let it = 0; it <= repeat; it++) {
    if (comm) await comm.barrier();
    backend.synchronize();
    const t0 = performance.now();
    if (comm) {
      const r = await sequenceParallelAttention(comm, q, k, v, { ...options, sequenceLength: N });
      const g = await r.backward(dO);
      backend.synchronize();
      r.dispose();
      for (const t of [r.output, r.lse, g.dq, g.dk, g.dv]) t.dispose();
    } else {
      const ref = dilatedAttention(q, k, v, options);
      ref.output.backward(dO);
      backend.synchronize();
      for (const t of [ref.output, ref.lse, q.grad!, k.grad!, v.grad!]) t.dispose();
      q.grad = null; k.grad = null; v.grad = null;
    }
    if (comm) await comm.barrier();
    const ms = performance.now() - t0;
    if (it > 0) times.push(ms);
  }
  times.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)]!;
  log(`time: P=${P} tokens/GPU=${l} N=${N} H=${H} D=${D} causal w=[${options.segmentLengths}] r=[${options.dilationRates}] ` +
    `device=${backend.info.name}: forward+backward ${med.toFixed(1)} ms (median of ${repeat}), ${(N / med / 1e3).toFixed(2)} Mtok/s`);
}

let ok = true;
if (mode === 'check') ok = await check();
else await time();
if (comm) {
  await comm.barrier();
  (comm as { destroy?: () => void }).destroy?.();
}
process.exit(ok ? 0 : 1);
