import type { AttentionPattern } from '../backend/backend.js';
import { sparseFixedFlops } from '../attention/sparse-fixed.js';
import { attentionPatterns, type AnyModelConfig } from './config.js';

/**
 * The count of docs/ATTENTION.md for one dilated attention call, forward, all heads, with w' = min(w, N):
 * sum_i H * (N / w') * 2 * (w'/r_i)^2 * D when causal (half of QK^T and PV), twice that when not.
 */
export function dilatedAttentionFlops(
  patterns: readonly AttentionPattern[], heads: number, headDim: number, seqLen: number, causal = true,
): number {
  let total = 0;
  for (const { segmentLength, dilationRate } of patterns) {
    const w = Math.min(segmentLength, seqLen);
    total += heads * (seqLen / w) * 2 * (w / dilationRate) ** 2 * headDim;
  }
  return causal ? total : 2 * total;
}

/** Attention FLOPs of a whole decoder (every layer) for one sequence of `seqLen` tokens, forward. */
export function attentionFlops(config: AnyModelConfig, seqLen: number, causal = true): number {
  const headDim = config.dModel / config.heads;
  const a = config.attention;
  if (a.kind === 'sparse-fixed') {
    // causal only: the non-causal count is not defined for this pattern
    return config.layers * sparseFixedFlops(seqLen, config.heads, headDim, a.stride, a.summary);
  }
  return config.layers * dilatedAttentionFlops(attentionPatterns(config, seqLen), config.heads, headDim, seqLen, causal);
}

/**
 * Weights that take part in a matrix product per token: every block's projections and the output head.
 * The head counts the real vocabulary, not the padded one (vocabPadMultiple): the products do run at
 * the padded width, but the padding computes nothing the model uses, so model FLOPs (and MFU) leave it
 * out, the conservative convention.
 */
export function matmulParameterCount(config: AnyModelConfig): number {
  const d = config.dModel;
  const perBlock = 4 * d * d + 2 * d * config.ffnDim;
  return config.layers * perBlock + config.vocabSize * d;
}

/**
 * Training FLOPs per token (forward and backward) for model FLOP utilization: 6 per matrix weight
 * (2 forward, 4 backward) plus the causal attention count times 3.5 (docs/ATTENTION.md), spread over the
 * sequence. Embedding lookups, norms and elementwise work are not counted.
 */
export function modelFlopsPerToken(config: AnyModelConfig, seqLen: number): number {
  return 6 * matmulParameterCount(config) + (3.5 * attentionFlops(config, seqLen, true)) / seqLen;
}
