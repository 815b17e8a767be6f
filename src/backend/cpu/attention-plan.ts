/**
 * How the CPU dilated-attention kernels split their work. A work unit is one (batch, chunk, head), where a
 * chunk is a run of positions that no segment of any pattern crosses: its length is a multiple of every
 * effective segment length w' = min(w, N) (their least common multiple, or the whole sequence). All
 * reads and writes of a unit stay inside its chunk, so units run in any order, on any thread.
 */
import type { AttentionConfig, AttentionGeometry, HeadOffsets } from '../backend.js';

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** Length of a chunk: lcm of the effective segment lengths, capped at N. */
export function chunkLength(seqLen: number, segmentLengths: readonly number[]): number {
  let l = 1;
  for (const w of segmentLengths) {
    const wp = Math.min(w, seqLen);
    l = (l / gcd(l, wp)) * wp;
    if (l >= seqLen) return seqLen;
  }
  return l;
}

/** The residue (mod r) of the positions head h reads under a pattern of rate r. */
export function headOffset(h: number, heads: number, r: number, blocked: boolean): number {
  return blocked ? Math.floor(h / Math.ceil(heads / r)) : h % r;
}

/** The shape of the work, as plain values that can be posted to a worker thread. */
export interface AttentionPlan {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  readonly headDim: number;
  readonly causal: boolean;
  readonly scale: number;
  readonly blocked: boolean;
  /** [w0, r0, w1, r1, ...] */
  readonly patterns: readonly number[];
  readonly chunk: number;
  readonly chunks: number;
  readonly units: number;
  /** Flops of the forward pass per unit, about: decides whether threads pay. */
  readonly unitCost: number;
}

export function planAttention(geometry: AttentionGeometry, config: AttentionConfig): AttentionPlan {
  const { batch, seqLen, heads, headDim } = geometry;
  const patterns: number[] = [];
  for (const p of config.patterns) patterns.push(p.segmentLength, p.dilationRate);
  const chunk = seqLen === 0 ? 1 : chunkLength(seqLen, config.patterns.map((p) => p.segmentLength));
  const chunks = Math.ceil(seqLen / chunk);
  let cost = 0;
  for (const p of config.patterns) {
    const wp = Math.min(p.segmentLength, seqLen);
    if (wp === 0) continue;
    const rows = wp / p.dilationRate;
    cost += (chunk / wp) * rows * rows * 4 * headDim * (config.causal ? 0.5 : 1); // QK^T and PV
  }
  return {
    batch, seqLen, heads, headDim, causal: config.causal, scale: config.scale,
    blocked: (config.headOffsets satisfies HeadOffsets) === 'blocked', patterns, chunk, chunks,
    units: batch * chunks * heads, unitCost: cost,
  };
}
