/**
 * AdamW (decoupled weight decay) over a model's named parameters, with the paper's defaults (its
 * Table 3): betas (0.9, 0.98), eps 1e-8, weight decay 0.01. The update itself is the
 * backend's fused in-place kernel, on every parameter at once where the backend has `adamwMulti` (one
 * launch a step on a GPU instead of one a parameter); this class owns the moment buffers and decides which
 * parameters decay.
 */
import type { AdamWTensors, Backend } from '../backend/backend.js';
import { check, InputError } from '../errors.js';
import { keep, Tensor, zeros } from '../tensor/index.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const PAPER_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 };

/**
 * Whether weight decay applies to a parameter. Biases and the gains/shifts of layer norms (every
 * parameter with fewer than two dimensions) are not decayed: shrinking them toward zero only fights
 * the normalization, the usual practice since BERT. Matrices (projections, embeddings) are.
 */
export function decays(_name: string, param: Tensor): boolean {
  return param.rank >= 2;
}

export function checkAdamW(o: AdamWOptions): void {
  check(Number.isFinite(o.beta1) && o.beta1 >= 0 && o.beta1 < 1, `beta1 must be in [0, 1), got ${o.beta1}`);
  check(Number.isFinite(o.beta2) && o.beta2 >= 0 && o.beta2 < 1, `beta2 must be in [0, 1), got ${o.beta2}`);
  check(Number.isFinite(o.eps) && o.eps > 0, `eps must be positive, got ${o.eps}`);
  check(Number.isFinite(o.weightDecay) && o.weightDecay >= 0, `weight decay must be non-negative, got ${o.weightDecay}`);
}

/** The moments of one parameter. */
export interface Moments {
  m: Tensor;
  v: Tensor;
}

export class AdamW {
  /** Number of updates applied so far (the bias correction of update t uses t). */
  step = 0;
  readonly moments = new Map<string, Moments>();

  constructor(
    readonly params: ReadonlyMap<string, Tensor>,
    readonly options: AdamWOptions = PAPER_ADAMW,
  ) {
    checkAdamW(options);
    for (const [name, p] of params) {
      const like = { dtype: p.dtype, device: p.device };
      // kept: the moments live as long as the optimizer, whatever scope builds it
      this.moments.set(name, { m: keep(zeros(p.shape, like)), v: keep(zeros(p.shape, like)) });
    }
  }

  /**
   * Whether `update` can take its clip from the device (every parameter's backend updates many tensors in
   * one call, which reads the sum of squares there): the host then need not wait for the norm first.
   */
  get clipsOnDevice(): boolean {
    return [...this.params.values()].every((p) => p.backend.adamwMulti !== undefined);
  }

  /**
   * Applies one update with learning rate `lr` from each parameter's `.grad` times `clip`: the clipping
   * factor, or (where clipsOnDevice) the gradients' sum of squares [1] on the device and the norm to clip
   * to, from which the update takes the factor and, where the norm is not finite, changes nothing (see
   * `refuseUpdate`). A parameter without a gradient, unused by the loss, is left alone but still counts the step.
   */
  update(lr: number, clip: number | { squares: Tensor; maxNorm: number } = 1): void {
    this.step++;
    const scaling = typeof clip === 'number' ? { gradScale: clip } : { clip: { squares: clip.squares.storage, maxNorm: clip.maxNorm } };
    const shared = { lr, beta1: this.options.beta1, beta2: this.options.beta2, eps: this.options.eps, step: this.step, ...scaling };
    // the parameters of each backend (one, for a model on one device), updated together where it can
    const byBackend = new Map<Backend, AdamWTensors[]>();
    for (const [name, p] of this.params) {
      const grad = p.grad;
      if (grad === null) continue;
      const { m, v } = this.moments.get(name)!;
      const weightDecay = decays(name, p) ? this.options.weightDecay : 0;
      const list = byBackend.get(p.backend) ?? [];
      // the low-precision copy the products read (Tensor.castCopy) is rewritten in the same pass
      list.push({ param: p.storage, grad: grad.storage, m: m.storage, v: v.storage, weightDecay, copy: p.keptCopy?.storage ?? null });
      byBackend.set(p.backend, list);
    }
    for (const [backend, tensors] of byBackend) {
      if (backend.adamwMulti) {
        backend.adamwMulti(tensors, shared);
        continue;
      }
      if (typeof clip !== 'number') throw new Error('internal: a clip on the device needs adamwMulti (AdamW.clipsOnDevice)');
      for (const t of tensors) backend.adamw(t.param, t.grad, t.m, t.v, { ...shared, weightDecay: t.weightDecay });
    }
    // without a multi-tensor update, copies are made again from the new values when next needed
    for (const p of this.params.values()) if (p.grad !== null && !p.backend.adamwMulti) p.dropCopy();
  }

  /** Takes back the count of the last update, which a non-finite norm on the device left undone (a refused step). */
  refuseUpdate(): void {
    this.step--;
  }

  /** Drops every parameter's gradient (before the next accumulation). */
  zeroGrad(): void {
    for (const p of this.params.values()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** The moment buffers as host arrays, named `NAME.m` / `NAME.v` (what a checkpoint stores). */
  stateArrays(): Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }> {
    const out = new Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }>();
    for (const [name, { m, v }] of this.moments) {
      out.set(`${name}.m`, { data: m.toArray() as Float32Array | Float64Array, shape: m.shape });
      out.set(`${name}.v`, { data: v.toArray() as Float32Array | Float64Array, shape: v.shape });
    }
    return out;
  }

  /**
   * Restores moments saved by `stateArrays` and the update count. Every parameter must have both
   * moments, of its shape; `source` names the file in errors.
   */
  loadState(arrays: ReadonlyMap<string, { data: ArrayLike<number>; shape: readonly number[] }>, step: number, source: string): void {
    check(Number.isInteger(step) && step >= 0, `${source}: bad optimizer step ${step}`);
    for (const [name, p] of this.params) {
      for (const which of ['m', 'v'] as const) {
        const key = `${name}.${which}`;
        const saved = arrays.get(key);
        if (saved === undefined) throw new InputError(`${source}: missing optimizer state "${key}"`);
        check(
          saved.shape.length === p.shape.length && saved.shape.every((d, i) => d === p.shape[i]),
          () => `${source}: optimizer state "${key}" has shape [${saved.shape.join(', ')}], the parameter [${p.shape.join(', ')}]`,
        );
      }
    }
    for (const key of arrays.keys()) {
      const base = key.replace(/\.[mv]$/, '');
      check(this.params.has(base), () => `${source}: optimizer state "${key}" belongs to no parameter of the model`);
    }
    for (const [name, p] of this.params) {
      const target = this.moments.get(name)!;
      for (const which of ['m', 'v'] as const) {
        const saved = arrays.get(`${name}.${which}`)!;
        const fresh = keep(Tensor.fromArray(
          p.dtype === 'float64' ? Float64Array.from(saved.data) : Float32Array.from(saved.data), p.shape, { device: p.device },
        ));
        target[which].dispose();
        target[which] = fresh;
      }
    }
    this.step = step;
  }

  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
  }
}
