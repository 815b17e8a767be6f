/**
 * One dilated attention layer's forward over a billion-token sequence, sequence-parallel over NCCL, one
 * process per GPU, on the addon's bf16 buffers (the op alone: no projections):
 *
 *   longnet launch --nproc-per-node 4 -- node --import tsx bench/gpu-billion-forward.ts run
 *   longnet launch --nproc-per-node 4 -- node --import tsx bench/gpu-billion-forward.ts check
 *   node --import tsx bench/gpu-billion-forward.ts run --tokens 268435456     # one GPU, no launcher
 *
 * Options: --tokens N (run: 2^30 = 1,073,741,824 >= 1e9 by default; check: 2^21), --heads H (run 1, check 2),
 * --repeat R (timed runs after one warm-up, default 3), --o bf16|f32 (run: the output's type, bf16 by
 * default: near-floor memory), --first W and --ratio K (the schedule, default 2048 and 8).
 *
 * B = 1, D = 64, causal (check: causal and not). Schedule: geometric, w_i = W K^i and r_i = K^i while w_i < N,
 * then (N, N / W): w / r = W for every pattern and the last one spans the whole sequence. The sequence is
 * split evenly, l = N / P tokens a rank; bench/billion-forward-shard.ts says how the patterns with w <= l
 * stay local (one fused forward) and how those with w > l exchange their selected keys and values within
 * the group of ranks of a segment (one NCCL communicator a group, made once) before attending to them.
 * Inputs are each rank's own shard from the device's random fill (seeded by rank); nothing is ever held
 * for the whole sequence.
 *
 * `run`: per rank, the forward's time (median of R runs after a warm-up; every run starts after a barrier
 * and ends with the stream synchronized), one more run timed phase by phase (pack + exchange, local
 * patterns, cross-rank patterns), the allocator's peak (memoryStats().peakInUse: q, k, v, o, lse and the
 * exchange buffers), the device memory in use by the whole process (deviceTotal - deviceFree: CUDA context
 * and NCCL included), and the bytes each rank sends into and receives from the collectives. Rank 0 prints
 * a table and, last, the headline. A run that does not fit prints a line starting 'does not fit' and the
 * rank exits with status 3 (the launcher then stops every rank).
 * `check`: every rank also computes the single-device forward of the whole sequence on its own GPU (full
 * q, k, v from one random fill; its shard copied out of them), o in float32, and compares its shard of it
 * with the sequence-parallel result, o in float32 and in bf16: max |o - o_ref| / max |o_ref| <= 1e-3 (f32)
 * or 2e-2 (bf16), log-sum-exp within 1e-5 relative (and -Infinity where the reference has it).
 *
 * With OUT set, rank 0 writes $OUT/billion-forward-<mode>-P<P>-N<N>.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createCudaBackend } from '../src/backend/cuda/index.js';
import { BF16_CODE, DTYPE_CODE, type NativeAddon, type NativeComm, type NativeHandle } from '../src/backend/cuda/native.js';
import { rendezvousIds } from '../src/distributed/rendezvous.js';
import { decodeBf16 } from '../src/io/halfFloat.js';
import {
  ShardForward, forwardFlops, geometricSchedule, groupOf, planShards, type Pattern, type ShardPlan,
} from './billion-forward-shard.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tokens: { type: 'string' },
    heads: { type: 'string' },
    repeat: { type: 'string', default: '3' },
    o: { type: 'string', default: 'bf16' },
    first: { type: 'string', default: '2048' },
    ratio: { type: 'string', default: '8' },
  },
});
const mode = positionals[0] ?? 'run';
if (mode !== 'run' && mode !== 'check') {
  console.error(`gpu-billion-forward: unknown mode '${mode}' (run or check)`);
  process.exit(2);
}
const intOption = (name: string, text: string | undefined, fallback: number): number => {
  if (text === undefined) return fallback;
  const x = Number(text.replace(/_/g, '').replace(/^2\^(\d+)$/, (_, e: string) => String(2 ** Number(e))));
  if (!Number.isSafeInteger(x) || x < 1) {
    console.error(`gpu-billion-forward: --${name} ${text} is not a positive integer`);
    process.exit(2);
  }
  return x;
};
const N = intOption('tokens', values.tokens, mode === 'run' ? 2 ** 30 : 2 ** 21);
const H = intOption('heads', values.heads, mode === 'run' ? 1 : 2);
const D = 64;
const repeat = intOption('repeat', values.repeat, 3);
const first = intOption('first', values.first, 2048);
const ratio = intOption('ratio', values.ratio, 8);
if (values.o !== 'bf16' && values.o !== 'f32') {
  console.error(`gpu-billion-forward: --o ${values.o}: expected bf16 or f32`);
  process.exit(2);
}
const O_CODE = values.o === 'f32' ? DTYPE_CODE.float32 : BF16_CODE;
const F32 = DTYPE_CODE.float32, F64 = DTYPE_CODE.float64;

const backend = createCudaBackend();
const a: NativeAddon = backend.addon;
const P = Number(process.env['WORLD_SIZE'] ?? 1);
// under the launcher every rank joins the rendezvous, even alone
const distributed = process.env['WORLD_SIZE'] !== undefined;
let patterns: Pattern[];
let plans: ShardPlan[];
try {
  patterns = geometricSchedule(N, first, ratio);
  plans = [true, ...(mode === 'check' ? [false] : [])].map((causal) => planShards(N, P, H, D, patterns, causal));
} catch (e) {
  console.error(`gpu-billion-forward: ${(e as Error).message}`);
  process.exit(2);
}
const plan0 = plans[0]!;
const l = plan0.l;

// ---- communicators: the world, and one a group for each cross-rank pattern whose groups are not the world ----

interface Comms { rank: number; world: NativeComm | null; byPattern: (NativeComm | null)[]; all: NativeComm[] }

async function communicators(): Promise<Comms> {
  if (!distributed) return { rank: 0, world: null, byPattern: plan0.cross.map(() => null), all: [] };
  const info = a.ncclInfo();
  if (!info.ok) throw new Error(`NCCL unavailable: ${info.reason}`);
  // ids: the world's, then for each cross pattern narrower than the world one per group
  const layout: { pattern: number; groups: number }[] = plan0.cross.map((c, i) => ({ pattern: i, groups: c.ranks < P ? P / c.ranks : 0 }));
  const count = 1 + layout.reduce((s, x) => s + x.groups, 0);
  const r = await rendezvousIds(process.env, count, () => a.ncclUniqueId());
  const id = r.id;
  const world = a.ncclCommInit(id(0), r.size, r.rank);
  const all = [world];
  const byPattern: (NativeComm | null)[] = [];
  let next = 1;
  for (const [i, c] of plan0.cross.entries()) {
    if (c.ranks === P) {
      byPattern.push(world);
      continue;
    }
    const g = groupOf(c, r.rank);
    // every rank walks the patterns in the same order, so each group's members initialize together
    const comm = a.ncclCommInit(id(next + g.index), c.ranks, g.member);
    all.push(comm);
    byPattern.push(comm);
    next += layout[i]!.groups;
  }
  return { rank: r.rank, world, byPattern, all };
}

const comms = await communicators();
const rank = comms.rank;
const log = (s: string): void => { if (rank === 0) console.log(s); };
const one = a.alloc(F32, 1, true);
const oneSum = a.alloc(F32, 1, true);

/** Every rank's queued work, NCCL included, has finished when it returns. */
function barrier(): void {
  if (comms.world) a.ncclAllReduce(comms.world, one, oneSum, 'sum');
  a.synchronize();
  if (comms.world) {
    const e = a.ncclAsyncError(comms.world);
    if (e !== '') throw new Error(`NCCL failed: ${e}`);
  }
}

