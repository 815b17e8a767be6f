import type {
  AdamWHyper, AdamWTensors, AttentionBackwardOptions, AttentionConfig, AttentionGeometry, Backend, BinaryOp, GatheredAttentionLayout, LayerNormBackwardOptions,
  LayerNormGrads, LayerNormOptions, LayerNormResult, ReduceOp, Storage, UnaryOp,
} from '../backend.js';
import { clipFactor } from '../backend.js';
import { broadcastStrides, sizeOf, type Shape } from '../../tensor/shape.js';
import { dtypeOfArray, type DType, type FloatArray, type TypedArray } from '../../tensor/dtype.js';
import { InputError } from '../../errors.js';
import { CpuStorage, allocArray, cpuData, floatData, intData } from './storage.js';
import { binaryKernel, binaryScalarKernel, unaryKernel } from './elementwise-parallel.js';
import { reduceKernel, sumsOfSquaresKernel } from './reduce.js';
import { runMatmul } from './matmul-parallel.js';
import { addSliceIntoKernel, sliceKernel } from './layout.js';
import { permuteKernel } from './layout-parallel.js';
import { adamwKernel, gatherKernel, scatterAddKernel } from './nn.js';
import { rotatePairsKernel } from './rotary.js';
import {
  crossEntropyBackwardKernel, crossEntropyKernel, layerNormBackwardKernel, layerNormKernel, softmaxBackwardKernel, softmaxKernel,
} from './nn-parallel.js';
import { dilatedAttentionBackward, dilatedAttentionForward } from './attention-kernel.js';
import { gatheredAttentionBackward, gatheredAttentionForward, mergeAttentionRows } from './attention-gathered.js';

const wrap = (data: TypedArray): CpuStorage => new CpuStorage(data);

/** Adds `bias` [n] to every row of `c` [*, n] in place. */
function addToRows(c: FloatArray, bias: FloatArray, n: number): void {
  for (let i = 0; i < c.length; i += n) {
    for (let j = 0; j < n; j++) c[i + j] = c[i + j]! + bias[j]!;
  }
}

/** The reference backend: plain TypeScript over typed arrays, shared with worker threads where it pays. */
export class CpuBackend implements Backend {
  readonly device = 'cpu' as const;

  alloc(dtype: DType, size: number): Storage { return wrap(allocArray(dtype, size)); }

  fromArray(data: TypedArray): Storage {
    const out = allocArray(dtypeOfArray(data), data.length);
    out.set(data);
    return wrap(out);
  }

  read(x: Storage): TypedArray { return cpuData(x).slice(); }
  free(_x: Storage): void { /* the garbage collector reclaims host arrays */ }
  fill(x: Storage, value: number): void { cpuData(x).fill(value); }
  copy(x: Storage): Storage { return this.fromArray(cpuData(x)); }

  cast(x: Storage, dtype: DType): Storage {
    const out = allocArray(dtype, x.size);
    const src = cpuData(x);
    if (dtype === 'int32') for (let i = 0; i < src.length; i++) out[i] = Math.trunc(src[i]!);
    else out.set(src);
    return wrap(out);
  }

  assign(dst: Storage, src: Storage): void {
    if (dst.size !== src.size) throw new Error(`assign: sizes differ (${dst.size} vs ${src.size})`);
    cpuData(dst).set(cpuData(src));
  }

  allFinite(x: Storage): boolean {
    const data = cpuData(x);
    for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return false;
    return true;
  }

  checkFinite(x: Storage, what: string): void {
    if (!this.allFinite(x)) throw new InputError(`${what} contains NaN or infinite values`);
  }

  unary(op: UnaryOp, x: Storage): Storage { return wrap(unaryKernel(op, floatData(x, op))); }

  binary(op: BinaryOp, a: Storage, aShape: Shape, b: Storage, bShape: Shape, outShape: Shape): Storage {
    return wrap(binaryKernel(op, cpuData(a), aShape, cpuData(b), bShape, outShape));
  }

  binaryScalar(op: BinaryOp, a: Storage, scalar: number): Storage { return wrap(binaryScalarKernel(op, cpuData(a), scalar)); }

  reduce(op: ReduceOp, x: Storage, shape: Shape, axes: readonly number[]): Storage {
    return wrap(reduceKernel(op, cpuData(x), shape, axes));
  }

