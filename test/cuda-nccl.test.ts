// NCCL through the addon, on one GPU (a communicator of one rank): the collectives run and move the
// right bytes. Several ranks on several GPUs are the distributed tests' business.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NcclComm, ncclStatus, ncclUniqueId } from '../src/backend/cuda/nccl.js';
import { gpu, readGpu, rng, skip } from './cuda-support.js';

const status = gpu ? ncclStatus(gpu) : null;
const ncclSkip = skip || (status && !status.ok ? `no NCCL: ${status.reason}` : false);

test('NCCL loads and reports its version', { skip: ncclSkip }, () => {
  assert.ok(status?.ok && status.version >= 20000, JSON.stringify(status));
});

test('a one-rank communicator runs every collective', { skip: ncclSkip }, () => {
  const g = gpu!;
  const id = ncclUniqueId(g);
  assert.equal(id.length, 128);
  const comm = NcclComm.init(g, id, 1, 0);
  try {
    const data = rng.floats(1000);
    const send = g.fromArray(data);
    const recv = g.alloc('float32', 1000);
    comm.allReduce(send, recv, 'sum');
    assert.deepEqual(readGpu(recv), data);
    comm.allReduce(send, send, 'max'); // in place
    assert.deepEqual(readGpu(send), data);
    comm.allGather(send, recv);
    assert.deepEqual(readGpu(recv), data);
    comm.reduceScatter(send, recv, 'avg');
    assert.deepEqual(readGpu(recv), data);
    const ints = g.fromArray(new Int32Array([1, 2, 3]));
    const out = g.alloc('int32', 3);
    comm.group(() => comm.broadcast(ints, out, 0));
    assert.deepEqual([...readGpu(out)], [1, 2, 3]);
    assert.equal(comm.asyncError(), '');
  } finally {
    comm.destroy();
  }
  assert.throws(() => comm.allReduce(g.alloc('float32', 1), g.alloc('float32', 1)), /used after destroy/);
});
