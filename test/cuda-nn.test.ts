// Softmax, layer norm, cross-entropy, embeddings and AdamW against the CPU backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Storage } from '../src/backend/backend.js';
import { decodeBf16, encodeBf16 } from '../src/io/halfFloat.js';
import { assertClose, both, cpu, poison, poisonBf16, readGpu, requireGpu, rng, skip } from './cuda-support.js';

// row shapes that take the warp-per-row path (cols <= 1024) and the block-per-row path
const ROWS: readonly [number, number][] = [[1, 1], [37, 10], [300, 64], [9, 1024], [5, 1025], [3, 5000], [2000, 33]];

test('softmax and log-softmax, forward and backward', { skip }, () => {
  const g = requireGpu();
  for (const [rows, cols] of ROWS) {
    const data = rng.floats(rows * cols, (r) => r.normal() * 4);
    if (cols > 3) data[2] = Number.NEGATIVE_INFINITY; // a masked entry
    const x = both(data);
    const dy = both(rng.floats(rows * cols));
    for (const log of [false, true]) {
      const label = `${log ? 'log-' : ''}softmax ${rows}x${cols}`;
      poison([rows * cols]);
      const yg = g.softmax(x.g, rows, cols, log);
      const yc = cpu.softmax(x.c, rows, cols, log);
      // log-softmax is x - lse: its absolute error is a few ulps of lse (|lse| up to ~16 here), whatever the value
      assertClose(readGpu(yg), cpu.read(yc), label, 1e-5, log ? 4e-6 : 1e-6);
      poison([rows * cols]);
      assertClose(readGpu(g.softmaxBackward(yg, dy.g, rows, cols, log)), cpu.read(cpu.softmaxBackward(yc, dy.c, rows, cols, log)), `${label} backward`, 1e-4, 1e-5);
    }
  }
});

test('a row of -Infinity gives NaN, as on the CPU', { skip }, () => {
  const g = requireGpu();
  const x = both(new Float32Array([Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY, 1, 2]));
  for (const log of [false, true]) assertClose(readGpu(g.softmax(x.g, 2, 2, log)), cpu.read(cpu.softmax(x.c, 2, 2, log)), `log=${log}`);
});

test('layer norm, forward and backward, with and without affine parameters', { skip }, () => {
  const g = requireGpu();
  // rows held in registers (widths of whole 16-byte pieces up to 8 KB: groups of 4 to 32 lanes, pieces a lane
  // partly used, column sums beside the row or in their own kernel) and the general kernels (other widths)
  for (const [rows, cols] of [[1, 8], [64, 768], [7, 2000], [5000, 32], [3000, 1000], [3, 1], [9, 2050], [5, 4096]] as const) {
    const x = both(rng.floats(rows * cols, (r) => r.normal() * 3 + 1));
    const gamma = both(rng.floats(cols));
    const beta = both(rng.floats(cols));
    const dy = both(rng.floats(rows * cols));
    for (const affine of [false, true]) {
      const label = `layerNorm ${rows}x${cols}${affine ? ' affine' : ''}`;
      poison([rows * cols, rows]);
      const rg = g.layerNorm(x.g, affine ? gamma.g : null, affine ? beta.g : null, rows, cols, 1e-5);
      const rc = cpu.layerNorm(x.c, affine ? gamma.c : null, affine ? beta.c : null, rows, cols, 1e-5);
      assertClose(readGpu(rg.y), cpu.read(rc.y), `${label} y`, 1e-4, 1e-5);
      assertClose(readGpu(rg.mean), cpu.read(rc.mean), `${label} mean`, 1e-5, 1e-6);
      assertClose(readGpu(rg.rstd), cpu.read(rc.rstd), `${label} rstd`, 1e-4, 1e-6);
      poison([rows * cols, cols]);
      const bg = g.layerNormBackward(dy.g, x.g, affine ? gamma.g : null, rg.mean, rg.rstd, rows, cols, affine);
      const bc = cpu.layerNormBackward(dy.c, x.c, affine ? gamma.c : null, rc.mean, rc.rstd, rows, cols, affine);
      assertClose(readGpu(bg.dx), cpu.read(bc.dx), `${label} dx`, 1e-3, 1e-4);
      assert.equal(bg.dGamma === null, bc.dGamma === null);
      assert.equal(bg.dBeta === null, bc.dBeta === null);
      // column sums over many rows: float32 partials against the CPU's float64
      if (bg.dGamma && bc.dGamma) assertClose(readGpu(bg.dGamma), cpu.read(bc.dGamma), `${label} dGamma`, 1e-4, 1e-5 * Math.sqrt(rows));
      if (bg.dBeta && bc.dBeta) assertClose(readGpu(bg.dBeta), cpu.read(bc.dBeta), `${label} dBeta`, 1e-4, 1e-5 * Math.sqrt(rows));
    }
  }
});