  sumsOfSquares(xs: readonly Storage[]): Storage {
    if (xs.length === 0) throw new Error('sumsOfSquares: no storages');
    const arrays = xs.map((x) => floatData(x, 'sumsOfSquares'));
    if (arrays.some((a) => a.constructor !== arrays[0]!.constructor)) throw new Error('sumsOfSquares: storages of different dtypes');
    return wrap(sumsOfSquaresKernel(arrays));
  }

  matmul(
    a: Storage, aShape: Shape, b: Storage, bShape: Shape,
    transA: boolean, transB: boolean, batchShape: Shape, m: number, n: number, k: number, bias?: Storage | null,
    addend?: Storage | null,
  ): Storage {
    const batch = sizeOf(batchShape);
    const offsets = (shape: Shape): Int32Array => {
      const strides = broadcastStrides(shape.slice(0, -2), batchShape);
      const matrix = shape[shape.length - 2]! * shape[shape.length - 1]!;
      // on a shared buffer, like the operands, so that worker threads can read it
      const out = new Int32Array(new SharedArrayBuffer(4 * batch));
      // strides count whole matrices of the operand's own batch layout
      const walk = (axis: number, index: number, offset: number): number => {
        if (axis === batchShape.length) { out[index] = offset * matrix; return index + 1; }
        for (let i = 0; i < batchShape[axis]!; i++) index = walk(axis + 1, index, offset + i * strides[axis]!);
        return index;
      };
      walk(0, 0, 0);
      return out;
    };
    const aData = floatData(a, 'matmul');
    const c = allocArray(aData instanceof Float64Array ? 'float64' : 'float32', batch * m * n);
    runMatmul({
      a: aData, b: floatData(b, 'matmul'), c: c as Float32Array | Float64Array,
      aOffsets: offsets(aShape), bOffsets: offsets(bShape), m, n, k, transA, transB,
    });
    if (bias) addToRows(c as Float32Array | Float64Array, floatData(bias, 'matmul bias'), n);
    if (addend) {
      const add = floatData(addend, 'matmul addend');
      if (add.length !== c.length) throw new Error(`matmul: addend of ${add.length} elements for a result of ${c.length}`);
      for (let i = 0; i < c.length; i++) c[i]! += add[i]!;
    }
    return wrap(c);
  }

  linearGrads(
    dy: Storage, x: Storage, rows: number, inFeatures: number, outFeatures: number, bias: boolean, dtype: DType,
  ): { weight: Storage; bias: Storage | null } {
    const inDtype = (s: Storage): Storage => (s.dtype === dtype ? s : this.cast(s, dtype));
    const weight = inDtype(this.matmul(dy, [rows, outFeatures], x, [rows, inFeatures], true, false, [], outFeatures, inFeatures, rows));
    return { weight, bias: bias ? inDtype(this.reduce('sum', dy, [rows, outFeatures], [0])) : null };
  }

  linearGelu(x: Storage, weight: Storage, bias: Storage, rows: number, inFeatures: number, outFeatures: number): { y: Storage; pre: Storage } {
    const pre = this.matmul(x, [rows, inFeatures], weight, [outFeatures, inFeatures], false, true, [], rows, outFeatures, inFeatures, bias);
    return { y: this.unary('gelu', pre), pre };
  }

  permute(x: Storage, shape: Shape, perm: readonly number[]): Storage { return wrap(permuteKernel(cpuData(x), shape, perm)); }

  slice(x: Storage, shape: Shape, begin: readonly number[], size: readonly number[]): Storage {
    return wrap(sliceKernel(cpuData(x), shape, begin, size));
  }

  addSliceInto(dst: Storage, dstShape: Shape, src: Storage, srcShape: Shape, begin: readonly number[]): void {
    addSliceIntoKernel(cpuData(dst), dstShape, cpuData(src), srcShape, begin);
  }

