/**
 * Training throughput and model FLOP utilization (MFU) of a preset on one GPU: whole optimizer steps
 * (forward, backward, clipping, AdamW) through the Trainer, B = 1, the paper's schedule, on a real code
 * corpus; then one step with every backend call timed on the device, for a profile of where the time goes.
 *
 *   node --import tsx bench/gpu-train.ts [--preset base] [--lengths 8192,32768] [--tokenizers byte,cl100k_base]
 *        [--precisions tf32[,bf16,fp32,bf16-act]] [--steps 30] [--data PATH] [--append] [--section PATH]
 *
 * A precision is that of float32 products (LONGNET_MATMUL_PRECISION) with float32 activations, or
 * `bf16-act`: bfloat16 activations (the model's `activations`), whose products are bf16 in any case.
 *
 * Each configuration runs in a child process of its own (its peak memory is its own; an out-of-memory
 * is a row, not the end). MFU counts, per token, 6 x the weights of every matrix product (the output
 * head included, the embedding lookup not) plus 3 x the causal forward attention FLOPs of the schedule
 * (the count of docs/ATTENTION.md; forward + backward = 3 x forward), over the card's dense peak: 989 TFLOP/s
 * (H100 SXM / H200, bf16) and 494 TFLOP/s (TF32). With --append, a dated section goes to bench/RESULTS.md;
 * with --section PATH, that section is written to PATH alone (a GPU machine whose files do not come back).
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Backend } from '../src/backend/backend.js';
import { cudaAvailable, type CudaBackend } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { buildTokenDataset, createTokenizer, defaultCorpusPath } from '../src/data/index.js';
import {
  attentionFlops, LongNetDecoder, matmulParameterCount, modelFlopsPerToken, paddedVocabSize, presetConfig, type ModelConfig,
} from '../src/model/index.js';
import { Trainer } from '../src/train/trainer.js';
import { startClockSampler, type ClockSummary } from './gpu-clock.js';
import { median } from './median.js';

const PEAK_BF16 = 989e12;
/** The precision label of runs with bfloat16 activations. */
const BF16_ACTIVATIONS = 'bf16-act';
const PEAK_TF32 = 494e12;

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'base' },
    lengths: { type: 'string', default: '8192,32768' },
    tokenizers: { type: 'string', default: 'byte,cl100k_base' },
    // 'bf16': operands converted to bf16 for cuBLASLt's bf16 kernels (fp32 accumulation); 'bf16-act': bf16
    // activations; e.g. tf32,bf16,bf16-act
    precisions: { type: 'string', default: 'tf32' },
    steps: { type: 'string', default: '30' },
    data: { type: 'string' },
    'token-cache': { type: 'string', default: '/tmp/longnet-bench-tokens' },
    append: { type: 'boolean', default: false },
    section: { type: 'string' },
    child: { type: 'string' },
  },
});

interface Job { preset: string; seqLen: number; tokenizer: string; precision: string; steps: number; data: string; cache: string }

interface Profile { [category: string]: { ms: number; calls: number } }

interface Outcome {
  job: Job;
  ok: boolean;
  error?: string;
  card?: string;
  params?: number;
  matmulParams?: number;
  stepMs?: number[];
  losses?: number[];
  inUse?: number[];
  peakBytes?: number;
  totalBytes?: number;
  profile?: Profile;
  /** The same by method (and op), for the log. */
  detail?: Profile;
  profiledStepMs?: number;
  /** In the profiled step: the device's time from its first call to its end, and how much of it the stream was idle. */
  profiledDeviceMs?: number;
  idleMs?: number;
  /** The card's clock and power over the timed steps (null without nvidia-smi). */
  clock?: ClockSummary | null;
  /** The longest waits of the stream for the host in the profiled step, with the call that ended each. */
  gaps?: { ms: number; before: string }[];
  setupSeconds?: number;
  /** One more step's time, and the part of it the host spent waiting for the device (reads, synchronize). */
  waitedStep?: { ms: number; waitedMs: number };
}