/** The values of every rank, in rank order (float64 through the world communicator). */
function gatherNumbers(xs: number[]): number[][] {
  if (!comms.world) return [xs];
  const send = a.alloc(F64, xs.length, false), recv = a.alloc(F64, xs.length * P, false);
  a.upload(send, Float64Array.from(xs));
  a.ncclAllGather(comms.world, send, recv);
  const out = new Float64Array(xs.length * P);
  a.download(recv, out);
  a.free(send);
  a.free(recv);
  return Array.from({ length: P }, (_, r) => Array.from(out.subarray(r * xs.length, (r + 1) * xs.length)));
}

/** Queues one forward: pack, exchange (k and v of a pattern in one NCCL group), attend. */
function forward(f: ShardForward, phases?: number[]): void {
  const mark = (): void => {
    if (!phases) return;
    a.synchronize();
    phases.push(performance.now());
  };
  mark();
  f.pack();
  f.plan.cross.forEach((c, i) => {
    const x = f.exchanges[i]!;
    const comm = comms.byPattern[i];
    if (comm) {
      a.ncclGroupStart();
      try {
        a.ncclAllGather(comm, x.sendK, x.recvK);
        a.ncclAllGather(comm, x.sendV, x.recvV);
      } finally {
        a.ncclGroupEnd();
      }
    } else {
      throw new Error(`pattern (${c.w}, ${c.r}) crosses ranks but there is no communicator`); // one rank has none
    }
  });
  mark();
  f.attend(mark);
}

