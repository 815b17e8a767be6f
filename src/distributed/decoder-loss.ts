/**
 * The LongNet decoder's loss with every sequence of the batch split over the ranks of a sequence-parallel
 * group (docs/ATTENTION.md, sequence parallelism): rank j of P holds the tokens
 * [floor(j N / P), floor((j + 1) N / P)) of each sequence, inputs and targets, with their global positions
 * for XPos. Everything but attention is local; each attention layer runs `sequenceParallelAttention` over
 * the group.
 *
 * Autograd is synchronous and the collectives are not, so the decoder runs in stages cut at each attention
 * call. A block's stage starts from a leaf holding the residual stream; its q, k, v (after XPos) go to the
 * distributed attention, whose output re-enters the graph as a second leaf feeding the rest of the block.
 * Backward runs the stages in reverse: the loss's graph gives the gradient of the last stream leaf; each
 * block's graph gives the gradients of its stream leaf and attention-output leaf; the attention's own
 * backward turns the latter into gradients of q, k, v, which flow back through the block's projections into
 * the stream leaf; that is the seed of the previous block's output. Parameters accumulate their gradients
 * across the stages, so afterwards each holds this rank's share of the whole gradient (the group's shares
 * add up to the single-device gradient of the sum of the ranks' losses).
 */
import type { DilatedAttentionOptions } from '../attention/patterns.js';
import { check } from '../errors.js';
import type { MultiheadDilatedAttention } from '../model/attention.js';
import type { LongNetDecoder } from '../model/decoder.js';
import { applyXPos, xposCenter } from '../model/xpos.js';
import * as T from '../tensor/index.js';
import { collectInto, noGrad, type Tensor } from '../tensor/index.js';
import type { Communicator } from './communicator.js';
import { sequenceParallelAttention, type SequenceParallelResult } from './sequence-parallel.js';
import { sequenceStarts } from './sequence-plan.js';

export interface ShardedLossOptions {
  /** The whole length N of the sequences. */
  sequenceLength: number;
  /** Multiplies the local mean loss, e.g. (local tokens / global tokens), so that the ranks' values add up. Default 1. */
  weight?: number;
  /** Record for `backward` (default true); false for evaluation, which frees each block as soon as it is done. */
  train?: boolean;
}

export interface ShardedLoss {
  /** weight * the mean cross-entropy of this rank's tokens: a scalar. */
  readonly loss: Tensor;
  /**
   * Accumulates into every parameter's `.grad` this rank's share of the gradient of the sum of the group's
   * losses. Collective over the group: every rank calls it, once. Frees each stage once it is done, and
   * everything, `loss` included, at the end (take a view of `loss` first to read it later).
   */
  backward(): Promise<void>;
  /** Frees everything, `loss` included (safe after `backward` and twice). */
  dispose(): void;
}

/** One block's stage (see the file comment). */
interface Stage {
  /** Every tensor the stage created: freed once its backward is done. */
  readonly tensors: Tensor[];
  /** Leaf: the residual stream entering the block. */
  readonly input: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly attention: SequenceParallelResult;
  /** Leaf: the attention's output, [B, l, H, D]. */
  readonly attended: Tensor;
  /** The block's output, computed from `input` and `attended`. */
  readonly output: Tensor;
}

function disposeAll(tensors: Tensor[]): void {
  for (const t of tensors.splice(0)) t.dispose();
}

/** A new leaf over the storage of `x` (no copy), recording gradients when training. */
function leafOf(x: Tensor, train: boolean): Tensor {
  const leaf = x.shareStorage(x.shape);
  if (train) leaf.requiresGrad = true;
  return leaf;
}

/** Takes a leaf's gradient out of it (the caller owns it). */
function takeGrad(t: Tensor, what: string): Tensor {
  const g = t.grad;
  if (g === null) throw new Error(`internal: no gradient reached ${what}`);
  t.grad = null;
  return g;
}

/**
 * The loss of this rank's part of `inputs` and `targets` (int32 [B, l], l this rank's share of N) under
 * `model`, with attention over `group` (see the file comment). Every rank of the group calls it with the
 * same model and options.
 */
