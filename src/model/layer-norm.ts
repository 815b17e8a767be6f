import { check } from '../errors.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { constantTensor } from './init.js';
import { Module, type ParameterOptions } from './module.js';

export interface LayerNormOptions extends ParameterOptions {
  eps?: number;
  /** Learned scale (`weight`, ones) and shift (`bias`, zeros). Default true. */
  affine?: boolean;
}

/** Layer normalization over the last axis. */
export class LayerNorm extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly eps: number;

  constructor(readonly dim: number, options: LayerNormOptions = {}) {
    super();
    check(Number.isInteger(dim) && dim > 0, `LayerNorm: dim = ${dim} is not a positive integer`);
    this.eps = options.eps ?? 1e-5;
    check(Number.isFinite(this.eps) && this.eps > 0, `LayerNorm: eps = ${this.eps} is not a positive number`);
    const affine = options.affine ?? true;
    this.weight = affine ? this.addParameter('weight', constantTensor([dim], 1, options)) : null;
    this.bias = affine ? this.addParameter('bias', constantTensor([dim], 0, options)) : null;
  }

  forward(x: Tensor): Tensor {
    // bfloat16 activations take the float32 scale and shift as they are
    return T.layerNorm(x, this.weight, this.bias, this.eps);
  }

  /** forward(gelu(x)), the GELU computed inside the normalization (T.geluLayerNorm). */
  forwardGelu(x: Tensor): Tensor {
    return T.geluLayerNorm(x, this.weight, this.bias, this.eps);
  }
}
