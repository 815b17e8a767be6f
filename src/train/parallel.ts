/**
 * Sequence parallel x data parallel training. The W ranks of a job are split into groups of P consecutive
 * ranks; each group trains on whole sequences split across its P ranks (N/P tokens each, attention over the
 * group's communicator: src/distributed/decoder-loss.ts), and the W/P groups are data-parallel replicas, each
 * reading its own share of the global batch. `--batch` is the global batch: every layout trains on the same
 * sequences in the same order, so a checkpoint written under one layout resumes under any other.
 *
 * Every rank weights its local mean loss by its share of the global tokens; after the micro-batches the
 * gradients (and the loss) are summed over the whole world, so that every rank holds the gradient of the
 * global mean loss, as one device on the whole batch would. Clipping and AdamW then run identically on every
 * rank, and the weights stay the same everywhere.
 */
import type { Backend, Device, Storage } from '../backend/backend.js';
import type { CudaBackend } from '../backend/cuda/cuda-backend.js';
import { getBackend } from '../backend/registry.js';
import type { BatchOptions, TokenDataset } from '../data/index.js';
import { splitBatch } from '../data/index.js';
import type { Communicator } from '../distributed/communicator.js';
import { runRanks } from '../distributed/in-process.js';
import { shardedDecoderLoss } from '../distributed/decoder-loss.js';
import { concatFlat, sliceFlat } from '../distributed/rows.js';
import { sequenceStarts } from '../distributed/sequence-plan.js';
import { check } from '../errors.js';
import type { LongNetDecoder } from '../model/decoder.js';
import { add, keep, mulScalar, noGrad, tensor, Tensor, tidy } from '../tensor/index.js';
import { AdamW } from './optimizer.js';
import { withStopSignals, type StopFlag, type StopSignal } from './signals.js';
import { checkTrainerOptions, finishStep, type StepResult, type TrainerOptions, type TrainerProgress } from './trainer.js';

/** How the ranks of a job share the work. */
export interface TrainingLayout {
  /** Ranks in all. */
  world: number;
  /** Ranks per sequence (P). */
  seqParallel: number;
  /** Replicas, each on its own share of the batch (world / P). */
  dataParallel: number;
  /** One device; ranks of this process (the CPU); one process per GPU under `longnet launch`. */
  mode: 'single' | 'in-process' | 'processes';
}

export interface LayoutRequest {
  /** In-process CPU ranks (`--ranks`). */
  ranks?: number;
  /** `--seq-parallel`. */
  seqParallel?: number;
}

/**
 * The layout of a run from its flags and the launcher's environment (WORLD_SIZE), checked: every problem is
 * one InputError naming the flag.
 */
export function resolveLayout(
  run: { device: Device; seqLen: number; batch: number; attention: string }, request: LayoutRequest,
  env: NodeJS.ProcessEnv = process.env,
): TrainingLayout {
  const P = request.seqParallel ?? 1;
  check(Number.isInteger(P) && P >= 1, `--seq-parallel: ${P} is not a positive integer`);
  const text = env['WORLD_SIZE'];
  let launched: number | undefined;
  if (text !== undefined && text !== '') {
    launched = Number(text);
    check(Number.isInteger(launched) && launched >= 1, `WORLD_SIZE=${text} is not a positive integer`);
  }
  let world: number;
  let how: string;
  if (run.device === 'cpu') {
    check(launched === undefined || launched === 1,
      `WORLD_SIZE=${launched}: on the CPU the ranks of a job run in one process (--ranks W), not one process each under longnet launch`);
    world = request.ranks ?? 1;
    check(Number.isInteger(world) && world >= 1, `--ranks: ${world} is not a positive integer`);
    how = `--ranks ${world}`;
  } else {
    check(request.ranks === undefined,
      `--ranks runs in-process ranks on the CPU; on GPUs run one process per GPU: longnet launch --nproc-per-node W -- longnet train --device ${run.device} ...`);
    world = launched ?? 1;
    how = launched === undefined ? 'one process: start one per GPU with longnet launch --nproc-per-node W' : `WORLD_SIZE=${world}`;
  }
  check(P <= world, `--seq-parallel ${P} needs at least ${P} ranks, but the job has ${world} (${how})`);
  check(world % P === 0, `--seq-parallel ${P} does not divide the ${world} ranks (${how}) into groups of ${P}`);
  const D = world / P;
  check(run.batch % D === 0,
    `--batch ${run.batch} (the global batch) does not split evenly over ${D} data-parallel replicas (${world} ranks / --seq-parallel ${P})`);
  check(run.seqLen >= P, `--seq-len ${run.seqLen} is shorter than --seq-parallel ${P} (every rank needs at least one token)`);
  check(P === 1 || run.attention === 'dilated' || run.attention === 'dense',
    `--seq-parallel ${P}: sequence parallelism runs dilated or dense attention, not ${run.attention}`);
  return { world, seqParallel: P, dataParallel: D, mode: world === 1 ? 'single' : run.device === 'cpu' ? 'in-process' : 'processes' };
}