const CATEGORY: Record<string, string> = {
  matmul: 'matmul', linearGrads: 'matmul', linearGelu: 'matmul',
  dilatedAttention: 'attention', dilatedAttentionBackward: 'attention',
  layerNorm: 'layer norm', layerNormBackward: 'layer norm',
  crossEntropy: 'cross-entropy', crossEntropyBackward: 'cross-entropy', crossEntropyWithGrad: 'cross-entropy',
  unary: 'elementwise', binary: 'elementwise', binaryScalar: 'elementwise', reduce: 'elementwise',
  softmax: 'elementwise', softmaxBackward: 'elementwise', rotatePairs: 'elementwise', sumsOfSquares: 'elementwise',
  permute: 'layout', slice: 'layout', addSliceInto: 'layout', copy: 'layout', cast: 'layout', assign: 'layout',
  gather: 'embedding', scatterAdd: 'embedding',
  alloc: 'memory', fill: 'memory', fromArray: 'memory', read: 'memory', free: 'memory',
  allFinite: 'finiteness checks', checkFinite: 'finiteness checks',
  adamw: 'optimizer', adamwMulti: 'optimizer',
};

/** Which attention kernels a run of the preset's head dimension takes (LONGNET_CUDA_ATTENTION). */
function attentionKernelsLine(): string {
  const config = presetConfig(values.preset);
  const cuda = getBackend('cuda') as CudaBackend;
  return cuda.attentionKernels(config.dModel / config.heads) === 'bf16'
    ? 'fused bf16 tensor-core kernels of the addon (float32 activations: bf16 copies of q, k, v and dO, with o, lse and ' +
      'gradients in float32; bf16-act: the bf16 q, k, v, dO and o as they are, the gradients rounded to bf16)'
    : 'exact float32 kernels of the addon';
}

type Method = (...args: unknown[]) => unknown;

/**
 * Runs `fn`, then synchronizes, with the backend's methods `names` replaced by `wrap(name, original)`
 * (put back afterwards); returns the milliseconds it took.
 */
function withWrapped(backend: CudaBackend, names: Iterable<string>, wrap: (name: string, original: Method) => Method, fn: () => void): number {
  const target = backend as unknown as Record<string, Method>;
  const originals = new Map<string, Method>();
  for (const name of names) {
    const original = target[name]!;
    originals.set(name, original);
    target[name] = wrap(name, original);
  }
  const t0 = performance.now();
  try {
    fn();
    backend.synchronize();
  } finally {
    for (const [name, original] of originals) target[name] = original;
  }
  return performance.now() - t0;
}

/** ' m x n x k' of a product call and ' rows x cols' of a layer norm, for the profile's log ('' for other calls). */
function productShape(name: string, args: unknown[]): string {
  if (name === 'matmul') return ` ${args[7]}x${args[8]}x${args[9]}${args[4] ? 'T' : 'N'}${args[5] ? 'T' : 'N'}`;
  if (name === 'linearGrads') return ` ${args[4]}x${args[3]}x${args[2]}`;
  if (name === 'linearGelu') return ` ${args[3]}x${args[5]}x${args[4]}`;
  if (name === 'layerNorm') return ` ${args[3]}x${args[4]}`;
  if (name === 'layerNormBackward') return ` ${args[5]}x${args[6]}`;
  return '';
}

/**
 * Times every backend call of `fn` on the device without waiting between calls: a mark on the stream
 * before and after each call (nested calls count in their caller), so a call's time is what the stream
 * spent on it, launch bubbles included, and the time between one call's end and the next call's start is
 * the device waiting for the host. By category, by method (and op or shape), and that waiting.
 */
