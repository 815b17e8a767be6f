/**
 * The matrix products of the model's linear layers on bf16 activations, each shape timed alone: the
 * forward (bias in the epilogue; GELU too for the first feed-forward layer), the input gradient, and the
 * parameter gradients in float32 with the bias gradient (linearGrads). LONGNET_MATMUL_ALGO=i runs
 * cuBLASLt's i-th heuristic candidate instead of its first, to compare them.
 *
 *   node --import tsx bench/gpu-linear-products.ts [--rows 32768] [--d-model 768] [--ffn 3072] [--vocab 100288]
 */
import { parseArgs } from 'node:util';
import type { Storage } from '../src/backend/backend.js';
import { cudaAvailable, createCudaBackend } from '../src/backend/cuda/index.js';
import type { CudaStorage } from '../src/backend/cuda/storage.js';

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}
const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '32768' },
    'd-model': { type: 'string', default: '768' },
    ffn: { type: 'string', default: '3072' },
    vocab: { type: 'string', default: '100288' },
    reps: { type: 'string', default: '20' },
  },
});
const g = createCudaBackend();
const rows = Number(values.rows);
const reps = Number(values.reps);

let seed = 1;
/** n normal values in bf16 storage, from the device's random fill. */
function random(n: number): Storage {
  const out = g.alloc('bfloat16', n) as CudaStorage;
  g.addon.fillRandomNormal(out.handle, seed++, 1);
  return out;
}

/** Median ms of one call over 3 timed groups of `reps` calls, after a warm-up call. */
function time(call: () => Storage[]): number {
  const free = (xs: Storage[]): void => xs.forEach((x) => g.free(x));
  free(call());
  const groups: number[] = [];
  for (let t = 0; t < 3; t++) {
    g.synchronize();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) free(call());
    g.synchronize();
    groups.push((performance.now() - t0) / reps);
  }
  return groups.sort((a, b) => a - b)[1]!;
}

const layers: [string, number, number][] = [
  ['attention projection', Number(values['d-model']), Number(values['d-model'])],
  ['feed-forward up', Number(values['d-model']), Number(values.ffn)],
  ['feed-forward down', Number(values.ffn), Number(values['d-model'])],
  ['output head', Number(values['d-model']), Number(values.vocab)],
];

console.log(`device: ${g.info.name}; rows ${rows}; cuBLASLt candidate ${process.env['LONGNET_MATMUL_ALGO'] ?? 0}`);
console.log('layer                 in     out     product              ms      TFLOP/s');
for (const [name, inF, outF] of layers) {
  const x = random(rows * inF), w = random(outF * inF), bias = random(outF), dy = random(rows * outF);
  const flops = 2 * rows * inF * outF;
  const cases: [string, () => Storage[]][] = [
    ['forward x W^T + b', () => [g.matmul(x, [rows, inF], w, [outF, inF], false, true, [], rows, outF, inF, bias)]],
    ...(name === 'feed-forward up'
      ? [['forward gelu(x W^T + b)', () => { const r = g.linearGelu(x, w, bias, rows, inF, outF); return [r.y, r.pre]; }] as [string, () => Storage[]]]
      : []),
    ['input gradient dy W', () => [g.matmul(dy, [rows, outF], w, [outF, inF], false, false, [], rows, inF, outF)]],
    ['dW (float32)', () => [g.linearGrads(dy, x, rows, inF, outF, false, 'float32').weight]],
    ['dW, db (float32)', () => { const r = g.linearGrads(dy, x, rows, inF, outF, true, 'float32'); return [r.weight, r.bias!]; }],
  ];
  for (const [product, call] of cases) {
    const ms = time(call);
    console.log(`${name.padEnd(21)} ${String(inF).padStart(5)} ${String(outF).padStart(7)}  ${product.padEnd(20)} ${ms.toFixed(3).padStart(7)} ${(flops / ms / 1e9).toFixed(1).padStart(8)}`);
  }
  for (const s of [x, w, bias, dy]) g.free(s);
}
