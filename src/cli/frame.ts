/**
 * Dispatch and error policy of the `longnet` command line. Input errors (bad flags, bad files, bad
 * tensors) print one line and exit 2; anything else is a bug: one line, exit 1, the stack only with
 * LONGNET_DEBUG=1. Commands write their outputs atomically, so an error never leaves a partial file.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../errors.js';
import { commandHelp, parseCommandArgs, type Command } from './command.js';

/** A command as listed in main.ts: its one-line summary, and its module loaded only when used. */
export interface CommandEntry {
  summary: string;
  load: () => Promise<{ command: Command }>;
}

export type CommandTable = Record<string, CommandEntry>;

/** The version of the package this file belongs to (found by walking up to its package.json). */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'longnet' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here: keep walking up
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

function topHelp(table: CommandTable): string {
  const names = Object.keys(table);
  const width = Math.max(...names.map((n) => n.length));
  return [
    'Usage: longnet <command> [flags]',
    '',
    'LongNet dilated attention: train and run long-context language models.',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}  ${table[n]!.summary}`),
    '',
    'Flags:',
    '  -h, --help     show this help (longnet <command> --help for a command)',
    '      --version  print the version',
    '',
    'Exit status: 0 on success, 2 on bad input (one line on stderr), 1 on an internal error',
    '(set LONGNET_DEBUG=1 for its stack).',
  ].join('\n') + '\n';
}

/** One line: the message with its line breaks folded. */
function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

function report(err: unknown, scope: string): number {
  const debug = process.env['LONGNET_DEBUG'] === '1';
  const isInput = err instanceof InputError;
  const message = err instanceof Error ? err.message : String(err);
  const text = isInput ? oneLine(message) : `internal error: ${oneLine(message)}${debug ? '' : ' (LONGNET_DEBUG=1 shows the stack)'}`;
  process.stderr.write(`${scope}: ${text}\n`);
  if (debug && err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`);
  return isInput ? 2 : 1;
}

async function dispatch(argv: readonly string[], table: CommandTable): Promise<number> {
  const [first, ...rest] = argv;
  const names = Object.keys(table).join(', ');
  if (first === undefined) throw new InputError(`missing command (one of ${names}; see longnet --help)`);
  if (first === '--help' || first === '-h') {
    process.stdout.write(topHelp(table));
    return 0;
  }
  if (first === '--version') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (first === 'help') {
    if (rest[0] === undefined) {
      process.stdout.write(topHelp(table));
      return 0;
    }
    return dispatch([rest[0], '--help'], table);
  }
  if (first.startsWith('-')) throw new InputError(`unknown flag ${first} (see longnet --help)`);
  const entry = Object.hasOwn(table, first) ? table[first] : undefined;
  if (entry === undefined) throw new InputError(`unknown command "${first}" (one of ${names})`);
  const scope = `longnet ${first}`;
  try {
    const { command } = await entry.load();
    const args = parseCommandArgs(command, rest);
    if (args === null) {
      process.stdout.write(commandHelp(command));
      return 0;
    }
    await command.run(args);
    return 0;
  } catch (err) {
    return report(err, scope);
  }
}

/**
 * Runs the command line and sets the exit status. A signal arriving during a synchronous write is
 * handled after the write completes (JS signal handlers wait for the current task), so temporary
 * files are always cleaned up or renamed before the process exits.
 */
export async function runCli(argv: readonly string[], table: CommandTable): Promise<void> {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      process.stderr.write(`longnet: interrupted (${signal})\n`);
      process.exit(code);
    });
  }
  let code: number;
  try {
    code = await dispatch(argv, table);
  } catch (err) {
    code = report(err, 'longnet');
  }
  process.exitCode = code;
}