/** bf16-representable values on the CPU (float32) and the same values in a bfloat16 GPU storage. */
function bf16Input(n: number, f?: (r: typeof rng) => number): { c: Storage; g: Storage } {
  const g = requireGpu();
  const values = new Float32Array(n);
  decodeBf16(encodeBf16(rng.floats(n, f)), values);
  const staged = g.fromArray(values);
  const out = { c: cpu.fromArray(values), g: g.cast(staged, 'bfloat16') };
  g.free(staged);
  return out;
}

test('bf16 layer norm, forward and backward, against the CPU on the same values', { skip }, () => {
  const g = requireGpu();
  // in registers: 768 (several rows a group over the grid, with column sums), 1000 (pieces a lane partly
  // used), 4096 (column sums in their own kernel), 16 (groups of 4 lanes); general: 770 (not whole pieces)
  for (const [rows, cols] of [[5000, 768], [300, 1000], [40, 4096], [700, 16], [300, 770], [2, 9000]] as const) {
    const x = bf16Input(rows * cols, (r) => r.normal() * 3 + 1);
    const dy = bf16Input(rows * cols);
    const gammaV = rng.floats(cols, (r) => 1 + 0.2 * r.normal()), betaV = rng.floats(cols);
    const gamma = { c: cpu.fromArray(gammaV), g: g.fromArray(gammaV) }, beta = { c: cpu.fromArray(betaV), g: g.fromArray(betaV) };
    for (const affine of [false, true]) {
      const label = `bf16 layerNorm ${rows}x${cols}${affine ? ' affine' : ''}`;
      poisonBf16([rows * cols]);
      poison([rows, cols]);
      const rg = g.layerNorm(x.g, affine ? gamma.g : null, affine ? beta.g : null, rows, cols, 1e-5);
      const rc = cpu.layerNorm(x.c, affine ? gamma.c : null, affine ? beta.c : null, rows, cols, 1e-5);
      assert.equal(rg.y.dtype, 'bfloat16');
      // one rounding to bf16 (at most 2^-9 relative) apart
      assertClose(readGpu(rg.y), cpu.read(rc.y), `${label} y`, 2 ** -8, 1e-5);
      assertClose(readGpu(rg.mean), cpu.read(rc.mean), `${label} mean`, 1e-5, 1e-6);
      assertClose(readGpu(rg.rstd), cpu.read(rc.rstd), `${label} rstd`, 1e-4, 1e-6);
      poisonBf16([rows * cols]);
      const bg = g.layerNormBackward(dy.g, x.g, affine ? gamma.g : null, rg.mean, rg.rstd, rows, cols, affine);
      const bc = cpu.layerNormBackward(dy.c, x.c, affine ? gamma.c : null, rc.mean, rc.rstd, rows, cols, affine);
      assertClose(readGpu(bg.dx), cpu.read(bc.dx), `${label} dx`, 2 ** -8, 1e-4);
      if (bg.dGamma && bc.dGamma) assertClose(readGpu(bg.dGamma), cpu.read(bc.dGamma), `${label} dGamma`, 1e-4, 1e-5 * Math.sqrt(rows));
      if (bg.dBeta && bc.dBeta) assertClose(readGpu(bg.dBeta), cpu.read(bc.dBeta), `${label} dBeta`, 1e-4, 1e-5 * Math.sqrt(rows));
      assert.equal(bg.dGamma === null, !affine);
      for (const s of [rg.y, rg.mean, rg.rstd, bg.dx, bg.dGamma, bg.dBeta]) if (s) g.free(s);
    }
  }
});

