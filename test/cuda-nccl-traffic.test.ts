// The byte counts of NcclCommunicator (its `traffic` log) against those of the in-process communicator,
// which moves the same messages: every collective, and whole sequence-parallel forward+backward passes.
// NCCL itself is replaced by a stand-in whose operations do nothing (outputs stay zero): the counts depend
// on sizes only, so each rank can run alone, one after the other. Runs on the emulated addon without a GPU.
// Also: addRowsInto (rows.ts), the in-place row scatter the sequence-parallel backward finishes with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cudaAvailable, type CudaBackend } from '../src/backend/cuda/index.js';
import type { NcclComm } from '../src/backend/cuda/nccl.js';
import { NcclCommunicator } from '../src/backend/cuda/nccl-communicator.js';
import { getBackend } from '../src/backend/registry.js';
import { Tensor } from '../src/index.js';
import type { Communicator } from '../src/distributed/communicator.js';
import { runRanks } from '../src/distributed/in-process.js';
import { addRowsInto } from '../src/distributed/rows.js';
import { sequenceParallelAttention } from '../src/distributed/sequence-parallel.js';
import { splitSequence } from '../src/distributed/split.js';
import { TrafficLog } from '../src/distributed/traffic.js';
import { useEmulatedCuda } from './cuda-emulator.js';
import { Random, seed } from './cuda-support.js';

if (!cudaAvailable().ok) useEmulatedCuda();
const gpu = getBackend('cuda') as CudaBackend;
gpu.setAttentionPrecision('fp32');

/** An NCCL communicator of `size` ranks whose operations are no-ops. */
function silentComm(rank: number, size: number): NcclComm {
  const nothing = (): void => {};
  return {
    rank, size, asyncError: () => '', allReduce: nothing, allGather: nothing, reduceScatter: nothing, broadcast: nothing,
    send: nothing, recv: nothing, group: <T>(fn: () => T): T => fn(), destroy: nothing,
  } as unknown as NcclComm;
}

function sameCounts(nccl: TrafficLog, ref: TrafficLog, rank: number, what: string): void {
  const ops = ref.operations().filter((o) => o !== 'barrier');
  assert.deepEqual(nccl.operations(), ops, `${what}: operations of rank ${rank}`);
  for (const op of ops) {
    assert.equal(nccl.sent(rank, op), ref.sent(rank, op), `${what}: ${op} bytes sent by rank ${rank}`);
    assert.equal(nccl.received(rank, op), ref.received(rank, op), `${what}: ${op} bytes received by rank ${rank}`);
  }
  assert.equal(nccl.sent(rank), ref.sent(rank), `${what}: bytes sent by rank ${rank}`);
  assert.equal(nccl.received(rank), ref.received(rank), `${what}: bytes received by rank ${rank}`);
}

/** Runs `fn` on in-process ranks (one log) and on each rank's silent NCCL communicator (one log each). */
async function compare(P: number, what: string, fn: (c: Communicator) => Promise<void>): Promise<void> {
  const ref = new TrafficLog(P);
  await runRanks(P, fn, { backend: gpu, traffic: ref });
  for (let r = 0; r < P; r++) {
    const comm = new NcclCommunicator(gpu, silentComm(r, P), Array.from({ length: P }, (_, i) => i));
    await fn(comm);
    sameCounts(comm.traffic, ref, r, what);
    // only this rank's messages: nothing between two other ranks
    for (let a = 0; a < P; a++) for (let b = 0; b < P; b++) if (a !== r && b !== r) assert.equal(comm.traffic.between(a, b), 0);
  }
}

test('NCCL communicator: bytes of every collective as the in-process communicator counts them', async () => {
  for (const P of [2, 3, 4]) {
    await compare(P, `collectives P=${P}`, async (c) => {
      const counts = Array.from({ length: P }, (_, r) => 3 + 2 * r);
      const total = counts.reduce((a, b) => a + b, 0);
      const keep: unknown[] = [];
      keep.push(await c.allGather(gpu.fromArray(new Float32Array(counts[c.rank]!)), counts));
      keep.push(await c.allGather(gpu.fromArray(new Float32Array(5))));
      keep.push(await c.reduceScatter(gpu.fromArray(new Float32Array(total)), counts));
      keep.push(await c.reduceScatter(gpu.fromArray(new Float32Array(4 * P))));
      keep.push(await c.allReduce(gpu.fromArray(new Float32Array(7))));
      keep.push(await c.allReduce(gpu.fromArray(new Float32Array(7)), 'max'));
      keep.push(await c.broadcast(gpu.fromArray(new Float32Array(6)), P - 1));
      const next = (c.rank + 1) % P, prev = (c.rank + P - 1) % P;
      keep.push(await c.exchange([{ peer: next, data: gpu.fromArray(new Float32Array(3 + c.rank)) }], [{ peer: prev, size: 3 + prev, dtype: 'float32' }]));
      await c.barrier();
      if (c.rank < 2) {
        const g = c.group([0, 1]);
        keep.push(await g.allReduce(gpu.fromArray(new Float32Array(9))));
        keep.push(await g.allGather(gpu.fromArray(new Float32Array(2))));
        keep.push(await g.broadcast(gpu.fromArray(new Float32Array(4)), 1));
      }
      assert.ok(keep.length > 0);
    });
  }
});

test('NCCL communicator: bytes of sequence-parallel attention, forward and backward, as in process', async () => {
  const rng = new Random(seed);
  for (const c of [
    { N: 100, H: 2, D: 16, P: 2, ws: [16, 40, 100], rs: [1, 2, 4] },
    { N: 96, H: 3, D: 32, P: 4, ws: [8, 32, 96], rs: [1, 4, 12] },
  ]) {
    for (const causal of [false, true]) {
      const shape = [1, c.N, c.H, c.D];
      const [q, k, v, dO] = [0, 1, 2, 3].map(() => splitSequence(Tensor.fromArray(rng.floats(c.N * c.H * c.D), shape, { device: 'cuda' }), c.P));
      await compare(c.P, `attention N=${c.N} P=${c.P} causal=${causal}`, async (comm) => {
        const j = comm.rank;
        const r = await sequenceParallelAttention(comm, q![j]!, k![j]!, v![j]!, {
          segmentLengths: c.ws, dilationRates: c.rs, causal, sequenceLength: c.N,
        });
        await r.backward(dO![j]!);
      });
    }
  }
});

test('addRowsInto adds rows in place, repeated rows summed, across bands', () => {
  const rng = new Random(seed + 7);
  for (const rows of [5, 1500, 20000]) {
    const cols = 3;
    const acc = rng.floats(rows * cols);
    const n = Math.min(4000, 2 * rows);
    // the upper half, and row 0: bands at both ends, none between for the largest
    const idx = Int32Array.from({ length: n }, () => (rows >> 1) + rng.int(rows - (rows >> 1)));
    idx[0] = 0;
    const vals = rng.floats(n * cols);
    const want = Float64Array.from(acc);
    idx.forEach((r, i) => { for (let d = 0; d < cols; d++) want[r * cols + d] += vals[i * cols + d]!; });
    const a = gpu.fromArray(acc);
    addRowsInto(gpu, a, rows, cols, gpu.fromArray(vals), idx);
    const got = gpu.read(a);
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 * (1 + Math.abs(want[i]!)), `rows=${rows} [${i}]: ${got[i]} vs ${want[i]}`);
  }
  assert.throws(() => addRowsInto(gpu, gpu.fromArray(new Float32Array(6)), 2, 3, gpu.fromArray(new Float32Array(3)), Int32Array.of(2)), /outside/);
});
