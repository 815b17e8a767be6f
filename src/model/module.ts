import type { Device } from '../backend/backend.js';
import { defaultDevice } from '../backend/registry.js';
import { check, InputError } from '../errors.js';
import * as T from '../tensor/index.js';
import type { FloatArray, FloatDType, Tensor } from '../tensor/index.js';

/** Where and in what precision a module creates its parameters. */
export interface ParameterOptions {
  device?: Device;
  /** float32 by default; float64 for exactness tests on the CPU. */
  dtype?: FloatDType;
}

/** A parameter's values as loaded from a checkpoint: a flat array, or one with its shape (safetensors). */
export type StateValue = FloatArray | { data: FloatArray; shape: readonly number[] };

export function resolveParameterOptions(options: ParameterOptions = {}): Required<ParameterOptions> {
  const dtype = options.dtype ?? 'float32';
  check(dtype === 'float32' || dtype === 'float64', `dtype = ${String(dtype)} is not 'float32' or 'float64'`);
  return { device: options.device ?? defaultDevice(), dtype };
}

const formatShape = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/**
 * A layer or a model: named parameters plus named child modules, so that every parameter has a dotted
 * name (`blocks.3.attention.qProj.weight`) for checkpoints and optimizers. Parameters live outside any
 * `tidy` scope until `dispose()`.
 */
export abstract class Module {
  private readonly ownParameters = new Map<string, Tensor>();
  private readonly childModules = new Map<string, Module>();

  /** Registers a trainable tensor under `name` (no dots) and returns it. */
  protected addParameter(name: string, t: Tensor): Tensor {
    this.checkName(name);
    T.keep(t);
    t.requiresGrad = true;
    this.ownParameters.set(name, t);
    return t;
  }

  /** Registers a child module under `name`; its parameters appear as `name.<their names>`. */
  protected addModule<M extends Module>(name: string, m: M): M {
    this.checkName(name);
    this.childModules.set(name, m);
    return m;
  }

  private checkName(name: string): void {
    if (name.length === 0 || name.includes('.')) throw new Error(`internal: invalid parameter or module name '${name}'`);
    if (this.ownParameters.has(name) || this.childModules.has(name)) throw new Error(`internal: '${name}' is registered twice`);
  }

  /** Child modules in registration order. */
  children(): Map<string, Module> {
    return new Map(this.childModules);
  }

  /** Every parameter, depth-first in registration order, by dotted name. A shared tensor appears once. */
  namedParameters(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    const seen = new Set<Tensor>();
    const walk = (m: Module, prefix: string): void => {
      for (const [name, t] of m.ownParameters) {
        if (seen.has(t)) continue;
        seen.add(t);
        out.set(prefix + name, t);
      }
      for (const [name, child] of m.childModules) walk(child, `${prefix}${name}.`);
    };
    walk(this, '');
    return out;
  }

  parameters(): Tensor[] {
    return [...this.namedParameters().values()];
  }

  /** The number of trainable scalars. */
  parameterCount(): number {
    let n = 0;
    for (const t of this.namedParameters().values()) n += t.size;
    return n;
  }

  /** Host copies of every parameter, by dotted name. */
  stateDict(): Map<string, FloatArray> {
    const out = new Map<string, FloatArray>();
    for (const [name, t] of this.namedParameters()) out.set(name, t.toArray() as FloatArray);
    return out;
  }

  /**
   * Overwrites every parameter from `state` (converted to the parameter's dtype). Checks everything
   * before writing anything: a missing, unexpected or mis-shaped entry is an InputError naming it.
   */
  loadState(state: ReadonlyMap<string, StateValue>): void {
    const params = this.namedParameters();
    const missing = [...params.keys()].filter((name) => !state.has(name));
    if (missing.length > 0) {
      const first = params.get(missing[0]!)!;
      throw new InputError(
        `loadState: missing parameter '${missing[0]}' (shape ${formatShape(first.shape)})` +
          (missing.length > 1 ? ` and ${missing.length - 1} more` : ''),
      );
    }
    const unexpected = [...state.keys()].filter((name) => !params.has(name));
    if (unexpected.length > 0) {
      throw new InputError(
        `loadState: unexpected parameter '${unexpected[0]}' (not in the model)` +
          (unexpected.length > 1 ? ` and ${unexpected.length - 1} more` : ''),
      );
    }
    const plan: [Tensor, FloatArray][] = [];
    for (const [name, t] of params) {
      const value = state.get(name)!;
      const data = value instanceof Float32Array || value instanceof Float64Array ? value : value?.data;
      check(
        data instanceof Float32Array || data instanceof Float64Array,
        `loadState: parameter '${name}' is not a Float32Array or Float64Array`,
      );
      if (!(value instanceof Float32Array || value instanceof Float64Array)) {
        check(
          value.shape.length === t.shape.length && value.shape.every((d, i) => d === t.shape[i]),
          `loadState: parameter '${name}' has shape ${formatShape(value.shape)} but the model's is ${formatShape(t.shape)}`,
        );
      }
      check(
        data.length === t.size,
        `loadState: parameter '${name}' has ${data.length} values but the model's shape ${formatShape(t.shape)} holds ${t.size}`,
      );
      plan.push([t, data]);
    }
    for (const [t, data] of plan) {
      const converted = t.dtype === 'float64' ? Float64Array.from(data) : Float32Array.from(data);
      const src = t.backend.fromArray(converted);
      t.backend.assign(t.storage, src);
      t.backend.free(src);
      t.dropCopy();
    }
  }

  /** Drops accumulated gradients. */
  zeroGrad(): void {
    for (const t of this.namedParameters().values()) {
      t.grad?.dispose();
      t.grad = null;
    }
  }

  /** Frees every parameter and gradient, and what any module of the tree keeps besides; the module is unusable afterwards. */
  dispose(): void {
    for (const t of this.namedParameters().values()) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
    const walk = (m: Module): void => {
      m.releaseKept();
      for (const child of m.childModules.values()) walk(child);
    };
    walk(this);
  }

  /** Frees the tensors a module keeps besides its parameters (cached constants); none by default. */
  protected releaseKept(): void {}
}

/** An indexed list of modules: children named `0`, `1`, ... */
export class ModuleList<M extends Module> extends Module {
  private readonly items: M[] = [];

  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }

  push(m: M): void {
    this.addModule(String(this.items.length), m);
    this.items.push(m);
  }

  get length(): number {
    return this.items.length;
  }

  at(i: number): M {
    const m = this.items[i];
    if (!m) throw new RangeError(`ModuleList: index ${i} is outside [0, ${this.items.length})`);
    return m;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}