export async function shardedDecoderLoss(
  model: LongNetDecoder, group: Communicator, inputs: Tensor, targets: Tensor, options: ShardedLossOptions,
): Promise<ShardedLoss> {
  const N = options.sequenceLength;
  const P = group.size;
  const j = group.rank;
  const train = options.train ?? true;
  const weight = options.weight ?? 1;
  check(inputs.dtype === 'int32' && inputs.rank === 2, `sharded loss: inputs must be int32 [batch, tokens], got ${inputs.dtype} [${inputs.shape.join(', ')}]`);
  check(targets.dtype === 'int32' && targets.rank === 2 && targets.shape[0] === inputs.shape[0] && targets.shape[1] === inputs.shape[1],
    `sharded loss: targets [${targets.shape.join(', ')}] do not match inputs [${inputs.shape.join(', ')}]`);
  check(Number.isInteger(N) && N >= P, `sharded loss: a sequence of ${N} tokens cannot be split over ${P} ranks`);
  const starts = sequenceStarts(N, P);
  const start = starts[j]!;
  const length = starts[j + 1]! - start;
  check(inputs.shape[1] === length, `sharded loss: rank ${j} of ${P} holds ${inputs.shape[1]} tokens, but N = ${N} gives it ${length}`);
  const blocks = [...model.blocks];
  const attentionOptions = blocks.map((b) => attentionOptionsOf(b.attention, N));

  // run a synchronous piece, keeping what it creates in `owned` (and, when evaluating, recording nothing)
  const piece = <R>(owned: Tensor[], fn: () => R): R => collectInto(owned, train ? fn : () => noGrad(fn));
  const common: Tensor[] = [];
  const stages: Stage[] = [];
  const head: Tensor[] = [];
  const freeStage = (s: Stage): void => {
    s.attention.dispose();
    disposeAll(s.tensors);
  };
  const freeAll = (): void => {
    for (const s of stages.splice(0)) freeStage(s);
    disposeAll(head);
    disposeAll(common);
  };

  try {
    const tables = piece(common, () => blocks[0]!.attention.positions(start, length, xposCenter(N)));
    const embedded = piece(common, () => model.embed(inputs));
    let carry = embedded;
    for (const [i, block] of blocks.entries()) {
      const owned: Tensor[] = [];
      const a = block.attention;
      const input = piece(owned, () => leafOf(carry, train));
      if (!train && stages.length > 0) freeStage(stages.pop()!);
      let attention: SequenceParallelResult | null = null;
      try {
        const { q, k, v } = piece(owned, () => {
          const p = a.project(block.attentionNorm.forward(input));
          const r = applyXPos(p.q, p.k, tables);
          return { q: r.q, k: r.k, v: p.v };
        });
        attention = await sequenceParallelAttention(group, q, k, v, { ...attentionOptions[i]!, sequenceLength: N });
        owned.push(attention.output, attention.lse);
        if (!train) attention.dispose();
        const attended = attention.output;
        if (train) attended.requiresGrad = true;
        const output = piece(owned, () => block.feedForward(a.output(attended, input)));
        stages.push({ tensors: owned, input, q, k, v, attention, attended, output });
        carry = output;
      } catch (error) {
        attention?.dispose();
        disposeAll(owned);
        throw error;
      }
    }
    const last = piece(head, () => leafOf(carry, train));
    if (!train) {
      for (const s of stages.splice(0)) freeStage(s);
      disposeAll(common);
    }
    const loss = piece(head, () => {
      const l = model.headLoss(last, targets);
      return weight === 1 ? l : T.mulScalar(l, weight);
    });

    let done = false;
    return {
      loss,
      dispose: freeAll,
      backward: async (): Promise<void> => {
        check(train, 'sharded loss: backward of a loss computed with train: false');
        check(!done, 'sharded loss: backward already called');
        done = true;
        piece(head, () => loss.backward());
        let grad = takeGrad(last, 'the last block output');
        try {
          for (let s = stages.length - 1; s >= 0; s--) {
            const st = stages[s]!;
            piece(st.tensors, () => st.output.backward(grad));
            grad.dispose();
            const dO = takeGrad(st.attended, 'an attention output');
            st.tensors.push(dO);
            const g = await st.attention.backward(dO);
            st.tensors.push(g.dq, g.dk, g.dv);
            // q, k, v's gradients flow back through the projections into the block input, whose .grad
            // already holds the residual path's
            piece(st.tensors, () => {
              const seed = noGrad(() => T.concat([g.dq, g.dk, g.dv], 3));
              T.concat([st.q, st.k, st.v], 3).backward(seed);
            });
            grad = takeGrad(st.input, 'a block input');
            stages.pop();
            freeStage(st);
          }
          piece(common, () => embedded.backward(grad));
        } finally {
          grad.dispose();
          freeAll();
        }
      },
    };
  } catch (error) {
    freeAll();
    throw error;
  }
}

/** The attention of a layer as options of the distributed operator (dense is the single pattern (N, 1)). */
function attentionOptionsOf(a: MultiheadDilatedAttention, sequenceLength: number): DilatedAttentionOptions {
  const spec = a.attention;
  if (spec.kind === 'dense') return { segmentLengths: [sequenceLength], dilationRates: [1], causal: a.causal };
  check(spec.kind === 'dilated', `sequence parallelism runs dilated or dense attention, not ${spec.kind}`);
  return { segmentLengths: spec.segmentLengths, dilationRates: spec.dilationRates, causal: a.causal };
}
