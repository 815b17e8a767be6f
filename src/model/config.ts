import { parsePatterns } from '../attention/patterns.js';
import type { AttentionPattern } from '../backend/backend.js';
import { check, InputError } from '../errors.js';
import { xposMaxLength } from './xpos.js';

/** How a model attends: dilated attention with a schedule of (w_i, r_i), or vanilla dense attention. */
export type AttentionSpec =
  | { kind: 'dilated'; segmentLengths: number[]; dilationRates: number[] }
  | { kind: 'dense' };

/**
 * The Sparse Transformer's fixed pattern (causal only), the paper's sparse baseline: blocks of `stride`
 * positions, each query sees the earlier keys of its own block and the last `summary` positions of every
 * earlier block (src/attention/sparse-fixed.ts).
 */
export interface SparseFixedSpec {
  kind: 'sparse-fixed';
  stride: number;
  summary: number;
}

/** Every attention a model can have: LongNet's and vanilla (AttentionSpec), or the sparse baseline. */
export type ModelAttention = AttentionSpec | SparseFixedSpec;

/**
 * A model's configuration. The default type parameter covers the LongNet and vanilla models (every
 * preset); `AnyModelConfig` also admits the sparse baseline, and is what models and checkpoints accept.
 */
export interface ModelConfig<A extends ModelAttention = AttentionSpec> {
  vocabSize: number;
  dModel: number;
  layers: number;
  heads: number;
  ffnDim: number;
  attention: A;
  xposScaleBase: number;
  layerNormEps: number;
  /** Share the embedding table with the output head. */
  tieEmbeddings: boolean;
  /**
   * Rows of the embedding table and of the head are padded with zeros up to a multiple of this (see
   * `paddedVocabSize`), so that the head's matrix products get aligned operands on a GPU (100,277 is
   * not a multiple of 8). The padding is never a class: the model is the same function. Absent means 1,
   * no padding (the layout of checkpoints from before the field); the presets use 64.
   */
  vocabPadMultiple?: number;
}

/** A configuration with any kind of attention, the sparse baseline included. */
export type AnyModelConfig = ModelConfig<ModelAttention>;

/** The paper's language-modelling schedule (docs/ATTENTION.md). */
const PAPER_SCHEDULE: AttentionSpec = {
  kind: 'dilated',
  segmentLengths: [2048, 4096, 8192, 16384, 32768],
  dilationRates: [1, 2, 4, 6, 12],
};

/** cl100k_base: 100,256 merges plus specials up to id 100,276. The trainer sets the tokenizer's own size. */
const CL100K_VOCAB = 100277;
/** Bytes plus an end-of-document id (the byte tokenizer). */
const BYTE_VOCAB = 257;
/** The presets' vocabulary padding: rows of 64 logits are 128 bytes in bf16, 256 in float32, aligned for cuBLASLt. */
const VOCAB_PAD_MULTIPLE = 64;

function sized(layers: number, dModel: number, heads: number): ModelConfig {
  return {
    vocabSize: CL100K_VOCAB, dModel, layers, heads, ffnDim: 4 * dModel,
    attention: structuredClone(PAPER_SCHEDULE), xposScaleBase: 512, layerNormEps: 1e-5, tieEmbeddings: false,
    vocabPadMultiple: VOCAB_PAD_MULTIPLE,
  };
}

/**
 * `tiny` is for a CPU: 2 layers of width 128 (4 heads of 32, FFN 512, byte vocabulary), 0.47 M
 * parameters and 3.3 MFLOP a training token at 2048, so that two cores train it on sequences of
 * 512..2048 tokens in minutes (a few hundred tokens a second with the current CPU kernels; `layers: 4`
 * doubles the cost).
 * Its schedule is the paper's shape scaled down 16x: segments 128..2048 with w/r bounded
 * (128, 128, 128, 256, 512), and r capped at the head count, as the paper caps it at 12 for 12 heads,
 * so that the offsets h mod r cover every residue of every pattern.
 * The others are the paper's Table 4 sizes with its schedule.
 */
const PRESET_TABLE: Record<string, () => ModelConfig> = {
  tiny: () => ({
    vocabSize: BYTE_VOCAB, dModel: 128, layers: 2, heads: 4, ffnDim: 512,
    attention: { kind: 'dilated', segmentLengths: [128, 256, 512, 1024, 2048], dilationRates: [1, 2, 4, 4, 4] },
    xposScaleBase: 512, layerNormEps: 1e-5, tieEmbeddings: false, vocabPadMultiple: VOCAB_PAD_MULTIPLE,
  }),
  base: () => sized(12, 768, 12),
  '350m': () => sized(24, 1024, 16),
  '760m': () => sized(24, 1536, 16),
  '2.7b': () => sized(32, 2560, 32),
};

export const PRESETS: readonly string[] = Object.freeze(Object.keys(PRESET_TABLE));

/** A preset by name, with fields replaced by `overrides` (the trainer sets vocabSize from its tokenizer). */
export function presetConfig(name: string, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const make = PRESET_TABLE[name];
  check(make !== undefined, () => `unknown model preset '${name}' (known: ${PRESETS.join(', ')})`);
  const config = { ...make(), ...structuredClone(overrides) };
  validateConfig(config);
  return config;
}

/**
 * The patterns of a config for a sequence of `seqLen` tokens: dense is the single pattern (N, 1). The
 * sparse fixed pattern is not a dilated schedule: asking for its patterns is an error.
 */
export function attentionPatterns(config: AnyModelConfig, seqLen: number): AttentionPattern[] {
  const a = config.attention;
  if (a.kind === 'dense') return [{ segmentLength: Math.max(seqLen, 1), dilationRate: 1 }];
  check(a.kind === 'dilated', `${a.kind} attention is not a schedule of dilated patterns`);
  return parsePatterns(a.segmentLengths, a.dilationRates);
}

