import type { DType, TypedArray } from '../../tensor/dtype.js';

/** A device buffer owned by the addon; opaque to TypeScript. */
export type NativeHandle = { readonly __longnetCudaBuffer: unique symbol };
/** An NCCL communicator owned by the addon. */
export type NativeComm = { readonly __longnetNcclComm: unique symbol };

/** Element type codes of the addon (native/src/common.h). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = { float32: 0, float64: 1, int32: 2, bfloat16: 3 };
/** The addon's bfloat16 element type (tensors of dtype 'bfloat16', and raw temporaries of the backend). */
export const BF16_CODE = 3;

export interface DeviceInfo {
  index: number;
  name: string;
  major: number;
  minor: number;
  multiprocessors: number;
  totalMemory: number;
}

export interface MemoryStats {
  /** Bytes held by live storages (rounded to the allocator's block sizes). */
  inUse: number;
  /** Bytes of freed blocks kept for reuse. */
  cached: number;
  peakInUse: number;
  deviceAllocations: number;
  cacheHits: number;
  deviceFree: number;
  deviceTotal: number;
}

/** How float32 matrix products use the tensor cores (accumulation is float32 in every mode). */
export type MatmulPrecision = 'fp32' | 'tf32' | 'bf16';
export const MATMUL_PRECISION_CODE: Readonly<Record<MatmulPrecision, number>> = { fp32: 0, tf32: 1, bf16: 2 };

/**
 * Dilated attention on the GPU: 'bf16' runs the fused tensor-core kernels (bf16 q, k, v, dO; float32
 * accumulation, o, lse and gradients) for head dims 32, 64 and 128; 'fp32' the exact float32 kernels.
 */
export type AttentionPrecision = 'fp32' | 'bf16';
export const ATTENTION_PRECISIONS: readonly AttentionPrecision[] = ['fp32', 'bf16'];
/** Head dimensions the fused bf16 kernels take (native/src/kernels/flash_attention.h). */
export const FLASH_HEAD_DIMS: readonly number[] = [32, 64, 128];

type H = NativeHandle;

/** Queued checks the device holds between two waits (native/src/device.h, kMaxQueuedChecks). */
export const MAX_QUEUED_CHECKS = 1 << 16;

/** The first failed queued check: its id, and for an index check the first bad position and its value. */
export interface QueuedCheckFailure { id: number; position: number; value: number }
type Dims = readonly number[];

/** The functions of native/build/longnet_cuda.node (bindings in native/src/napi). Outputs are passed in. */
export interface NativeAddon {
  readonly abiVersion: number;
  probe(): { ok: boolean; reason: string; devices: number };
  init(device: number): DeviceInfo;

  alloc(dtype: number, size: number, zero: boolean): H;
  free(x: H): void;
  /** Byte-for-byte: a bfloat16 buffer takes and gives its bit patterns as a Uint16Array. */
  upload(x: H, data: TypedArray | Uint16Array): void;
  download(x: H, out: TypedArray | Uint16Array): void;
  fill(x: H, value: number): void;
  copyInto(dst: H, src: H): void;
  cast(src: H, dst: H): void;
  allFinite(x: H): boolean;
  /**
   * Queues a check of x that records `id` (0 <= id < MAX_QUEUED_CHECKS) on the device if x holds a NaN or
   * an infinity; no wait.
   */
  queueFiniteCheck(x: H, id: number): void;
  /**
   * Waits for the stream; null when no queued check failed since the last call, else the smallest failed
   * id, with the first bad position and its value for an index check (crossEntropy, gather, scatterAdd);
   * resets.
   */
  takeQueuedCheck(): QueuedCheckFailure | null;
  /**
   * Queues copies of the storages' bytes and of the queued checks' result behind an event (no wait); one
   * such read at a time. readWait waits for that event only (not for work queued after readLater), fills
   * `outs` (one a storage, of its size; Uint16Array bit patterns for bfloat16) and returns the checks'
   * result as takeQueuedCheck does.
   */
  readLater(storages: H[]): void;
  readWait(outs: (TypedArray | Uint16Array)[]): QueuedCheckFailure | null;
  synchronize(): void;
  /** Records a mark on the stream (no wait); its index among the marks since the last streamMarkTimes. */
  streamMark(): number;
  /** Waits for the stream; the device's milliseconds from the first mark to each mark; forgets them. */
  streamMarkTimes(): number[];
  memoryStats(): MemoryStats;
  emptyCache(): void;
  setMatmulPrecision(code: number): void;
  matmulPrecision(): number;
  cublasLtVersion(): number;

