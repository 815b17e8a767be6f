// The packed (varlen) attention primitives of sequence-parallel attention on the GPU against the CPU
// backend (the reference: it accumulates in float64): gatheredAttention, gatheredAttentionBackward and
// mergeAttention, on random groups of uneven sizes (empty groups, more queries than keys, sizes that are
// not multiples of the kernels' tiles), causal and not, several head dimensions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GatheredAttentionLayout, Storage } from '../src/backend/backend.js';
import { cpu, poison, readGpu, relativeError, requireGpu, rng, seed, skip } from './cuda-support.js';

type Groups = readonly (readonly [number, number])[];

function layoutOf(groups: Groups, headDim: number, causal: boolean): GatheredAttentionLayout {
  const qOffsets = new Int32Array(groups.length + 1);
  const kOffsets = new Int32Array(groups.length + 1);
  groups.forEach(([mq, mk], g) => {
    qOffsets[g + 1] = qOffsets[g]! + mq;
    kOffsets[g + 1] = kOffsets[g]! + mk;
  });
  return { qOffsets, kOffsets, headDim, causal, scale: 1 / Math.sqrt(headDim) };
}

const cases: { name: string; groups: Groups; dims: number[] }[] = [
  { name: 'one group', groups: [[37, 37]], dims: [16, 64] },
  { name: 'uneven groups', groups: [[5, 70], [0, 9], [33, 12], [17, 0], [64, 64], [1, 1], [100, 131]], dims: [32, 100, 128] },
  { name: 'wide heads', groups: [[40, 50], [19, 19]], dims: [256] },
];

/** max over the output of the error of the GPU against the CPU, relative to the CPU's norm */
function check(label: string, gpuOut: Storage, cpuOut: Storage, tol: number): void {
  const a = readGpu(gpuOut);
  const e = cpu.read(cpuOut);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = e[i]!;
    if (!Number.isFinite(y) || !Number.isFinite(x)) assert.ok(Object.is(x, y), `${label}: element ${i} is ${x}, expected ${y} (seed ${seed})`);
  }
  const fa = Float64Array.from(a, (x) => (Number.isFinite(x) ? x : 0));
  const fe = Float64Array.from(e, (x) => (Number.isFinite(x) ? x : 0));
  const err = relativeError(fa, fe);
  assert.ok(err <= tol, `${label}: relative error ${err.toExponential(2)} > ${tol} (seed ${seed})`);
}

for (const c of cases) {
  for (const D of c.dims) {
    for (const causal of [false, true]) {
      test(`gathered attention forward and backward: ${c.name}, D=${D}, ${causal ? 'causal' : 'full'}`, { skip }, () => {
        const g = requireGpu();
        const layout = layoutOf(c.groups, D, causal);
        const rowsQ = layout.qOffsets[c.groups.length]!, rowsK = layout.kOffsets[c.groups.length]!;
        const [q, dO] = [rng.floats(rowsQ * D), rng.floats(rowsQ * D)];
        const [k, v] = [rng.floats(rowsK * D), rng.floats(rowsK * D)];
        const up = (x: Float32Array) => ({ c: cpu.fromArray(x), g: g.fromArray(x) });
        const [Q, K, V, DO] = [up(q), up(k), up(v), up(dO)];
        poison([rowsQ * D, rowsQ, rowsK * D]);
        const ref = cpu.gatheredAttention(Q.c, K.c, V.c, layout);
        const got = g.gatheredAttention(Q.g, K.g, V.g, layout);
        check('o', got.o, ref.o, 2e-6);
        check('lse', got.lse, ref.lse, 2e-6);
        // the groups as parts of a larger softmax: the final lse is larger, dsum arbitrary
        const lseRef = cpu.read(ref.lse) as Float32Array;
        const lse = Float32Array.from(lseRef, (x) => (x === -Infinity ? x : x + rng.uniform(0, 0.5)));
        const dsum = rng.floats(rowsQ);
        const [L, DS] = [up(lse), up(dsum)];
        poison([rowsQ * D, rowsK * D]);
        const gr = cpu.gatheredAttentionBackward(Q.c, K.c, V.c, L.c, DS.c, DO.c, layout);
        const gg = g.gatheredAttentionBackward(Q.g, K.g, V.g, L.g, DS.g, DO.g, layout);
        check('dq', gg.dq, gr.dq, 2e-5);
        check('dk', gg.dk, gr.dk, 2e-5);
        check('dv', gg.dv, gr.dv, 2e-5);
        for (const s of [Q, K, V, DO, L, DS]) g.free(s.g);
        for (const s of [got.o, got.lse, gg.dq, gg.dk, gg.dv]) g.free(s);
      });
    }
  }
}

test('gathered attention rejects offsets that do not match the rows', { skip }, () => {
  const g = requireGpu();
  const x = g.fromArray(rng.floats(8 * 4));
  const layout = layoutOf([[4, 4], [3, 4]], 4, false);
  assert.throws(() => g.gatheredAttention(x, x, x, layout), /offsets span/);
  g.free(x);
});

for (const D of [8, 64, 96]) {
  test(`mergeAttention folds partial results (D=${D})`, { skip }, () => {
    const g = requireGpu();
    const total = 53, count = 29;
    const accO = rng.floats(total * D);
    const accLse = rng.floats(total, (r) => (r.next() < 0.2 ? -Infinity : r.normal() * 3));
    const o = rng.floats(count * D);
    const lse = rng.floats(count, (r) => (r.next() < 0.2 ? -Infinity : r.normal() * 3));
    const perm = Array.from({ length: total }, (_, i) => i);
    for (let i = total - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [perm[i], perm[j]] = [perm[j]!, perm[i]!];
    }
    const rows = Int32Array.from(perm.slice(0, count));
    const c = [accO, accLse, o, lse].map((a) => cpu.fromArray(a));
    const d = [accO, accLse, o, lse].map((a) => g.fromArray(a));
    cpu.mergeAttention(c[0]!, c[1]!, c[2]!, c[3]!, cpu.fromArray(rows), D);
    const gRows = g.fromArray(rows);
    g.mergeAttention(d[0]!, d[1]!, d[2]!, d[3]!, gRows, D);
    check('accO', d[0]!, c[0]!, 1e-6);
    check('accLse', d[1]!, c[1]!, 1e-6);
    for (const s of [...d, gRows]) g.free(s);
  });
}
