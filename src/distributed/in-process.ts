/**
 * P ranks in one process: each rank is an async function with its own communicator, and collectives are
 * messages between per-pair mailboxes (copies of the data, as a network would make). Used by the CPU
 * tests and by `longnet attention --ranks P`.
 *
 * Failure is never a hang: when a rank throws, every pending and later operation of the other ranks
 * rejects with a PeerFailedError naming it; when every unfinished rank waits for a message that nobody
 * can send any more (a rank returned early, or ranks issued collectives in different orders), all of
 * them reject with an error describing the waits.
 */
import type { Backend, Storage } from '../backend/backend.js';
import { getBackend } from '../backend/registry.js';
import { InputError } from '../errors.js';
import { bytesPerElement, newTypedArray, type DType, type TypedArray } from '../tensor/dtype.js';
import {
  PeerFailedError, blockCounts, checkGroupRanks, type CollectiveReduceOp, type Communicator, type RecvSpec, type SendSpec,
} from './communicator.js';
import { TrafficLog } from './traffic.js';

interface Message {
  readonly tag: string;
  readonly data: TypedArray;
}

interface Waiter {
  readonly tag: string;
  resolve(data: TypedArray): void;
  reject(error: unknown): void;
}

/** The shared state of the ranks of one `runRanks` call. */
class World {
  private readonly queues: Message[][][];
  private readonly waiters: Waiter[][][];
  private readonly pending: number[];
  private readonly finished: boolean[];
  failure: { rank: number | null; error: unknown } | null = null;

  constructor(readonly size: number, readonly traffic: TrafficLog) {
    const grid = <T>(): T[][][] => Array.from({ length: size }, () => Array.from({ length: size }, () => [] as T[]));
    this.queues = grid<Message>();
    this.waiters = grid<Waiter>();
    this.pending = new Array<number>(size).fill(0);
    this.finished = new Array<boolean>(size).fill(false);
  }

  /** Throws if the world has failed: the failure of another rank, as seen from `rank`. */
  ensureHealthy(rank: number): void {
    const f = this.failure;
    if (f === null) return;
    throw f.rank === null || f.rank === rank ? f.error : new PeerFailedError(f.rank, messageOf(f.error));
  }

  post(op: string, tag: string, from: number, to: number, data: TypedArray): void {
    this.ensureHealthy(from);
    this.traffic.record(op, from, to, data.length * bytesPerElement(dtypeOf(data)));
    const waiting = this.waiters[from]![to]!;
    const w = waiting[0];
    if (w === undefined) {
      this.queues[from]![to]!.push({ tag, data });
      return;
    }
    if (w.tag !== tag) {
      this.fail(null, new Error(`collective mismatch: rank ${to} expected ${w.tag} from rank ${from} but rank ${from} sent ${tag}`));
      return;
    }
    waiting.shift();
    this.pending[to]!--;
    w.resolve(data);
  }

  receive(tag: string, from: number, to: number): Promise<TypedArray> {
    this.ensureHealthy(to);
    const queued = this.queues[from]![to]!.shift();
    if (queued !== undefined) {
      if (queued.tag !== tag) {
        const error = new Error(`collective mismatch: rank ${to} expected ${tag} from rank ${from} but rank ${from} sent ${queued.tag}`);
        this.fail(null, error);
        return Promise.reject(error);
      }
      return Promise.resolve(queued.data);
    }
    if (this.finished[from]) {
      const error = new Error(`rank ${to} waits for ${tag} from rank ${from}, which has already returned`);
      this.fail(null, error);
      return Promise.reject(error);
    }
    return new Promise<TypedArray>((resolve, reject) => {
      this.waiters[from]![to]!.push({ tag, resolve, reject });
      this.pending[to]!++;
      this.checkDeadlock();
    });
  }

  finish(rank: number): void {
    this.finished[rank] = true;
    for (let to = 0; to < this.size; to++) {
      const w = this.waiters[rank]![to]![0];
      if (w !== undefined) {
        this.fail(null, new Error(`rank ${to} waits for ${w.tag} from rank ${rank}, which has already returned`));
        return;
      }
    }
    this.checkDeadlock();
  }

  /** Records the first failure and rejects every waiting receive. */
  fail(rank: number | null, error: unknown): void {
    if (this.failure !== null) return;
    this.failure = { rank, error };
    for (let from = 0; from < this.size; from++) {
      for (let to = 0; to < this.size; to++) {
        const list = this.waiters[from]![to]!;
        for (const w of list.splice(0)) {
          w.reject(rank === null || rank === to ? error : new PeerFailedError(rank, messageOf(error)));
        }
        this.pending[to] = 0;
      }
    }
  }

