/**
 * Dilated attention on one GPU with the fused bf16 kernels, against PyTorch peers: torchscale's DilatedAttention
 * step for step on PyTorch's FlashAttention kernel (bench/peers/torchscale_dilated.py), the same algorithm with
 * its data movement cut to one gather and one scatter (bench/peers/gather_dilated.py, "torchscale-gather"), and
 * dense causal attention through scaled_dot_product_attention with the FlashAttention and cuDNN backends
 * (bench/peers/dense_sdpa.py).
 * B = 1, H = 12, D = 64, bf16 inputs, causal, the paper's schedule w = {2048, ..., 32768}, r = {1, 2, 4, 6, 12};
 * N from 32768, doubling, until every implementation is out of memory (or --max).
 *
 *   node --import tsx bench/gpu-dilated-attention.ts [--quick] [--record] [--min N] [--max N]
 *        [--peers torchscale,gather,dense] [--python python3] [--svg PATH] [--section PATH]
 *
 * For each N and implementation: forward ms, forward+backward ms (median of 3 to 10 runs after a warm-up,
 * synchronized), ns per token, effective TFLOP/s (docs/ATTENTION.md: forward sum_i H (N/w') 2 (w'/r_i)^2 D,
 * forward+backward 3.5 times that; dense attention counts as the single pattern (N, 1)), peak memory per
 * token over one forward+backward (inputs, dO, outputs and gradients included), and the speed relative to
 * the two torchscale peers. Ours: q, k, v and dO in bf16 from the device's random fill, o, lse, Dsum, dq, dk, dv
 * in float32; the backward's buffers are allocated after the forward's outputs, so the peak is that of a
 * training step. The peers run first, each in a child process of its own (it prints JSON lines), so that
 * every implementation has the whole card. Prints one table, the N from which dilated attention beats
 * dense, writes a log-log plot of time against N (bench/dilated-attention.svg, or --svg), and with --record
 * appends a dated section to bench/RESULTS.md (--section PATH writes that section to PATH as well).
 * --quick stops at N = 131072. The last line is the headline: ours against torchscale (and torchscale-gather)
 * at the largest N both ran.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cudaAvailable, createCudaBackend } from '../src/backend/cuda/index.js';
import { BF16_CODE, DTYPE_CODE, type NativeHandle } from '../src/backend/cuda/native.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    record: { type: 'boolean', default: false },
    min: { type: 'string', default: '32768' },
    max: { type: 'string' },
    peers: { type: 'string', default: 'torchscale,gather,dense' },
    python: { type: 'string', default: 'python3' },
    svg: { type: 'string', default: join(here, 'dilated-attention.svg') },
    section: { type: 'string' },
    'dense-max-seconds': { type: 'string', default: '8' },
    'budget-seconds': { type: 'string', default: '2' },
  },
});

const B = 1, H = 12, D = 64;
const W = [2048, 4096, 8192, 16384, 32768];
const R = [1, 2, 4, 6, 12];
const minN = Number(values.min);
const maxN = Number(values.max ?? (values.quick ? 131072 : 2 ** 24));
const budgetSeconds = Number(values['budget-seconds']);
const lengths: number[] = [];
for (let n = minN; n <= maxN; n *= 2) lengths.push(n);
if (lengths.length === 0 || !lengths.every((n) => Number.isInteger(n) && n > 0)) {
  console.error(`bench: --min ${values.min} --max ${values.max ?? ''} gives no sequence lengths`);
  process.exit(2);
}

type Status = 'ok' | 'oom' | 'skipped' | 'error';
interface Row { impl: string; N: number; status: Status; fwdMs?: number; totalMs?: number; peakBytes?: number; reason?: string; dsumMs?: number }
const OURS = 'longnet';
const TORCHSCALE = 'torchscale';
const GATHER = 'torchscale-gather';
const DENSE = ['dense-flash', 'dense-cudnn'];

/** Forward FLOPs of docs/ATTENTION.md for patterns (w, r) at length N. */
function flopsForward(N: number, patterns: readonly (readonly [number, number])[]): number {
  let f = 0;
  for (const [w0, r] of patterns) {
    const w = Math.min(w0, N);
    f += H * (N / w) * 2 * (w / r) ** 2 * D;
  }
  return B * f;
}
const flopsOf = (impl: string, N: number): number =>
  flopsForward(N, impl.startsWith('dense') ? [[N, 1]] : W.map((w, i) => [w, R[i]!] as const));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}

