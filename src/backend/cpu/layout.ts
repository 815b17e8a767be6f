import { stridesOf, type Shape } from '../../tensor/shape.js';
import type { TypedArray } from '../../tensor/dtype.js';
import { allocLike } from './storage.js';
import { walkStrided } from './index-walk.js';

/** Output rows (runs of the last axis) [start, end) of a permutation: out reads x with `readStrides`. */
export function permuteRows(
  x: TypedArray, out: TypedArray, outShape: Shape, readStrides: readonly number[], start: number, end: number,
): void {
  walkStrided(outShape, [readStrides], (outStart, length, starts, inner) => {
    let ix = starts[0]!;
    const s = inner[0]!;
    for (let i = 0; i < length; i++, ix += s) out[outStart + i] = x[ix]!;
  }, start, end);
}

function blockOffset(shape: Shape, begin: readonly number[]): number {
  const strides = stridesOf(shape);
  return begin.reduce((acc, b, i) => acc + b * strides[i]!, 0);
}

export function sliceKernel(x: TypedArray, shape: Shape, begin: readonly number[], size: readonly number[]): TypedArray {
  let total = 1;
  for (const d of size) total *= d;
  const out = allocLike(x, total);
  const base = blockOffset(shape, begin);
  walkStrided(size, [stridesOf(shape)], (outStart, length, starts) => {
    const from = base + starts[0]!;
    out.set(x.subarray(from, from + length), outStart);
  });
  return out;
}

export function addSliceIntoKernel(dst: TypedArray, dstShape: Shape, src: TypedArray, srcShape: Shape, begin: readonly number[]): void {
  const base = blockOffset(dstShape, begin);
  walkStrided(srcShape, [stridesOf(dstShape)], (srcStart, length, starts) => {
    const to = base + starts[0]!;
    for (let i = 0; i < length; i++) dst[to + i] += src[srcStart + i]!;
  });
}