test('layer norm of gelu(x), and a backward that adds another gradient of x, in float32 and bf16', { skip }, () => {
  const g = requireGpu();
  // bf16: rows in registers by warps (768) and by groups of 128 threads (3072, gelu(x) in float registers),
  // general kernels (770, 9000); float32: registers (768), general (2050, 4096)
  const cases = [
    ['bfloat16', 2000, 768], ['bfloat16', 300, 3072], ['bfloat16', 300, 770], ['bfloat16', 2, 9000],
    ['float32', 64, 768], ['float32', 9, 2050], ['float32', 5, 4096],
  ] as const;
  for (const [dtype, rows, cols] of cases) {
    const bf16 = dtype === 'bfloat16';
    const make = (f?: (r: typeof rng) => number) => (bf16 ? bf16Input(rows * cols, f) : both(rng.floats(rows * cols, f)));
    const x = make((r) => r.normal() * 2);
    const dy = make();
    const addend = make();
    const gammaV = rng.floats(cols, (r) => 1 + 0.2 * r.normal()), betaV = rng.floats(cols);
    const gamma = { c: cpu.fromArray(gammaV), g: g.fromArray(gammaV) }, beta = { c: cpu.fromArray(betaV), g: g.fromArray(betaV) };
    for (const geluInput of [false, true]) {
      const label = `${dtype} layerNorm ${rows}x${cols}${geluInput ? ' of gelu(x)' : ''}`;
      const [rel, abs] = bf16 ? [2 ** -8, 1e-4] : [1e-4, 1e-5];
      if (bf16) poisonBf16([rows * cols]);
      poison([rows * cols, rows]);
      const rg = g.layerNorm(x.g, gamma.g, beta.g, rows, cols, 1e-5, { geluInput });
      const rc = cpu.layerNorm(x.c, gamma.c, beta.c, rows, cols, 1e-5, { geluInput });
      assertClose(readGpu(rg.y), cpu.read(rc.y), `${label} y`, rel, abs);
      assertClose(readGpu(rg.mean), cpu.read(rc.mean), `${label} mean`, 1e-5, 1e-6);
      assertClose(readGpu(rg.rstd), cpu.read(rc.rstd), `${label} rstd`, 1e-4, 1e-6);
      for (const withAddend of [false, true]) {
        const options = { geluInput, addend: withAddend ? addend.g : null };
        if (bf16) poisonBf16([rows * cols]);
        poison([rows * cols, cols]);
        const bg = g.layerNormBackward(dy.g, x.g, gamma.g, rg.mean, rg.rstd, rows, cols, true, options);
        const bc = cpu.layerNormBackward(dy.c, x.c, gamma.c, rc.mean, rc.rstd, rows, cols, true, { ...options, addend: withAddend ? addend.c : null });
        const what = `${label}${withAddend ? ' + addend' : ''}`;
        assertClose(readGpu(bg.dx), cpu.read(bc.dx), `${what} dx`, bf16 ? 2 ** -8 : 1e-3, bf16 ? 1e-3 : 1e-4);
        assertClose(readGpu(bg.dGamma!), cpu.read(bc.dGamma!), `${what} dGamma`, 1e-4, 1e-5 * Math.sqrt(rows));
        assertClose(readGpu(bg.dBeta!), cpu.read(bc.dBeta!), `${what} dBeta`, 1e-4, 1e-5 * Math.sqrt(rows));
        for (const t of [bg.dx, bg.dGamma, bg.dBeta]) if (t) g.free(t);
      }
      for (const t of [rg.y, rg.mean, rg.rstd]) g.free(t);
    }
  }
  // the addend must be x's dtype and size
  const x = both(rng.floats(8 * 16));
  const r = g.layerNorm(x.g, null, null, 8, 16, 1e-5);
  const wrong = g.alloc('float32', 8 * 15);
  assert.throws(() => g.layerNormBackward(x.g, x.g, null, r.mean, r.rstd, 8, 16, false, { addend: wrong }), /layerNormBackward addend/);
});

