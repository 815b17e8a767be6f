import type { BinaryOp, UnaryOp } from '../../backend/backend.js';
import { record, setAutogradHelpers } from '../autograd.js';
import { broadcastShapes, shapesEqual, sizeOf, type Shape } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { sumToShape } from './reduce.js';
import { common, requireFloat, wrap } from './util.js';

function unary(op: UnaryOp, x: Tensor, grad: (g: Tensor, x: Tensor, y: Tensor) => Tensor): Tensor {
  requireFloat(op, x);
  const y = wrap(x.backend.unary(op, x.storage), x.shape, x.backend);
  return record(op, y, [x], (g) => [grad(g, x, y)]);
}

function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): { out: Tensor; shape: number[] } {
  const backend = common(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape, op);
  return { out: wrap(backend.binary(op, a.storage, a.shape, b.storage, b.shape, shape), shape, backend), shape };
}

function scalarRaw(op: BinaryOp, a: Tensor, s: number): Tensor {
  return wrap(a.backend.binaryScalar(op, a.storage, s), a.shape, a.backend);
}

export function add(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return record('addScalar', scalarRaw('add', a, b), [a], (g) => [g]);
  const { out } = binaryRaw('add', a, b);
  return record('add', out, [a, b], (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}

export function sub(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return add(a, -b);
  const { out } = binaryRaw('sub', a, b);
  return record('sub', out, [a, b], (g) => [sumToShape(g, a.shape), sumToShape(neg(g), b.shape)]);
}

export function mulScalar(a: Tensor, s: number): Tensor {
  return record('mulScalar', scalarRaw('mul', a, s), [a], (g) => [mulScalar(g, s)]);
}

export function mul(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return mulScalar(a, b);
  const { out } = binaryRaw('mul', a, b);
  return record('mul', out, [a, b], (g) => [
    a.requiresGrad ? sumToShape(mul(g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(mul(g, a), b.shape) : null,
  ]);
}

export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return mulScalar(a, 1 / b);
  const { out } = binaryRaw('div', a, b);
  return record('div', out, [a, b], (g) => [
    a.requiresGrad ? sumToShape(div(g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(neg(div(mul(g, out), b)), b.shape) : null,
  ]);
}

/** a ** exponent for a constant exponent. */
export function powScalar(a: Tensor, exponent: number): Tensor {
  return record('pow', scalarRaw('pow', a, exponent), [a], (g) => [mul(g, mulScalar(powScalar(a, exponent - 1), exponent))]);
}

/** Elementwise maximum; the gradient goes to `a` where a >= b, else to `b`. */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const { out } = binaryRaw('maximum', a, b);
  return record('maximum', out, [a, b], (g) => {
    const bWins = binaryRaw('greater', b, a).out;
    const aWins = sub(onesLike(bWins), bWins);
    return [sumToShape(mul(g, aWins), a.shape), sumToShape(mul(g, bWins), b.shape)];
  });
}

export const neg = (x: Tensor): Tensor => unary('neg', x, (g) => neg(g));
export const exp = (x: Tensor): Tensor => unary('exp', x, (g, _x, y) => mul(g, y));
export const log = (x: Tensor): Tensor => unary('log', x, (g, x) => div(g, x));
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x, (g, _x, y) => div(mulScalar(g, 0.5), y));
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x, (g, x, y) => mul(g, mulScalar(div(y, x), -0.5)));
export const tanh = (x: Tensor): Tensor => unary('tanh', x, (g, _x, y) => mul(g, sub(onesLike(y), mul(y, y))));
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x, (g, _x, y) => mul(g, mul(y, sub(onesLike(y), y))));
export const square = (x: Tensor): Tensor => unary('square', x, (g, x) => mul(g, mulScalar(x, 2)));
export const abs = (x: Tensor): Tensor => unary('abs', x, (g, x) => {
  const positive = binaryRaw('greater', x, zerosLike(x)).out;
  return mul(g, sub(mulScalar(positive, 2), 1));
});
export const relu = (x: Tensor): Tensor => unary('relu', x, (g, x) => binaryRaw('reluBackward', x, g).out);
/** GELU, tanh approximation. */
export const gelu = (x: Tensor): Tensor => unary('gelu', x, (g, x) => binaryRaw('geluBackward', x, g).out);

export function fullLike(t: Tensor, value: number): Tensor {
  const out = wrap(t.backend.alloc(t.dtype, t.size), t.shape, t.backend);
  if (value !== 0) t.backend.fill(out.storage, value);
  return out;
}
export const zerosLike = (t: Tensor): Tensor => fullLike(t, 0);
export const onesLike = (t: Tensor): Tensor => fullLike(t, 1);

/** Repeats `x` along broadcast dimensions to `shape`. */
export function broadcastTo(x: Tensor, shape: Shape): Tensor {
  if (shapesEqual(x.shape, shape)) return x;
  const zeros = wrap(x.backend.alloc(x.dtype, sizeOf(shape)), shape, x.backend);
  const out = wrap(x.backend.binary('add', zeros.storage, shape, x.storage, x.shape, shape), shape, x.backend);
  zeros.dispose();
  return record('broadcastTo', out, [x], (g) => [sumToShape(g, x.shape)]);
}

/** Converts to another dtype; float to float conversions pass gradients. */
export function cast(x: Tensor, dtype: Tensor['dtype']): Tensor {
  if (x.dtype === dtype) return x;
  const out = wrap(x.backend.cast(x.storage, dtype), x.shape, x.backend);
  const from = x.dtype;
  return dtype === 'int32' ? out : record('cast', out, [x], (g) => [cast(g, from)]);
}

setAutogradHelpers({ add: (a, b) => add(a, b), onesLike });
