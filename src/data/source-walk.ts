import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { check } from '../errors.js';
import { fsInputError, withPath } from './fs-errors.js';

export type SourceFormat = 'text' | 'jsonl' | 'parquet';

export interface SourceFile {
  path: string;
  format: SourceFormat;
  size: number;
  mtimeMs: number;
}

export interface WalkOptions {
  /** Read every file as this format instead of choosing by extension. */
  format?: SourceFormat;
  /** In directories, only files whose name ends with one of these (e.g. ['.js', '.ts']; case-insensitive). */
  extensions?: string[];
  /** In directories, also walk names starting with '.' (skipped by default: .git and the like). */
  includeHidden?: boolean;
}

/** Bytes sniffed for a NUL to call a file binary (git's rule of thumb). */
export const BINARY_SNIFF_BYTES = 8192;

const JSONL_SUFFIXES = ['.jsonl', '.ndjson', '.json', '.jsonl.gz', '.ndjson.gz', '.json.gz'];

/**
 * The format a file name implies: JSON lines, Parquet, or plain text. Inside a directory walk a `.json` file
 * is text: there it is nearly always a document of its own (package.json, tsconfig.json), not a data set.
 */
export function formatOf(path: string, inDirectory = false): SourceFormat {
  const lower = path.toLowerCase();
  const plainJson = lower.endsWith('.json') || lower.endsWith('.json.gz');
  if (JSONL_SUFFIXES.some((s) => lower.endsWith(s)) && !(inDirectory && plainJson)) return 'jsonl';
  if (lower.endsWith('.parquet')) return 'parquet';
  return 'text';
}

/** Offset of the first NUL byte among the first BINARY_SNIFF_BYTES of a file, or -1. */
export async function findNulByte(path: string): Promise<number> {
  return withPath(path, async () => {
    const handle = await fsp.open(path, 'r');
    try {
      const buf = Buffer.alloc(BINARY_SNIFF_BYTES);
      const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
      return buf.subarray(0, bytesRead).indexOf(0);
    } finally {
      await handle.close();
    }
  });
}

function normalizeExtensions(exts: string[] | undefined): string[] | undefined {
  if (exts === undefined || exts.length === 0) return undefined;
  return exts.map((e) => {
    const t = e.trim().toLowerCase();
    check(t.length > 0 && t !== '.', () => `empty extension in extension filter ${JSON.stringify(exts)}`);
    return t.startsWith('.') ? t : `.${t}`;
  });
}

/**
 * The files a path stands for, in a deterministic order: the file itself, or every usable file under a
 * directory (recursive, entries sorted by code unit within each directory, symbolic links followed
 * once). In directories, text files with a NUL byte in their first 8 KB are skipped as binary. Throws an
 * InputError for a missing or unreadable path, a binary file named directly, or a directory left empty.
 */
export async function listSourceFiles(path: string, options: WalkOptions = {}): Promise<SourceFile[]> {
  const stat = await withPath(path, () => fsp.stat(path));
  if (!stat.isDirectory()) {
    check(stat.isFile(), `cannot read ${path}: not a regular file or directory`);
    const format = options.format ?? formatOf(path);
    await withPath(path, () => fsp.access(path, fsp.constants.R_OK));
    if (format === 'text') {
      const nul = await findNulByte(path);
      check(nul < 0, `${path} looks binary (NUL byte at offset ${nul}), not text`);
    }
    return [{ path, format, size: stat.size, mtimeMs: stat.mtimeMs }];
  }

  const extensions = normalizeExtensions(options.extensions);
  const files: SourceFile[] = [];
  const skipped = { binary: 0, extension: 0, hidden: 0, other: 0 };
  const visited = new Set<string>();

  const walk = async (dir: string): Promise<void> => {
    const real = await withPath(dir, () => fsp.realpath(dir));
    if (visited.has(real)) return; // a symbolic link back up the tree
    visited.add(real);
    const entries = await withPath(dir, () => fsp.readdir(dir, { withFileTypes: true }));
    const names = entries.map((e) => e.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const full = join(dir, name);
      if (!options.includeHidden && name.startsWith('.')) {
        skipped.hidden++;
        continue;
      }
      let st;
      try {
        st = await fsp.stat(full); // follows links
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ELOOP') {
          skipped.other++; // a dangling link is no data, not an error
          continue;
        }
        throw fsInputError(err, full);
      }
      if (st.isDirectory()) {
        await walk(full);
        continue;
      }
      if (!st.isFile()) {
        skipped.other++;
        continue;
      }
      if (extensions && !extensions.some((e) => name.toLowerCase().endsWith(e))) {
        skipped.extension++;
        continue;
      }
      const format = options.format ?? formatOf(name, true);
      if (format === 'text' && st.size > 0 && (await findNulByte(full)) >= 0) {
        skipped.binary++;
        continue;
      }
      files.push({ path: full, format, size: st.size, mtimeMs: st.mtimeMs });
    }
  };
  await walk(path);

  check(files.length > 0, () => {
    const parts = [
      skipped.binary && `${skipped.binary} binary`,
      skipped.extension && `${skipped.extension} not matching ${extensions?.join(',')}`,
      skipped.hidden && `${skipped.hidden} hidden`,
      skipped.other && `${skipped.other} not regular files`,
    ].filter(Boolean);
    return `no usable files in directory ${path}` + (parts.length ? ` (skipped: ${parts.join(', ')})` : ' (it is empty)');
  });
  return files;
}