const positiveInteger = (value: unknown, name: string): void =>
  check(typeof value === 'number' && Number.isInteger(value) && value > 0, `model config: ${name} = ${String(value)} is not a positive integer`);

/**
 * Throws an InputError naming the first invalid field. With `seqLen`, also checks that the model can run
 * sequences of that length: an integer >= 1 within XPos's float32 range (see xpos.ts). Every such length
 * fits every schedule: the operator clips segments to min(w, N) and lets the last segment be shorter,
 * so segments longer than the sequence are allowed (`scheduleNotes` lists them).
 */
export function validateConfig(config: AnyModelConfig, seqLen?: number): void {
  check(config !== null && typeof config === 'object', 'model config must be an object');
  positiveInteger(config.vocabSize, 'vocabSize');
  positiveInteger(config.dModel, 'dModel');
  positiveInteger(config.layers, 'layers');
  positiveInteger(config.heads, 'heads');
  positiveInteger(config.ffnDim, 'ffnDim');
  check(config.dModel % config.heads === 0, `model config: heads = ${config.heads} does not divide dModel = ${config.dModel}`);
  const headDim = config.dModel / config.heads;
  check(headDim % 2 === 0, `model config: head dim dModel/heads = ${headDim} must be even (XPos rotates pairs)`);
  check(
    typeof config.xposScaleBase === 'number' && Number.isFinite(config.xposScaleBase) && config.xposScaleBase > 0,
    `model config: xposScaleBase = ${String(config.xposScaleBase)} is not a positive number`,
  );
  check(
    typeof config.layerNormEps === 'number' && Number.isFinite(config.layerNormEps) && config.layerNormEps > 0,
    `model config: layerNormEps = ${String(config.layerNormEps)} is not a positive number`,
  );
  check(typeof config.tieEmbeddings === 'boolean', `model config: tieEmbeddings = ${String(config.tieEmbeddings)} is not a boolean`);
  if (config.vocabPadMultiple !== undefined) positiveInteger(config.vocabPadMultiple, 'vocabPadMultiple');
  const a = config.attention;
  check(a !== null && typeof a === 'object', 'model config: attention must be an object');
  if (a.kind === 'dilated') {
    try {
      parsePatterns(a.segmentLengths, a.dilationRates);
    } catch (error) {
      if (error instanceof InputError) throw new InputError(`model config: attention.${error.message}`);
      throw error;
    }
  } else if (a.kind === 'sparse-fixed') {
    positiveInteger(a.stride, 'attention.stride');
    positiveInteger(a.summary, 'attention.summary');
    check(a.summary <= a.stride, `model config: attention.summary = ${a.summary} is larger than attention.stride = ${a.stride}`);
  } else {
    check(a.kind === 'dense', `model config: attention.kind = ${String((a as { kind: unknown }).kind)} is not 'dilated', 'dense' or 'sparse-fixed'`);
  }
  if (seqLen !== undefined) {
    check(Number.isInteger(seqLen) && seqLen >= 1, `sequence length ${seqLen} is not a positive integer`);
    const max = xposMaxLength(config.xposScaleBase);
    check(
      seqLen <= max,
      `sequence length ${seqLen} is past XPos's float32-safe ${max} for xposScaleBase ${config.xposScaleBase}; raise xposScaleBase`,
    );
  }
}

/**
 * Things about a valid schedule worth telling a user, none of them errors: patterns clipped to a shorter
 * sequence (several clipped to the same (N, r) count their keys several times), and rates above the
 * head count (offsets h mod r then leave some residues without queries).
 */
export function scheduleNotes(config: AnyModelConfig, seqLen: number): string[] {
  const a = config.attention;
  if (a.kind === 'dense') return [];
  if (a.kind === 'sparse-fixed') {
    return a.stride >= seqLen ? [`sparse-fixed stride ${a.stride} covers the whole sequence of ${seqLen}: it is dense attention`] : [];
  }
  const notes: string[] = [];
  a.segmentLengths.forEach((w, i) => {
    const r = a.dilationRates[i]!;
    if (w > seqLen) notes.push(`pattern ${i} (w=${w}, r=${r}) is clipped to the sequence length ${seqLen}`);
    if (r > config.heads) notes.push(`pattern ${i} (w=${w}, r=${r}) has more offsets than the ${config.heads} heads cover`);
  });
  return notes;
}

/**
 * Rows of the embedding table and of the output head: vocabSize rounded up to a multiple of
 * vocabPadMultiple (absent: 1, vocabSize itself). Rows from vocabSize on are padding.
 */
export function paddedVocabSize(config: AnyModelConfig): number {
  const multiple = config.vocabPadMultiple ?? 1;
  return Math.ceil(config.vocabSize / multiple) * multiple;
}

/** Parameters of one decoder block (all linear layers carry a bias). */
export function blockParameterCount(config: AnyModelConfig): number {
  const d = config.dModel;
  const f = config.ffnDim;
  const attention = 4 * (d * d + d) + 2 * d; // q, k, v, o projections and LN_inner
  const ffn = d * f + f + f * d + d + 2 * f; // W_1, W_2 and LN_ffn
  const norms = 2 * (2 * d); // the two pre-norms
  return attention + ffn + norms;
}

/** The parameter count of a decoder, from its config alone (no allocation): what it allocates, padding rows included. */
export function parameterCountOf(config: AnyModelConfig): number {
  const embedding = paddedVocabSize(config) * config.dModel;
  const head = config.tieEmbeddings ? 0 : paddedVocabSize(config) * config.dModel;
  return embedding + config.layers * blockParameterCount(config) + 2 * config.dModel + head;
}
