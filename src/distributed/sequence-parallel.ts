/**
 * Sequence-parallel dilated attention (docs/ATTENTION.md, sequence parallelism). Each rank holds l consecutive tokens of q, k, v
 * ([B, l, H, D]); the result on each rank is exactly its rows of the single-device `dilatedAttention`:
 * output, log-sum-exp and, through `backward`, the gradients of its q, k, v.
 *
 * Patterns whose segments touching a rank all lie inside it run as one local kernel call. For the others
 * (sequence-plan.ts says who does what) each rank packs its own selected rows first, then exchanges them
 * with the ranks of the shared segment only: an all-gather within the segment's group when non-causal; in
 * causal runs, point-to-point messages that carry keys only from earlier ranks to later ones (and
 * queries the other way when balancing pushes work to earlier ranks). Every partial result is folded into
 * the running output through its log-sum-exp, so all patterns make one softmax per query.
 *
 * Backward is FlashAttention-2's per group with the final L and Dsum = rowsum(dO * O); the gradients of
 * gathered keys and values go back to their owners (a reduce-scatter within the segment's group, or the
 * point-to-point reverse of the causal messages). Autograd's backward is synchronous and collectives are
 * not, so the op is an explicit pair: the result carries `backward(dO)`, which every rank must call.
 * The forward keeps what the backward needs (the packed rows and the received keys and values), so the
 * backward sends only gradients and, for pushed queries, dO, L and Dsum.
 */
import type { AttentionConfig, AttentionGeometry, Backend, GatheredAttentionLayout, Storage } from '../backend/backend.js';
import { attentionConfig, type DilatedAttentionOptions } from '../attention/patterns.js';
import { checkAttentionInputs } from '../attention/dilated.js';
import { check } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { formatShape, shapesEqual } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import type { Communicator, RecvSpec, SendSpec } from './communicator.js';
import { Scratchpad, addRowsInto, concatFlat, gatherRows, sliceFlat } from './rows.js';
import { planSequenceParallel, sequenceStarts, type CallPlan, type PatternExec, type SequencePlan } from './sequence-plan.js';

export interface SequenceParallelOptions extends DilatedAttentionOptions {
  /** The full length N; rank j holds [floor(j N / P), floor((j + 1) N / P)). Default: local length times P. */
  sequenceLength?: number;
  /** Causal runs: move work of shared segments to earlier ranks so that ranks finish together (default true). */
  balance?: boolean;
}

export interface SequenceParallelGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

export interface SequenceParallelResult {
  /** This rank's rows of the output, [B, l, H, D]. */
  output: Tensor;
  /** This rank's rows of the log-sum-exp, [B, l, H]. */
  lse: Tensor;
  /**
   * Gradients of sum(output * dO) with respect to this rank's q, k, v (exact: those of the whole
   * sequence, restricted to this rank's rows). Collective: every rank calls it, once. It reads q, k, v,
   * output and lse: keep them alive until it returns.
   */
  backward(dO: Tensor): Promise<SequenceParallelGrads>;
  /** The shared plan: `loads` gives every rank's attention work. */
  readonly plan: SequencePlan;
  /** Frees what the forward kept for the backward. */
  dispose(): void;
}

/** The Backend primitives this op needs beyond the common ones. */
type Primitives = Required<Pick<Backend, 'gatheredAttention' | 'gatheredAttentionBackward' | 'mergeAttention'>>;

function primitives(backend: Backend): Primitives {
  const { gatheredAttention, gatheredAttentionBackward, mergeAttention } = backend;
  check(
    gatheredAttention !== undefined && gatheredAttentionBackward !== undefined && mergeAttention !== undefined,
    `the ${backend.device} backend has no gatheredAttention, gatheredAttentionBackward or mergeAttention: sequence parallelism needs them`,
  );
  return {
    gatheredAttention: gatheredAttention.bind(backend),
    gatheredAttentionBackward: gatheredAttentionBackward.bind(backend),
    mergeAttention: mergeAttention.bind(backend),
  };
}

/** What the forward of one non-local pattern keeps for the backward. */
interface SavedPattern {
  readonly exec: PatternExec;
  readonly qOwn: Storage;
  readonly kCall: Storage;
  readonly vCall: Storage;
  readonly off: { q: Storage; k: Storage; v: Storage } | null;
}

