import { resolve } from 'node:path';
import { check } from '../errors.js';
import { readJsonlDocuments } from './source-jsonl.js';
import { readParquetDocuments } from './source-parquet.js';
import { DEFAULT_MAX_DOCUMENT_BYTES, readTextDocuments } from './source-text.js';
import { listSourceFiles, type SourceFile, type WalkOptions } from './source-walk.js';

export { formatOf, listSourceFiles, type SourceFile, type SourceFormat } from './source-walk.js';

export interface SourceOptions extends WalkOptions {
  /**
   * JSON-lines field or Parquet column holding the text. Default: JSONL "text" (else "content", decided
   * on the first record); Parquet "content" (The Stack; else "text").
   */
  field?: string;
  /** Text files larger than this many bytes are cut at line boundaries into several documents (16 MiB). */
  maxDocumentBytes?: number;
}

function checkOptions(options: SourceOptions): void {
  const max = options.maxDocumentBytes;
  check(
    max === undefined || (Number.isInteger(max) && max >= 1),
    () => `maxDocumentBytes must be a positive integer, got ${max}`,
  );
  check(options.field === undefined || options.field.length > 0, 'field must not be empty');
}

/** The documents of one listed file, by its format. */
export function readFileDocuments(file: SourceFile, options: SourceOptions = {}): AsyncIterable<string> {
  switch (file.format) {
    case 'jsonl':
      return readJsonlDocuments(file.path, options.field);
    case 'parquet':
      return readParquetDocuments(file.path, options.field);
    case 'text':
      return readTextDocuments(file.path, options.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES);
  }
}

/**
 * The documents under `path`, streamed: a text file is one document, a JSON-lines file one per line, a
 * Parquet file one per row; a directory walks its files (see listSourceFiles) in sorted order. Nothing
 * is loaded whole. Bad input (missing path, unreadable file, empty directory, bad line, missing column)
 * is an InputError naming the path.
 */
export async function* openDocuments(path: string, options: SourceOptions = {}): AsyncGenerator<string> {
  checkOptions(options);
  for (const file of await listSourceFiles(path, options)) yield* readFileDocuments(file, options);
}

/**
 * What identifies the contents of `path` for a token cache: every file's path, size and modification
 * time, and the options that change what is read. `files` saves walking again when already listed.
 */
export async function sourceFingerprint(path: string, options: SourceOptions = {}, files?: SourceFile[]): Promise<string> {
  checkOptions(options);
  files ??= await listSourceFiles(path, options);
  return JSON.stringify({
    field: options.field ?? null,
    maxDocumentBytes: options.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES,
    files: files.map((f) => [resolve(f.path), f.format, f.size, Math.round(f.mtimeMs)]),
  });
}