test('cross-entropy, forward and backward, with ignored rows', { skip }, () => {
  const g = requireGpu();
  for (const [rows, cols] of [[1, 2], [50, 50], [16, 5000], [300, 1030]] as const) {
    const logits = both(rng.floats(rows * cols, (r) => r.normal() * 3));
    const t = Int32Array.from({ length: rows }, () => rng.int(cols));
    t[0] = -100;
    const targets = both(t);
    const dLoss = both(rng.floats(rows));
    poison([rows]);
    const rg = g.crossEntropy(logits.g, targets.g, rows, cols, -100, cols);
    const rc = cpu.crossEntropy(logits.c, targets.c, rows, cols, -100, cols);
    assertClose(readGpu(rg.loss), cpu.read(rc.loss), `loss ${rows}x${cols}`, 1e-5, 1e-5);
    assertClose(readGpu(rg.lse), cpu.read(rc.lse), `lse ${rows}x${cols}`, 1e-5, 1e-5);
    poison([rows * cols]);
    const dg = g.crossEntropyBackward(logits.g, targets.g, rg.lse, dLoss.g, rows, cols, -100, cols);
    const dc = cpu.crossEntropyBackward(logits.c, targets.c, rc.lse, dLoss.c, rows, cols, -100, cols);
    assertClose(readGpu(dg), cpu.read(dc), `dlogits ${rows}x${cols}`, 1e-4, 1e-6);
  }
});

/**
 * crossEntropyWithGrad against the CPU over every kernel path: 16-byte pieces with the row in shared memory
 * (float32 5000, bf16 1032 with padding columns and a tail of classes, the cl100k head's 100288 columns),
 * 16-byte pieces of rows wider than shared memory (bf16 120000, float32 60000), and element by element
 * (float32 1030, bf16 770); more rows than multiprocessors.
 */
function crossEntropyWithGradCases(kernel: string): void {
  const g = requireGpu();
  const cases = [
    [16, 5000, 5000, false], [50, 1030, 1030, false], [300, 1032, 1030, true], [40, 770, 770, true],
    [140, 100288, 100277, true], [3, 120000, 119999, true], [3, 60000, 60000, false],
  ] as const;
  for (const [rows, cols, classes, bf16] of cases) {
    const n = rows * cols;
    const logits = bf16 ? bf16Input(n, (r) => r.normal() * 3) : both(rng.floats(n, (r) => r.normal() * 3));
    const t = Int32Array.from({ length: rows }, () => rng.int(classes));
    t[0] = -100;
    t[rows - 1] = classes - 1;
    const targets = both(t);
    for (const weight of [null, 0.25]) {
      const w = weight === null ? null : both(new Float32Array([weight]));
      const label = `${kernel}: ${bf16 ? 'bf16 ' : ''}${rows}x${cols} (classes ${classes}), weight ${weight}`;
      poison([rows]);
      if (bf16) poisonBf16([n]);
      else poison([n]);
      const rg = g.crossEntropyWithGrad(logits.g, targets.g, rows, cols, -100, classes, w?.g ?? null);
      const rc = cpu.crossEntropy(logits.c, targets.c, rows, cols, -100, classes);
      assertClose(readGpu(rg.loss), cpu.read(rc.loss), `${label} loss`, 1e-5, 1e-5);
      assertClose(readGpu(rg.lse), cpu.read(rc.lse), `${label} lse`, 1e-5, 1e-5);
      const dLoss = cpu.fromArray(new Float32Array(rows).fill(weight ?? 1));
      const dc = cpu.crossEntropyBackward(logits.c, targets.c, rc.lse, dLoss, rows, cols, -100, classes);
      // bf16: one rounding of the gradient
      assertClose(readGpu(rg.grad), cpu.read(dc), `${label} gradient`, bf16 ? 2 ** -8 : 1e-4, 1e-6);
      for (const st of [rg.loss, rg.lse, rg.grad]) g.free(st);
    }
  }
}

