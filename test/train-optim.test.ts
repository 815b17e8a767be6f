import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { getBackend } from '../src/backend/registry.js';
import { Rng, sumsOfSquares, Tensor } from '../src/tensor/index.js';
import { AdamW, decays, PAPER_ADAMW } from '../src/train/optimizer.js';
import { clipScale, globalGradNorm, globalGradNormWith, gradientSquares } from '../src/train/clip.js';
import { checkSchedule, defaultWarmup, learningRate } from '../src/train/schedule.js';
import { InputError } from '../src/errors.js';

const f64 = (data: number[], shape: number[], requiresGrad = true): Tensor =>
  Tensor.fromArray(Float64Array.from(data), shape, { requiresGrad });

/** AdamW by hand, one scalar, the textbook formulas (Loshchilov and Hutter, with bias correction). */
function adamwByHand(p: number, grads: number[], lrs: number[], wd: number): number {
  const { beta1, beta2, eps } = PAPER_ADAMW;
  let m = 0;
  let v = 0;
  grads.forEach((g, i) => {
    const t = i + 1;
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    const mHat = m / (1 - beta1 ** t);
    const vHat = v / (1 - beta2 ** t);
    p = p - lrs[i]! * wd * p - lrs[i]! * mHat / (Math.sqrt(vHat) + eps);
  });
  return p;
}

test('AdamW matches a hand computation over three steps, decaying matrices but not biases or norms', () => {
  const weight = f64([1, -2, 0.5, 3], [2, 2]);
  const bias = f64([0.25, -1], [2]);
  const params = new Map([['layer.weight', weight], ['layer.bias', bias]]);
  const opt = new AdamW(params, PAPER_ADAMW);
  const grads = [[0.5, -0.1, 2, 0], [0.3, 0.2, -1, 1e-3], [-0.4, 0.05, 0.5, 2]];
  const biasGrads = [[1, -3], [0.5, 0.5], [-2, 0.1]];
  const lrs = [0.1, 0.05, 0.02];
  for (let s = 0; s < 3; s++) {
    weight.grad = f64(grads[s]!, [2, 2], false);
    bias.grad = f64(biasGrads[s]!, [2], false);
    opt.update(lrs[s]!);
    opt.zeroGrad();
  }
  assert.equal(opt.step, 3);
  const w0 = [1, -2, 0.5, 3];
  const wGot = weight.toArray();
  for (let i = 0; i < 4; i++) {
    const want = adamwByHand(w0[i]!, grads.map((g) => g[i]!), lrs, 0.01);
    assert.ok(Math.abs(wGot[i]! - want) < 1e-14, `weight[${i}]: ${wGot[i]} vs ${want}`);
  }
  const b0 = [0.25, -1];
  const bGot = bias.toArray();
  for (let i = 0; i < 2; i++) {
    const want = adamwByHand(b0[i]!, biasGrads.map((g) => g[i]!), lrs, 0);
    assert.ok(Math.abs(bGot[i]! - want) < 1e-14, `bias[${i}]: ${bGot[i]} vs ${want}`);
  }
  assert.equal(decays('x.weight', weight), true);
  assert.equal(decays('ln.gain', bias), false);
});

test('AdamW state survives a save and restore exactly, and bad state is refused', () => {
  const w = f64([1, 2, 3], [3, 1]);
  const opt = new AdamW(new Map([['w', w]]));
  w.grad = f64([0.1, 0.2, 0.3], [3, 1], false);
  opt.update(0.01);
  const saved = opt.stateArrays();
  const other = new AdamW(new Map([['w', f64([1, 2, 3], [3, 1])]]));
  other.loadState(saved, opt.step, 'opt.safetensors');
  assert.deepEqual([...other.moments.get('w')!.m.toArray()], [...opt.moments.get('w')!.m.toArray()]);
  assert.deepEqual([...other.moments.get('w')!.v.toArray()], [...opt.moments.get('w')!.v.toArray()]);
  assert.equal(other.step, 1);
  const missing = new Map([...saved].filter(([k]) => k !== 'w.v'));
  assert.throws(() => other.loadState(missing, 1, 'opt.safetensors'), (e: Error) => e instanceof InputError && /missing optimizer state "w.v"/.test(e.message));
  const wrongShape = new Map([...saved].map(([k, v]) => [k, { data: v.data, shape: [1, 3] }] as const));
  assert.throws(() => other.loadState(wrongShape, 1, 'opt.safetensors'), /has shape \[1, 3\]/);
  const extra = new Map([...saved, ['ghost.m', { data: new Float64Array(1), shape: [1] }]]);
  assert.throws(() => other.loadState(extra, 1, 'opt.safetensors'), /belongs to no parameter/);
});

