import { promises as fsp } from 'node:fs';
import { withPath } from './fs-errors.js';

/** Text files larger than this are cut into several documents (default of `maxDocumentBytes`). */
export const DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;

const READ_CHUNK = 1024 * 1024;

/**
 * The documents of a plain-text (UTF-8) file: the whole file as one document, or, for a file larger
 * than `maxDocumentBytes`, consecutive pieces cut after the last newline before the limit (at the
 * limit when a piece has no newline), so memory stays bounded on a multi-gigabyte file.
 * Invalid UTF-8 becomes U+FFFD; a leading byte-order mark is dropped; an empty file yields nothing.
 */
export async function* readTextDocuments(
  path: string,
  maxDocumentBytes = DEFAULT_MAX_DOCUMENT_BYTES,
): AsyncGenerator<string> {
  const handle = await withPath(path, () => fsp.open(path, 'r'));
  try {
    // One streaming decoder per file: a cut inside a multi-byte character is carried over, not broken.
    const decoder = new TextDecoder('utf-8', { fatal: false });
    let buf = Buffer.alloc(Math.min(maxDocumentBytes, READ_CHUNK) + READ_CHUNK);
    let start = 0; // bytes before `start` are already yielded
    let filled = 0;
    let position = 0;
    for (;;) {
      if (start > 0) {
        buf.copy(buf, 0, start, filled);
        filled -= start;
        start = 0;
      }
      if (buf.length - filled < READ_CHUNK) {
        const bigger = Buffer.alloc(buf.length * 2);
        buf.copy(bigger, 0, 0, filled);
        buf = bigger;
      }
      const { bytesRead } = await withPath(path, () => handle.read(buf, filled, READ_CHUNK, position));
      position += bytesRead;
      filled += bytesRead;
      const eof = bytesRead === 0;
      while (filled - start >= maxDocumentBytes || (eof && filled > start)) {
        let cut = filled;
        if (filled - start > maxDocumentBytes || !eof) {
          const nl = buf.lastIndexOf(0x0a, start + maxDocumentBytes - 1);
          cut = nl >= start ? nl + 1 : start + maxDocumentBytes;
        }
        const text = decoder.decode(buf.subarray(start, cut), { stream: !(eof && cut === filled) });
        start = cut;
        if (text.length > 0) yield text;
      }
      if (eof) {
        const rest = decoder.decode();
        if (rest.length > 0) yield rest;
        return;
      }
    }
  } finally {
    await handle.close();
  }
}
