/**
 * What the experiment scripts share: the code corpus, the small models, FLOP matching of the sparse
 * baseline, hardware notes, per-token losses and a small SVG line plot. See experiments/README.md.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sparseFixedFlops } from '../src/attention/sparse-fixed.js';
import type { Device } from '../src/backend/backend.js';
// registers the CUDA backend for --device cuda (its addon loads only when that device is used)
import { CudaBackend } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import {
  dilatedAttentionFlops, LongNetDecoder, type AnyModelConfig, type ModelAttention,
} from '../src/model/index.js';
import { noGrad, tensor, tidy } from '../src/tensor/index.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const RESULTS = join(ROOT, 'experiments', 'results');
/** Checkpoints (ignored by git, like runs/ at the top). */
export const RUNS = join(ROOT, 'experiments', 'runs');

const require = createRequire(import.meta.url);

/**
 * The code corpus: the TypeScript compiler's own JavaScript source as shipped in the `typescript`
 * development dependency (lib/typescript.js, about 9.1 MB, version pinned by package-lock.json), so a
 * fresh clone has it after `npm install`. One long real program: long-range context exists at every
 * evaluation length. The byte tokenizer makes one byte one token.
 */
export function codeCorpus(): { path: string; version: string; bytes: number; sha256: string } {
  let pkgPath: string;
  try {
    pkgPath = require.resolve('typescript/package.json');
  } catch {
    throw new Error('the typescript package is not installed: run npm install first');
  }
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string };
  const path = join(dirname(pkgPath), 'lib', 'typescript.js');
  const data = readFileSync(path);
  return { path, version: pkg.version, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

/** The byte vocabulary (256 bytes and the end-of-document id). */
export const BYTE_VOCAB = 257;

/** The small model of every experiment: 2 layers of width 64, 4 heads of 16, FFN 256, byte vocabulary. */
export function smallConfig(attention: ModelAttention): AnyModelConfig {
  return {
    vocabSize: BYTE_VOCAB, dModel: 64, layers: 2, heads: 4, ffnDim: 256,
    attention, xposScaleBase: 512, layerNormEps: 1e-5, tieEmbeddings: false,
  };
}

/**
 * LongNet's schedule for lengths up to 32K, the paper's shape scaled to a 4-head model: segments grow
 * geometrically (x4) from 512 to 32768 and rates grow with them, capped at the head count (as the
 * paper caps them at 12 for 12 heads) so that the offsets h mod r cover every residue.
 */
export const LONGNET_SCHEDULE = { kind: 'dilated' as const, segmentLengths: [512, 2048, 8192, 32768], dilationRates: [1, 2, 4, 4] };

/** Forward attention FLOPs of one layer of `attention` at `seqLen` (docs/ATTENTION.md's convention). */
export function layerAttentionFlops(attention: ModelAttention, seqLen: number, heads: number, headDim: number): number {
  if (attention.kind === 'sparse-fixed') return sparseFixedFlops(seqLen, heads, headDim, attention.stride, attention.summary);
  const patterns = attention.kind === 'dense'
    ? [{ segmentLength: seqLen, dilationRate: 1 }]
    : attention.segmentLengths.map((w, i) => ({ segmentLength: w, dilationRate: attention.dilationRates[i]! }));
  return dilatedAttentionFlops(patterns, heads, headDim, seqLen, true);
}

/**
 * The Sparse Transformer's fixed pattern with the attention FLOPs closest to `target` at `seqLen`:
 * strides are powers of two from 64 to seqLen/2, summaries powers of two from stride/32 to stride/4
 * (Child et al. use summaries of 1/16 to 1/4 of the stride; a summary of one or two positions would
 * match the FLOPs with a pattern that is local attention in all but name); the closest in
 * |log(flops/target)| wins.
 */
export function matchSparseFixed(target: number, seqLen: number, heads: number, headDim: number):
  { stride: number; summary: number; flops: number; ratio: number } {
  let best: { stride: number; summary: number; flops: number; ratio: number } | null = null;
  for (let stride = 64; stride <= seqLen / 2; stride *= 2) {
    for (let summary = stride / 32; summary <= stride / 4; summary *= 2) {
      const flops = sparseFixedFlops(seqLen, heads, headDim, stride, summary);
      const ratio = flops / target;
      if (best === null || Math.abs(Math.log(ratio)) < Math.abs(Math.log(best.ratio))) best = { stride, summary, flops, ratio };
    }
  }
  return best!;
}

/** The machine a result was measured on, for the record; on the GPU, the card too. */
export function hardware(device: Device = 'cpu'): Record<string, unknown> {
  const list = cpus();
  const machine = {
    cpu: list[0]?.model ?? 'unknown', logicalCores: list.length, memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version, platform: `${process.platform} ${process.arch}`, loadAverage1m: Number(loadavg()[0]!.toFixed(2)),
  };
  if (device === 'cuda') {
    const backend = getBackend('cuda');
    return { ...machine, gpu: backend instanceof CudaBackend ? backend.info.name : 'unknown' };
  }
  return { ...machine, note: 'shared machine: other jobs ran on the same 2 cores; experiment processes ran under nice -n 10' };
}

export function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function writeText(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, text);
}