/** The communicators of one rank. */
export interface ParallelComms {
  /** Every rank of the job: gradients, losses and stop requests are summed over it. */
  world: Communicator;
  /** This rank's sequence-parallel group: P consecutive ranks of the world (the world itself when P = W). */
  group: Communicator;
}

/** The communicators of a rank of `world` (in-process ranks: the group is a view of the world). */
export function groupComms(world: Communicator, seqParallel: number): ParallelComms {
  check(world.size % seqParallel === 0, `--seq-parallel ${seqParallel} does not divide the ${world.size} ranks`);
  if (seqParallel === world.size) return { world, group: world };
  const first = Math.floor(world.rank / seqParallel) * seqParallel;
  return { world, group: world.group(Array.from({ length: seqParallel }, (_, i) => first + i)) };
}

/** Gradient all-reduces are made of buckets of at most this many elements (a bound on the extra memory). */
const BUCKET_ELEMENTS = 1 << 25;

/** Elementwise sums over `comm` of a few host numbers (float64 on the CPU, float32 elsewhere). */
export async function allReduceNumbers(comm: Communicator, values: readonly number[], op: 'sum' | 'max' = 'sum'): Promise<number[]> {
  const backend = comm.backend;
  const x = backend.fromArray(backend.device === 'cpu' ? new Float64Array(values) : new Float32Array(values));
  try {
    const r = await comm.allReduce(x, op);
    try {
      return Array.from(backend.read(r));
    } finally {
      backend.free(r);
    }
  } finally {
    backend.free(x);
  }
}

const SIGNAL_CODES: readonly StopSignal[] = ['SIGINT', 'SIGTERM'];

/**
 * The stop request every rank agrees on: a signal seen by any rank stops all of them at the same step
 * (SIGTERM wins over SIGINT). Collective over `comm`.
 */
export async function agreeOnStop(comm: Communicator, signal: StopSignal | null): Promise<StopSignal | null> {
  const [code] = await allReduceNumbers(comm, [signal === null ? 0 : SIGNAL_CODES.indexOf(signal) + 1], 'max');
  return code! >= 1 ? SIGNAL_CODES[Math.round(code!) - 1]! : null;
}

/**
 * The Trainer of one rank of a sequence x data parallel job (same options, same progress, same results on
 * every rank): `step` and `evaluate` are collectives over the world, so every rank calls them together.
 */
export class ParallelTrainer {
  readonly optimizer: AdamW;
  readonly params: Map<string, Tensor>;
  progress: TrainerProgress = { step: 0, data: { epoch: 0, position: 0 }, tokens: 0 };
  readonly seqParallel: number;
  readonly dataParallel: number;
  /** This rank's replica (its group) and its place in the group. */
  readonly replica: number;
  readonly part: number;
  /** This rank's tokens of each sequence: [start, start + length). */
  private readonly start: number;
  private readonly length: number;

