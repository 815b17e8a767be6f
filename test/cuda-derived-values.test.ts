// Values that the kernels writing gradients make on the way, for the formulas that take those gradients:
// bias gradients as column sums (the layer-norm backward's dx, the attention's dq, dk and dv as they are
// stored, rotated back) and the attention's rowsum(dO * O) from the layer-norm backward that wrote dO.
// Against the same values computed from the stored gradients, and, for a whole model, against the same
// backward without them. The model test also runs on the emulated addon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionConfig, Storage } from '../src/backend/backend.js';
import { cudaAvailable } from '../src/backend/cuda/index.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import type { CudaStorage } from '../src/backend/cuda/storage.js';
import { getBackend } from '../src/backend/registry.js';
import { LongNetDecoder } from '../src/model/index.js';
import { Tensor, tensor, tidy } from '../src/tensor/index.js';
import { useEmulatedCuda } from './cuda-emulator.js';
import { assertClose, relativeError, requireGpu, rng, seed, skip } from './cuda-support.js';
import { tiny } from './cuda-training-fixture.js';

const real = cudaAvailable().ok;
if (!real) useEmulatedCuda();

/** Values of `n` random normals in a GPU storage of `dtype`. */
function random(n: number, dtype: 'float32' | 'bfloat16', scale = 1): Storage {
  const g = requireGpu();
  const staged = g.fromArray(rng.floats(n, (r) => r.normal() * scale));
  if (dtype === 'float32') return staged;
  const out = g.cast(staged, 'bfloat16');
  g.free(staged);
  return out;
}

/** The column sums of a stored [rows, cols] by the reduction kernel, in float32 (a bf16 reduction rounds them). */
function columnSums(s: Storage, rows: number, cols: number): Float32Array {
  const g = requireGpu();
  const wide = s.dtype === 'float32' ? s : g.cast(s, 'float32');
  const sums = g.reduce('sum', wide, [rows, cols], [0]);
  const out = g.read(sums) as Float32Array;
  for (const t of wide === s ? [sums] : [sums, wide]) g.free(t);
  return out;
}

/** Per run of `segment` values, the dot products of two stored tensors of n values, in float32. */
function runDots(a: Storage, b: Storage, n: number, segment: number): Float32Array {
  const g = requireGpu();
  const wide = [a, b].map((s) => (s.dtype === 'float32' ? s : g.cast(s, 'float32')));
  const shape = [n / segment, segment];
  const product = g.binary('mul', wide[0]!, shape, wide[1]!, shape, shape);
  const dots = g.reduce('sum', product, shape, [1]);
  const out = g.read(dots) as Float32Array;
  for (const t of [product, dots, ...wide.filter((w, i) => w !== [a, b][i])]) g.free(t);
  return out;
}

/** Sums of `rows` values of about unit size in float32, in two orders: a few ulps of sqrt(rows) apart. */
function assertSums(got: Storage, want: Float32Array, rows: number, label: string): void {
  assertClose(requireGpu().read(got), want, label, 1e-5, 1e-6 * rows);
}

test('layerNormBackward gives the column sums of dx as stored and its dot products with x per run, with or without gamma, addend and GELU input', { skip }, () => {
  const g = requireGpu();
  // rows in registers with the sums in the same kernel (bf16 768 and 3072 with GELU, float32 768), a row
  // width the register kernels do not take, and rows too few to fill one block
  const cases = [
    { rows: 700, cols: 768, dtype: 'bfloat16', gelu: false },
    { rows: 333, cols: 3072, dtype: 'bfloat16', gelu: true },
    { rows: 300, cols: 768, dtype: 'float32', gelu: false },
    { rows: 50, cols: 100, dtype: 'float32', gelu: true },
    { rows: 3, cols: 64, dtype: 'bfloat16', gelu: false },
  ] as const;
  for (const { rows, cols, dtype, gelu } of cases) {
    for (const affine of [false, true]) {
      for (const withAddend of [false, true]) {
        const label = `${rows}x${cols} ${dtype}${gelu ? ' gelu' : ''}${affine ? ' affine' : ''}${withAddend ? ' addend' : ''}`;
        const x = random(rows * cols, dtype, 2);
        const dy = random(rows * cols, dtype);
        const addend = withAddend ? random(rows * cols, dtype) : null;
        const gamma = affine ? random(cols, 'float32') : null;
        const f = g.layerNorm(x, gamma, null, rows, cols, 1e-5, { geluInput: gelu });
        const plain = g.layerNormBackward(dy, x, gamma, f.mean, f.rstd, rows, cols, affine, { geluInput: gelu, addend });
        const segment = cols % 64 === 0 ? 64 : 20;
        const summed = g.layerNormBackward(
          dy, x, gamma, f.mean, f.rstd, rows, cols, affine, { geluInput: gelu, addend, dxColumnSums: true, rowDots: segment },
        );
        assert.ok(summed.dxColumnSums && summed.dxRowDots, `${label}: sums and dots made`);
        // the same dx and parameter gradients as without the sums
        assert.deepEqual(g.read(summed.dx), g.read(plain.dx), `${label}: dx`);
        if (affine) assert.deepEqual(g.read(summed.dGamma!), g.read(plain.dGamma!), `${label}: dGamma`);
        if (affine) assert.deepEqual(g.read(summed.dBeta!), g.read(plain.dBeta!), `${label}: dBeta`);
        assertSums(summed.dxColumnSums!, columnSums(summed.dx, rows, cols), rows, `${label}: dx column sums`);
        assertSums(summed.dxRowDots!, runDots(summed.dx, x, rows * cols, segment), segment, `${label}: dx . x per run of ${segment}`);
        for (const s of [x, dy, addend, gamma, f.y, f.mean, f.rstd, plain.dx, plain.dGamma, plain.dBeta, summed.dx, summed.dGamma,
          summed.dBeta, summed.dxColumnSums, summed.dxRowDots]) if (s) g.free(s);
      }
    }
  }
});

