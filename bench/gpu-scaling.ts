/**
 * Scaling of the library's sequence-parallel dilated attention over NCCL (src/distributed/sequence-parallel.ts
 * on NcclCommunicator), one process per GPU, as training uses it: the op alone, no projections.
 *
 *   node --import tsx bench/gpu-scaling.ts MODE [options]                                         # 1 GPU
 *   longnet launch --nproc-per-node P -- node --import tsx bench/gpu-scaling.ts MODE [options]    # P GPUs
 *
 * Setting (the paper's Figure 5): B = 1, H = 12, D = 64, causal, the geometric schedule that reaches the whole
 * sequence: w_i = 2048 * 4^i and r_i = 4^i while w_i < N, then (N, N / 2048), so w / r = 2048 for every
 * pattern (bench/billion-forward-shard.ts's geometricSchedule with ratio 4). Attention precision: --precision
 * fp32 (default: the float32 kernels for the local patterns, like the packed cross-rank kernels, which are
 * float32 only) or bf16 (the fused bf16 kernels for the local patterns; the cross-rank ones stay float32).
 * Inputs come from the device's random fill, each rank its own shard. 1 GPU runs the single-device op
 * (dilatedAttention with autograd); P GPUs the sequence-parallel op, every timed run between barriers.
 *
 * Modes (each prints a table whose last line is the headline, and writes $OUT/scaling-MODE-P<P>.json):
 *   weak     forward+backward at --tokens-per-gpu (2^21) tokens a GPU, N = P x that: median of --repeat (3) after
 *            a warm-up, peak memory, bytes a GPU; with $OUT/scaling-weak-P1.json present, the efficiency
 *            T(1 GPU) / T(P GPUs).
 *   bytes    one forward+backward at each of --lengths: the bytes each rank sent and received through the
 *            communicator (NcclCommunicator.traffic: payload addressed to other ranks; see its comment).
 *   fig5     forward latency (median of --repeat) from --min (8192) doubling to P x --max-tokens-per-gpu
 *            ('auto': the largest tokens a GPU of $OUT/scaling-largest-P*.json, else 2^21); at 1 GPU the dense
 *            FlashAttention peer (bench/peers/dense_forward.py, bf16, 1 GPU) runs first.
 *   largest  (run without the launcher, --gpus P) the longest sequence whose forward+backward fits: N doubles from
 *            P x --start-tokens-per-gpu (2^20) until out of memory (or P x --max-tokens-per-gpu), then --refine (2)
 *            bisection steps. Each try is a child process (`trial` mode; through `longnet launch` for P > 1):
 *            on one GPU the addon's out-of-memory error is caught, memory is given back, and a small pass
 *            runs again in the same process; on P GPUs the rank that ran out prints it and exits with status 3
 *            (the launcher stops the others, which wait in NCCL), and the next try is a new launch. --trial-timeout
 *            (s) bounds each try, --time-limit (s) the whole search (no bisection step starts without a
 *            --trial-timeout left); the JSON is rewritten after every try.
 *   record   (no GPU) --from DIR of fetched JSON files: a dated section for bench/RESULTS.md (appended, unless
 *            --no-append; --section FILE writes it there too) and the log-log plot --svg (bench/scaling-fig5.svg).
 *
 * --emulate --ranks P: the same code on the emulated addon (test/cuda-emulator.ts) with P in-process ranks,
 * to try the modes on a machine without a GPU (tiny sizes: pass --tokens-per-gpu, --lengths, --min, ...).
 */
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Tensor, dilatedAttention } from '../src/index.js';
import { getBackend } from '../src/backend/registry.js';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import type { AttentionPrecision } from '../src/backend/cuda/native.js';
import type { Communicator } from '../src/distributed/communicator.js';
import { runRanks } from '../src/distributed/in-process.js';
import { sequenceParallelAttention } from '../src/distributed/sequence-parallel.js';
import { TrafficLog } from '../src/distributed/traffic.js';
import { logLogPlotSvg } from '../src/train/plot.js';
import { geometricSchedule, type Pattern } from './billion-forward-shard.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    precision: { type: 'string', default: 'fp32' },
    'tokens-per-gpu': { type: 'string', default: String(2 ** 21) },
    repeat: { type: 'string', default: '3' },
    lengths: { type: 'string', default: '131072,524288,2097152,8388608' },
    min: { type: 'string', default: '8192' },
    'max-tokens-per-gpu': { type: 'string', default: 'auto' },
    'start-tokens-per-gpu': { type: 'string', default: String(2 ** 20) },
    refine: { type: 'string', default: '2' },
    gpus: { type: 'string', default: '1' },
    'trial-timeout': { type: 'string', default: '150' },
    'time-limit': { type: 'string', default: '0' },
    'no-dense': { type: 'boolean', default: false },
    'dense-max-seconds': { type: 'string', default: '2' },
    python: { type: 'string', default: 'python3' },
    out: { type: 'string' },
    from: { type: 'string' },
    svg: { type: 'string', default: join(here, 'scaling-fig5.svg') },
    section: { type: 'string' },
    'no-append': { type: 'boolean', default: false },
    emulate: { type: 'boolean', default: false },
    ranks: { type: 'string', default: '1' },
    'emulate-memory': { type: 'string' },
  },
});
const mode = positionals[0] ?? '';
const MODES = ['weak', 'bytes', 'fig5', 'largest', 'trial', 'record'];
if (!MODES.includes(mode)) {
  console.error(`gpu-scaling: mode must be one of ${MODES.join(', ')}, got '${mode}'`);
  process.exit(2);
}
function int(name: string, text: string | undefined): number {
  const x = Number(String(text).replace(/_/g, '').replace(/^2\^(\d+)$/, (_, e: string) => String(2 ** Number(e))));
  if (!Number.isSafeInteger(x) || x < 0) {
    console.error(`gpu-scaling: --${name} ${text} is not a non-negative integer`);
    process.exit(2);
  }
  return x;
}
const ints = (name: string, text: string | undefined): number[] => String(text).split(',').filter(Boolean).map((t) => int(name, t));
const OUT = values.out ?? process.env['OUT'] ?? '/tmp/longnet-scaling';
const precision = values.precision as AttentionPrecision;
if (precision !== 'fp32' && precision !== 'bf16') {
  console.error(`gpu-scaling: --precision ${values.precision}: expected fp32 or bf16`);
  process.exit(2);
}

// ---- the setting ------------------------------------------------------------------------------------------

