import type { Storage } from '../backend.js';
import type { CudaBackend } from './cuda-backend.js';
import type { NativeComm } from './native.js';

export type NcclStatus = { ok: true; version: number } | { ok: false; reason: string };
export type ReduceOpName = 'sum' | 'max' | 'min' | 'avg';

/** Whether NCCL can be loaded on this machine; when not, `reason` is one line. */
export function ncclStatus(backend: CudaBackend): NcclStatus {
  return backend.addon.ncclInfo();
}

/** A new NCCL unique id (128 bytes) for rank 0 to hand to the others through the rendezvous. */
export function ncclUniqueId(backend: CudaBackend): Uint8Array {
  return backend.addon.ncclUniqueId();
}

/**
 * One rank's NCCL communicator, the thin layer over the addon: collectives are queued on the backend's
 * stream, in order with its kernels; `send` and `recv` may be the same storage (in place) where NCCL
 * allows it. `NcclCommunicator` (nccl-communicator.ts) builds the `Communicator` interface on it.
 */
export class NcclComm {
  private comm: NativeComm | null;

  private constructor(private readonly backend: CudaBackend, comm: NativeComm, readonly rank: number, readonly size: number) {
    this.comm = comm;
  }

  /** Blocks until all `size` ranks have joined with the same id. */
  static init(backend: CudaBackend, id: Uint8Array, size: number, rank: number): NcclComm {
    return new NcclComm(backend, backend.addon.ncclCommInit(id, size, rank), rank, size);
  }

  private handle(): NativeComm {
    if (!this.comm) throw new Error('NCCL communicator used after destroy');
    return this.comm;
  }

  allReduce(send: Storage, recv: Storage, op: ReduceOpName = 'sum'): void {
    this.backend.addon.ncclAllReduce(this.handle(), this.backend.handleOf(send), this.backend.handleOf(recv), op);
  }

  /** recv holds `size` copies of send's length, in rank order. */
  allGather(send: Storage, recv: Storage): void {
    this.backend.addon.ncclAllGather(this.handle(), this.backend.handleOf(send), this.backend.handleOf(recv));
  }

  /** send holds `size` blocks of recv's length; rank i receives the reduction of block i. */
  reduceScatter(send: Storage, recv: Storage, op: ReduceOpName = 'sum'): void {
    this.backend.addon.ncclReduceScatter(this.handle(), this.backend.handleOf(send), this.backend.handleOf(recv), op);
  }

  broadcast(send: Storage, recv: Storage, root: number): void {
    this.backend.addon.ncclBroadcast(this.handle(), this.backend.handleOf(send), this.backend.handleOf(recv), root);
  }

  /** Point-to-point: elements [offset, offset + count) of `data` to `peer` (pair with the peer's recv). */
  send(data: Storage, offset: number, count: number, peer: number): void {
    this.backend.addon.ncclSend(this.handle(), this.backend.handleOf(data), offset, count, peer);
  }

  recv(data: Storage, offset: number, count: number, peer: number): void {
    this.backend.addon.ncclRecv(this.handle(), this.backend.handleOf(data), offset, count, peer);
  }

  /** Runs the collectives `fn` queues as one NCCL group (needed for point-to-point patterns). */
  group<T>(fn: () => T): T {
    this.backend.addon.ncclGroupStart();
    try {
      return fn();
    } finally {
      this.backend.addon.ncclGroupEnd();
    }
  }

  /** '' while healthy, else NCCL's description of an asynchronous failure (a peer died, a network error). */
  asyncError(): string {
    return this.backend.addon.ncclAsyncError(this.handle());
  }

  /** Frees the communicator; `abort` does not wait for the other ranks (use it after a failure). */
  destroy(abort = false): void {
    if (!this.comm) return;
    const comm = this.comm;
    this.comm = null;
    this.backend.addon.ncclCommDestroy(comm, abort);
  }
}