test('the attention backward stores dq, dk and dv with their column sums: the same gradients, and the sums of them', { skip }, () => {
  const g = requireGpu();
  const geometry = { batch: 2, seqLen: 256, heads: 4, headDim: 64 };
  const config: AttentionConfig = {
    patterns: [{ segmentLength: 128, dilationRate: 1 }, { segmentLength: 256, dilationRate: 2 }],
    causal: true, scale: 1 / 8, headOffsets: 'paper',
  };
  const { batch, seqLen, heads, headDim } = geometry;
  const n = batch * seqLen * heads * headDim, rows = batch * seqLen, cols = heads * headDim;
  const tables = (): Storage => g.fromArray(rng.floats(seqLen * headDim, (r) => r.uniform(-1, 1)));
  const rotation = { qCos: tables(), qSin: tables(), kCos: tables(), kSin: tables() };
  for (const dtype of ['bfloat16', 'float32'] as const) {
    for (const rotated of [false, true]) {
      const label = `${dtype}${rotated ? ' rotated' : ''}`;
      const [q, k, v, dO] = [0, 1, 2, 3].map(() => random(n, dtype));
      const f = g.dilatedAttention(q!, k!, v!, geometry, config);
      const rot = rotated ? { rotation } : {};
      const plain = g.dilatedAttentionBackward(q!, k!, v!, f.o, f.lse, dO!, geometry, config, rot);
      // sums of dk only, then of all three with rowsum(dO * O) given
      const dsum = g.fromArray(runDots(dO!, f.o, n, headDim));
      for (const wanted of [[false, true, false], [true, true, true]]) {
        const summed = g.dilatedAttentionBackward(
          q!, k!, v!, f.o, f.lse, dO!, geometry, config, { ...rot, columnSums: wanted, ...(wanted[0] ? { dsum } : {}) },
        );
        ['dq', 'dk', 'dv'].forEach((name, i) => {
          const got = summed[name as 'dq']!, want = plain[name as 'dq']!;
          if (wanted[0]) {
            // a dsum summed in another order: dP - dsum cancels, which magnifies its last bits in places
            const err = relativeError(g.read(got), g.read(want));
            assert.ok(err < (dtype === 'float32' ? 1e-4 : 1e-2), `${label} ${name} with dsum given: relative error ${err} (seed ${seed})`);
          } else if (name === 'dq') {
            // dq is added up by atomics in any order: within a unit of its last place
            assertClose(g.read(got), g.read(want), `${label} dq: the gradient`, dtype === 'float32' ? 1e-5 : 8e-3, 1e-5);
          } else {
            assert.deepEqual(g.read(got), g.read(want), `${label} ${name}: the gradient`);
          }
          const sums = summed.columnSums?.[i] ?? null;
          assert.equal(sums !== null, wanted[i], `${label} ${name}: sums made only where asked for`);
          if (sums) assertSums(sums, columnSums(got, rows, cols), rows, `${label} ${name} column sums`);
        });
        for (const s of [summed.dq, summed.dk, summed.dv, ...(summed.columnSums ?? [])]) if (s) g.free(s);
      }
      for (const s of [q, k, v, dO, f.o, f.lse, plain.dq, plain.dk, plain.dv, dsum]) g.free(s!);
    }
  }
  for (const s of Object.values(rotation)) g.free(s);
});

