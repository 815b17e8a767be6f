/**
 * `longnet train`: trains a LongNet language model and writes a checkpoint directory. With no flags it
 * trains the tiny preset on the default corpus (lodash.js from the installed dependency) in about ten
 * minutes on two CPU cores.
 */
import type { Device } from '../backend/backend.js';
import { InputError } from '../errors.js';
import { DEFAULT_VAL_FRACTION, TOKENIZER_NAMES, type TokenizerName } from '../data/index.js';
import { PRESETS } from '../model/index.js';
import { ACTIVATIONS_CHOICES, defaultOutDir, runTraining, signalExitCode, type ActivationsChoice, type GivenArgs } from '../train/run.js';
import type { Args, Command } from './command.js';
import { parseChoice, parseFiniteNumber } from './values.js';

/** A whole number >= `min`, written in decimal. */
export function parseInteger(flag: string, text: string, min: number): number {
  const t = text.trim();
  const n = Number(t);
  if (!/^[+-]?\d+$/.test(t) || !Number.isSafeInteger(n) || n < min) {
    const what = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`;
    throw new InputError(`--${flag}: "${text}" is not ${what}`);
  }
  return n;
}

/** Shell quoting for a path or text printed as part of a command to copy. */
export function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

function given(args: Args): GivenArgs {
  const g: GivenArgs = {};
  const int = (flag: string, min: number): number | undefined => {
    const v = args.string(flag);
    return v === undefined ? undefined : parseInteger(flag, v, min);
  };
  const num = (flag: string): number | undefined => {
    const v = args.string(flag);
    return v === undefined ? undefined : parseFiniteNumber(flag, v);
  };
  const set = <K extends keyof GivenArgs>(key: K, value: GivenArgs[K] | undefined): void => {
    if (value !== undefined) g[key] = value;
  };
  const preset = args.string('preset');
  if (preset !== undefined) set('preset', parseChoice('preset', preset, PRESETS));
  set('data', args.string('data'));
  const field = args.string('field');
  const column = args.string('column');
  if (field !== undefined && column !== undefined && field !== column) {
    throw new InputError('--field and --column name the same setting (the text of a JSONL record or a Parquet row); give one');
  }
  set('field', field ?? column);
  const tokenizer = args.string('tokenizer');
  if (tokenizer !== undefined) set('tokenizer', parseChoice<TokenizerName>('tokenizer', tokenizer, TOKENIZER_NAMES));
  const attention = args.string('attention');
  if (attention !== undefined) set('attention', parseChoice('attention', attention, ['dilated', 'dense'] as const));
  set('steps', int('steps', 1));
  set('seqLen', int('seq-len', 1));
  set('batch', int('batch', 1));
  set('accumulate', int('accumulate', 1));
  set('lr', num('lr'));
  set('endLr', num('min-lr'));
  set('warmup', int('warmup', 0));
  set('clip', num('clip'));
  set('weightDecay', num('weight-decay'));
  set('seed', int('seed', 0));
  set('evalEvery', int('eval-every', 1));
  set('evalSequences', int('eval-sequences', 1));
  set('saveEvery', int('save-every', 0));
  set('valFraction', num('val-fraction'));
  const device = args.string('device');
  if (device !== undefined) set('device', parseChoice<Device>('device', device, ['cpu', 'cuda']));
  const activations = args.string('activations');
  if (activations !== undefined) set('activations', parseChoice<ActivationsChoice>('activations', activations, ACTIVATIONS_CHOICES));
  return g;
}

export const command: Command = {
  name: 'train',
  summary: 'train a LongNet language model (no flags: the tiny model on lodash.js, about 10 minutes on 2 cores)',
  flags: {
    preset: { type: 'string', value: 'NAME', description: `model size: ${PRESETS.join(', ')}`, defaultText: 'tiny' },
    data: { type: 'string', value: 'PATH', description: 'text file, directory, JSONL (.jsonl, .jsonl.gz) or Parquet file', defaultText: 'lodash.js of the lodash dependency' },
    out: { type: 'string', value: 'DIR', description: 'checkpoint directory', defaultText: 'runs/PRESET' },
    steps: { type: 'string', value: 'N', description: 'optimizer updates', defaultText: 'tiny 200, others 1000' },
    'seq-len': { type: 'string', value: 'L', description: 'tokens per training sequence', defaultText: 'tiny 512, others 2048' },
    batch: { type: 'string', value: 'B', description: 'sequences per micro-batch', defaultText: 'tiny 2, others 8' },
    accumulate: { type: 'string', value: 'K', description: 'micro-batches per update (gradient accumulation)', defaultText: '1' },
    resume: { type: 'boolean', description: 'continue the checkpoint in --out exactly where it stopped' },
    overwrite: { type: 'boolean', description: 'start over in an --out that already holds a checkpoint' },
    device: { type: 'string', value: 'cpu|cuda', description: 'where to train', defaultText: 'cpu' },
    activations: {
      type: 'string', value: 'auto|bf16|fp32',
      description: 'activation precision: bf16 (cuda: bfloat16 activations, float32 weights, gradients and AdamW state) or fp32',
      defaultText: 'auto: bf16 on cuda with --seq-parallel 1, else fp32',
    },
    seed: { type: 'string', value: 'S', description: 'seed of the initialization and the data order', defaultText: '0' },
    lr: { type: 'string', value: 'X', description: 'peak learning rate', defaultText: "tiny 3e-3, others the paper's 6e-4" },
    'min-lr': { type: 'string', value: 'X', description: 'learning rate at the last step', defaultText: '0' },
    warmup: { type: 'string', value: 'N', description: 'warm-up steps', defaultText: "the paper's 750, at most a tenth of --steps" },
    clip: { type: 'string', value: 'X', description: 'global gradient-norm limit, 0 for none', defaultText: '2.0' },
    'weight-decay': { type: 'string', value: 'X', description: 'AdamW weight decay (not applied to biases and norms)', defaultText: '0.01' },
    'eval-every': { type: 'string', value: 'N', description: 'steps between validation runs', defaultText: 'a tenth of --steps' },
    'eval-sequences': { type: 'string', value: 'N', description: 'validation sequences per run', defaultText: 'tiny 16, others 32' },
    'save-every': { type: 'string', value: 'N', description: 'steps between checkpoints, 0 for only at the end', defaultText: '--eval-every' },
    'val-fraction': { type: 'string', value: 'X', description: 'share of the corpus held out for validation', defaultText: String(DEFAULT_VAL_FRACTION) },
    tokenizer: { type: 'string', value: 'NAME', description: `${TOKENIZER_NAMES.join(' or ')}`, defaultText: 'byte' },
    attention: { type: 'string', value: 'KIND', description: 'dilated (LongNet) or dense (the vanilla Transformer baseline)', defaultText: 'dilated' },
    field: { type: 'string', value: 'F', description: 'JSONL field holding the text', defaultText: 'text, else content' },
    column: { type: 'string', value: 'C', description: 'Parquet column holding the text', defaultText: 'content, else text' },
    'stop-at': { type: 'string', value: 'STEP', description: 'save and stop after this step (continue later with --resume)' },
    'token-cache': { type: 'string', value: 'DIR', description: 'keep the tokenized corpus in files here (corpora larger than memory; reused by later runs)' },
    'seq-parallel': { type: 'string', value: 'P', description: 'ranks that share each sequence (N/P tokens each); the other factor of the ranks is data parallel', defaultText: '1' },
    ranks: { type: 'string', value: 'W', description: 'CPU: run W ranks in this process (on CUDA: one process per GPU under longnet launch)', defaultText: '1' },
  },
  details: [
    'Writes into --out: model.safetensors, config.json (model, tokenizer, training arguments),',
    'optimizer.safetensors, trainer-state.json (as one unit: an interrupted save keeps the previous',
    'checkpoint), metrics.jsonl (one line per step) and loss.svg (training and validation loss).',
    'SIGINT or SIGTERM saves a checkpoint before exiting; --resume continues with exactly the losses an',
    'uninterrupted run would have had. AdamW betas (0.9, 0.98), eps 1e-8, linear warm-up then linear decay.',
    'Parallel: the W ranks (--ranks W on the CPU; on GPUs, longnet launch --nproc-per-node W -- longnet train',
    '--device cuda ...) form W/P data-parallel replicas of --seq-parallel P ranks each; --batch is the global batch',
    '(divisible by W/P), and the run trains as one device would on it. A checkpoint resumes under any layout.',
  ].join('\n'),
  async run(args: Args) {
    const g = given(args);
    const out = args.string('out') ?? defaultOutDir(g.preset ?? 'tiny');
    const resume = args.boolean('resume');
    if (resume && args.boolean('overwrite')) throw new InputError('--resume and --overwrite contradict each other; give one');
    const tokenCache = args.string('token-cache');
    const stopAtText = args.string('stop-at');
    const stopAt = stopAtText === undefined ? undefined : parseInteger('stop-at', stopAtText, 1);
    const seqParallelText = args.string('seq-parallel');
    const ranksText = args.string('ranks');
    const parallel = {
      ...(seqParallelText !== undefined ? { seqParallel: parseInteger('seq-parallel', seqParallelText, 1) } : {}),
      ...(ranksText !== undefined ? { ranks: parseInteger('ranks', ranksText, 1) } : {}),
    };
    // under the launcher only rank 0 speaks
    const speaks = (process.env['RANK'] ?? '0') === '0';
    if (g.data === undefined && !resume && speaks) process.stdout.write('no --data given: training on the default corpus (lodash.js from the lodash package)\n');
    const result = await runTraining(g, {
      out,
      resume,
      overwrite: args.boolean('overwrite'),
      ...(tokenCache !== undefined ? { tokenCache } : {}),
      ...(stopAt !== undefined ? { stopAt } : {}),
      parallel,
      log: (line) => process.stdout.write(`${line}\n`),
      progress: process.stdout,
    });
    if (result.interrupted !== null) process.exit(signalExitCode(result.interrupted));
    if (result.step >= result.args.steps && result.rank === 0) {
      const prompt = result.args.data === null ? 'function debounce(' : '';
      process.stdout.write(
        `generate from it:\n  npx longnet generate --checkpoint ${shellQuote(out)} --prompt ${shellQuote(prompt)} --max-new-tokens 200\n`,
      );
    }
  },
};