const GiB = 2 ** 30;
const fmtGiB = (b: number): string => `${(b / GiB).toFixed(2)} GiB`;
const fmtBytes = (b: number): string => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function describePlan(p: ShardPlan): string {
  const cross = p.cross.map((c) => `(${c.w}, ${c.r}) in groups of ${c.ranks} rank${c.ranks > 1 ? 's' : ''}, ${c.rows} rows a head a rank`);
  return `local: ${p.local.map(([w, r]) => `(${w}, ${r})`).join(' ') || 'none'}; cross-rank: ${cross.join('; ') || 'none'}`;
}

function writeJson(result: Record<string, unknown>): void {
  const out = process.env['OUT'];
  if (!out || rank !== 0) return;
  mkdirSync(out, { recursive: true });
  const file = join(out, `billion-forward-${mode}-P${P}-N${N}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${file}`);
}

function allocOrExit(code: number, size: number, what: string, need: number): NativeHandle {
  try {
    return a.alloc(code, size, false);
  } catch (e) {
    const s = a.memoryStats();
    console.error(`rank ${rank}: out of memory allocating ${what}: the run needs about ${fmtGiB(need)} a GPU ` +
      `(${fmtGiB(s.inUse)} held, ${fmtGiB(s.deviceFree)} free of ${fmtGiB(s.deviceTotal)}): ${(e as Error).message.split('\n')[0]}`);
    console.log(`does not fit: N = ${N} on ${P} GPU${P > 1 ? 's' : ''} needs about ${fmtGiB(need)} a GPU`);
    process.exit(3);
  }
}

// ---- run --------------------------------------------------------------------------------------------------