test('the schedule warms up linearly, then decays linearly to the floor at the last step', () => {
  const o = { lr: 6e-4, totalSteps: 100, warmup: 10 };
  const near = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-18, `${a} vs ${b}`);
  near(learningRate(o, 1), 6e-5);
  near(learningRate(o, 5), 3e-4);
  assert.equal(learningRate(o, 10), 6e-4);
  assert.ok(Math.abs(learningRate(o, 55) - 3e-4) < 1e-18);
  assert.equal(learningRate(o, 100), 0);
  const floor = { ...o, endLr: 6e-5 };
  assert.ok(Math.abs(learningRate(floor, 55) - (6e-5 + 0.5 * (6e-4 - 6e-5))) < 1e-18);
  assert.equal(learningRate(floor, 100), 6e-5);
  const squared = { ...o, power: 2 };
  assert.ok(Math.abs(learningRate(squared, 55) - 6e-4 * 0.25) < 1e-18);
  for (let s = 2; s <= 100; s++) {
    if (s > 10) assert.ok(learningRate(o, s) < learningRate(o, s - 1));
  }
  // the paper's 750 warm-up steps, shortened to a tenth of a short run
  assert.equal(defaultWarmup(300_000), 750);
  assert.equal(defaultWarmup(600), 60);
  assert.equal(defaultWarmup(5), 1);
  assert.throws(() => checkSchedule({ lr: 1e-3, totalSteps: 10, warmup: 11 }), /warmup \(11\) is longer than the run/);
  assert.throws(() => checkSchedule({ lr: -1, totalSteps: 10, warmup: 1 }), InputError);
});

test('gradient clipping scales all gradients together to the global norm limit, never up', () => {
  const a = f64([3, 0], [2]);
  const b = f64([0, 4], [1, 2]);
  a.grad = f64([3, 0], [2], false);
  b.grad = f64([0, 4], [1, 2], false);
  const norm = globalGradNorm([a, b]);
  assert.equal(norm, 5);
  // the factor the trainer hands to AdamW (gradScale): the scaled gradients have the limit's norm
  const scale = clipScale(norm, 2);
  assert.equal(scale, 2 / (5 + 1e-6));
  assert.ok(Math.abs(norm * scale - 2) < 1e-6);
  // under the limit, or with a limit of 0 (no clipping): untouched; a parameter without a gradient counts nothing
  a.grad = f64([0.3, 0.4], [2], false);
  b.grad = null;
  assert.equal(globalGradNorm([a, b]), 0.5);
  assert.equal(clipScale(0.5, 2), 1);
  assert.equal(clipScale(5, 0), 1);
});

test('the gradient norm and scalars read together give what separate reads give', () => {
  const a = f64([3, 0], [2]);
  const b = f64([0, 4], [1, 2]);
  a.grad = f64([3, 0], [2], false);
  b.grad = f64([0, 4], [1, 2], false);
  const losses = [f64([2.5], [1], false), f64([0.125], [], false)];
  assert.deepEqual(globalGradNormWith([a, b], losses), { norm: 5, values: [2.5, 0.125] });
  // another dtype than the gradients' is read on its own
  const single = Tensor.fromArray(Float32Array.of(0.1), [1]);
  assert.deepEqual(globalGradNormWith([a, b], [losses[0]!, single]), { norm: 5, values: [2.5, single.item()] });
  // no gradient: norm 0, the values still read
  assert.deepEqual(globalGradNormWith([f64([1], [1])], losses), { norm: 0, values: [2.5, 0.125] });
  assert.deepEqual(globalGradNormWith([a, b], []), { norm: 5, values: [] });
});

test('sumsOfSquares gives one sum of squares per tensor, and the global norm is their sum', () => {
  const tensors = [f64([3, 0], [2], false), f64([1, -2, 2, 0, 0, 0], [2, 3], false), f64([], [0], false)];
  assert.deepEqual([...sumsOfSquares(tensors).toArray()], [9, 9, 0]);
  assert.throws(() => sumsOfSquares([]), /no tensors/);
  assert.throws(() => sumsOfSquares([f64([1], [1], false), Tensor.fromArray(new Float32Array(1), [1])]), /different dtypes/);
});