const B = 1, H = 12, D = 64, FIRST = 2048, RATIO = 4;
const SCHEDULE = `w_i = ${FIRST}*${RATIO}^i, r_i = ${RATIO}^i while w_i < N, then (N, N/${FIRST}): w/r = ${FIRST} for every pattern`;
const schedule = (N: number): Pattern[] => geometricSchedule(N, FIRST, RATIO);
const attentionOptions = (N: number): { segmentLengths: number[]; dilationRates: number[]; causal: true } => {
  const s = schedule(N);
  return { segmentLengths: s.map(([w]) => w), dilationRates: s.map(([, r]) => r), causal: true };
};
/** Patterns whose segments span more than one rank's l = N / P tokens. */
const crossPatterns = (N: number, P: number): number => schedule(N).filter(([w]) => Math.min(w, N) > N / P).length;
const PRECISION_NOTE: Record<AttentionPrecision, string> = {
  fp32: 'float32 attention kernels throughout (local patterns: the float32 dilated kernels; cross-rank patterns: the packed kernels, float32 only); float32 q, k, v, o, gradients',
  bf16: 'local patterns on the fused bf16 kernels (bf16 copies of q, k, v, dO; float32 o, lse, gradients), cross-rank patterns on the packed float32 kernels',
};

const fmtTokens = (n: number): string =>
  n >= 2 ** 20 && n % 2 ** 18 === 0 ? `${n / 2 ** 20}M` : n >= 1024 && n % 1024 === 0 ? `${n / 1024}K` : String(n);
const fmtMB = (b: number): string => (b / 1e6).toFixed(2);
const fmtGiB = (b: number): string => (b / 2 ** 30).toFixed(1);
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const isOom = (e: unknown): boolean =>
  (e as { code?: string }).code === 'ERR_CUDA_OUT_OF_MEMORY' || /out of memory/i.test(e instanceof Error ? e.message : String(e));
const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300);

interface Common {
  mode: string;
  P: number;
  device: string;
  memoryBytes: number;
  precision: AttentionPrecision;
  B: number;
  H: number;
  D: number;
  causal: true;
  schedule: string;
  date: string;
  node: string;
}

