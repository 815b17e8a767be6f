import type { Device } from '../../backend/backend.js';
import { defaultDevice, getBackend } from '../../backend/registry.js';
import { newTypedArray, type DType, type TypedArray } from '../dtype.js';
import { Rng } from '../random.js';
import { assertValidShape, sizeOf, type Shape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { wrap } from './util.js';

export interface CreateOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

function finish(t: Tensor, options: CreateOptions): Tensor {
  if (options.requiresGrad) t.requiresGrad = true;
  return t;
}

/** A tensor holding `data` (a typed array, or numbers stored as float32 unless `dtype` says otherwise). */
export function tensor(data: TypedArray | readonly number[], shape: Shape, options: CreateOptions = {}): Tensor {
  let array: TypedArray;
  if (ArrayBuffer.isView(data) && (!options.dtype || options.dtype === dtypeOf(data))) {
    array = data;
  } else {
    array = newTypedArray(options.dtype ?? 'float32', data.length);
    array.set(data as ArrayLike<number>);
  }
  return Tensor.fromArray(array, shape, options);
}

function dtypeOf(data: TypedArray): DType {
  return data instanceof Float64Array ? 'float64' : data instanceof Int32Array ? 'int32' : 'float32';
}

export function full(shape: Shape, value: number, options: CreateOptions = {}): Tensor {
  assertValidShape(shape, 'full');
  const backend = getBackend(options.device ?? defaultDevice());
  const storage = backend.alloc(options.dtype ?? 'float32', sizeOf(shape));
  if (value !== 0) backend.fill(storage, value);
  return finish(wrap(storage, shape, backend), options);
}

export const zeros = (shape: Shape, options: CreateOptions = {}): Tensor => full(shape, 0, options);
export const ones = (shape: Shape, options: CreateOptions = {}): Tensor => full(shape, 1, options);

export function scalar(value: number, options: CreateOptions = {}): Tensor {
  return full([], value, options);
}

export interface RandomOptions extends CreateOptions {
  rng?: Rng;
  seed?: number;
}

function randomTensor(shape: Shape, options: RandomOptions, draw: (rng: Rng) => number): Tensor {
  assertValidShape(shape, 'random');
  const rng = options.rng ?? new Rng(options.seed ?? 0);
  const data = newTypedArray(options.dtype ?? 'float32', sizeOf(shape));
  for (let i = 0; i < data.length; i++) data[i] = draw(rng);
  return Tensor.fromArray(data, shape, options);
}

/** Normal samples with mean 0 and standard deviation `std`. */
export function randn(shape: Shape, options: RandomOptions & { std?: number } = {}): Tensor {
  const std = options.std ?? 1;
  return randomTensor(shape, options, (rng) => rng.normal() * std);
}

/** Uniform samples in [low, high). */
export function uniform(shape: Shape, low: number, high: number, options: RandomOptions = {}): Tensor {
  return randomTensor(shape, options, (rng) => low + (high - low) * rng.next());
}

/** A copy of `t` on another device. */
export function toDevice(t: Tensor, device: Device): Tensor {
  if (t.device === device) return t;
  return Tensor.fromArray(t.toArray(), t.shape, { device, requiresGrad: t.requiresGrad });
}