test('cross-entropy with the gradient in the same kernel: loss, lse and gradient as the CPU for a weight on every row', { skip }, () => {
  crossEntropyWithGradCases('default kernels');
});

test('cross-entropy with the gradient: the kernel of GPUs before Hopper (LONGNET_CROSS_ENTROPY=smem) also matches the CPU', { skip }, () => {
  const before = process.env.LONGNET_CROSS_ENTROPY;
  process.env.LONGNET_CROSS_ENTROPY = 'smem';
  try {
    crossEntropyWithGradCases('smem kernel');
  } finally {
    if (before === undefined) delete process.env.LONGNET_CROSS_ENTROPY;
    else process.env.LONGNET_CROSS_ENTROPY = before;
  }
});

/** Asserts that `wait` throws the RangeError `message` (a queued index check failing at a wait). */
function assertRangeError(wait: () => unknown, message: string): void {
  assert.throws(wait, (e: unknown) => {
    assert.ok(e instanceof RangeError, String(e));
    assert.equal(e.message, message);
    return true;
  });
}

test('a target outside the vocabulary is a RangeError naming it, at the next wait', { skip }, () => {
  const g = requireGpu();
  const logits = g.fromArray(rng.floats(3 * 4));
  const targets = g.fromArray(new Int32Array([1, 9, -3]));
  // the check is queued on the device: the call returns, and the read of its loss throws
  const { loss } = g.crossEntropy(logits, targets, 3, 4, -100, 4);
  assertRangeError(() => g.read(loss), 'crossEntropy: target 9 at row 1 is outside [0, 4)');
  // reported once; synchronize reports it too
  g.crossEntropy(logits, targets, 3, 4, -100, 4);
  assertRangeError(() => g.synchronize(), 'crossEntropy: target 9 at row 1 is outside [0, 4)');
  g.synchronize();
});

test('cross-entropy over the first `classes` columns (a padded vocabulary), forward and backward', { skip }, () => {
  const g = requireGpu();
  // the padded widths of the byte and cl100k vocabularies, and both row paths (warp and block per row)
  for (const [rows, cols, classes] of [[40, 320, 257], [6, 100288, 100277], [9, 1088, 1025], [3, 64, 1]] as const) {
    // large padding logits: any that leaked into the softmax would change the loss
    const logits = both(rng.floats(rows * cols, (r) => r.normal() * 3 + 20 * Number(r.next() < 0.5)));
    const t = Int32Array.from({ length: rows }, () => rng.int(classes));
    t[rows - 1] = classes - 1;
    t[0] = -100;
    const targets = both(t);
    const dLoss = both(rng.floats(rows));
    poison([rows]);
    const rg = g.crossEntropy(logits.g, targets.g, rows, cols, -100, classes);
    const rc = cpu.crossEntropy(logits.c, targets.c, rows, cols, -100, classes);
    const label = `${rows}x${cols}, ${classes} classes`;
    assertClose(readGpu(rg.loss), cpu.read(rc.loss), `loss ${label}`, 1e-5, 1e-5);
    assertClose(readGpu(rg.lse), cpu.read(rc.lse), `lse ${label}`, 1e-5, 1e-5);
    poison([rows * cols]);
    const dg = readGpu(g.crossEntropyBackward(logits.g, targets.g, rg.lse, dLoss.g, rows, cols, -100, classes));
    assertClose(dg, cpu.read(cpu.crossEntropyBackward(logits.c, targets.c, rc.lse, dLoss.c, rows, cols, -100, classes)), `dlogits ${label}`, 1e-4, 1e-6);
    for (let r = 0; r < rows; r++) {
      for (let j = classes; j < cols; j++) assert.equal(dg[r * cols + j], 0, `padding gradient at row ${r}, column ${j} (${label})`);
    }
  }
});

