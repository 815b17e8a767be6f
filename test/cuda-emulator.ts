// A stand-in for the native addon, computed by the CPU backend, so that the TypeScript side of the CUDA
// backend (src/backend/cuda/cuda-backend.ts) and everything above it (model, trainer, CLI) can be run
// with `device: 'cuda'` on a machine without a GPU. It keeps the addon's rules that matter to callers:
// outputs passed in, explicit frees. bfloat16 buffers (bf16 activations, and the inputs of the fused
// attention kernels) hold float32 values rounded to bfloat16 after every write. It also counts what
// costs on a real GPU: live buffers (a leak shows as growth), and host synchronizations (reads,
// allFinite, the results of queued checks). Queued checks (finiteness, indices, targets) fail as the
// device's do: the first failed id is kept, with the first bad position and value of an index check.
import type { Storage } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
// the real module first: it registers its own loader on import, which ours then replaces
import '../src/backend/cuda/index.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import {
  ABI_VERSION, MAX_QUEUED_CHECKS, type MemoryStats, type NativeAddon, type NativeHandle, type QueuedCheckFailure,
} from '../src/backend/cuda/native.js';
import { registerBackendLoader } from '../src/backend/registry.js';
import { decodeBf16, encodeBf16 } from '../src/io/halfFloat.js';
import { bytesPerElement, type DType, type TypedArray } from '../src/tensor/dtype.js';

const DTYPES: readonly DType[] = ['float32', 'float64', 'int32'];
const BF16 = 3;
const FLASH_HEAD_DIMS = [32, 64, 128];

interface Buffer { storage: Storage; freed: boolean; bytes: number; bf16: boolean }

/** bfloat16 bit patterns as float32 values. */
export function fromBf16Bits(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  decodeBf16(bits, out);
  return out;
}

/** Rounds float32 values to the nearest bfloat16 (ties to even), as __float2bfloat16_rn does. */
export function roundToBf16(x: Float32Array): Float32Array {
  return fromBf16Bits(encodeBf16(x));
}

export interface EmulatorCounters {
  /** Host waits: downloads, allFinite, synchronize, and the taking of queued checks. */
  syncs: number;
  live: number;
  liveBytes: number;
  peakBytes: number;
}

