// float32 matrix products through cuBLASLt in each precision mode (fp32, TF32, bf16 operands), and the
// error of each against fp32, to choose the default.
//
//   node --import tsx bench/gpu-matmul.ts [size]
import type { Storage } from '../src/backend/backend.js';
import { cudaAvailable, createCudaBackend, type MatmulPrecision } from '../src/backend/cuda/index.js';

const status = cudaAvailable();
if (!status.ok) {
  console.log(`skipped: ${status.reason}`);
  process.exit(0);
}
const g = createCudaBackend();
const S = Number(process.argv[2] ?? 4096);

function random(n: number): Storage {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return g.fromArray(a);
}

const shapes: [string, number[], number[], number[], number, number, number][] = [
  [`${S}^3`, [S, S], [S, S], [], S, S, S],
  ['x[8192,768] W[768,3072]', [8, 1024, 768], [768, 3072], [8], 1024, 3072, 768],
  ['head x[8192,768] W[768,100277]', [8192, 768], [768, 100277], [], 8192, 100277, 768],
  ['batched 96 x 512x512x64', [96, 512, 64], [96, 512, 64], [96], 512, 512, 64],
];

console.log(`device: ${g.info.name}`);
console.log('shape                           precision  ms       TFLOP/s  rel. error vs fp32');
for (const [name, aShape, bShape, batch, m, n, k] of shapes) {
  const a = random(aShape.reduce((x, y) => x * y, 1));
  const b = random(bShape.reduce((x, y) => x * y, 1));
  const transB = name.startsWith('batched');
  let reference: Float32Array | null = null;
  for (const precision of ['fp32', 'tf32', 'bf16'] as MatmulPrecision[]) {
    g.setMatmulPrecision(precision);
    const times: number[] = [];
    let out: Storage | null = null;
    for (let i = 0; i < 6; i++) {
      if (out) g.free(out);
      g.synchronize();
      const t0 = performance.now();
      out = g.matmul(a, aShape, b, bShape, false, transB, batch, m, n, k);
      g.synchronize();
      if (i > 0) times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    const ms = times[Math.floor(times.length / 2)]!;
    const result = g.read(out!) as Float32Array;
    g.free(out!);
    reference ??= result;
    let num = 0, den = 0;
    for (let i = 0; i < result.length; i++) {
      num += (result[i]! - reference[i]!) ** 2;
      den += reference[i]! ** 2;
    }
    const flops = 2 * batch.reduce((x, y) => x * y, 1) * m * n * k;
    console.log(`${name.padEnd(31)} ${precision.padEnd(9)}  ${ms.toFixed(3).padStart(7)}  ${(flops / ms / 1e9).toFixed(1).padStart(7)}  ${Math.sqrt(num / den).toExponential(2)}`);
  }
  g.free(a);
  g.free(b);
}