function profiled(backend: CudaBackend, fn: () => void): {
  profile: Profile; detail: Profile; ms: number; idleMs: number; deviceMs: number; gaps: { ms: number; before: string }[];
} {
  const calls: { name: string; key: string; before: number; after: number }[] = [];
  let depth = 0;
  let first = -1;
  const ms = withWrapped(backend, Object.keys(CATEGORY), (name, original) => (...args: unknown[]): unknown => {
    if (depth > 0) return original.apply(backend, args);
    depth++;
    const before = backend.streamMark();
    try {
      return original.apply(backend, args);
    } finally {
      depth--;
      // finer keys for the log: the method, the op of elementwise calls and the shape of products
      calls.push({ name, key: `${name}${typeof args[0] === 'string' ? `:${args[0]}` : ''}${productShape(name, args)}`, before, after: backend.streamMark() });
    }
  }, () => {
    first = backend.streamMark();
    fn();
  });
  const last = backend.streamMark();
  const times = backend.streamMarkTimes();
  const profile: Profile = {};
  const detail: Profile = {};
  let idleMs = 0;
  const gaps: { ms: number; before: string }[] = [];
  let previousEnd = times[first]!;
  calls.forEach((c, i) => {
    const callMs = times[c.after]! - times[c.before]!;
    const gap = Math.max(0, times[c.before]! - previousEnd);
    idleMs += gap;
    gaps.push({ ms: gap, before: `${c.key} (call ${i})` });
    previousEnd = times[c.after]!;
    for (const [table, key] of [[profile, CATEGORY[c.name]!], [detail, c.key]] as const) {
      const entry = (table[key] ??= { ms: 0, calls: 0 });
      entry.ms += callMs;
      entry.calls++;
    }
  });
  idleMs += Math.max(0, times[last]! - previousEnd);
  gaps.sort((a, b) => b.ms - a.ms);
  return { profile, detail, ms, idleMs, deviceMs: times[last]! - times[first]!, gaps: gaps.slice(0, 5) };
}

/**
 * The time of `fn` (synchronized) and how much of it the host spent in the backend's waits for the device:
 * little waiting means the host's work (JavaScript, launches) bounds the step, not the device's.
 */
function waited(backend: CudaBackend, fn: () => void): { ms: number; waitedMs: number } {
  let waitedMs = 0;
  const timed = (call: () => unknown): unknown => {
    const t0 = performance.now();
    try {
      return call();
    } finally {
      waitedMs += performance.now() - t0;
    }
  };
  // a queued read waits when its result is taken
  const ms = withWrapped(backend, ['read', 'synchronize', 'allFinite', 'readLater'], (name, original) => (...args: unknown[]): unknown => {
    if (name !== 'readLater') return timed(() => original.apply(backend, args));
    const take = original.apply(backend, args) as () => unknown;
    return () => timed(take);
  }, fn);
  return { ms, waitedMs };
}

async function runChild(job: Job): Promise<Outcome> {
  const started = performance.now();
  const backend = getBackend('cuda') as CudaBackend & Backend;
  const tokenizer = createTokenizer(job.tokenizer);
  const data = await buildTokenDataset(job.data, tokenizer, { valFraction: 0.01, cacheDir: job.cache });
  const config = presetConfig(job.preset, { vocabSize: tokenizer.vocabSize });
  const model = new LongNetDecoder(config, { seed: 0, device: 'cuda', activations: job.precision === BF16_ACTIVATIONS ? 'bfloat16' : 'float32' });
  const trainer = new Trainer(model, data, {
    seqLen: job.seqLen, batch: 1, accumulate: 1, schedule: { lr: 6e-4, totalSteps: 1000, warmup: 2, endLr: 0 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 0, device: 'cuda',
  });
  const setupSeconds = (performance.now() - started) / 1000;
  const losses: number[] = [];
  const stepMs: number[] = [];
  const inUse: number[] = [];
  // one untimed step (cuBLASLt plans, the allocator's first blocks), then steps back to back as a training
  // run takes them: the host waits for the device only where the trainer reads the loss and gradient norm,
  // and queues the next step while the last AdamW runs. A step's time is the interval between two
  // successive returns of trainer.step().
  losses.push(trainer.step().loss);
  backend.synchronize();
  inUse.push(backend.memoryStats().inUse);
  losses.push(trainer.step().loss);
  const sampler = startClockSampler();
  let last = performance.now();
  for (let i = 0; i < job.steps; i++) {
    losses.push(trainer.step().loss);
    const now = performance.now();
    stepMs.push(now - last);
    last = now;
    inUse.push(backend.memoryStats().inUse);
  }
  backend.synchronize();
  const clock = await sampler.stop();
  const waitedStep = waited(backend, () => losses.push(trainer.step().loss));
  const p = profiled(backend, () => losses.push(trainer.step().loss));
  const stats = backend.memoryStats();
  return {
    job, ok: true, card: backend.info.name, params: model.parameterCount(), matmulParams: matmulParameterCount(config),
    stepMs, losses, inUse, peakBytes: stats.peakInUse, totalBytes: stats.deviceTotal, profile: p.profile, detail: p.detail, profiledStepMs: p.ms,
    profiledDeviceMs: p.deviceMs, idleMs: p.idleMs, gaps: p.gaps, setupSeconds, waitedStep, clock,
  };
}

if (values.child !== undefined) {
  const job = JSON.parse(values.child) as Job;
  let out: Outcome;
  try {
    out = await runChild(job);
  } catch (err) {
    out = { job, ok: false, error: (err as Error).message.split('\n')[0]! };
  }
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
  process.exit(0);
}

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}

