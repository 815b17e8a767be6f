// The data side of training: tokenizers, document sources, packing, the validation split, datasets.
export {
  checkIds,
  createTokenizer,
  TextStreamDecoder,
  tokenizerFromSpec,
  TOKENIZER_NAMES,
  type Tokenizer,
  type TokenizerName,
  type TokenizerSpec,
} from './tokenizer.js';
export { ByteTokenizer } from './tokenizer-byte.js';
export { Cl100kTokenizer } from './tokenizer-cl100k.js';
export {
  formatOf,
  listSourceFiles,
  openDocuments,
  readFileDocuments,
  sourceFingerprint,
  type SourceFile,
  type SourceFormat,
  type SourceOptions,
} from './sources.js';
export { parquetColumns } from './source-parquet.js';
export { checkSeqLen, packSequences, splitBatch, tokenizeDocuments } from './packing.js';
export { DEFAULT_VAL_FRACTION } from './split.js';
export {
  TokenDataset,
  type Batch,
  type BatchOptions,
  type BatchPosition,
  type DatasetSummary,
} from './dataset.js';
export {
  buildTokenDataset,
  DEFAULT_MAX_MEMORY_TOKENS,
  tokenDatasetFromDocuments,
  type BuildProgress,
  type DatasetOptions,
} from './build.js';
export { defaultCorpusDescription, defaultCorpusPath } from './default-corpus.js';
export {
  PASSKEY_FILLER,
  PASSKEY_INTRO,
  PASSKEY_QUESTION,
  passkeyMinLength,
  passkeySample,
  type PasskeyOptions,
  type PasskeySample,
} from './passkey.js';
