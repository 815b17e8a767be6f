import { Rng } from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import { MultiheadDilatedAttention } from './attention.js';
import type { AnyModelConfig } from './config.js';
import { FeedForward } from './feed-forward.js';
import { LayerNorm } from './layer-norm.js';
import { Module, type ParameterOptions } from './module.js';
import type { XPosTables } from './xpos.js';

export interface DecoderBlockOptions extends ParameterOptions {
  rng?: Rng;
  /** MAGNETO's init scale for W_v, W_o, W_1, W_2. */
  gamma?: number;
}

/**
 * One MAGNETO (Sub-LN) decoder layer:
 *   x += W_o LN_inner(Attn(LN(x)))
 *   x += W_2 LN_ffn(act(W_1 LN(x)))
 */
export class DecoderBlock extends Module {
  readonly attentionNorm: LayerNorm;
  readonly attention: MultiheadDilatedAttention;
  readonly ffnNorm: LayerNorm;
  readonly ffn: FeedForward;

  constructor(config: AnyModelConfig, options: DecoderBlockOptions = {}) {
    super();
    const rng = options.rng ?? new Rng(0);
    const p = { device: options.device, dtype: options.dtype };
    const eps = config.layerNormEps;
    this.attentionNorm = this.addModule('attentionNorm', new LayerNorm(config.dModel, { ...p, eps }));
    this.attention = this.addModule('attention', new MultiheadDilatedAttention(config.dModel, config.heads, {
      ...p, rng, gamma: options.gamma, attention: config.attention, causal: true,
      xposScaleBase: config.xposScaleBase, layerNormEps: eps,
    }));
    this.ffnNorm = this.addModule('ffnNorm', new LayerNorm(config.dModel, { ...p, eps }));
    this.ffn = this.addModule('ffn', new FeedForward(config.dModel, config.ffnDim, { ...p, rng, gamma: options.gamma, layerNormEps: eps }));
  }

  // each residual sum is made by the branch's last product (one pass over the activations fewer)
  forward(x: Tensor, tables?: XPosTables): Tensor {
    const h = this.attention.forward(this.attentionNorm.forward(x), tables, x);
    return this.feedForward(h);
  }

  /** The second half of the block: h + W_2 LN_ffn(act(W_1 LN(h))). */
  feedForward(h: Tensor): Tensor {
    return this.ffn.forward(this.ffnNorm.forward(h), h);
  }
}