async function run(): Promise<boolean> {
  const oBytes = O_CODE === BF16_CODE ? 2 : 4;
  const need = l * H * D * (3 * 2 + oBytes) + l * H * 4;
  const total = forwardFlops(N, H, D, patterns);
  log(`billion-token forward: N = ${N.toLocaleString('en-US')} tokens (>= 1e9: ${N >= 1e9}), P = ${P} GPU${P > 1 ? 's' : ''}, ` +
    `l = ${l.toLocaleString('en-US')} tokens a GPU, B = 1, H = ${H}, D = ${D}, causal, q k v bf16, o ${values.o}, lse f32; ` +
    `device ${backend.info.name}`);
  log(`schedule (w, r): ${patterns.map(([w, r]) => `(${w}, ${r})`).join(' ')}`);
  log(describePlan(plan0));
  log(`inputs and outputs: ${fmtGiB(need)} a GPU; forward ${(total / 1e15).toFixed(3)} PFLOP in all (docs/ATTENTION.md count)`);
  a.synchronize();
  a.emptyCache();
  a.resetPeakMemory();
  const before = a.memoryStats();
  const io = {
    q: allocOrExit(BF16_CODE, l * H * D, 'q', need), k: allocOrExit(BF16_CODE, l * H * D, 'k', need),
    v: allocOrExit(BF16_CODE, l * H * D, 'v', need), o: allocOrExit(O_CODE, l * H * D, 'o', need), lse: allocOrExit(F32, l * H, 'lse', need),
  };
  // every rank its own shard; seeds far apart so that no two (rank, tensor) fills coincide
  [io.q, io.k, io.v].forEach((x, i) => a.fillRandomNormal(x, 1_000_003 * rank + i + 1, 1));
  const f = new ShardForward(a, plan0, rank, io);
  const times: number[] = [];
  for (let it = 0; it <= repeat; it++) {
    barrier();
    const t0 = performance.now();
    forward(f);
    a.synchronize();
    const ms = performance.now() - t0;
    if (it > 0) times.push(ms);
    log(`  ${it === 0 ? 'warm-up' : `run ${it}`}: rank 0 ${ms.toFixed(1)} ms`);
  }
  barrier();
  const marks: number[] = [];
  forward(f, marks);
  // marks: start, after pack + exchange, after the local patterns, after each cross-rank pattern
  const phase = marks.slice(1).map((t, i) => t - marks[i]!);
  const phaseMs = [phase[0] ?? 0, phase[1] ?? 0, phase.slice(2).reduce((s, x) => s + x, 0)];
  const after = a.memoryStats();
  // the forward wrote numbers everywhere: (2048, 1) selects every row, so no lse is -Infinity either
  const finite = a.allFinite(io.o) && a.allFinite(io.lse);
  const bytes = f.bytes();
  const mine = [
    median(times), Math.min(...times), Math.max(...times), after.peakInUse - before.inUse, after.peakInUse,
    after.deviceTotal - after.deviceFree, after.deviceTotal, bytes.sent, bytes.received, ...phaseMs, finite ? 1 : 0,
  ];
  const all = gatherNumbers(mine);
  f.free();
  for (const h of Object.values(io)) a.free(h);
  if (rank === 0) {
    console.log('rank  median ms    min ms    max ms  pack+exch ms  local ms  cross ms  peak (allocator)  device in use   sent     received');
    for (const [r, x] of all.entries()) {
      console.log(`${String(r).padStart(4)}  ${x[0]!.toFixed(1).padStart(9)} ${x[1]!.toFixed(1).padStart(9)} ${x[2]!.toFixed(1).padStart(9)} ` +
        `${x[9]!.toFixed(2).padStart(13)} ${x[10]!.toFixed(1).padStart(9)} ${x[11]!.toFixed(2).padStart(9)} ` +
        `${fmtGiB(x[4]!).padStart(17)} ${fmtGiB(x[5]!).padStart(14)} ${fmtBytes(x[7]!).padStart(9)} ${fmtBytes(x[8]!).padStart(10)}`);
    }
  }
  const layerMs = Math.max(...all.map((x) => x[0]!));
  const peak = Math.max(...all.map((x) => x[4]!));
  const used = Math.max(...all.map((x) => x[5]!));
  const received = Math.max(...all.map((x) => x[8]!));
  const result = {
    mode, N, P, l, B: 1, H, D, causal: true, oType: values.o, patterns, local: plan0.local, cross: plan0.cross,
    device: backend.info.name, repeat,
    perRank: all.map((x, r) => ({
      rank: r, medianMs: x[0], minMs: x[1], maxMs: x[2], peakAllocatedBytes: x[4], deviceUsedBytes: x[5], deviceTotalBytes: x[6],
      bytesSent: x[7], bytesReceived: x[8], packExchangeMs: x[9], localMs: x[10], crossMs: x[11],
    })),
    forwardMs: layerMs, flops: total, tflopsPerGpu: total / P / (layerMs / 1e3) / 1e12, nsPerToken: (layerMs * 1e6) / N,
    peakAllocatedBytesPerGpu: peak, deviceUsedBytesPerGpu: used, bytesReceivedPerGpu: received,
  };
  writeJson(result);
  log(`${N >= 1e9 ? '1B-token forward' : 'forward'}: N = ${N.toLocaleString('en-US')} tokens on ${P} x ${backend.info.name}, H = ${H}, D = ${D}, causal, ` +
    `${patterns.length} patterns: ${(layerMs / 1e3).toFixed(3)} s (slowest rank's median of ${repeat}), ` +
    `${result.tflopsPerGpu.toFixed(0)} TFLOP/s a GPU; memory per GPU ${fmtGiB(peak)} allocated at peak, ${fmtGiB(used)} in use on the device ` +
    `(of ${fmtGiB(all[0]![6]!)}); ${fmtBytes(received)} received per GPU`);
  const bad = all.flatMap((x, r) => (x[12] === 1 ? [] : [r]));
  if (bad.length > 0) log(`FAIL: non-finite values in o or lse on rank${bad.length > 1 ? 's' : ''} ${bad.join(', ')}`);
  return finite;
}

// ---- check ------------------------------------------------------------------------------------------------

function read(h: NativeHandle, size: number, code: number): Float32Array {
  if (code === BF16_CODE) {
    const bits = new Uint16Array(size);
    a.download(h, bits);
    const out = new Float32Array(size);
    decodeBf16(bits, out);
    return out;
  }
  const out = new Float32Array(size);
  a.download(h, out);
  return out;
}

