// A stand-in for the native addon, computed by the CPU backend, so that the TypeScript side of the CUDA
// backend (src/backend/cuda/cuda-backend.ts) and everything above it (model, trainer, CLI) can be run
// with `device: 'cuda'` on a machine without a GPU. It keeps the addon's rules that matter to callers:
// float32-only kernels (the backend's own checks), outputs passed in, explicit frees. It also counts what
// costs on a real GPU: live buffers (a leak shows as growth), and host synchronizations (reads,
// allFinite, index checks).
import type { Storage } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
// the real module first: it registers its own loader on import, which ours then replaces
import '../src/backend/cuda/index.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { ABI_VERSION, type MemoryStats, type NativeAddon, type NativeHandle } from '../src/backend/cuda/native.js';
import { registerBackendLoader } from '../src/backend/registry.js';
import { bytesPerElement, type DType, type TypedArray } from '../src/tensor/dtype.js';

const DTYPES: readonly DType[] = ['float32', 'float64', 'int32'];

interface Buffer { storage: Storage; freed: boolean; bytes: number }

export interface EmulatorCounters {
  /** Host waits: downloads, allFinite, and the index checks of gather, scatterAdd and crossEntropy. */
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
  const put = (out: NativeHandle, value: Storage): void => cpu.assign(s(out), value);
  let precision = 1;
  const addon: NativeAddon = {
    abiVersion: ABI_VERSION,
    probe: () => ({ ok: true, reason: '', devices: 1 }),
    init: (index) => ({ index, name: 'emulated GPU (CPU backend)', major: 9, minor: 0, multiprocessors: 1, totalMemory: 2 ** 34 }),
    alloc(dtype, size, _zero) {
      const d = DTYPES[dtype];
      if (d === undefined) throw new Error(`emulated addon: dtype code ${dtype}`);
      const b: Buffer = { storage: cpu.alloc(d, size), freed: false, bytes: size * bytesPerElement(d) };
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
    upload: (h, data) => put(h, cpu.fromArray(data)),
    download(h, out: TypedArray) {
      counters.syncs++;
      out.set(cpu.read(s(h)) as never);
    },
    fill: (h, value) => cpu.fill(s(h), value),
    copyInto: (dst, src) => put(dst, s(src)),
    cast: (src, dst) => put(dst, cpu.cast(s(src), s(dst).dtype)),
    allFinite(h) {
      counters.syncs++;
      return cpu.allFinite(s(h));
    },
    synchronize() { counters.syncs++; },
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
    matmul: (a, aShape, b, bShape, transA, transB, batchShape, m, n, k, out) =>
      put(out, cpu.matmul(s(a), aShape, s(b), bShape, transA, transB, batchShape, m, n, k)),
    permute: (x, shape, perm, out) => put(out, cpu.permute(s(x), shape, perm)),
    slice: (x, shape, begin, size, out) => put(out, cpu.slice(s(x), shape, begin, size)),
    addSliceInto: (dst, dstShape, src, srcShape, begin) => cpu.addSliceInto(s(dst), dstShape, s(src), srcShape, begin),
    softmax: (x, rows, cols, log, out) => put(out, cpu.softmax(s(x), rows, cols, log)),
    softmaxBackward: (y, dy, rows, cols, log, out) => put(out, cpu.softmaxBackward(s(y), s(dy), rows, cols, log)),
    layerNorm(x, gamma, beta, rows, cols, eps, y, mean, rstd) {
      const r = cpu.layerNorm(s(x), gamma && s(gamma), beta && s(beta), rows, cols, eps);
      put(y, r.y);
      put(mean, r.mean);
      put(rstd, r.rstd);
    },
    layerNormBackward(dy, x, gamma, mean, rstd, rows, cols, dx, dGamma, dBeta) {
      const r = cpu.layerNormBackward(s(dy), s(x), gamma && s(gamma), s(mean), s(rstd), rows, cols, dBeta !== null);
      put(dx, r.dx);
      if (dGamma) put(dGamma, r.dGamma!);
      if (dBeta) put(dBeta, r.dBeta!);
    },
    crossEntropy(logits, targets, rows, cols, ignoreIndex, loss, lse) {
      counters.syncs++;
      const r = cpu.crossEntropy(s(logits), s(targets), rows, cols, ignoreIndex);
      put(loss, r.loss);
      put(lse, r.lse);
    },
    crossEntropyBackward: (logits, targets, lse, dLoss, rows, cols, ignoreIndex, out) =>
      put(out, cpu.crossEntropyBackward(s(logits), s(targets), s(lse), s(dLoss), rows, cols, ignoreIndex)),
    gather(table, rowsInTable, cols, indices, out) {
      counters.syncs++;
      put(out, cpu.gather(s(table), rowsInTable, cols, s(indices)));
    },
    scatterAdd(dOut, indices, rowsInTable, cols, out) {
      counters.syncs++;
      put(out, cpu.scatterAdd(s(dOut), s(indices), rowsInTable, cols));
    },
    adamw: (param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step) =>
      cpu.adamw(s(param), s(grad), s(m), s(v), { lr, beta1, beta2, eps, weightDecay, step }),
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

