/**
 * One rank's share of a sequence-parallel dilated-attention forward (docs/ATTENTION.md, "Sequence
 * parallelism"), driven straight on the addon's bf16 buffers for near-floor memory: the plan (which
 * patterns are local, which cross ranks and in what groups) and the kernels a rank queues. The collective
 * itself is the caller's (NCCL in bench/gpu-billion-forward.ts, a copy in the tests), between `pack` and
 * `attend`.
 *
 * The sequence of N tokens is split into P shards of l = N / P consecutive tokens. A pattern (w, r) with
 * w' = min(w, N) <= l has its segments inside one shard: one fused forward on the shard computes every such
 * pattern. A pattern with w' > l has segments of g = w' / l shards, whose ranks form a group; with l a
 * multiple of r, the positions head h selects in the shard are the local rows t = (h mod r) + j r. Each rank
 * packs those rows of k and v (head-major, l / r rows a head), the group all-gathers them, and the rank
 * attends its own selected queries, strided in q, o and lse, to the gathered keys of its group: all of them,
 * or when causal those of the ranks up to itself, so that the kernel's bottom-right alignment (key j visible
 * to query i iff j <= i + nK - nQ) is exactly the causal mask. The merge through the log-sum-exp makes the
 * result the single-device one.
 */
import type { NativeAddon, NativeHandle } from '../src/backend/cuda/native.js';
import { BF16_CODE } from '../src/backend/cuda/native.js';

/** (segment length w, dilation rate r) */
export type Pattern = readonly [w: number, r: number];

/**
 * The geometric schedule that reaches the whole sequence: w_i = first * ratio^i and r_i = ratio^i while
 * w_i < N, then (N, N / first), so that w / r = first for every pattern. N must be a multiple of `first`.
 */
export function geometricSchedule(N: number, first = 2048, ratio = 8): Pattern[] {
  if (!Number.isSafeInteger(N) || N < first || N % first !== 0) {
    throw new RangeError(`geometricSchedule: N = ${N} must be a multiple of ${first}, at least ${first}`);
  }
  const out: Pattern[] = [];
  for (let w = first, r = 1; w < N; w *= ratio, r *= ratio) out.push([w, r]);
  out.push([N, N / first]);
  return out;
}

/** Forward FLOPs of docs/ATTENTION.md (causal count): sum_i H (N / w') 2 (w' / r_i)^2 D. */
export function forwardFlops(N: number, heads: number, headDim: number, patterns: readonly Pattern[]): number {
  let f = 0;
  for (const [w0, r] of patterns) {
    const w = Math.min(w0, N);
    f += heads * (N / w) * 2 * (w / r) ** 2 * headDim;
  }
  return f;
}

/** A pattern whose segments cross shards: groups of `ranks` consecutive ranks, `rows` selected rows a head a rank. */
export interface CrossPattern {
  w: number;
  r: number;
  ranks: number;
  rows: number;
}

export interface ShardPlan {
  N: number;
  P: number;
  /** tokens a rank */
  l: number;
  heads: number;
  headDim: number;
  causal: boolean;
  scale: number;
  patterns: readonly Pattern[];
  /** computed on the shard by one fused forward */
  local: readonly Pattern[];
  cross: readonly CrossPattern[];
}

/**
 * Splits `patterns` into local ones and cross-rank ones for N tokens on P ranks; throws a RangeError naming
 * the pattern when a segment would not start at a shard boundary or the selected rows would not line up.
 */
export function planShards(N: number, P: number, heads: number, headDim: number, patterns: readonly Pattern[], causal: boolean): ShardPlan {
  if (!Number.isSafeInteger(P) || P < 1 || N % P !== 0) throw new RangeError(`planShards: ${N} tokens do not split evenly over ${P} ranks`);
  const l = N / P;
  const local: Pattern[] = [];
  const cross: CrossPattern[] = [];
  for (const [w0, r] of patterns) {
    const w = Math.min(w0, N);
    if (!Number.isSafeInteger(w) || !Number.isSafeInteger(r) || r < 1 || r > w) throw new RangeError(`planShards: invalid pattern (${w0}, ${r})`);
    if (w <= l) {
      if (l % w !== 0) throw new RangeError(`planShards: segments of ${w} tokens cross the shard boundaries (l = ${l})`);
      local.push([w, r]);
    } else {
      if (w % l !== 0 || N % w !== 0) throw new RangeError(`planShards: segments of ${w} tokens do not start at shard boundaries (l = ${l})`);
      if (l % r !== 0) throw new RangeError(`planShards: pattern (${w}, ${r}): l = ${l} is not a multiple of r, the selected rows would not line up`);
      cross.push({ w, r, ranks: w / l, rows: l / r });
    }
  }
  return { N, P, l, heads, headDim, causal, scale: 1 / Math.sqrt(headDim), patterns, local, cross };
}

/** The group of `rank` for a cross pattern: its index, the rank's place in it, and its members. */
export function groupOf(c: CrossPattern, rank: number): { index: number; member: number; members: number[] } {
  const index = Math.floor(rank / c.ranks);
  return { index, member: rank % c.ranks, members: Array.from({ length: c.ranks }, (_, i) => index * c.ranks + i) };
}