test('storeGradient on shapes its vector kernel does not take: the rotation or copy, then the sums', { skip }, () => {
  const g = requireGpu();
  // pairs of a head not in pieces of 8 columns
  const [outer, positions, inner, dim] = [3, 17, 5, 6];
  const n = outer * positions * inner * dim;
  const x = random(n, 'float32');
  const cos = g.fromArray(rng.floats(positions * dim)), sin = g.fromArray(rng.floats(positions * dim));
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const rotated of [false, true]) {
      const y = g.alloc(dtype, n) as CudaStorage, sums = g.alloc('float32', inner * dim) as CudaStorage;
      const h = (s: Storage): CudaStorage['handle'] => (s as CudaStorage).handle;
      g.addon.storeGradient(h(x), rotated ? h(cos) : null, rotated ? h(sin) : null, outer, positions, inner, dim, y.handle, sums.handle);
      const turned = rotated ? g.rotatePairs(x, cos, sin, outer, positions, inner, dim, true) : x;
      const want = g.cast(turned, dtype);
      assert.deepEqual(g.read(y), g.read(want), `${dtype}${rotated ? ' rotated' : ''}: values`);
      assertSums(sums, columnSums(y, outer * positions, inner * dim), outer * positions, `${dtype}${rotated ? ' rotated' : ''}: sums`);
      for (const s of [y, sums, want, ...(rotated ? [turned] : [])]) g.free(s);
    }
  }
  for (const s of [x, cos, sin]) g.free(s);
});

test('a model backward takes every bias gradient from column sums and rowsum(dO * O) from the layer norm, as without them', () => {
  const gpu = getBackend('cuda') as CudaBackend;
  const model = new LongNetDecoder(tiny, { seed: 5, device: 'cuda', activations: 'bfloat16' });
  const ids = Int32Array.from({ length: 2 * 128 }, (_, i) => (i * 37 + 11) % 257);
  const grads = (): Map<string, Float32Array> => {
    for (const p of model.parameters()) { p.grad?.dispose(); p.grad = null; }
    tidy(() => {
      const x = tensor(ids, [2, 128], { dtype: 'int32', device: 'cuda' });
      model.loss(x, x).backward();
    });
    return new Map([...model.namedParameters()].map(([name, p]) => [name, p.grad!.toArray() as Float32Array]));
  };
  const withBias: boolean[] = [];
  const withDsum: boolean[] = [];
  const linearGrads = gpu.linearGrads.bind(gpu);
  const attentionBackward = gpu.dilatedAttentionBackward.bind(gpu);
  gpu.linearGrads = (...args) => { withBias.push(args[5]); return linearGrads(...args); };
  gpu.dilatedAttentionBackward = (...args) => { withDsum.push(!!args[8]?.dsum); return attentionBackward(...args); };
  const take = Object.getOwnPropertyDescriptor(Tensor.prototype, 'takeDerived')!;
  try {
    const fused = grads();
    const biased = withBias.filter((b) => b).length;
    // every linear layer's bias from sums (the head has none), every attention's dsum from its inner layer norm
    assert.equal(biased, 0, `linearGrads summed ${biased} bias gradients of ${withBias.length} layers`);
    assert.deepEqual(withDsum, new Array(tiny.layers).fill(true), 'the attention backward given dsum');
    withBias.length = 0;
    withDsum.length = 0;
    Object.defineProperty(Tensor.prototype, 'takeDerived', { ...take, value: () => null });
    const separate = grads();
    assert.ok(withBias.filter((b) => b).length >= 6 * tiny.layers, 'without the sums, linearGrads sums the biases');
    assert.ok(withDsum.every((d) => !d), 'without the dots, the attention makes its own dsum');
    for (const [name, want] of separate) {
      const got = fused.get(name)!;
      if (real) {
        // dq's atomics add in any order, so two backward passes differ in the last bf16 places
        const err = relativeError(got, want);
        assert.ok(err < 1e-2, `${name}: relative error ${err} against the bias gradients of linearGrads (seed ${seed})`);
      } else if (/bias$/.test(name) && !/norm/i.test(name)) {
        assertClose(got, want, name, 1e-6, 1e-7);
      } else {
        assert.deepEqual(got, want, `${name}: the same as without the sums`);
      }
    }
  } finally {
    Object.defineProperty(Tensor.prototype, 'takeDerived', take);
    gpu.linearGrads = linearGrads;
    gpu.dilatedAttentionBackward = attentionBackward;
    model.dispose();
  }
});
