/**
 * The `Communicator` of distributed code over NCCL, one process per GPU. Every operation is queued on
 * the backend's stream, in order with the kernels around it, so the promises resolve as soon as the work
 * is queued; the storages they return are ready for any later kernel of the same stream.
 *
 * Equal-size collectives of the whole world use NCCL's own (ncclAllGather, ncclReduceScatter,
 * ncclAllReduce, ncclBroadcast). Uneven counts and the operations of a `group` are grouped point-to-point
 * messages (ncclSend/ncclRecv between ncclGroupStart and ncclGroupEnd) on the world communicator, so only
 * the members of a group take part and creating one sends nothing; reductions of blocks received that
 * way are summed in rank order on the GPU, the same order on every member.
 *
 * `traffic` counts the bytes this rank moves, per operation, with the in-process communicator's
 * convention (in-process.ts), so that both report the same numbers: the payload this rank addresses to
 * each other member (all-gather: its block to every other member; reduce-scatter: block m to member m;
 * all-reduce: a reduce-scatter then an all-gather of its reduced block; broadcast: the root's data to
 * every other member; exchange: each message), not the hops of NCCL's rings; a barrier counts nothing.
 * Groups share their parent's log (world ranks). Counting is a few additions a call, nothing on the GPU.
 */
import type { Storage } from '../backend.js';
import { bytesPerElement } from '../../tensor/dtype.js';
import { TrafficLog } from '../../distributed/traffic.js';
import { rendezvous } from '../../distributed/rendezvous.js';
import {
  blockCounts, checkGroupRanks, type CollectiveReduceOp, type Communicator, type RecvSpec, type SendSpec,
} from '../../distributed/communicator.js';
import type { CudaBackend } from './cuda-backend.js';
import { NcclComm, ncclUniqueId } from './nccl.js';

export class NcclCommunicator implements Communicator {
  readonly rank: number;
  readonly size: number;
  private readonly whole: boolean;
  private readonly groups = new Map<string, NcclCommunicator>();

  /**
   * `members`: world ranks of `comm` (the communicator of every process), ascending, this one among them.
   * `traffic`: where this rank's bytes are counted (world ranks; by default a new log).
   */
  constructor(
    readonly backend: CudaBackend, private readonly comm: NcclComm, readonly members: readonly number[],
    readonly traffic: TrafficLog = new TrafficLog(comm.size),
  ) {
    this.rank = members.indexOf(comm.rank);
    if (this.rank < 0) throw new RangeError(`NcclCommunicator: world rank ${comm.rank} is not among [${members.join(', ')}]`);
    if (traffic.size !== comm.size) throw new RangeError(`NcclCommunicator: the traffic log is for ${traffic.size} ranks, not ${comm.size}`);
    this.size = members.length;
    this.whole = this.size === comm.size;
  }

  /** Counts, for every other member m, to(m) elements of `dtypeOf`'s dtype sent to m and from(m) received from it. */
  private count(op: string, dtypeOf: Storage, to: (m: number) => number, from: (m: number) => number): void {
    const b = bytesPerElement(dtypeOf.dtype);
    const me = this.members[this.rank]!;
    for (let m = 0; m < this.size; m++) {
      if (m === this.rank) continue;
      const out = to(m), back = from(m);
      if (out > 0) this.traffic.record(op, me, this.members[m]!, out * b);
      if (back > 0) this.traffic.record(op, this.members[m]!, me, back * b);
    }
  }

  /** The communicator of every process of the world. */
  static world(backend: CudaBackend, comm: NcclComm): NcclCommunicator {
    return new NcclCommunicator(backend, comm, Array.from({ length: comm.size }, (_, r) => r));
  }

  private checkHealthy(): void {
    const e = this.comm.asyncError();
    if (e !== '') throw new Error(`NCCL failed: ${e}`);
  }

  private peer(what: string, p: number): number {
    if (!Number.isInteger(p) || p < 0 || p >= this.size) throw new RangeError(`${what}: peer ${p} is outside [0, ${this.size})`);
    return this.members[p]!;
  }

