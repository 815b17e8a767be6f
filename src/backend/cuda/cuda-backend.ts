import type {
  AdamWHyper, AdamWTensors, AttentionBackwardOptions, AttentionConfig, AttentionGeometry, AttentionRotation, Backend, BinaryOp, GatheredAttentionLayout, LayerNormBackwardOptions,
  LayerNormGrads, LayerNormOptions, LayerNormResult, ReduceOp, Storage, UnaryOp,
} from '../backend.js';
import { newTypedArray, dtypeOfArray, type DType, type TypedArray } from '../../tensor/dtype.js';
import { sizeOf, type Shape } from '../../tensor/shape.js';
import {
  ATTENTION_PRECISIONS, BF16_CODE, DTYPE_CODE, FLASH_HEAD_DIMS, MATMUL_PRECISION_CODE, MAX_QUEUED_CHECKS, type AttentionPrecision,
  type DeviceInfo, type MatmulPrecision, type MemoryStats, type NativeAddon, type NativeHandle, type QueuedCheckFailure,
} from './native.js';
import { CudaStorage, activationHandle, cudaHandle, floatHandle, intHandle } from './storage.js';
import { decodeBf16 } from '../../io/halfFloat.js';
import { checkGatheredLayout } from '../gathered-layout.js';
import { InputError } from '../../errors.js';

/** Where the addon downloads a storage's elements: bfloat16 as bit patterns, the rest as they are. */
function downloadBuffer(x: Storage): TypedArray | Uint16Array {
  return x.dtype === 'bfloat16' ? new Uint16Array(x.size) : newTypedArray(x.dtype, x.size);
}

/** A download's elements as values (bfloat16 bit patterns decoded to float32). */
function fromDownload(raw: TypedArray | Uint16Array): TypedArray {
  if (!(raw instanceof Uint16Array)) return raw;
  const out = new Float32Array(raw.length);
  decodeBf16(raw, out);
  return out;
}

/**
 * The GPU backend: every kernel runs in the native addon on one CUDA stream, so calls return as soon as
 * the work is queued; `read`, `synchronize` and `allFinite` wait for it (and `readLater`'s result, for the
 * work queued before it). Checks of inputs queue on the device too (`checkFinite`, and the index checks of
 * `gather`, `scatterAdd` and `crossEntropy`): a failure is thrown at the next of those waits, with the message the CPU backend throws at once. Float32 storage, or bfloat16 for the
 * activations of mixed-precision training (the kernels compute in float32 either way); int32 for indices;
 * products go through cuBLASLt (float32 operands: TF32 tensor cores by default, see `setMatmulPrecision`;
 * bfloat16 operands: bf16 tensor cores, fp32 accumulation), and dilated attention through the fused bf16
 * tensor-core kernels where the head dim allows (see `setAttentionPrecision`).
 */
export class CudaBackend implements Backend {
  readonly device = 'cuda' as const;
  private attention: AttentionPrecision = 'bf16';
  /** The error of each queued check, by its id on the device, made from what the device found. */
  private pendingChecks: ((failure: QueuedCheckFailure) => Error)[] = [];

  constructor(private readonly native: NativeAddon, readonly info: DeviceInfo) {}

  private make(dtype: DType, size: number, zero = false): CudaStorage {
    return new CudaStorage(this.native.alloc(DTYPE_CODE[dtype], size, zero), dtype, size);
  }

  private f32(size: number): CudaStorage { return this.make('float32', size); }

  alloc(dtype: DType, size: number): Storage { return this.make(dtype, size, true); }

  fromArray(data: TypedArray): Storage {
    const out = this.make(dtypeOfArray(data), data.length);
    this.native.upload(out.handle, data);
    return out;
  }

  read(x: Storage): TypedArray {
    const raw = downloadBuffer(x);
    this.native.download(cudaHandle(x, 'read'), raw);
    this.settleChecks();
    return fromDownload(raw);
  }

  readLater(xs: readonly Storage[]): () => TypedArray[] {
    this.native.readLater(xs.map((x) => cudaHandle(x, 'readLater')));
    // the checks queued so far are the read's to report
    const errors = this.pendingChecks;
    this.pendingChecks = [];
    return () => {
      const raw = xs.map(downloadBuffer);
      const failed = this.native.readWait(raw);
      if (failed !== null) throw errors[failed.id]?.(failed) ?? new InputError(`queued check ${failed.id} failed`);
      return raw.map(fromDownload);
    };
  }

  free(x: Storage): void { this.native.free(cudaHandle(x, 'free')); }

  fill(x: Storage, value: number): void { this.native.fill(cudaHandle(x, 'fill'), value); }

  copy(x: Storage): Storage {
    const out = this.make(x.dtype, x.size);
    this.native.copyInto(out.handle, cudaHandle(x, 'copy'));
    return out;
  }

  cast(x: Storage, dtype: DType): Storage {
    const out = this.make(dtype, x.size);
    this.native.cast(cudaHandle(x, 'cast'), out.handle);
    return out;
  }