// ---- the peers, first, each with the card to itself --------------------------------------------------

interface PeerInfo { torch?: string; device?: string; cuda?: string; cudnn?: number }
const rows: Row[] = [];
const peerInfo: PeerInfo = {};
const notes: string[] = [];

function runPeer(script: string, extra: string[]): Promise<void> {
  const args = [
    join(here, 'peers', script), '--lengths', lengths.join(','), '--heads', String(H), '--dim', String(D), '--batch', String(B),
    '--segments', W.join(','), '--dilations', R.join(','), '--budget-seconds', String(budgetSeconds), ...extra,
  ];
  return new Promise((resolvePromise) => {
    const child = spawn(values.python!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let errText = '';
    const handle = (line: string): void => {
      if (!line.trim()) return;
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line) as Record<string, unknown>;
      } catch {
        process.stderr.write(`# ${script}: ${line}\n`);
        return;
      }
      if (obj['kind'] === 'info') Object.assign(peerInfo, obj);
      else if (obj['kind'] === 'check') {
        const err = Number(obj['max_abs_err']);
        notes.push(`${String(obj['impl'])} peer against the definition (N=384, 3 patterns, bf16): max abs error ${err.toExponential(2)}` +
          ` of values up to ${Number(obj['max_abs']).toFixed(2)}${err > 0.05 ? ' (TOO LARGE: the peer does not compute dilated attention)' : ''}`);
      } else if (obj['kind'] === 'result') {
        const row: Row = { impl: String(obj['impl']), N: Number(obj['N']), status: obj['status'] as Status };
        if (row.status === 'ok') {
          row.fwdMs = Number(obj['fwd_ms']);
          row.totalMs = Number(obj['fwdbwd_ms']);
          row.peakBytes = Number(obj['peak_bytes']);
        }
        if (typeof obj['reason'] === 'string') row.reason = obj['reason'];
        rows.push(row);
        process.stderr.write(`# ${describe(row)}\n`);
      }
    };
    createInterface({ input: child.stdout }).on('line', handle);
    child.stderr.on('data', (d: Buffer) => { errText += d.toString(); process.stderr.write(d); });
    child.on('error', (e) => {
      notes.push(`${script} did not run: ${e.message}`);
      resolvePromise();
    });
    child.on('close', (code) => {
      if (code !== 0) {
        const last = errText.trim().split('\n').pop() ?? '';
        notes.push(`${script} exited with status ${code}${last ? `: ${last}` : ''}`);
      }
      resolvePromise();
    });
  });
}

function describe(r: Row): string {
  if (r.status !== 'ok') return `${r.impl} N=${r.N} ${r.status}${r.reason ? ` (${r.reason})` : ''}`;
  const dsum = r.dsumMs === undefined ? '' : ` (Dsum ${r.dsumMs.toFixed(2)} ms)`;
  return `${r.impl} N=${r.N} fwd ${r.fwdMs!.toFixed(2)} ms, fwd+bwd ${r.totalMs!.toFixed(2)} ms${dsum}, peak ${(r.peakBytes! / r.N / 1024).toFixed(1)} KB/token`;
}

const peers = values.peers!.split(',').map((p) => p.trim()).filter(Boolean);
if (peers.includes('torchscale')) await runPeer('torchscale_dilated.py', []);
if (peers.includes('gather')) await runPeer('gather_dilated.py', []);
if (peers.includes('dense')) await runPeer('dense_sdpa.py', ['--max-seconds', values['dense-max-seconds']!, '--backends', 'flash,cudnn']);