  constructor(
    readonly model: LongNetDecoder,
    readonly data: TokenDataset,
    readonly options: TrainerOptions,
    readonly comms: ParallelComms,
  ) {
    checkTrainerOptions(options);
    const { world, group } = comms;
    this.seqParallel = group.size;
    check(world.size % group.size === 0, `the world of ${world.size} ranks does not split into groups of ${group.size}`);
    this.dataParallel = world.size / group.size;
    this.replica = Math.floor(world.rank / group.size);
    this.part = group.rank;
    check(group.members[0] === this.replica * group.size,
      `rank ${world.rank}'s sequence-parallel group must be ranks ${this.replica * group.size}..${(this.replica + 1) * group.size - 1}`);
    check(options.batch % this.dataParallel === 0,
      `batch ${options.batch} does not split evenly over ${this.dataParallel} data-parallel replicas`);
    check(options.seqLen >= this.seqParallel, `seq-len ${options.seqLen} is shorter than the ${this.seqParallel} ranks of a sequence`);
    const starts = sequenceStarts(options.seqLen, this.seqParallel);
    this.start = starts[this.part]!;
    this.length = starts[this.part + 1]! - this.start;
    this.params = model.namedParameters();
    this.optimizer = new AdamW(this.params, options.adamw);
    data.batchesPerEpoch(this.batchOptions());
  }

  /** Sequences of each micro-batch this rank's replica trains on. */
  get rowsPerReplica(): number {
    return this.options.batch / this.dataParallel;
  }

  private batchOptions(): BatchOptions {
    return {
      seqLen: this.options.seqLen, batchSize: this.rowsPerReplica, seed: this.options.seed,
      shard: { rank: this.replica, count: this.dataParallel },
    };
  }

  /** This rank's columns of a batch [rows, seqLen + 1] as inputs and targets [rows, length]. */
  private localTokens(tokens: Int32Array, seqLen: number, start: number, length: number): { inputs: Int32Array; targets: Int32Array; rows: number } {
    const { inputs, targets } = splitBatch(tokens, seqLen);
    const rows = inputs.length / seqLen;
    if (length === seqLen) return { inputs, targets, rows };
    const cut = (all: Int32Array): Int32Array => {
      const out = new Int32Array(rows * length);
      for (let r = 0; r < rows; r++) out.set(all.subarray(r * seqLen + start, r * seqLen + start + length), r * length);
      return out;
    };
    return { inputs: cut(inputs), targets: cut(targets), rows };
  }

  /**
   * The loss of this rank's tokens times `weight`, with its gradient accumulated into the parameters
   * (`train`), or only its value. Returns a scalar tensor the caller frees.
   */
  private async localLoss(tokens: Int32Array, seqLen: number, start: number, length: number, weight: number, train: boolean): Promise<Tensor> {
    const { inputs, targets, rows } = this.localTokens(tokens, seqLen, start, length);
    const opts = { dtype: 'int32' as const, device: this.options.device };
    if (this.seqParallel === 1) {
      const run = (): Tensor => tidy(() => {
        const l = this.model.loss(tensor(inputs, [rows, length], opts), tensor(targets, [rows, length], opts));
        const scaled = weight === 1 ? l : mulScalar(l, weight);
        if (train) scaled.backward();
        return scaled;
      });
      return train ? run() : noGrad(run);
    }
    const input = tensor(inputs, [rows, length], opts);
    const target = tensor(targets, [rows, length], opts);
    try {
      const r = await shardedDecoderLoss(this.model, this.comms.group, input, target, { sequenceLength: seqLen, weight, train });
      try {
        const value = r.loss.shareStorage(r.loss.shape);
        if (train) await r.backward();
        return value;
      } finally {
        r.dispose();
      }
    } finally {
      input.dispose();
      target.dispose();
    }
  }