async function check(): Promise<boolean> {
  const n = N * H * D, ln = l * H * D;
  log(`check: N = ${N} on P = ${P} GPU${P > 1 ? 's' : ''} (l = ${l}), B = 1, H = ${H}, D = ${D}, device ${backend.info.name}`);
  log(`schedule (w, r): ${patterns.map(([w, r]) => `(${w}, ${r})`).join(' ')}`);
  log(describePlan(plan0));
  const [qF, kF, vF] = [1, 2, 3].map((s) => {
    const h = a.alloc(BF16_CODE, n, false);
    a.fillRandomNormal(h, 7919 * s, 1);
    return h;
  }) as [NativeHandle, NativeHandle, NativeHandle];
  const shard = (full: NativeHandle): NativeHandle => {
    const h = a.alloc(BF16_CODE, ln, false);
    a.copyRows(h, 0, full, rank * l * H, 1, l * H, D);
    return h;
  };
  const [q, k, v] = [qF, kF, vF].map(shard) as [NativeHandle, NativeHandle, NativeHandle];
  let ok = true;
  const results: Record<string, unknown>[] = [];
  for (const plan of plans) {
    const { causal } = plan;
    const oRef = a.alloc(F32, n, false), lseRef = a.alloc(F32, N * H, false);
    a.flashAttentionForward(qF, kF, vF, oRef, lseRef, 1, N, H, D, patterns.flat(), causal, plan.scale, false);
    const oRefShard = a.alloc(F32, ln, false), lseRefShard = a.alloc(F32, l * H, false);
    a.copyRows(oRefShard, 0, oRef, rank * l * H, 1, l * H, D);
    a.copyRows(lseRefShard, 0, lseRef, rank * l * H, 1, l * H, 1);
    const want = read(oRefShard, ln, F32), wantLse = read(lseRefShard, l * H, F32);
    for (const h of [oRef, lseRef, oRefShard, lseRefShard]) a.free(h);
    for (const [name, code, tol] of [['f32', F32, 1e-3], ['bf16', BF16_CODE, 2e-2]] as const) {
      const o = a.alloc(code, ln, false), lse = a.alloc(F32, l * H, false);
      a.fill(o, Number.NaN);
      a.fill(lse, Number.NaN);
      const f = new ShardForward(a, plan, rank, { q, k, v, o, lse });
      barrier();
      forward(f);
      a.synchronize();
      const got = read(o, ln, code), gotLse = read(lse, l * H, F32);
      let err = 0, mag = 0, lseErr = 0, bad = 0;
      for (let i = 0; i < ln; i++) {
        const x = got[i]!, y = want[i]!;
        if (!Number.isFinite(x)) bad++;
        err = Math.max(err, Math.abs(x - y));
        mag = Math.max(mag, Math.abs(y));
      }
      for (let i = 0; i < l * H; i++) {
        const x = gotLse[i]!, y = wantLse[i]!;
        if (y === -Infinity || x === -Infinity) {
          if (x !== y) bad++;
          continue;
        }
        if (!Number.isFinite(x)) bad++;
        lseErr = Math.max(lseErr, Math.abs(x - y) / Math.max(1, Math.abs(y)));
      }
      const rel = err / Math.max(mag, 1e-30);
      const pass = bad === 0 && rel <= tol && lseErr <= 1e-5;
      ok &&= pass;
      console.log(`rank ${rank} causal=${causal} o ${name}: o max relative error ${rel.toExponential(2)} (limit ${tol}), ` +
        `lse ${lseErr.toExponential(2)} (limit 1e-5)${bad ? `, ${bad} non-finite or mismatched` : ''} ${pass ? 'PASS' : 'FAIL'}`);
      results.push({ rank, causal, o: name, oRelativeError: rel, lseRelativeError: lseErr, bad, pass });
      f.free();
      a.free(o);
      a.free(lse);
    }
  }
  for (const h of [qF, kF, vF, q, k, v]) a.free(h);
  const passes = gatherNumbers([ok ? 1 : 0]).map((x) => x[0] === 1);
  const allOk = passes.every(Boolean);
  writeJson({ mode, N, P, l, H, D, patterns, local: plan0.local, cross: plan0.cross, device: backend.info.name, rank0: results, pass: allOk });
  log(`check: N = ${N}, P = ${P}: ${allOk ? 'PASS' : `FAIL (ranks ${passes.flatMap((p, r) => (p ? [] : [r])).join(', ')})`}`);
  return ok;
}

const ok = mode === 'check' ? await check() : await run();
if (comms.world) {
  barrier();
  for (const c of comms.all.reverse()) a.ncclCommDestroy(c);
}
a.free(one);
a.free(oneSum);
process.exit(ok ? 0 : 1);