const gb = (b: number): string => (b / 2 ** 30).toFixed(1);
const jobs: Job[] = [];
const steps = Number(values.steps);
const dataPath = resolve(values.data ?? defaultCorpusPath());
for (const tokenizer of values.tokenizers.split(',')) {
  for (const seqLen of values.lengths.split(',').map(Number)) {
    for (const precision of values.precisions.split(',')) {
      jobs.push({ preset: values.preset, seqLen, tokenizer, precision, steps, data: dataPath, cache: values['token-cache'] });
    }
  }
}

const self = fileURLToPath(import.meta.url);
const outcomes: Outcome[] = [];
for (const job of jobs) {
  const r = spawnSync(process.execPath, [...process.execArgv, self, '--child', JSON.stringify(job)], {
    env: { ...process.env, LONGNET_MATMUL_PRECISION: job.precision === BF16_ACTIVATIONS ? 'tf32' : job.precision }, encoding: 'utf8', maxBuffer: 1 << 26,
  });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '));
  const outcome: Outcome = line
    ? JSON.parse(line.slice(7)) as Outcome
    : { job, ok: false, error: `child exited ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
  outcomes.push(outcome);
  const tag = `${job.tokenizer} ${job.precision} N=${job.seqLen}`;
  if (outcome.ok) {
    console.log(`${tag}: steps ${outcome.stepMs!.map((t) => t.toFixed(0)).join(', ')} ms; losses ${outcome.losses!.map((l) => l.toFixed(3)).join(', ')}; ` +
      `peak ${gb(outcome.peakBytes!)} GiB; in use after each step ${outcome.inUse!.map(gb).join(', ')} GiB; setup ${outcome.setupSeconds!.toFixed(1)} s`);
    console.log(`  card over the timed steps: ${clockLabel(outcome.clock)}`);
    const top = Object.entries(outcome.detail!).sort((a, b) => b[1].ms - a[1].ms).slice(0, 40);
    console.log(`  slowest calls: ${top.map(([k, e]) => `${k} ${e.ms.toFixed(2)} ms/${e.calls}`).join(', ')}`);
    console.log(`  profiled step: ${outcome.profiledStepMs!.toFixed(1)} ms, device ${outcome.profiledDeviceMs!.toFixed(1)} ms from its first call, idle ${outcome.idleMs!.toFixed(2)} ms; ` +
      `longest waits: ${outcome.gaps!.map((g) => `${g.ms.toFixed(2)} ms before ${g.before}`).join(', ')}`);
    const w = outcome.waitedStep!;
    console.log(`  one more step: ${w.ms.toFixed(1)} ms, of which the host waited for the device ${w.waitedMs.toFixed(1)} ms`);
  } else {
    console.log(`${tag}: failed: ${outcome.error}`);
  }
}

function clockLabel(c: ClockSummary | null | undefined): string {
  if (!c) return 'not sampled';
  return `${c.smMhz.toFixed(0)} MHz, ${c.watts.toFixed(0)} W of ${c.limitWatts.toFixed(0)}, power-capped ${(100 * c.powerCapped).toFixed(0)}%`;
}

/** The first and last four losses (all of them when there are few). */
function lossesLabel(losses: number[]): string {
  const f = (xs: number[]): string => xs.map((l) => l.toFixed(2)).join(', ');
  return losses.length <= 8 ? f(losses) : `${f(losses.slice(0, 4))} ... ${f(losses.slice(-4))}`;
}

function figures(o: Outcome): { config: ModelConfig; tokensPerSecond: number; flops3: number; flops35: number; mfu: number; mfuTf32: number } {
  const tokenizer = createTokenizer(o.job.tokenizer);
  const config = presetConfig(o.job.preset, { vocabSize: tokenizer.vocabSize });
  const n = o.job.seqLen;
  const tokensPerSecond = n / (median(o.stepMs!) / 1000);
  const flops3 = 6 * matmulParameterCount(config) + (3 * attentionFlops(config, n, true)) / n;
  const flops35 = modelFlopsPerToken(config, n);
  return { config, tokensPerSecond, flops3, flops35, mfu: (flops3 * tokensPerSecond) / PEAK_BF16, mfuTf32: (flops3 * tokensPerSecond) / PEAK_TF32 };
}

/** The vocabulary, and the head width it is padded to (model FLOPs count the former). */
function vocabLabel(config: ModelConfig): string {
  const padded = paddedVocabSize(config);
  return padded === config.vocabSize ? String(config.vocabSize) : `${config.vocabSize}, head ${padded}`;
}

function schedule(config: ModelConfig): string {
  const a = config.attention;
  return a.kind === 'dense' ? 'dense attention' : `dilated attention w=${a.segmentLengths.join(',')} r=${a.dilationRates.join(',')}`;
}

const card = outcomes.find((o) => o.ok)?.card ?? 'unknown GPU';
const lines: string[] = [];
lines.push('| tokenizer (vocab) | matmul | N | step ms (median) | tokens/s | model GFLOP/token | TFLOP/s | MFU vs 989 | MFU vs 494 (TF32) | peak GiB | card (median SM clock, power) | losses |');
lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|');
for (const o of outcomes) {
  const j = o.job;
  if (!o.ok) {
    lines.push(`| ${j.tokenizer} | ${j.precision} | ${j.seqLen} | failed: ${o.error} | | | | | | | | |`);
    continue;
  }
  const f = figures(o);
  lines.push(
    `| ${j.tokenizer} (${vocabLabel(f.config)}) | ${j.precision} | ${j.seqLen} | ${median(o.stepMs!).toFixed(0)} | ${f.tokensPerSecond.toFixed(0)} | ` +
      `${(f.flops3 / 1e9).toFixed(3)} | ${((f.flops3 * f.tokensPerSecond) / 1e12).toFixed(1)} | ${(100 * f.mfu).toFixed(1)}% | ${(100 * f.mfuTf32).toFixed(1)}% | ` +
      `${gb(o.peakBytes!)} | ${clockLabel(o.clock)} | ${lossesLabel(o.losses!)} |`,
  );
}

const categories = ['matmul', 'attention', 'elementwise', 'layout', 'layer norm', 'cross-entropy', 'embedding', 'optimizer', 'finiteness checks', 'memory'];
const prof: string[] = [];
prof.push(`| config | step ms | profiled ms | ${categories.join(' | ')} | calls | device idle |`);
prof.push(`|---|---:|---:|${categories.map(() => '---:').join('|')}|---:|---:|`);
for (const o of outcomes) {
  if (!o.ok) continue;
  const p = o.profile!;
  const calls = Object.values(p).reduce((a, e) => a + e.calls, 0);
  const total = o.profiledStepMs!;
  const cell = (ms: number): string => `${ms.toFixed(1)} (${((100 * ms) / total).toFixed(0)}%)`;
  prof.push(
    `| ${o.job.tokenizer} ${o.job.precision} N=${o.job.seqLen} | ${median(o.stepMs!).toFixed(0)} | ${total.toFixed(0)} | ` +
      `${categories.map((c) => cell(p[c]?.ms ?? 0)).join(' | ')} | ${calls} | ${cell(o.idleMs!)} |`,
  );
}

const ok = outcomes.filter((o) => o.ok);
const best = (n: number): Outcome | undefined =>
  ok.filter((o) => o.job.seqLen === n).sort((a, b) => figures(b).mfu - figures(a).mfu)[0];
const headlineParts = values.lengths.split(',').map(Number).map((n) => {
  const o = best(n);
  if (!o) return `N=${n}: no result`;
  const f = figures(o);
  return `N=${n}: ${f.tokensPerSecond.toFixed(0)} tokens/s, MFU ${(100 * f.mfu).toFixed(1)}% of 989 (${o.job.tokenizer}, ${o.job.precision} matmuls)`;
});
const headline = `headline (${values.preset}, ${card}): ${headlineParts.join('; ')}`;

console.log('');
console.log(prof.join('\n'));
console.log('');
console.log(lines.join('\n'));
console.log(headline);

if (values.append || values.section !== undefined) {
  const date = new Date().toISOString().slice(0, 10);
  const example = ok[0];
  const section = [
    '',
    `## ${date} GPU training throughput and MFU, ${values.preset} preset (bench/gpu-train.ts)`,
    '',
    `Card: ${card}${example ? `, ${gb(example.totalBytes!)} GiB` : ''}; one GPU; float32 master weights, gradients and AdamW state; ` +
      'matmuls through cuBLASLt in the mode named in the table: tf32, bf16 or fp32 for float32 activations and operands ' +
      '(LONGNET_MATMUL_PRECISION), bf16-act for bfloat16 activations (bf16 operands and results, fp32 accumulation); ' +
      `dilated attention by the ${attentionKernelsLine()}.`,
    `Configuration: ${values.preset} preset (${example ? `${(example.params! / 1e6).toFixed(1)}M parameters with the first tokenizer` : ''}), ` +
      `${schedule(presetConfig(values.preset))}, batch 1 sequence, whole AdamW steps (forward, backward, clip, update) through ` +
      `the Trainer on ${dataPath.replace(/^.*\/node_modules\//, 'node_modules/')}; the median of ${steps} steps after two warm-up steps, ` +
      'run back to back as a training run takes them (the host waits for the device only at the trainer\'s read of the loss and ' +
      'gradient norm; a step is the interval between two returns of trainer.step()). MFU = (6 x matmul weights + 3 x causal forward attention FLOPs per token) x tokens/s over 989 TFLOP/s ' +
      '(bf16 dense peak of H100 SXM and H200); the TF32 column divides by 494. Card: nvidia-smi\'s samples every 100 ms over ' +
      'the timed steps (median SM clock and power; the share of samples in which the power cap held the clock down). ' +
      'No peer implementation was run in this pass.',
    '',
    ...lines,
    '',
    'Profile: one more step with a mark on the stream before and after every backend call and no waits between calls ' +
      '(ms of device time, share of that step): a call counts from the moment the stream reaches it to the end of its last ' +
      'kernel, launch bubbles included. "device idle": the time between calls when the stream had nothing queued, ' +
      'waiting for the host (JavaScript, launches, the read of the loss and the gradient norm).',
    '',
    ...prof,
    '',
    headline,
    '',
  ].join('\n');
  if (values.append) appendFileSync(join(dirname(self), 'RESULTS.md'), section);
  if (values.section !== undefined) writeFileSync(values.section, section);
}