function writeJson(name: string, data: object): string {
  mkdirSync(OUT, { recursive: true });
  const path = join(OUT, name);
  writeFileSync(path, JSON.stringify(data, null, 1) + '\n');
  return path;
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** A markdown table. */
function table(header: readonly string[], rows: readonly (readonly string[])[], align?: string): string[] {
  return [`| ${header.join(' | ')} |`, align ?? `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

// ---- one rank ---------------------------------------------------------------------------------------------

interface Rank {
  backend: CudaBackend;
  comm: Communicator | null;
  traffic: TrafficLog | null;
  rank: number;
  P: number;
  log(s: string): void;
}

interface Inputs { q: Tensor; k: Tensor; v: Tensor; dO: Tensor }

function inputs(r: Rank, l: number, seed: number): Inputs {
  const shape = [B, l, H, D];
  const make = (i: number): Tensor => {
    const s = r.backend.alloc('float32', B * l * H * D);
    r.backend.addon.fillRandomNormal(r.backend.handleOf(s), seed * 1000 + 10 * r.rank + i, 1);
    return Tensor.fromStorage(s, shape, r.backend);
  };
  const made: Tensor[] = [];
  try {
    for (let i = 0; i < 4; i++) made.push(make(i));
  } catch (e) {
    for (const x of made) x.dispose();
    throw e;
  }
  return { q: made[0]!, k: made[1]!, v: made[2]!, dO: made[3]! };
}

function disposeInputs(t: Inputs): void {
  for (const x of [t.q, t.k, t.v]) {
    x.grad?.dispose();
    x.grad = null;
  }
  for (const x of [t.q, t.k, t.v, t.dO]) x.dispose();
}

/** One forward (and backward) of the op on this rank's shard of N tokens; frees what it made. */
async function pass(r: Rank, t: Inputs, N: number, backward: boolean, traffic?: { afterForward?: () => void }): Promise<void> {
  const options = attentionOptions(N);
  if (r.comm) {
    const res = await sequenceParallelAttention(r.comm, t.q, t.k, t.v, { ...options, sequenceLength: N });
    traffic?.afterForward?.();
    if (backward) {
      const g = await res.backward(t.dO);
      for (const x of [g.dq, g.dk, g.dv]) x.dispose();
    } else {
      res.dispose();
    }
    res.output.dispose();
    res.lse.dispose();
    return;
  }
  for (const x of [t.q, t.k, t.v]) x.requiresGrad = backward;
  const res = dilatedAttention(t.q, t.k, t.v, options);
  try {
    if (backward) res.output.backward(t.dO);
  } finally {
    // also when the backward fails (out of memory): nothing of this pass stays allocated
    res.output.dispose();
    res.lse.dispose();
    for (const x of [t.q, t.k, t.v]) {
      x.grad?.dispose();
      x.grad = null;
    }
  }
}

async function sync(r: Rank): Promise<void> {
  r.backend.synchronize();
  if (r.comm) await r.comm.barrier();
}

/** Milliseconds of `repeat` runs of fn after one warm-up, each between synchronizations of every rank. */
async function timed(r: Rank, repeat: number, fn: () => Promise<void>): Promise<number[]> {
  const times: number[] = [];
  for (let it = 0; it <= repeat; it++) {
    await sync(r);
    const t0 = performance.now();
    await fn();
    await sync(r);
    if (it > 0) times.push(performance.now() - t0);
  }
  return times;
}

/** Every rank's values (non-negative, rounded to integers) on every rank, exact up to 2^48. */
async function gatherInts(r: Rank, xs: readonly number[]): Promise<number[][]> {
  if (!r.comm) return [xs.map((x) => Math.round(x))];
  const enc = new Float32Array(2 * xs.length);
  xs.forEach((x, i) => {
    const v = Math.max(0, Math.round(x));
    const hi = Math.floor(v / 2 ** 24);
    enc[2 * i] = hi;
    enc[2 * i + 1] = v - hi * 2 ** 24;
  });
  const mine = r.backend.fromArray(enc);
  const all = await r.comm.allGather(mine);
  const a = r.backend.read(all);
  r.backend.free(mine);
  r.backend.free(all);
  return Array.from({ length: r.P }, (_, p) => xs.map((_, i) => a[2 * (p * xs.length + i)]! * 2 ** 24 + a[2 * (p * xs.length + i) + 1]!));
}

const bytesOf = (r: Rank): { sent: number; received: number } => {
  if (!r.traffic || !r.comm) return { sent: 0, received: 0 };
  const me = r.comm.members[r.comm.rank]!;
  return { sent: r.traffic.sent(me), received: r.traffic.received(me) };
};

function common(r: Rank | null, modeName: string, P: number, device?: { name: string; totalMemory: number }): Common {
  const info = device ?? r?.backend.info ?? { name: 'unknown', totalMemory: 0 };
  return {
    mode: modeName, P, device: info.name, memoryBytes: info.totalMemory, precision, B, H, D, causal: true,
    schedule: SCHEDULE, date: new Date().toISOString(), node: process.version,
  };
}

// ---- weak scaling ---------------------------------------------------------------------------------------

interface WeakJson extends Common {
  tokensPerGpu: number;
  N: number;
  patterns: Pattern[];
  crossPatterns: number;
  repeat: number;
  timesMs: number[];
  medianMs: number;
  peakBytesPerGpu: number[];
  sentPerGpu: number[];
  receivedPerGpu: number[];
}

function weakRows(list: readonly WeakJson[]): string[][] {
  const one = list.find((w) => w.P === 1);
  return list.map((w) => [
    String(w.P), w.tokensPerGpu.toLocaleString('en-US'), w.N.toLocaleString('en-US'), `${w.patterns.length} (${w.crossPatterns} across ranks)`,
    w.medianMs.toFixed(1), (w.N / w.medianMs / 1e3).toFixed(2), fmtGiB(Math.max(...w.peakBytesPerGpu)),
    fmtMB(Math.max(...w.sentPerGpu, ...w.receivedPerGpu)),
    one && one.tokensPerGpu === w.tokensPerGpu ? `${((100 * one.medianMs) / w.medianMs).toFixed(1)}%` : '',
  ]);
}
const WEAK_HEADER = ['GPUs', 'tokens / GPU', 'N', 'patterns', 'fwd+bwd ms (median)', 'Mtokens/s', 'peak GiB / GPU', 'max MB sent or received / GPU', 'efficiency T1/TP'];

function weakHeadline(list: readonly WeakJson[]): string {
  const one = list.find((w) => w.P === 1);
  const most = [...list].sort((a, b) => b.P - a.P)[0];
  if (!one || !most || most.P === 1) return `headline: weak scaling needs a 1-GPU and a multi-GPU run (have P = ${list.map((w) => w.P).join(', ')})`;
  const eff = one.medianMs / most.medianMs;
  return `headline: weak scaling at ${fmtTokens(one.tokensPerGpu)} tokens/GPU: ${most.P} GPUs (N = ${fmtTokens(most.N)}) ${most.medianMs.toFixed(0)} ms ` +
    `vs 1 GPU (N = ${fmtTokens(one.N)}) ${one.medianMs.toFixed(0)} ms forward+backward: ${(most.medianMs / one.medianMs).toFixed(3)}x the time, ` +
    `efficiency ${(100 * eff).toFixed(1)}% (${eff >= 0.87 ? 'meets' : 'MISSES'} >= 87%)`;
}

async function weak(r: Rank): Promise<void> {
  const l = int('tokens-per-gpu', values['tokens-per-gpu']);
  const repeat = int('repeat', values.repeat);
  const N = l * r.P;
  r.backend.synchronize();
  const base = r.backend.memoryStats().inUse;
  r.backend.resetPeakMemory();
  const t = inputs(r, l, 1);
  const b0 = bytesOf(r);
  const times = await timed(r, repeat, () => pass(r, t, N, true));
  const b1 = bytesOf(r);
  const peak = r.backend.memoryStats().peakInUse;
  disposeInputs(t);
  const per = await gatherInts(r, [peak - base, (b1.sent - b0.sent) / (repeat + 1), (b1.received - b0.received) / (repeat + 1)]);
  if (r.rank !== 0) return;
  const result: WeakJson = {
    ...common(r, 'weak', r.P), tokensPerGpu: l, N, patterns: schedule(N), crossPatterns: crossPatterns(N, r.P), repeat, timesMs: times,
    medianMs: median(times), peakBytesPerGpu: per.map((x) => x[0]!), sentPerGpu: per.map((x) => x[1]!), receivedPerGpu: per.map((x) => x[2]!),
  };
  const path = writeJson(`scaling-weak-P${r.P}.json`, result);
  const list = [1, 2, 4, 8].map((p) => (p === r.P ? result : readJson<WeakJson>(join(OUT, `scaling-weak-P${p}.json`))))
    .filter((w): w is WeakJson => w !== null && w.tokensPerGpu === l && w.precision === precision);
  r.log(`weak scaling: ${r.backend.info.name}, ${precision} attention, B=${B} H=${H} D=${D} causal, ${SCHEDULE}; forward+backward, median of ${repeat} after a warm-up`);
  r.log(`schedule at N=${N}: ${result.patterns.map(([w, rr]) => `(${w},${rr})`).join(' ')}; times ${times.map((x) => x.toFixed(1)).join(', ')} ms; ${path}`);
  r.log(table(WEAK_HEADER, weakRows(list)).join('\n'));
  r.log(weakHeadline(list));
}

// ---- bytes a GPU ----------------------------------------------------------------------------------------

interface BytesRow {
  N: number;
  tokensPerGpu: number;
  patterns: number;
  crossPatterns: number;
  ms: number;
  forwardSent: number[];
  forwardReceived: number[];
  sent: number[];
  received: number[];
  peakBytesPerGpu: number[];
}
interface BytesJson extends Common { rows: BytesRow[] }

const BYTES_HEADER = ['GPUs', 'N', 'tokens / GPU', 'patterns (across ranks)', 'fwd+bwd ms (1 run)', 'MB sent / GPU (max, mean)', 'MB received / GPU (max, mean)',
  'of which forward (max sent, max recv)', 'bytes / token (max rank)'];
const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
function bytesRows(b: BytesJson): string[][] {
  return b.rows.map((x) => [
    String(b.P), x.N.toLocaleString('en-US'), x.tokensPerGpu.toLocaleString('en-US'), `${x.patterns} (${x.crossPatterns})`, x.ms.toFixed(1),
    `${fmtMB(Math.max(...x.sent))}, ${fmtMB(mean(x.sent))}`, `${fmtMB(Math.max(...x.received))}, ${fmtMB(mean(x.received))}`,
    `${fmtMB(Math.max(...x.forwardSent))}, ${fmtMB(Math.max(...x.forwardReceived))}`,
    (Math.max(...x.sent.map((s, i) => s + x.received[i]!)) / x.tokensPerGpu).toFixed(2),
  ]);
}
function bytesHeadline(list: readonly BytesJson[]): string {
  const parts = list.filter((b) => b.rows.length > 0).map((b) => {
    const tot = b.rows.map((x) => Math.max(...x.sent.map((s, i) => s + x.received[i]!)));
    const lo = Math.min(...tot), hi = Math.max(...tot);
    return `${b.P} GPUs: ${fmtMB(lo)}..${fmtMB(hi)} MB sent+received by the busiest GPU for N = ${fmtTokens(b.rows[0]!.N)}..${fmtTokens(b.rows.at(-1)!.N)} ` +
      `(max/min ${(hi / Math.max(lo, 1)).toFixed(2)}, ${hi <= 1.1 * lo ? 'flat' : 'NOT flat'} within 10%)`;
  });
  return `headline: bytes a GPU per forward+backward: ${parts.join('; ') || 'no data'}`;
}

async function bytes(r: Rank): Promise<void> {
  if (!r.comm) throw new Error('bytes runs on 2 or more ranks (longnet launch)');
  const lengths = ints('lengths', values.lengths).filter((N) => N % r.P === 0 && N % FIRST === 0);
  const result: BytesJson = { ...common(r, 'bytes', r.P), rows: [] };
  for (const N of lengths) {
    const l = N / r.P;
    await sync(r);
    const base = r.backend.memoryStats().inUse;
    r.backend.resetPeakMemory();
    const t = inputs(r, l, 2);
    const b0 = bytesOf(r);
    let bf = b0;
    const t0 = performance.now();
    await pass(r, t, N, true, { afterForward: () => { bf = bytesOf(r); } });
    await sync(r);
    const ms = performance.now() - t0;
    const b1 = bytesOf(r);
    const peak = r.backend.memoryStats().peakInUse - base;
    disposeInputs(t);
    const per = await gatherInts(r, [bf.sent - b0.sent, bf.received - b0.received, b1.sent - b0.sent, b1.received - b0.received, peak]);
    result.rows.push({
      N, tokensPerGpu: l, patterns: schedule(N).length, crossPatterns: crossPatterns(N, r.P), ms,
      forwardSent: per.map((x) => x[0]!), forwardReceived: per.map((x) => x[1]!), sent: per.map((x) => x[2]!), received: per.map((x) => x[3]!),
      peakBytesPerGpu: per.map((x) => x[4]!),
    });
    if (r.rank === 0) {
      writeJson(`scaling-bytes-P${r.P}.json`, result);
      const x = result.rows.at(-1)!;
      r.log(`# N=${N}: sent per rank [${x.sent.map(fmtMB).join(', ')}] MB, received [${x.received.map(fmtMB).join(', ')}] MB, ${ms.toFixed(0)} ms`);
    }
  }
  if (r.rank !== 0) return;
  r.log(`bytes exchanged per GPU: ${r.backend.info.name}, ${precision} attention, B=${B} H=${H} D=${D} causal, ${SCHEDULE}; one forward+backward each, ` +
    'counted by the communicator (payload this rank addresses to / receives from other ranks; NcclCommunicator.traffic)');
  r.log(table(BYTES_HEADER, bytesRows(result)).join('\n'));
  r.log(bytesHeadline([result]));
}

