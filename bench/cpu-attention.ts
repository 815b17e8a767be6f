/**
 * CPU dilated attention against dense attention, forward and forward+backward, as N grows.
 * Run: node --import tsx bench/cpu-attention.ts   (LONGNET_THREADS to change the thread count)
 * Prints one row per N; the last line is the headline. Appends a dated section to bench/RESULTS.md.
 */
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import type { AttentionConfig, AttentionGeometry } from '../src/backend/backend.js';
import { dilatedAttentionBackward, dilatedAttentionForward } from '../src/backend/cpu/attention-kernel.js';
import { threadCount } from '../src/backend/cpu/thread-pool.js';
import { newTypedArray } from '../src/tensor/dtype.js';

const HEADS = 4;
const HEAD_DIM = 32;
const SCHEDULE: [number, number][] = [[256, 1], [512, 2], [1024, 4], [2048, 8]];
const LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072, 262144];
// Each N reports its fastest forward+backward: over ROUNDS passes over all N (so that a burst of load from
// other processes spoils one pass, not one N), and for small N over more runs, until MIN_MEASURE_MS of them.
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const MIN_MEASURE_MS = 3000;
const DENSE_BUDGET_MS = 45_000; // dense attention is skipped where its predicted fwd+bwd time exceeds this

function config(patterns: [number, number][]): AttentionConfig {
  return {
    patterns: patterns.map(([w, r]) => ({ segmentLength: w, dilationRate: r })),
    causal: true, scale: 1 / Math.sqrt(HEAD_DIM), headOffsets: 'paper',
  };
}

/** Effective forward FLOPs of causal dilated attention (docs/ATTENTION.md); fwd+bwd counts 3.5 times that. */
function forwardFlops(n: number, patterns: [number, number][]): number {
  let f = 0;
  for (const [w, r] of patterns) {
    const wp = Math.min(w, n);
    f += HEADS * (n / wp) * 2 * (wp / r) ** 2 * HEAD_DIM;
  }
  return f;
}

function randomShared(size: number, seed: number): Float32Array {
  const a = newTypedArray('float32', size, true) as Float32Array;
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = x / 2147483648 - 1;
  }
  return a;
}

interface Timing { forwardMs: number; totalMs: number; cpuMs: number }

interface Inputs { q: Float32Array; k: Float32Array; v: Float32Array; dO: Float32Array }
const inputCache = new Map<number, Inputs>();

function inputsFor(n: number): Inputs {
  let x = inputCache.get(n);
  if (x === undefined) {
    const size = n * HEADS * HEAD_DIM;
    x = { q: randomShared(size, 1), k: randomShared(size, 2), v: randomShared(size, 3), dO: randomShared(size, 4) };
    inputCache.set(n, x);
  }
  return x;
}

/** One forward and one backward: wall time of each, and the CPU time of all threads together. */
function measure(n: number, patterns: [number, number][]): Timing {
  const geometry: AttentionGeometry = { batch: 1, seqLen: n, heads: HEADS, headDim: HEAD_DIM };
  const cfg = config(patterns);
  const { q, k, v, dO } = inputsFor(n);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const { o, lse } = dilatedAttentionForward(q, k, v, geometry, cfg);
  const t1 = performance.now();
  dilatedAttentionBackward(q, k, v, o, lse, dO, geometry, cfg);
  const t2 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  return { forwardMs: t1 - t0, totalMs: t2 - t0, cpuMs: (cpu.user + cpu.system) / 1000 };
}

function fastest(a: Timing | undefined, b: Timing): Timing {
  if (a === undefined) return b;
  const min = Math.min;
  return { forwardMs: min(a.forwardMs, b.forwardMs), totalMs: min(a.totalMs, b.totalMs), cpuMs: min(a.cpuMs, b.cpuMs) };
}

const fmt = (x: number, digits = 1) => x.toFixed(digits);
const pad = (s: string, width: number) => s.padStart(width);