// ---- ours ----------------------------------------------------------------------------------------------

const g = createCudaBackend();
const a = g.addon;
const F32 = DTYPE_CODE.float32;
const patterns = W.flatMap((w, i) => [w, R[i]!]);
const scale = 1 / Math.sqrt(D);

function time(fn: () => void): number {
  fn();
  g.synchronize();
  const times: number[] = [];
  let spent = 0;
  while (times.length < 3 || (times.length < 10 && spent < budgetSeconds * 1e3)) {
    const t0 = performance.now();
    fn();
    g.synchronize();
    const dt = performance.now() - t0;
    times.push(dt);
    spent += dt;
  }
  return median(times);
}

function measureOurs(N: number): Row {
  const rowsN = B * N * H, n = rowsN * D;
  const geometry = [B, N, H, D, patterns, true, scale, false] as const;
  g.synchronize();
  g.emptyCache();
  const base = g.memoryStats().inUse;
  g.resetPeakMemory();
  const held: NativeHandle[] = [];
  const alloc = (code: number, size: number): NativeHandle => {
    const h = a.alloc(code, size, false);
    held.push(h);
    return h;
  };
  try {
    const [q, k, v] = [alloc(BF16_CODE, n), alloc(BF16_CODE, n), alloc(BF16_CODE, n)];
    [q, k, v].forEach((x, i) => a.fillRandomNormal(x, 1000 * N + i, 1));
    // o in bf16, like q, k, v and dO: the patterns merge in bf16 storage (fp32 arithmetic), which keeps
    // memory near the floor; lse, Dsum and the gradient accumulators stay float32
    const o = alloc(BF16_CODE, n), lse = alloc(F32, rowsN);
    const forward = (): void => a.flashAttentionForward(q, k, v, o, lse, ...geometry);
    forward();
    // the backward's buffers after the forward's outputs, as in a training step
    const dO = alloc(BF16_CODE, n);
    a.fillRandomNormal(dO, 1000 * N + 3, 1);
    const dsum = alloc(F32, rowsN), dq = alloc(F32, n), dk = alloc(F32, n), dv = alloc(F32, n);
    const backward = (): void => {
      a.attentionDsum(o, dO, dsum, rowsN, D);
      a.flashAttentionBackward(q, k, v, dO, lse, dsum, dq, dk, dv, ...geometry);
    };
    backward();
    g.synchronize();
    const peakBytes = g.memoryStats().peakInUse - base;
    const fwdMs = time(forward);
    const totalMs = time(() => {
      forward();
      backward();
    });
    const dsumMs = time(() => a.attentionDsum(o, dO, dsum, rowsN, D));  // part of the backward, for the log
    const bad = ([['o', o], ['lse', lse], ['dq', dq], ['dk', dk], ['dv', dv]] as const).filter(([, x]) => !a.allFinite(x)).map(([name]) => name);
    if (bad.length) return { impl: OURS, N, status: 'error', reason: `non-finite values in ${bad.join(', ')}` };
    return { impl: OURS, N, status: 'ok', fwdMs, totalMs, peakBytes, dsumMs };
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_CUDA_OUT_OF_MEMORY') return { impl: OURS, N, status: 'oom' };
    return { impl: OURS, N, status: 'error', reason: (e instanceof Error ? e.message : String(e)).split('\n')[0] };
  } finally {
    for (const h of held) a.free(h);
    g.emptyCache();
  }
}

{
  let stopped: Status | null = null;
  for (const N of lengths) {
    const row: Row = stopped ? { impl: OURS, N, status: stopped } : measureOurs(N);
    if (row.status !== 'ok') stopped ??= row.status === 'error' ? 'skipped' : row.status;
    rows.push(row);
    process.stderr.write(`# ${describe(row)}\n`);
  }
}

