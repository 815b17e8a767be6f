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

/**
 * acc[indices[i]] += values[i] for every row i of `values` ([indices.length, cols]), in place on `acc`
 * ([rows, cols]); repeated indices add up. The scatter goes through tables of at most about rows / 8 rows
 * (one per band of `acc` that some index reaches), so the extra memory stays a fraction of `acc`'s.
 */
export function addRowsInto(backend: Backend, acc: Storage, rows: number, cols: number, values: Storage, indices: Int32Array): void {
  if (indices.length === 0) return;
  const band = Math.max(1024, Math.ceil(rows / 8));
  const bands = Math.ceil(rows / band);
  const counts = new Int32Array(bands);
  for (const r of indices) {
    if (!(r >= 0 && r < rows)) throw new RangeError(`addRowsInto: row ${r} is outside [0, ${rows})`);
    counts[Math.floor(r / band)]!++;
  }
  for (let b = 0; b < bands; b++) {
    if (counts[b] === 0) continue;
    const lo = b * band, hi = Math.min(rows, lo + band);
    const pick = new Int32Array(counts[b]!);
    const local = new Int32Array(counts[b]!);
    let n = 0;
    for (let i = 0; i < indices.length; i++) {
      const r = indices[i]!;
      if (r >= lo && r < hi) {
        pick[n] = i;
        local[n++] = r - lo;
      }
    }
    const pad = new Scratchpad(backend);
    try {
      // every row of `values` falls in this band: no need to gather them first
      const part = n === indices.length ? values : pad.hold(gatherRows(backend, values, cols, pick, pad));
      const table = pad.hold(backend.scatterAdd(part, pad.hold(backend.fromArray(local)), hi - lo, cols));
      backend.addSliceInto(acc, [rows, cols], table, [hi - lo, cols], [lo, 0]);
    } finally {
      pad.free();
    }
  }
}