  assign(dst: Storage, src: Storage): void {
    if (dst.size !== src.size) throw new Error(`assign: sizes differ (${dst.size} vs ${src.size})`);
    const d = cudaHandle(dst, 'assign destination');
    const s = cudaHandle(src, 'assign source');
    if (dst.dtype === src.dtype) this.native.copyInto(d, s);
    else this.native.cast(s, d);
  }

  allFinite(x: Storage): boolean {
    const finite = this.native.allFinite(cudaHandle(x, 'allFinite'));
    this.settleChecks();
    return finite;
  }

  checkFinite(x: Storage, what: string): void {
    const h = cudaHandle(x, 'checkFinite');
    if (x.size === 0 || x.dtype === 'int32') return;
    this.native.queueFiniteCheck(h, this.queueCheck(() => new InputError(`${what} contains NaN or infinite values`)));
  }

  /** The id of a new queued check whose failure `error` describes. */
  private queueCheck(error: (failure: QueuedCheckFailure) => Error): number {
    // the device holds a bounded number of checks between waits
    if (this.pendingChecks.length >= MAX_QUEUED_CHECKS) this.settleChecks();
    this.pendingChecks.push(error);
    return this.pendingChecks.length - 1;
  }

  /**
   * Reads the result of the queued checks (a wait for the device) and throws the error of the first that
   * failed; the list starts over either way.
   */
  private settleChecks(): void {
    if (this.pendingChecks.length === 0) return;
    const errors = this.pendingChecks;
    this.pendingChecks = [];
    const failed = this.native.takeQueuedCheck();
    if (failed === null) return;
    throw errors[failed.id]?.(failed) ?? new InputError(`queued check ${failed.id} failed`);
  }

  // elementwise ops, reductions, products, layer norm and rotations take float32 or bfloat16 storage and
  // give their result in the same type (float arithmetic either way)

  unary(op: UnaryOp, x: Storage): Storage {
    const h = activationHandle(x, op);
    const out = this.make(x.dtype, x.size);
    this.orFree([out], () => this.native.unary(op, h, out.handle));
    return out;
  }

  binary(op: BinaryOp, a: Storage, aShape: Shape, b: Storage, bShape: Shape, outShape: Shape): Storage {
    const [ha, hb] = [activationHandle(a, op), activationHandle(b, op)];
    const out = this.make(a.dtype, sizeOf(outShape));
    this.orFree([out], () => this.native.binary(op, ha, aShape, hb, bShape, out.handle, outShape));
    return out;
  }

  binaryScalar(op: BinaryOp, a: Storage, scalar: number): Storage {
    const h = activationHandle(a, op);
    const out = this.make(a.dtype, a.size);
    this.orFree([out], () => this.native.binaryScalar(op, h, scalar, out.handle));
    return out;
  }

  reduce(op: ReduceOp, x: Storage, shape: Shape, axes: readonly number[]): Storage {
    const h = activationHandle(x, op);
    const out = this.make(x.dtype, sizeOf(shape.map((d, i) => (axes.includes(i) ? 1 : d))));
    this.orFree([out], () => this.native.reduce(op, h, shape, axes, out.handle));
    return out;
  }

  sumsOfSquares(xs: readonly Storage[]): Storage {
    if (xs.length === 0) throw new Error('sumsOfSquares: no storages');
    const out = this.f32(xs.length);
    this.native.sumsOfSquares(xs.map((x) => floatHandle(x, 'sumsOfSquares')), out.handle);
    return out;
  }

  matmul(
    a: Storage, aShape: Shape, b: Storage, bShape: Shape,
    transA: boolean, transB: boolean, batchShape: Shape, m: number, n: number, k: number, bias?: Storage | null,
    addend?: Storage | null,
  ): Storage {
    const [ha, hb] = [activationHandle(a, 'matmul'), activationHandle(b, 'matmul')];
    const hBias = bias ? activationHandle(bias, 'matmul bias') : null;
    const hAddend = addend ? activationHandle(addend, 'matmul addend') : null;
    const out = this.make(a.dtype, sizeOf(batchShape) * m * n);
    this.orFree([out], () => this.native.matmul(ha, aShape, hb, bShape, transA, transB, batchShape, m, n, k, out.handle, hBias, hAddend));
    return out;
  }

  /** dy and x float32 or bfloat16; the gradients of x's dtype or float32. */
  linearGrads(
    dy: Storage, x: Storage, rows: number, inFeatures: number, outFeatures: number, bias: boolean, dtype: DType,
  ): { weight: Storage; bias: Storage | null } {
    const [hdy, hx] = [activationHandle(dy, 'linearGrads'), activationHandle(x, 'linearGrads')];
    const weight = this.make(dtype, outFeatures * inFeatures);
    const [db] = this.orFreeAll([weight], () => (bias ? [this.make(dtype, outFeatures)] : [])) as CudaStorage[];
    const made = db ? [weight, db] : [weight];
    this.orFree(made, () => this.native.linearGrads(hdy, hx, rows, inFeatures, outFeatures, weight.handle, db?.handle ?? null));
    return { weight, bias: db ?? null };
  }

