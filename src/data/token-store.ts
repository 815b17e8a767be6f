import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { check, InputError } from '../errors.js';
import { fsInputError } from './fs-errors.js';

/** Random read access to a corpus's tokens, wherever they live. */
export interface TokenStore {
  readonly length: number;
  /** Copies tokens [start, start + count) into `out` at `outOffset`. */
  read(start: number, count: number, out: Int32Array, outOffset: number): void;
  close(): void;
}

function checkRange(store: TokenStore, start: number, count: number): void {
  if (!(start >= 0 && count >= 0 && start + count <= store.length)) {
    throw new RangeError(`token range [${start}, ${start + count}) outside [0, ${store.length})`);
  }
}

export class MemoryTokenStore implements TokenStore {
  constructor(readonly tokens: Int32Array) {}

  get length(): number {
    return this.tokens.length;
  }

  read(start: number, count: number, out: Int32Array, outOffset: number): void {
    checkRange(this, start, count);
    out.set(this.tokens.subarray(start, start + count), outOffset);
  }

  close(): void {}
}

// Token files are raw int32 in the machine's byte order, read straight into Int32Arrays; every platform
// Node runs training on is little-endian, and the file format says so.
function requireLittleEndian(): void {
  if (endianness() !== 'LE') throw new Error('token cache files need a little-endian machine');
}

/** Tokens in a file of little-endian int32, read on demand (the file may be far larger than memory). */
export class FileTokenStore implements TokenStore {
  private fd: number | undefined;
  readonly length: number;

  constructor(readonly path: string) {
    requireLittleEndian();
    try {
      this.fd = openSync(path, 'r');
      const size = fstatSync(this.fd).size;
      check(size % 4 === 0, `token file ${path} has ${size} bytes, not a whole number of int32`);
      this.length = size / 4;
    } catch (err) {
      if (this.fd !== undefined) closeSync(this.fd);
      throw fsInputError(err, path);
    }
  }

  read(start: number, count: number, out: Int32Array, outOffset: number): void {
    checkRange(this, start, count);
    check(this.fd !== undefined, `token file ${this.path} is closed`);
    const bytes = new Uint8Array(out.buffer, out.byteOffset + outOffset * 4, count * 4);
    let done = 0;
    while (done < bytes.length) {
      const n = readSync(this.fd, bytes, done, bytes.length - done, start * 4 + done);
      if (n === 0) throw new InputError(`token file ${this.path} ended early (truncated?)`);
      done += n;
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Appends tokens while a corpus is tokenized, into memory (up to a limit) or into a file. */
export interface TokenWriter {
  readonly length: number;
  append(ids: ArrayLike<number>): void;
  /** The store holding everything appended. */
  finish(): TokenStore;
  /** Drops what was written (the build failed). */
  abort(): void;
}

/** Grows an Int32Array by doubling; refuses to pass `maxTokens` (a clear error instead of running out of memory). */
export class MemoryTokenWriter implements TokenWriter {
  private buf: Int32Array = new Int32Array(1 << 16);
  length = 0;

  constructor(
    private readonly maxTokens: number,
    private readonly tooLarge: () => string,
  ) {}

  append(ids: ArrayLike<number>): void {
    const need = this.length + ids.length;
    if (need > this.maxTokens) throw new InputError(this.tooLarge());
    if (need > this.buf.length) {
      let size = this.buf.length;
      while (size < need) size *= 2;
      const bigger = new Int32Array(Math.min(size, this.maxTokens));
      bigger.set(this.buf.subarray(0, this.length));
      this.buf = bigger;
    }
    this.buf.set(ids, this.length);
    this.length = need;
  }

  finish(): TokenStore {
    return new MemoryTokenStore(this.buf.slice(0, this.length));
  }

  abort(): void {
    this.buf = new Int32Array(0);
  }
}

/** Writes tokens to a temporary file in 4 MiB blocks; `finish` syncs and renames it to `path` (atomic). */
export class FileTokenWriter implements TokenWriter {
  private readonly tmp: string;
  private readonly fd: number;
  private readonly block = new Int32Array(1 << 20);
  private filled = 0;
  length = 0;

  constructor(readonly path: string) {
    requireLittleEndian();
    this.tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    try {
      this.fd = openSync(this.tmp, 'w');
    } catch (err) {
      throw fsInputError(err, this.tmp);
    }
  }

  append(ids: ArrayLike<number>): void {
    let i = 0;
    while (i < ids.length) {
      const n = Math.min(ids.length - i, this.block.length - this.filled);
      // ArrayLike has no subarray; ids is a number[] or a typed array, both fine for set via a slice.
      if (i === 0 && n === ids.length) this.block.set(ids, this.filled);
      else this.block.set(Array.prototype.slice.call(ids, i, i + n) as number[], this.filled);
      this.filled += n;
      i += n;
      if (this.filled === this.block.length) this.flush();
    }
    this.length += ids.length;
  }

  private flush(): void {
    const bytes = new Uint8Array(this.block.buffer, 0, this.filled * 4);
    let done = 0;
    try {
      while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
    } catch (err) {
      throw fsInputError(err, this.tmp);
    }
    this.filled = 0;
  }

  finish(): TokenStore {
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    renameSync(this.tmp, this.path);
    return new FileTokenStore(this.path);
  }

  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    rmSync(this.tmp, { force: true });
  }
}
