import { mkdirSync, rmSync } from 'node:fs';
import { check, InputError } from '../errors.js';
import { checkInteger, TokenDataset } from './dataset.js';
import { fsInputError } from './fs-errors.js';
import { hashString, StringHasher } from './hash.js';
import {
  listSourceFiles,
  openDocuments,
  readFileDocuments,
  sourceFingerprint,
  type SourceFile,
  type SourceOptions,
} from './sources.js';
import { DEFAULT_VAL_FRACTION, type DocumentTable } from './split.js';
import { cacheBase, commitCache, openCache } from './token-cache.js';
import { ByteTokenizer } from './tokenizer-byte.js';
import type { Tokenizer } from './tokenizer.js';
import { FileTokenWriter, MemoryTokenWriter, type TokenStore, type TokenWriter } from './token-store.js';

/** Without a cache directory, tokens live in memory up to this many (1 GiB of int32). */
export const DEFAULT_MAX_MEMORY_TOKENS = 2 ** 28;

export interface BuildProgress {
  documents: number;
  tokens: number;
  done: boolean;
}

export interface DatasetOptions extends SourceOptions {
  /** Share of tokens held out for validation, in [0, 1] (default 0.1); see selectValidation. */
  valFraction?: number;
  /**
   * Directory for a token cache: the corpus is tokenized once into `<key>.tokens` (int32) beside a
   * document table and a JSON header, and later builds of the same files (same paths, sizes, times)
   * with the same tokenizer open it instead of tokenizing again. Batches are then read from the file,
   * so the corpus may be far larger than memory. Without it, tokens are kept in memory.
   */
  cacheDir?: string;
  /** Refuse to hold more tokens than this in memory (default 2^28); use `cacheDir` beyond. */
  maxMemoryTokens?: number;
  /** Called about once a second while tokenizing, and once at the end. */
  onProgress?: (progress: BuildProgress) => void;
}

/** Collects the document table while tokenizing. */
class DocumentTableBuilder {
  count = 0;
  private offsets: Float64Array = new Float64Array(1024);
  private lengths: Float64Array = new Float64Array(1024);
  private hashes: Float64Array = new Float64Array(1024);

