import type { Storage } from '../backend.js';
import { dtypeOfArray, newTypedArray, type DType, type FloatArray, type TypedArray } from '../../tensor/dtype.js';

/** Arrays at least this long live on SharedArrayBuffers, so that worker threads can share the work. */
const SHARED_MIN_ELEMENTS = 4096;

export class CpuStorage implements Storage {
  readonly device = 'cpu' as const;
  constructor(readonly data: TypedArray) {}
  get dtype(): DType { return dtypeOfArray(this.data); }
  get size(): number { return this.data.length; }
}

export function allocArray(dtype: DType, size: number): TypedArray {
  if (dtype === 'bfloat16') throw new Error('cpu backend: bfloat16 storage is for the cuda backend; the CPU stores float32 or float64');
  return newTypedArray(dtype, size, size >= SHARED_MIN_ELEMENTS);
}

export function cpuData(x: Storage): TypedArray {
  if (!(x instanceof CpuStorage)) throw new Error(`cpu backend: storage on ${x.device} passed to a CPU kernel`);
  return x.data;
}

export function floatData(x: Storage, what: string): FloatArray {
  const data = cpuData(x);
  if (data instanceof Int32Array) throw new Error(`cpu backend: ${what} needs a float tensor, got int32`);
  return data;
}

export function intData(x: Storage, what: string): Int32Array {
  const data = cpuData(x);
  if (!(data instanceof Int32Array)) throw new Error(`cpu backend: ${what} needs an int32 tensor, got ${x.dtype}`);
  return data;
}

/**
 * `x`, or a copy of it on a SharedArrayBuffer: small operands (a bias, a row of scales) live on ordinary
 * buffers, and a shared copy costs little next to the work it lets the worker threads share.
 */
export function shareable<T extends TypedArray>(x: T): T {
  if (x.buffer instanceof SharedArrayBuffer) return x;
  const copy = newTypedArray(dtypeOfArray(x), x.length, true) as T;
  copy.set(x as never);
  return copy;
}

/** A new array of the same dtype as `like`. */
export function allocLike(like: TypedArray, size = like.length): TypedArray {
  return allocArray(dtypeOfArray(like), size);
}