interface Context {
  readonly comm: Communicator;
  readonly backend: Backend;
  readonly ops: Primitives;
  readonly dtype: DType;
  readonly D: number;
  /** Rows of the local [B * l * H, D] view. */
  readonly rows: number;
  readonly shape: readonly number[];
  readonly geometry: AttentionGeometry;
  readonly config: AttentionConfig;
  /** The patterns this rank computes alone, or null. */
  readonly localConfig: AttentionConfig | null;
  readonly causal: boolean;
}

function layoutOf(call: CallPlan, ctx: Context, causal: boolean): GatheredAttentionLayout {
  return { qOffsets: call.qOffsets, kOffsets: call.kOffsets, headDim: ctx.D, causal, scale: ctx.config.scale };
}

function checkInputs(comm: Communicator, q: Tensor, k: Tensor, v: Tensor): void {
  checkAttentionInputs(q, k, v);
  check(q.backend === comm.backend, `q is on ${q.device} but the communicator works on ${comm.backend.device}`);
}

/**
 * Dilated attention over a sequence split across the ranks of `comm` (see the file comment). Every rank
 * calls it with its own rows and the same options.
 */
export async function sequenceParallelAttention(
  comm: Communicator, q: Tensor, k: Tensor, v: Tensor, options: SequenceParallelOptions,
): Promise<SequenceParallelResult> {
  checkInputs(comm, q, k, v);
  const [batch, localLen, heads, headDim] = q.shape as [number, number, number, number];
  const P = comm.size;
  const me = comm.rank;
  const N = options.sequenceLength ?? localLen * P;
  check(Number.isInteger(N) && N >= P, `sequenceLength = ${N} must be an integer of at least ${P} (one token per rank)`);
  const starts = sequenceStarts(N, P);
  const expected = starts[me + 1]! - starts[me]!;
  check(
    localLen === expected,
    `rank ${me} holds ${localLen} positions, but splitting N = ${N} over ${P} ranks gives it ${expected} ([${starts[me]}, ${starts[me + 1]}))`,
  );
  const config = attentionConfig(options, { batch, seqLen: N, heads, headDim });
  check(options.balance === undefined || typeof options.balance === 'boolean', 'balance must be a boolean');
  const backend = q.backend;
  const ops = primitives(backend);
  const plan = planSequenceParallel({
    seqLen: N, ranks: P, batch, heads, patterns: config.patterns, causal: config.causal,
    headOffsets: config.headOffsets, balance: options.balance ?? true,
  });
  const mine = plan.rank(me);
  const localConfig = mine.localPatterns.length === 0 ? null : {
    ...config,
    // the effective length, so that the local call segments exactly as the whole sequence does
    patterns: mine.localPatterns.map((pi) => ({
      segmentLength: Math.min(config.patterns[pi]!.segmentLength, N), dilationRate: config.patterns[pi]!.dilationRate,
    })),
  };
  const ctx: Context = {
    comm, backend, ops, dtype: q.dtype, D: headDim, rows: batch * localLen * heads, shape: q.shape,
    geometry: { batch, seqLen: localLen, heads, headDim }, config, localConfig, causal: config.causal,
  };

  let accO: Storage;
  let accL: Storage;
  if (localConfig !== null) {
    const r = backend.dilatedAttention(q.storage, k.storage, v.storage, ctx.geometry, localConfig);
    accO = r.o;
    accL = r.lse;
  } else {
    accO = backend.alloc(ctx.dtype, ctx.rows * headDim);
    accL = backend.alloc(ctx.dtype, ctx.rows);
    backend.fill(accL, -Infinity);
  }
  const saved: SavedPattern[] = [];
  for (const exec of mine.execs) saved.push(await forwardPattern(ctx, exec, q.storage, k.storage, v.storage, accO, accL));

  const output = Tensor.fromStorage(accO, q.shape, backend);
  const lse = Tensor.fromStorage(accL, [batch, localLen, heads], backend);
  let used = false;
  const dispose = (): void => {
    for (const s of saved.splice(0)) {
      for (const x of [s.qOwn, s.kCall, s.vCall, ...(s.off ? [s.off.q, s.off.k, s.off.v] : [])]) backend.free(x);
    }
  };
  return {
    output, lse, plan, dispose,
    backward: async (dO: Tensor): Promise<SequenceParallelGrads> => {
      check(!used, 'backward: already called for this result');
      check(shapesEqual(dO.shape, q.shape), `dO has shape ${formatShape(dO.shape)} but the output has ${formatShape(q.shape)}`);
      check(dO.dtype === q.dtype && dO.backend === backend, `dO must be ${q.dtype} on ${q.device}`);
      used = true;
      try {
        return await backwardAll(ctx, saved, q, k, v, output, lse, dO);
      } finally {
        dispose();
      }
    },
  };
}

