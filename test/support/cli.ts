// Runs the `longnet` command as a user would (a child process through tsx), for the CLI tests.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
export const MAIN = join(ROOT, 'src/cli/main.ts');

/** A small corpus of code the CLI tests train on: 300 one-line functions, written to `path`. */
export function writeCodeCorpus(path: string): void {
  const lines: string[] = [];
  for (let i = 0; i < 300; i++) lines.push(`function add${i}(a, b) { return a + b + ${i}; } // sum plus ${i}`);
  writeFileSync(path, lines.join('\n'));
}

export interface CliResult { code: number; stdout: string; stderr: string }

/** `longnet ...args` with the environment changed by `env` (an undefined value removes the variable). */
export function runCli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete merged[name];
  return new Promise((done) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, env: merged, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      done({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}