  linearGelu(x: Storage, weight: Storage, bias: Storage, rows: number, inFeatures: number, outFeatures: number): { y: Storage; pre: Storage } {
    const [hx, hw, hb] = [activationHandle(x, 'linearGelu'), activationHandle(weight, 'linearGelu'), activationHandle(bias, 'linearGelu')];
    const y = this.make(x.dtype, rows * outFeatures);
    const [pre] = this.orFreeAll([y], () => [this.make(x.dtype, rows * outFeatures)]) as [CudaStorage];
    this.orFree([y, pre], () => this.native.linearGelu(hx, hw, hb, rows, inFeatures, outFeatures, y.handle, pre.handle));
    return { y, pre };
  }

  permute(x: Storage, shape: Shape, perm: readonly number[]): Storage {
    const out = this.make(x.dtype, x.size);
    this.native.permute(cudaHandle(x, 'permute'), shape, perm, out.handle);
    return out;
  }

  slice(x: Storage, shape: Shape, begin: readonly number[], size: readonly number[]): Storage {
    const out = this.make(x.dtype, sizeOf(size));
    this.native.slice(cudaHandle(x, 'slice'), shape, begin, size, out.handle);
    return out;
  }

  addSliceInto(dst: Storage, dstShape: Shape, src: Storage, srcShape: Shape, begin: readonly number[]): void {
    this.native.addSliceInto(floatHandle(dst, 'addSliceInto'), dstShape, floatHandle(src, 'addSliceInto'), srcShape, begin);
  }