// ---- Figure 5: forward latency ----------------------------------------------------------------------------

interface Fig5Row { N: number; status: 'ok' | 'oom' | 'skipped' | 'error'; fwdMs?: number; reason?: string }
interface Fig5Json extends Common { maxTokensPerGpu: number; repeat: number; rows: Fig5Row[]; dense: Fig5Row[]; peer?: Record<string, unknown> }

function fig5Cap(): number {
  const text = values['max-tokens-per-gpu'];
  if (text !== 'auto') return int('max-tokens-per-gpu', text);
  const found = [1, 2, 4, 8].map((p) => readJson<LargestJson>(join(OUT, `scaling-largest-P${p}.json`)))
    .filter((x): x is LargestJson => x !== null && x.doubling.ok !== null && x.precision === precision)
    .map((x) => x.doubling.ok! / x.P);
  return found.length ? Math.min(...found) : 2 ** 21;
}

/** The dense peer, in a child process, before this process holds GPU memory. */
function runDense(lengths: readonly number[]): Promise<{ rows: Fig5Row[]; info: Record<string, unknown>; note: string }> {
  const args = [join(here, 'peers', 'dense_forward.py'), '--lengths', lengths.join(','), '--heads', String(H), '--dim', String(D), '--batch', String(B),
    '--max-seconds', values['dense-max-seconds']!, '--budget-seconds', '1', '--max-repeats', '5'];
  return new Promise((done) => {
    const rows: Fig5Row[] = [];
    let info: Record<string, unknown> = {};
    let err = '';
    const child = spawn(values.python!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const line = (s: string): void => {
      if (!s.trim()) return;
      try {
        const o = JSON.parse(s) as Record<string, unknown>;
        if (o['kind'] === 'info') info = o;
        else if (o['kind'] === 'result') {
          const row: Fig5Row = { N: Number(o['N']), status: o['status'] as Fig5Row['status'] };
          if (row.status === 'ok') row.fwdMs = Number(o['fwd_ms']);
          if (typeof o['reason'] === 'string') row.reason = o['reason'];
          rows.push(row);
          process.stderr.write(`# dense-flash N=${row.N}: ${row.status === 'ok' ? `${row.fwdMs!.toFixed(2)} ms` : row.status}\n`);
        }
      } catch {
        process.stderr.write(`# dense_forward.py: ${s}\n`);
      }
    };
    createInterface({ input: child.stdout }).on('line', line);
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', (e) => done({ rows, info, note: `dense peer did not run: ${e.message}` }));
    child.on('close', (code) => {
      done({ rows, info, note: code === 0 ? '' : `dense peer exited with status ${code}: ${err.trim().split('\n').pop() ?? ''}` });
    });
  });
}

async function fig5(r: Rank): Promise<void> {
  const min = int('min', values.min);
  const cap = fig5Cap();
  const repeat = int('repeat', values.repeat);
  const lengths: number[] = [];
  for (let N = min; N <= cap * r.P; N *= 2) if (N % r.P === 0 && N % FIRST === 0) lengths.push(N);
  const result: Fig5Json = { ...common(r, 'fig5', r.P), maxTokensPerGpu: cap, repeat, rows: [], dense: [] };
  const name = `scaling-fig5-P${r.P}.json`;
  if (r.P === 1 && !values['no-dense'] && !values.emulate) {
    const d = await runDense(lengths);
    result.dense = d.rows;
    result.peer = { ...d.info, ...(d.note ? { note: d.note } : {}) };
    if (d.note) r.log(`# ${d.note}`);
  }
  let stopped: Fig5Row['status'] | null = null;
  for (const N of lengths) {
    if (stopped) {
      result.rows.push({ N, status: stopped });
      continue;
    }
    let t: Inputs | null = null;
    try {
      t = inputs(r, N / r.P, 3);
      const times = await timed(r, repeat, () => pass(r, t!, N, false));
      result.rows.push({ N, status: 'ok', fwdMs: median(times) });
      if (r.rank === 0) process.stderr.write(`# dilated P=${r.P} N=${N}: forward ${median(times).toFixed(2)} ms\n`);
    } catch (e) {
      const oom = isOom(e);
      console.log(`rank ${r.rank}: N=${N}: ${oom ? 'out of memory' : 'error'}: ${firstLine(e)}`);
      if (r.comm) {
        // the other ranks wait for this one in NCCL: keep what is measured and stop (the launcher stops the rest)
        if (r.rank === 0) writeJson(name, result);
        process.exit(3);
      }
      result.rows.push({ N, status: oom ? 'oom' : 'error', reason: firstLine(e) });
      stopped = 'skipped';
    } finally {
      if (t) disposeInputs(t);
      r.backend.emptyCache();
    }
    if (r.rank === 0) writeJson(name, result);
  }
  if (r.rank !== 0) return;
  r.log(`Figure 5, forward latency: ${r.backend.info.name}, ${r.P} GPU${r.P > 1 ? 's' : ''}, ${precision} attention, B=${B} H=${H} D=${D} causal, ${SCHEDULE}; ` +
    `median of ${repeat} after a warm-up${result.dense.length ? '; dense: PyTorch SDPA FlashAttention, bf16, 1 GPU' : ''}`);
  r.log(table(['N', `dilated, ${r.P} GPU(s), fwd ms`, 'dense flash (1 GPU) fwd ms'], fig5Rows([result])).join('\n'));
  r.log(fig5Headline([result]));
}

function fig5Rows(list: readonly Fig5Json[]): string[][] {
  const Ns = [...new Set(list.flatMap((f) => [...f.rows, ...f.dense].map((x) => x.N)))].sort((a, b) => a - b);
  const cell = (x: Fig5Row | undefined): string => (x === undefined ? '' : x.status === 'ok' ? x.fwdMs!.toFixed(2) : x.status);
  const dense = list.flatMap((f) => f.dense);
  return Ns.map((N) => [fmtTokens(N), ...list.map((f) => cell(f.rows.find((x) => x.N === N))), cell(dense.find((x) => x.N === N))]);
}

function fig5Headline(list: readonly Fig5Json[]): string {
  const parts = list.map((f) => {
    const ok = f.rows.filter((x) => x.status === 'ok');
    if (ok.length < 2) return `${f.P} GPU(s): ${ok.length} point(s)`;
    const a = ok[0]!, b = ok.at(-1)!;
    const growth = Math.log(b.fwdMs! / a.fwdMs!) / Math.log(b.N / a.N);
    return `${f.P} GPU(s) ${fmtTokens(a.N)}..${fmtTokens(b.N)}: ${a.fwdMs!.toFixed(1)}..${b.fwdMs!.toFixed(1)} ms (slope ${growth.toFixed(2)} on log-log)`;
  });
  const dense = list.flatMap((f) => f.dense).filter((x) => x.status === 'ok');
  if (dense.length >= 2) {
    const a = dense[0]!, b = dense.at(-1)!;
    const one = list.find((f) => f.P === 1)?.rows.find((x) => x.N === b.N && x.status === 'ok');
    parts.push(`dense flash ${fmtTokens(a.N)}..${fmtTokens(b.N)}: ${a.fwdMs!.toFixed(1)}..${b.fwdMs!.toFixed(1)} ms (slope ${(Math.log(b.fwdMs! / a.fwdMs!) / Math.log(b.N / a.N)).toFixed(2)})` +
      (one ? `, ${(b.fwdMs! / one.fwdMs!).toFixed(1)}x dilated on 1 GPU at ${fmtTokens(b.N)}` : ''));
  }
  return `headline: forward latency, ${parts.join('; ')}`;
}

// ---- largest sequence -----------------------------------------------------------------------------------

interface Trial { N: number; status: 'ok' | 'oom' | 'error' | 'timeout' | 'survived'; rank?: number; message?: string; peakBytes?: number; ms?: number }
interface LargestJson extends Common {
  startTokensPerGpu: number;
  maxTokensPerGpu: number;
  trials: Trial[];
  doubling: { ok: number | null; failed: number | null };
  refined: { ok: number | null; failed: number | null };
  survived: boolean | null;
}

/** `trial` mode: forward+backward once at each length, in order, until one does not fit. */
async function trial(r: Rank): Promise<void> {
  const report = (t: Trial): void => console.log(`TRIAL ${JSON.stringify(t)}`);
  for (const N of ints('lengths', values.lengths)) {
    let t: Inputs | null = null;
    try {
      r.backend.emptyCache();
      const base = r.backend.memoryStats().inUse;
      r.backend.resetPeakMemory();
      const t0 = performance.now();
      t = inputs(r, N / r.P, 4);
      await pass(r, t, N, true);
      await sync(r);
      const ms = performance.now() - t0;
      const peak = r.backend.memoryStats().peakInUse - base;
      disposeInputs(t);
      t = null;
      const all = await gatherInts(r, [peak]);
      if (r.rank === 0) report({ N, status: 'ok', peakBytes: Math.max(...all.map((x) => x[0]!)), ms });
    } catch (e) {
      const oom = isOom(e);
      report({ N, status: oom ? 'oom' : 'error', rank: r.comm ? r.comm.members[r.rank]! : 0, message: firstLine(e) });
      if (r.comm) process.exit(3);
      // one GPU: the process goes on; give the memory back and show that a pass still runs
      if (t) disposeInputs(t);
      t = null;
      r.backend.synchronize();
      r.backend.emptyCache();
      const small = Math.max(FIRST, Math.min(65536, N / 4));
      const held = r.backend.memoryStats().inUse;
      const again = inputs(r, small, 5);
      await pass(r, again, small, true);
      r.backend.synchronize();
      disposeInputs(again);
      report({ N: small, status: 'survived', message: `after the failure: ${held} bytes held by tensors, then a ${small}-token forward+backward ran` });
      return;
    }
  }
}

function runTrial(P: number, lengths: readonly number[], timeoutS: number): Promise<Trial[]> {
  const self = join(here, 'gpu-scaling.ts');
  const inner = [process.execPath, '--import', 'tsx', self, 'trial', '--lengths', lengths.join(','), '--precision', precision,
    ...(values.emulate ? ['--emulate', ...(values['emulate-memory'] ? ['--emulate-memory', values['emulate-memory']] : [])] : [])];
  const cmd = P === 1 ? inner : [process.execPath, '--import', 'tsx', join(here, '..', 'src', 'cli', 'main.ts'), 'launch',
    '--nproc-per-node', String(P), '--master-port', '0', '--', ...inner];
  console.log(`# ${P} GPU(s): trying N = ${lengths.map(fmtTokens).join(', ')}`);
  return new Promise((done) => {
    const trials: Trial[] = [];
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const onLine = (s: string): void => {
      if (s.startsWith('TRIAL ')) {
        const t = JSON.parse(s.slice(6)) as Trial;
        trials.push(t);
        console.log(`#   N=${t.N}: ${t.status}${t.peakBytes ? `, peak ${fmtGiB(t.peakBytes)} GiB a GPU` : ''}${t.ms ? `, ${t.ms.toFixed(0)} ms` : ''}` +
          `${t.rank !== undefined ? ` (rank ${t.rank})` : ''}${t.message ? `: ${t.message}` : ''}`);
      } else if (s.trim()) console.log(`#   ${s}`);
    };
    createInterface({ input: child.stdout }).on('line', onLine);
    child.stderr.on('data', (d: Buffer) => { for (const s of d.toString().split('\n')) if (s.trim()) console.log(`#   ${s}`); });
    const kill = (sig: NodeJS.Signals): void => { try { process.kill(-child.pid!, sig); } catch { /* gone */ } };
    // stopped from outside (the step's time limit): take the try along, GPUs and all
    const stop = (sig: NodeJS.Signals): void => {
      kill('SIGTERM');
      setTimeout(() => { kill('SIGKILL'); process.exit(sig === 'SIGINT' ? 130 : 143); }, 3000);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      kill('SIGTERM');
      setTimeout(() => kill('SIGKILL'), 10_000).unref();
    }, Math.max(1, Math.min(timeoutS, 2 ** 31 / 1000 - 1)) * 1000);
    child.on('close', () => {
      clearTimeout(timer);
      process.removeListener('SIGTERM', stop);
      process.removeListener('SIGINT', stop);
      const done_ = new Set(trials.map((t) => t.N));
      const next = lengths.find((N) => !done_.has(N));
      if (timedOut && next !== undefined) trials.push({ N: next, status: 'timeout', message: `no answer within ${timeoutS} s` });
      done(trials);
    });
  });
}