test('AdamW with gradScale equals AdamW on gradients scaled beforehand (how the trainer clips)', () => {
  const make = () => f64([1, -2, 0.5, 3], [2, 2]);
  const scaledFirst = make();
  const scaledInside = make();
  const a = new AdamW(new Map([['w', scaledFirst]]));
  const b = new AdamW(new Map([['w', scaledInside]]));
  for (const [grad, scale] of [[[0.5, -0.1, 2, 0], 0.25], [[0.3, 0.2, -1, 1e-3], 1], [[-4, 5, 0.5, 2], 0.125]] as const) {
    scaledFirst.grad = f64(grad.map((g) => g * scale), [2, 2], false);
    a.update(0.01);
    scaledInside.grad = f64([...grad], [2, 2], false);
    b.update(0.01, scale);
  }
  assert.deepEqual([...scaledInside.toArray()], [...scaledFirst.toArray()]);
  assert.deepEqual([...b.moments.get('w')!.v.toArray()], [...a.moments.get('w')!.v.toArray()]);
});

test('adamwMulti on the CPU equals adamw tensor by tensor, bit for bit', () => {
  const cpu = new CpuBackend();
  const rng = new Rng(7);
  const sizes = [5, 1, 0, 33];
  const decaysOf = [0.01, 0, 0.1, 0.01];
  for (const dtype of ['float32', 'float64'] as const) {
    const array = (n: number, f: () => number): Float32Array | Float64Array => {
      const values = Array.from({ length: n }, f);
      return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
    };
    const state = sizes.map((n) => ({ p: array(n, () => rng.normal()), m: array(n, () => 0), v: array(n, () => 0) }));
    const [one, many] = [0, 1].map(() => state.map(({ p, m, v }) => ({ param: cpu.fromArray(p), m: cpu.fromArray(m), v: cpu.fromArray(v) })));
    for (let step = 1; step <= 3; step++) {
      const grads = sizes.map((n) => cpu.fromArray(array(n, () => rng.normal())));
      const hyper = { lr: 0.02, beta1: 0.9, beta2: 0.98, eps: 1e-8, step, gradScale: step === 2 ? 0.5 : 1 };
      one!.forEach((t, i) => cpu.adamw(t.param, grads[i]!, t.m, t.v, { ...hyper, weightDecay: decaysOf[i]! }));
      cpu.adamwMulti(many!.map((t, i) => ({ ...t, grad: grads[i]!, weightDecay: decaysOf[i]! })), hyper);
    }
    one!.forEach((t, i) => {
      for (const which of ['param', 'm', 'v'] as const) {
        assert.deepEqual(cpu.read(many![i]![which]), cpu.read(t[which]), `${dtype} tensor ${i} ${which}`);
      }
    });
  }
});

