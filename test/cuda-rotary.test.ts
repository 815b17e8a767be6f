// rotatePairs (the fused XPos rotation) on the GPU against the CPU backend, both directions.
import { test } from 'node:test';
import type { AttentionConfig, Storage } from '../src/backend/backend.js';
import { decodeBf16, encodeBf16 } from '../src/io/halfFloat.js';
import { assertClose, both, cpu, poison, poisonBf16, readGpu, requireGpu, rng, skip } from './cuda-support.js';


test('rotatePairs and its transpose match the CPU backend', { skip }, () => {
  const g = requireGpu();
  // [outer, positions, inner, dim]: one head, many heads, odd counts, a large grid-stride case
  for (const [outer, positions, inner, dim] of [[1, 1, 1, 2], [2, 37, 3, 8], [1, 300, 12, 64], [3, 5, 7, 128], [1, 4099, 12, 64]] as const) {
    const count = outer * positions * inner * dim;
    const x = both(rng.floats(count, (r) => r.normal() * 3));
    const cos = both(rng.floats(positions * dim));
    const sin = both(rng.floats(positions * dim));
    for (const transpose of [false, true]) {
      poison([count]);
      const label = `rotatePairs ${outer}x${positions}x${inner}x${dim}${transpose ? ' transpose' : ''}`;
      const yg = g.rotatePairs(x.g, cos.g, sin.g, outer, positions, inner, dim, transpose);
      const yc = cpu.rotatePairs(x.c, cos.c, sin.c, outer, positions, inner, dim, transpose);
      // two float32 products and a sum (the GPU may fuse them): a few ulps of the larger term
      assertClose(readGpu(yg), cpu.read(yc), label, 1e-5, 1e-5);
    }
  }
});

test('the attention backward with rotary tables gives the composition\'s gradients (rotated back as they are written)', { skip }, () => {
  const g = requireGpu();
  const geometry = { batch: 2, seqLen: 96, heads: 3, headDim: 64 };
  const config: AttentionConfig = {
    patterns: [{ segmentLength: 32, dilationRate: 1 }, { segmentLength: 96, dilationRate: 3 }], causal: true, scale: 0.125, headOffsets: 'paper',
  };
  const { batch, seqLen, heads, headDim } = geometry;
  const n = batch * seqLen * heads * headDim;
  // bf16-representable inputs, so that float32 and bfloat16 storages hold the same values
  const values = (count: number): Float32Array => {
    const v = rng.floats(count, (r) => r.normal());
    decodeBf16(encodeBf16(v), v);
    return v;
  };
  const [q, k, v, dO] = [values(n), values(n), values(n), values(n)].map((a) => g.fromArray(a));
  const tables = ['qCos', 'qSin', 'kCos', 'kSin'].map(() => g.fromArray(rng.floats(seqLen * headDim)));
  const rotation = { qCos: tables[0]!, qSin: tables[1]!, kCos: tables[2]!, kSin: tables[3]! };
  for (const precision of ['bf16', 'fp32'] as const) {
    g.setAttentionPrecision(precision);
    try {
      // float32 storages: the gradients, then a separate rotation back (the reference)
      const f = g.dilatedAttention(q!, k!, v!, geometry, config);
      const plain = g.dilatedAttentionBackward(q!, k!, v!, f.o, f.lse, dO!, geometry, config);
      const back = (x: Storage, cos: Storage, sin: Storage) => readGpu(g.rotatePairs(x, cos, sin, batch, seqLen, heads, headDim, true));
      const want = [back(plain.dq, rotation.qCos, rotation.qSin), back(plain.dk, rotation.kCos, rotation.kSin), readGpu(plain.dv)];
      const fused = g.dilatedAttentionBackward(q!, k!, v!, f.o, f.lse, dO!, geometry, config, { rotation });
      ['dq', 'dk', 'dv'].forEach((name, i) => {
        assertClose(readGpu([fused.dq, fused.dk, fused.dv][i]!), want[i]!, `${precision} float32 ${name}`, 1e-5, 1e-6);
      });
      // bfloat16 storages: the same gradients, rounded once. The reference is the float32 storages' backward
      // for the o of the bf16 forward (rounded to bf16): o enters the gradients through Dsum = rowsum(dO * o),
      // and its rounding alone moves a gradient by more than one bf16 rounding (a row over few keys, whose
      // o is large), more still once rotated back by these random tables
      const [qb, kb, vb, dOb] = [q, k, v, dO].map((x) => g.cast(x!, 'bfloat16'));
      const fb = g.dilatedAttention(qb!, kb!, vb!, geometry, config);
      const plainB = g.dilatedAttentionBackward(q!, k!, v!, g.cast(fb.o, 'float32'), fb.lse, dO!, geometry, config);
      const wantB = [back(plainB.dq, rotation.qCos, rotation.qSin), back(plainB.dk, rotation.kCos, rotation.kSin), readGpu(plainB.dv)];
      poisonBf16([n], 3);
      const fusedB = g.dilatedAttentionBackward(qb!, kb!, vb!, fb.o, fb.lse, dOb!, geometry, config, { rotation });
      ['dq', 'dk', 'dv'].forEach((name, i) => {
        const got = readGpu([fusedB.dq, fusedB.dk, fusedB.dv][i]!);
        const scale = Math.max(...Array.from(wantB[i]!, Math.abs));
        assertClose(got, wantB[i]!, `${precision} bfloat16 ${name}`, 2 ** -7, 2 ** -8 * scale);
      });
    } finally {
      g.setAttentionPrecision('bf16');
    }
  }
});
