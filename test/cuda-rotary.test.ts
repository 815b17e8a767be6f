// rotatePairs (the fused XPos rotation) on the GPU against the CPU backend, both directions.
import { test } from 'node:test';
import { assertClose, both, cpu, poison, readGpu, requireGpu, rng, skip } from './cuda-support.js';

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