test('a target in the padding, or classes outside [1, cols], is a RangeError naming it', { skip }, () => {
  const g = requireGpu();
  const logits = g.fromArray(rng.floats(3 * 8));
  const targets = g.fromArray(new Int32Array([1, 6, 2]));
  g.crossEntropy(logits, targets, 3, 8, -100, 5);
  assertRangeError(() => g.synchronize(), 'crossEntropy: target 6 at row 1 is outside [0, 5)');
  const fine = g.fromArray(new Int32Array([1, 0, 2]));
  const lse = g.fromArray(new Float32Array(3));
  const dLoss = g.fromArray(new Float32Array(3));
  for (const classes of [0, 9]) {
    const message = `crossEntropy: classes = ${classes} is not an integer in [1, 8] (the logits' row length)`;
    assert.throws(() => g.crossEntropy(logits, fine, 3, 8, -100, classes), { name: 'RangeError', message });
    assert.throws(() => g.crossEntropyBackward(logits, fine, lse, dLoss, 3, 8, -100, classes), { name: 'RangeError', message });
  }
});

test('embedding gather and scatter-add with repeated indices', { skip }, () => {
  const g = requireGpu();
  for (const [rowsInTable, cols, count] of [[10, 4, 25], [1000, 768, 300], [3, 1, 1]] as const) {
    const table = both(rng.floats(rowsInTable * cols));
    const indices = both(Int32Array.from({ length: count }, () => rng.int(rowsInTable)));
    poison([count * cols]);
    assert.deepEqual(readGpu(g.gather(table.g, rowsInTable, cols, indices.g)), cpu.read(cpu.gather(table.c, rowsInTable, cols, indices.c)));
    const dOut = both(rng.floats(count * cols));
    poison([rowsInTable * cols]);
    // atomics add in any order: float32 rounding differs by a few ulps
    assertClose(readGpu(g.scatterAdd(dOut.g, indices.g, rowsInTable, cols)), cpu.read(cpu.scatterAdd(dOut.c, indices.c, rowsInTable, cols)), 'scatterAdd', 1e-5, 1e-6);
  }
  const bad = g.fromArray(new Int32Array([0, 3, -1]));
  const picked = g.gather(g.fromArray(rng.floats(6)), 3, 2, bad);
  assertRangeError(() => g.read(picked), 'embedding: index 3 is outside [0, 3)');
  g.scatterAdd(g.fromArray(rng.floats(6)), bad, 3, 2);
  assertRangeError(() => g.allFinite(picked), 'embedding: index 3 is outside [0, 3)');
});

test('gather with validRows: the padding rows of a table are out of range', { skip }, () => {
  const g = requireGpu();
  const table = both(rng.floats(320 * 8)); // 257 real rows padded to 320
  const indices = both(Int32Array.from({ length: 50 }, () => rng.int(257)));
  assert.deepEqual(readGpu(g.gather(table.g, 320, 8, indices.g, 257)), cpu.read(cpu.gather(table.c, 320, 8, indices.c, 257)));
  const padding = g.fromArray(new Int32Array([5, 257]));
  g.gather(table.g, 320, 8, padding, 257);
  assertRangeError(() => g.synchronize(), 'embedding: index 257 is outside [0, 257)');
  assert.throws(() => g.gather(table.g, 320, 8, indices.g, 321), { name: 'RangeError', message: 'embedding: validRows = 321 is not in [0, 320]' });
});