  /** One optimizer update over the global batch: `accumulate` micro-batches, all-reduce, clip, AdamW. */
  async step(): Promise<StepResult> {
    const started = performance.now();
    const { accumulate, batch, seqLen } = this.options;
    this.optimizer.zeroGrad();
    let position = this.progress.data;
    const batches = this.data.batches(this.batchOptions(), position);
    // this rank's tokens over the global tokens of a micro-batch, and the mean over the micro-batches
    const weight = (this.rowsPerReplica * this.length) / (batch * seqLen) / accumulate;
    const losses: Tensor[] = [];
    let loss: number;
    try {
      for (let k = 0; k < accumulate; k++) {
        const b = batches.next().value;
        losses.push(await this.localLoss(b.tokens, seqLen, this.start, this.length, weight, true));
        position = b.next;
      }
      // summed on the device and reduced with the gradients: read once, after the all-reduce
      const lossSum = noGrad(() => tidy(() => losses.reduce((a, l) => add(a, l))));
      losses.push(lossSum);
      loss = await this.allReduceGradients(lossSum);
    } finally {
      for (const l of losses) l.dispose();
    }
    return finishStep(this, loss, position, started);
  }

  /**
   * Replaces every gradient by its sum over the world, and returns the sum of the ranks' `lossSum` (a
   * scalar, carried in the last bucket). Buckets hold whole parameters, in the parameters' order.
   */
  private async allReduceGradients(lossSum: Tensor): Promise<number> {
    const { world } = this.comms;
    const backend: Backend = world.backend;
    const withGrad = [...this.params.values()].filter((p) => p.grad !== null);
    const dtype = lossSum.dtype;
    check(withGrad.every((p) => p.grad!.dtype === dtype), 'data parallelism needs every gradient in the dtype of the loss');
    const buckets: Tensor[][] = [[]];
    let size = 0;
    for (const p of withGrad) {
      if (size > 0 && size + p.size > BUCKET_ELEMENTS) {
        buckets.push([]);
        size = 0;
      }
      buckets[buckets.length - 1]!.push(p);
      size += p.size;
    }
    let loss = Number.NaN;
    for (const [i, bucket] of buckets.entries()) {
      const last = i === buckets.length - 1;
      const parts = [...bucket.map((p) => p.grad!.storage), ...(last ? [lossSum.storage] : [])];
      const flat = concatFlat(backend, dtype, parts);
      let sum: Storage;
      try {
        sum = await world.allReduce(flat, 'sum');
      } finally {
        backend.free(flat);
      }
      let at = 0;
      for (const p of bucket) {
        const g = keep(Tensor.fromStorage(sliceFlat(backend, sum, at, p.size), p.shape, backend));
        p.grad!.dispose();
        p.grad = g;
        at += p.size;
      }
      if (last) {
        const s = sliceFlat(backend, sum, at, 1);
        loss = backend.read(s)[0]!;
        backend.free(s);
      }
      backend.free(sum);
    }
    return loss;
  }

  /**
   * Mean validation loss per token over up to `maxSequences` held-out sequences of `seqLen`, as
   * `evaluateLoss` gives on one device: the replicas take the sequences in turn, each split over its group.
   */
  async evaluate(maxSequences: number, seqLen = this.options.seqLen): Promise<number> {
    check(seqLen >= this.seqParallel, `seq-len ${seqLen} is shorter than the ${this.seqParallel} ranks of a sequence`);
    const batches = this.data.validationBatches(seqLen, {
      batchSize: this.rowsPerReplica, maxSequences, shard: { rank: this.replica, count: this.dataParallel },
    });
    const count = Math.min(this.data.validationSequenceCount(seqLen), maxSequences) * seqLen;
    const starts = sequenceStarts(seqLen, this.seqParallel);
    const start = starts[this.part]!;
    const length = starts[this.part + 1]! - start;
    let total = 0;
    for (const tokens of batches) {
      const rows = tokens.length / (seqLen + 1);
      const l = await this.localLoss(tokens, seqLen, start, length, 1, false);
      try {
        total += l.item() * rows * length;
      } finally {
        l.dispose();
      }
    }
    const [sum] = await allReduceNumbers(this.comms.world, [total]);
    return sum! / count;
  }

