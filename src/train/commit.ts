/**
 * Replacing a set of files in a directory as one unit, so that an interrupted save (crash, kill, full
 * disk) never leaves a mix of old and new files nor a damaged old set:
 *
 *  1. every new file is written and flushed in `DIR/.staging-*` (a crash here leaves the old files
 *     untouched; the staging directory is removed by the next save or load);
 *  2. the staging directory is renamed to `DIR/.commit`: one atomic rename, the commit point;
 *  3. each file is renamed from `DIR/.commit` over its old version, then `.commit` is removed.
 *
 * A crash during step 3 leaves `.commit` holding the files not yet moved: `recoverCommit` (run before
 * every load and save) finishes the move, so readers always see the complete old set or the complete
 * new one. Files of the directory that are not part of the set (metrics, plots) are left alone.
 */
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { fsyncDirectory, writeFileAtomic, type AtomicData } from '../io/atomic.js';

const COMMIT = '.commit';
const STAGING_PREFIX = '.staging-';

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function describe(err: unknown, dir: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const reasons: Record<string, string> = {
    EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'read-only file system',
    ENOSPC: 'no space left on device', ENOTDIR: 'not a directory', EEXIST: 'exists and is not a directory',
  };
  if (code !== undefined && code in reasons) return new InputError(`cannot write checkpoint ${dir}: ${reasons[code]}`);
  return err;
}

/**
 * Finishes a save that was interrupted after its commit point and removes staging directories of
 * saves interrupted before it. Returns whether anything was done.
 */
export function recoverCommit(dir: string): boolean {
  if (!isDirectory(dir)) return false;
  let changed = false;
  try {
    const commit = join(dir, COMMIT);
    if (isDirectory(commit)) {
      for (const name of readdirSync(commit)) renameSync(join(commit, name), join(dir, name));
      fsyncDirectory(dir);
      rmSync(commit, { recursive: true, force: true });
      changed = true;
    }
    for (const name of readdirSync(dir)) {
      if (name.startsWith(STAGING_PREFIX)) {
        rmSync(join(dir, name), { recursive: true, force: true });
        changed = true;
      }
    }
  } catch (err) {
    throw describe(err, dir);
  }
  return changed;
}

/** Whether `dir` holds the remains of an interrupted save (what `recoverCommit` would clean up). */
export function hasPendingCommit(dir: string): boolean {
  try {
    return readdirSync(dir).some((n) => n === COMMIT || n.startsWith(STAGING_PREFIX));
  } catch {
    return false;
  }
}

/** A file's bytes, or a function that writes the file at the path it is given (streaming large ones). */
export type FileContent = AtomicData | ((path: string) => void);

/**
 * Writes `files` (plain names) into `dir` as one unit, per the protocol above. `beforeCommit`, for
 * tests, runs after the staging files are complete and before the commit rename.
 */
export function commitFiles(dir: string, files: ReadonlyMap<string, FileContent>, hooks: { beforeCommit?: () => void; afterCommit?: () => void } = {}): void {
  for (const name of files.keys()) {
    if (name === '' || name.startsWith('.') || /[/\\\0]/.test(name)) throw new Error(`internal: bad checkpoint file name "${name}"`);
  }
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw describe(err, dir);
  }
  recoverCommit(dir);
  let staging: string;
  try {
    staging = mkdtempSync(join(dir, STAGING_PREFIX));
  } catch (err) {
    throw describe(err, dir);
  }
  try {
    for (const [name, data] of files) {
      if (typeof data === 'function') data(join(staging, name));
      else writeFileAtomic(join(staging, name), data);
    }
    fsyncDirectory(staging);
    hooks.beforeCommit?.();
    renameSync(staging, join(dir, COMMIT));
    fsyncDirectory(dir);
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw describe(err, dir);
  }
  hooks.afterCommit?.();
  recoverCommit(dir);
}