  unary(op: string, x: H, out: H): void;
  binary(op: string, a: H, aShape: Dims, b: H, bShape: Dims, out: H, outShape: Dims): void;
  binaryScalar(op: string, a: H, scalar: number, out: H): void;
  reduce(op: string, x: H, shape: Dims, axes: Dims, out: H): void;
  /**
   * out = op(a) op(b), plus bias [n] on every row when not null (added in cuBLASLt's epilogue), plus addend
   * (out's shape) when not null (cuBLASLt's C with beta = 1).
   */
  matmul(
    a: H, aShape: Dims, b: H, bShape: Dims, transA: boolean, transB: boolean, batchShape: Dims, m: number, n: number, k: number, out: H,
    bias: H | null, addend?: H | null,
  ): void;
  /** dWeight = dy^T x and dBias = dy's column sums (when not null), of their own dtype: x's or float32. */
  linearGrads(dy: H, x: H, rows: number, inFeatures: number, outFeatures: number, dWeight: H, dBias: H | null): void;
  /** y = gelu(x W^T + bias) and pre = x W^T + bias (cuBLASLt's GELU_AUX_BIAS epilogue where it has one). */
  linearGelu(x: H, weight: H, bias: H, rows: number, inFeatures: number, outFeatures: number, y: H, pre: H): void;
  permute(x: H, shape: Dims, perm: Dims, out: H): void;
  slice(x: H, shape: Dims, begin: Dims, size: Dims, out: H): void;
  addSliceInto(dst: H, dstShape: Dims, src: H, srcShape: Dims, begin: Dims): void;

  softmax(x: H, rows: number, cols: number, log: boolean, out: H): void;
  softmaxBackward(y: H, dy: H, rows: number, cols: number, log: boolean, out: H): void;
  /** With geluInput, normalizes gelu(x) (backend.ts, LayerNormOptions). */
  layerNorm(x: H, gamma: H | null, beta: H | null, rows: number, cols: number, eps: number, y: H, mean: H, rstd: H, geluInput: boolean): void;
  /**
   * dx plus `addend` when given (another gradient of x, of x's type); dxSums: dx's column sums (float32
   * [cols]); rowDots: per row and per run of `segment` columns, dx's dot product with x (float32).
   */
  layerNormBackward(
    dy: H, x: H, gamma: H | null, mean: H, rstd: H, rows: number, cols: number, dx: H, dGamma: H | null, dBeta: H | null,
    addend: H | null, geluInput: boolean, dxSums?: H | null, rowDots?: H | null, segment?: number,
  ): void;
  /**
   * Softmax over the first `classes` columns of each row (the rest is padding). A bad target fails the
   * queued check `checkId` (its row and value) and gives a NaN loss; no wait.
   */
  crossEntropy(logits: H, targets: H, rows: number, cols: number, ignoreIndex: number, classes: number, loss: H, lse: H, checkId: number): void;
  crossEntropyBackward(
    logits: H, targets: H, lse: H, dLoss: H, rows: number, cols: number, ignoreIndex: number, classes: number, out: H,
  ): void;
  /** crossEntropy and the gradient for dLoss = weight (1 when null) on every row, in one kernel; no wait. */
  crossEntropyWithGrad(
    logits: H, targets: H, rows: number, cols: number, ignoreIndex: number, classes: number, weight: H | null, loss: H, lse: H,
    dLogits: H, checkId: number,
  ): void;
  /**
   * Indices must be below validRows (<= rowsInTable); a bad one fails the queued check `checkId` (its
   * position and value) and gives NaN; no wait.
   */
  gather(table: H, rowsInTable: number, cols: number, indices: H, validRows: number, out: H, checkId: number): void;
  /**
   * y = x (float32 [outer, positions, inner, dim]) in y's type, rotated back first (rotatePairs with
   * transpose) when given the tables, and sums ([inner * dim], float32) = y's column sums, in one pass.
   */
  storeGradient(x: H, cos: H | null, sin: H | null, outer: number, positions: number, inner: number, dim: number, y: H, sums: H): void;
  /** With checkId, a NaN or infinite value written to y fails that queued check; no wait. */
  rotatePairs(x: H, cos: H, sin: H, outer: number, positions: number, inner: number, dim: number, transpose: boolean, y: H, checkId?: number | null): void;
  /** A bad index fails the queued check `checkId` and is skipped; no wait. */
  scatterAdd(dOut: H, indices: H, rowsInTable: number, cols: number, out: H, checkId: number): void;
  adamw(param: H, grad: H, m: H, v: H, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number, gradScale: number): void;
  /**
   * adamw on every (params[i], grads[i], ms[i], vs[i]) with weight decay weightDecays[i], bit for bit, in one
   * launch; the new values of params[copyOf[j]] also go to the bfloat16 copies[j] (round to nearest even).
   */
  adamwMulti(
    params: H[], grads: H[], ms: H[], vs: H[], weightDecays: number[],
    lr: number, beta1: number, beta2: number, eps: number, step: number, gradScale: number, copyOf?: number[] | null, copies?: H[],
    clipSquares?: H | null, maxNorm?: number,
  ): void;
  /** out[i] = the sum of squares of xs[i] (float32). */
  sumsOfSquares(xs: H[], out: H): void;