  softmax(x: Storage, rows: number, cols: number, log: boolean): Storage {
    const out = this.f32(rows * cols);
    this.native.softmax(floatHandle(x, 'softmax'), rows, cols, log, out.handle);
    return out;
  }

  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number, log: boolean): Storage {
    const out = this.f32(rows * cols);
    this.native.softmaxBackward(floatHandle(y, 'softmax'), floatHandle(dy, 'softmax'), rows, cols, log, out.handle);
    return out;
  }

  /** x and y of one type (float32 or bfloat16); gamma, beta, mean and rstd float32. */
  layerNorm(
    x: Storage, gamma: Storage | null, beta: Storage | null, rows: number, cols: number, eps: number, options: LayerNormOptions = {},
  ): LayerNormResult {
    const hx = activationHandle(x, 'layerNorm');
    const hg = gamma && floatHandle(gamma, 'layerNorm gamma'), hb = beta && floatHandle(beta, 'layerNorm beta');
    const y = this.make(x.dtype, rows * cols);
    const [mean, rstd] = this.orFreeAll([y], () => this.f32s(2, rows)) as [CudaStorage, CudaStorage];
    this.orFree([y, mean, rstd], () => this.native.layerNorm(hx, hg, hb, rows, cols, eps, y.handle, mean.handle, rstd.handle, !!options.geluInput));
    return { y, mean, rstd };
  }

  layerNormBackward(
    dy: Storage, x: Storage, gamma: Storage | null, mean: Storage, rstd: Storage, rows: number, cols: number, hasBeta: boolean,
    options: LayerNormBackwardOptions = {},
  ): LayerNormGrads {
    const [hdy, hx] = [activationHandle(dy, 'layerNorm'), activationHandle(x, 'layerNorm')];
    const hAddend = options.addend ? activationHandle(options.addend, 'layerNorm addend') : null;
    const hg = gamma && floatHandle(gamma, 'layerNorm gamma');
    const [hm, hr] = [floatHandle(mean, 'layerNorm'), floatHandle(rstd, 'layerNorm')];
    // dx in the activations' type; the parameter gradients and dx's column sums float32
    const made: CudaStorage[] = [];
    this.orFree(made, () => {
      made.push(this.make(x.dtype, rows * cols));
      if (gamma) made.push(this.f32(cols));
      if (hasBeta) made.push(this.f32(cols));
      if (options.dxColumnSums) made.push(this.f32(cols));
      if (options.rowDots) made.push(this.f32((rows * cols) / options.rowDots));
    });
    const [dx, ...rest] = made as [CudaStorage, ...CudaStorage[]];
    const dGamma = gamma ? rest.shift()! : null;
    const dBeta = hasBeta ? rest.shift()! : null;
    const dxColumnSums = options.dxColumnSums ? rest.shift()! : undefined;
    const dxRowDots = options.rowDots ? rest.shift()! : undefined;
    this.orFree(made, () => this.native.layerNormBackward(
      hdy, hx, hg, hm, hr, rows, cols, dx.handle, dGamma?.handle ?? null, dBeta?.handle ?? null, hAddend, !!options.geluInput,
      dxColumnSums?.handle ?? null, dxRowDots?.handle ?? null, options.rowDots ?? 1,
    ));
    return { dx, dGamma, dBeta, ...(dxColumnSums ? { dxColumnSums } : {}), ...(dxRowDots ? { dxRowDots } : {}) };
  }

  /** Logits float32 or bfloat16; the loss and lse float32 either way. */
  crossEntropy(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): { loss: Storage; lse: Storage } {
    const [hl, ht] = [activationHandle(logits, 'crossEntropy'), intHandle(targets, 'crossEntropy targets')];
    const [loss, lse] = this.f32s(2, rows) as [CudaStorage, CudaStorage];
    this.orFree([loss, lse], () => {
      const check = this.queueCheck(({ position, value }) =>
        new RangeError(`crossEntropy: target ${value} at row ${position} is outside [0, ${classes})`));
      this.native.crossEntropy(hl, ht, rows, cols, ignoreIndex, classes, loss.handle, lse.handle, check);
    });
    return { loss, lse };
  }

  crossEntropyBackward(
    logits: Storage, targets: Storage, lse: Storage, dLoss: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): Storage {
    const [hl, ht] = [activationHandle(logits, 'crossEntropy'), intHandle(targets, 'crossEntropy targets')];
    const [hs, hd] = [floatHandle(lse, 'crossEntropy'), floatHandle(dLoss, 'crossEntropy')];
    const out = this.make(logits.dtype, rows * cols);
    this.orFree([out], () => this.native.crossEntropyBackward(hl, ht, hs, hd, rows, cols, ignoreIndex, classes, out.handle));
    return out;
  }

  crossEntropyWithGrad(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number, weight: Storage | null,
  ): { loss: Storage; lse: Storage; grad: Storage } {
    const [hl, ht] = [activationHandle(logits, 'crossEntropy'), intHandle(targets, 'crossEntropy targets')];
    const hw = weight && floatHandle(weight, 'crossEntropy weight');
    const [loss, lse] = this.f32s(2, rows) as [CudaStorage, CudaStorage];
    const [grad] = this.orFreeAll([loss, lse], () => [this.make(logits.dtype, rows * cols)]) as [CudaStorage];
    this.orFree([loss, lse, grad], () => {
      const check = this.queueCheck(({ position, value }) =>
        new RangeError(`crossEntropy: target ${value} at row ${position} is outside [0, ${classes})`));
      this.native.crossEntropyWithGrad(hl, ht, rows, cols, ignoreIndex, classes, hw, loss.handle, lse.handle, grad.handle, check);
    });
    return { loss, lse, grad };
  }

  /** x and y float32 or bfloat16; the tables float32. */
  rotatePairs(
    x: Storage, cos: Storage, sin: Storage, outer: number, positions: number, inner: number, dim: number, transpose: boolean, checkAs?: string,
  ): Storage {
    const hx = activationHandle(x, 'rotatePairs');
    const [hc, hs] = [floatHandle(cos, 'rotatePairs cos'), floatHandle(sin, 'rotatePairs sin')];
    const y = this.make(x.dtype, x.size);
    this.orFree([y], () => {
      // the finiteness check of y rides on the kernel that writes it
      const check = checkAs === undefined ? null : this.queueCheck(() => new InputError(`${checkAs} contains NaN or infinite values`));
      this.native.rotatePairs(hx, hc, hs, outer, positions, inner, dim, transpose, y.handle, check);
    });
    return y;
  }

  gather(table: Storage, rowsInTable: number, cols: number, indices: Storage, validRows = rowsInTable): Storage {
    const [ht, hi] = [floatHandle(table, 'embedding'), intHandle(indices, 'embedding indices')];
    const out = this.f32(indices.size * cols);
    this.orFree([out], () => this.native.gather(ht, rowsInTable, cols, hi, validRows, out.handle, this.queueIndexCheck(validRows)));
    return out;
  }

  scatterAdd(dOut: Storage, indices: Storage, rowsInTable: number, cols: number): Storage {
    const [hd, hi] = [floatHandle(dOut, 'embedding'), intHandle(indices, 'embedding indices')];
    const out = this.f32(rowsInTable * cols);
    this.orFree([out], () => this.native.scatterAdd(hd, hi, rowsInTable, cols, out.handle, this.queueIndexCheck(rowsInTable)));
    return out;
  }

  /** A queued check of embedding indices below `rows`, with the CPU backend's message. */
  private queueIndexCheck(rows: number): number {
    return this.queueCheck(({ value }) => new RangeError(`embedding: index ${value} is outside [0, ${rows})`));
  }

  /**
   * q, k, v float32 or bfloat16 (one type); o comes back in their type, lse in float32. bfloat16 inputs go
   * to the fused kernels as they are; float32 inputs as bf16 copies.
   */
  dilatedAttention(q: Storage, k: Storage, v: Storage, geometry: AttentionGeometry, config: AttentionConfig): { o: Storage; lse: Storage } {
    const { batch, seqLen, heads, headDim } = geometry;
    const bf16 = sameActivationType([q, k, v], 'attention') === 'bfloat16';
    const o = this.make(q.dtype, batch * seqLen * heads * headDim);
    let lse!: CudaStorage;
    this.orFree([o], () => { lse = this.f32(batch * seqLen * heads); });
    const args = [batch, seqLen, heads, headDim, flatPatterns(config), config.causal, config.scale, config.headOffsets === 'blocked'] as const;
    if (this.attentionKernels(headDim) === 'bf16') {
      this.orFree([o, lse], () => this.withBf16([[q, 'attention q'], [k, 'attention k'], [v, 'attention v']], ([qb, kb, vb]) => {
        this.native.flashAttentionForward(qb!, kb!, vb!, o.handle, lse.handle, ...args);
      }));
      return { o, lse };
    }
    if (bf16) {
      // the exact kernels on float32 copies, o rounded back to bfloat16
      this.orFree([o, lse], () => this.withF32([q, k, v], [o], ([qf, kf, vf], [of]) => {
        this.native.attentionForward(qf!, kf!, vf!, of!, lse.handle, ...args);
      }));
      return { o, lse };
    }
    this.orFree([o, lse], () => this.native.attentionForward(
      floatHandle(q, 'attention q'), floatHandle(k, 'attention k'), floatHandle(v, 'attention v'), o.handle, lse.handle, ...args,
    ));
    return { o, lse };
  }

  /** Gradients in the type of q, k, v; lse float32; o and dO of the inputs' type. */
  dilatedAttentionBackward(
    q: Storage, k: Storage, v: Storage, o: Storage, lse: Storage, dO: Storage, geometry: AttentionGeometry, config: AttentionConfig,
    options: AttentionBackwardOptions = {},
  ): { dq: Storage; dk: Storage; dv: Storage; columnSums?: readonly (Storage | null)[] } {
    const { rotation, columnSums = [], dsum: givenDsum } = options;
    const { batch, seqLen, heads, headDim } = geometry;
    const rows = batch * seqLen * heads;
    const n = rows * headDim;
    const bf16 = sameActivationType([q, k, v, o, dO], 'attention') === 'bfloat16';
    const tables = rotation && [
      [floatHandle(rotation.qCos, 'rotation cos'), floatHandle(rotation.qSin, 'rotation sin')],
      [floatHandle(rotation.kCos, 'rotation cos'), floatHandle(rotation.kSin, 'rotation sin')],
    ] as const;
    // gradient i (dq, dk, dv) from `from` into `to`: rotated back by its tables when it has them, else copied
    // (a cast where the types differ); with its column sums in the same pass where they are asked for
    const finish = (i: number, from: NativeHandle, to: NativeHandle): void => {
      const t = i < 2 ? tables?.[i] : undefined;
      const s = sums[i];
      if (s) this.native.storeGradient(from, t?.[0] ?? null, t?.[1] ?? null, batch, seqLen, heads, headDim, to, s.handle);
      else if (t) this.native.rotatePairs(from, t[0], t[1], batch, seqLen, heads, headDim, true, to);
      else this.native.cast(from, to);
    };
    const grads: CudaStorage[] = [];
    const sums: (CudaStorage | null)[] = [null, null, null];
    this.orFree(grads, () => {
      for (let i = 0; i < 3; i++) grads.push(this.make(q.dtype, n));
      for (let i = 0; i < 3; i++) if (columnSums[i]) grads.push(sums[i] = this.f32(heads * headDim));
    });
    const [dq, dk, dv] = grads as [CudaStorage, CudaStorage, CudaStorage];
    const result = { dq, dk, dv, ...(sums.some((x) => x) ? { columnSums: sums } : {}) };
    const args = [batch, seqLen, heads, headDim, flatPatterns(config), config.causal, config.scale, config.headOffsets === 'blocked'] as const;
    // the kernels' float32 gradients go to scratch where they are rounded to bf16 or rotated back afterwards
    // (`finish`, one pass each), else straight to the gradient
    const viaScratch = (run: (gq: NativeHandle, gk: NativeHandle, gv: NativeHandle) => void): void => {
      const scratch: (NativeHandle | null)[] = [null, null, null];
      try {
        const outs = [dq, dk, dv].map((g, i) => (bf16 || (i < 2 && tables) || sums[i]
          ? (scratch[i] = this.native.alloc(DTYPE_CODE.float32, n, false))
          : g.handle));
        run(outs[0]!, outs[1]!, outs[2]!);
        scratch.forEach((h, i) => { if (h) finish(i, h, [dq, dk, dv][i]!.handle); });
      } finally {
        // stream order: the kernels queued above have read them before any later allocation reuses the blocks
        for (const h of scratch) if (h) this.native.free(h);
      }
    };
    if (this.attentionKernels(headDim) === 'bf16') {
      // Dsum = rowsum(dO * O) (unless given), then the fused backward on bf16 q, k, v, dO; its gradients are float32
      this.orFree(grads, () => {
        if (givenDsum && givenDsum.size !== rows) throw new Error(`internal: dsum of ${givenDsum.size} rows for an attention of ${rows}`);
        const own = givenDsum ? null : this.f32(rows);
        const dsum = givenDsum ? floatHandle(givenDsum, 'attention dsum') : own!.handle;
        try {
          if (own) this.native.attentionDsum(activationHandle(o, 'attention o'), activationHandle(dO, 'attention dO'), dsum, rows, headDim);
          this.withBf16([[q, 'attention q'], [k, 'attention k'], [v, 'attention v'], [dO, 'attention dO']], ([qb, kb, vb, dOb]) => {
            viaScratch((gq, gk, gv) => this.native.flashAttentionBackward(
              qb!, kb!, vb!, dOb!, floatHandle(lse, 'attention lse'), dsum, gq, gk, gv, ...args,
            ));
          });
        } finally {
          if (own) this.free(own);
        }
      });
      return result;
    }
    if (bf16) {
      this.orFree(grads, () => this.withF32([q, k, v, o, dO], [], ([qf, kf, vf, of, dOf]) => viaScratch((gq, gk, gv) => {
        this.native.attentionBackward(qf!, kf!, vf!, of!, floatHandle(lse, 'attention lse'), dOf!, gq, gk, gv, ...args);
      })));
      return result;
    }
    this.orFree(grads, () => viaScratch((gq, gk, gv) => this.native.attentionBackward(
      floatHandle(q, 'attention q'), floatHandle(k, 'attention k'), floatHandle(v, 'attention v'), floatHandle(o, 'attention o'),
      floatHandle(lse, 'attention lse'), floatHandle(dO, 'attention dO'), gq, gk, gv, ...args,
    )));
    return result;
  }

  /** `count` float32 storages of `size`; if one cannot be allocated, the others are freed before the error. */
  private f32s(count: number, size: number): CudaStorage[] {
    const made: CudaStorage[] = [];
    this.orFree(made, () => {
      for (let i = 0; i < count; i++) made.push(this.f32(size));
    });
    return made;
  }

  /** `fn()`'s storages; if it throws, frees `outputs` (made before) before passing the error on. */
  private orFreeAll(outputs: readonly Storage[], fn: () => CudaStorage[]): CudaStorage[] {
    let made: CudaStorage[] = [];
    this.orFree(outputs, () => { made = fn(); });
    return made;
  }

  /** Runs `fn`; if it throws (out of memory, a bad argument), frees `outputs` before passing the error on. */
  private orFree(outputs: readonly Storage[], fn: () => void): void {
    try {
      fn();
    } catch (e) {
      for (const x of outputs) this.free(x);
      throw e;
    }
  }

  /**
   * Runs `fn` with bf16 versions of float32 or bfloat16 storages: a bfloat16 storage as it is, a float32
   * one as a copy, freed afterwards (stream order: the kernels `fn` queued have read them before any later
   * allocation can reuse the blocks).
   */
  private withBf16(inputs: readonly (readonly [Storage, string])[], fn: (handles: NativeHandle[]) => void): void {
    const handles: NativeHandle[] = [];
    const copies: NativeHandle[] = [];
    try {
      for (const [x, what] of inputs) {
        const src = activationHandle(x, what);
        if (x.dtype === 'bfloat16') {
          handles.push(src);
          continue;
        }
        const h = this.native.alloc(BF16_CODE, x.size, false);
        copies.push(h);
        handles.push(h);
        this.native.cast(src, h);
      }
      fn(handles);
    } finally {
      for (const h of copies) this.native.free(h);
    }
  }

  /**
   * Runs `fn` with float32 copies of bfloat16 `inputs` and float32 scratch for bfloat16 `outputs`, which
   * receive the scratch rounded to bfloat16 after `fn`; the copies are freed afterwards (stream order).
   */
  private withF32(
    inputs: readonly Storage[], outputs: readonly Storage[], fn: (inputs: NativeHandle[], outputs: NativeHandle[]) => void,
  ): void {
    const copies: NativeHandle[] = [];
    const scratch = (x: Storage, copy: boolean): NativeHandle => {
      const h = this.native.alloc(DTYPE_CODE.float32, x.size, false);
      copies.push(h);
      if (copy) this.native.cast(cudaHandle(x, 'attention'), h);
      return h;
    };
    try {
      const ins = inputs.map((x) => scratch(x, true));
      const outs = outputs.map((x) => scratch(x, false));
      fn(ins, outs);
      outputs.forEach((x, i) => this.native.cast(outs[i]!, cudaHandle(x, 'attention')));
    } finally {
      for (const h of copies) this.native.free(h);
    }
  }

  gatheredAttention(q: Storage, k: Storage, v: Storage, layout: GatheredAttentionLayout): { o: Storage; lse: Storage } {
    const D = layout.headDim;
    const plan = gatheredPlan(layout, q.size / D, k.size / D, v.size);
    const o = this.make('float32', q.size, true);
    const lse = this.f32(q.size / D);
    this.native.fill(lse.handle, -Infinity);
    if (plan.queryTiles.length === 0) return { o, lse };
    const [qo, ko, tiles] = [this.fromArray(layout.qOffsets), this.fromArray(layout.kOffsets), this.fromArray(plan.queryTiles)];
    try {
      this.native.gatheredAttentionForward(
        floatHandle(q, 'attention q'), floatHandle(k, 'attention k'), floatHandle(v, 'attention v'), o.handle, lse.handle,
        intHandle(qo, 'offsets'), intHandle(ko, 'offsets'), intHandle(tiles, 'tiles'), D, layout.causal, layout.scale,
      );
    } finally {
      // stream order: the kernel queued above has read them before any later allocation reuses the blocks
      for (const x of [qo, ko, tiles]) this.free(x);
    }
    return { o, lse };
  }

  gatheredAttentionBackward(
    q: Storage, k: Storage, v: Storage, lse: Storage, dsum: Storage, dO: Storage, layout: GatheredAttentionLayout,
  ): { dq: Storage; dk: Storage; dv: Storage } {
    const D = layout.headDim;
    const plan = gatheredPlan(layout, q.size / D, k.size / D, v.size);
    const rowsQ = q.size / D;
    if (lse.size !== rowsQ || dsum.size !== rowsQ || dO.size !== q.size) {
      throw new RangeError('gatheredAttentionBackward: lse, dsum and dO must match the query rows');
    }
    const dq = this.make('float32', q.size, true);
    const dk = this.make('float32', k.size, true);
    const dv = this.make('float32', v.size, true);
    if (plan.queryTiles.length === 0) return { dq, dk, dv };
    const ints = [layout.qOffsets, layout.kOffsets, plan.queryTiles, plan.keyTiles].map((a) => this.fromArray(a));
    const [qo, ko, qt, kt] = ints as [Storage, Storage, Storage, Storage];
    try {
      this.native.gatheredAttentionBackward(
        floatHandle(q, 'attention q'), floatHandle(k, 'attention k'), floatHandle(v, 'attention v'), floatHandle(lse, 'attention lse'),
        floatHandle(dsum, 'attention dsum'), floatHandle(dO, 'attention dO'), dq.handle, dk.handle, dv.handle,
        intHandle(qo, 'offsets'), intHandle(ko, 'offsets'), intHandle(qt, 'tiles'), D, layout.causal, layout.scale, intHandle(kt, 'tiles'),
      );
    } finally {
      for (const x of ints) this.free(x);
    }
    return { dq, dk, dv };
  }

  mergeAttention(accO: Storage, accLse: Storage, o: Storage, lse: Storage, rows: Storage, headDim: number): void {
    if (o.size !== rows.size * headDim || lse.size !== rows.size) {
      throw new RangeError(`mergeAttention: ${rows.size} rows but o has ${o.size} values and lse ${lse.size}`);
    }
    this.native.mergeAttention(
      floatHandle(accO, 'mergeAttention accO'), floatHandle(accLse, 'mergeAttention accLse'), floatHandle(o, 'mergeAttention o'),
      floatHandle(lse, 'mergeAttention lse'), intHandle(rows, 'mergeAttention rows'), headDim,
    );
  }

  adamw(param: Storage, grad: Storage, m: Storage, v: Storage, h: AdamWHyper): void {
    this.native.adamw(
      floatHandle(param, 'adamw'), floatHandle(grad, 'adamw'), floatHandle(m, 'adamw'), floatHandle(v, 'adamw'),
      h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.step, h.gradScale ?? 1,
    );
  }

  adamwMulti(tensors: readonly AdamWTensors[], h: Omit<AdamWHyper, 'weightDecay'>): void {
    if (tensors.length === 0) return;
    const handles = (which: 'param' | 'grad' | 'm' | 'v'): NativeHandle[] => tensors.map((t) => floatHandle(t[which], 'adamw'));
    // bfloat16 copies are written by the update; a copy of another type by a cast after it
    const copyOf: number[] = [];
    const castAfter: [NativeHandle, NativeHandle][] = [];
    tensors.forEach((t, i) => {
      if (!t.copy) return;
      if (t.copy.dtype === 'bfloat16') copyOf.push(i);
      else castAfter.push([floatHandle(t.param, 'adamw'), floatHandle(t.copy, 'adamw copy')]);
    });
    this.native.adamwMulti(
      handles('param'), handles('grad'), handles('m'), handles('v'), tensors.map((t) => t.weightDecay),
      h.lr, h.beta1, h.beta2, h.eps, h.step, h.gradScale ?? 1, copyOf, copyOf.map((i) => cudaHandle(tensors[i]!.copy!, 'adamw copy')),
      h.clip ? floatHandle(h.clip.squares, 'adamw clip squares') : null, h.clip?.maxNorm ?? 0,
    );
    for (const [param, copy] of castAfter) this.native.cast(param, copy);
  }

  synchronize(): void {
    // taking the checks' result waits for the stream too
    if (this.pendingChecks.length > 0) this.settleChecks();
    else this.native.synchronize();
  }

  // beyond the Backend interface: controls of this device

  /** Records a mark on the stream without waiting (for profiles); its index since the last `streamMarkTimes`. */
  streamMark(): number { return this.native.streamMark(); }

  /** Waits for the stream; the device's milliseconds from the first mark to each mark since the last call. */
  streamMarkTimes(): number[] { return this.native.streamMarkTimes(); }

  memoryStats(): MemoryStats { return this.native.memoryStats(); }

  /** Gives cached blocks back to the driver (after waiting for queued work). */
  emptyCache(): void { this.native.emptyCache(); }

  setMatmulPrecision(precision: MatmulPrecision): void {
    const code = MATMUL_PRECISION_CODE[precision];
    if (code === undefined) throw new Error(`matmul precision must be fp32, tf32 or bf16, got ${String(precision)}`);
    this.native.setMatmulPrecision(code);
  }

  matmulPrecision(): MatmulPrecision {
    const code = this.native.matmulPrecision();
    return (Object.keys(MATMUL_PRECISION_CODE) as MatmulPrecision[]).find((k) => MATMUL_PRECISION_CODE[k] === code)!;
  }

  /**
   * How dilated attention runs: 'bf16' (the default) uses the fused tensor-core kernels, which take bf16
   * copies of q, k, v (and dO) and keep o, lse and the gradients in float32, for head dims 32, 64 and 128,
   * and the float32 kernels for other head dims; 'fp32' always uses the exact float32 kernels.
   * LONGNET_CUDA_ATTENTION=fp32|bf16 sets it when the backend is created.
   */
  setAttentionPrecision(precision: AttentionPrecision): void {
    if (!ATTENTION_PRECISIONS.includes(precision)) throw new Error(`attention precision must be fp32 or bf16, got ${String(precision)}`);
    this.attention = precision;
  }

  attentionPrecision(): AttentionPrecision { return this.attention; }

  /** The kernels dilated attention uses for this head dim under the current setting. */
  attentionKernels(headDim: number): AttentionPrecision {
    return this.attention === 'bf16' && FLASH_HEAD_DIMS.includes(headDim) ? 'bf16' : 'fp32';
  }

  /** Starts a new peak measurement: `memoryStats().peakInUse` becomes the bytes in use now. */
  resetPeakMemory(): void { this.native.resetPeakMemory(); }

  /** The addon, for modules of this directory (NCCL). */
  get addon(): NativeAddon { return this.native; }

  handleOf(x: Storage): NativeHandle { return cudaHandle(x, 'storage'); }
}

