/**
 * One training run's arithmetic: micro-batches with gradient accumulation, global-norm clipping, the
 * learning-rate schedule and AdamW, and validation loss. It knows nothing of files or the command line
 * (see run.ts), so tests can drive it step by step with any model that has a loss.
 */
import { check, InputError } from '../errors.js';
import type { BatchPosition, TokenDataset } from '../data/index.js';
import { splitBatch } from '../data/index.js';
import { mulScalar, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import type { Device } from '../backend/backend.js';
import type { LossOptions } from '../model/decoder.js';
import { clipScale, globalGradNormWith, gradientSquares, readTogetherLater } from './clip.js';
import { AdamW, type AdamWOptions } from './optimizer.js';
import { learningRate, type ScheduleOptions } from './schedule.js';

/** What training needs of a model. */
export interface TrainableModel {
  namedParameters(): Map<string, Tensor>;
  /** Mean cross-entropy (nats per token) of `targets` given `inputs`, both int32 [batch, seqLen]. */
  loss(inputs: Tensor, targets: Tensor, options?: LossOptions): Tensor;
}

export interface TrainerOptions {
  seqLen: number;
  /** Sequences per micro-batch. */
  batch: number;
  /** Micro-batches per optimizer update (gradient accumulation). */
  accumulate: number;
  schedule: ScheduleOptions;
  adamw: AdamWOptions;
  /** Global gradient-norm limit (0: no clipping). */
  clip: number;
  /** Fixes the data order. */
  seed: number;
  device: Device;
}

/** Where a run stands; saved in the checkpoint (trainer-state.json) and restored on resume. */
export interface TrainerProgress {
  /** Optimizer updates done. */
  step: number;
  /** The next training batch. */
  data: BatchPosition;
  /** Training tokens consumed. */
  tokens: number;
}

export interface StepResult {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  seconds: number;
}

export function checkTrainerOptions(o: TrainerOptions): void {
  check(Number.isInteger(o.batch) && o.batch >= 1, `batch must be a positive integer, got ${o.batch}`);
  check(Number.isInteger(o.accumulate) && o.accumulate >= 1, `accumulate must be a positive integer, got ${o.accumulate}`);
  check(Number.isInteger(o.seqLen) && o.seqLen >= 1, `seq-len must be a positive integer, got ${o.seqLen}`);
  check(Number.isFinite(o.clip) && o.clip >= 0, `clip must be a number >= 0, got ${o.clip}`);
}

/** What the end of an optimizer step needs of a trainer. */
interface Stepper {
  readonly params: Map<string, Tensor>;
  readonly optimizer: AdamW;
  readonly options: TrainerOptions;
  progress: TrainerProgress;
}

/**
 * The end of an optimizer step, once the gradients of the whole batch are in place: clip, refuse a
 * diverged step, AdamW, and advance the trainer's progress to `position`. `loss` is the step's loss, or
 * the losses of its micro-batches (scalar tensors), whose mean is read with the gradient norm.
 */
export function finishStep(t: Stepper, loss: number | readonly Tensor[], position: TrainerProgress['data'], started: number): StepResult {
  const { accumulate, batch, seqLen } = t.options;
  const nextStep = t.progress.step + 1;
  const lr = learningRate(t.options.schedule, nextStep);
  const losses = typeof loss === 'number' ? [] : loss;
  const diverged = (l: number, norm: number): InputError => new InputError(
    `training diverged at step ${nextStep} (loss ${l}, gradient norm ${norm}); try a lower --lr or a longer warm-up`,
  );
  // clipping: the optimizer scales each gradient as it reads it, with no pass of its own over them
  const knownBad = typeof loss === 'number' && !Number.isFinite(loss);
  const onDevice = t.optimizer.clipsOnDevice && !knownBad ? gradientSquares(t.params.values(), losses) : null;
  let gradNorm: number;
  if (onDevice) {
    // the update is queued before the host waits for the norm, which is read from before it: the device
    // goes on to the update without a wait, and the host to the next step while it runs. On a norm or loss
    // that is not finite (and so on a failed queued check, which the read throws) the update changes
    // nothing, and the step is refused.
    let finite = false;
    try {
      const pending = noGrad(() => tidy(() => readTogetherLater([onDevice.squares, ...losses])));
      let read: number[];
      try {
        noGrad(() => t.optimizer.update(lr, { squares: onDevice.guard, maxNorm: t.options.clip }));
      } finally {
        read = pending();
      }
      const [total, ...values] = read;
      gradNorm = Math.sqrt(total!);
      if (typeof loss !== 'number') loss = meanOf(values);
      finite = Number.isFinite(loss) && Number.isFinite(gradNorm);
    } finally {
      onDevice.squares.dispose();
      onDevice.guard.dispose();
      if (!finite) t.optimizer.refuseUpdate();
    }
    if (!finite) throw diverged(loss, gradNorm);
  } else {
    const read = globalGradNormWith(t.params.values(), losses);
    gradNorm = read.norm;
    if (typeof loss !== 'number') loss = meanOf(read.values);
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) throw diverged(loss, gradNorm);
    noGrad(() => t.optimizer.update(lr, clipScale(gradNorm, t.options.clip)));
  }
  t.optimizer.zeroGrad();
  const tokens = accumulate * batch * seqLen;
  t.progress = { step: nextStep, data: position, tokens: t.progress.tokens + tokens };
  return { step: nextStep, loss, lr, gradNorm, tokens, seconds: (performance.now() - started) / 1000 };
}