// ---- report --------------------------------------------------------------------------------------------

const impls = [OURS, TORCHSCALE, GATHER, ...DENSE].filter((i) => rows.some((r) => r.impl === i));
const find = (impl: string, N: number): Row | undefined => rows.find((r) => r.impl === impl && r.N === N);
const ok = (impl: string, N: number): Row | undefined => {
  const r = find(impl, N);
  return r?.status === 'ok' ? r : undefined;
};

const header = '| N | implementation | fwd ms | fwd+bwd ms | ns/token | fwd TFLOP/s | fwd+bwd TFLOP/s | peak bytes/token | vs torchscale | vs torchscale-gather |';
const table = [header, '|---|---|---|---|---|---|---|---|---|---|'];
for (const N of lengths) {
  for (const impl of impls) {
    const r = find(impl, N);
    if (!r) continue;
    if (r.status !== 'ok') {
      table.push(`| ${N} | ${impl} | ${r.status}${r.reason ? `: ${r.reason}` : ''} | | | | | | | |`);
      continue;
    }
    const f = flopsOf(impl, N);
    const ratio = (peer: string): string => {
      const p = ok(peer, N);
      return p ? `${(p.totalMs! / r.totalMs!).toFixed(2)}x` : '';
    };
    table.push(
      `| ${N} | ${impl} | ${r.fwdMs!.toFixed(2)} | ${r.totalMs!.toFixed(2)} | ${((r.totalMs! * 1e6) / (B * N)).toFixed(1)} | ` +
      `${(f / r.fwdMs! / 1e9).toFixed(1)} | ${((3.5 * f) / r.totalMs! / 1e9).toFixed(1)} | ${Math.round(r.peakBytes! / (B * N))} | ` +
      `${ratio(TORCHSCALE)} | ${ratio(GATHER)} |`,
    );
  }
}

/** The smallest N from which `impl` is faster (fwd+bwd) than the fastest dense backend at every measured N. */
function crossover(impl: string): string {
  const common = lengths.filter((N) => ok(impl, N) && DENSE.some((d) => ok(d, N)));
  if (common.length === 0) return `${impl} vs dense: no length where both ran`;
  const faster = (N: number): boolean => ok(impl, N)!.totalMs! < Math.min(...DENSE.map((d) => ok(d, N)?.totalMs ?? Infinity));
  let from = -1;
  for (let i = common.length - 1; i >= 0 && faster(common[i]!); i--) from = i;
  if (from === 0) return `${impl} is faster than dense attention at every N measured (${common[0]} to ${common.at(-1)})`;
  if (from < 0) return `${impl} is slower than dense attention at every N measured (${common[0]} to ${common.at(-1)})`;
  return `${impl} beats dense attention from N = ${common[from]} (slower at ${common[from - 1]}), measured to N = ${common.at(-1)}`;
}
const crossovers = [OURS, TORCHSCALE, GATHER].filter((i) => impls.includes(i)).map(crossover);

const speed = (ratio: number): string => (ratio >= 1 ? `${ratio.toFixed(2)}x faster` : `${(1 / ratio).toFixed(2)}x slower`);

