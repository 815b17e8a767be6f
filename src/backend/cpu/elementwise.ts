import type { BinaryOp, UnaryOp } from '../backend.js';
import type { Shape } from '../../tensor/shape.js';
import type { TypedArray } from '../../tensor/dtype.js';
import { walkStrided } from './index-walk.js';

// GELU with the tanh approximation (as in GPT-2 and most LongNet ports).
const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;

export function gelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_C * (x + GELU_A * x * x * x)));
}

export function geluDerivative(x: number): number {
  const t = Math.tanh(GELU_C * (x + GELU_A * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x);
}

const unaryFunctions: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  tanh: Math.tanh,
  abs: Math.abs,
  relu: (x) => (x > 0 ? x : 0),
  gelu,
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  square: (x) => x * x,
  reciprocal: (x) => 1 / x,
};

export const binaryFunctions: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  maximum: (a, b) => (a >= b || Number.isNaN(a) ? a : b),
  minimum: (a, b) => (a <= b || Number.isNaN(a) ? a : b),
  pow: Math.pow,
  greater: (a, b) => (a > b ? 1 : 0),
  reluBackward: (x, dy) => (x > 0 ? dy : 0),
  geluBackward: (x, dy) => dy * geluDerivative(x),
};

// Range kernels: each computes output elements (or, for broadcasts, output rows) [start, end), so that
// elementwise-parallel.ts can split one op across threads. Every element is computed as a whole-array loop
// would compute it.

export function unaryRange(op: UnaryOp, x: TypedArray, out: TypedArray, start: number, end: number): void {
  const f = unaryFunctions[op];
  for (let i = start; i < end; i++) out[i] = f(x[i]!);
}

export function scalarRange(op: BinaryOp, a: TypedArray, scalar: number, out: TypedArray, start: number, end: number): void {
  switch (op) {
    case 'add': for (let i = start; i < end; i++) out[i] = a[i]! + scalar; break;
    case 'mul': for (let i = start; i < end; i++) out[i] = a[i]! * scalar; break;
    default: {
      const f = binaryFunctions[op];
      for (let i = start; i < end; i++) out[i] = f(a[i]!, scalar);
    }
  }
}

/** Operands of the output's shape: one flat loop, with the hottest ops unrolled from the function table. */
export function flatRange(op: BinaryOp, a: TypedArray, b: TypedArray, out: TypedArray, start: number, end: number): void {
  if (op === 'add') for (let i = start; i < end; i++) out[i] = a[i]! + b[i]!;
  else if (op === 'mul') for (let i = start; i < end; i++) out[i] = a[i]! * b[i]!;
  else if (op === 'sub') for (let i = start; i < end; i++) out[i] = a[i]! - b[i]!;
  else {
    const f = binaryFunctions[op];
    for (let i = start; i < end; i++) out[i] = f(a[i]!, b[i]!);
  }
}

/** Broadcast operands: output rows (runs of the last axis) [start, end), `strides` 0 where an operand broadcasts. */
export function broadcastRange(
  op: BinaryOp, a: TypedArray, b: TypedArray, out: TypedArray, shape: Shape, aStrides: readonly number[], bStrides: readonly number[],
  start: number, end: number,
): void {
  const f = binaryFunctions[op];
  walkStrided(shape, [aStrides, bStrides], (outStart, length, starts, inner) => {
    let ia = starts[0]!;
    let ib = starts[1]!;
    const sa = inner[0]!;
    const sb = inner[1]!;
    if (op === 'add') for (let i = 0; i < length; i++, ia += sa, ib += sb) out[outStart + i] = a[ia]! + b[ib]!;
    else if (op === 'mul') for (let i = 0; i < length; i++, ia += sa, ib += sb) out[outStart + i] = a[ia]! * b[ib]!;
    else for (let i = 0; i < length; i++, ia += sa, ib += sb) out[outStart + i] = f(a[ia]!, b[ib]!);
  }, start, end);
}