  /** The stop request of any rank, agreed by all (see agreeOnStop). */
  agreeOnStop(signal: StopSignal | null): Promise<StopSignal | null> {
    return agreeOnStop(this.comms.world, signal);
  }
}

/** What one rank's part of a run gets besides the arguments. */
export interface RankSetup {
  /** The world rank: 0 writes the checkpoint, the metrics and the log. */
  rank: number;
  /** Null on one device. */
  comms: ParallelComms | null;
  /** Runs the training loop with SIGINT/SIGTERM turned into a stop request (one handler for all in-process ranks). */
  withStopSignals<T>(fn: (flag: StopFlag) => Promise<T>): Promise<T>;
}

/**
 * Runs `train` once per rank of `layout` in this process: once on one device; once per in-process rank
 * (the CPU), all sharing one dataset; or once in this process, one of the launcher's, with NCCL
 * communicators (rank 0 reads the data first, so that a token cache it fills is reused by the others).
 * Returns rank 0's result (in-process) or this process's.
 */
export async function runOnLayout<T>(
  layout: TrainingLayout, loadData: () => Promise<TokenDataset>, train: (data: TokenDataset, setup: RankSetup) => Promise<T>,
): Promise<T> {
  if (layout.mode === 'single') {
    const data = await loadData();
    try {
      return await train(data, { rank: 0, comms: null, withStopSignals });
    } finally {
      data.close();
    }
  }
  if (layout.mode === 'in-process') {
    const data = await loadData();
    try {
      return await withStopSignals(async (flag) => {
        const results = await runRanks(layout.world, (world) => train(data, {
          rank: world.rank, comms: groupComms(world, layout.seqParallel), withStopSignals: (fn) => fn(flag),
        }));
        return results[0]!;
      });
    } finally {
      data.close();
    }
  }
  const backend = getBackend('cuda') as CudaBackend;
  const { createNcclTrainingComms } = await import('../backend/cuda/nccl-groups.js');
  const comms = await createNcclTrainingComms(backend, layout.seqParallel);
  let failed = true;
  try {
    check(comms.world.size === layout.world, `the rendezvous gathered ${comms.world.size} ranks, WORLD_SIZE says ${layout.world}`);
    let data: TokenDataset | null = null;
    if (comms.world.rank === 0) data = await loadData();
    await comms.world.barrier();
    data ??= await loadData();
    try {
      const result = await train(data, { rank: comms.world.rank, comms: { world: comms.world, group: comms.group }, withStopSignals });
      failed = false;
      return result;
    } finally {
      data.close();
    }
  } finally {
    comms.destroy(failed);
  }
}

/** One line on the layout of a multi-rank run. */
export function describeLayout(layout: TrainingLayout, batch: number, seqLen: number): string {
  const where = layout.mode === 'in-process' ? 'in-process CPU ranks' : 'processes (NCCL)';
  const starts = sequenceStarts(seqLen, layout.seqParallel);
  const tokens = layout.seqParallel === 1 ? `${seqLen}` : seqLen % layout.seqParallel === 0
    ? `${seqLen / layout.seqParallel}` : `${starts[1]! - starts[0]!}-${starts[layout.seqParallel]! - starts[layout.seqParallel - 1]!}`;
  return `parallel: ${layout.world} ${where} = ${layout.dataParallel} data-parallel x ${layout.seqParallel} sequence-parallel ` +
    `(${batch / layout.dataParallel} sequences of each batch per replica, ${tokens} tokens of each sequence per rank)`;
}