test('AdamW updates param, m and v like the CPU backend', { skip }, () => {
  const g = requireGpu();
  const n = 10_001;
  const p = both(rng.floats(n));
  const m = both(new Float32Array(n));
  const v = both(new Float32Array(n));
  for (let step = 1; step <= 3; step++) {
    const grad = both(rng.floats(n));
    const hyper = { lr: 6e-4, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01, step };
    g.adamw(p.g, grad.g, m.g, v.g, hyper);
    cpu.adamw(p.c, grad.c, m.c, v.c, hyper);
  }
  assertClose(readGpu(m.g), cpu.read(m.c), 'm', 1e-5, 1e-7);
  assertClose(readGpu(v.g), cpu.read(v.c), 'v', 1e-5, 1e-9);
  assertClose(readGpu(p.g), cpu.read(p.c), 'param', 1e-5, 1e-6);
  g.synchronize();
});

test('multi-tensor AdamW equals AdamW tensor by tensor, bit for bit, and the CPU', { skip }, () => {
  const g = requireGpu();
  // sizes around the kernel's 2048-element block chunks, an empty tensor, and enough tensors for a deep search
  const sizes = [2048, 1, 0, 2047, 2049, 10_001, 300_000, ...Array.from({ length: 300 }, () => 1 + rng.int(5000))];
  const decaysOf = sizes.map((_, i) => (i % 3 === 0 ? 0 : 0.01 * (1 + (i % 5))));
  const state = sizes.map((n) => ({ p: rng.floats(n), m: new Float32Array(n), v: new Float32Array(n) }));
  const onGpu = () => state.map(({ p, m, v }) => ({ param: g.fromArray(p), m: g.fromArray(m), v: g.fromArray(v) }));
  const [one, many] = [onGpu(), onGpu()];
  // every fourth tensor of the multi-tensor update keeps a bfloat16 copy: whole chunks write it four
  // values at a time, the tails one at a time
  const copies = many.map((t, i) => (i % 4 === 1 ? g.alloc('bfloat16', t.param.size) : null));
  const host = state.map(({ p, m, v }) => ({ param: cpu.fromArray(p), m: cpu.fromArray(m), v: cpu.fromArray(v) }));
  for (let step = 1; step <= 3; step++) {
    const grads = sizes.map((n) => both(rng.floats(n, (r) => r.normal() * 3)));
    const hyper = { lr: 6e-4 * step, beta1: 0.9, beta2: 0.98, eps: 1e-8, step, gradScale: step === 2 ? 0.37 : 1 };
    one.forEach((t, i) => g.adamw(t.param, grads[i]!.g, t.m, t.v, { ...hyper, weightDecay: decaysOf[i]! }));
    g.adamwMulti(many.map((t, i) => ({ ...t, grad: grads[i]!.g, weightDecay: decaysOf[i]!, copy: copies[i] })), hyper);
    cpu.adamwMulti(host.map((t, i) => ({ ...t, grad: grads[i]!.c, weightDecay: decaysOf[i]! })), hyper);
  }
  one.forEach((t, i) => {
    for (const which of ['param', 'm', 'v'] as const) {
      const [a, b] = [readGpu(many[i]![which]), readGpu(t[which])];
      for (let j = 0; j < a.length; j++) {
        if (!Object.is(a[j], b[j])) assert.fail(`tensor ${i} (${sizes[i]} elements) ${which}[${j}]: multi ${a[j]}, per tensor ${b[j]}`);
      }
    }
    assertClose(readGpu(many[i]!.param), cpu.read(host[i]!.param), `tensor ${i} param against the CPU`, 1e-5, 1e-6);
    const copy = copies[i];
    if (copy) {
      const [a, b] = [readGpu(copy), readGpu(g.cast(many[i]!.param, 'bfloat16'))];
      for (let j = 0; j < a.length; j++) if (!Object.is(a[j], b[j])) assert.fail(`tensor ${i} copy[${j}]: ${a[j]}, the cast of the param ${b[j]}`);
    }
  });
  assert.ok(copies.filter((c) => c && c.size >= 2048).length > 10, 'copies on the vector path');
  assert.throws(() => g.adamwMulti([{ ...many[0]!, grad: many[1]!.m, weightDecay: 0 }], { lr: 1, beta1: 0.9, beta2: 0.98, eps: 1e-8, step: 1 }),
    /adamwMulti grad/);
  g.synchronize();
});
