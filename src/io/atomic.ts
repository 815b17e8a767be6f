/**
 * Crash-safe file writes: a reader sees either the old content or the complete new content, never a
 * truncated file. The new bytes go to a temporary file in the target's directory (rename is only atomic
 * within one file system), are flushed to disk, and then renamed over the target.
 */
import {
  closeSync, fsyncSync, mkdtempSync, openSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { InputError } from '../errors.js';

/**
 * What to write: bytes, a string (UTF-8), or chunks produced one at a time (so that a large checkpoint
 * need not be assembled in one buffer). A producer that throws aborts the write cleanly.
 */
export type AtomicData = Uint8Array | string | Iterable<Uint8Array | string>;

/** Error codes that mean the caller pointed at a place that cannot be written, not a bug. */
const USER_CODES: Record<string, string> = {
  ENOENT: 'no such directory',
  ENOTDIR: 'a path component is not a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  EISDIR: 'is a directory',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
};

/** Maps a file-system error to an InputError naming `path` when the cause is the path itself. */
function describeWriteError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined && code in USER_CODES) {
    return new InputError(`cannot write ${path}: ${USER_CODES[code]}`);
  }
  return err;
}

function tempName(dir: string, base: string, suffix: string): string {
  return join(dir, `.${base}.${process.pid}.${randomBytes(6).toString('hex')}${suffix}`);
}

function writeAll(fd: number, data: AtomicData): void {
  if (typeof data === 'string' || data instanceof Uint8Array) {
    writeChunk(fd, data);
    return;
  }
  for (const chunk of data) writeChunk(fd, chunk);
}

function writeChunk(fd: number, chunk: Uint8Array | string): void {
  const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
  let done = 0;
  // writeSync may write fewer bytes than asked (signals, pipes); loop until all are out.
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

/** Flushes a directory entry to disk; a no-op where the platform cannot open directories (Windows). */
export function fsyncDirectory(dir: string): void {
  let fd: number;
  try {
    fd = openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` into a new file `path` (which must not exist), fsyncs it and closes it. */
function writeNewFile(path: string, data: AtomicData, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeAll(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The permission bits of an existing file, so that replacing it keeps them; default otherwise. */
function modeOf(path: string): number {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return 0o666; // the umask applies
  }
}

/**
 * Replaces `path` with `data` atomically: on success the file holds exactly `data` and is on disk; on any
 * failure (including a throwing producer) the temporary file is removed and the old file, if any, is
 * untouched. A target that cannot be written (missing directory, no permission) is an InputError.
 */
export function writeFileAtomic(path: string, data: AtomicData): void {
  const target = resolve(path);
  const dir = dirname(target);
  const temp = tempName(dir, basename(target), '.tmp');
  try {
    writeNewFile(temp, data, modeOf(target));
    renameSync(temp, target);
  } catch (err) {
    rmSync(temp, { force: true });
    throw describeWriteError(err, path);
  }
  fsyncDirectory(dir);
}

/**
 * Fails early, before any expensive work, when `path` clearly cannot be written: its directory is
 * missing or not a directory, or a directory stands where the file would go. Permissions and space
 * are only known when writing.
 */
export function checkWritableTarget(path: string): void {
  const target = resolve(path);
  let dirStat;
  try {
    dirStat = statSync(dirname(target));
  } catch (err) {
    throw describeWriteError(err, path);
  }
  if (!dirStat.isDirectory()) throw new InputError(`cannot write ${path}: a path component is not a directory`);
  if (existsAsDirectory(target)) throw new InputError(`cannot write ${path}: is a directory`);
}

/**
 * Writes a directory of files (a checkpoint) so that `dir` either keeps its old content or holds all the
 * new files: they are written and flushed in a sibling temporary directory which then takes the place of
 * `dir`. Replacing an existing directory takes two renames (old aside, new in); a crash between them
 * leaves the old version as `.NAME.*.old` next to it, never a half-written `dir`. File names must be
 * plain names (no separators). Where every step must be a single rename, write each checkpoint into a
 * fresh directory and then point at it with `writeFileAtomic`.
 */
export function writeDirectoryAtomic(dir: string, files: Record<string, AtomicData> | Map<string, AtomicData>): void {
  const target = resolve(dir);
  const parent = dirname(target);
  const base = basename(target);
  const entries = files instanceof Map ? [...files] : Object.entries(files);
  for (const [name] of entries) {
    if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) {
      throw new InputError(`cannot write ${dir}: "${name}" is not a plain file name`);
    }
  }
  let staging: string;
  try {
    staging = mkdtempSync(join(parent, `.${base}.${process.pid}.`));
  } catch (err) {
    throw describeWriteError(err, dir);
  }
  let aside: string | null = null;
  try {
    for (const [name, data] of entries) writeNewFile(join(staging, name), data, 0o666);
    fsyncDirectory(staging);
    if (existsAsDirectory(target)) {
      aside = `${staging}.old`;
      renameSync(target, aside);
    }
    renameSync(staging, target);
  } catch (err) {
    // Put the old directory back if it was moved aside but the new one did not land.
    if (aside !== null && !existsAsDirectory(target)) {
      try { renameSync(aside, target); aside = null; } catch { /* keep it aside rather than lose it */ }
    }
    rmSync(staging, { recursive: true, force: true });
    throw describeWriteError(err, dir);
  }
  fsyncDirectory(parent);
  if (aside !== null) rmSync(aside, { recursive: true, force: true });
}

function existsAsDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