function headline(): string {
  const both = lengths.filter((N) => ok(OURS, N) && ok(TORCHSCALE, N));
  const fmt = (r: Row): string =>
    `${r.totalMs!.toFixed(2)} ms fwd+bwd (${((r.totalMs! * 1e6) / (B * r.N)).toFixed(1)} ns/token, ` +
    `${((3.5 * flopsOf(r.impl, r.N)) / r.totalMs! / 1e9).toFixed(1)} TFLOP/s, ${(r.peakBytes! / (B * r.N) / 1024).toFixed(1)} KB/token)`;
  if (both.length === 0) {
    const mine = lengths.filter((N) => ok(OURS, N));
    if (mine.length === 0) return 'headline: longnet did not run at any N';
    const N0 = mine.at(-1)!;
    return `headline: N=${N0}: longnet ${fmt(ok(OURS, N0)!)}; torchscale peer not measured at any N longnet ran`;
  }
  const N0 = both.at(-1)!;
  const mine = ok(OURS, N0)!, theirs = ok(TORCHSCALE, N0)!;
  const largestMine = lengths.filter((N) => ok(OURS, N)).at(-1)!;
  const beyond = largestMine > N0 ? `; longnet runs to N=${largestMine}, torchscale ${find(TORCHSCALE, N0 * 2)?.status ?? 'not measured'} at N=${N0 * 2}` : '';
  const lean = ok(GATHER, N0);
  const leanPart = lean ? `; vs torchscale-gather ${fmt(lean)}: ${speed(lean.totalMs! / mine.totalMs!)}` : '';
  return `headline: N=${N0}: longnet ${fmt(mine)} vs torchscale ${fmt(theirs)}: ${speed(theirs.totalMs! / mine.totalMs!)}${leanPart}${beyond}`;
}

// ---- plot ------------------------------------------------------------------------------------------------