  /** Every unfinished rank waits on a message nobody will send: fail instead of hanging. */
  private checkDeadlock(): void {
    const waits: string[] = [];
    for (let r = 0; r < this.size; r++) {
      if (this.finished[r]) continue;
      if (this.pending[r] === 0) return;
      for (let from = 0; from < this.size; from++) {
        const w = this.waiters[from]![r]![0];
        if (w !== undefined) waits.push(`rank ${r} for ${w.tag} from rank ${from}`);
      }
    }
    if (waits.length === 0) return;
    this.fail(null, new Error(`deadlock: every rank is waiting (${waits.join('; ')})`));
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function dtypeOf(data: TypedArray): DType {
  return data instanceof Float64Array ? 'float64' : data instanceof Float32Array ? 'float32' : 'int32';
}

/** One rank's view of a world, or of a group of its ranks. */
class InProcessCommunicator implements Communicator {
  readonly rank: number;
  readonly size: number;
  private readonly key: string;
  private readonly groups = new Map<string, InProcessCommunicator>();

  constructor(
    private readonly world: World, private readonly worldRank: number, readonly members: readonly number[],
    readonly backend: Backend,
  ) {
    this.rank = members.indexOf(worldRank);
    this.size = members.length;
    this.key = members.join(',');
  }

  private tag(op: string): string {
    return `${op}[${this.key}]`;
  }

  private post(op: string, peer: number, data: TypedArray): void {
    this.world.post(op, this.tag(op), this.worldRank, this.members[peer]!, data);
  }

  private async receive(op: string, peer: number, size: number): Promise<TypedArray> {
    const data = await this.world.receive(this.tag(op), this.members[peer]!, this.worldRank);
    if (data.length !== size) {
      const error = new Error(`${this.tag(op)}: rank ${this.members[peer]} sent ${data.length} elements, rank ${this.worldRank} expected ${size}`);
      this.world.fail(null, error);
      throw error;
    }
    return data;
  }

  private checkPeer(what: string, peer: number): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.size) throw new RangeError(`${what}: peer ${peer} is outside [0, ${this.size})`);
  }

