// Dilated attention on one GPU (float32 kernels): forward and forward+backward time for the paper's
// schedule, B = 1, H = 12, D = 64, causal, with effective TFLOP/s counted as docs/ATTENTION.md says.
//
//   node --import tsx bench/gpu-attention.ts [N ...]
import type { AttentionConfig, AttentionGeometry, Storage } from '../src/backend/backend.js';
import { cudaAvailable, createCudaBackend } from '../src/backend/cuda/index.js';

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}
const g = createCudaBackend();
// this benchmark is about the float32 kernels (the fused bf16 ones: bench/gpu-dilated-attention.ts)
g.setAttentionPrecision('fp32');
const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const lengths = sizes.length ? sizes : [8192, 32768, 131072];
const H = 12, D = 64;
const W = [2048, 4096, 8192, 16384, 32768];
const R = [1, 2, 4, 6, 12];

function flopsForward(N: number): number {
  let f = 0;
  for (let i = 0; i < W.length; i++) {
    const w = Math.min(W[i]!, N);
    f += H * (N / w) * 2 * (w / R[i]!) ** 2 * D;
  }
  return f;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function time(fn: () => Storage[], repeats: number): number {
  const times: number[] = [];
  for (let i = 0; i < repeats + 1; i++) {
    g.synchronize();
    const t0 = performance.now();
    const outs = fn();
    g.synchronize();
    if (i > 0) times.push(performance.now() - t0); // the first run is warm-up
    for (const o of outs) g.free(o);
  }
  return median(times);
}

function random(n: number): Storage {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return g.fromArray(a);
}

console.log(`device: ${g.info.name}`);
console.log('N        fwd ms   fwd TFLOP/s  fwd+bwd ms  fwd+bwd TFLOP/s  ns/token (fwd+bwd)');
for (const N of lengths) {
  const geometry: AttentionGeometry = { batch: 1, seqLen: N, heads: H, headDim: D };
  const config: AttentionConfig = {
    patterns: W.map((w, i) => ({ segmentLength: w, dilationRate: R[i]! })), causal: true, scale: 1 / Math.sqrt(D), headOffsets: 'paper',
  };
  const n = N * H * D;
  const [q, k, v, dO] = [random(n), random(n), random(n), random(n)];
  const fwd = time(() => {
    const r = g.dilatedAttention(q, k, v, geometry, config);
    return [r.o, r.lse];
  }, 5);
  const total = time(() => {
    const r = g.dilatedAttention(q, k, v, geometry, config);
    const b = g.dilatedAttentionBackward(q, k, v, r.o, r.lse, dO, geometry, config);
    return [r.o, r.lse, b.dq, b.dk, b.dv];
  }, 3);
  const f = flopsForward(N);
  console.log(
    `${String(N).padEnd(8)} ${fwd.toFixed(2).padStart(7)}  ${(f / fwd / 1e9).toFixed(2).padStart(11)}  ${total.toFixed(2).padStart(10)}  ` +
    `${((3.5 * f) / total / 1e9).toFixed(2).padStart(15)}  ${((total * 1e6) / N).toFixed(0).padStart(8)}`,
  );
  for (const s of [q, k, v, dO]) g.free(s);
}