function main(): void {
  const threads = threadCount();
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores`;
  const load0 = loadavg()[0]!;
  const schedule = SCHEDULE.map(([w, r]) => `(${w},${r})`).join(' ');
  console.log(`CPU dilated attention: ${machine}, ${threads} threads, Node ${process.version}, load ${fmt(load0, 2)}`);
  console.log(`B=1 H=${HEADS} D=${HEAD_DIM} float32 causal, schedule ${schedule}; fastest of ${ROUNDS} passes over N`);
  console.log('measuring (a few minutes)...');

  // warm up the JIT and start the workers
  for (let i = 0; i < 3; i++) measure(4096, SCHEDULE);
  measure(1024, [[1024, 1]]);

  const dilated = new Map<number, Timing>();
  const spent = new Map<number, number>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const n of LENGTHS) {
      do {
        const t = measure(n, SCHEDULE);
        dilated.set(n, fastest(dilated.get(n), t));
        spent.set(n, (spent.get(n) ?? 0) + t.totalMs);
      } while (round === ROUNDS - 1 && spent.get(n)! < MIN_MEASURE_MS);
    }
    inputCache.clear();
  }

  const dense = new Map<number, Timing>();
  const skipped: string[] = [];
  let last: { n: number; ms: number } | undefined;
  for (const n of LENGTHS) {
    const predicted = last === undefined ? 0 : last.ms * (n / last.n) ** 2;
    if (predicted > DENSE_BUDGET_MS) {
      skipped.push(`N=${n} (about ${fmt(predicted / 1000, 0)} s)`);
      continue;
    }
    const t = measure(n, [[n, 1]]);
    dense.set(n, t);
    last = { n, ms: t.totalMs };
    inputCache.clear();
  }

  const header = [
    'N', 'fwd ms', 'fwd+bwd ms', 'ns/token', 'CPU ns/token', 'GFLOP/s', 'dense fwd+bwd ms', 'dense/dilated',
  ];
  const widths = [8, 10, 12, 10, 13, 9, 18, 14];
  const rows: string[][] = [];
  for (const n of LENGTHS) {
    const t = dilated.get(n)!;
    const d = dense.get(n);
    rows.push([
      String(n), fmt(t.forwardMs), fmt(t.totalMs), fmt((t.totalMs * 1e6) / n, 0), fmt((t.cpuMs * 1e6) / n, 0),
      fmt((3.5 * forwardFlops(n, SCHEDULE)) / (t.totalMs * 1e6), 2),
      d === undefined ? 'skipped' : fmt(d.totalMs), d === undefined ? '' : `${fmt(d.totalMs / t.totalMs, 2)}x`,
    ]);
  }
  console.log(header.map((h, i) => pad(h, widths[i]!)).join(' '));
  for (const row of rows) console.log(row.map((c, i) => pad(c, widths[i]!)).join(' '));
  const why = skipped.length === 0 ? '' : `dense skipped where its fwd+bwd time, extrapolated quadratically from ` +
    `the last measured N, would exceed ${DENSE_BUDGET_MS / 1000} s: ${skipped.join(', ')}`;
  if (why !== '') console.log(why);

  const spreadOf = (xs: number[]) => Math.max(...xs) / Math.min(...xs);
  const wall = spreadOf(LENGTHS.map((n) => dilated.get(n)!.totalMs / n));
  const cpu = spreadOf(LENGTHS.map((n) => dilated.get(n)!.cpuMs / n));
  const denseNs = [...dense].map(([n, t]) => ({ n, perToken: t.totalMs / n }));
  let denseGrowth = 'dense not measured';
  if (denseNs.length >= 2) {
    const a = denseNs[0]!, b = denseNs[denseNs.length - 1]!;
    denseGrowth = `dense time per token grows ${fmt(b.perToken / a.perToken, 2)}x from N=${a.n} to N=${b.n}`;
  }
  const flat = (x: number) => `${fmt(x, 2)} (${x <= 1.2 ? 'flat within 20%' : 'NOT flat within 20%'})`;
  const load1 = loadavg()[0]!;
  const wallNs = LENGTHS.map((n) => (dilated.get(n)!.totalMs * 1e6) / n);
  const headline = `headline: dilated fwd+bwd ${fmt(Math.min(...wallNs), 0)}..${fmt(Math.max(...wallNs), 0)} ns/token; ` +
    `max/min over N=${LENGTHS[0]}..${LENGTHS.at(-1)}: wall ${flat(wall)}, CPU ${flat(cpu)}; ${denseGrowth}`;
  console.log(headline);

  const path = new URL('./RESULTS.md', import.meta.url);
  if (!existsSync(path)) writeFileSync(path, '# Benchmark results\n');
  appendFileSync(path, [
    '',
    `## ${new Date().toISOString().slice(0, 10)} CPU dilated attention (bench/cpu-attention.ts)`,
    '',
    `Machine: ${machine}; ${threads} threads; Node ${process.version}; load average ${fmt(load0, 2)} at start, ` +
      `${fmt(load1, 2)} at end (the machine is shared). B=1, H=${HEADS}, D=${HEAD_DIM}, float32, causal, ` +
      `schedule ${schedule}; peer: dense attention, pattern (N, 1), same kernel. Each N: fastest fwd+bwd of ` +
      `${ROUNDS} passes over all N (small N: more runs, ${MIN_MEASURE_MS / 1000} s in all); CPU ns/token is the ` +
      `CPU time of all threads; GFLOP/s counts 3.5x the forward FLOPs of docs/ATTENTION.md.`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...(why === '' ? [] : [why, '']),
    headline,
    '',
  ].join('\n'));
}

main();
