// The CUDA backend behind the tensor API: a small attention block trained for one step on each device
// gives the same loss and gradients (products in fp32 mode, so that only rounding differs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../src/backend/cuda/index.js';
import * as T from '../src/tensor/index.js';
import { dilatedAttention } from '../src/attention/dilated.js';
import type { Device } from '../src/backend/backend.js';
import { relativeError, requireGpu, rng, seed, skip } from './cuda-support.js';

const B = 2, N = 96, H = 4, D = 16, C = H * D, V = 50;

interface Params { emb: Float32Array; wq: Float32Array; wk: Float32Array; wv: Float32Array; wo: Float32Array; gamma: Float32Array }

function step(device: Device, p: Params, tokens: Int32Array, targets: Int32Array) {
  return T.tidy(() => {
    const leaf = (data: Float32Array, shape: number[]) => T.tensor(data, shape, { device, requiresGrad: true });
    const emb = leaf(p.emb, [V, C]);
    const wq = leaf(p.wq, [C, C]), wk = leaf(p.wk, [C, C]), wv = leaf(p.wv, [C, C]), wo = leaf(p.wo, [C, C]);
    const gamma = leaf(p.gamma, [C]);
    const x = T.embedding(emb, T.tensor(tokens, [B, N], { device }));
    const h = T.layerNorm(x, gamma, null);
    const split = (w: T.Tensor) => T.reshape(T.matmul(h, w), [B, N, H, D]);
    const { output } = dilatedAttention(split(wq), split(wk), split(wv), {
      segmentLengths: [16, 32, 96], dilationRates: [1, 2, 4], causal: true,
    });
    const y = T.add(x, T.matmul(T.reshape(output, [B, N, C]), wo));
    const logits = T.matmul(y, emb, { transB: true });
    const loss = T.crossEntropy(logits, T.tensor(targets, [B, N], { device }));
    loss.backward();
    const grads = [emb, wq, wk, wv, wo, gamma].map((t) => t.grad!.toArray());
    return { loss: loss.item(), grads };
  });
}

test('one training step of an attention block gives the same loss and gradients on CUDA and CPU', { skip }, () => {
  const g = requireGpu();
  const previous = g.matmulPrecision();
  g.setMatmulPrecision('fp32');
  try {
    const w = () => rng.floats(C * C, (r) => r.normal() / Math.sqrt(C));
    const params: Params = { emb: rng.floats(V * C), wq: w(), wk: w(), wv: w(), wo: w(), gamma: rng.floats(C, (r) => 1 + 0.1 * r.normal()) };
    const tokens = Int32Array.from({ length: B * N }, () => rng.int(V));
    const targets = Int32Array.from({ length: B * N }, () => rng.int(V));
    const onCpu = step('cpu', params, tokens, targets);
    const onGpu = step('cuda', params, tokens, targets);
    assert.ok(Math.abs(onGpu.loss - onCpu.loss) <= 1e-5 * Math.abs(onCpu.loss), `loss ${onGpu.loss} vs ${onCpu.loss} (seed ${seed})`);
    const names = ['emb', 'wq', 'wk', 'wv', 'wo', 'gamma'];
    onCpu.grads.forEach((want, i) => {
      const err = relativeError(onGpu.grads[i]!, want);
      assert.ok(err < 1e-4, `d${names[i]}: relative error ${err.toExponential(2)} (seed ${seed})`);
    });
  } finally {
    g.setMatmulPrecision(previous);
  }
});

test('tensors move between devices and are freed deterministically', { skip }, () => {
  const g = requireGpu();
  const before = g.memoryStats().inUse;
  T.tidy(() => {
    const a = T.randn([64, 64], { device: 'cuda', seed: 1 });
    const b = T.toDevice(a, 'cpu');
    assert.deepEqual(T.toDevice(b, 'cuda').toArray(), a.toArray());
  });
  assert.equal(g.memoryStats().inUse, before, 'tidy left GPU memory allocated');
});