  async allGather(send: Storage, counts?: readonly number[]): Promise<Storage> {
    this.world.ensureHealthy(this.worldRank);
    const blocks = counts === undefined ? new Array<number>(this.size).fill(send.size) : blockCounts('allGather', 0, this.size, counts);
    if (send.size !== blocks[this.rank]) throw new RangeError(`allGather: rank ${this.rank} sends ${send.size} elements, counts say ${blocks[this.rank]}`);
    const mine = this.backend.read(send);
    for (let m = 0; m < this.size; m++) if (m !== this.rank) this.post('allGather', m, mine);
    const parts = await Promise.all(blocks.map((c, m) => (m === this.rank ? mine : this.receive('allGather', m, c))));
    const out = newTypedArray(send.dtype, blocks.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return this.backend.fromArray(out);
  }

  async reduceScatter(send: Storage, counts?: readonly number[]): Promise<Storage> {
    this.world.ensureHealthy(this.worldRank);
    return this.backend.fromArray(await this.reduceBlocks('reduceScatter', this.backend.read(send), blockCounts('reduceScatter', send.size, this.size, counts), 'sum'));
  }

  /** Sends block m of `data` to member m and returns the reduction of every member's block for this rank. */
  private async reduceBlocks(op: string, data: TypedArray, blocks: readonly number[], reduce: CollectiveReduceOp): Promise<TypedArray> {
    const starts: number[] = [];
    let at = 0;
    for (const c of blocks) {
      starts.push(at);
      at += c;
    }
    if (at !== data.length) throw new RangeError(`${op}: counts add up to ${at} but ${data.length} elements were given`);
    for (let m = 0; m < this.size; m++) {
      if (m !== this.rank) this.post(op, m, data.subarray(starts[m]!, starts[m]! + blocks[m]!).slice());
    }
    const own = blocks[this.rank]!;
    const parts = await Promise.all(blocks.map((_, m) => (
      m === this.rank ? data.subarray(starts[m]!, starts[m]! + own) : this.receive(op, m, own))));
    // rank order, the same on every rank, so that every member reduces in the same order
    const out = parts[0]!.slice();
    for (let m = 1; m < parts.length; m++) {
      const p = parts[m]!;
      if (reduce === 'sum') for (let i = 0; i < own; i++) out[i] += p[i]!;
      else for (let i = 0; i < own; i++) if (p[i]! > out[i]! || Number.isNaN(p[i]!)) out[i] = p[i]!;
    }
    return out;
  }

  async allReduce(x: Storage, op: CollectiveReduceOp = 'sum'): Promise<Storage> {
    this.world.ensureHealthy(this.worldRank);
    if (op !== 'sum' && op !== 'max') throw new RangeError(`allReduce: unknown reduction '${String(op)}'`);
    // reduce-scatter then all-gather: each rank moves 2 (P-1)/P of the data, as a ring all-reduce does
    const n = x.size;
    const blocks = Array.from({ length: this.size }, (_, m) => Math.floor(((m + 1) * n) / this.size) - Math.floor((m * n) / this.size));
    const mine = await this.reduceBlocks('allReduce', this.backend.read(x), blocks, op);
    for (let m = 0; m < this.size; m++) if (m !== this.rank) this.post('allReduce', m, mine);
    const parts = await Promise.all(blocks.map((c, m) => (m === this.rank ? mine : this.receive('allReduce', m, c))));
    const out = newTypedArray(x.dtype, n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return this.backend.fromArray(out);
  }

  async broadcast(x: Storage, root: number): Promise<Storage> {
    this.world.ensureHealthy(this.worldRank);
    this.checkPeer('broadcast', root);
    if (this.rank === root) {
      const data = this.backend.read(x);
      for (let m = 0; m < this.size; m++) if (m !== root) this.post('broadcast', m, data);
      return this.backend.fromArray(data);
    }
    return this.backend.fromArray(await this.receive('broadcast', root, x.size));
  }

  async barrier(): Promise<void> {
    this.world.ensureHealthy(this.worldRank);
    const empty = new Float32Array(0);
    for (let m = 0; m < this.size; m++) if (m !== this.rank) this.post('barrier', m, empty);
    await Promise.all(this.members.map((_, m) => (m === this.rank ? null : this.receive('barrier', m, 0))));
  }

  async exchange(sends: readonly SendSpec[], recvs: readonly RecvSpec[]): Promise<Storage[]> {
    this.world.ensureHealthy(this.worldRank);
    for (const s of sends) this.checkPeer('exchange', s.peer);
    for (const r of recvs) this.checkPeer('exchange', r.peer);
    for (const s of sends) this.post('exchange', s.peer, this.backend.read(s.data));
    const data = await Promise.all(recvs.map((r) => this.receive('exchange', r.peer, r.size)));
    return data.map((d, i) => {
      const want = recvs[i]!.dtype;
      if (d.length > 0 && dtypeOf(d) !== want) throw new Error(`exchange: rank ${recvs[i]!.peer} sent ${dtypeOf(d)}, expected ${want}`);
      return this.backend.fromArray(d.length > 0 ? d : newTypedArray(want, 0));
    });
  }

  group(ranks: readonly number[]): Communicator {
    const local = checkGroupRanks(ranks, this.size, this.rank);
    const key = local.join(',');
    let g = this.groups.get(key);
    if (g === undefined) {
      g = new InProcessCommunicator(this.world, this.worldRank, local.map((r) => this.members[r]!), this.backend);
      this.groups.set(key, g);
    }
    return g;
  }
}

export interface RunRanksOptions {
  /** Where the ranks' storages live (default: the CPU). */
  backend?: Backend;
  /** Receives the byte accounting of every message (create it with the number of ranks). */
  traffic?: TrafficLog;
}

/**
 * Runs `fn` once per rank, concurrently in this process, each with its own communicator, and returns
 * the results in rank order. If a rank throws, the other ranks' operations reject promptly with a
 * PeerFailedError and this rejects with the first error.
 */
export async function runRanks<T>(
  size: number, fn: (comm: Communicator) => Promise<T> | T, options: RunRanksOptions = {},
): Promise<T[]> {
  if (!Number.isInteger(size) || size < 1) throw new InputError(`the number of ranks must be a positive integer, got ${size}`);
  const traffic = options.traffic ?? new TrafficLog(size);
  if (traffic.size !== size) throw new RangeError(`runRanks: the traffic log is for ${traffic.size} ranks, not ${size}`);
  const backend = options.backend ?? getBackend('cpu');
  const world = new World(size, traffic);
  const everyone = Array.from({ length: size }, (_, r) => r);
  const runs = everyone.map(async (rank) => {
    const comm = new InProcessCommunicator(world, rank, everyone, backend);
    try {
      const value = await fn(comm);
      world.finish(rank);
      return value;
    } catch (error) {
      world.fail(rank, error);
      throw error;
    }
  });
  const settled = await Promise.allSettled(runs);
  if (world.failure !== null) throw world.failure.error;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}