async function forwardPattern(
  ctx: Context, exec: PatternExec, q: Storage, k: Storage, v: Storage, accO: Storage, accL: Storage,
): Promise<SavedPattern> {
  const { backend, ops, comm, D, dtype } = ctx;
  const pad = new Scratchpad(backend);
  try {
    const ownIdx = pad.hold(backend.fromArray(exec.ownRows));
    const qOwn = backend.gather(q, ctx.rows, D, ownIdx);
    const kOwn = pad.hold(backend.gather(k, ctx.rows, D, ownIdx));
    const vOwn = pad.hold(backend.gather(v, ctx.rows, D, ownIdx));
    const tableParts: Storage[] = [kOwn, vOwn];
    const received: Storage[] = [];
    if (!ctx.causal) {
      for (const sh of exec.shared) {
        const send = pad.hold(concatFlat(backend, dtype, [
          pad.hold(sliceFlat(backend, kOwn, sh.ownStart * D, sh.ownCount * D)),
          pad.hold(sliceFlat(backend, vOwn, sh.ownStart * D, sh.ownCount * D)),
        ]));
        const section = await comm.group(sh.ranks).allGather(send, sh.memberCounts.map((c) => 2 * c * D));
        tableParts.push(pad.hold(section));
      }
    } else {
      const sends: SendSpec[] = exec.sends.map((m) => ({
        peer: m.peer,
        data: pad.hold(m.kind === 'kv'
          ? concatFlat(backend, dtype, [pad.hold(gatherRows(backend, k, D, m.rows, pad)), pad.hold(gatherRows(backend, v, D, m.rows, pad))])
          : gatherRows(backend, q, D, m.rows, pad)),
      }));
      const recvs: RecvSpec[] = exec.recvs.map((m) => ({ peer: m.peer, size: (m.kind === 'kv' ? 2 : 1) * m.count * D, dtype }));
      const got = sends.length + recvs.length > 0 ? await comm.exchange(sends, recvs) : [];
      got.forEach((g, i) => {
        pad.hold(g);
        if (exec.recvs[i]!.kind === 'kv') tableParts.push(g);
        else received.push(g);
      });
    }
    const table = pad.hold(concatFlat(backend, dtype, tableParts));
    if (table.size !== exec.tableRows * D) throw new Error(`internal: kv table of ${table.size / D} rows, planned ${exec.tableRows}`);
    const kCall = gatherRows(backend, table, D, exec.own.keyK, pad);
    const vCall = gatherRows(backend, table, D, exec.own.keyV, pad);
    const mine = ops.gatheredAttention(qOwn, kCall, vCall, layoutOf(exec.own, ctx, ctx.causal));
    ops.mergeAttention(accO, accL, pad.hold(mine.o), pad.hold(mine.lse), ownIdx, D);

    let off: SavedPattern['off'] = null;
    const pushed = exec.sends.filter((m) => m.kind === 'q');
    if (exec.offloaded !== null || pushed.length > 0) {
      const sends: SendSpec[] = [];
      if (exec.offloaded !== null) {
        off = {
          q: concatFlat(backend, dtype, received),
          k: gatherRows(backend, table, D, exec.offloaded.keyK, pad),
          v: gatherRows(backend, table, D, exec.offloaded.keyV, pad),
        };
        const r = ops.gatheredAttention(off.q, off.k, off.v, layoutOf(exec.offloaded, ctx, false));
        pad.hold(r.o);
        pad.hold(r.lse);
        let at = 0;
        for (const m of exec.recvs) {
          if (m.kind !== 'q') continue;
          sends.push({
            peer: m.peer,
            data: pad.hold(concatFlat(backend, dtype, [
              pad.hold(sliceFlat(backend, r.o, at * D, m.count * D)), pad.hold(sliceFlat(backend, r.lse, at, m.count)),
            ])),
          });
          at += m.count;
        }
      }
      // the partial results of the queries this rank pushed, merged like any other pattern's
      const got = await comm.exchange(sends, pushed.map((m) => ({ peer: m.peer, size: m.count * (D + 1), dtype })));
      got.forEach((g, i) => {
        const m = pushed[i]!;
        pad.hold(g);
        const o = pad.hold(sliceFlat(backend, g, 0, m.count * D));
        const l = pad.hold(sliceFlat(backend, g, m.count * D, m.count));
        ops.mergeAttention(accO, accL, o, l, pad.hold(backend.fromArray(m.rows)), D);
      });
    }
    return { exec, qOwn, kCall, vCall, off };
  } finally {
    pad.free();
  }
}