  /** patterns: [w0, r0, w1, r1, ...] */
  attentionForward(
    q: H, k: H, v: H, o: H, lse: H,
    batch: number, seqLen: number, heads: number, headDim: number, patterns: Dims, causal: boolean, scale: number, blocked: boolean,
  ): void;
  attentionBackward(
    q: H, k: H, v: H, o: H, lse: H, dO: H, dq: H, dk: H, dv: H,
    batch: number, seqLen: number, heads: number, headDim: number, patterns: Dims, causal: boolean, scale: number, blocked: boolean,
  ): void;

  /** Packed attention; offsets and tiles are int32 buffers, tiles (group, first row) pairs of 16 rows. */
  gatheredAttentionForward(q: H, k: H, v: H, o: H, lse: H, qOffsets: H, kOffsets: H, tiles: H, headDim: number, causal: boolean, scale: number): void;
  gatheredAttentionBackward(
    q: H, k: H, v: H, lse: H, dsum: H, dO: H, dq: H, dk: H, dv: H,
    qOffsets: H, kOffsets: H, queryTiles: H, headDim: number, causal: boolean, scale: number, keyTiles: H,
  ): void;
  mergeAttention(accO: H, accLse: H, o: H, lse: H, rows: H, headDim: number): void;

  /**
   * Fused bf16 kernels: q, k, v bfloat16; o float32 or bfloat16, lse float32; headDim 32, 64 or 128. Overwrites
   * o and lse, or with `accumulate` merges into them as they stand (a previous result, or 0 and -Infinity).
   */
  flashAttentionForward(
    q: H, k: H, v: H, o: H, lse: H,
    batch: number, seqLen: number, heads: number, headDim: number, patterns: Dims, causal: boolean, scale: number, blocked: boolean,
    accumulate?: boolean,
  ): void;
  /**
   * Packed attention problems merged into o and lse, rows of headDim elements: `problems` is
   * [qRow0, qStride, nQ, kRow0, kStride, nK, ...]; query i of a problem is row qRow0 + i * qStride of q, o and
   * lse, key j row kRow0 + j * kStride of k and v (k and v may be other storages than q, e.g. gathered keys).
   * Causal: key j is visible to query i iff j <= i + nK - nQ (the queries are the last nQ positions). q, k, v
   * bfloat16, o float32 or bfloat16, lse float32; the problems' query rows must be distinct.
   */
  flashProblemsForward(q: H, k: H, v: H, o: H, lse: H, problems: Dims, headDim: number, causal: boolean, scale: number): void;
  /** q, k, v, dO bfloat16; lse, dsum float32 [B, N, H]; dq, dk, dv float32 (overwritten). */
  flashAttentionBackward(
    q: H, k: H, v: H, dO: H, lse: H, dsum: H, dq: H, dk: H, dv: H,
    batch: number, seqLen: number, heads: number, headDim: number, patterns: Dims, causal: boolean, scale: number, blocked: boolean,
  ): void;
  /** dsum[row] = sum_d o[row, d] dO[row, d] in float32; o and dO each float32 or bfloat16. */
  attentionDsum(o: H, dO: H, dsum: H, rows: number, dim: number): void;
  /** Normal random values (float32 or bfloat16 storage), a function of (seed, index) only. */
  fillRandomNormal(x: H, seed: number, stddev: number): void;
  /** Starts a new peak measurement: memoryStats().peakInUse becomes the bytes in use now. */
  resetPeakMemory(): void;
  /**
   * Rows of rowElems elements, same dtype: dst rows dstRow0 + i become src rows srcRow0 + i * srcStride, for
   * i < count (one strided copy on the stream; dst and src are different storages).
   */
  copyRows(dst: H, dstRow0: number, src: H, srcRow0: number, srcStride: number, count: number, rowElems: number): void;

  ncclInfo(): { ok: true; version: number } | { ok: false; reason: string };
  ncclUniqueId(): Uint8Array;
  ncclCommInit(id: Uint8Array, nranks: number, rank: number): NativeComm;
  ncclCommDestroy(comm: NativeComm, abort?: boolean): void;
  /** '' while healthy, else NCCL's description of the failure. */
  ncclAsyncError(comm: NativeComm): string;
  ncclAllReduce(comm: NativeComm, send: H, recv: H, op: 'sum' | 'max' | 'min' | 'avg'): void;
  ncclAllGather(comm: NativeComm, send: H, recv: H): void;
  ncclReduceScatter(comm: NativeComm, send: H, recv: H, op: 'sum' | 'max' | 'min' | 'avg'): void;
  ncclBroadcast(comm: NativeComm, send: H, recv: H, root: number): void;
  /** Point-to-point: elements [offset, offset + count) of the buffer (inside a group for several). */
  ncclSend(comm: NativeComm, buffer: H, offset: number, count: number, peer: number): void;
  ncclRecv(comm: NativeComm, buffer: H, offset: number, count: number, peer: number): void;
  ncclGroupStart(): void;
  ncclGroupEnd(): void;
}

/** The addon version this TypeScript expects; a stale build is reported instead of misbehaving. */
export const ABI_VERSION = 15;
