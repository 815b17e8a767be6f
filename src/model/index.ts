export { Module, ModuleList, type ParameterOptions, type StateValue } from './module.js';
export { Linear, type LinearOptions } from './linear.js';
export { LayerNorm, type LayerNormOptions } from './layer-norm.js';
export { Embedding, type EmbeddingOptions } from './embedding.js';
export { FeedForward, type FeedForwardOptions } from './feed-forward.js';
export { MultiheadDilatedAttention, type MultiheadDilatedAttentionOptions } from './attention.js';
export { DecoderBlock, type DecoderBlockOptions } from './block.js';
export { LongNetDecoder, type DecoderOptions, type LossOptions } from './decoder.js';
export {
  PRESETS, presetConfig, validateConfig, scheduleNotes, parameterCountOf, paddedVocabSize, blockParameterCount, attentionPatterns,
  type ModelConfig, type AnyModelConfig, type AttentionSpec, type ModelAttention, type SparseFixedSpec,
} from './config.js';
export { attentionFlops, modelFlopsPerToken, dilatedAttentionFlops, matmulParameterCount } from './flops.js';
export { DecoderCache } from './cache.js';
export { xavierStd, magnetoGamma } from './init.js';
export { applyXPos, xposTables, xposZeta, xposMaxLength, xposMaxOffset, xposCenter, type XPosTables } from './xpos.js';