async function largest(): Promise<void> {
  const P = int('gpus', values.gpus);
  const start = int('start-tokens-per-gpu', values['start-tokens-per-gpu']);
  const capText = values['max-tokens-per-gpu'];
  const cap = capText === 'auto' ? 2 ** 24 : int('max-tokens-per-gpu', capText);
  const refine = int('refine', values.refine);
  const timeoutS = int('trial-timeout', values['trial-timeout']);
  const limitS = int('time-limit', values['time-limit']);
  const began = performance.now();
  const left = (): number => (limitS > 0 ? limitS - (performance.now() - began) / 1000 : Infinity);
  const doubling: number[] = [];
  for (let l = start; l <= cap; l *= 2) doubling.push(l * P);
  const device = readDevice();
  const trials: Trial[] = [];
  let okD: number | null = null, failD: number | null = null, lo: number | null = null, hi: number | null = null;
  const save = (): LargestJson => {
    const result: LargestJson = {
      ...common(null, 'largest', P, device), startTokensPerGpu: start, maxTokensPerGpu: cap, trials,
      doubling: { ok: okD, failed: failD }, refined: { ok: lo, failed: hi },
      survived: P === 1 ? trials.some((t) => t.status === 'survived') : null,
    };
    writeJson(`scaling-largest-P${P}.json`, result);
    return result;
  };
  trials.push(...await runTrial(P, doubling, Math.min(timeoutS * 2, left())));
  const fits = (N: number): boolean => trials.some((t) => t.N === N && t.status === 'ok');
  okD = doubling.filter(fits).at(-1) ?? null;
  failD = doubling.find((N) => trials.some((t) => t.N === N && t.status !== 'ok' && t.status !== 'survived')) ?? null;
  lo = okD;
  hi = failD;
  save();
  const grain = P * 65536;
  for (let i = 0; i < refine && lo !== null && hi !== null; i++) {
    const mid = Math.floor((lo + hi) / 2 / grain) * grain;
    if (mid <= lo || mid >= hi) break;
    if (left() < timeoutS) {
      console.log(`# no time left for another try (${Math.round(left())} s of --time-limit ${limitS})`);
      break;
    }
    const got = await runTrial(P, [mid], Math.min(timeoutS, left()));
    trials.push(...got);
    if (got.some((t) => t.N === mid && t.status === 'ok')) lo = mid;
    else hi = mid;
    save();
  }
  const result = save();
  const list = [1, 2, 4, 8].map((p) => (p === P ? result : readJson<LargestJson>(join(OUT, `scaling-largest-P${p}.json`))))
    .filter((x): x is LargestJson => x !== null && x.precision === precision);
  console.log(`largest sequence, forward+backward of one layer: ${result.device}, ${precision} attention, B=${B} H=${H} D=${D} causal, ${SCHEDULE}`);
  console.log(table(LARGEST_HEADER, largestRows(list)).join('\n'));
  console.log(largestHeadline(list));
}

