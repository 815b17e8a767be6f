/**
 * The CPU backend's ops that split across threads (elementwise-parallel.ts, layout-parallel.ts,
 * nn-parallel.ts) on one thread and on all of them, on the activation size of the tiny preset at 4096
 * tokens ([4096, 128] float32), interleaved so that both see the same machine load. Prints the median time
 * of each as a markdown table.
 *
 *   node --import tsx bench/cpu-threads.ts [--rows 4096] [--cols 128] [--repeat 40]
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { binaryKernel, binaryScalarKernel, unaryKernel } from '../src/backend/cpu/elementwise-parallel.js';
import { permuteKernel } from '../src/backend/cpu/layout-parallel.js';
import {
  crossEntropyBackwardKernel, crossEntropyKernel, layerNormBackwardKernel, layerNormKernel, softmaxKernel,
} from '../src/backend/cpu/nn-parallel.js';
import { allocArray } from '../src/backend/cpu/storage.js';
import { lastLoopThreads } from '../src/backend/cpu/thread-pool.js';

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '4096' }, cols: { type: 'string', default: '128' }, repeat: { type: 'string', default: '40' } },
});
const rows = Number(values.rows);
const cols = Number(values.cols);
const repeat = Number(values.repeat);
const n = rows * cols;
const random = (size: number): Float32Array => {
  const a = allocArray('float32', size) as Float32Array;
  for (let i = 0; i < size; i++) a[i] = Math.random() * 2 - 1;
  return a;
};
const x = random(n);
const y = random(n);
const bias = random(cols);
const gamma = random(cols);
const norm = layerNormKernel(x, gamma, bias, rows, cols, 1e-5);
// the byte vocabulary's logits: [rows, 257]
const VOCAB = 257;
const logits = random(rows * VOCAB);
const targets = Int32Array.from({ length: rows }, (_, r) => (r * 31) % VOCAB);
const ce = crossEntropyKernel(logits, targets, rows, VOCAB, -100, VOCAB);
const dLoss = new Float32Array(rows).fill(1 / rows);
const shape = [rows, cols];
const ops: [string, () => unknown][] = [
  ['add (same shape)', () => binaryKernel('add', x, shape, y, shape, shape)],
  ['add a bias row', () => binaryKernel('add', x, shape, bias, [cols], shape)],
  ['mul by a scalar', () => binaryScalarKernel('mul', x, 0.5)],
  ['gelu', () => unaryKernel('gelu', x)],
  ['exp', () => unaryKernel('exp', x)],
  ['permute [rows, 4, cols/4] -> [4, rows, cols/4]', () => permuteKernel(x, [rows, 4, cols / 4], [1, 0, 2])],
  ['layer norm', () => layerNormKernel(x, gamma, bias, rows, cols, 1e-5)],
  ['layer norm backward', () => layerNormBackwardKernel(y, x, gamma, norm.mean, norm.rstd, rows, cols, true)],
  ['softmax [rows, 257]', () => softmaxKernel(logits, rows, VOCAB, false)],
  ['cross-entropy [rows, 257]', () => crossEntropyKernel(logits, targets, rows, VOCAB, -100, VOCAB)],
  ['cross-entropy backward [rows, 257]', () => crossEntropyBackwardKernel(logits, targets, ce.lse, dLoss, rows, VOCAB, -100, VOCAB)],
];
const all = String(availableParallelism());
const median = (a: number[]): number => [...a].sort((p, q) => p - q)[a.length >> 1]!;
console.log(`[${rows}, ${cols}] float32, ${all} logical cores, median of ${repeat}`);
console.log('| op | 1 thread ms | all threads ms | threads used | speed-up |');
console.log('|---|---:|---:|---:|---:|');
for (const [name, run] of ops) {
  const times: Record<string, number[]> = { '1': [], [all]: [] };
  let used = 1;
  for (let r = 0; r < repeat; r++) {
    for (const threads of ['1', all]) {
      process.env['LONGNET_THREADS'] = threads;
      const t0 = performance.now();
      run();
      times[threads]!.push(performance.now() - t0);
      if (threads === all) used = lastLoopThreads();
    }
  }
  const one = median(times['1']!);
  const many = median(times[all]!);
  console.log(`| ${name} | ${one.toFixed(2)} | ${many.toFixed(2)} | ${used} | ${(one / many).toFixed(2)}x |`);
}
process.exit(0);
