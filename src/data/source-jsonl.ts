import { promises as fsp } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { check, InputError } from '../errors.js';
import { fsInputError, withPath } from './fs-errors.js';

/** Fields tried, in order, when none is named. */
export const DEFAULT_JSONL_FIELDS = ['text', 'content'];

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}

/**
 * The documents of a JSON-lines file (optionally gzipped, by a .gz suffix): the string in `field` of each
 * line's object, read line by line. Blank lines and null values are skipped. Without `field`, the first
 * record decides between "text" and "content". A line that is not JSON, not an object, or lacks the
 * field is an InputError naming the file and line.
 */
export async function* readJsonlDocuments(path: string, field?: string): AsyncGenerator<string> {
  const handle = await withPath(path, () => fsp.open(path, 'r'));
  let input: Readable = handle.createReadStream({ highWaterMark: 1 << 20 });
  if (path.toLowerCase().endsWith('.gz')) input = input.pipe(createGunzip());
  // Errors of the stream (a bad gzip, EIO) must surface as an InputError, not an unhandled event.
  let streamError: unknown;
  input.on('error', (err) => {
    streamError = err;
  });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let chosen = field;
  let lineNo = 0;
  try {
    for await (const raw of lines) {
      lineNo++;
      const line = lineNo === 1 && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw; // byte-order mark
      if (line.trim().length === 0) continue;
      let record: unknown;
      try {
        record = JSON.parse(line);
      } catch (err) {
        if (lineNo === 1 && line.trimStart().startsWith('[')) {
          throw new InputError(`${path}:1: a JSON array, not JSON lines (one object per line)`);
        }
        throw new InputError(`${path}:${lineNo}: not valid JSON (${(err as Error).message})`);
      }
      check(
        typeof record === 'object' && record !== null && !Array.isArray(record),
        () => `${path}:${lineNo}: expected a JSON object, got ${describe(record)}`,
      );
      const obj = record as Record<string, unknown>;
      chosen ??= DEFAULT_JSONL_FIELDS.find((f) => f in obj) ?? DEFAULT_JSONL_FIELDS[0];
      check(chosen in obj, () => {
        const keys = Object.keys(obj);
        return `${path}:${lineNo}: no field "${chosen}" (fields: ${keys.length ? keys.join(', ') : 'none'})`;
      });
      const value = obj[chosen];
      if (value === null) continue;
      check(typeof value === 'string', () => `${path}:${lineNo}: field "${chosen}" is ${describe(value)}, not a string`);
      if (value.length > 0) yield value;
    }
    if (streamError) throw streamError;
  } catch (err) {
    if (err instanceof InputError) throw err;
    const e = fsInputError(streamError ?? err, path);
    throw lineNo > 0 ? new InputError(`${e.message} (after line ${lineNo})`) : e;
  } finally {
    lines.close();
    input.destroy();
    await handle.close().catch(() => undefined);
  }
}