  add(offset: number, length: number, hash: number): void {
    if (this.count === this.offsets.length) {
      const grow = (a: Float64Array): Float64Array => {
        const b = new Float64Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.offsets = grow(this.offsets);
      this.lengths = grow(this.lengths);
      this.hashes = grow(this.hashes);
    }
    this.offsets[this.count] = offset;
    this.lengths[this.count] = length;
    this.hashes[this.count] = hash;
    this.count++;
  }

  finish(): DocumentTable {
    const n = this.count;
    const { offsets, lengths, hashes } = this;
    return { count: n, offsets: offsets.slice(0, n), lengths: lengths.slice(0, n), hashes: hashes.slice(0, n) };
  }
}

interface TokenizeResult {
  store: TokenStore;
  docs: DocumentTable;
  contentHash: string;
}

async function tokenizeInto(
  documents: AsyncIterable<string> | Iterable<string>,
  tokenizer: Tokenizer,
  writer: TokenWriter,
  source: string,
  onProgress?: (p: BuildProgress) => void,
): Promise<TokenizeResult> {
  const table = new DocumentTableBuilder();
  const content = new StringHasher(0x5eed);
  content.update(tokenizer.name);
  const eot = [tokenizer.eotId];
  // The byte tokenizer can hand over its bytes without building a number[] per document.
  const encode =
    tokenizer instanceof ByteTokenizer ? (t: string) => tokenizer.encodeBytes(t) : (t: string) => tokenizer.encode(t);
  let lastReport = performance.now();
  try {
    for await (const doc of documents) {
      if (doc.length === 0) continue;
      const offset = writer.length;
      writer.append(encode(doc));
      writer.append(eot);
      const hash = hashString(doc);
      table.add(offset, writer.length - offset, hash);
      content.update(`${hash.toString(36)},`);
      if (onProgress && performance.now() - lastReport > 1000) {
        lastReport = performance.now();
        onProgress({ documents: table.count, tokens: writer.length, done: false });
      }
    }
    check(table.count > 0, `${source}: empty corpus (no text, zero tokens)`);
  } catch (err) {
    writer.abort();
    throw err;
  }
  onProgress?.({ documents: table.count, tokens: writer.length, done: true });
  return { store: writer.finish(), docs: table.finish(), contentHash: content.digest().toString(16).padStart(14, '0') };
}

function tooLargeMessage(source: string, max: number): () => string {
  return () =>
    `${source}: more than ${max} tokens to hold in memory; ` +
    `give a token cache directory (cacheDir) to keep them on disk`;
}

function checkDatasetOptions(options: DatasetOptions): { valFraction: number; maxMemoryTokens: number } {
  const valFraction = options.valFraction ?? DEFAULT_VAL_FRACTION;
  check(
    Number.isFinite(valFraction) && valFraction >= 0 && valFraction <= 1,
    () => `valFraction must be in [0, 1], got ${valFraction}`,
  );
  const maxMemoryTokens = options.maxMemoryTokens ?? DEFAULT_MAX_MEMORY_TOKENS;
  checkInteger(maxMemoryTokens, 1, 'maxMemoryTokens');
  return { valFraction, maxMemoryTokens };
}

/** A dataset from documents already at hand (an iterable or a stream), tokens kept in memory. */
export async function tokenDatasetFromDocuments(
  documents: AsyncIterable<string> | Iterable<string>,
  tokenizer: Tokenizer,
  options: Omit<DatasetOptions, 'cacheDir' | keyof SourceOptions> & { source?: string } = {},
): Promise<TokenDataset> {
  const { valFraction, maxMemoryTokens } = checkDatasetOptions(options);
  const source = options.source ?? '(documents)';
  const writer = new MemoryTokenWriter(maxMemoryTokens, tooLargeMessage(source, maxMemoryTokens));
  const r = await tokenizeInto(documents, tokenizer, writer, source, options.onProgress);
  return new TokenDataset(r.store, r.docs, source, tokenizer.toJSON(), valFraction, r.contentHash);
}

/**
 * Tokenizes the corpus at `path` (file or directory; see openDocuments) once and splits it. With
 * `cacheDir`, the tokens go to (or come from) a cache file there. Every problem with the input is an
 * InputError naming the path: missing or unreadable, no usable files, empty corpus, bad JSON line,
 * missing Parquet column, or too many tokens for memory without a cache.
 */
export async function buildTokenDataset(
  path: string,
  tokenizer: Tokenizer,
  options: DatasetOptions = {},
): Promise<TokenDataset> {
  const { valFraction, maxMemoryTokens } = checkDatasetOptions(options);
  const spec = tokenizer.toJSON();
  if (options.cacheDir === undefined) {
    const writer = new MemoryTokenWriter(maxMemoryTokens, tooLargeMessage(path, maxMemoryTokens));
    const r = await tokenizeInto(openDocuments(path, options), tokenizer, writer, path, options.onProgress);
    return new TokenDataset(r.store, r.docs, path, spec, valFraction, r.contentHash);
  }

  const cacheDir = options.cacheDir;
  try {
    mkdirSync(cacheDir, { recursive: true });
  } catch (err) {
    throw fsInputError(err, cacheDir);
  }
  const files = await listSourceFiles(path, options);
  const base = cacheBase(cacheDir, await sourceFingerprint(path, options, files), spec);
  const cached = openCache(base, spec);
  if (cached) {
    options.onProgress?.({ documents: cached.header.documents, tokens: cached.header.tokens, done: true });
    return new TokenDataset(cached.store, cached.docs, path, spec, valFraction, cached.header.contentHash);
  }
  const writer = new FileTokenWriter(`${base}.tokens`);
  const r = await tokenizeInto(documentsOf(files, options), tokenizer, writer, path, options.onProgress);
  try {
    commitCache(base, path, spec, r.store.length, r.docs, r.contentHash);
  } catch (err) {
    r.store.close();
    rmSync(`${base}.tokens`, { force: true });
    throw err instanceof InputError ? err : fsInputError(err, cacheDir);
  }
  return new TokenDataset(r.store, r.docs, path, spec, valFraction, r.contentHash);
}

async function* documentsOf(files: SourceFile[], options: SourceOptions): AsyncGenerator<string> {
  for (const file of files) yield* readFileDocuments(file, options);
}
