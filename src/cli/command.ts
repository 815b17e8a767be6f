/**
 * What a subcommand declares (its flags, with help text) and how its arguments are parsed. Parsing is
 * `node:util` parseArgs in strict mode; its errors are rephrased as InputErrors naming the flag.
 */
import { parseArgs } from 'node:util';
import { InputError } from '../errors.js';

export interface Flag {
  type: 'string' | 'boolean';
  /** One-letter alias. */
  short?: string;
  /** Placeholder for the value in help, e.g. FILE or LIST. */
  value?: string;
  description: string;
  required?: boolean;
  /** Shown in help; commands apply their own defaults. */
  defaultText?: string;
}

export interface Command {
  name: string;
  /** One line, used by `longnet --help`. */
  summary: string;
  /** Extra paragraphs printed after the flags in `longnet <cmd> --help`. */
  details?: string;
  flags: Record<string, Flag>;
  /** Names of positional arguments in help; none allowed when absent. */
  positionals?: string;
  run(args: Args): void | Promise<void>;
}

/** Parsed arguments with accessors that report problems by flag name. */
export class Args {
  constructor(
    readonly values: Readonly<Record<string, string | boolean | undefined>>,
    readonly positionals: readonly string[],
  ) {}

  string(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  requireString(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new InputError(`missing --${name}`);
    return v;
  }

  boolean(name: string): boolean {
    return this.values[name] === true;
  }
}

/** Rewrites a parseArgs error as an InputError with a short message; other errors pass through. */
function rephrase(err: unknown, command: string): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS')) return err;
  const message = (err as Error).message;
  const option = /'(-[^' ]+)/.exec(message)?.[1];
  const hint = `(see longnet ${command} --help)`;
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new InputError(`unknown flag ${option ?? message} ${hint}`);
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const arg = /'([^']*)'/.exec(message)?.[1];
      return new InputError(`unexpected argument ${arg !== undefined ? `"${arg}"` : ''} ${hint}`.replace('  ', ' '));
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (option !== undefined && /does not take an argument/.test(message)) {
        return new InputError(`${option} takes no value`);
      }
      if (option !== undefined) return new InputError(`${option} needs a value`);
      return new InputError(message.split('\n')[0]!);
    default:
      return new InputError(message.split('\n')[0]!);
  }
}

/** Parses `argv` against the command's flags (plus --help). Returns null when help was asked for. */
export function parseCommandArgs(command: Command, argv: readonly string[]): Args | null {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, f] of Object.entries(command.flags)) {
    options[name] = f.short !== undefined ? { type: f.type, short: f.short } : { type: f.type };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv], options, strict: true, allowPositionals: command.positionals !== undefined,
    });
  } catch (err) {
    throw rephrase(err, command.name);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values['help'] === true) return null;
  for (const [name, f] of Object.entries(command.flags)) {
    if (f.required === true && values[name] === undefined) {
      throw new InputError(`missing --${name}${f.value !== undefined ? ` ${f.value}` : ''} (see longnet ${command.name} --help)`);
    }
  }
  return new Args(values, parsed.positionals);
}

/** The text of `longnet <cmd> --help`. */
export function commandHelp(command: Command): string {
  const lines = [`Usage: longnet ${command.name} [flags]${command.positionals !== undefined ? ` ${command.positionals}` : ''}`, '',
    command.summary, '', 'Flags:'];
  const entries = Object.entries(command.flags).map(([name, f]) => {
    const short = f.short !== undefined ? `-${f.short}, ` : '    ';
    const left = `${short}--${name}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}`;
    const notes = [f.required === true ? 'required' : '', f.defaultText !== undefined ? `default ${f.defaultText}` : '']
      .filter((s) => s !== '');
    return [left, f.description + (notes.length > 0 ? ` (${notes.join('; ')})` : '')] as const;
  });
  entries.push(['-h, --help', 'show this help']);
  const width = Math.max(...entries.map(([l]) => l.length));
  for (const [left, right] of entries) lines.push(`  ${left.padEnd(width)}  ${right}`);
  if (command.details !== undefined) lines.push('', command.details.trimEnd());
  return lines.join('\n') + '\n';
}