/** The card's name and memory, from nvidia-smi (the orchestrator holds no GPU). */
function readDevice(): { name: string; totalMemory: number } {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8' });
    const [name, mib] = out.trim().split('\n')[0]!.split(',').map((s) => s.trim());
    return { name: name!, totalMemory: Number(mib) * 2 ** 20 };
  } catch {
    return { name: 'unknown', totalMemory: 0 };
  }
}

const LARGEST_HEADER = ['GPUs', 'doubling: largest N that ran', 'first N out of memory', 'after bisection: largest N', 'smallest N that failed', 'peak GiB / GPU at the largest', 'ratio to 1 GPU (doubling, bisection)'];
function largestRows(list: readonly LargestJson[]): string[][] {
  const one = list.find((x) => x.P === 1);
  const n = (x: number | null): string => (x === null ? '-' : `${x.toLocaleString('en-US')} (${fmtTokens(x)})`);
  return list.map((x) => {
    const peak = x.trials.find((t) => t.N === x.refined.ok && t.status === 'ok')?.peakBytes;
    const ratio = one && x.P !== 1 && one.doubling.ok && x.doubling.ok && one.refined.ok && x.refined.ok
      ? `${(x.doubling.ok / one.doubling.ok).toFixed(2)}x, ${(x.refined.ok / one.refined.ok).toFixed(2)}x` : '';
    const failNote = (N: number | null): string => {
      const t = x.trials.find((y) => y.N === N && y.status !== 'ok' && y.status !== 'survived');
      return N === null ? 'none up to the cap' : `${n(N)}${t && t.status !== 'oom' ? ` (${t.status})` : ''}`;
    };
    return [String(x.P), n(x.doubling.ok), failNote(x.doubling.failed), n(x.refined.ok), failNote(x.refined.failed), peak ? fmtGiB(peak) : '', ratio];
  });
}
function largestHeadline(list: readonly LargestJson[]): string {
  const one = list.find((x) => x.P === 1);
  const most = [...list].sort((a, b) => b.P - a.P)[0];
  if (!one || !most || most.P === 1 || !one.refined.ok || !most.refined.ok) {
    return `headline: largest N: ${list.map((x) => `${x.P} GPU(s) ${x.refined.ok ?? 'none'}`).join(', ')} (needs 1 GPU and more to compare)`;
  }
  const rd = most.doubling.ok! / one.doubling.ok!, rb = most.refined.ok / one.refined.ok;
  return `headline: largest sequence (forward+backward): ${most.P} GPUs ${fmtTokens(most.refined.ok)} vs 1 GPU ${fmtTokens(one.refined.ok)} tokens: ` +
    `${rb.toFixed(2)}x after bisection, ${rd.toFixed(2)}x on the doubling grid (${fmtTokens(most.doubling.ok!)} vs ${fmtTokens(one.doubling.ok!)}); ` +
    `${Math.min(rb, rd) >= 3.5 ? 'meets' : rd >= 3.5 ? 'meets on the doubling grid only:' : 'MISSES'} >= 3.5x` +
    `${one.survived ? '; the 1-GPU process caught the out-of-memory error and ran again' : ''}`;
}

