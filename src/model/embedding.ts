import { check } from '../errors.js';
import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { paddedNormalTensor } from './init.js';
import { Module, type ParameterOptions } from './module.js';

export interface EmbeddingOptions extends ParameterOptions {
  rng?: Rng;
  /** Standard deviation of the normal init; dim^-1/2 by default (the decoder scales the lookup by sqrt(dim)). */
  std?: number;
  /**
   * Rows that hold real tokens (default: all `vocab`). The rest are padding of the table (a vocabulary
   * padded for aligned products with a tied head): they start at zero and draw nothing from `rng`.
   */
  realRows?: number;
}

/** A lookup table [vocab, dim] indexed by int32 token ids. */
export class Embedding extends Module {
  readonly weight: Tensor;
  /** Rows that token ids may pick: the rest are padding. */
  readonly realRows: number;

  constructor(readonly vocab: number, readonly dim: number, options: EmbeddingOptions = {}) {
    super();
    check(Number.isInteger(vocab) && vocab > 0, `Embedding: vocab = ${vocab} is not a positive integer`);
    check(Number.isInteger(dim) && dim > 0, `Embedding: dim = ${dim} is not a positive integer`);
    this.realRows = options.realRows ?? vocab;
    const weight = paddedNormalTensor(vocab, dim, this.realRows, options.std ?? dim ** -0.5, options.rng ?? new Rng(0), options);
    this.weight = this.addParameter('weight', weight);
  }

  /** int32 ids [...] to vectors [..., dim]; an id of a padding row is out of range. */
  forward(ids: Tensor): Tensor {
    check(ids.dtype === 'int32', `Embedding: token ids must be int32, got ${ids.dtype}`);
    return T.embedding(this.weight, ids, { validRows: this.realRows });
  }
}