  async allGather(send: Storage, counts?: readonly number[]): Promise<Storage> {
    this.checkHealthy();
    const blocks = counts === undefined ? new Array<number>(this.size).fill(send.size) : blockCounts('allGather', 0, this.size, counts);
    if (send.size !== blocks[this.rank]) throw new RangeError(`allGather: rank ${this.rank} sends ${send.size} elements, counts say ${blocks[this.rank]}`);
    this.count('allGather', send, () => send.size, (m) => blocks[m]!);
    return this.gatherUncounted(send, blocks);
  }

  private gatherUncounted(send: Storage, blocks: readonly number[]): Storage {
    const total = blocks.reduce((a, b) => a + b, 0);
    const out = this.backend.alloc(send.dtype, total);
    if (total === 0) return out;
    if (this.whole && blocks.every((c) => c === send.size)) {
      this.comm.allGather(send, out);
      return out;
    }
    const starts = prefix(blocks);
    this.comm.group(() => {
      for (let m = 0; m < this.size; m++) {
        if (send.size > 0) this.comm.send(send, 0, send.size, this.members[m]!);
        if (blocks[m]! > 0) this.comm.recv(out, starts[m]!, blocks[m]!, this.members[m]!);
      }
    });
    return out;
  }

  async reduceScatter(send: Storage, counts?: readonly number[]): Promise<Storage> {
    this.checkHealthy();
    const blocks = blockCounts('reduceScatter', send.size, this.size, counts);
    const starts = prefix(blocks);
    if (starts[this.size] !== send.size) throw new RangeError(`reduceScatter: counts add up to ${starts[this.size]} but ${send.size} elements were given`);
    const own = blocks[this.rank]!;
    this.count('reduceScatter', send, (m) => blocks[m]!, () => own);
    if (this.whole && blocks.every((c) => c === own) && own > 0) {
      const out = this.backend.alloc(send.dtype, own);
      this.comm.reduceScatter(send, out, 'sum');
      return out;
    }
    return this.reduceBlocks(send, blocks, starts, 'sum');
  }

  /** Sends block m of `data` to member m and reduces every member's block for this rank, in rank order. */
  private reduceBlocks(data: Storage, blocks: readonly number[], starts: readonly number[], op: CollectiveReduceOp): Storage {
    const own = blocks[this.rank]!;
    const parts = this.backend.alloc(data.dtype, own * this.size);
    if (own > 0 || blocks.some((c) => c > 0)) {
      this.comm.group(() => {
        for (let m = 0; m < this.size; m++) {
          if (blocks[m]! > 0) this.comm.send(data, starts[m]!, blocks[m]!, this.members[m]!);
          if (own > 0) this.comm.recv(parts, m * own, own, this.members[m]!);
        }
      });
    }
    if (own === 0) return parts;
    let acc = this.backend.slice(parts, [this.size, own], [0, 0], [1, own]);
    for (let m = 1; m < this.size; m++) {
      const part = this.backend.slice(parts, [this.size, own], [m, 0], [1, own]);
      const next = this.backend.binary(op === 'sum' ? 'add' : 'maximum', acc, [own], part, [own], [own]);
      this.backend.free(part);
      this.backend.free(acc);
      acc = next;
    }
    this.backend.free(parts);
    return acc;
  }

  async allReduce(x: Storage, op: CollectiveReduceOp = 'sum'): Promise<Storage> {
    this.checkHealthy();
    if (op !== 'sum' && op !== 'max') throw new RangeError(`allReduce: unknown reduction '${String(op)}'`);
    return this.allReduceCounted(x, op, true);
  }

  private async allReduceCounted(x: Storage, op: CollectiveReduceOp, counted: boolean): Promise<Storage> {
    const n = x.size;
    const blocks = Array.from({ length: this.size }, (_, m) => Math.floor(((m + 1) * n) / this.size) - Math.floor((m * n) / this.size));
    const own = blocks[this.rank]!;
    // as a reduce-scatter followed by an all-gather of the reduced blocks
    if (counted) this.count('allReduce', x, (m) => blocks[m]! + own, (m) => own + blocks[m]!);
    if (this.whole) {
      const out = this.backend.alloc(x.dtype, x.size);
      if (x.size > 0) this.comm.allReduce(x, out, op);
      return out;
    }
    const starts = prefix(blocks);
    const mine = this.reduceBlocks(x, blocks, starts, op);
    const out = this.gatherUncounted(mine, blocks);
    this.backend.free(mine);
    return out;
  }