// ---- record -----------------------------------------------------------------------------------------------

function record(): void {
  const dir = values.from ?? OUT;
  if (!existsSync(dir)) {
    console.error(`gpu-scaling record: ${dir} does not exist`);
    process.exit(2);
  }
  const files = readdirSync(dir);
  const load = <T extends Common>(prefix: string): T[] => files.filter((f) => f.startsWith(prefix) && f.endsWith('.json'))
    .map((f) => readJson<T>(join(dir, f))).filter((x): x is T => x !== null).sort((a, b) => a.P - b.P);
  const weakL = load<WeakJson>('scaling-weak-P');
  const bytesL = load<BytesJson>('scaling-bytes-P');
  const largestL = load<LargestJson>('scaling-largest-P');
  const fig5L = load<Fig5Json>('scaling-fig5-P');
  const checks = files.filter((f) => /^sp-check-P\d+\.json$/.test(f)).map((f) => readJson<CheckJson>(join(dir, f))).filter((x): x is CheckJson => x !== null)
    .sort((a, b) => a.P - b.P);
  const all: Common[] = [...weakL, ...bytesL, ...largestL, ...fig5L];
  if (all.length === 0 && checks.length === 0) {
    console.error(`gpu-scaling record: no scaling-*.json or sp-check-*.json in ${dir}`);
    process.exit(2);
  }
  const devices = [...new Set(all.map((x) => x.device).filter((d) => d !== 'unknown'))];
  const precisions = [...new Set(all.map((x) => x.precision))];
  const date = (all[0]?.date ?? new Date().toISOString()).slice(0, 10);
  const heads: string[] = [];
  const body: string[] = [];
  body.push(`Card: ${devices.join(', ') || 'unknown'}${all[0]?.memoryBytes ? ` (${fmtGiB(all[0].memoryBytes)} GiB)` : ''}, up to ${Math.max(0, ...all.map((x) => x.P))} GPUs of one host, ` +
    `one process per GPU through \`longnet launch\`, NCCL (NVLink multicast off); Node ${all[0]?.node ?? process.version}. ` +
    `B=${B}, H=${H}, D=${D}, causal; schedule ${SCHEDULE}. Attention: ${precisions.map((p) => PRECISION_NOTE[p]).join('; ')}. ` +
    '1 GPU runs the single-device op (dilatedAttention, autograd), P GPUs the sequence-parallel op (sequenceParallelAttention on ' +
    'NcclCommunicator), each rank holding N/P tokens; every timed run starts and ends with all ranks synchronized.');
  if (checks.length) {
    body.push('', '**Equality with one GPU** (bench/gpu-sequence-parallel.ts check: each rank against the single-device op on the whole sequence; ' +
      'N=6000, H=4, D=64, w=[1024, 4000, 6000], r=[1, 2, 3]; largest |error| / largest |value| over o, lse, dq, dk, dv and ranks; ' +
      'the communicator\'s byte counts against the in-process communicator\'s on the same problem):', '');
    body.push(...table(['GPUs', 'collectives', 'non-causal', 'causal', 'bytes counted as in process', 'result'], checks.map((c) => [
      String(c.P), c.collectives ? 'PASS' : 'FAIL', c.errors['false']?.toExponential(1) ?? '', c.errors['true']?.toExponential(1) ?? '',
      c.bytesMatch === null ? '' : c.bytesMatch ? 'yes' : 'NO', c.pass ? 'PASS' : 'FAIL',
    ])));
    heads.push(`check: ${checks.map((c) => `${c.P} GPUs ${c.pass ? 'PASS' : 'FAIL'}`).join(', ')}`);
  }
  if (weakL.length) {
    const per = weakL[0]!.tokensPerGpu;
    const list = weakL.filter((w) => w.tokensPerGpu === per);
    body.push('', `**Weak scaling** (${fmtTokens(per)} tokens a GPU; forward+backward of one layer, median of ${list[0]!.repeat} after a warm-up; ` +
      'efficiency = 1-GPU time / P-GPU time):', '', ...table(WEAK_HEADER, weakRows(list)));
    heads.push(weakHeadline(list).replace(/^headline: /, ''));
  }
  if (bytesL.length) {
    body.push('', '**Bytes exchanged per GPU** (one forward+backward; counted by NcclCommunicator.traffic: the payload each rank addresses to, ' +
      'and receives from, other ranks, not NCCL\'s ring hops; the fixed P, growing N keeps the same cross-rank patterns, each with w/r = 2048 ' +
      'selected positions a head):', '', ...table(BYTES_HEADER, bytesL.flatMap(bytesRows)));
    heads.push(bytesHeadline(bytesL).replace(/^headline: /, ''));
  }
  if (largestL.length) {
    body.push('', `**Largest sequence** (forward+backward of one layer: N doubles from P x ${fmtTokens(largestL[0]!.startTokensPerGpu)} tokens until out of memory, ` +
      'then bisection steps on a P x 64K grid; each try a fresh process, through the launcher for P > 1; a "timeout" counts as a failure):', '', ...table(LARGEST_HEADER, largestRows(largestL)));
    heads.push(largestHeadline(largestL).replace(/^headline: /, ''));
  }
  let svgNote = '';
  if (fig5L.length) {
    const denseInfo = fig5L.find((f) => f.peer)?.peer as { torch?: string; device?: string } | undefined;
    body.push('', `**Figure 5: forward latency** (median of ${fig5L[0]!.repeat} after a warm-up; dilated = this library, distributed over the GPUs; ` +
      `dense = PyTorch ${denseInfo?.torch ?? '?'} scaled_dot_product_attention, FlashAttention backend, bf16, causal, one GPU ` +
      '(bench/peers/dense_forward.py), stopped where a forward would pass 2 s):', '',
    ...table(['N', ...fig5L.map((f) => `dilated ${f.P} GPU${f.P > 1 ? 's' : ''} ms`), 'dense flash (1 GPU) ms'], fig5Rows(fig5L)));
    const series = [
      ...fig5L.map((f) => ({ label: `dilated, ${f.P} GPU${f.P > 1 ? 's' : ''} (${f.precision})`, points: f.rows.filter((x) => x.status === 'ok').map((x) => [x.N, x.fwdMs!] as [number, number]) })),
      { label: 'dense FlashAttention (bf16, 1 GPU)', dashed: true, color: '#555555', points: fig5L.flatMap((f) => f.dense).filter((x) => x.status === 'ok').map((x) => [x.N, x.fwdMs!] as [number, number]) },
    ];
    const svg = logLogPlotSvg(series, {
      title: 'Attention forward latency against sequence length (LongNet Figure 5, measured)',
      xLabel: 'sequence length N (tokens, log scale)', yLabel: 'forward ms (log scale)', formatX: fmtTokens,
      notes: [`${devices.join(', ')}; B=${B} H=${H} D=${D} causal; ${SCHEDULE}`, `dilated: ${precisions.join('/')} attention; dense: bf16 FlashAttention-2 via SDPA; ${date}`],
    });
    writeFileSync(values.svg!, svg);
    svgNote = relative(join(here, '..'), values.svg!);
    body.push('', `Plot: [${svgNote}](${relative(here, values.svg!)})`);
    heads.push(fig5Headline(fig5L).replace(/^headline: /, ''));
  }
  const train = join(dir, 'parallel-check.log');
  if (existsSync(train)) {
    const lines = readFileSync(train, 'utf8').split('\n').filter((l) => /losses compared/.test(l));
    body.push('', `**Training check** (scripts/device-train-parallel.sh check, 2 GPUs: tiny model, 8 steps at 4096 tokens; sequence parallel, data parallel ` +
      `and a 2-GPU run resumed on 1 GPU, each against 1 GPU): ${lines.length ? lines.join('; ') : 'no comparison lines in the log'}`);
    heads.push(`training check: ${lines.length && lines.every((l) => /agree/.test(l) && !/DISAGREE/.test(l)) ? 'agree' : 'see log'}`);
  }
  const counts = [...new Set([1, ...all.map((x) => x.P), ...checks.map((c) => c.P)])].sort((x, y) => x - y).map(String);
  const ran = counts.length > 1 ? `${counts.slice(0, -1).join(', ')} and ${counts.at(-1)}` : counts[0]!;
  const section = ['', `## ${date}: sequence-parallel attention over NCCL, scaling on ${ran} GPUs (bench/gpu-scaling.ts)`, '', ...body, '',
    `headline: ${heads.join('; ')}`, ''].join('\n');
  if (values.section) writeFileSync(values.section, section);
  if (!values['no-append']) appendFileSync(join(here, 'RESULTS.md'), section);
  console.log(section);
  if (svgNote) console.log(`plot: ${svgNote}`);
  console.log(`headline: ${heads.join('; ')}`);
}

