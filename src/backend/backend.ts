import type { DType, TypedArray } from '../tensor/dtype.js';
import type { Shape } from '../tensor/shape.js';

/** Where a tensor lives. */
export type Device = 'cpu' | 'cuda';

/** A block of device memory holding `size` elements of `dtype`, owned by one backend. */
export interface Storage {
  readonly device: Device;
  readonly dtype: DType;
  readonly size: number;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'abs' | 'relu' | 'gelu' | 'sigmoid' | 'square' | 'reciprocal';

/**
 * Elementwise binary ops with broadcasting. `reluBackward(x, dy)` and `geluBackward(x, dy)` give
 * dy * f'(x), so that a backend can fuse them; `greater` yields 1 or 0.
 */
export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'pow' | 'greater' | 'reluBackward' | 'geluBackward';

export type ReduceOp = 'sum' | 'max';

/** One pattern of dilated attention: segment length w and dilation rate r. */
export interface AttentionPattern {
  readonly segmentLength: number;
  readonly dilationRate: number;
}

/**
 * Which offset head h uses under a pattern of rate r: `paper` is h mod r; `blocked` is torchscale's
 * h // ceil(H / r), with heads padded to a multiple of r.
 */
export type HeadOffsets = 'paper' | 'blocked';

/** q, k, v are [batch, seqLen, heads, headDim], row-major. */
export interface AttentionGeometry {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  readonly headDim: number;
}

/**
 * Rotary tables (rotatePairs) that turned the attention's inputs into the q and k it attended with: cos and
 * sin of q and of k, each [seqLen, headDim]. Given to dilatedAttentionBackward, dq and dk come back as the
 * gradients of the unrotated inputs (the adjoint rotation applied as the gradients are written).
 */
export interface AttentionRotation {
  readonly qCos: Storage;
  readonly qSin: Storage;
  readonly kCos: Storage;
  readonly kSin: Storage;
}

export interface AttentionBackwardOptions {
  /** The tables that rotated q and k: dq and dk come back as the gradients of the unrotated inputs. */
  rotation?: AttentionRotation;
  /**
   * columnSums[i] asks for the column sums (float32 [heads * headDim], over batch and positions) of dq, dk
   * or dv: the bias gradient of the linear layer that made that input. A backend that cannot make them in
   * the pass that writes the gradient leaves them out.
   */
  columnSums?: readonly boolean[];
  /** rowsum(dO * O) ([batch * seqLen * heads], float32), made already; a backend that needs it then skips its own pass. */
  dsum?: Storage;
}

export interface AttentionConfig {
  readonly patterns: readonly AttentionPattern[];
  readonly causal: boolean;
  readonly scale: number;
  readonly headOffsets: HeadOffsets;
}

/**
 * Packed variable-length attention (FlashAttention's "varlen" layout), used by sequence parallelism:
 * `qOffsets.length - 1` independent problems; group g has the query rows [qOffsets[g], qOffsets[g+1]) of
 * q (and of o, lse, dO, dq, dsum) and the key rows [kOffsets[g], kOffsets[g+1]) of k and v (and dk, dv).
 * A row is `headDim` values; offsets start at 0 and never decrease. Causal masks are bottom-right
 * aligned: with mq queries and mk keys, query i sees keys j <= i + mk - mq (the queries are the last
 * mq key positions), so a query that sees no key gets o = 0 and lse = -inf.
 */
export interface GatheredAttentionLayout {
  readonly qOffsets: Int32Array;
  readonly kOffsets: Int32Array;
  readonly headDim: number;
  readonly causal: boolean;
  readonly scale: number;
}

export interface LayerNormResult { y: Storage; mean: Storage; rstd: Storage }
export interface LayerNormGrads {
  dx: Storage;
  dGamma: Storage | null;
  dBeta: Storage | null;
  /** dx's column sums (float32 [cols]), when asked for and the backend makes them in the same pass. */
  dxColumnSums?: Storage;
  /** Per row and per run of `rowDots` columns, dx's dot product with x (float32 [rows * cols / rowDots]), likewise. */
  dxRowDots?: Storage;
}
export interface LayerNormOptions {
  /**
   * Normalize gelu(x) (the tanh form, as `unary('gelu')`) instead of x, computed in the same pass and not
   * stored: the forward and the backward both take the pre-activation x, and the backward's dx is its gradient.
   */
  geluInput?: boolean;
}
export interface LayerNormBackwardOptions extends LayerNormOptions {
  /** Another gradient of x (x's dtype and size), added to dx in the same pass. */
  addend?: Storage | null;
  /**
   * Also dx's column sums (the bias gradient of the linear layer that made x), if the backend can make
   * them in the same pass; a backend may leave them out (LayerNormGrads.dxColumnSums).
   */
  dxColumnSums?: boolean;
  /**
   * Also, per row and per run of this many columns (dividing cols), dx's dot product with x: rowsum(dO * O)
   * of an attention whose output x is. Likewise optional (LayerNormGrads.dxRowDots).
   */
  rowDots?: number;
}
export interface AdamWHyper {
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number;
  /** The gradient is multiplied by this first (global-norm clipping without a pass over the gradients); 1 if absent. */
  gradScale?: number;
  /**
   * adamwMulti only: the global-norm clip taken where the update runs, so that it needs no value from the
   * host. `squares` (float32 [1]) holds the sum of the squares of every gradient; the gradients are also
   * multiplied by clipFactor(sqrt of it, maxNorm), and where that norm is not finite nothing is updated (a
   * diverged step, which the host refuses once it reads the norm).
   */
  clip?: { squares: Storage; maxNorm: number };
}

/** The factor that brings a global gradient norm down to `maxNorm`: 1 when it is within it, or when maxNorm is 0 (no clipping). */
export function clipFactor(norm: number, maxNorm: number): number {
  return maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}
/**
 * One parameter of a multi-tensor AdamW update (`adamwMulti`): updated in place with its own weight decay;
 * with `copy` (the parameter's size, any float dtype), the new values are written there too, rounded to
 * its dtype, in the same pass.
 */
export interface AdamWTensors { param: Storage; grad: Storage; m: Storage; v: Storage; weightDecay: number; copy?: Storage | null }

/**
 * The primitive kernels every device provides. All storages are contiguous and row-major; shapes are
 * passed alongside. Kernels return new storages unless their name says they work in place. A backend
 * knows nothing of tensors, autograd or models: gradients are composed in the core from these.
 */
export interface Backend {
  readonly device: Device;

