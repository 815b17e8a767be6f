/**
 * The "fixed" attention pattern of the Sparse Transformer (Child et al. 2019), causal, built from the
 * backend's attention primitives: the baseline LongNet compares against.
 *
 * With stride l and c summary positions per block, query i attends to
 *   (A) the keys j <= i of its own block (floor(j/l) == floor(i/l)), and
 *   (B) the summary keys of every earlier block (j mod l >= l - c and floor(j/l) < floor(i/l)),
 * in one softmax over the union (the two sets are disjoint: they lie in different blocks).
 *
 * (A) is dilated attention with the single pattern (l, 1), causal. (B) is packed attention: one group per
 * (batch, head, block t >= 1) whose queries are block t and whose keys are the gathered summary keys of
 * blocks 0..t-1, non-causal; its result is folded into (A) through the log-sum-exps. The backward pass runs
 * both primitives with the final log-sum-exp and Dsum = rowsum(dO * O), and scatters the gathered keys'
 * gradients back to their rows.
 */
import type { AttentionConfig, Backend, GatheredAttentionLayout, Storage } from '../backend/backend.js';
import { check } from '../errors.js';
import { record } from '../tensor/autograd.js';
import type { Tensor } from '../tensor/tensor.js';
import { wrap } from '../tensor/ops/util.js';
import { checkAttentionInputs, type AttentionResult } from './dilated.js';

export interface SparseFixedAttentionOptions {
  /** Block length l. */
  stride: number;
  /** Summary positions per block c (the last c of each block), 1 <= c <= l. */
  summary: number;
  /** Softmax scale; 1/sqrt(headDim) by default. */
  scale?: number;
}

type Primitives = Required<Pick<Backend, 'gatheredAttention' | 'gatheredAttentionBackward' | 'mergeAttention'>>;

function primitives(backend: Backend): Primitives {
  const { gatheredAttention, gatheredAttentionBackward, mergeAttention } = backend;
  if (gatheredAttention === undefined || gatheredAttentionBackward === undefined || mergeAttention === undefined) {
    throw new Error(
      `sparseFixedAttention: the ${backend.device} backend has no gatheredAttention, gatheredAttentionBackward or mergeAttention`,
    );
  }
  return {
    gatheredAttention: gatheredAttention.bind(backend),
    gatheredAttentionBackward: gatheredAttentionBackward.bind(backend),
    mergeAttention: mergeAttention.bind(backend),
  };
}

/** Part (B) as packed rows: which q rows and which k/v rows ([B*N*H] row indices), and the group offsets. */
interface SummaryPlan {
  qRows: Int32Array;
  kRows: Int32Array;
  qOffsets: Int32Array;
  kOffsets: Int32Array;
}

function summaryPlan(batch: number, seqLen: number, heads: number, l: number, c: number): SummaryPlan | null {
  const blocks = Math.ceil(seqLen / l);
  if (blocks <= 1) return null;
  let nq = 0;
  let nk = 0;
  for (let t = 1; t < blocks; t++) {
    nq += Math.min(l, seqLen - t * l);
    nk += t * c;
  }
  const groups = batch * heads * (blocks - 1);
  const qRows = new Int32Array(batch * heads * nq);
  const kRows = new Int32Array(batch * heads * nk);
  const qOffsets = new Int32Array(groups + 1);
  const kOffsets = new Int32Array(groups + 1);
  let g = 0;
  let qi = 0;
  let ki = 0;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let t = 1; t < blocks; t++) {
        const end = Math.min((t + 1) * l, seqLen);
        for (let p = t * l; p < end; p++) qRows[qi++] = (b * seqLen + p) * heads + h;
        // every earlier block is full (length l), so its last c positions exist
        for (let s = 0; s < t; s++) {
          for (let p = s * l + l - c; p < (s + 1) * l; p++) kRows[ki++] = (b * seqLen + p) * heads + h;
        }
        g++;
        qOffsets[g] = qi;
        kOffsets[g] = ki;
      }
    }
  }
  return { qRows, kRows, qOffsets, kOffsets };
}

/**
 * The Sparse Transformer's fixed pattern, causal, on q, k, v of shape [batch, seqLen, heads, headDim]:
 * one softmax per query over its own block's earlier keys and the summary keys of all earlier blocks.
 * Differentiable in q, k and v; `lse` [batch, seqLen, heads] is not.
 */