  softmax(x: Storage, rows: number, cols: number, log: boolean): Storage {
    return wrap(softmaxKernel(floatData(x, 'softmax'), rows, cols, log));
  }

  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number, log: boolean): Storage {
    return wrap(softmaxBackwardKernel(floatData(y, 'softmax'), floatData(dy, 'softmax'), rows, cols, log));
  }

  layerNorm(
    x: Storage, gamma: Storage | null, beta: Storage | null, rows: number, cols: number, eps: number, options: LayerNormOptions = {},
  ): LayerNormResult {
    const input = floatData(x, 'layerNorm');
    const r = layerNormKernel(
      options.geluInput ? unaryKernel('gelu', input) as FloatArray : input,
      gamma && floatData(gamma, 'layerNorm'), beta && floatData(beta, 'layerNorm'), rows, cols, eps,
    );
    return { y: wrap(r.y), mean: wrap(r.mean), rstd: wrap(r.rstd) };
  }

  layerNormBackward(
    dy: Storage, x: Storage, gamma: Storage | null, mean: Storage, rstd: Storage, rows: number, cols: number, hasBeta: boolean,
    options: LayerNormBackwardOptions = {},
  ): LayerNormGrads {
    const input = floatData(x, 'layerNorm');
    const r = layerNormBackwardKernel(
      floatData(dy, 'layerNorm'), options.geluInput ? unaryKernel('gelu', input) as FloatArray : input,
      gamma && floatData(gamma, 'layerNorm'), floatData(mean, 'layerNorm'), floatData(rstd, 'layerNorm'), rows, cols, hasBeta,
    );
    // through the GELU (the gradient of the pre-activation), then the other gradient of x
    let dx: FloatArray = r.dx;
    if (options.geluInput) dx = binaryKernel('geluBackward', input, [input.length], dx, [dx.length], [dx.length]) as FloatArray;
    if (options.addend) {
      const addend = floatData(options.addend, 'layerNorm addend');
      if (addend.length !== dx.length) throw new Error(`layerNormBackward: addend of ${addend.length} elements for dx of ${dx.length}`);
      dx = binaryKernel('add', dx, [dx.length], addend, [addend.length], [dx.length]) as FloatArray;
    }
    return { dx: wrap(dx), dGamma: r.dGamma && wrap(r.dGamma), dBeta: r.dBeta && wrap(r.dBeta) };
  }

  crossEntropy(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): { loss: Storage; lse: Storage } {
    const r = crossEntropyKernel(
      floatData(logits, 'crossEntropy'), intData(targets, 'crossEntropy targets'), rows, cols, ignoreIndex, classes,
    );
    return { loss: wrap(r.loss), lse: wrap(r.lse) };
  }

  crossEntropyBackward(
    logits: Storage, targets: Storage, lse: Storage, dLoss: Storage, rows: number, cols: number, ignoreIndex: number, classes: number,
  ): Storage {
    return wrap(crossEntropyBackwardKernel(
      floatData(logits, 'crossEntropy'), intData(targets, 'crossEntropy targets'), floatData(lse, 'crossEntropy'),
      floatData(dLoss, 'crossEntropy'), rows, cols, ignoreIndex, classes,
    ));
  }

  crossEntropyWithGrad(
    logits: Storage, targets: Storage, rows: number, cols: number, ignoreIndex: number, classes: number, weight: Storage | null,
  ): { loss: Storage; lse: Storage; grad: Storage } {
    const r = this.crossEntropy(logits, targets, rows, cols, ignoreIndex, classes);
    const w = weight ? floatData(weight, 'crossEntropy weight')[0]! : 1;
    const dLoss = this.fromArray((logits.dtype === 'float64' ? new Float64Array(rows) : new Float32Array(rows)).fill(w));
    return { ...r, grad: this.crossEntropyBackward(logits, targets, r.lse, dLoss, rows, cols, ignoreIndex, classes) };
  }

  rotatePairs(
    x: Storage, cos: Storage, sin: Storage, outer: number, positions: number, inner: number, dim: number, transpose: boolean, checkAs?: string,
  ): Storage {
    const y = wrap(rotatePairsKernel(
      floatData(x, 'rotatePairs'), floatData(cos, 'rotatePairs cos'), floatData(sin, 'rotatePairs sin'), outer, positions, inner, dim, transpose,
    ));
    if (checkAs !== undefined) this.checkFinite(y, checkAs);
    return y;
  }

  gather(table: Storage, rowsInTable: number, cols: number, indices: Storage, validRows = rowsInTable): Storage {
    return wrap(gatherKernel(floatData(table, 'embedding'), rowsInTable, cols, intData(indices, 'embedding indices'), validRows));
  }

  scatterAdd(dOut: Storage, indices: Storage, rowsInTable: number, cols: number): Storage {
    return wrap(scatterAddKernel(floatData(dOut, 'embedding'), intData(indices, 'embedding indices'), rowsInTable, cols));
  }

  dilatedAttention(q: Storage, k: Storage, v: Storage, geometry: AttentionGeometry, config: AttentionConfig): { o: Storage; lse: Storage } {
    const r = dilatedAttentionForward(
      floatData(q, 'attention q'), floatData(k, 'attention k'), floatData(v, 'attention v'), geometry, config,
    );
    return { o: wrap(r.o), lse: wrap(r.lse) };
  }

  dilatedAttentionBackward(
    q: Storage, k: Storage, v: Storage, o: Storage, lse: Storage, dO: Storage, geometry: AttentionGeometry, config: AttentionConfig,
    options: AttentionBackwardOptions = {},
  ): { dq: Storage; dk: Storage; dv: Storage } {
    // column sums and a given dsum are left out: the kernel makes its own rowsum(dO * O)
    const rotation = options.rotation;
    const r = dilatedAttentionBackward(
      floatData(q, 'attention q'), floatData(k, 'attention k'), floatData(v, 'attention v'),
      floatData(o, 'attention o'), floatData(lse, 'attention lse'), floatData(dO, 'attention dO'), geometry, config,
    );
    const { batch, seqLen, heads, headDim } = geometry;
    const back = (g: FloatArray, cos: Storage, sin: Storage): Storage => wrap(rotatePairsKernel(
      g, floatData(cos, 'rotation cos'), floatData(sin, 'rotation sin'), batch, seqLen, heads, headDim, true,
    ));
    if (!rotation) return { dq: wrap(r.dq), dk: wrap(r.dk), dv: wrap(r.dv) };
    return { dq: back(r.dq, rotation.qCos, rotation.qSin), dk: back(r.dk, rotation.kCos, rotation.kSin), dv: wrap(r.dv) };
  }

  gatheredAttention(q: Storage, k: Storage, v: Storage, layout: GatheredAttentionLayout): { o: Storage; lse: Storage } {
    const r = gatheredAttentionForward(floatData(q, 'attention q'), floatData(k, 'attention k'), floatData(v, 'attention v'), layout);
    return { o: wrap(r.o), lse: wrap(r.lse) };
  }

  gatheredAttentionBackward(
    q: Storage, k: Storage, v: Storage, lse: Storage, dsum: Storage, dO: Storage, layout: GatheredAttentionLayout,
  ): { dq: Storage; dk: Storage; dv: Storage } {
    const r = gatheredAttentionBackward(
      floatData(q, 'attention q'), floatData(k, 'attention k'), floatData(v, 'attention v'),
      floatData(lse, 'attention lse'), floatData(dsum, 'attention dsum'), floatData(dO, 'attention dO'), layout,
    );
    return { dq: wrap(r.dq), dk: wrap(r.dk), dv: wrap(r.dv) };
  }

  mergeAttention(accO: Storage, accLse: Storage, o: Storage, lse: Storage, rows: Storage, headDim: number): void {
    mergeAttentionRows(
      floatData(accO, 'attention o'), floatData(accLse, 'attention lse'), floatData(o, 'attention o'),
      floatData(lse, 'attention lse'), intData(rows, 'attention rows'), headDim,
    );
  }

  adamw(param: Storage, grad: Storage, m: Storage, v: Storage, hyper: AdamWHyper): void {
    adamwKernel(floatData(param, 'adamw'), floatData(grad, 'adamw'), floatData(m, 'adamw'), floatData(v, 'adamw'), hyper);
  }

  adamwMulti(tensors: readonly AdamWTensors[], { clip, ...hyper }: Omit<AdamWHyper, 'weightDecay'>): void {
    let gradScale = hyper.gradScale ?? 1;
    if (clip) {
      const norm = Math.sqrt(floatData(clip.squares, 'adamw clip')[0]!);
      if (!Number.isFinite(norm)) return;
      gradScale *= clipFactor(norm, clip.maxNorm);
    }
    for (const { param, grad, m, v, weightDecay, copy } of tensors) {
      adamwKernel(floatData(param, 'adamw'), floatData(grad, 'adamw'), floatData(m, 'adamw'), floatData(v, 'adamw'), { ...hyper, gradScale, weightDecay });
      if (copy) this.assign(copy, param);
    }
  }

  synchronize(): void {}
}