/** Packed gradients and the local rows they belong to. */
class GradParts {
  readonly values: Storage[] = [];
  readonly rows: Int32Array[] = [];
  add(values: Storage, rows: Int32Array): void {
    if (rows.length === 0) return;
    this.values.push(values);
    this.rows.push(rows);
  }
}

async function backwardAll(
  ctx: Context, saved: readonly SavedPattern[], q: Tensor, k: Tensor, v: Tensor, output: Tensor, lse: Tensor, dO: Tensor,
): Promise<SequenceParallelGrads> {
  const { backend, D, dtype, rows } = ctx;
  const pad = new Scratchpad(backend);
  try {
    const dq = new GradParts();
    const dk = new GradParts();
    const dv = new GradParts();
    // Dsum = rowsum(dO * O) of the final output, once for every pattern
    // (the product is as large as q: freed at once, so that it never adds to the backward's peak)
    const prod = backend.binary('mul', dO.storage, [rows, D], output.storage, [rows, D], [rows, D]);
    const dsum = pad.hold(backend.reduce('sum', prod, [rows, D], [1]));
    backend.free(prod);
    for (const s of saved) await backwardPattern(ctx, s, dO.storage, lse.storage, dsum, dq, dk, dv, pad);

    let base: { dq: Storage; dk: Storage; dv: Storage };
    if (ctx.localConfig !== null) {
      base = backend.dilatedAttentionBackward(
        q.storage, k.storage, v.storage, output.storage, lse.storage, dO.storage, ctx.geometry, ctx.localConfig,
      );
    } else {
      base = { dq: backend.alloc(dtype, rows * D), dk: backend.alloc(dtype, rows * D), dv: backend.alloc(dtype, rows * D) };
    }
    const finish = (acc: Storage, parts: GradParts): Tensor => {
      if (parts.values.length === 0) return Tensor.fromStorage(acc, ctx.shape, backend);
      const values = concatFlat(backend, dtype, parts.values);
      const all = new Int32Array(parts.rows.reduce((a, r) => a + r.length, 0));
      let at = 0;
      for (const r of parts.rows) {
        all.set(r, at);
        at += r.length;
      }
      try {
        addRowsInto(backend, acc, rows, D, values, all);
      } finally {
        backend.free(values);
      }
      return Tensor.fromStorage(acc, ctx.shape, backend);
    };
    return { dq: finish(base.dq, dq), dk: finish(base.dk, dk), dv: finish(base.dv, dv) };
  } finally {
    pad.free();
  }
}