export class Trainer {
  readonly optimizer: AdamW;
  readonly params: Map<string, Tensor>;
  progress: TrainerProgress = { step: 0, data: { epoch: 0, position: 0 }, tokens: 0 };

  constructor(
    readonly model: TrainableModel,
    readonly data: TokenDataset,
    readonly options: TrainerOptions,
  ) {
    checkTrainerOptions(options);
    this.params = model.namedParameters();
    this.optimizer = new AdamW(this.params, options.adamw);
    // fails now, with a clear message, if the corpus cannot fill one batch
    data.batchesPerEpoch(this.batchOptions());
  }

  private batchOptions(): { seqLen: number; batchSize: number; seed: number } {
    return { seqLen: this.options.seqLen, batchSize: this.options.batch, seed: this.options.seed };
  }

  private toTensors(tokens: Int32Array, rows: number): { inputs: Tensor; targets: Tensor } {
    const { seqLen } = this.options;
    const { inputs, targets } = splitBatch(tokens, seqLen);
    const opts = { dtype: 'int32' as const, device: this.options.device };
    return { inputs: tensor(inputs, [rows, seqLen], opts), targets: tensor(targets, [rows, seqLen], opts) };
  }

  /** One optimizer update: `accumulate` micro-batches forward and backward, clip, AdamW. */
  step(): StepResult {
    const started = performance.now();
    const { accumulate, batch } = this.options;
    this.optimizer.zeroGrad();
    let position = this.progress.data;
    const batches = this.data.batches(this.batchOptions(), position);
    // Each micro-batch runs in its own scope, so that its activations are freed as soon as its backward
    // is done; only its loss survives. The losses are read after every backward is queued (reading one
    // earlier would make the host wait for the device between forward and backward), in the read of the
    // gradient norm.
    const losses: Tensor[] = [];
    try {
      for (let k = 0; k < accumulate; k++) {
        const b = batches.next().value;
        losses.push(tidy(() => {
          const { inputs, targets } = this.toTensors(b.tokens, batch);
          // one micro-batch: its loss is where the backward starts, so the loss kernel can write the logits' gradient
          const loss = this.model.loss(inputs, targets, { gradientInForward: accumulate === 1 });
          // the mean of the micro-batch means is the mean over the whole (equal-sized) batch
          (accumulate > 1 ? mulScalar(loss, 1 / accumulate) : loss).backward();
          return loss;
        }));
        position = b.next;
      }
      return finishStep(this, losses, position, started);
    } finally {
      for (const l of losses) l.dispose();
    }
  }

  /** Mean validation loss (nats per token) over up to `maxSequences` held-out sequences of `seqLen`. */
  evaluate(maxSequences: number, seqLen = this.options.seqLen): number {
    return evaluateLoss(this.model, this.data, seqLen, { batchSize: this.options.batch, maxSequences, device: this.options.device });
  }
}

/**
 * Mean loss per token over the validation split at `seqLen`, weighting each batch by its tokens, with
 * no gradients recorded. `onBatch` reports progress (sequences done).
 */
export function evaluateLoss(
  model: Pick<TrainableModel, 'loss'>,
  data: TokenDataset,
  seqLen: number,
  options: { batchSize: number; maxSequences?: number; device: Device; onBatch?: (sequencesDone: number) => void },
): number {
  let total = 0;
  let count = 0;
  const it = data.validationBatches(seqLen, {
    batchSize: options.batchSize, ...(options.maxSequences !== undefined ? { maxSequences: options.maxSequences } : {}),
  });
  for (const tokens of it) {
    const rows = tokens.length / (seqLen + 1);
    const loss = noGrad(() => tidy(() => {
      const { inputs, targets } = splitBatch(tokens, seqLen);
      const opts = { dtype: 'int32' as const, device: options.device };
      return model.loss(tensor(inputs, [rows, seqLen], opts), tensor(targets, [rows, seqLen], opts)).item();
    }));
    total += loss * rows * seqLen;
    count += rows * seqLen;
    options.onBatch?.(count / seqLen);
  }
  return total / count;
}

/** The mean of the micro-batches' losses, summed in order (float64). */
function meanOf(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total / values.length;
}
