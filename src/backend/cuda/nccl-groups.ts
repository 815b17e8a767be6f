/**
 * The communicators of sequence x data parallel training over NCCL, one process per GPU: the world, and
 * one more NCCL communicator per sequence-parallel group (P consecutive ranks), so that a group's
 * collectives are NCCL's own collectives of that communicator rather than point-to-point messages on the
 * world's. One rendezvous hands out every unique id: rank 0 brings the world's id followed by one per group.
 */
import type { Storage } from '../backend.js';
import { rendezvousIds } from '../../distributed/rendezvous.js';
import {
  checkGroupRanks, type CollectiveReduceOp, type Communicator, type RecvSpec, type SendSpec,
} from '../../distributed/communicator.js';
import { InputError } from '../../errors.js';
import type { CudaBackend } from './cuda-backend.js';
import { NcclComm, ncclUniqueId } from './nccl.js';
import { NcclCommunicator } from './nccl-communicator.js';

/**
 * A communicator seen under other member numbers: `inner` numbers its members 0..size-1 (its own NCCL
 * communicator), `members` gives their world ranks. Every operation is the inner one.
 */
class WorldNumbered implements Communicator {
  constructor(private readonly inner: Communicator, readonly members: readonly number[]) {}
  get rank(): number { return this.inner.rank; }
  get size(): number { return this.inner.size; }
  get backend(): Communicator['backend'] { return this.inner.backend; }
  allGather(send: Storage, counts?: readonly number[]): Promise<Storage> { return this.inner.allGather(send, counts); }
  reduceScatter(send: Storage, counts?: readonly number[]): Promise<Storage> { return this.inner.reduceScatter(send, counts); }
  allReduce(x: Storage, op?: CollectiveReduceOp): Promise<Storage> { return this.inner.allReduce(x, op); }
  broadcast(x: Storage, root: number): Promise<Storage> { return this.inner.broadcast(x, root); }
  barrier(): Promise<void> { return this.inner.barrier(); }
  exchange(sends: readonly SendSpec[], recvs: readonly RecvSpec[]): Promise<Storage[]> { return this.inner.exchange(sends, recvs); }
  group(ranks: readonly number[]): Communicator {
    const local = checkGroupRanks(ranks, this.size, this.rank);
    return new WorldNumbered(this.inner.group(local), local.map((r) => this.members[r]!));
  }
}

export interface NcclTrainingComms {
  world: Communicator;
  /** This rank's sequence-parallel group (the world itself when the group is every rank). */
  group: Communicator;
  /** Frees the NCCL communicators; `abort` after a failure. */
  destroy(abort?: boolean): void;
}

/**
 * Joins the launcher's rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and creates the world's
 * NCCL communicator and this rank's group's, for groups of `groupSize` consecutive ranks.
 */
export async function createNcclTrainingComms(
  backend: CudaBackend, groupSize: number, env: NodeJS.ProcessEnv = process.env,
): Promise<NcclTrainingComms> {
  const worldSize = Number(env['WORLD_SIZE']);
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(groupSize) || groupSize < 1 || worldSize % groupSize !== 0) {
    throw new InputError(`${groupSize} ranks per sequence-parallel group do not divide WORLD_SIZE=${env['WORLD_SIZE'] ?? '(unset)'}`);
  }
  const groups = worldSize / groupSize;
  const separate = groupSize > 1 && groups > 1;
  const r = await rendezvousIds(env, separate ? 1 + groups : 1, () => ncclUniqueId(backend));
  const id = r.id;
  const worldComm = NcclComm.init(backend, id(0), r.size, r.rank);
  const world = NcclCommunicator.world(backend, worldComm);
  const first = Math.floor(r.rank / groupSize) * groupSize;
  const members = Array.from({ length: groupSize }, (_, i) => first + i);
  let groupComm: NcclCommunicator | null = null;
  let group: Communicator;
  if (!separate) {
    group = groupSize === r.size ? world : world.group(members);
  } else {
    try {
      groupComm = NcclCommunicator.world(backend, NcclComm.init(backend, id(1 + first / groupSize), groupSize, r.rank - first));
    } catch (error) {
      world.destroy(true);
      throw error;
    }
    group = new WorldNumbered(groupComm, members);
  }
  return {
    world,
    group,
    destroy: (abort = false) => {
      groupComm?.destroy(abort);
      world.destroy(abort);
    },
  };
}
