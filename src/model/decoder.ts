import type { Device } from '../backend/backend.js';
import { check } from '../errors.js';
import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { FloatDType, Tensor } from '../tensor/index.js';
import { DecoderBlock } from './block.js';
import { cachedAttention, cachePatterns, decodeMask, DecoderCache, firstReachable } from './cache.js';
import { paddedVocabSize, validateConfig, type AnyModelConfig } from './config.js';
import { Embedding } from './embedding.js';
import { magnetoGamma } from './init.js';
import { LayerNorm } from './layer-norm.js';
import { Linear } from './linear.js';
import { Module, ModuleList, resolveParameterOptions } from './module.js';
import { applyXPos, xposCenter, xposMaxOffset } from './xpos.js';

export {
  PRESETS, presetConfig, validateConfig, scheduleNotes, parameterCountOf, paddedVocabSize, attentionPatterns,
  type ModelConfig, type AnyModelConfig, type AttentionSpec, type ModelAttention, type SparseFixedSpec,
} from './config.js';
export { attentionFlops, modelFlopsPerToken, dilatedAttentionFlops, matmulParameterCount } from './flops.js';
export { DecoderCache } from './cache.js';

/** The most new tokens one cached attention pass takes (its scores are [B, H, T, held keys]). */
const DECODE_CHUNK = 256;

/** How `loss` and `headLoss` compute. */
export interface LossOptions {
  /**
   * The caller will call backward() on this loss as it is: the loss kernel writes the logits' gradient in
   * the forward pass (see crossEntropy's gradientInForward).
   */
  gradientInForward?: boolean;
}

export interface DecoderOptions {
  /** Seeds the parameter init (default 0): the same seed gives the same model on every machine. */
  seed?: number;
  device?: Device;
  dtype?: FloatDType;
  /** The type of the activations of `forward` and `loss`: the parameters' dtype (default) or, on cuda, 'bfloat16'. */
  activations?: FloatDType;
}

/**
 * LongNet's decoder-only language model (the paper's section 2 and Table 4): token embedding scaled by sqrt(dModel),
 * `layers` MAGNETO blocks with XPos and dilated attention, a final LayerNorm, and an output head
 * (its own [vocab, dModel] weight, or the embedding table when `tieEmbeddings`).
 *
 * With `vocabPadMultiple`, the embedding table and the head have `paddedVocab` rows, the rows past
 * vocabSize zero: the head's products then run on aligned operands. The padding is never a class: the
 * loss leaves it out of the softmax (so it gets no gradient and stays zero), and the logits this class
 * returns are [.., vocabSize].
 *
 * Init: every projection is Xavier normal, std sqrt(2 / (fanIn + fanOut)); W_v, W_o, W_1, W_2 are
 * then multiplied by MAGNETO's gamma = sqrt(log(2L)). Biases are zero, norms are (1, 0). The embedding
 * and the untied head are normal with std dModel^-1/2 (so embedding * sqrt(dModel) has unit scale).
 */
export class LongNetDecoder extends Module {
  readonly config: AnyModelConfig;
  readonly embedding: Embedding;
  readonly blocks: ModuleList<DecoderBlock>;
  readonly finalNorm: LayerNorm;
  readonly head: Linear | null;
  readonly headDim: number;
  /** Rows of the embedding table and of the head: vocabSize padded to a multiple of vocabPadMultiple. */
  readonly paddedVocab: number;
  private readonly placement: { device: Device; dtype: FloatDType };
  private activationType: FloatDType;

  constructor(config: AnyModelConfig, options: DecoderOptions = {}) {
    super();
    validateConfig(config);
    this.config = structuredClone(config);
    this.headDim = config.dModel / config.heads;
    this.placement = resolveParameterOptions(options);
    this.activationType = this.placement.dtype;
    if (options.activations !== undefined) this.setActivations(options.activations);
    const rng = new Rng(options.seed ?? 0);
    const p = this.placement;
    const gamma = magnetoGamma(config.layers);
    this.paddedVocab = paddedVocabSize(config);
    const realRows = config.vocabSize;
    this.embedding = this.addModule('embedding', new Embedding(this.paddedVocab, config.dModel, { ...p, rng, realRows }));
    this.blocks = this.addModule('blocks', new ModuleList<DecoderBlock>());
    for (let i = 0; i < config.layers; i++) this.blocks.push(new DecoderBlock(this.config, { ...p, rng, gamma }));
    this.finalNorm = this.addModule('finalNorm', new LayerNorm(config.dModel, { ...p, eps: config.layerNormEps }));
    this.head = config.tieEmbeddings
      ? null
      : this.addModule('head', new Linear(config.dModel, this.paddedVocab, {
        ...p, rng, bias: false, std: config.dModel ** -0.5, realOutputs: realRows,
      }));
  }