/** Written by bench/gpu-sequence-parallel.ts check. */
export interface CheckJson { P: number; pass: boolean; collectives: boolean; errors: Record<string, number>; bytesMatch: boolean | null }

// ---- main -----------------------------------------------------------------------------------------------

async function rankMain(backend: CudaBackend, comm: Communicator | null, traffic: TrafficLog | null): Promise<void> {
  const rank = comm?.rank ?? 0;
  const r: Rank = { backend, comm, traffic, rank, P: comm?.size ?? 1, log: (s) => { if (rank === 0) console.log(s); } };
  if (mode === 'weak') await weak(r);
  else if (mode === 'bytes') await bytes(r);
  else if (mode === 'fig5') await fig5(r);
  else await trial(r);
}

if (mode === 'record') {
  record();
} else if (mode === 'largest') {
  await largest();
} else if (values.emulate) {
  const { useEmulatedCuda } = await import('../test/cuda-emulator.js');
  const { backend, counters } = useEmulatedCuda();
  backend.setAttentionPrecision(precision);
  if (values['emulate-memory'] !== undefined) {
    // a device of that many bytes: allocations beyond it fail as the addon's do
    const limit = int('emulate-memory', values['emulate-memory']);
    const addon = backend.addon;
    const alloc = addon.alloc.bind(addon);
    addon.alloc = (code, size, zero) => {
      if (counters.liveBytes + 4 * size > limit) {
        throw Object.assign(new Error(`CUDA out of memory: requested ${4 * size} bytes with ${limit - counters.liveBytes} free (emulated)`), { code: 'ERR_CUDA_OUT_OF_MEMORY' });
      }
      return alloc(code, size, zero);
    };
  }
  const P = int('ranks', values.ranks);
  if (P === 1) await rankMain(backend, null, null);
  else {
    const traffic = new TrafficLog(P);
    await runRanks(P, (c) => rankMain(backend, c, traffic), { backend, traffic });
  }
} else {
  const backend = getBackend('cuda') as CudaBackend;
  backend.setAttentionPrecision(precision);
  let comm: Communicator | null = null;
  let traffic: TrafficLog | null = null;
  if (process.env['WORLD_SIZE'] !== undefined && Number(process.env['WORLD_SIZE']) > 1) {
    const { createNcclCommunicator } = await import('../src/backend/cuda/nccl-communicator.js');
    const c = await createNcclCommunicator(backend);
    comm = c;
    traffic = c.traffic;
  }
  await rankMain(backend, comm, traffic);
  if (comm) {
    await comm.barrier();
    (comm as { destroy?: () => void }).destroy?.();
  }
}
process.exit(0);
