/**
 * A whole training run as `longnet train` performs it: resolve and check every argument (before any
 * file is touched), build the dataset and the model (or restore them from a checkpoint), train with
 * periodic validation and saves, write metrics and the loss plot, and stop cleanly on SIGINT/SIGTERM.
 */
import { mkdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Device } from '../backend/backend.js';
import { getBackend } from '../backend/registry.js';
// registers the CUDA backend for --device cuda (its addon is loaded only when that device is used)
import '../backend/cuda/index.js';
import { check, InputError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import {
  buildTokenDataset, createTokenizer, DEFAULT_VAL_FRACTION, defaultCorpusDescription, defaultCorpusPath, type TokenDataset, type Tokenizer,
  type TokenizerName,
} from '../data/index.js';
import { LongNetDecoder, presetConfig, PRESETS, validateConfig, type AnyModelConfig, type ModelConfig } from '../model/index.js';
import {
  CONFIG_FILE, holdsCheckpoint, MODEL_FILE, OPTIMIZER_FILE, openCheckpointDir, readCheckpointConfig, readModelWeights,
  readTrainingState, saveCheckpoint, STATE_FILE, type CheckpointConfig, type TrainerState,
} from './checkpoint.js';
import { appendMetrics, readMetrics, truncateMetrics, type StepRecord } from './metrics.js';
import { checkAdamW } from './optimizer.js';
import { lossPlotSvg } from './plot.js';
import { formatDuration, ProgressLine } from './progress.js';
import { checkSchedule, defaultWarmup } from './schedule.js';
import { signalExitCode, yieldToEvents, type StopSignal } from './signals.js';
import { describeLayout, ParallelTrainer, resolveLayout, runOnLayout, type LayoutRequest, type RankSetup } from './parallel.js';
import { Trainer, type TrainerOptions } from './trainer.js';

export const METRICS_FILE = 'metrics.jsonl';
export const PLOT_FILE = 'loss.svg';

/** The arguments of a run, as saved in config.json ("training"). */
export interface TrainArgs {
  preset: string;
  /** Corpus path; null for the default corpus. */
  data: string | null;
  /** JSON-lines field or Parquet column holding the text (null: the source's default). */
  field: string | null;
  tokenizer: TokenizerName;
  /** The attention kind; 'sparse-fixed' only comes from RunOptions.model (the preset's sizes, another attention). */
  attention: 'dilated' | 'dense' | 'sparse-fixed';
  steps: number;
  seqLen: number;
  batch: number;
  accumulate: number;
  lr: number;
  endLr: number;
  warmup: number;
  clip: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  seed: number;
  evalEvery: number;
  evalSequences: number;
  saveEvery: number;
  valFraction: number;
  device: Device;
  /**
   * The activations' precision (`--activations`): 'bf16' (bfloat16 activations, float32 weights, gradients
   * and optimizer state; cuda only), 'fp32', or 'auto': bf16 on cuda with one rank a sequence, else fp32.
   */
  activations: ActivationsChoice;
}

export type ActivationsChoice = 'auto' | 'fp32' | 'bf16';
export const ACTIVATIONS_CHOICES: readonly ActivationsChoice[] = ['auto', 'fp32', 'bf16'];

/** Arguments as given on the command line: any may be missing (defaults apply, or the checkpoint's). */
export type GivenArgs = Partial<TrainArgs> & { warmup?: number };

/** Flag name of each argument, for messages. */
export const FLAG_OF: Record<keyof TrainArgs, string> = {
  preset: 'preset', data: 'data', field: 'field', tokenizer: 'tokenizer', attention: 'attention', steps: 'steps',
  seqLen: 'seq-len', batch: 'batch', accumulate: 'accumulate', lr: 'lr', endLr: 'min-lr', warmup: 'warmup', clip: 'clip',
  beta1: 'beta1', beta2: 'beta2', eps: 'eps', weightDecay: 'weight-decay', seed: 'seed', evalEvery: 'eval-every',
  evalSequences: 'eval-sequences', saveEvery: 'save-every', valFraction: 'val-fraction', device: 'device',
  activations: 'activations',
};

/** What a resumed run may change; everything else must match the checkpoint. */
const RESUME_MUTABLE = new Set<keyof TrainArgs>(['steps', 'evalEvery', 'evalSequences', 'saveEvery', 'device', 'activations']);

/**
 * Defaults of the tiny preset are tuned so that `longnet train` with no arguments finishes in about ten
 * minutes on two CPU cores with a clearly falling validation loss (about 5.7 to 1.7 nats a byte on
 * lodash.js). Small batches of 2 x 512 tokens and many steps learn more from the few hundred thousand
 * tokens a CPU gets through than large batches would. The learning rate is higher than the paper's 6e-4
 * (which the large presets keep): a 0.5M-parameter model over 200 steps learns faster at 3e-3 and
 * stays stable with the same warm-up and clipping.
 */
const PRESET_DEFAULTS: Record<string, Partial<TrainArgs>> = {
  tiny: { steps: 200, seqLen: 512, batch: 2, lr: 3e-3, evalSequences: 16 },
};

const GENERAL_DEFAULTS = {
  tokenizer: 'byte' as TokenizerName, attention: 'dilated' as const, steps: 1000, seqLen: 2048, batch: 8, accumulate: 1,
  lr: 6e-4, endLr: 0, clip: 2.0, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01, seed: 0, evalSequences: 32,
  valFraction: DEFAULT_VAL_FRACTION, device: 'cpu' as Device, activations: 'auto' as ActivationsChoice,
};

/** Default output directory for a preset. */
export function defaultOutDir(preset: string): string {
  return join('runs', preset);
}

/** Fills defaults and checks every value (errors name the flag). */
export function resolveArgs(given: GivenArgs): TrainArgs {
  const preset = given.preset ?? 'tiny';
  check(PRESETS.includes(preset), `--preset: unknown preset "${preset}" (known: ${PRESETS.join(', ')})`);
  const d = { ...GENERAL_DEFAULTS, ...PRESET_DEFAULTS[preset] };
  const steps = given.steps ?? d.steps;
  const evalEvery = given.evalEvery ?? Math.max(1, Math.round(steps / 10));
  const args: TrainArgs = {
    preset,
    // absolute, so that a run resumed from another directory reads the same corpus
    data: typeof given.data === 'string' ? resolve(given.data) : null,
    field: given.field ?? null,
    tokenizer: given.tokenizer ?? d.tokenizer,
    attention: given.attention ?? d.attention,
    steps,
    seqLen: given.seqLen ?? d.seqLen,
    batch: given.batch ?? d.batch,
    accumulate: given.accumulate ?? d.accumulate,
    lr: given.lr ?? d.lr,
    endLr: given.endLr ?? d.endLr,
    warmup: given.warmup ?? defaultWarmup(steps),
    clip: given.clip ?? d.clip,
    beta1: given.beta1 ?? d.beta1,
    beta2: given.beta2 ?? d.beta2,
    eps: given.eps ?? d.eps,
    weightDecay: given.weightDecay ?? d.weightDecay,
    seed: given.seed ?? d.seed,
    evalEvery,
    evalSequences: given.evalSequences ?? d.evalSequences,
    saveEvery: given.saveEvery ?? evalEvery,
    valFraction: given.valFraction ?? d.valFraction,
    device: given.device ?? d.device,
    activations: given.activations ?? d.activations,
  };
  checkArgs(args);
  return args;
}

function checkArgs(a: TrainArgs): void {
  const positive = (key: keyof TrainArgs): void => {
    const v = a[key];
    check(typeof v === 'number' && Number.isInteger(v) && v >= 1, `--${FLAG_OF[key]}: ${String(v)} is not a positive integer`);
  };
  const nonNegative = (key: keyof TrainArgs): void => {
    const v = a[key];
    check(typeof v === 'number' && Number.isInteger(v) && v >= 0, `--${FLAG_OF[key]}: ${String(v)} is not a non-negative integer`);
  };
  for (const key of ['steps', 'seqLen', 'batch', 'accumulate', 'evalEvery', 'evalSequences'] as const) positive(key);
  for (const key of ['saveEvery', 'warmup', 'seed'] as const) nonNegative(key);
  check(a.warmup <= a.steps, `--warmup ${a.warmup} is longer than the run (--steps ${a.steps})`);
  check(Number.isFinite(a.lr) && a.lr > 0, `--lr: ${a.lr} is not a positive number`);
  check(Number.isFinite(a.endLr) && a.endLr >= 0 && a.endLr <= a.lr, `--min-lr: ${a.endLr} must be between 0 and --lr (${a.lr})`);
  check(Number.isFinite(a.clip) && a.clip >= 0, `--clip: ${a.clip} must be >= 0 (0 turns clipping off)`);
  check(Number.isFinite(a.weightDecay) && a.weightDecay >= 0, `--weight-decay: ${a.weightDecay} must be >= 0`);
  check(Number.isFinite(a.valFraction) && a.valFraction > 0 && a.valFraction < 1, `--val-fraction: ${a.valFraction} must be in (0, 1)`);
  check(a.seed <= 0xffffffff, `--seed: ${a.seed} is larger than 2^32 - 1`);
  checkAdamW({ beta1: a.beta1, beta2: a.beta2, eps: a.eps, weightDecay: a.weightDecay });
  checkSchedule({ lr: a.lr, totalSteps: a.steps, warmup: a.warmup, endLr: a.endLr });
  check(ACTIVATIONS_CHOICES.includes(a.activations), `--activations: ${String(a.activations)} is not ${ACTIVATIONS_CHOICES.join(', ')}`);
  check(a.activations !== 'bf16' || a.device === 'cuda', '--activations bf16 needs --device cuda (the CPU computes in float32)');
}

/**
 * The activations' dtype of a run: bf16 on cuda measured 1.4-1.7x the float32 step's speed for the base preset
 * (bench/RESULTS.md), so 'auto' takes it there; sequence-parallel ranks run their layers in float32.
 */
export function resolveActivations(choice: ActivationsChoice, device: Device, seqParallel: number, attention: string): 'float32' | 'bfloat16' {
  const possible = device === 'cuda' && seqParallel === 1 && attention !== 'sparse-fixed';
  if (choice === 'bf16') {
    check(seqParallel === 1, '--activations bf16 is not available with --seq-parallel > 1 (sequence-parallel layers run in float32)');
    check(attention !== 'sparse-fixed', '--activations bf16 is not available with the sparse fixed attention (its kernels are float32)');
  }
  return choice === 'bf16' || (choice === 'auto' && possible) ? 'bfloat16' : 'float32';
}

/** The model a fresh run trains: the preset, sized to the tokenizer, with dense attention if asked. */
export function modelConfigFor(args: TrainArgs, tokenizer: Tokenizer): ModelConfig {
  check(args.attention !== 'sparse-fixed', 'sparse-fixed attention needs its stride and summary: pass the model config');
  const overrides: Partial<ModelConfig> = { vocabSize: tokenizer.vocabSize };
  if (args.attention === 'dense') overrides.attention = { kind: 'dense' };
  const config = presetConfig(args.preset, overrides);
  validateConfig(config, args.seqLen);
  return config;
}

function checkDevice(device: Device): void {
  try {
    getBackend(device);
  } catch (err) {
    throw new InputError(`--device ${device}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** Merges flags given on resume with the checkpoint's arguments; conflicting ones are an error. */
export function mergeResumeArgs(saved: TrainArgs, given: GivenArgs, dir: string): TrainArgs {
  // checkpoints from before --activations hold none: the default then
  const merged: TrainArgs = { ...saved, activations: saved.activations ?? 'auto' };
  for (const key of Object.keys(given) as (keyof TrainArgs)[]) {
    const value = given[key];
    if (value === undefined) continue;
    const old = saved[key];
    const same = key === 'data' && typeof value === 'string' && typeof old === 'string' ? resolve(value) === resolve(old) : value === old;
    if (RESUME_MUTABLE.has(key)) {
      (merged as unknown as Record<string, unknown>)[key] = value;
    } else if (!same) {
      throw new InputError(
        `--${FLAG_OF[key]} ${String(value)} differs from the checkpoint in ${dir} (${String(old ?? 'default')}); ` +
          'a resumed run keeps its data, model and optimizer settings (only --steps, --eval-every, --eval-sequences, --save-every, --device and --activations may change)',
      );
    }
  }
  // a run cut shorter than its warm-up warms up over the whole (shorter) run
  merged.warmup = Math.min(merged.warmup, merged.steps);
  checkArgs(merged);
  return merged;
}

export interface RunOptions {
  out: string;
  resume: boolean;
  /** Replace a checkpoint already in `out` with a fresh run. */
  overwrite: boolean;
  /** Directory for the token cache (large corpora). */
  tokenCache?: string;
  /** Lines for the user (stdout in the CLI). */
  log: (line: string) => void;
  /** Where the progress line goes. */
  progress: { write(s: string): unknown; isTTY?: boolean };
  /** Save and stop after this step, as if interrupted (to split a run over time-limited jobs). */
  stopAt?: number;
  /**
   * The model of a fresh run, instead of the preset's (vocabSize must be the tokenizer's); the
   * checkpoint records it, and the training arguments record its attention kind.
   */
  model?: AnyModelConfig;
  /**
   * Sequence x data parallel training: `ranks` in-process CPU ranks (`--ranks`; on CUDA the launcher's
   * WORLD_SIZE processes), split into groups of `seqParallel` (`--seq-parallel`) ranks that share each
   * sequence (src/train/parallel.ts).
   */
  parallel?: LayoutRequest;
}

export interface RunResult {
  args: TrainArgs;
  out: string;
  step: number;
  /** The signal that stopped training early, if any. */
  interrupted: StopSignal | null;
  firstValLoss: number | null;
  lastValLoss: number | null;
  seconds: number;
  /** The rank that returned this (0 on one device; in-process ranks return rank 0's result). */
  rank: number;
}

function loadDataset(args: TrainArgs, tokenizer: Tokenizer, tokenCache: string | undefined): Promise<TokenDataset> {
  const path = args.data ?? defaultCorpusPath();
  return buildTokenDataset(path, tokenizer, {
    valFraction: args.valFraction,
    ...(args.field !== null ? { field: args.field } : {}),
    ...(tokenCache !== undefined ? { cacheDir: tokenCache } : {}),
  });
}

function describeModel(config: AnyModelConfig, params: number): string {
  const a = config.attention;
  const attention = a.kind === 'dense'
    ? 'dense attention'
    : a.kind === 'sparse-fixed'
      ? `sparse fixed attention stride ${a.stride}, summary ${a.summary}`
      : `dilated attention w=${a.segmentLengths.join(',')} r=${a.dilationRates.join(',')}`;
  const count = params >= 1e6 ? `${(params / 1e6).toFixed(2)}M` : `${(params / 1e3).toFixed(0)}K`;
  return `${count} parameters, ${config.layers} layers x ${config.dModel}, ${config.heads} heads, FFN ${config.ffnDim}, ${attention}`;
}

function checkOutDir(out: string): void {
  try {
    const st = statSync(out);
    check(st.isDirectory(), `--out ${out}: exists and is not a directory`);
  } catch (err) {
    if (err instanceof InputError) throw err;
    // missing: created at the first write
  }
}

/** Runs training per `given` and `options`; see the file comment. */
export async function runTraining(given: GivenArgs, options: RunOptions): Promise<RunResult> {
  const { out, log } = options;
  checkOutDir(out);
  let args: TrainArgs;
  let tokenizer: Tokenizer;
  let modelConfig: AnyModelConfig;
  let resumed: { state: TrainerState; moments: Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }>; optimizerStep: number } | null = null;
  let saved: CheckpointConfig<TrainArgs> | null = null;
  if (options.resume) {
    openCheckpointDir(out);
    const read = readCheckpointConfig<TrainArgs>(out);
    saved = read.config;
    check(saved.training !== null && typeof saved.training === 'object', `${join(out, CONFIG_FILE)}: no training arguments to resume from`);
    args = mergeResumeArgs(saved.training, given, out);
    tokenizer = read.tokenizer;
    modelConfig = saved.model;
    validateConfig(modelConfig, args.seqLen);
  } else {
    args = resolveArgs(given);
    check(
      options.overwrite || !holdsCheckpoint(out),
      `${out} already holds a checkpoint; pass --resume to continue it or --overwrite to start over`,
    );
    tokenizer = createTokenizer(args.tokenizer);
    if (options.model !== undefined) {
      modelConfig = structuredClone(options.model);
      validateConfig(modelConfig, args.seqLen);
      check(modelConfig.vocabSize === tokenizer.vocabSize,
        `the model's vocabSize ${modelConfig.vocabSize} is not the ${tokenizer.name} tokenizer's ${tokenizer.vocabSize}`);
      args.attention = modelConfig.attention.kind;
    } else {
      modelConfig = modelConfigFor(args, tokenizer);
    }
  }
  checkDevice(args.device);
  const layout = resolveLayout(
    { device: args.device, seqLen: args.seqLen, batch: args.batch, attention: modelConfig.attention.kind }, options.parallel ?? {},
  );
  const activations = resolveActivations(args.activations, args.device, layout.seqParallel, modelConfig.attention.kind);

  const source = args.data === null ? `default corpus: ${defaultCorpusDescription()}` : args.data;
  // one rank's run (every rank of a parallel job runs it; rank 0 alone writes files and logs)
  const trainRank = async (dataset: TokenDataset, setup: RankSetup): Promise<RunResult> => {
    const writer = setup.rank === 0;
    const log = writer ? options.log : (): void => {};
    const model = new LongNetDecoder(modelConfig, { seed: args.seed, device: args.device, activations });
    const trainerOptions: TrainerOptions = {
      seqLen: args.seqLen,
      batch: args.batch,
      accumulate: args.accumulate,
      schedule: { lr: args.lr, totalSteps: args.steps, warmup: args.warmup, endLr: args.endLr },
      adamw: { beta1: args.beta1, beta2: args.beta2, eps: args.eps, weightDecay: args.weightDecay },
      clip: args.clip,
      seed: args.seed,
      device: args.device,
    };
    const trainer = setup.comms === null
      ? new Trainer(model, dataset, trainerOptions)
      : new ParallelTrainer(model, dataset, trainerOptions, setup.comms);
    // a validation split too short for one sequence is an error now (it throws), not after the first steps
    dataset.validationBatches(args.seqLen, { maxSequences: 1 });

    let elapsedBefore = 0;
    let bestValLoss: number | null = null;
    let lastValLoss: number | null = null;
    if (options.resume) {
      const { weights, saveId } = readModelWeights(out, trainer.params);
      resumed = readTrainingState(out, trainer.params, saveId);
      const { state } = resumed;
      check(
        state.dataContentHash === dataset.contentHash,
        `the data (${source}) is not what the checkpoint in ${out} was trained on (its contents changed); cannot resume exactly`,
      );
      check(state.step <= args.steps, `${out} is at step ${state.step}, past --steps ${args.steps}`);
      model.loadState(weights);
      trainer.optimizer.loadState(resumed.moments, resumed.optimizerStep, join(out, OPTIMIZER_FILE));
      trainer.progress = { step: state.step, data: { ...state.data }, tokens: state.tokens };
      elapsedBefore = state.elapsedSeconds;
      bestValLoss = state.bestValLoss;
      lastValLoss = state.lastValLoss;
    }

    log(`model: preset ${args.preset}, ${describeModel(modelConfig, model.parameterCount())}, tokenizer ${tokenizer.name}`);
    const summary = dataset.summary();
    log(`data: ${source}: ${summary.tokens.toLocaleString('en-US')} tokens (${summary.trainTokens.toLocaleString('en-US')} train, ${summary.valTokens.toLocaleString('en-US')} validation)`);
    const perStep = args.batch * args.accumulate * args.seqLen;
    log(
      `run: ${args.steps} steps x ${args.batch}${args.accumulate > 1 ? `x${args.accumulate}` : ''} sequences x ${args.seqLen} tokens ` +
        `(${perStep.toLocaleString('en-US')} tokens a step), AdamW lr ${args.lr} (warm-up ${args.warmup}, linear decay to ${args.endLr}), ` +
        `betas (${args.beta1}, ${args.beta2}), weight decay ${args.weightDecay}, clip ${args.clip}, seed ${args.seed}, ${args.device}, ` +
        `${activations === 'bfloat16' ? 'bf16' : 'fp32'} activations`,
    );
    if (layout.world > 1) log(describeLayout(layout, args.batch, args.seqLen));
    if (resumed) log(`resuming ${out} at step ${resumed.state.step} of ${args.steps}`);
    log(`output: ${out}`);

    const startStep = trainer.progress.step;
    const metricsPath = join(out, METRICS_FILE);
    const plotPath = join(out, PLOT_FILE);
    const checkpointConfig: CheckpointConfig<TrainArgs> = {
      format: 'longnet-checkpoint', version: 1, model: modelConfig, tokenizer: tokenizer.toJSON(), training: args,
    };

    if (startStep >= args.steps) {
      log(`nothing to do: ${out} has finished all ${args.steps} steps (pass a larger --steps to train further)`);
      return { args, out, step: startStep, interrupted: null, firstValLoss: null, lastValLoss, seconds: 0, rank: setup.rank };
    }

    // From here on files are written: every check that can fail on bad input has run.
    try {
      if (writer) mkdirSync(out, { recursive: true });
    } catch (err) {
      throw new InputError(`cannot create ${out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let history: StepRecord[];
    if (!writer) {
      history = [];
    } else if (resumed) {
      history = truncateMetrics(metricsPath, startStep);
    } else {
      writeFileAtomic(metricsPath, '');
      history = [];
    }
    const record = (r: StepRecord): void => {
      if (writer) appendMetrics(metricsPath, r);
      history.push(r);
    };

    const progress = new ProgressLine(writer ? options.progress : { write: () => true }, Math.max(1, Math.round(args.steps / 50)));
    const evaluate = async (): Promise<number> => trainer.evaluate(args.evalSequences);
    let firstValLoss: number | null = null;
    const started = performance.now();
    const elapsed = (): number => elapsedBefore + (performance.now() - started) / 1000;

    if (!resumed) {
      const v = await evaluate();
      firstValLoss = v;
      lastValLoss = v;
      bestValLoss = v;
      record({ step: 0, tokens: 0, elapsed: elapsed(), valLoss: v, valPerplexity: Math.exp(v) });
      progress.message(`step 0: validation loss ${v.toFixed(4)} (perplexity ${Math.exp(v).toFixed(2)})`);
    }

    let lastSaved = startStep;
    const save = (): void => {
      if (!writer) return;
      const p = trainer.progress;
      saveCheckpoint(out, {
        params: trainer.params,
        config: checkpointConfig,
        optimizer: trainer.optimizer,
        state: {
          step: p.step, data: p.data, dataContentHash: dataset.contentHash, tokens: p.tokens, elapsedSeconds: elapsed(),
          lastValLoss, bestValLoss, random: { dataSeed: args.seed },
        },
      });
      writeFileAtomic(plotPath, lossPlotSvg(history, { title: `LongNet ${args.preset}: loss on ${args.data === null ? 'lodash.js' : basename(args.data)}` }));
      lastSaved = p.step;
    };

    let stoppedEarly = false;
    // the ranks of a parallel job agree on a stop request, so that they all stop after the same step
    const agreeOnStop = async (signal: StopSignal | null): Promise<StopSignal | null> =>
      trainer instanceof ParallelTrainer ? trainer.agreeOnStop(signal) : signal;
    const interrupted = await setup.withStopSignals(async (flag) => {
      const loopStart = performance.now();
      let stopped: StopSignal | null = null;
      while (trainer.progress.step < args.steps) {
        await yieldToEvents();
        stopped = await agreeOnStop(flag.signal);
        if (stopped !== null) break;
        const r = await trainer.step();
        const entry: StepRecord = {
          step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, tokens: trainer.progress.tokens,
          tokensPerSecond: r.tokens / r.seconds, elapsed: elapsed(),
        };
        const done = r.step - startStep;
        const perStepSeconds = (performance.now() - loopStart) / 1000 / done;
        progress.update({
          step: r.step, total: args.steps, loss: r.loss, lr: r.lr, tokensPerSecond: r.tokens / r.seconds,
          etaSeconds: perStepSeconds * (args.steps - r.step),
        });
        if (r.step % args.evalEvery === 0 || r.step === args.steps) {
          const v = await evaluate();
          lastValLoss = v;
          bestValLoss = bestValLoss === null ? v : Math.min(bestValLoss, v);
          entry.valLoss = v;
          entry.valPerplexity = Math.exp(v);
          progress.message(`step ${r.step}: validation loss ${v.toFixed(4)} (perplexity ${Math.exp(v).toFixed(2)})`);
        }
        record(entry);
        const stopHere = options.stopAt !== undefined && r.step >= options.stopAt && r.step < args.steps;
        if ((args.saveEvery > 0 && r.step % args.saveEvery === 0) || r.step === args.steps || stopHere) save();
        if (stopHere) {
          progress.finish();
          log(`stopped at step ${r.step} as asked (--stop-at): checkpoint saved in ${out}; continue with --resume`);
          stoppedEarly = true;
          break;
        }
      }
      progress.finish();
      // a signal that came during the last step
      stopped ??= await agreeOnStop(flag.signal);
      if (stopped !== null) {
        if (trainer.progress.step > lastSaved) save();
        log(`stopped by ${stopped} at step ${trainer.progress.step}: checkpoint saved in ${out}; continue with --resume`);
      }
      return stopped;
    });

    const seconds = (performance.now() - started) / 1000;
    if (interrupted === null && !stoppedEarly) {
      const first = firstValLoss ?? history.find((h) => h.valLoss !== undefined)?.valLoss ?? null;
      const change = first !== null && lastValLoss !== null
        ? `; validation loss ${first.toFixed(3)} -> ${lastValLoss.toFixed(3)} (perplexity ${Math.exp(first).toFixed(2)} -> ${Math.exp(lastValLoss).toFixed(2)})`
        : '';
      log(`done: ${args.steps} steps in ${formatDuration(seconds)}${change}`);
      log(`checkpoint: ${out}/ (${[MODEL_FILE, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE, METRICS_FILE, PLOT_FILE].join(', ')})`);
    }
    return { args, out, step: trainer.progress.step, interrupted, firstValLoss, lastValLoss, seconds, rank: setup.rank };
  };
  return runOnLayout(layout, () => loadDataset(args, tokenizer, options.tokenCache), trainRank);
}

export { signalExitCode, readMetrics };