  async broadcast(x: Storage, root: number): Promise<Storage> {
    this.checkHealthy();
    const worldRoot = this.peer('broadcast', root);
    if (this.rank === root) this.count('broadcast', x, () => x.size, () => 0);
    else this.traffic.record('broadcast', worldRoot, this.members[this.rank]!, x.size * bytesPerElement(x.dtype));
    if (this.whole) {
      const out = this.backend.alloc(x.dtype, x.size);
      if (x.size > 0) this.comm.broadcast(x, out, worldRoot);
      return out;
    }
    if (this.rank === root) {
      if (x.size > 0) this.comm.group(() => { for (const m of this.members) if (m !== worldRoot) this.comm.send(x, 0, x.size, m); });
      return this.backend.copy(x);
    }
    const out = this.backend.alloc(x.dtype, x.size);
    if (x.size > 0) this.comm.recv(out, 0, x.size, worldRoot);
    return out;
  }

  /** Every member's queued work, NCCL included, has finished when it returns. */
  async barrier(): Promise<void> {
    this.checkHealthy();
    const one = this.backend.fromArray(new Float32Array([1]));
    const sum = await this.allReduceCounted(one, 'sum', false);
    this.backend.synchronize();
    this.backend.free(one);
    this.backend.free(sum);
    this.checkHealthy();
  }

  async exchange(sends: readonly SendSpec[], recvs: readonly RecvSpec[]): Promise<Storage[]> {
    this.checkHealthy();
    const targets = sends.map((s) => this.peer('exchange', s.peer));
    const sources = recvs.map((r) => this.peer('exchange', r.peer));
    const me = this.members[this.rank]!;
    sends.forEach((s, i) => { if (s.data.size > 0) this.traffic.record('exchange', me, targets[i]!, s.data.size * bytesPerElement(s.data.dtype)); });
    recvs.forEach((r, i) => { if (r.size > 0) this.traffic.record('exchange', sources[i]!, me, r.size * bytesPerElement(r.dtype)); });
    const outs = recvs.map((r) => this.backend.alloc(r.dtype, r.size));
    this.comm.group(() => {
      sends.forEach((s, i) => { if (s.data.size > 0) this.comm.send(s.data, 0, s.data.size, targets[i]!); });
      recvs.forEach((r, i) => { if (r.size > 0) this.comm.recv(outs[i]!, 0, r.size, sources[i]!); });
    });
    return outs;
  }

  group(ranks: readonly number[]): Communicator {
    const local = checkGroupRanks(ranks, this.size, this.rank);
    const key = local.join(',');
    let g = this.groups.get(key);
    if (g === undefined) {
      g = new NcclCommunicator(this.backend, this.comm, local.map((r) => this.members[r]!), this.traffic);
      this.groups.set(key, g);
    }
    return g;
  }

  /** Frees the NCCL communicator (every group made from it too); `abort` after a failure. */
  destroy(abort = false): void {
    this.comm.destroy(abort);
  }
}

function prefix(blocks: readonly number[]): number[] {
  const out = [0];
  for (const b of blocks) out.push(out[out.length - 1]! + b);
  return out;
}

/**
 * Joins the launcher's rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; rank 0 hands out the NCCL
 * unique id) and returns the world communicator on `backend` (whose GPU LOCAL_RANK picked).
 */
export async function createNcclCommunicator(backend: CudaBackend, env: NodeJS.ProcessEnv = process.env): Promise<NcclCommunicator> {
  const r = await rendezvous(env, { makeSharedId: () => ncclUniqueId(backend) });
  return NcclCommunicator.world(backend, NcclComm.init(backend, r.sharedId, r.size, r.rank));
}