  // memory
  alloc(dtype: DType, size: number): Storage; // zero-filled
  fromArray(data: TypedArray): Storage; // copies
  read(x: Storage): TypedArray; // a copy on the host
  free(x: Storage): void;
  fill(x: Storage, value: number): void; // in place
  copy(x: Storage): Storage;
  cast(x: Storage, dtype: DType): Storage;
  assign(dst: Storage, src: Storage): void; // in place, same size
  /** Whether no element is NaN or infinite. */
  allFinite(x: Storage): boolean;
  /**
   * Fails with an InputError "`what` contains NaN or infinite values" if an element of x is NaN or
   * infinite: at once on the CPU; a device with a queue checks on the device without waiting and throws
   * at the next call that waits for it (`read`, `synchronize`, `allFinite`), naming the first failed check.
   */
  checkFinite(x: Storage, what: string): void;

  // elementwise
  unary(op: UnaryOp, x: Storage): Storage;
  binary(op: BinaryOp, a: Storage, aShape: Shape, b: Storage, bShape: Shape, outShape: Shape): Storage;
  /** a op scalar, elementwise. */
  binaryScalar(op: BinaryOp, a: Storage, scalar: number): Storage;

  // reductions over `axes` (sorted, distinct); the result keeps the reduced axes with length 1
  reduce(op: ReduceOp, x: Storage, shape: Shape, axes: readonly number[]): Storage;
  /** [xs.length]: the sum of the squares of each storage's elements (all of one float dtype), in one call. */
  sumsOfSquares(xs: readonly Storage[]): Storage;

