import type { Backend, Storage } from '../../backend/backend.js';
import { isFloat } from '../dtype.js';
import type { Shape } from '../shape.js';
import { Tensor } from '../tensor.js';

/** Wraps a storage that `backend` just produced as a tensor of `shape`. */
export function wrap(storage: Storage, shape: Shape, backend: Backend): Tensor {
  return Tensor.fromStorage(storage, shape, backend);
}

/** Checks that the operands of `op` share a device and a dtype, and returns their backend. */
export function common(op: string, ...tensors: Tensor[]): Backend {
  const first = tensors[0]!;
  for (const t of tensors) {
    if (t.device !== first.device) throw new Error(`${op}: tensors on different devices (${first.device} and ${t.device})`);
    if (t.dtype !== first.dtype) throw new Error(`${op}: tensors of different dtypes (${first.dtype} and ${t.dtype})`);
  }
  return first.backend;
}

export function requireFloat(op: string, t: Tensor): void {
  if (!isFloat(t.dtype)) throw new Error(`${op}: needs a float tensor, got ${t.dtype}`);
}