async function backwardPattern(
  ctx: Context, s: SavedPattern, dO: Storage, lse: Storage, dsum: Storage,
  dq: GradParts, dk: GradParts, dv: GradParts, outer: Scratchpad,
): Promise<void> {
  const { backend, ops, comm, D, dtype } = ctx;
  const { exec } = s;
  const pad = new Scratchpad(backend);
  try {
    const nOwn = exec.ownRows.length;
    const pushed = exec.sends.filter((m) => m.kind === 'q');
    const pushedHere = exec.recvs.filter((m) => m.kind === 'q');

    // pushed queries: their executor needs dO, L and Dsum of those rows
    let fromPushers: Storage[] = [];
    if (pushed.length + pushedHere.length > 0) {
      const sends: SendSpec[] = pushed.map((m) => ({
        peer: m.peer,
        data: pad.hold(concatFlat(backend, dtype, [
          pad.hold(gatherRows(backend, dO, D, m.rows, pad)),
          pad.hold(gatherRows(backend, lse, 1, m.rows, pad)),
          pad.hold(gatherRows(backend, dsum, 1, m.rows, pad)),
        ])),
      }));
      fromPushers = await comm.exchange(sends, pushedHere.map((m) => ({ peer: m.peer, size: m.count * (D + 2), dtype })));
      fromPushers.forEach((g) => pad.hold(g));
    }

    const grads = ops.gatheredAttentionBackward(
      s.qOwn, s.kCall, s.vCall,
      pad.hold(gatherRows(backend, lse, 1, exec.ownRows, pad)),
      pad.hold(gatherRows(backend, dsum, 1, exec.ownRows, pad)),
      pad.hold(gatherRows(backend, dO, D, exec.ownRows, pad)),
      layoutOf(exec.own, ctx, ctx.causal),
    );
    dq.add(outer.hold(grads.dq), exec.ownRows);
    const tableGrads: Storage[] = [pad.hold(grads.dk), pad.hold(grads.dv)];
    const tableIdx: Int32Array[] = [exec.own.keyK, exec.own.keyV];

    let dqOff: Storage | null = null;
    if (exec.offloaded !== null && s.off !== null) {
      const parts = fromPushers.map((g, i) => {
        const c = pushedHere[i]!.count;
        return {
          dO: pad.hold(sliceFlat(backend, g, 0, c * D)),
          l: pad.hold(sliceFlat(backend, g, c * D, c)),
          ds: pad.hold(sliceFlat(backend, g, c * (D + 1), c)),
        };
      });
      const r = ops.gatheredAttentionBackward(
        s.off.q, s.off.k, s.off.v,
        pad.hold(concatFlat(backend, dtype, parts.map((p) => p.l))),
        pad.hold(concatFlat(backend, dtype, parts.map((p) => p.ds))),
        pad.hold(concatFlat(backend, dtype, parts.map((p) => p.dO))),
        layoutOf(exec.offloaded, ctx, false),
      );
      dqOff = pad.hold(r.dq);
      tableGrads.push(pad.hold(r.dk), pad.hold(r.dv));
      tableIdx.push(exec.offloaded.keyK, exec.offloaded.keyV);
    }

    // gradients of every kv-table row (keys reached by several groups add up)
    const idx = new Int32Array(tableIdx.reduce((a, x) => a + x.length, 0));
    let at = 0;
    for (const x of tableIdx) {
      idx.set(x, at);
      at += x.length;
    }
    const dTable = pad.hold(backend.scatterAdd(
      pad.hold(concatFlat(backend, dtype, tableGrads)), pad.hold(backend.fromArray(idx)), exec.tableRows, D,
    ));
    dk.add(outer.hold(sliceFlat(backend, dTable, 0, nOwn * D)), exec.ownRows);
    dv.add(outer.hold(sliceFlat(backend, dTable, nOwn * D, nOwn * D)), exec.ownRows);

    if (!ctx.causal) {
      for (const sh of exec.shared) {
        const total = sh.memberCounts.reduce((a, b) => a + b, 0);
        const section = pad.hold(sliceFlat(backend, dTable, sh.tableBase * D, 2 * total * D));
        const mine = pad.hold(await comm.group(sh.ranks).reduceScatter(section, sh.memberCounts.map((c) => 2 * c * D)));
        const pieceRows = exec.ownRows.subarray(sh.ownStart, sh.ownStart + sh.ownCount);
        dk.add(outer.hold(sliceFlat(backend, mine, 0, sh.ownCount * D)), pieceRows);
        dv.add(outer.hold(sliceFlat(backend, mine, sh.ownCount * D, sh.ownCount * D)), pieceRows);
      }
      return;
    }

    // causal: the reverse of the forward messages, gradients back to the owners of the rows
    const sends: SendSpec[] = [];
    let offAt = 0;
    exec.recvs.forEach((m, i) => {
      if (m.kind === 'kv') {
        sends.push({ peer: m.peer, data: pad.hold(sliceFlat(backend, dTable, exec.recvBase[i]! * D, 2 * m.count * D)) });
      } else {
        sends.push({ peer: m.peer, data: pad.hold(sliceFlat(backend, dqOff!, offAt * D, m.count * D)) });
        offAt += m.count;
      }
    });
    const recvs: RecvSpec[] = exec.sends.map((m) => ({ peer: m.peer, size: (m.kind === 'kv' ? 2 : 1) * m.count * D, dtype }));
    if (sends.length + recvs.length === 0) return;
    const got = await comm.exchange(sends, recvs);
    got.forEach((g, i) => {
      const m = exec.sends[i]!;
      outer.hold(g);
      if (m.kind === 'q') {
        dq.add(g, m.rows);
      } else {
        dk.add(outer.hold(sliceFlat(backend, g, 0, m.count * D)), m.rows);
        dv.add(outer.hold(sliceFlat(backend, g, m.count * D, m.count * D)), m.rows);
      }
    });
  } finally {
    pad.free();
  }
}