  /**
   * Batched matrix product: a is [...batchA, M, K] (or [..., K, M] when transA), b likewise; leading
   * dimensions broadcast to `batchShape`. Result [...batchShape, M, N], plus `bias` [N] on every row
   * when given (a linear layer's bias, which a GPU adds in the product's epilogue; needs K > 0), plus
   * `addend` of the result's shape when given (a residual, which a GPU reads in the product).
   */
  matmul(
    a: Storage, aShape: Shape, b: Storage, bShape: Shape,
    transA: boolean, transB: boolean, batchShape: Shape, m: number, n: number, k: number, bias?: Storage | null,
    addend?: Storage | null,
  ): Storage;

  /**
   * A linear layer's parameter gradients from dy [rows, out] and x [rows, in] (one float dtype):
   * dWeight [out, in] = dy^T x and, with `bias`, dBias [out] = dy's sums over rows, both of `dtype` (x's,
   * or float32 for the float32 master weights of bfloat16 activations). A GPU writes float32 straight
   * from the product's fp32 accumulators.
   */
  linearGrads(
    dy: Storage, x: Storage, rows: number, inFeatures: number, outFeatures: number, bias: boolean, dtype: DType,
  ): { weight: Storage; bias: Storage | null };
  /**
   * gelu(x W^T + b) (the tanh form, as `unary('gelu')`) for x [rows, in], weight [out, in] and bias [out]
   * of one dtype, and the pre-activation x W^T + b, which its gradient needs. A GPU writes both from one
   * product's epilogue.
   */
  linearGelu(x: Storage, weight: Storage, bias: Storage, rows: number, inFeatures: number, outFeatures: number): { y: Storage; pre: Storage };

  // layout
  permute(x: Storage, shape: Shape, perm: readonly number[]): Storage;
  /** The block of x starting at `begin` with extent `size`. */
  slice(x: Storage, shape: Shape, begin: readonly number[], size: readonly number[]): Storage;
  /** Adds src (of shape `srcShape`) into dst at offset `begin`, in place (the adjoint of slice). */
  addSliceInto(dst: Storage, dstShape: Shape, src: Storage, srcShape: Shape, begin: readonly number[]): void;

  // normalization and losses, over the last axis of [rows, cols]
  softmax(x: Storage, rows: number, cols: number, log: boolean): Storage;
  /** Gradient of (log-)softmax given its output y and dy. */
  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number, log: boolean): Storage;
  /** gamma and beta of x's dtype (float32 for a bfloat16 x); mean and rstd float32 on a GPU. */
  layerNorm(
    x: Storage, gamma: Storage | null, beta: Storage | null, rows: number, cols: number, eps: number, options?: LayerNormOptions,
  ): LayerNormResult;
  layerNormBackward(
    dy: Storage, x: Storage, gamma: Storage | null, mean: Storage, rstd: Storage, rows: number, cols: number, hasBeta: boolean,
    options?: LayerNormBackwardOptions,
  ): LayerNormGrads;
  /**
   * Per-row -log softmax(logits)[target] over the first `classes` columns of each row (1 <= classes <=
   * cols; the columns past it are padding, outside the softmax, and targets must be below `classes`);
   * rows whose target equals ignoreIndex give 0. Also returns the row log-sum-exp. Any other target is a
   * RangeError "crossEntropy: target T at row R is outside [0, classes)": at once on the CPU; a device with
   * a queue checks on the device and throws at its next wait, as `checkFinite` does.
   */
  crossEntropy(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): { loss: Storage; lse: Storage };
  /** d(sum_r w_r * loss_r)/dlogits given the per-row weights dLoss [rows]; 0 on the columns past `classes`. */
  crossEntropyBackward(
    logits: Storage, targets: Storage, lse: Storage, dLoss: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): Storage;
  /**
   * crossEntropy and, from the same reads of the logits, the crossEntropyBackward gradient for the same
   * weight on every row: `weight` (a one-element storage, the mean's 1 / count) or 1 when null.
   */
  crossEntropyWithGrad(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number, weight: Storage | null,
  ): { loss: Storage; lse: Storage; grad: Storage };