test('AdamW updates all parameters in one adamwMulti call where the backend has it, as adamw one by one', () => {
  const backend = getBackend('cpu') as CpuBackend;
  const rng = new Rng(3);
  const model = (): Map<string, Tensor> => new Map([
    ['a.weight', Tensor.fromArray(Float32Array.from({ length: 12 }, () => rng.normal()), [3, 4], { requiresGrad: true })],
    ['a.bias', Tensor.fromArray(Float32Array.from({ length: 4 }, () => rng.normal()), [4], { requiresGrad: true })],
    ['unused.weight', Tensor.fromArray(Float32Array.from({ length: 4 }, () => rng.normal()), [2, 2], { requiresGrad: true })],
  ]);
  const run = (params: Map<string, Tensor>, grads: Float32Array[][]): { params: Map<string, Tensor>; opt: AdamW } => {
    const opt = new AdamW(params);
    for (const [k, g] of grads.entries()) {
      params.get('a.weight')!.grad = Tensor.fromArray(g[0]!, [3, 4]);
      params.get('a.bias')!.grad = Tensor.fromArray(g[1]!, [4]);
      opt.update(0.01, k === 1 ? 0.5 : 1);
      opt.zeroGrad();
    }
    return { params, opt };
  };
  const grads = [0, 1, 2].map(() => [12, 4].map((n) => Float32Array.from({ length: n }, () => rng.normal())));
  const start = model();
  const copy = (): Map<string, Tensor> => new Map([...start].map(([k, p]) => [k, Tensor.fromArray(p.toArray().slice(), p.shape, { requiresGrad: true })]));
  /** Runs fn with some of the backend's methods replaced. */
  const patched = <R>(methods: Partial<Record<'adamw' | 'adamwMulti', unknown>>, fn: () => R): R => {
    Object.assign(backend, methods);
    try {
      return fn();
    } finally {
      for (const key of Object.keys(methods)) delete (backend as unknown as Record<string, unknown>)[key];
    }
  };
  // counted: one multi-tensor call an update, no per-tensor call
  const calls = { multi: 0, single: 0 };
  const together = patched({
    adamwMulti: (...args: Parameters<CpuBackend['adamwMulti']>) => { calls.multi++; CpuBackend.prototype.adamwMulti.apply(backend, args); },
    adamw: (...args: Parameters<CpuBackend['adamw']>) => { calls.single++; CpuBackend.prototype.adamw.apply(backend, args); },
  }, () => run(copy(), grads));
  assert.deepEqual(calls, { multi: 3, single: 0 });
  // without adamwMulti the optimizer calls adamw per parameter with a gradient
  const apart = patched({ adamwMulti: undefined }, () => run(copy(), grads));
  assert.equal(typeof backend.adamwMulti, 'function');
  for (const name of start.keys()) {
    assert.deepEqual(together.params.get(name)!.toArray(), apart.params.get(name)!.toArray(), name);
    for (const which of ['m', 'v'] as const) {
      assert.deepEqual(together.opt.moments.get(name)![which].toArray(), apart.opt.moments.get(name)![which].toArray(), `${name}.${which}`);
    }
  }
  assert.deepEqual(together.params.get('unused.weight')!.toArray(), start.get('unused.weight')!.toArray(), 'a parameter without a gradient is left alone');
});

test('AdamW with the clip taken where it runs equals the host clip, and a norm that is not finite changes nothing', () => {
  const make = () => f64([1, -2, 0.5, 3], [2, 2]);
  const onHost = make();
  const inPlace = make();
  const a = new AdamW(new Map([['w', onHost]]));
  const b = new AdamW(new Map([['w', inPlace]]));
  assert.ok(b.clipsOnDevice, 'the CPU backend updates many tensors in one call');
  // a norm over the limit (clipped), one under it
  for (const grad of [[3, -4, 12, 0], [0.1, 0.2, -0.1, 0]]) {
    const norm = Math.hypot(...grad);
    onHost.grad = f64(grad, [2, 2], false);
    a.update(0.01, clipScale(norm, 2));
    inPlace.grad = f64(grad, [2, 2], false);
    b.update(0.01, { squares: f64([norm * norm], [1], false), maxNorm: 2 });
  }
  assert.deepEqual([...inPlace.toArray()], [...onHost.toArray()]);
  assert.deepEqual([...b.moments.get('w')!.m.toArray()], [...a.moments.get('w')!.m.toArray()]);
  // a diverged step: nothing moves, and refuseUpdate takes the count back
  const before = [...inPlace.toArray()];
  const moments = [...b.moments.get('w')!.v.toArray()];
  for (const bad of [NaN, Infinity]) {
    inPlace.grad = f64([1, 1, 1, 1], [2, 2], false);
    b.update(0.01, { squares: f64([bad], [1], false), maxNorm: 2 });
    b.refuseUpdate();
    assert.deepEqual([...inPlace.toArray()], before, `sum of squares ${bad}: parameters unchanged`);
    assert.deepEqual([...b.moments.get('w')!.v.toArray()], moments, `sum of squares ${bad}: moments unchanged`);
    assert.equal(b.step, 2);
  }
});

test('a loss that is not finite makes the sum of squares the clip is taken from NaN, so that the update changes nothing', () => {
  const w = f64([1, 2], [2]);
  w.grad = f64([3, 4], [2], false);
  for (const [loss, finite] of [[2.5, true], [NaN, false], [Infinity, false]] as const) {
    const r = gradientSquares([w], [f64([loss], [1], false)])!;
    assert.equal(r.squares.item(), 25);
    assert.equal(Number.isFinite(r.guard.item()), finite, `loss ${loss}`);
  }
  assert.equal(gradientSquares([f64([1], [1])], []), null, 'no gradients: nothing to clip');
});