  get device(): Device {
    return this.placement.device;
  }

  get dtype(): FloatDType {
    return this.placement.dtype;
  }

  /**
   * The type of the activations of `forward`, `loss` and `headLoss`: the parameters' dtype, or 'bfloat16'
   * on cuda (mixed precision: bf16 activations, products with fp32 accumulation, float32 parameters,
   * gradients and optimizer state; the loss and the logits `forward` returns are float32). Generation
   * (`step`) computes in the parameters' dtype.
   */
  get activations(): FloatDType {
    return this.activationType;
  }

  setActivations(dtype: FloatDType): void {
    check(dtype === this.dtype || (dtype === 'bfloat16' && this.device === 'cuda' && this.dtype === 'float32'),
      `activations: ${String(dtype)} is not ${this.dtype} (the parameters' dtype) or, for float32 parameters on cuda, bfloat16`);
    check(dtype !== 'bfloat16' || this.config.attention.kind !== 'sparse-fixed',
      'activations: bfloat16 is not available with the sparse fixed attention (its kernels are float32)');
    this.activationType = dtype;
  }

  private checkTokens(tokens: Tensor, what: string): [number, number] {
    check(tokens.dtype === 'int32', `${what}: tokens must be int32, got ${tokens.dtype}`);
    check(tokens.rank === 2, `${what}: tokens must be [batch, seqLen], got [${tokens.shape.join(', ')}]`);
    check(tokens.device === this.device, `${what}: tokens are on ${tokens.device} but the model is on ${this.device}`);
    const [b, n] = tokens.shape as [number, number];
    check(b > 0 && n > 0, `${what}: tokens [${b}, ${n}] are empty`);
    return [b, n];
  }

  /** Token embeddings scaled by sqrt(dModel): the input of the first block (sequence-parallel training runs the blocks itself). */
  embed(tokens: Tensor): Tensor {
    return T.mulScalar(this.embedding.forward(tokens), Math.sqrt(this.config.dModel));
  }

  /**
   * The final LayerNorm and the output head over the padded vocabulary: [B, N, paddedVocab] of the last
   * block's output. Columns from vocabSize on are padding, not classes: see `logits` and `headLoss`.
   */
  paddedLogits(x: Tensor): Tensor {
    const h = this.finalNorm.forward(x);
    if (this.head) return this.head.forward(h);
    const [b, n] = h.shape as [number, number];
    const rows = T.reshape(h, [b * n, this.config.dModel]);
    return T.reshape(T.matmul(rows, T.cast(this.embedding.weight, rows.dtype), { transB: true }), [b, n, this.paddedVocab]);
  }

  /** Logits [B, N, vocab] of the last block's output: the padding columns sliced off. */
  logits(x: Tensor): Tensor {
    const padded = this.paddedLogits(x);
    if (this.paddedVocab === this.config.vocabSize) return padded;
    const [b, n] = padded.shape as [number, number];
    return T.slice(padded, [0, 0, 0], [b, n, this.config.vocabSize]);
  }

  /**
   * Mean next-token cross-entropy of the last block's output x [B, N, dModel] against int32 targets
   * [B, N]. The padded logits go in whole (no copy), the softmax told that only the first vocabSize
   * columns are classes.
   */
  headLoss(x: Tensor, targets: Tensor, options: LossOptions = {}): Tensor {
    return T.crossEntropy(this.paddedLogits(x), targets, { classes: this.config.vocabSize, gradientInForward: options.gradientInForward });
  }

  /** int32 tokens [B, N] -> logits [B, N, vocab]. Causal: position p sees tokens 0..p. */
  forward(tokens: Tensor): Tensor {
    const [, n] = this.checkTokens(tokens, 'forward');
    validateConfig(this.config, n);
    return T.cast(this.logits(this.hidden(tokens)), this.dtype);
  }

  /** The last block's output [B, N, dModel] for checked tokens [B, N]. */
  private hidden(tokens: Tensor): Tensor {
    const n = tokens.shape[1]!;
    // one set of XPos factors for every layer
    const tables = this.blocks.at(0).attention.positions(0, n, xposCenter(n));
    let x = T.cast(this.embed(tokens), this.activationType);
    for (const block of this.blocks) x = block.forward(x, tables);
    return x;
  }