  /**
   * Rotary positions over pairs: x is [outer, positions, inner, dim] (dim even), cos and sin are
   * [positions, dim], and y[e] = x[e] * cos[e] + x[e ^ 1] * sin[e] along the last axis (e ^ 1: the other
   * element of e's pair). `transpose` gives the adjoint, y[e] = x[e] * cos[e] + x[e ^ 1] * sin[e ^ 1],
   * which is the gradient with respect to x. With `checkAs`, y is also checked as `checkFinite(y, checkAs)`
   * would, in the same pass.
   */
  rotatePairs(
    x: Storage, cos: Storage, sin: Storage, outer: number, positions: number, inner: number, dim: number, transpose: boolean, checkAs?: string,
  ): Storage;

  // embeddings
  /**
   * Rows of table [rowsInTable, cols] picked by indices, each below validRows (default rowsInTable; rows past
   * it are padding). Another index is a RangeError "embedding: index I is outside [0, validRows)", at once
   * or at the next wait as for crossEntropy's targets.
   */
  gather(table: Storage, rowsInTable: number, cols: number, indices: Storage, validRows?: number): Storage;
  scatterAdd(dOut: Storage, indices: Storage, rowsInTable: number, cols: number): Storage;

  // attention: o [B, N, H, D] and lse [B, N, H] (natural log, -inf on rows with no key)
  dilatedAttention(q: Storage, k: Storage, v: Storage, geometry: AttentionGeometry, config: AttentionConfig): { o: Storage; lse: Storage };
  dilatedAttentionBackward(
    q: Storage, k: Storage, v: Storage, o: Storage, lse: Storage, dO: Storage,
    geometry: AttentionGeometry, config: AttentionConfig, options?: AttentionBackwardOptions,
  ): { dq: Storage; dk: Storage; dv: Storage; columnSums?: readonly (Storage | null)[] };

  // Optional primitives of sequence-parallel attention (src/distributed); a backend without them cannot run it.
  /** Attention of each packed group: o [rowsQ, headDim] (normalized) and lse [rowsQ]. */
  gatheredAttention?(q: Storage, k: Storage, v: Storage, layout: GatheredAttentionLayout): { o: Storage; lse: Storage };
  /**
   * Gradients of the groups above when their rows belong to a larger softmax whose final log-sum-exp is
   * `lse` and whose rowsum(dO * O_final) is `dsum` (both [rowsQ]): FlashAttention-2's backward.
   */
  gatheredAttentionBackward?(
    q: Storage, k: Storage, v: Storage, lse: Storage, dsum: Storage, dO: Storage, layout: GatheredAttentionLayout,
  ): { dq: Storage; dk: Storage; dv: Storage };
  /**
   * Folds partial results into running ones, in place: for each packed row i, the row rows[i] (int32) of
   * accO [*, headDim] and accLse becomes the softmax of the union of both key sets (weights from the
   * log-sum-exps). The indices of one call are distinct.
   */
  mergeAttention?(accO: Storage, accLse: Storage, o: Storage, lse: Storage, rows: Storage, headDim: number): void;

  // optimizer: updates param, m and v in place
  adamw(param: Storage, grad: Storage, m: Storage, v: Storage, hyper: AdamWHyper): void;
  /**
   * `adamw` on each of `tensors` with its own weight decay, the same bit for bit, in one call (a GPU updates
   * them all in one launch). Optional: without it the optimizer calls `adamw` per tensor.
   */
  adamwMulti?(tensors: readonly AdamWTensors[], hyper: Omit<AdamWHyper, 'weightDecay'>): void;

  /**
   * Optional, for a device with a queue: the values of xs once the work queued so far is done, read
   * without waiting for work queued after this call. The copies are queued now; the function returned
   * waits for them (and reports a failed queued check, as `read` does) when called. One such read at a time.
   */
  readLater?(xs: readonly Storage[]): () => TypedArray[];

  /** Waits for queued work (a no-op on the CPU). */
  synchronize(): void;
}
