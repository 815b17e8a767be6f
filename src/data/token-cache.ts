import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { DocumentTable } from './split.js';
import type { TokenizerSpec } from './tokenizer.js';
import { FileTokenStore, type TokenStore } from './token-store.js';

/**
 * The on-disk token cache: for each (files, tokenizer), `<key>.tokens` (int32, little-endian), `<key>.docs`
 * (the document table: offsets, lengths, hashes as float64) and `<key>.json` (the header). The header is
 * written last, so its presence means a complete entry; every writer uses its own temporary names, so
 * ranks that build the same entry at once do not collide (they write the same bytes).
 */

const CACHE_VERSION = 1;

export interface CacheHeader {
  version: number;
  source: string;
  tokenizer: TokenizerSpec;
  tokens: number;
  documents: number;
  contentHash: string;
}

export interface CacheEntry {
  header: CacheHeader;
  store: TokenStore;
  docs: DocumentTable;
}

/** The path prefix of the cache entry for a source fingerprint and tokenizer. */
export function cacheBase(cacheDir: string, fingerprint: string, tokenizer: TokenizerSpec): string {
  const key = createHash('sha256')
    .update(JSON.stringify({ version: CACHE_VERSION, fingerprint, tokenizer }))
    .digest('hex')
    .slice(0, 24);
  return join(cacheDir, key);
}

/** Reads a complete cache entry, or undefined if there is none or it is stale or torn. */
export function openCache(base: string, tokenizer: TokenizerSpec): CacheEntry | undefined {
  if (!existsSync(`${base}.json`)) return undefined;
  try {
    const header = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as CacheHeader;
    if (header.version !== CACHE_VERSION) return undefined;
    if (JSON.stringify(header.tokenizer) !== JSON.stringify(tokenizer)) return undefined;
    if (statSync(`${base}.tokens`).size !== header.tokens * 4) return undefined;
    const raw = readFileSync(`${base}.docs`);
    if (raw.byteLength !== header.documents * 24) return undefined;
    const table = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const n = header.documents;
    const docs = { count: n, offsets: table.slice(0, n), lengths: table.slice(n, 2 * n), hashes: table.slice(2 * n) };
    return { header, store: new FileTokenStore(`${base}.tokens`), docs };
  } catch {
    return undefined; // unreadable or torn: rebuild it
  }
}

/** Writes the document table and header of an entry whose tokens file is already in place. */
export function commitCache(
  base: string,
  source: string,
  tokenizer: TokenizerSpec,
  tokens: number,
  docs: DocumentTable,
  contentHash: string,
): void {
  const n = docs.count;
  const table = new Float64Array(3 * n);
  table.set(docs.offsets, 0);
  table.set(docs.lengths, n);
  table.set(docs.hashes, 2 * n);
  const tmp = `${base}.${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSync(`${tmp}.docs.tmp`, new Uint8Array(table.buffer));
  renameSync(`${tmp}.docs.tmp`, `${base}.docs`);
  const header: CacheHeader = {
    version: CACHE_VERSION,
    source: resolve(source),
    tokenizer,
    tokens,
    documents: n,
    contentHash,
  };
  writeFileSync(`${tmp}.json.tmp`, JSON.stringify(header, null, 1));
  renameSync(`${tmp}.json.tmp`, `${base}.json`);
}
