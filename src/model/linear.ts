import { check } from '../errors.js';
import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { constantTensor, paddedNormalTensor, xavierStd } from './init.js';
import { Module, type ParameterOptions } from './module.js';

export interface LinearOptions extends ParameterOptions {
  /** Whether to add a learned bias (zero-initialized). Default true. */
  bias?: boolean;
  rng?: Rng;
  /** Standard deviation of the normal weight init; Xavier normal, sqrt(2 / (in + out)), by default. */
  std?: number;
  /**
   * Output features in use (default: all). The weight rows past them are padding (an output head over a
   * padded vocabulary): they start at zero and draw nothing from `rng`.
   */
  realOutputs?: number;
}

/**
 * y = x W^T + b over the last axis. The weight is [outFeatures, inFeatures], PyTorch's layout, so that
 * checkpoints map one to one.
 */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, options: LinearOptions = {}) {
    super();
    check(Number.isInteger(inFeatures) && inFeatures > 0, `Linear: inFeatures = ${inFeatures} is not a positive integer`);
    check(Number.isInteger(outFeatures) && outFeatures > 0, `Linear: outFeatures = ${outFeatures} is not a positive integer`);
    const rng = options.rng ?? new Rng(0);
    const std = options.std ?? xavierStd(inFeatures, outFeatures);
    this.weight = this.addParameter('weight', paddedNormalTensor(outFeatures, inFeatures, options.realOutputs ?? outFeatures, std, rng, options));
    this.bias = options.bias === false ? null : this.addParameter('bias', constantTensor([outFeatures], 0, options));
  }

  /**
   * With `activation`, that activation of the output; with `residual` (of the output's shape), residual +
   * the output: each computed in the same call (on a GPU, in the product).
   */
  forward(x: Tensor, options: T.LinearOpOptions = {}): Tensor {
    check(x.shape[x.rank - 1] === this.inFeatures, () => `Linear: input of shape [${x.shape.join(', ')}] does not end in ${this.inFeatures}`);
    // one product over all of x's rows (a 1-D x is one row): bfloat16 activations meet bfloat16 copies of
    // the float32 weights, whose gradients come back in float32
    if (x.rank === 1) {
      const residual = options.residual && T.reshape(options.residual, [1, this.outFeatures]);
      return T.reshape(T.linear(T.reshape(x, [1, this.inFeatures]), this.weight, this.bias, { ...options, residual }), [this.outFeatures]);
    }
    return T.linear(x, this.weight, this.bias, options);
  }
}