export function createEmulatedAddon(): { addon: NativeAddon; counters: EmulatorCounters } {
  const cpu = new CpuBackend();
  const counters: EmulatorCounters = { syncs: 0, live: 0, liveBytes: 0, peakBytes: 0 };
  const buf = (h: NativeHandle): Buffer => {
    const b = h as unknown as Buffer;
    if (b.freed) throw new Error('emulated addon: use of a freed buffer');
    return b;
  };
  const s = (h: NativeHandle): Storage => buf(h).storage;
  const put = (out: NativeHandle, value: Storage): void => {
    const b = buf(out);
    cpu.assign(b.storage, value);
    if (b.bf16) cpu.assign(b.storage, cpu.fromArray(roundToBf16(cpu.read(b.storage) as Float32Array)));
  };
  const f32 = (h: NativeHandle): Float32Array => cpu.read(s(h)) as Float32Array;
  /** A download into `out`: bit patterns (the high halves of the float32 values) for a bf16 buffer's Uint16Array. */
  const copyOut = (values: TypedArray, out: TypedArray | Uint16Array): void => {
    if (out instanceof Uint16Array) out.set(new Uint32Array(Float32Array.from(values).buffer).map((b) => b >>> 16));
    else out.set(values as never);
  };
  /** Column sums of the stored values of h viewed as [rows, cols], into the float32 `sums`. */
  const columnSums = (h: NativeHandle, rows: number, cols: number, sums: NativeHandle): void =>
    put(sums, cpu.reduce('sum', s(h), [rows, cols], [0]));
  /** The fused kernels' argument rules: bf16 inputs, float32 outputs, head dims 32, 64, 128. */
  const flashArgs = (bf16: NativeHandle[], fp32: NativeHandle[], headDim: number): void => {
    if (!FLASH_HEAD_DIMS.includes(headDim)) throw new RangeError(`emulated addon: flash attention headDim ${headDim}`);
    for (const h of bf16) if (!buf(h).bf16) throw new RangeError('emulated addon: flash attention input is not bfloat16');
    for (const h of fp32) if (buf(h).bf16 || s(h).dtype !== 'float32') throw new RangeError('emulated addon: flash attention output is not float32');
  };
  /** The fused forward's output: float32 or bfloat16. */
  const flashOutput = (o: NativeHandle): void => {
    if (s(o).dtype !== 'float32') throw new RangeError('emulated addon: flash attention output is not float32 or bfloat16');
  };
  let precision = 1;
  let failedCheck: QueuedCheckFailure | null = null;
  /** Fails queued check `id` (the smallest failed id is the one reported, as atomicMin on the device). */
  const fail = (id: number, position = -1, value = 0): void => {
    if (!(Number.isInteger(id) && id >= 0 && id < MAX_QUEUED_CHECKS)) throw new RangeError(`emulated addon: check id ${id}`);
    if (failedCheck === null || id < failedCheck.id) failedCheck = { id, position, value };
  };
  const inRange = (index: number, bound: number): boolean => index >= 0 && index < bound;
  /** The first position whose index is outside [0, bound) other than `ignore`, or -1. */
  const firstBad = (indices: Int32Array, bound: number, ignore?: number): number =>
    indices.findIndex((t) => t !== ignore && !inRange(t, bound));
  const ints = (h: NativeHandle): Int32Array => cpu.read(s(h)) as Int32Array;
  const marks: number[] = [];
  let queuedRead: { values: { values: TypedArray; bf16: boolean }[]; failed: QueuedCheckFailure | null } | null = null;
  const addon: NativeAddon = {
    abiVersion: ABI_VERSION,
    probe: () => ({ ok: true, reason: '', devices: 1 }),
    init: (index) => ({ index, name: 'emulated GPU (CPU backend)', major: 9, minor: 0, multiprocessors: 1, totalMemory: 2 ** 34 }),
    alloc(dtype, size, _zero) {
      const d = dtype === BF16 ? 'float32' : DTYPES[dtype];
      if (d === undefined) throw new Error(`emulated addon: dtype code ${dtype}`);
      const bf16 = dtype === BF16;
      const b: Buffer = { storage: cpu.alloc(d, size), freed: false, bytes: size * (bf16 ? 2 : bytesPerElement(d)), bf16 };
      counters.live++;
      counters.liveBytes += b.bytes;
      counters.peakBytes = Math.max(counters.peakBytes, counters.liveBytes);
      return b as unknown as NativeHandle;
    },
    free(h) {
      const b = buf(h);
      b.freed = true;
      counters.live--;
      counters.liveBytes -= b.bytes;
    },
    upload(h, data) {
      if (buf(h).bf16 !== data instanceof Uint16Array) throw new Error('emulated addon: bf16 buffers take Uint16Array bit patterns');
      put(h, cpu.fromArray(data instanceof Uint16Array ? fromBf16Bits(data) : data));
    },
    download(h, out: TypedArray | Uint16Array) {
      counters.syncs++;
      if (buf(h).bf16 !== out instanceof Uint16Array) throw new Error('emulated addon: bf16 buffers give Uint16Array bit patterns');
      copyOut(cpu.read(s(h)), out);
    },
    fill: (h, value) => cpu.fill(s(h), value),
    copyInto: (dst, src) => put(dst, s(src)),
    cast: (src, dst) => put(dst, cpu.cast(s(src), s(dst).dtype)),
    allFinite(h) {
      counters.syncs++;
      return cpu.allFinite(s(h));
    },
    queueFiniteCheck(h, id) {
      if (!cpu.allFinite(s(h))) fail(id);
    },
    takeQueuedCheck() {
      counters.syncs++;
      const failed = failedCheck;
      failedCheck = null;
      return failed;
    },
    // as the addon: the values and the checks' result as they are when readLater is called
    readLater(hs) {
      if (queuedRead) throw new Error('a queued read is already waiting to be taken');
      queuedRead = { values: hs.map((h) => ({ values: cpu.read(s(h)), bf16: buf(h).bf16 })), failed: failedCheck };
      failedCheck = null;
    },
    readWait(outs) {
      if (!queuedRead) throw new Error('no queued read to take');
      counters.syncs++;
      const read = queuedRead;
      queuedRead = null;
      if (outs.length !== read.values.length) throw new Error('the outputs of a queued read differ from its parts');
      outs.forEach((out, i) => {
        const { values, bf16 } = read.values[i]!;
        if (out.length !== values.length || bf16 !== out instanceof Uint16Array) throw new Error('the outputs of a queued read differ from its parts');
        copyOut(values, out);
      });
      return read.failed;
    },
    synchronize() { counters.syncs++; },
    // the host's clock stands in for the device's
    streamMark: () => marks.push(performance.now()) - 1,
    streamMarkTimes() {
      counters.syncs++;
      const times = marks.map((t) => t - marks[0]!);
      marks.length = 0;
      return times;
    },
    memoryStats(): MemoryStats {
      return {
        inUse: counters.liveBytes, cached: 0, peakInUse: counters.peakBytes, deviceAllocations: 0, cacheHits: 0,
        deviceFree: 2 ** 34 - counters.liveBytes, deviceTotal: 2 ** 34,
      };
    },
    emptyCache() {},
    setMatmulPrecision(code) { precision = code; },
    matmulPrecision: () => precision,
    cublasLtVersion: () => 0,
    unary: (op, x, out) => put(out, cpu.unary(op as never, s(x))),
    binary: (op, a, aShape, b, bShape, out, outShape) => put(out, cpu.binary(op as never, s(a), aShape, s(b), bShape, outShape)),
    binaryScalar: (op, a, scalar, out) => put(out, cpu.binaryScalar(op as never, s(a), scalar)),
    reduce: (op, x, shape, axes, out) => put(out, cpu.reduce(op as never, s(x), shape, axes)),
    matmul: (a, aShape, b, bShape, transA, transB, batchShape, m, n, k, out, bias, addend) =>
      put(out, cpu.matmul(s(a), aShape, s(b), bShape, transA, transB, batchShape, m, n, k, bias && s(bias), addend && s(addend))),
    linearGrads(dy, x, rows, inFeatures, outFeatures, dWeight, dBias) {
      const r = cpu.linearGrads(s(dy), s(x), rows, inFeatures, outFeatures, dBias !== null, s(dWeight).dtype);
      put(dWeight, r.weight);
      if (dBias) put(dBias, r.bias!);
    },
    linearGelu(x, weight, bias, rows, inFeatures, outFeatures, y, pre) {
      const r = cpu.linearGelu(s(x), s(weight), s(bias), rows, inFeatures, outFeatures);
      put(y, r.y);
      put(pre, r.pre);
    },
    permute: (x, shape, perm, out) => put(out, cpu.permute(s(x), shape, perm)),
    slice: (x, shape, begin, size, out) => put(out, cpu.slice(s(x), shape, begin, size)),
    addSliceInto: (dst, dstShape, src, srcShape, begin) => cpu.addSliceInto(s(dst), dstShape, s(src), srcShape, begin),
    softmax: (x, rows, cols, log, out) => put(out, cpu.softmax(s(x), rows, cols, log)),
    softmaxBackward: (y, dy, rows, cols, log, out) => put(out, cpu.softmaxBackward(s(y), s(dy), rows, cols, log)),
    layerNorm(x, gamma, beta, rows, cols, eps, y, mean, rstd, geluInput) {
      const r = cpu.layerNorm(s(x), gamma && s(gamma), beta && s(beta), rows, cols, eps, { geluInput });
      put(y, r.y);
      put(mean, r.mean);
      put(rstd, r.rstd);
    },
    layerNormBackward(dy, x, gamma, mean, rstd, rows, cols, dx, dGamma, dBeta, addend, geluInput, dxSums, rowDots, segment) {
      const r = cpu.layerNormBackward(
        s(dy), s(x), gamma && s(gamma), s(mean), s(rstd), rows, cols, dBeta !== null, { addend: addend && s(addend), geluInput },
      );
      put(dx, r.dx);
      if (dGamma) put(dGamma, r.dGamma!);
      if (dBeta) put(dBeta, r.dBeta!);
      if (dxSums) columnSums(dx, rows, cols, dxSums);
      if (rowDots) {
        const runs = (rows * cols) / segment!;
        put(rowDots, cpu.reduce('sum', cpu.binary('mul', s(dx), [runs, segment!], s(x), [runs, segment!], [runs, segment!]), [runs, segment!], [1]));
      }
    },
    crossEntropy(logits, targets, rows, cols, ignoreIndex, classes, loss, lse, checkId) {
      // as the kernel: a bad target fails the check and gives a NaN loss; the other rows are computed
      const t = ints(targets);
      const bad = firstBad(t, classes, ignoreIndex);
      if (bad >= 0) fail(checkId, bad, t[bad]);
      const fine = t.map((v) => (inRange(v, classes) ? v : ignoreIndex));
      const r = cpu.crossEntropy(s(logits), cpu.fromArray(fine), rows, cols, ignoreIndex, classes);
      const l = cpu.read(r.loss) as Float32Array;
      t.forEach((v, row) => { if (fine[row] !== v) l[row] = NaN; });
      put(loss, cpu.fromArray(l));
      put(lse, r.lse);
    },
    crossEntropyWithGrad(logits, targets, rows, cols, ignoreIndex, classes, weight, loss, lse, dLogits, checkId) {
      this.crossEntropy(logits, targets, rows, cols, ignoreIndex, classes, loss, lse, checkId);
      const w = weight ? f32(weight)[0]! : 1;
      put(dLogits, cpu.crossEntropyBackward(s(logits), s(targets), s(lse), cpu.fromArray(new Float32Array(rows).fill(w)), rows, cols, ignoreIndex, classes));
    },
    crossEntropyBackward: (logits, targets, lse, dLoss, rows, cols, ignoreIndex, classes, out) =>
      put(out, cpu.crossEntropyBackward(s(logits), s(targets), s(lse), s(dLoss), rows, cols, ignoreIndex, classes)),
    storeGradient(x, cos, sin, outer, positions, inner, dim, y, sums) {
      if ((cos === null) !== (sin === null)) throw new TypeError('storeGradient: give both rotation tables or neither');
      if (s(x).dtype !== 'float32') throw new RangeError('emulated addon: storeGradient x is not float32');
      put(y, cos && sin ? cpu.rotatePairs(s(x), s(cos), s(sin), outer, positions, inner, dim, true) : s(x));
      columnSums(y, outer * positions, inner * dim, sums);
    },
    rotatePairs(x, cos, sin, outer, positions, inner, dim, transpose, y, checkId) {
      put(y, cpu.rotatePairs(s(x), s(cos), s(sin), outer, positions, inner, dim, transpose));
      if (checkId !== undefined && checkId !== null && !cpu.allFinite(s(y))) fail(checkId);
    },
    gather(table, rowsInTable, cols, indices, validRows, out, checkId) {
      if (!(validRows >= 0 && validRows <= rowsInTable)) throw new RangeError(`embedding: validRows = ${validRows} is not in [0, ${rowsInTable}]`);
      // as the kernel: a bad index fails the check and gives a row of NaN
      const idx = ints(indices), from = f32(table);
      const bad = firstBad(idx, validRows);
      if (bad >= 0) fail(checkId, bad, idx[bad]);
      const rows = new Float32Array(idx.length * cols);
      idx.forEach((row, i) => {
        if (inRange(row, validRows)) rows.set(from.subarray(row * cols, (row + 1) * cols), i * cols);
        else rows.fill(NaN, i * cols, (i + 1) * cols);
      });
      put(out, cpu.fromArray(rows));
    },
    scatterAdd(dOut, indices, rowsInTable, cols, out, checkId) {
      // as the kernel: a bad index fails the check and is skipped
      const idx = ints(indices);
      const bad = firstBad(idx, rowsInTable);
      if (bad >= 0) fail(checkId, bad, idx[bad]);
      const fine = idx.map((row) => (inRange(row, rowsInTable) ? row : 0));
      const d = f32(dOut).slice();
      idx.forEach((row, i) => { if (fine[i] !== row) d.fill(0, i * cols, (i + 1) * cols); });
      put(out, cpu.scatterAdd(cpu.fromArray(d), cpu.fromArray(fine), rowsInTable, cols));
    },
    adamw: (param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step, gradScale) =>
      cpu.adamw(s(param), s(grad), s(m), s(v), { lr, beta1, beta2, eps, weightDecay, step, gradScale }),
    adamwMulti(params, grads, ms, vs, weightDecays, lr, beta1, beta2, eps, step, gradScale, copyOf, copies, clipSquares, maxNorm) {
      const n = params.length;
      if (grads.length !== n || ms.length !== n || vs.length !== n || weightDecays.length !== n) throw new RangeError('adamwMulti: list lengths differ');
      if (clipSquares) {
        // as the kernel: the clip in float32 from the sum of squares on the device; nothing where it is not finite
        const norm = Math.fround(Math.sqrt(f32(clipSquares)[0]!));
        if (!Number.isFinite(norm)) return;
        if (maxNorm! > 0 && norm > maxNorm!) gradScale = Math.fround(gradScale * Math.fround(maxNorm! / Math.fround(norm + 1e-6)));
      }
      params.forEach((p, i) =>
        cpu.adamw(s(p), s(grads[i]!), s(ms[i]!), s(vs[i]!), { lr, beta1, beta2, eps, weightDecay: weightDecays[i]!, step, gradScale }));
      copyOf?.forEach((i, j) => {
        if (!buf(copies![j]!).bf16) throw new Error('emulated addon: adamwMulti copies are bfloat16');
        put(copies![j]!, s(params[i]!));
      });
    },
    sumsOfSquares: (xs, out) => put(out, cpu.sumsOfSquares(xs.map(s))),
    attentionForward(q, k, v, o, lse, batch, seqLen, heads, headDim, patterns, causal, scale, blocked) {
      const r = cpu.dilatedAttention(s(q), s(k), s(v), { batch, seqLen, heads, headDim }, config(patterns, causal, scale, blocked));
      put(o, r.o);
      put(lse, r.lse);
    },
    attentionBackward(q, k, v, o, lse, dO, dq, dk, dv, batch, seqLen, heads, headDim, patterns, causal, scale, blocked) {
      const r = cpu.dilatedAttentionBackward(
        s(q), s(k), s(v), s(o), s(lse), s(dO), { batch, seqLen, heads, headDim }, config(patterns, causal, scale, blocked),
      );
      put(dq, r.dq);
      put(dk, r.dk);
      put(dv, r.dv);
    },
    gatheredAttentionForward(q, k, v, o, lse, qo, ko, _tiles, headDim, causal, scale) {
      const layout = { qOffsets: cpu.read(s(qo)) as Int32Array, kOffsets: cpu.read(s(ko)) as Int32Array, headDim, causal, scale };
      const r = cpu.gatheredAttention(s(q), s(k), s(v), layout);
      put(o, r.o);
      put(lse, r.lse);
    },
    gatheredAttentionBackward(q, k, v, lse, dsum, dO, dq, dk, dv, qo, ko, _qt, headDim, causal, scale, _kt) {
      const layout = { qOffsets: cpu.read(s(qo)) as Int32Array, kOffsets: cpu.read(s(ko)) as Int32Array, headDim, causal, scale };
      const r = cpu.gatheredAttentionBackward(s(q), s(k), s(v), s(lse), s(dsum), s(dO), layout);
      put(dq, r.dq);
      put(dk, r.dk);
      put(dv, r.dv);
    },
    mergeAttention: (accO, accLse, o, lse, rows, headDim) => cpu.mergeAttention(s(accO), s(accLse), s(o), s(lse), s(rows), headDim),
    flashAttentionForward(q, k, v, o, lse, batch, seqLen, heads, headDim, patterns, causal, scale, blocked, accumulate = false) {
      flashArgs([q, k, v], [lse], headDim);
      flashOutput(o);
      const r = cpu.dilatedAttention(s(q), s(k), s(v), { batch, seqLen, heads, headDim }, config(patterns, causal, scale, blocked));
      if (!accumulate) {
        put(o, r.o);
        put(lse, r.lse);
        return;
      }
      const acc = f32(o).slice(), accLse = f32(lse).slice();
      const part = cpu.read(r.o) as Float32Array, partLse = cpu.read(r.lse) as Float32Array;
      for (let row = 0; row < accLse.length; row++) mergeRow(acc, accLse, row, part.subarray(row * headDim, (row + 1) * headDim), partLse[row]!);
      put(o, cpu.fromArray(acc));
      put(lse, cpu.fromArray(accLse));
    },
    flashProblemsForward(q, k, v, o, lse, problems, headDim, causal, scale) {
      flashArgs([q, k, v], [lse], headDim);
      flashOutput(o);
      if (problems.length % 6 !== 0) throw new RangeError('emulated addon: flashProblemsForward problems must be 6 integers each');
      const D = headDim;
      const qa = f32(q), ka = f32(k), va = f32(v);
      const acc = f32(o).slice(), accLse = f32(lse).slice();
      if (s(v).size !== s(k).size || acc.length !== qa.length || accLse.length * D !== qa.length) {
        throw new RangeError('emulated addon: flashProblemsForward sizes');
      }
      const within = (row0: number, stride: number, n: number, rows: number, i: number, what: string): void => {
        if (n > 0 && (row0 < 0 || stride < 1 || row0 + (n - 1) * stride >= rows)) {
          throw new RangeError(`flashProblemsForward: problem ${i}: ${what} rows outside the buffer`);
        }
      };
      const seen = new Set<number>();
      for (let i = 0; i < problems.length / 6; i++) {
        const [qRow0, qStride, nQ, kRow0, kStride, nK] = problems.slice(6 * i, 6 * i + 6) as number[] as [number, number, number, number, number, number];
        within(qRow0, qStride, nQ, qa.length / D, i, 'query');
        within(kRow0, kStride, nK, ka.length / D, i, 'key');
        if (nK === 0) continue;
        const scores = new Float64Array(nK);
        for (let qi = 0; qi < nQ; qi++) {
          const row = qRow0 + qi * qStride;
          if (seen.has(row)) throw new RangeError(`emulated addon: flashProblemsForward query row ${row} twice`);
          seen.add(row);
          const last = causal ? Math.min(nK - 1, qi + nK - nQ) : nK - 1;
          if (last < 0) continue;
          let max = -Infinity;
          for (let j = 0; j <= last; j++) {
            let dot = 0;
            const kr = (kRow0 + j * kStride) * D;
            for (let d = 0; d < D; d++) dot += qa[row * D + d]! * ka[kr + d]!;
            scores[j] = scale * dot;
            max = Math.max(max, scores[j]!);
          }
          let sum = 0;
          const out = new Float32Array(D);
          const weighted = new Float64Array(D);
          for (let j = 0; j <= last; j++) {
            const p = Math.exp(scores[j]! - max);
            sum += p;
            const vr = (kRow0 + j * kStride) * D;
            for (let d = 0; d < D; d++) weighted[d] += p * va[vr + d]!;
          }
          for (let d = 0; d < D; d++) out[d] = weighted[d]! / sum;
          mergeRow(acc, accLse, row, out, max + Math.log(sum));
        }
      }
      put(o, cpu.fromArray(acc));
      put(lse, cpu.fromArray(accLse));
    },
    flashAttentionBackward(q, k, v, dO, lse, dsum, dq, dk, dv, batch, seqLen, heads, headDim, patterns, causal, scale, blocked) {
      flashArgs([q, k, v, dO], [lse, dsum, dq, dk, dv], headDim);
      // the CPU backward takes O only through Dsum = rowsum(dO * O): a stand-in O with the given Dsum
      const g = f32(dO), ds = f32(dsum);
      const o = new Float32Array(g.length);
      for (let row = 0; row < ds.length; row++) {
        let norm = 0;
        for (let d = 0; d < headDim; d++) norm += g[row * headDim + d]! ** 2;
        if (norm > 0) for (let d = 0; d < headDim; d++) o[row * headDim + d] = (g[row * headDim + d]! * ds[row]!) / norm;
      }
      const r = cpu.dilatedAttentionBackward(
        s(q), s(k), s(v), cpu.fromArray(o), s(lse), s(dO), { batch, seqLen, heads, headDim }, config(patterns, causal, scale, blocked),
      );
      put(dq, r.dq);
      put(dk, r.dk);
      put(dv, r.dv);
    },
    attentionDsum(o, dO, dsum, rows, dim) {
      const a = f32(o), b = f32(dO);
      if (a.length !== rows * dim || b.length !== rows * dim || s(dsum).size !== rows) throw new RangeError('emulated addon: attentionDsum sizes');
      const out = new Float32Array(rows);
      for (let row = 0; row < rows; row++) {
        let acc = 0;
        for (let d = 0; d < dim; d++) acc += a[row * dim + d]! * b[row * dim + d]!;
        out[row] = acc;
      }
      put(dsum, cpu.fromArray(out));
    },
    fillRandomNormal(x, seed, stddev) {
      let state = (seed >>> 0) ^ 0x9e3779b9;
      const uniform = (): number => {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = Math.imul(state ^ (state >>> 15), state | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
      };
      const out = new Float32Array(s(x).size);
      for (let i = 0; i < out.length; i++) out[i] = stddev * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
      put(x, cpu.fromArray(out));
    },
    resetPeakMemory() { counters.peakBytes = counters.liveBytes; },
    copyRows(dst, dstRow0, src, srcRow0, srcStride, count, rowElems) {
      const a = buf(dst), b = buf(src);
      if (a.bf16 !== b.bf16 || a.storage.dtype !== b.storage.dtype) throw new RangeError('copyRows: dst and src differ in dtype');
      if (dst === src) throw new RangeError('copyRows: dst and src must be different storages');
      if (rowElems < 1 || count < 0 || srcStride < 1) throw new RangeError('copyRows: invalid rowElems, count or srcStride');
      if (count === 0) return;
      const to = cpu.read(a.storage).slice(), from = cpu.read(b.storage);
      if (dstRow0 < 0 || (dstRow0 + count) * rowElems > to.length) throw new RangeError('copyRows: dst rows outside dst');
      if (srcRow0 < 0 || (srcRow0 + (count - 1) * srcStride + 1) * rowElems > from.length) throw new RangeError('copyRows: src rows outside src');
      for (let i = 0; i < count; i++) {
        const at = (srcRow0 + i * srcStride) * rowElems;
        (to as Float32Array).set((from as Float32Array).subarray(at, at + rowElems), (dstRow0 + i) * rowElems);
      }
      put(dst, cpu.fromArray(to));
    },
    ncclInfo: () => ({ ok: false, reason: 'emulated addon has no NCCL' }),
    ncclUniqueId: () => { throw new Error('emulated addon has no NCCL'); },
    ncclCommInit: () => { throw new Error('emulated addon has no NCCL'); },
    ncclCommDestroy: () => {},
    ncclAsyncError: () => '',
    ncclAllReduce: () => { throw new Error('emulated addon has no NCCL'); },
    ncclAllGather: () => { throw new Error('emulated addon has no NCCL'); },
    ncclReduceScatter: () => { throw new Error('emulated addon has no NCCL'); },
    ncclBroadcast: () => { throw new Error('emulated addon has no NCCL'); },
    ncclSend: () => { throw new Error('emulated addon has no NCCL'); },
    ncclRecv: () => { throw new Error('emulated addon has no NCCL'); },
    ncclGroupStart: () => {},
    ncclGroupEnd: () => {},
  };
  return { addon, counters };
}

/**
 * Merges a normalized partial result (`part`, its log-sum-exp `partLse`) into row `row` of an accumulator
 * (`acc` rows of part.length values, `accLse`), as the fused kernels do: -Infinity on either side keeps the other.
 */
function mergeRow(acc: Float32Array, accLse: Float32Array, row: number, part: ArrayLike<number>, partLse: number): void {
  if (partLse === -Infinity) return;
  const old = accLse[row]!, D = part.length;
  const total = old === -Infinity ? partLse : Math.max(old, partLse) + Math.log1p(Math.exp(-Math.abs(old - partLse)));
  const wOld = old === -Infinity ? 0 : Math.exp(old - total), wNew = Math.exp(partLse - total);
  for (let d = 0; d < D; d++) acc[row * D + d] = (old === -Infinity ? 0 : acc[row * D + d]! * wOld) + part[d]! * wNew;
  accLse[row] = total;
}

function config(patterns: readonly number[], causal: boolean, scale: number, blocked: boolean) {
  const list = [];
  for (let i = 0; i < patterns.length; i += 2) list.push({ segmentLength: patterns[i]!, dilationRate: patterns[i + 1]! });
  return { patterns: list, causal, scale, headOffsets: blocked ? 'blocked' as const : 'paper' as const };
}

/**
 * Makes `device: 'cuda'` mean the emulated GPU in this process (call before the first use of the
 * device). Returns the backend and its counters.
 */
export function useEmulatedCuda(): { backend: CudaBackend; counters: EmulatorCounters } {
  const { addon, counters } = createEmulatedAddon();
  const backend = new CudaBackend(addon, addon.init(0));
  registerBackendLoader('cuda', () => backend);
  return { backend, counters };
}