/** The buffers of one cross pattern: what this rank sends, and the gathered rows of its group. */
export interface Exchange {
  /** [H, rows, D] bf16: this rank's selected rows of k and v, head by head */
  sendK: NativeHandle;
  sendV: NativeHandle;
  /** [ranks, H, rows, D] bf16: every member's send, in member order (NCCL's all-gather layout) */
  recvK: NativeHandle;
  recvV: NativeHandle;
}

export interface ShardIo {
  /** [l, H, D] bf16, this rank's tokens */
  q: NativeHandle;
  k: NativeHandle;
  v: NativeHandle;
  /** [l, H, D] float32 or bf16 */
  o: NativeHandle;
  /** [l, H] float32 */
  lse: NativeHandle;
}

export class ShardForward {
  readonly exchanges: Exchange[];
  /** [H, ranks, rows, D] copies of recvK/recvV when H > 1 (head-major, so a head's keys are one strided run) */
  private readonly headMajor: { k: NativeHandle; v: NativeHandle }[];
  private readonly held: NativeHandle[] = [];

  constructor(private readonly a: NativeAddon, readonly plan: ShardPlan, readonly rank: number, readonly io: ShardIo) {
    const { heads: H, headDim: D } = plan;
    const alloc = (size: number): NativeHandle => {
      const h = a.alloc(BF16_CODE, size, false);
      this.held.push(h);
      return h;
    };
    this.exchanges = plan.cross.map((c) => ({
      sendK: alloc(H * c.rows * D), sendV: alloc(H * c.rows * D),
      recvK: alloc(c.ranks * H * c.rows * D), recvV: alloc(c.ranks * H * c.rows * D),
    }));
    this.headMajor = plan.cross.map((c, i) =>
      H === 1 ? { k: this.exchanges[i]!.recvK, v: this.exchanges[i]!.recvV } : { k: alloc(c.ranks * H * c.rows * D), v: alloc(c.ranks * H * c.rows * D) });
  }

  /** The head offset of pattern rate r (the paper's h mod r). */
  private static offset(h: number, r: number): number {
    return h % r;
  }

  /** Queues the copies of this rank's selected k and v rows into each cross pattern's send buffers. */
  pack(): void {
    const { heads: H, headDim: D } = this.plan;
    this.plan.cross.forEach((c, i) => {
      const x = this.exchanges[i]!;
      for (let h = 0; h < H; h++) {
        const row0 = ShardForward.offset(h, c.r) * H + h;
        this.a.copyRows(x.sendK, h * c.rows, this.io.k, row0, c.r * H, c.rows, D);
        this.a.copyRows(x.sendV, h * c.rows, this.io.v, row0, c.r * H, c.rows, D);
      }
    });
  }

  /** The problems of cross pattern i: one a head, [qRow0, qStride, nQ, kRow0, kStride, nK] each. */
  problems(i: number): number[] {
    const c = this.plan.cross[i]!;
    const { heads: H, causal } = this.plan;
    const { member } = groupOf(c, this.rank);
    const keys = (causal ? member + 1 : c.ranks) * c.rows;
    const out: number[] = [];
    for (let h = 0; h < H; h++) {
      // the head's keys in the head-major gathered buffer: rows h * ranks * rows + m * rows + j
      out.push(ShardForward.offset(h, c.r) * H + h, c.r * H, c.rows, h * c.ranks * c.rows, 1, keys);
    }
    return out;
  }

  /**
   * Queues the attention once the exchanges' recv buffers hold the group's rows: the local patterns in one
   * fused forward (overwriting o and lse), then each cross pattern's problems merged into them. `after`
   * runs after the local step and after each cross pattern (a timer's marks).
   */
  attend(after?: () => void): void {
    const { heads: H, headDim: D, l, causal, scale } = this.plan;
    const { q, k, v, o, lse } = this.io;
    if (this.plan.local.length > 0) {
      this.a.flashAttentionForward(q, k, v, o, lse, 1, l, H, D, this.plan.local.flat(), causal, scale, false, false);
    } else {
      this.a.fill(o, 0);
      this.a.fill(lse, -Infinity);
    }
    after?.();
    this.plan.cross.forEach((c, i) => {
      const x = this.exchanges[i]!, hm = this.headMajor[i]!;
      if (H > 1) {
        // [ranks, H, rows, D] -> [H, ranks, rows, D]: blocks of rows * D elements
        for (let h = 0; h < H; h++) {
          this.a.copyRows(hm.k, h * c.ranks, x.recvK, h, H, c.ranks, c.rows * D);
          this.a.copyRows(hm.v, h * c.ranks, x.recvV, h, H, c.ranks, c.rows * D);
        }
      }
      this.a.flashProblemsForward(q, hm.k, hm.v, o, lse, this.problems(i), D, causal, scale);
      after?.();
    });
  }

  /** Bytes this rank sends into the collectives (k and v, bf16), and receives from the other members. */
  bytes(): { sent: number; received: number } {
    const { heads: H, headDim: D } = this.plan;
    let sent = 0, received = 0;
    for (const c of this.plan.cross) {
      sent += 2 * H * c.rows * D * 2;
      received += (c.ranks - 1) * 2 * H * c.rows * D * 2;
    }
    return { sent, received };
  }

  free(): void {
    for (const h of this.held) this.a.free(h);
    this.held.length = 0;
  }
}
