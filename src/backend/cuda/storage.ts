import type { Storage } from '../backend.js';
import type { DType } from '../../tensor/dtype.js';
import type { NativeHandle } from './native.js';

/** A storage in GPU memory. Freed by `backend.free`; the addon's finalizer is only a safety net. */
export class CudaStorage implements Storage {
  readonly device = 'cuda' as const;
  constructor(readonly handle: NativeHandle, readonly dtype: DType, readonly size: number) {}
}

export function cudaHandle(x: Storage, what: string): NativeHandle {
  if (!(x instanceof CudaStorage)) throw new Error(`cuda backend: ${what} is on ${x.device}, not cuda`);
  return x.handle;
}

export function floatHandle(x: Storage, what: string): NativeHandle {
  const h = cudaHandle(x, what);
  if (x.dtype !== 'float32') throw new Error(`cuda backend: ${what} needs a float32 tensor, got ${x.dtype}`);
  return h;
}

/** Float storage of either GPU float type: float32, or bfloat16 activations. */
export function activationHandle(x: Storage, what: string): NativeHandle {
  const h = cudaHandle(x, what);
  if (x.dtype !== 'float32' && x.dtype !== 'bfloat16') throw new Error(`cuda backend: ${what} needs a float32 or bfloat16 tensor, got ${x.dtype}`);
  return h;
}

export function intHandle(x: Storage, what: string): NativeHandle {
  const h = cudaHandle(x, what);
  if (x.dtype !== 'int32') throw new Error(`cuda backend: ${what} needs an int32 tensor, got ${x.dtype}`);
  return h;
}