/**
 * Next-token losses (nats) of `tokens` under `model`: element i is the loss of tokens[i + 1] given
 * tokens[0..i], for i in [from, tokens.length - 1). One forward pass, no gradients.
 */
export function tokenLosses(model: LongNetDecoder, tokens: Int32Array, from = 0): Float64Array {
  const n = tokens.length - 1;
  const vocab = model.config.vocabSize;
  return noGrad(() => tidy(() => {
    const logits = model.forward(tensor(tokens.subarray(0, n), [1, n], { dtype: 'int32', device: model.device })).toArray();
    const out = new Float64Array(n - from);
    for (let i = from; i < n; i++) {
      let max = -Infinity;
      const row = i * vocab;
      for (let v = 0; v < vocab; v++) max = Math.max(max, logits[row + v]!);
      let sum = 0;
      for (let v = 0; v < vocab; v++) sum += Math.exp(logits[row + v]! - max);
      out[i - from] = max + Math.log(sum) - logits[row + tokens[i + 1]!]!;
    }
    return out;
  }));
}

/**
 * tokenLosses of validation tokens [start, start + tokens.length) under the checkpoint in `dir`, kept in
 * `dir` (keyed by the checkpoint's save id, the window and `from`) so that the scripts that score the
 * same window (Table 2 at 2K, 8K and 32K, and the suffix of Figure 7(b)) run each forward pass once.
 */
export function windowLosses(dir: string, model: LongNetDecoder, tokens: Int32Array, start: number, from = 0): Float64Array {
  const state = JSON.parse(readFileSync(join(dir, 'trainer-state.json'), 'utf8')) as { saveId: string };
  const file = join(dir, `losses-${state.saveId}-v${start}-${tokens.length}-from${from}.f64`);
  if (existsSync(file)) {
    const bytes = readFileSync(file);
    return new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  const losses = tokenLosses(model, tokens, from);
  writeFileAtomic(file, new Uint8Array(losses.buffer));
  return losses;
}

export const mean = (xs: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
};

export interface Series {
  label: string;
  points: [number, number][];
  color: string;
  dashed?: boolean;
}

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A line plot with a log2 x axis (lengths) and a linear y axis, one polyline with markers per series. */
export function linePlotSvg(options: {
  title: string; xLabel: string; yLabel: string; series: Series[]; xTicks: number[]; yRange?: [number, number]; yTickStep?: number;
  /** Linear x axis instead of log2; markers only when a series has few points. */
  xLinear?: boolean;
}): string {
  const tx = options.xLinear ? (x: number): number => x : Math.log2;
  const W = 800, H = 440, L = 70, R = 260, T = 50, B = 60;
  const pw = W - L - R, ph = H - T - B;
  const xs = options.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = options.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const lx0 = tx(Math.min(...xs, ...options.xTicks)), lx1 = tx(Math.max(...xs, ...options.xTicks));
  let [y0, y1] = options.yRange ?? [Math.min(...ys), Math.max(...ys)];
  if (options.yRange === undefined) {
    const pad = (y1 - y0) * 0.08 || 0.1;
    y0 -= pad;
    y1 += pad;
  }
  const sx = (x: number): number => L + ((tx(x) - lx0) / (lx1 - lx0 || 1)) * pw;
  const sy = (y: number): number => T + (1 - (y - y0) / (y1 - y0 || 1)) * ph;
  const f = (v: number): string => v.toFixed(1);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="28" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
    `<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#333333"/>`,
  ];
  const step = options.yTickStep ?? niceStep((y1 - y0) / 6);
  for (let y = Math.ceil(y0 / step) * step; y <= y1 + 1e-9; y += step) {
    parts.push(`<line x1="${L}" x2="${L + pw}" y1="${f(sy(y))}" y2="${f(sy(y))}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${L - 8}" y="${f(sy(y) + 4)}" text-anchor="end">${Number(y.toPrecision(6))}</text>`);
  }
  for (const x of options.xTicks) {
    parts.push(`<line x1="${f(sx(x))}" x2="${f(sx(x))}" y1="${T}" y2="${T + ph}" stroke="#e5e5e5"/>`);
    const text = options.xLinear ? String(x) : x >= 1024 ? `${x / 1024}K` : String(x);
    parts.push(`<text x="${f(sx(x))}" y="${T + ph + 18}" text-anchor="middle">${text}</text>`);
  }
  parts.push(`<text x="${L + pw / 2}" y="${H - 16}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  parts.push(`<text transform="translate(18 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`);
  options.series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    const d = pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${f(sx(p[0]))} ${f(sy(p[1]))}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const p of pts.length > 40 ? [] : pts) {
      parts.push(`<circle cx="${f(sx(p[0]))}" cy="${f(sy(p[1]))}" r="3.5" fill="${s.color}"><title>${escapeXml(s.label)}: ${p[0]} -> ${p[1].toFixed(4)}</title></circle>`);
    }
    const ly = T + 14 + 22 * i;
    parts.push(`<line x1="${L + pw + 14}" x2="${L + pw + 40}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    parts.push(`<text x="${L + pw + 46}" y="${ly}">${escapeXml(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