function plotSvg(): string {
  const width = 820, height = 460;
  const m = { left: 72, right: 200, top: 44, bottom: 56 };
  const colors: Record<string, string> = { [OURS]: '#d62728', [TORCHSCALE]: '#1f77b4', [GATHER]: '#17becf', 'dense-flash': '#2ca02c', 'dense-cudnn': '#9467bd' };
  const pts = rows.filter((r) => r.status === 'ok');
  const esc = (s: string): string => s.replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c]!);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${m.left}" y="24" font-size="14">${esc(`Causal attention, forward+backward, B=1 H=12 D=64 bf16 (${g.info.name})`)}</text>`,
  ];
  if (pts.length === 0) {
    out.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle">no measurements</text>`, '</svg>');
    return out.join('\n');
  }
  const lx = (N: number): number => Math.log2(N);
  const ly = (ms: number): number => Math.log10(ms);
  const x0 = lx(Math.min(...pts.map((p) => p.N))) - 0.3, x1 = lx(Math.max(...pts.map((p) => p.N))) + 0.3;
  const y0 = Math.floor(ly(Math.min(...pts.map((p) => p.totalMs!)))), y1 = Math.ceil(ly(Math.max(...pts.map((p) => p.totalMs!))));
  const px = (N: number): number => m.left + ((lx(N) - x0) / (x1 - x0)) * (width - m.left - m.right);
  const py = (ms: number): number => height - m.bottom - ((ly(ms) - y0) / Math.max(y1 - y0, 1)) * (height - m.top - m.bottom);
  const plotBottom = height - m.bottom, plotRight = width - m.right;
  for (let e = y0; e <= y1; e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${m.left}" y1="${y}" x2="${plotRight}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.left - 6}" y="${y + 4}" text-anchor="end">${10 ** e >= 1 ? 10 ** e : (10 ** e).toPrecision(1)}</text>`);
  }
  for (const N of lengths.filter((n) => lx(n) >= x0 && lx(n) <= x1)) {
    const x = px(N);
    const label = N >= 2 ** 20 ? `${N / 2 ** 20}M` : `${N / 1024}K`;
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${plotBottom}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${plotBottom + 18}" text-anchor="middle">${label}</text>`);
  }
  out.push(`<line x1="${m.left}" y1="${plotBottom}" x2="${plotRight}" y2="${plotBottom}" stroke="#333"/>`);
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${plotBottom}" stroke="#333"/>`);
  out.push(`<text x="${(m.left + plotRight) / 2}" y="${height - 16}" text-anchor="middle">sequence length N (tokens, log scale)</text>`);
  out.push(`<text transform="translate(18 ${(m.top + plotBottom) / 2}) rotate(-90)" text-anchor="middle">forward+backward ms (log scale)</text>`);
  impls.forEach((impl, i) => {
    const series = pts.filter((p) => p.impl === impl).sort((p, q) => p.N - q.N);
    const color = colors[impl] ?? '#333';
    if (series.length) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${series.map((p) => `${px(p.N).toFixed(1)},${py(p.totalMs!).toFixed(1)}`).join(' ')}"/>`);
      for (const p of series) out.push(`<circle cx="${px(p.N).toFixed(1)}" cy="${py(p.totalMs!).toFixed(1)}" r="3" fill="${color}"/>`);
    }
    const oom = rows.find((r) => r.impl === impl && r.status === 'oom');
    const ly0 = m.top + 10 + i * 20;
    out.push(`<line x1="${plotRight + 12}" y1="${ly0}" x2="${plotRight + 32}" y2="${ly0}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${plotRight + 38}" y="${ly0 + 4}">${esc(impl + (oom ? ` (OOM at ${oom.N >= 2 ** 20 ? `${oom.N / 2 ** 20}M` : `${oom.N / 1024}K`})` : ''))}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

writeFileSync(values.svg!, plotSvg() + '\n');

const peerLine = peerInfo.torch
  ? `PyTorch ${peerInfo.torch} (CUDA ${peerInfo.cuda ?? '?'}, cuDNN ${peerInfo.cudnn ?? '?'})`
  : 'PyTorch peers did not run';
const lines = [
  `device: ${g.info.name} (${(g.info.totalMemory / 2 ** 30).toFixed(0)} GiB); ${peerLine}; Node ${process.version}`,
  `B=${B} H=${H} D=${D} causal, bf16 q/k/v/dO; schedule ${W.map((w, i) => `(${w},${R[i]})`).join(' ')}; ` +
  'longnet keeps o in bf16 and lse, dq, dk, dv in float32; peak: the addon allocator (longnet) or torch.cuda.max_memory_allocated (PyTorch), one forward+backward, inputs and gradients included',
  '',
  ...table,
  '',
  ...crossovers,
  ...notes,
];
const head = headline();
console.log(lines.join('\n'));
console.log(`plot: ${relative(process.cwd(), values.svg!)}`);

if (values.record || values.section) {
  const date = new Date().toISOString().slice(0, 10);
  const section = [
    '',
    `## ${date} GPU dilated attention, fused bf16 kernels vs torchscale and dense attention (bench/gpu-dilated-attention.ts)`,
    '',
    `Card: ${g.info.name}. ${peerLine}; Node ${process.version}. B=${B}, H=${H}, D=${D}, causal, bf16 inputs, the paper's schedule ` +
    `${W.map((w, i) => `(${w}, ${R[i]})`).join(' ')}. Ours (longnet): the fused kernels with o in bf16 (merged in bf16 storage), lse, dq, dk, dv in float32 and Dsum ` +
    'from attentionDsum. Peers: torchscale\'s DilatedAttention step for step on aten._scaled_dot_product_flash_attention ' +
    '(bench/peers/torchscale_dilated.py), the same algorithm with one gather and one scatter per tensor (torchscale-gather, ' +
    'bench/peers/gather_dilated.py), ' +
    'dense causal scaled_dot_product_attention with the flash and the cuDNN backend (bench/peers/dense_sdpa.py). Times: median of 3 to 10 ' +
    'runs after a warm-up; TFLOP/s counts docs/ATTENTION.md\'s forward FLOPs (3.5x for forward+backward; dense as the pattern (N, 1)); ' +
    'peak: memory allocated during one forward+backward, inputs, dO, outputs and gradients included, per token. "vs torchscale", ' +
    '"vs torchscale-gather": that peer\'s forward+backward time over this row\'s.',
    '',
    ...table,
    '',
    ...[...crossovers, ...notes].map((l) => `${l}`),
    '',
    head,
    '',
  ].join('\n');
  if (values.section) writeFileSync(values.section, section);
  if (values.record) appendFileSync(join(here, 'RESULTS.md'), section);
}
console.log(head);