/** Rows a block of the packed attention kernels takes (native/src/kernels/attention_gathered.cu). */
const GATHERED_TILE = 16;

/**
 * Checks the offsets against the row counts (a mistake would make the kernels read out of bounds) and lists
 * the kernels' tiles as (group, first row) pairs: query tiles over the queries that see a key, key tiles
 * over the keys of groups with such queries.
 */
function gatheredPlan(layout: GatheredAttentionLayout, rowsQ: number, rowsK: number, sizeV: number): { queryTiles: Int32Array; keyTiles: Int32Array } {
  checkGatheredLayout(layout, rowsQ, rowsK);
  const { qOffsets, kOffsets, headDim, causal } = layout;
  if (sizeV !== rowsK * headDim) throw new RangeError(`gatheredAttention: v has ${sizeV} values but k has ${rowsK * headDim}`);
  const groups = qOffsets.length - 1;
  const qt: number[] = [];
  const kt: number[] = [];
  for (let g = 0; g < groups; g++) {
    const mq = qOffsets[g + 1]! - qOffsets[g]!;
    const mk = kOffsets[g + 1]! - kOffsets[g]!;
    const m = mk === 0 ? 0 : causal ? Math.min(mq, mk) : mq;
    if (m === 0) continue;
    for (let i = 0; i < m; i += GATHERED_TILE) qt.push(g, i);
    for (let j = 0; j < mk; j += GATHERED_TILE) kt.push(g, j);
  }
  return { queryTiles: Int32Array.from(qt), keyTiles: Int32Array.from(kt) };
}

/** The one float type of the storages of an attention call (float32 or bfloat16). */
function sameActivationType(xs: readonly Storage[], what: string): 'float32' | 'bfloat16' {
  const t = xs[0]!.dtype;
  if (t !== 'float32' && t !== 'bfloat16') throw new Error(`cuda backend: ${what} needs float32 or bfloat16 tensors, got ${t}`);
  for (const x of xs) if (x.dtype !== t) throw new Error(`cuda backend: ${what} tensors of different types (${t} and ${x.dtype})`);
  return t;
}

function flatPatterns(config: AttentionConfig): number[] {
  return config.patterns.flatMap((p) => [p.segmentLength, p.dilationRate]);
}
