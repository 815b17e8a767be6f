import { asyncBufferFromFile, parquetMetadataAsync, parquetRead, parquetSchema } from 'hyparquet';
import type { AsyncBuffer, FileMetaData } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { check, InputError } from '../errors.js';
import { withPath } from './fs-errors.js';

/** Columns tried, in order, when none is named: The Stack's "content", then the common "text". */
export const DEFAULT_PARQUET_COLUMNS = ['content', 'text'];

async function openParquet(path: string): Promise<{ file: AsyncBuffer; metadata: FileMetaData }> {
  const file = await withPath(path, () => asyncBufferFromFile(path));
  try {
    return { file, metadata: await parquetMetadataAsync(file) };
  } catch (err) {
    throw new InputError(`${path}: not a readable Parquet file (${(err as Error).message})`);
  }
}

/** Names of the top-level columns of a Parquet file. */
export async function parquetColumns(path: string): Promise<string[]> {
  const { metadata } = await openParquet(path);
  return parquetSchema(metadata).children.map((c) => c.element.name);
}

function describe(value: unknown): string {
  if (value instanceof Uint8Array) return 'binary';
  if (Array.isArray(value)) return 'list';
  return typeof value;
}

/**
 * The documents of a Parquet file: the strings of one column, read one row group at a time (so memory
 * holds one row group of one column, never the file). Snappy, gzip, zstd, brotli and lz4 pages are
 * decompressed by hyparquet-compressors. Nulls are skipped; binary values are read as UTF-8.
 */
export async function* readParquetDocuments(path: string, column?: string): AsyncGenerator<string> {
  const { file, metadata } = await openParquet(path);
  const columns = parquetSchema(metadata).children.map((c) => c.element.name);
  const chosen = column ?? DEFAULT_PARQUET_COLUMNS.find((c) => columns.includes(c));
  check(chosen !== undefined && columns.includes(chosen), () => {
    const wanted = column ? `column "${column}"` : `column ${DEFAULT_PARQUET_COLUMNS.map((c) => `"${c}"`).join(' or ')}`;
    return `${path}: no ${wanted} (columns: ${columns.join(', ') || 'none'})`;
  });
  const decoder = new TextDecoder('utf-8', { fatal: false });
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: unknown[][] = [];
    try {
      await parquetRead({
        file,
        metadata,
        columns: [chosen],
        rowStart,
        rowEnd,
        compressors,
        onComplete: (r: unknown[][]) => {
          rows = r;
        },
      });
    } catch (err) {
      throw new InputError(`${path}: cannot read rows ${rowStart}..${rowEnd - 1} (${(err as Error).message})`);
    }
    for (let i = 0; i < rows.length; i++) {
      const value = rows[i][0];
      if (value === null || value === undefined) continue;
      let text: string;
      if (typeof value === 'string') text = value;
      else if (value instanceof Uint8Array) text = decoder.decode(value);
      else {
        const row = rowStart + i;
        throw new InputError(`${path}: column "${chosen}" holds ${describe(value)} values (row ${row}), not text`);
      }
      if (text.length > 0) yield text;
    }
    rowStart = rowEnd;
  }
}
