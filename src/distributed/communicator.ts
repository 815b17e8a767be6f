/**
 * The collectives distributed code is written against. Every method is asynchronous so that one process
 * can run several ranks concurrently (the in-process implementation, for tests and the CPU); NCCL queues
 * the same operations on a stream. Buffers are storages of the communicator's backend; results are new
 * storages owned by the caller.
 *
 * Ordering rule (as with NCCL): the members of a communicator issue its collectives in the same order.
 * Overlapping groups are safe when every rank issues its operations in one global order (for example
 * sorted by pattern, then segment), which is what sequence-parallel attention does.
 */
import type { Backend, Storage } from '../backend/backend.js';
import type { DType } from '../tensor/dtype.js';

export type CollectiveReduceOp = 'sum' | 'max';

/** One message of an `exchange`: `data` goes to `peer` (a rank of the communicator). */
export interface SendSpec {
  readonly peer: number;
  readonly data: Storage;
}

/** One expected message of an `exchange`: `size` elements of `dtype` from `peer`. */
export interface RecvSpec {
  readonly peer: number;
  readonly size: number;
  readonly dtype: DType;
}

export interface Communicator {
  /** This process's rank in the communicator, 0 <= rank < size. */
  readonly rank: number;
  readonly size: number;
  /** The world ranks of the members, in the communicator's rank order. */
  readonly members: readonly number[];
  /** Where the storages live. */
  readonly backend: Backend;

  /**
   * Every member's `send`, concatenated in rank order. `counts` (elements per member, the same list on
   * every member) allows members to contribute different sizes; by default all send the same size.
   */
  allGather(send: Storage, counts?: readonly number[]): Promise<Storage>;
  /**
   * `send` holds one block per member (sizes `counts`, equal by default); member i receives the
   * elementwise sum of every member's block i.
   */
  reduceScatter(send: Storage, counts?: readonly number[]): Promise<Storage>;
  /** The elementwise sum (or max) of every member's `x`. */
  allReduce(x: Storage, op?: CollectiveReduceOp): Promise<Storage>;
  /** The root's `x` on every member (the others pass a storage of the same size and dtype). */
  broadcast(x: Storage, root: number): Promise<Storage>;
  barrier(): Promise<void>;
  /**
   * Grouped point-to-point messages (ncclGroupStart, sends and receives, ncclGroupEnd): posts every send,
   * then returns the received storages in the order of `recvs`. Messages between two ranks arrive in the
   * order they were sent; each side lists them in the same order.
   */
  exchange(sends: readonly SendSpec[], recvs: readonly RecvSpec[]): Promise<Storage[]>;
  /**
   * The sub-communicator of the given ranks of this communicator (ascending, including this rank). Not a
   * collective: only the members take part in its operations, and nothing else is sent to create it.
   */
  group(ranks: readonly number[]): Communicator;
}

/** Thrown on the other ranks when one rank fails: names the rank and its error. */
export class PeerFailedError extends Error {
  override readonly name = 'PeerFailedError';
  constructor(readonly failedRank: number, readonly reason: string) {
    super(`rank ${failedRank} failed: ${reason}`);
  }
}

/** Checks a member list for `group` and returns it as a frozen array of ranks of the parent. */
export function checkGroupRanks(ranks: readonly number[], parentSize: number, self: number): readonly number[] {
  if (ranks.length === 0) throw new RangeError('group: the rank list is empty');
  for (let i = 0; i < ranks.length; i++) {
    const r = ranks[i]!;
    if (!Number.isInteger(r) || r < 0 || r >= parentSize) throw new RangeError(`group: rank ${r} is outside [0, ${parentSize})`);
    if (i > 0 && r <= ranks[i - 1]!) throw new RangeError(`group: ranks must be ascending and distinct, got [${ranks.join(', ')}]`);
  }
  if (!ranks.includes(self)) throw new RangeError(`group: rank ${self} is not among [${ranks.join(', ')}]`);
  return Object.freeze([...ranks]);
}

/** Block sizes for a collective: `counts` checked against the member count, or `total / size` each. */
export function blockCounts(what: string, total: number, size: number, counts: readonly number[] | undefined): number[] {
  if (counts === undefined) {
    if (total % size !== 0) throw new RangeError(`${what}: ${total} elements do not split into ${size} equal blocks`);
    return new Array<number>(size).fill(total / size);
  }
  if (counts.length !== size) throw new RangeError(`${what}: ${counts.length} counts for ${size} members`);
  for (const c of counts) if (!Number.isInteger(c) || c < 0) throw new RangeError(`${what}: count ${c} is not a size`);
  return [...counts];
}
