// Memory-bound kernels of the CUDA backend: achieved bandwidth (bytes read + written once over time),
// and the host cost of one small op (the N-API call, the allocation and the launch).
//
//   node --import tsx bench/gpu-ops.ts [--only REGEX]
//
// --only times just the cases whose names match REGEX (and skips the small-op line).
import { parseArgs } from 'node:util';

import type { LayerNormBackwardOptions, Storage } from '../src/backend/backend.js';
import { cudaAvailable, createCudaBackend, CudaStorage } from '../src/backend/cuda/index.js';
import { loadAddon } from '../src/backend/cuda/load.js';

const { values } = parseArgs({ options: { only: { type: 'string' } } });
const only = values.only === undefined ? null : new RegExp(values.only);

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}
const g = createCudaBackend();

function random(n: number): Storage {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return g.fromArray(a);
}

/** Median ms of one call; `inner` calls a sample, for kernels short enough that the host's share would show. */
function time(fn: () => Storage[], repeats = 10, inner = 1): number {
  const times: number[] = [];
  for (let i = 0; i <= repeats; i++) {
    g.synchronize();
    const t0 = performance.now();
    const outs: Storage[] = [];
    for (let j = 0; j < inner; j++) outs.push(...fn());
    g.synchronize();
    if (i > 0) times.push((performance.now() - t0) / inner);
    for (const o of outs) g.free(o);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

const N = 1 << 26; // 64M floats, 256 MB
const x = random(N);
const y = random(N);
const bias = random(4096);
const rows = 16384, vocab = 4096; // 64M logits
const targets = g.fromArray(Int32Array.from({ length: rows }, (_, i) => i % vocab));
const B = 1, T = 65536, H = 16, D = 64; // [B, T, H, D] = 64M
const lnF32 = g.layerNorm(x, null, null, N / 1024, 1024, 1e-5);
g.free(lnF32.y);

// the model's layer norm: bf16 activations [tokens, 768], float32 scale and shift; and a wider row
const LR = 32768, LC = 768, LW = 3072;
const bf16 = (n: number) => {
  const f = random(n);
  const b = g.cast(f, 'bfloat16');
  g.free(f);
  return b;
};
const lnX = bf16(LR * LC), lnDy = bf16(LR * LC);
const lnParams = (cols: number) => {
  const gamma = random(cols), beta = random(cols);
  const r = g.layerNorm(lnX, gamma, beta, (LR * LC) / cols, cols, 1e-5);
  g.free(r.y);
  return { gamma, beta, mean: r.mean, rstd: r.rstd, rows: (LR * LC) / cols, cols };
};
const lnNarrow = lnParams(LC), lnWide = lnParams(LW);
// with geluInput, the layer norm of gelu(x) (the feed-forward's); with an addend, x's other gradient summed
const lnForward = (p: ReturnType<typeof lnParams>, geluInput = false) => () => {
  const r = g.layerNorm(lnX, p.gamma, p.beta, p.rows, p.cols, 1e-5, { geluInput });
  return [r.y, r.mean, r.rstd];
};
const lnBackward = (p: ReturnType<typeof lnParams>, options: LayerNormBackwardOptions = {}) => () => {
  const r = g.layerNormBackward(lnDy, lnX, p.gamma, p.mean, p.rstd, p.rows, p.cols, true, options);
  return [r.dx, r.dGamma!, r.dBeta!, ...(r.dxColumnSums ? [r.dxColumnSums] : []), ...(r.dxRowDots ? [r.dxRowDots] : [])];
};

// the training step's memory-bound calls at the base preset's 32K shapes (bf16 activations): residual adds,
// bias gradients (sums over the tokens), the XPos rotation of q and k, the finiteness check of attention
// inputs, and the casts of the weights (the 100,288 x 768 head) to bf16 and of their gradients back
const headElems = 100288 * 768;
const headF32 = random(headElems), headBf16 = g.cast(headF32, 'bfloat16');
const act = bf16(LR * LC), actWide = bf16(LR * LW);
const cosTable = random(LR * 64), sinTable = random(LR * 64);
const gradF32 = random(LR * LC);

// the loss over the cl100k head's logits (bf16, 8192 tokens): forward and backward kernels against the one
// that writes the gradient in the forward (read once, or twice through L2, and write once)
const ceRows = 8192, ceCols = 100288;
const ceLogits = bf16(ceRows * ceCols);
const ceTargets = g.fromArray(Int32Array.from({ length: ceRows }, (_, i) => (i * 7919) % 100277));
const ceWeight = g.fromArray(new Float32Array([1 / ceRows]));
const ceDLoss = g.fromArray(new Float32Array(ceRows).fill(1 / ceRows));

// the attention backward's last pass over a float32 gradient: rotated back by the XPos tables (dq, dk) or
// not (dv), rounded to bf16, with its column sums (a bias gradient), through the addon's storeGradient
// (into the same outputs every call)
const addon = loadAddon();
const storedGrad = g.alloc('bfloat16', LR * LC), storedSums = g.alloc('float32', LC);
const storeGradient = (rotate: boolean) => (): Storage[] => {
  if (!addon.ok) throw new Error(addon.reason);
  const h = (x: Storage) => (x as CudaStorage).handle;
  const [cos, sin] = rotate ? [h(cosTable), h(sinTable)] : [null, null];
  addon.addon.storeGradient(h(gradF32), cos, sin, 1, LR, 12, 64, h(storedGrad), h(storedSums));
  return [];
};

const cases: [string, number, () => Storage[], number?][] = [
  ['crossEntropy + backward bf16 [8192,100288]', 6 * ceRows * ceCols, () => {
    const r = g.crossEntropy(ceLogits, ceTargets, ceRows, ceCols, -100, 100277);
    return [r.loss, r.lse, g.crossEntropyBackward(ceLogits, ceTargets, r.lse, ceDLoss, ceRows, ceCols, -100, 100277)];
  }],
  ['crossEntropyWithGrad bf16 [8192,100288]', 4 * ceRows * ceCols, () => {
    const r = g.crossEntropyWithGrad(ceLogits, ceTargets, ceRows, ceCols, -100, 100277, ceWeight);
    return [r.loss, r.lse, r.grad];
  }],
  ['add bf16 [32768,768]', 6 * LR * LC, () => [g.binary('add', lnX, [LR * LC], act, [LR * LC], [LR * LC])], 20],
  ['sum over tokens bf16 [32768,768]', 2 * LR * LC, () => [g.reduce('sum', act, [LR, LC], [0])], 20],
  ['sum over tokens bf16 [32768,3072]', 2 * LR * LW, () => [g.reduce('sum', actWide, [LR, LW], [0])], 20],
  ['rotatePairs bf16 [32768,12,64]', 4 * LR * LC + 8 * LR * 64, () => [g.rotatePairs(act, cosTable, sinTable, 1, LR, 12, 64, false)], 20],
  ['storeGradient rotated back, f32 -> bf16 [32768,12,64]', 6 * LR * LC + 8 * LR * 64, storeGradient(true), 20],
  ['storeGradient, f32 -> bf16 [32768,12,64]', 6 * LR * LC, storeGradient(false), 20],
  ['checkFinite bf16 [32768,768]', 2 * LR * LC, () => {
    g.checkFinite(act, 'q');
    return [];
  }, 20],
  ['cast f32->bf16 [100288,768]', 6 * headElems, () => [g.cast(headF32, 'bfloat16')], 20],
  ['cast f32->bf16 [32768,768] (an attention gradient)', 6 * LR * LC, () => [g.cast(gradF32, 'bfloat16')], 20],
  ['cast bf16->f32 [100288,768]', 6 * headElems, () => [g.cast(headBf16, 'float32')], 20],
  ['add (same shape)', 12 * N, () => [g.binary('add', x, [N], y, [N], [N])]],
  ['add bias [16384,4096]+[4096]', 8 * N, () => [g.binary('add', x, [N / 4096, 4096], bias, [4096], [N / 4096, 4096])]],
  ['gelu', 8 * N, () => [g.unary('gelu', x)]],
  ['mul scalar', 8 * N, () => [g.binaryScalar('mul', x, 0.5)]],
  ['sum over last axis [16384,4096]', 4 * N, () => [g.reduce('sum', x, [N / 4096, 4096], [1])]],
  ['sum over first axis [16384,4096]', 4 * N, () => [g.reduce('sum', x, [N / 4096, 4096], [0])]],
  ['permute [B,T,H,D]->[B,H,T,D]', 8 * N, () => [g.permute(x, [B, T, H, D], [0, 2, 1, 3])]],
  ['transpose [8192,8192]', 8 * N, () => [g.permute(x, [8192, 8192], [1, 0])]],
  ['softmax [16384,4096]', 8 * N, () => [g.softmax(x, rows, vocab, false)]],
  ['layerNorm [65536,1024]', 8 * N, () => {
    const r = g.layerNorm(x, null, null, N / 1024, 1024, 1e-5);
    return [r.y, r.mean, r.rstd];
  }],
  ['layerNormBackward [65536,1024]', 12 * N, () => {
    const r = g.layerNormBackward(y, x, null, lnF32.mean, lnF32.rstd, N / 1024, 1024, false);
    return [r.dx];
  }],
  // bf16: y (forward); dx, dGamma and dBeta (backward), counted as one read of x (and dy) and one write
  ['layerNorm bf16 [32768,768]', 4 * LR * LC, lnForward(lnNarrow), 20],
  ['layerNormBackward bf16 [32768,768]', 6 * LR * LC, lnBackward(lnNarrow), 20],
  ['layerNormBackward + addend bf16 [32768,768]', 8 * LR * LC, lnBackward(lnNarrow, { addend: lnDy }), 20],
  // as the training step takes them: with dx's column sums (a bias gradient), or its dots with x per head (Dsum)
  ['layerNormBackward + addend, dx column sums bf16 [32768,768]', 8 * LR * LC, lnBackward(lnNarrow, { addend: lnDy, dxColumnSums: true }), 20],
  ['layerNormBackward, dx . x per 64 bf16 [32768,768]', 6 * LR * LC, lnBackward(lnNarrow, { rowDots: 64 }), 20],
  ['layerNorm bf16 [8192,3072]', 4 * LR * LC, lnForward(lnWide), 20],
  ['layerNormBackward bf16 [8192,3072]', 6 * LR * LC, lnBackward(lnWide), 20],
  ['layerNorm of gelu bf16 [8192,3072]', 4 * LR * LC, lnForward(lnWide, true), 20],
  ['layerNormBackward of gelu bf16 [8192,3072]', 6 * LR * LC, lnBackward(lnWide, { geluInput: true }), 20],
  ['layerNormBackward of gelu, dx column sums bf16 [8192,3072]', 6 * LR * LC, lnBackward(lnWide, { geluInput: true, dxColumnSums: true }), 20],
  ['gelu bf16 [8192,3072]', 4 * LR * LC, () => [g.unary('gelu', lnX)], 20],
  ['crossEntropy [16384,4096]', 4 * N, () => {
    const r = g.crossEntropy(x, targets, rows, vocab, -100, vocab);
    return [r.loss, r.lse];
  }],
];

console.log(`device: ${g.info.name}`);
console.log('kernel                                   ms       GB/s');
for (const [name, bytes, fn, inner] of cases) {
  if (only && !only.test(name)) continue;
  const ms = time(fn, 10, inner);
  console.log(`${name.padEnd(38)} ${ms.toFixed(3).padStart(7)}  ${(bytes / ms / 1e6).toFixed(0).padStart(7)}`);
}

if (only) process.exit(0);

// host overhead: many small ops back to back, measured on the host clock after one sync
const small = random(1024);
const ops = 20000;
g.synchronize();
const t0 = performance.now();
for (let i = 0; i < ops; i++) g.free(g.binary('add', small, [1024], small, [1024], [1024]));
g.synchronize();
console.log(`small op (add of 1024, alloc + launch + free): ${(((performance.now() - t0) / ops) * 1000).toFixed(2)} us each`);
