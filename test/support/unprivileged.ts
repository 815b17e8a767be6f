import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The user 'nobody': permissions bind it, while root ignores them. */
const NOBODY = 65534;
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export const isRoot = process.getuid?.() === 0;

/**
 * Runs a TypeScript module body (ESM, imports relative to the repository root) in a child process as
 * 'nobody' and returns what it printed, so that permission errors can be tested when the tests run as root.
 */
export function runUnprivileged(source: string): { status: number | null; stdout: string; stderr: string } {
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', source], {
    cwd: repoRoot, uid: NOBODY, gid: NOBODY, encoding: 'utf8', timeout: 60_000,
    env: { ...process.env, HOME: '/tmp' },
  });
  return { status: child.status, stdout: child.stdout, stderr: child.stderr };
}
