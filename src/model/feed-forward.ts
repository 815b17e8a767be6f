import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { xavierStd } from './init.js';
import { LayerNorm } from './layer-norm.js';
import { Linear } from './linear.js';
import { Module, type ParameterOptions } from './module.js';

export interface FeedForwardOptions extends ParameterOptions {
  rng?: Rng;
  layerNormEps?: number;
  /** MAGNETO's init scale applied to W_1 and W_2 (1 = plain Xavier). */
  gamma?: number;
}

/** MAGNETO's feed-forward: W_2 LN_ffn(GELU(W_1 x)), the Sub-LN inside before the down projection. */
export class FeedForward extends Module {
  readonly fc1: Linear;
  readonly norm: LayerNorm;
  readonly fc2: Linear;

  constructor(readonly dModel: number, readonly ffnDim: number, options: FeedForwardOptions = {}) {
    super();
    const rng = options.rng ?? new Rng(0);
    const gamma = options.gamma ?? 1;
    const p = { device: options.device, dtype: options.dtype };
    this.fc1 = this.addModule('fc1', new Linear(dModel, ffnDim, { ...p, rng, std: xavierStd(dModel, ffnDim) * gamma }));
    this.norm = this.addModule('norm', new LayerNorm(ffnDim, { ...p, eps: options.layerNormEps }));
    this.fc2 = this.addModule('fc2', new Linear(ffnDim, dModel, { ...p, rng, std: xavierStd(ffnDim, dModel) * gamma }));
  }

  /**
   * With `residual` (x's shape), residual + the output, the sum made by the last product. The GELU runs
   * inside LN_ffn's passes, so W_1 x is the only activation of ffnDim columns kept for the backward.
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return this.fc2.forward(this.norm.forwardGelu(this.fc1.forward(x)), { residual });
  }
}
