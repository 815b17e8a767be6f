/**
 * `longnet eval`: perplexity of a checkpoint at one or more sequence lengths (as the paper's Table 2
 * reports 2K / 8K / 32K), on the held-out split of a corpus or on a whole one.
 */
import type { Device } from '../backend/backend.js';
import { check, InputError } from '../errors.js';
import { buildTokenDataset, defaultCorpusPath } from '../data/index.js';
import { validateConfig } from '../model/index.js';
import { loadModel } from '../train/load-model.js';
import { evaluateLoss } from '../train/trainer.js';
import type { Args, Command } from './command.js';
import { parseChoice, parsePositiveIntList } from './values.js';
import { parseInteger } from './train.js';

/**
 * Every value of a flag given several times on this process's command line. The flag parser keeps
 * only the last of repeated flags, and `--seq-len 2048 --seq-len 8192` must mean both lengths.
 */
function repeatedFlag(name: string, last: string): string[] {
  const argv = process.argv;
  const found: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === `--${name}` && i + 1 < argv.length) found.push(argv[++i]!);
    else if (a.startsWith(`--${name}=`)) found.push(a.slice(name.length + 3));
  }
  // only trust the scan when it agrees with the parser (the command may have been run from code)
  return found.length > 1 && found[found.length - 1] === last ? found : [last];
}

/** --seq-len values: comma lists and repeated flags. */
function seqLens(args: Args, fallback: number | undefined): number[] {
  const raw = args.values['seq-len'] as unknown;
  const texts = Array.isArray(raw) ? (raw as string[]) : typeof raw === 'string' ? repeatedFlag('seq-len', raw) : [];
  if (texts.length === 0) {
    if (fallback === undefined) throw new InputError('missing --seq-len (the checkpoint records no training length)');
    return [fallback];
  }
  return texts.flatMap((t) => parsePositiveIntList('seq-len', t));
}

export const command: Command = {
  name: 'eval',
  summary: 'perplexity of a checkpoint on held-out data at one or more sequence lengths',
  flags: {
    checkpoint: { type: 'string', value: 'DIR', description: 'checkpoint directory (from longnet train)', required: true },
    data: { type: 'string', value: 'PATH', description: 'corpus (file, directory, JSONL, Parquet)', defaultText: 'the data the checkpoint was trained on' },
    'seq-len': { type: 'string', value: 'L[,L2...]', description: 'evaluation lengths, e.g. 2048,8192,32768 (or the flag repeated)', defaultText: 'the training length' },
    split: { type: 'string', value: 'validation|all', description: 'the held-out split of --data (as in training) or all of it', defaultText: 'validation' },
    'max-sequences': { type: 'string', value: 'N', description: 'evaluate at most N sequences per length' },
    batch: { type: 'string', value: 'B', description: 'sequences per forward pass', defaultText: '1' },
    field: { type: 'string', value: 'F', description: 'JSONL field or Parquet column holding the text' },
    device: { type: 'string', value: 'cpu|cuda', description: 'where to run', defaultText: 'cpu' },
  },
  details: 'Prints one line per length, then a last line "perplexity: X" for the last length given.\n' +
    'Perplexity is exp(mean cross-entropy per token) over every token of the evaluated sequences.',
  async run(args: Args) {
    const dir = args.requireString('checkpoint');
    const device = parseChoice<Device>('device', args.string('device') ?? 'cpu', ['cpu', 'cuda']);
    const split = parseChoice('split', args.string('split') ?? 'validation', ['validation', 'all'] as const);
    const batch = parseInteger('batch', args.string('batch') ?? '1', 1);
    const maxText = args.string('max-sequences');
    const maxSequences = maxText === undefined ? undefined : parseInteger('max-sequences', maxText, 1);
    const { model, tokenizer, config } = loadModel(dir, device);
    const training = config.training;
    const lengths = seqLens(args, training?.seqLen);
    for (const n of lengths) {
      try {
        validateConfig(config.model, n);
      } catch (err) {
        if (err instanceof InputError) throw new InputError(`--seq-len ${n}: ${err.message}`);
        throw err;
      }
    }
    const dataPath = args.string('data') ?? training?.data ?? defaultCorpusPath();
    const field = args.string('field') ?? training?.field ?? undefined;
    const valFraction = split === 'all' ? 1 : training?.valFraction ?? 0.05;
    const dataset = await buildTokenDataset(dataPath, tokenizer, { valFraction, ...(field ? { field } : {}) });
    try {
      const what = split === 'all' ? 'all' : `the validation split (${valFraction})`;
      process.stdout.write(`checkpoint ${dir}: ${config.model.layers} layers x ${config.model.dModel}, ${config.model.attention.kind} attention, ${tokenizer.name} tokenizer\n`);
      process.stdout.write(`data: ${what} of ${dataPath}: ${dataset.validation.length.toLocaleString('en-US')} tokens\n`);
      process.stdout.write(`${'seq-len'.padStart(8)} ${'sequences'.padStart(10)} ${'tokens'.padStart(10)} ${'loss'.padStart(8)} ${'perplexity'.padStart(11)}\n`);
      let last = NaN;
      for (const n of lengths) {
        const available = dataset.validationSequenceCount(n);
        check(available > 0, () =>
          `--seq-len ${n}: ${what} of ${dataPath} holds ${dataset.validation.length} tokens, fewer than one sequence of ${n}+1` +
          (split === 'validation' ? ' (try --split all, or a shorter length)' : ''));
        const sequences = Math.min(available, maxSequences ?? available);
        const loss = evaluateLoss(model, dataset, n, { batchSize: batch, maxSequences: sequences, device });
        last = Math.exp(loss);
        process.stdout.write(
          `${String(n).padStart(8)} ${String(sequences).padStart(10)} ${String(sequences * n).padStart(10)} ${loss.toFixed(4).padStart(8)} ${last.toFixed(4).padStart(11)}\n`,
        );
      }
      process.stdout.write(`perplexity: ${last.toFixed(4)}\n`);
    } finally {
      dataset.close();
      model.dispose();
    }
  },
};
