import { dilatedAttention, denseAttention } from '../attention/dilated.js';
import { sparseFixedAttention } from '../attention/sparse-fixed.js';
import { check } from '../errors.js';
import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { ModelAttention } from './config.js';
import { xavierStd } from './init.js';
import { LayerNorm } from './layer-norm.js';
import { Linear } from './linear.js';
import { Module, resolveParameterOptions, type ParameterOptions } from './module.js';
import { applyXPos, xposCenter, XPosTableCache, type XPosTables } from './xpos.js';

export interface MultiheadDilatedAttentionOptions extends ParameterOptions {
  /** Dilated with a schedule, sparse fixed (causal only), or dense (the default, vanilla attention). */
  attention?: ModelAttention;
  /** Default true (a decoder). */
  causal?: boolean;
  xposScaleBase?: number;
  layerNormEps?: number;
  /** MAGNETO's init scale applied to W_v and W_o (1 = plain Xavier). */
  gamma?: number;
  rng?: Rng;
}

/**
 * Multi-head attention for [B, N, dModel] with XPos positions and dilated (or dense) attention, with
 * MAGNETO's Sub-LN before the output projection: W_o LN_inner(Attn(q, k, v)). XPos rotates the full q
 * and k before any sparsification, so that every pattern sees true distances.
 */
export class MultiheadDilatedAttention extends Module {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly innerNorm: LayerNorm;
  readonly outProj: Linear;
  readonly headDim: number;
  readonly attention: ModelAttention;
  readonly causal: boolean;
  readonly xposScaleBase: number;
  private readonly placement: Required<ParameterOptions>;
  private readonly tables: XPosTableCache;

  constructor(readonly dModel: number, readonly heads: number, options: MultiheadDilatedAttentionOptions = {}) {
    super();
    check(Number.isInteger(heads) && heads > 0 && dModel % heads === 0, `attention: heads = ${heads} does not divide dModel = ${dModel}`);
    this.headDim = dModel / heads;
    check(this.headDim % 2 === 0, `attention: head dim ${this.headDim} must be even (XPos rotates pairs)`);
    this.attention = options.attention ?? { kind: 'dense' };
    this.causal = options.causal ?? true;
    this.xposScaleBase = options.xposScaleBase ?? 512;
    this.placement = resolveParameterOptions(options);
    this.tables = new XPosTableCache(this.headDim, this.xposScaleBase, this.placement);
    const rng = options.rng ?? new Rng(0);
    const gamma = options.gamma ?? 1;
    const p = this.placement;
    const std = xavierStd(dModel, dModel);
    this.qProj = this.addModule('qProj', new Linear(dModel, dModel, { ...p, rng, std }));
    this.kProj = this.addModule('kProj', new Linear(dModel, dModel, { ...p, rng, std }));
    this.vProj = this.addModule('vProj', new Linear(dModel, dModel, { ...p, rng, std: std * gamma }));
    this.innerNorm = this.addModule('innerNorm', new LayerNorm(dModel, { ...p, eps: options.layerNormEps }));
    this.outProj = this.addModule('outProj', new Linear(dModel, dModel, { ...p, rng, std: std * gamma }));
  }

  /** XPos factors for positions [start, start + length) around `center`, in this module's dtype and device. */
  positions(start: number, length: number, center: number): XPosTables {
    return this.tables.get(start, length, center);
  }

  protected override releaseKept(): void {
    this.tables.dispose();
  }

  /**
   * x [B, N, dModel] -> [B, N, dModel]. `tables` (positions 0..N-1) may be shared by the layers of a model.
   * With `residual` ([B, N, dModel]), residual + the output, summed by the output projection.
   */
  forward(x: Tensor, tables?: XPosTables, residual?: Tensor): Tensor {
    check(x.rank === 3 && x.shape[2] === this.dModel, () => `attention: input [${x.shape.join(', ')}] is not [batch, seqLen, ${this.dModel}]`);
    const n = x.shape[1]!;
    const { q, k, v } = this.project(x);
    return this.output(this.attend(q, k, v, tables ?? this.positions(0, n, xposCenter(n))), residual);
  }

  /** q, k, v [B, N, H, D], before XPos. */
  project(x: Tensor): { q: Tensor; k: Tensor; v: Tensor } {
    const [b, n] = x.shape as [number, number];
    const split = (t: Tensor): Tensor => T.reshape(t, [b, n, this.heads, this.headDim]);
    return { q: split(this.qProj.forward(x)), k: split(this.kProj.forward(x)), v: split(this.vProj.forward(x)) };
  }

  /**
   * The attention core: [B, N, H, D]. q and k are rotated already, or are rotated here by `xpos` (inside the
   * attention op where it can, so that its backward rotates the gradients back as it writes them).
   */
  attend(q: Tensor, k: Tensor, v: Tensor, xpos?: XPosTables): Tensor {
    const a = this.attention;
    if (a.kind === 'sparse-fixed') {
      check(this.causal, 'attention: the sparse fixed pattern is causal only');
      const r = xpos ? applyXPos(q, k, xpos) : { q, k };
      return sparseFixedAttention(r.q, r.k, v, { stride: a.stride, summary: a.summary }).output;
    }
    const options = { causal: this.causal, ...(xpos ? { rotation: xpos } : {}) };
    const result = a.kind === 'dense'
      ? denseAttention(q, k, v, options)
      : dilatedAttention(q, k, v, { segmentLengths: a.segmentLengths, dilationRates: a.dilationRates, ...options });
    // lse stays alive: the backward pass reads it (a tidy scope frees it)
    return result.output;
  }

  /** W_o LN_inner(o) for o [B, N, H, D]: [B, N, dModel]; with `residual`, residual + that, summed by the product. */
  output(o: Tensor, residual?: Tensor): Tensor {
    const [b, n] = o.shape as [number, number];
    return this.outProj.forward(this.innerNorm.forward(T.reshape(o, [b, n, this.dModel])), { residual });
  }
}