  /** Mean next-token cross-entropy of forward(inputs) against int32 targets [B, N]: a scalar. */
  loss(inputs: Tensor, targets: Tensor, options: LossOptions = {}): Tensor {
    const [b, n] = this.checkTokens(inputs, 'loss');
    check(targets.dtype === 'int32', `loss: targets must be int32, got ${targets.dtype}`);
    check(targets.rank === 2 && targets.shape[0] === b && targets.shape[1] === n,
      `loss: targets [${targets.shape.join(', ')}] do not match inputs [${b}, ${n}]`);
    validateConfig(this.config, n);
    return this.headLoss(this.hidden(inputs), targets, options);
  }

  /**
   * An empty decode cache for `batch` sequences. XPos factors are centered at floor(maxLength/2) when
   * the final length is known (sequences up to about 2 * 28K tokens at scaleBase 512), else at 0
   * (about 28K tokens); see xpos.ts.
   */
  createCache(batch = 1, maxLength?: number): DecoderCache {
    cachePatterns(this.config); // an attention that has no cached decoding (sparse-fixed) is refused here
    if (maxLength !== undefined) {
      check(Number.isInteger(maxLength) && maxLength > 0, `createCache: maxLength = ${maxLength} is not a positive integer`);
      validateConfig(this.config, maxLength);
    }
    return new DecoderCache(batch, this.config.layers, maxLength === undefined ? 0 : xposCenter(maxLength), maxLength ?? null);
  }

  /**
   * Feeds new tokens [B, T] (positions cache.position ..) and returns their logits [B, T, vocab], equal
   * to a full forward's at those positions. The first call runs the prompt through the attention kernel;
   * later calls attend to the cache. No gradients are recorded.
   */
  step(tokens: Tensor, cache: DecoderCache): Tensor {
    const [b, count] = this.checkTokens(tokens, 'step');
    check(b === cache.batch, `step: tokens have batch ${b} but the cache was made for ${cache.batch}`);
    check(cache.layers === this.config.layers, `step: the cache has ${cache.layers} layers, the model ${this.config.layers}`);
    const start = cache.position;
    const end = start + count;
    check(cache.maxLength === null || end <= cache.maxLength,
      () => `step: ${end} tokens exceed the cache's maxLength ${cache.maxLength}`);
    const maxOffset = xposMaxOffset(this.config.xposScaleBase);
    check(end - 1 - cache.center <= maxOffset,
      () => `step: position ${end - 1} is past XPos's float32 range for this cache (create it with maxLength, or raise xposScaleBase)`);
    if (start > 0 && count > DECODE_CHUNK) {
      // the cached path scores every (query, held key) pair: bound that by feeding long inputs in pieces
      return T.tidy(() => {
        const pieces: Tensor[] = [];
        for (let at = 0; at < count; at += DECODE_CHUNK) {
          pieces.push(this.step(T.slice(tokens, [0, at], [b, Math.min(DECODE_CHUNK, count - at)]), cache));
        }
        return T.concat(pieces, 1);
      });
    }
    const patterns = cachePatterns(this.config);
    const heads = this.config.heads;
    return T.noGrad(() => T.tidy(() => {
      const attention0 = this.blocks.at(0).attention;
      const tables = attention0.positions(start, count, cache.center);
      let mask: { logCount: Tensor; selected: Tensor } | null = null;
      if (start > 0) {
        const keyCount = end - cache.start;
        const m = decodeMask(patterns, heads, start, count, cache.start, keyCount);
        mask = {
          logCount: T.tensor(m.logCount, [heads, count, keyCount], this.placement),
          selected: T.tensor(m.selected, [heads, count, 1], this.placement),
        };
      }
      const scale = 1 / Math.sqrt(this.headDim);
      const updated: { keys: Tensor; values: Tensor }[] = [];
      let x = this.embed(tokens);
      for (const [i, block] of [...this.blocks].entries()) {
        const a = block.attention;
        const { q, k, v } = a.project(block.attentionNorm.forward(x));
        const rotated = applyXPos(q, k, tables);
        const held = cache.extended(i, T.permute(rotated.k, [0, 2, 1, 3]), T.permute(v, [0, 2, 1, 3]));
        updated.push(held);
        // the first chunk is a whole prefix: the kernel gives exactly a full forward's outputs there
        const o = mask ? cachedAttention(rotated.q, held.keys, held.values, mask, scale) : a.attend(rotated.q, rotated.k, v);
        x = block.feedForward(a.output(o, x));
      }
      const logits = this.logits(x);
      cache.commit(updated, count, firstReachable(patterns, end));
      return logits;
    }));
  }
}
