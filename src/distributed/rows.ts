/**
 * Moving rows between storages with the Backend's primitives only (gather, scatterAdd, slice,
 * addSliceInto), so that sequence-parallel attention runs on any backend that has them.
 */
import type { Backend, Storage } from '../backend/backend.js';
import type { DType } from '../tensor/dtype.js';

/** Allocations of one step, freed together (a no-op on the CPU, where the collector reclaims them). */
export class Scratchpad {
  private readonly held: Storage[] = [];
  constructor(readonly backend: Backend) {}

  /** Remembers `s` for `free()` and returns it. */
  hold<S extends Storage>(s: S): S {
    this.held.push(s);
    return s;
  }

  free(): void {
    for (const s of this.held.splice(0)) this.backend.free(s);
  }
}

/** The elements [start, start + size) of x, as a new storage. */
export function sliceFlat(backend: Backend, x: Storage, start: number, size: number): Storage {
  return backend.slice(x, [x.size], [start], [size]);
}

/** The parts one after the other, as a new storage. */
export function concatFlat(backend: Backend, dtype: DType, parts: readonly Storage[]): Storage {
  const total = parts.reduce((a, p) => a + p.size, 0);
  const out = backend.alloc(dtype, total);
  let at = 0;
  for (const p of parts) {
    if (p.size > 0) backend.addSliceInto(out, [total], p, [p.size], [at]);
    at += p.size;
  }
  return out;
}

/** Rows `indices` (int32, host) of `table` [rows, cols]. */
export function gatherRows(backend: Backend, table: Storage, cols: number, indices: Int32Array, pad?: Scratchpad): Storage {
  const idx = backend.fromArray(indices);
  pad?.hold(idx);
  return backend.gather(table, table.size / cols, cols, idx);
}
