import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend } from '../src/index.js';
import type { Storage } from '../src/backend/backend.js';
import { PeerFailedError, type Communicator } from '../src/distributed/communicator.js';
import { runRanks } from '../src/distributed/in-process.js';
import { TrafficLog } from '../src/distributed/traffic.js';

const cpu = getBackend('cpu');
const f64 = (...xs: number[]): Storage => cpu.fromArray(Float64Array.from(xs));
const values = (s: Storage): number[] => Array.from(cpu.read(s));

test('collectives give the right values and count the bytes they move', async () => {
  const traffic = new TrafficLog(3);
  const out = await runRanks(3, async (comm) => {
    const r = comm.rank;
    const gathered = values(await comm.allGather(f64(r, 10 * r)));
    const uneven = values(await comm.allGather(f64(...Array.from({ length: r }, () => r)), [0, 1, 2]));
    const scattered = values(await comm.reduceScatter(f64(1, r, r, r * r, 5, 6)));
    const sum = values(await comm.allReduce(f64(r, 1, -r, 2, 0)));
    const max = values(await comm.allReduce(f64(r, 1 - r, 7), 'max'));
    const root = values(await comm.broadcast(r === 2 ? f64(4, 5) : f64(0, 0), 2));
    await comm.barrier();
    return { gathered, uneven, scattered, sum, max, root };
  }, { traffic });
  for (const o of out) {
    assert.deepEqual(o.gathered, [0, 0, 1, 10, 2, 20]);
    assert.deepEqual(o.uneven, [1, 2, 2]);
    assert.deepEqual(o.sum, [3, 3, -3, 6, 0]);
    assert.deepEqual(o.max, [2, 1, 7]);
    assert.deepEqual(o.root, [4, 5]);
  }
  assert.deepEqual(out.map((o) => o.scattered), [[3, 3], [3, 5], [15, 18]]);
  // allGather: each rank sends its 2 values (8 bytes each) to 2 peers
  assert.deepEqual(traffic.totals('allGather').slice(0, 1), [{ sent: 2 * 2 * 8 + 0, received: 2 * 2 * 8 + 3 * 8 }]);
  assert.equal(traffic.sent(2, 'allGather'), 2 * 2 * 8 + 2 * 2 * 8);
  // reduceScatter: each sends its 2 foreign blocks of 2, receives 2 blocks of 2
  for (const t of traffic.totals('reduceScatter')) assert.deepEqual(t, { sent: 32, received: 32 });
  // broadcast: only the root sends
  assert.equal(traffic.sent(2, 'broadcast'), 2 * 16);
  assert.equal(traffic.sent(0, 'broadcast') + traffic.sent(1, 'broadcast'), 0);
  assert.equal(traffic.sent(0, 'barrier'), 0);
  assert.match(traffic.table(), /rank .*allGather sent\/recv/);
});

test('exchange and groups: only the members talk', async () => {
  const traffic = new TrafficLog(4);
  const out = await runRanks(4, async (comm) => {
    const r = comm.rank;
    // a ring: each rank sends to the next and receives from the previous
    const [fromPrev] = await comm.exchange(
      [{ peer: (r + 1) % 4, data: f64(r, r) }], [{ peer: (r + 3) % 4, size: 2, dtype: 'float64' }],
    );
    // two groups of two, overlapping calls in a consistent order
    const pair = comm.group(r < 2 ? [0, 1] : [2, 3]);
    assert.equal(pair.size, 2);
    assert.equal(pair.rank, r % 2);
    const g = values(await pair.allGather(f64(r)));
    const middle = r === 1 || r === 2 ? values(await comm.group([1, 2]).allReduce(f64(r))) : null;
    return { prev: values(fromPrev!), g, middle };
  }, { traffic });
  assert.deepEqual(out.map((o) => o.prev), [[3, 3], [0, 0], [1, 1], [2, 2]]);
  assert.deepEqual(out.map((o) => o.g), [[0, 1], [0, 1], [2, 3], [2, 3]]);
  assert.deepEqual(out.map((o) => o.middle), [null, [3], [3], null]);
  assert.equal(traffic.between(0, 2, 'allGather'), 0);
  assert.equal(traffic.between(0, 1, 'allGather'), 8);
  assert.equal(traffic.between(0, 1, 'allReduce') + traffic.between(0, 2, 'allReduce'), 0);
  assert.ok(traffic.between(1, 2, 'allReduce') > 0);
});

test('a rank that throws makes every other rank fail promptly', async () => {
  const seen: unknown[] = new Array(3);
  const started = Date.now();
  await assert.rejects(
    runRanks(3, async (comm) => {
      try {
        if (comm.rank === 1) throw new Error('out of memory on purpose');
        // rank 0 and 2 wait for rank 1, which never sends
        await comm.allReduce(f64(comm.rank));
        await comm.barrier();
      } catch (e) {
        seen[comm.rank] = e;
        throw e;
      }
    }),
    /out of memory on purpose/,
  );
  assert.ok(Date.now() - started < 1000);
  assert.match(String(seen[1]), /out of memory on purpose/);
  for (const r of [0, 2]) {
    assert.ok(seen[r] instanceof PeerFailedError, `rank ${r}: ${String(seen[r])}`);
    assert.equal((seen[r] as PeerFailedError).failedRank, 1);
    assert.match((seen[r] as Error).message, /rank 1 failed: out of memory on purpose/);
  }
});

test('mismatched or missing collectives are errors, not hangs', async () => {
  // different orders on the two ranks
  await assert.rejects(
    runRanks(2, async (comm: Communicator) => {
      if (comm.rank === 0) {
        await comm.allGather(f64(1));
        await comm.barrier();
      } else {
        await comm.barrier();
        await comm.allGather(f64(1));
      }
    }),
    /collective mismatch: rank \d expected (allGather|barrier)/,
  );
  // a rank returns while the other waits for it
  await assert.rejects(
    runRanks(2, async (comm) => {
      if (comm.rank === 0) await comm.allReduce(f64(1));
    }),
    /rank 0 waits for allReduce\[0,1\] from rank 1, which has already returned/,
  );
  // everybody waits on someone: a receive nobody sends
  await assert.rejects(
    runRanks(2, async (comm) => {
      await comm.exchange([], [{ peer: 1 - comm.rank, size: 1, dtype: 'float64' }]);
    }),
    /deadlock: every rank is waiting/,
  );
  // size disagreements
  await assert.rejects(
    runRanks(2, async (comm) => { await comm.allGather(f64(...new Array(comm.rank + 1).fill(0))); }),
    /sent 1 elements, rank 1 expected 2|sent 2 elements, rank 0 expected 1/,
  );
});
