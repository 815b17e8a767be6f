import { record } from '../autograd.js';
import { formatShape, normalizeAxis, sizeOf, type Shape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { common, wrap } from './util.js';

/** The same elements in another shape (one dimension may be -1). Shares storage; no copy. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const inferred = shape.indexOf(-1);
  let target = [...shape];
  if (inferred >= 0) {
    const known = sizeOf(shape.filter((_d, i) => i !== inferred));
    if (known === 0 || x.size % known !== 0) throw new Error(`reshape: cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
    target[inferred] = x.size / known;
  }
  if (sizeOf(target) !== x.size || target.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
  }
  const inputShape = x.shape;
  return record('reshape', x.shareStorage(target), [x], (g) => [reshape(g, inputShape)]);
}

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const rank = x.rank;
  const axes = perm.map((p) => normalizeAxis(p, rank, 'permute'));
  if (axes.length !== rank || new Set(axes).size !== rank) {
    throw new Error(`permute: [${perm.join(', ')}] is not a permutation of ${rank} axes`);
  }
  const out = wrap(x.backend.permute(x.storage, x.shape, axes), axes.map((a) => x.shape[a]!), x.backend);
  const inverse = new Array<number>(rank);
  axes.forEach((a, i) => (inverse[a] = i));
  return record('permute', out, [x], (g) => [permute(g, inverse)]);
}

/** Swaps two axes (by default the last two). */
export function transpose(x: Tensor, axisA = -2, axisB = -1): Tensor {
  const a = normalizeAxis(axisA, x.rank, 'transpose');
  const b = normalizeAxis(axisB, x.rank, 'transpose');
  const perm = x.shape.map((_d, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/** The block starting at `begin` with extent `size` (-1 means to the end). */
export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  if (begin.length !== x.rank || size.length !== x.rank) throw new Error(`slice: begin and size need ${x.rank} entries`);
  const extent = size.map((s, i) => (s === -1 ? x.shape[i]! - begin[i]! : s));
  extent.forEach((s, i) => {
    if (begin[i]! < 0 || s < 0 || begin[i]! + s > x.shape[i]!) {
      throw new Error(`slice: [${begin.join(', ')}] + [${extent.join(', ')}] is outside ${formatShape(x.shape)}`);
    }
  });
  const out = wrap(x.backend.slice(x.storage, x.shape, begin, extent), extent, x.backend);
  const inputShape = x.shape;
  return record('slice', out, [x], (g) => {
    const dx = wrap(g.backend.alloc(g.dtype, sizeOf(inputShape)), inputShape, g.backend);
    g.backend.addSliceInto(dx.storage, inputShape, g.storage, g.shape, begin);
    return [dx];
  });
}

/** Joins tensors along `axis`. */
export function concat(tensors: readonly Tensor[], axis: number): Tensor {
  if (tensors.length === 0) throw new Error('concat: no tensors');
  const backend = common('concat', ...tensors);
  const first = tensors[0]!;
  const ax = normalizeAxis(axis, first.rank, 'concat');
  for (const t of tensors) {
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new Error(`concat: shapes ${formatShape(first.shape)} and ${formatShape(t.shape)} differ off axis ${ax}`);
    }
  }
  const outShape = [...first.shape];
  outShape[ax] = tensors.reduce((s, t) => s + t.shape[ax]!, 0);
  const out = wrap(backend.alloc(first.dtype, sizeOf(outShape)), outShape, backend);
  const begins: number[][] = [];
  let offset = 0;
  for (const t of tensors) {
    const begin = outShape.map((_d, i) => (i === ax ? offset : 0));
    begins.push(begin);
    backend.addSliceInto(out.storage, outShape, t.storage, t.shape, begin);
    offset += t.shape[ax]!;
  }
  return record('concat', out, tensors, (g) => tensors.map((t, i) => slice(g, begins[i]!, t.shape)));
}
