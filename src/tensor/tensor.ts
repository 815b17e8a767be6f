import type { Backend, Device, Storage } from '../backend/backend.js';
import { defaultDevice, getBackend } from '../backend/registry.js';
import type { DType, TypedArray } from './dtype.js';
import { assertValidShape, formatShape, sizeOf, type Shape } from './shape.js';
import { keep, setTensorCheck, trackTensor } from './scope.js';
import { runBackward, type GradNode } from './autograd.js';

/**
 * What a kernel made from a tensor's values as it wrote them, for a gradient formula that would otherwise
 * read the tensor again to make it (float32, width n):
 * - 'columnSums': [n], the sums over the rows of the values viewed as [size / n, n] (a bias gradient);
 * - 'outputDots': [size / n], for a gradient, its dot product with the output it is the gradient of, per
 *   run of n values (the attention backward's rowsum(dO * O)).
 */
export type Derived = 'columnSums' | 'outputDots';

/** Storage shared by a tensor and its reshaped views; freed when the last of them is disposed. */
class StorageRef {
  refs = 1;
  /** Values derived from the storage's (Tensor.attachDerived), freed with it unless taken. */
  readonly derived = new Map<Derived, { storage: Storage; width: number }>();
  constructor(readonly storage: Storage, readonly backend: Backend) {}
  release(): void {
    if (--this.refs > 0) return;
    this.backend.free(this.storage);
    for (const d of this.derived.values()) this.backend.free(d.storage);
    this.derived.clear();
  }
}

let nextId = 0;

export interface TensorOptions {
  device?: Device;
  requiresGrad?: boolean;
}

/** An n-dimensional array on a device, with an optional place in the autograd graph. */
export class Tensor {
  readonly id = nextId++;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly backend: Backend;
  /** Whether gradients flow to this tensor; set on leaves by the user, on results by the ops. */
  requiresGrad = false;
  /** The accumulated gradient of a leaf after `backward()`. */
  grad: Tensor | null = null;
  /** How this tensor was computed, for backward; null on leaves. */
  gradNode: GradNode | null = null;
  private ref: StorageRef | null;
  /** This tensor's values in another dtype, kept with it (castCopy). */
  private copy: Tensor | null = null;

  private constructor(ref: StorageRef, shape: Shape, dtype: DType) {
    this.ref = ref;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.backend = ref.backend;
    trackTensor(this);
  }

  /** Wraps a storage a backend just produced. */
  static fromStorage(storage: Storage, shape: Shape, backend: Backend): Tensor {
    if (storage.size !== sizeOf(shape)) {
      throw new Error(`internal: storage of ${storage.size} elements for shape ${formatShape(shape)}`);
    }
    return new Tensor(new StorageRef(storage, backend), shape, storage.dtype);
  }

  /** Copies host data into a new tensor. */
  static fromArray(data: TypedArray, shape: Shape, options: TensorOptions = {}): Tensor {
    assertValidShape(shape, 'Tensor.fromArray');
    if (sizeOf(shape) !== data.length) {
      throw new RangeError(`Tensor.fromArray: ${data.length} values do not fill shape ${formatShape(shape)}`);
    }
    const backend = getBackend(options.device ?? defaultDevice());
    const t = Tensor.fromStorage(backend.fromArray(data), shape, backend);
    if (options.requiresGrad) t.requiresGrad = true;
    return t;
  }

  get device(): Device { return this.backend.device; }
  get size(): number { return sizeOf(this.shape); }
  get rank(): number { return this.shape.length; }
  get isDisposed(): boolean { return this.ref === null; }

  get storage(): Storage {
    if (!this.ref) throw new Error(`tensor #${this.id} ${formatShape(this.shape)} was already disposed`);
    return this.ref.storage;
  }

  /** A tensor of another shape over the same storage (no copy). */
  shareStorage(shape: Shape): Tensor {
    const ref = this.ref;
    if (!ref) throw new Error(`tensor #${this.id} ${formatShape(this.shape)} was already disposed`);
    ref.refs++;
    return new Tensor(ref, shape, this.dtype);
  }

  /** Frees the storage (once no view shares it). Safe to call twice. */
  dispose(): void {
    if (!this.ref) return;
    this.dropCopy();
    this.ref.release();
    this.ref = null;
    this.gradNode = null;
  }

  /**
   * This tensor's values in `dtype`, made once and kept with it until `dropCopy` or its disposal (no
   * scope frees it): the bfloat16 copy of a float32 parameter that every product of a step reads. Whoever
   * changes the values in place keeps the copy current (AdamW rewrites it in the same pass) or drops it.
   */
  castCopy(dtype: DType): Tensor {
    if (this.copy?.dtype !== dtype) {
      this.dropCopy();
      this.copy = keep(Tensor.fromStorage(this.backend.cast(this.storage, dtype), this.shape, this.backend));
    }
    return this.copy;
  }

  /** The copy `castCopy` keeps, or null. */
  get keptCopy(): Tensor | null { return this.copy; }

  /** Frees the copy `castCopy` keeps (after a change of the values it does not follow). */
  dropCopy(): void {
    this.copy?.dispose();
    this.copy = null;
  }

  /**
   * Attaches values derived from this tensor's (`Derived`, of width n), made by the kernel that wrote
   * them. They go with the storage, to every view of it, and are freed with it. Only for values never
   * changed in place.
   */
  attachDerived(kind: Derived, values: Storage, n: number): void {
    const ref = this.ref;
    if (!ref) throw new Error(`tensor #${this.id} ${formatShape(this.shape)} was already disposed`);
    const size = kind === 'columnSums' ? n : this.size / n;
    if (values.dtype !== 'float32' || !(n > 0) || this.size % n !== 0 || values.size !== size) {
      throw new Error(`internal: ${kind} of width ${n} (${values.size} ${values.dtype} values) for a tensor of shape ${formatShape(this.shape)}`);
    }
    const old = ref.derived.get(kind);
    if (old) this.backend.free(old.storage);
    ref.derived.set(kind, { storage: values, width: n });
  }

  /** The attached `kind` if it is of width n, as a float32 tensor the caller owns from then on; else null. */
  takeDerived(kind: Derived, n: number): Tensor | null {
    const d = this.ref?.derived.get(kind);
    if (!d || d.width !== n) return null;
    this.ref!.derived.delete(kind);
    return Tensor.fromStorage(d.storage, [d.storage.size], this.backend);
  }

  /** A host copy of the elements, row-major. */
  toArray(): TypedArray { return this.backend.read(this.storage); }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item: tensor has shape ${formatShape(this.shape)}, not one element`);
    return this.toArray()[0]!;
  }

  /** Reverse-mode differentiation from this tensor; `grad` defaults to 1 for a one-element tensor. */
  backward(grad?: Tensor, options: { retainGraph?: boolean } = {}): void {
    runBackward(this, grad, options.retainGraph ?? false);
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape)}, ${this.dtype}, ${this.device})`;
  }
}

setTensorCheck((v): v is Tensor => v instanceof Tensor);