export function sparseFixedAttention(q: Tensor, k: Tensor, v: Tensor, options: SparseFixedAttentionOptions): AttentionResult {
  const geometry = checkAttentionInputs(q, k, v);
  const { stride, summary } = options;
  check(typeof stride === 'number' && Number.isInteger(stride) && stride > 0, `stride = ${stride} is not a positive integer`);
  check(typeof summary === 'number' && Number.isInteger(summary) && summary > 0, `summary = ${summary} is not a positive integer`);
  check(summary <= stride, `summary = ${summary} is larger than stride = ${stride}`);
  const scale = options.scale ?? 1 / Math.sqrt(geometry.headDim);
  check(typeof scale === 'number' && Number.isFinite(scale), `scale = ${options.scale} is not a finite number`);

  const backend = q.backend;
  const ops = primitives(backend);
  const { batch, seqLen, heads, headDim: D } = geometry;
  const rows = batch * seqLen * heads;
  const config: AttentionConfig = {
    patterns: [{ segmentLength: stride, dilationRate: 1 }], causal: true, scale, headOffsets: 'paper',
  };
  const plan = summaryPlan(batch, seqLen, heads, stride, summary);
  const layout: GatheredAttentionLayout | null = plan === null ? null : {
    qOffsets: plan.qOffsets, kOffsets: plan.kOffsets, headDim: D, causal: false, scale,
  };

  // (A): own block, causal; o and lse become the running result
  const a = backend.dilatedAttention(q.storage, k.storage, v.storage, geometry, config);
  const held: Storage[] = [];
  const hold = <S extends Storage>(s: S): S => {
    held.push(s);
    return s;
  };
  const release = (): void => {
    for (const s of held.splice(0)) backend.free(s);
  };
  const gathered = (x: Storage, cols: number, idx: Storage): Storage => hold(backend.gather(x, x.size / cols, cols, idx));

  // index tensors (not bare storages): backward needs them, and tensors follow the usual lifetime rules
  let qIdx: Tensor | null = null;
  let kIdx: Tensor | null = null;
  if (plan !== null && layout !== null && plan.qRows.length > 0) {
    qIdx = wrap(backend.fromArray(plan.qRows), [plan.qRows.length], backend);
    kIdx = wrap(backend.fromArray(plan.kRows), [plan.kRows.length], backend);
    try {
      // (B): summary keys of earlier blocks, folded into (A)
      const qi = qIdx.storage;
      const ki = kIdx.storage;
      const r = ops.gatheredAttention(gathered(q.storage, D, qi), gathered(k.storage, D, ki), gathered(v.storage, D, ki), layout);
      hold(r.o);
      hold(r.lse);
      ops.mergeAttention(a.o, a.lse, r.o, r.lse, qi, D);
    } finally {
      release();
    }
  }
  const output = wrap(a.o, q.shape, backend);
  const lse = wrap(a.lse, [batch, seqLen, heads], backend);

  record('sparseFixedAttention', output, [q, k, v], (g) => {
    const dO = g.storage;
    const ga = backend.dilatedAttentionBackward(q.storage, k.storage, v.storage, output.storage, lse.storage, dO, geometry, config);
    if (layout === null || qIdx === null || kIdx === null) {
      return [wrap(ga.dq, q.shape, backend), wrap(ga.dk, k.shape, backend), wrap(ga.dv, v.shape, backend)];
    }
    const qi = qIdx.storage;
    const ki = kIdx.storage;
    try {
      const prod = hold(backend.binary('mul', dO, [rows, D], output.storage, [rows, D], [rows, D]));
      const dsum = hold(backend.reduce('sum', prod, [rows, D], [1]));
      const gb = ops.gatheredAttentionBackward(
        gathered(q.storage, D, qi), gathered(k.storage, D, ki), gathered(v.storage, D, ki),
        gathered(lse.storage, 1, qi), gathered(dsum, 1, qi), gathered(dO, D, qi), layout,
      );
      hold(gb.dq);
      hold(gb.dk);
      hold(gb.dv);
      const sum = (base: Storage, part: Storage, idx: Storage): Storage => {
        const spread = hold(backend.scatterAdd(part, idx, rows, D));
        const out = backend.binary('add', base, [rows, D], spread, [rows, D], [rows, D]);
        backend.free(base);
        return out;
      };
      const dq = sum(ga.dq, gb.dq, qi);
      const dk = sum(ga.dk, gb.dk, ki);
      const dv = sum(ga.dv, gb.dv, ki);
      return [wrap(dq, q.shape, backend), wrap(dk, k.shape, backend), wrap(dv, v.shape, backend)];
    } finally {
      release();
    }
  });
  if (!output.gradNode) {
    qIdx?.dispose();
    kIdx?.dispose();
  }
  return { output, lse };
}

/**
 * Forward FLOPs of sparseFixedAttention, all heads, in the convention of docs/ATTENTION.md (4 * headDim
 * per query-key pair, QK^T and PV; a causal block of length w counts w^2 / 2 pairs): the own-block part
 * counts sum over blocks of w^2 / 2, the summary part its exact (query, summary key) pairs. With
 * summary = stride this is dilatedAttentionFlops of the pattern (N, 1) when stride divides N.
 */
export function sparseFixedFlops(seqLen: number, heads: number, headDim: number, stride: number, summary: number): number {
  const blocks = Math.ceil(seqLen / stride);
  let pairs = 0;
  for (let t = 0; t < blocks; t++) {
    const w = Math.min(stride, seqLen - t * stride);
    pairs += (w * w) / 2 + w * t * summary;
  }
  return 4 * headDim * heads * pairs;
}
