import type { ReduceOp } from '../backend.js';
import { stridesOf, type Shape } from '../../tensor/shape.js';
import type { FloatArray, TypedArray } from '../../tensor/dtype.js';
import { allocLike } from './storage.js';
import { walkStrided } from './index-walk.js';

/** The sum of squares of each array, accumulated in float64, in an array of the first one's dtype. */
export function sumsOfSquaresKernel(xs: readonly FloatArray[]): FloatArray {
  const out = allocLike(xs[0]!, xs.length) as FloatArray;
  xs.forEach((x, i) => {
    let s = 0;
    for (let j = 0; j < x.length; j++) s += x[j]! * x[j]!;
    out[i] = s;
  });
  return out;
}

/** Sum or max over `axes`; the result has the input's rank with the reduced axes set to 1. */
export function reduceKernel(op: ReduceOp, x: TypedArray, shape: Shape, axes: readonly number[]): TypedArray {
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  let outSize = 1;
  for (const d of outShape) outSize *= d;
  const out = allocLike(x, outSize);
  if (op === 'max') out.fill(-Infinity);
  const outStrides = stridesOf(outShape).map((s, i) => (axes.includes(i) ? 0 : s));
  const inStrides = stridesOf(shape);
  // walk the input; each element lands on out at the offset given by outStrides (0 on reduced axes)
  const sum = op === 'sum';
  walkStrided(shape, [inStrides, outStrides], (_start, length, starts, inner) => {
    let ix = starts[0]!;
    let io = starts[1]!;
    const so = inner[1]!;
    if (so === 0) {
      let acc = sum ? 0 : -Infinity;
      for (let i = 0; i < length; i++, ix++) {
        const v = x[ix]!;
        acc = sum ? acc + v : (v > acc || Number.isNaN(v) ? v : acc);
      }
      out[io] = sum ? out[io]! + acc : (acc > out[io]! || Number.isNaN(acc) ? acc : out[io]!);
    } else {
      for (let i = 0; i < length; i++, ix++, io += so) {
        const v = x[ix]!;
        out[io] = sum ? out[io]! + v : (v > out[io]! || Number.isNaN(v) ? v : out[io]!);
      }
    }
  });
  return out;
}
