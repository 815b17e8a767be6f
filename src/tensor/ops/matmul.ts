import { record } from '../autograd.js';
import { broadcastShapes, formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { sumToShape } from './reduce.js';
import { gelu } from './elementwise.js';
import { common, requireFloat, wrap } from './util.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** Batched matrix product op(a) @ op(b) over the last two axes; leading axes broadcast. */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const backend = common('matmul', a, b);
  requireFloat('matmul', a);
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul: operands need at least 2 dimensions, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (k !== kb) {
    throw new Error(`matmul: inner dimensions differ: ${formatShape(a.shape)}${transA ? '^T' : ''} @ ${formatShape(b.shape)}${transB ? '^T' : ''}`);
  }
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul');
  const out = wrap(backend.matmul(a.storage, a.shape, b.storage, b.shape, transA, transB, batchShape, m, n, k), [...batchShape, m, n], backend);
  return record('matmul', out, [a, b], (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (a.requiresGrad) {
      da = transA
        ? matmul(b, g, { transA: transB, transB: true })
        : matmul(g, b, { transA: false, transB: !transB });
      da = sumToShape(da, a.shape);
    }
    if (b.requiresGrad) {
      db = transB
        ? matmul(g, a, { transA: true, transB: transA })
        : matmul(a, g, { transA: !transA, transB: false });
      db = sumToShape(db, b.shape);
    }
    return [da, db];
  });
}

export interface LinearOpOptions {
  /** An activation applied to the product (GELU in its tanh form, as `gelu`), in the same call. */
  activation?: 'gelu';
  /** [..., out], the output's shape, added to the result (a residual connection) in the same call; not with `activation`. */
  residual?: Tensor;
}

/** Checks linear's operands; returns [rows (x's leading axes flattened), in, out]. */
function linearShape(x: Tensor, weight: Tensor, bias: Tensor | null, options: LinearOpOptions): [number, number, number] {
  requireFloat('linear', x);
  for (const p of bias ? [weight, bias] : [weight]) {
    if (p.device !== x.device) throw new Error(`linear: tensors on different devices (${x.device} and ${p.device})`);
    if (p.dtype !== x.dtype && !(p.dtype === 'float32' && x.dtype === 'bfloat16')) {
      throw new Error(`linear: a ${x.dtype} input needs ${x.dtype} parameters${x.dtype === 'bfloat16' ? ' or float32 ones' : ''}, got ${p.dtype}`);
    }
  }
  if (bias && bias.dtype !== weight.dtype) throw new Error(`linear: weight (${weight.dtype}) and bias (${bias.dtype}) differ in dtype`);
  const biasText = bias ? ` and ${formatShape(bias.shape)}` : '';
  if (x.rank < 2 || weight.rank !== 2 || (bias && bias.rank !== 1)) {
    throw new Error(`linear: needs x [..., rows, in], weight [out, in] and bias [out], got ${formatShape(x.shape)}, ${formatShape(weight.shape)}${biasText}`);
  }
  const inFeatures = x.shape[x.rank - 1]!;
  const rows = x.size / Math.max(inFeatures, 1);
  const [outFeatures, k] = weight.shape as [number, number];
  if (k !== inFeatures || (bias && bias.shape[0] !== outFeatures) || inFeatures === 0) {
    throw new Error(`linear: x ${formatShape(x.shape)}, weight ${formatShape(weight.shape)}${bias ? ` and bias ${formatShape(bias.shape)}` : ''} do not fit (in > 0)`);
  }
  const residual = options.residual;
  if (residual) {
    if (options.activation) throw new Error('linear: a residual cannot follow an activation in one call');
    if (!shapesEqual(residual.shape, [...x.shape.slice(0, -1), outFeatures])) {
      throw new Error(`linear: residual of shape ${formatShape(residual.shape)} for an output of ${formatShape([...x.shape.slice(0, -1), outFeatures])}`);
    }
    common('linear', x, residual);
  }
  return [rows, inFeatures, outFeatures];
}

/**
 * A linear layer over x's last axis: x [..., in] @ weight^T + bias, weight [out, in] and bias [out] (or
 * null): [..., out], one product over every row of x's leading axes (so an input used by several layers
 * has one gradient, which each product after the first adds to in the same call); with
 * `activation`, that activation of it; with `residual`, that plus the residual. One backend call: a GPU
 * adds the bias and the GELU in the product's epilogue, and the residual in the product. The weight and
 * bias may be the float32 master weights of a bfloat16 x: the product then takes bfloat16 copies of them,
 * and their gradients come back in float32 (on a GPU straight from the product's fp32 accumulators, with
 * no bf16 rounding).
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null, options: LinearOpOptions = {}): Tensor {
  const [rows, inFeatures, outFeatures] = linearShape(x, weight, bias, options);
  const residual = options.residual ?? null;
  const outShape = [...x.shape.slice(0, -1), outFeatures];
  if (options.activation === 'gelu' && !bias) return gelu(linear(x, weight, null));
  const backend = x.backend;
  // the parameters in x's dtype: themselves; the copy a parameter (a leaf that takes gradients) keeps, current
  // from its last AdamW update; or copies that live as long as the gradient formula
  const asInput = (p: Tensor): Tensor => {
    if (p.dtype === x.dtype) return p;
    if (p.requiresGrad && !p.gradNode) return p.castCopy(x.dtype);
    return wrap(backend.cast(p.storage, x.dtype), p.shape, backend);
  };
  const w = asInput(weight);
  const b = bias && asInput(bias);
  let out: Tensor;
  let pre: Tensor | null = null;
  if (options.activation === 'gelu') {
    const r = backend.linearGelu(x.storage, w.storage, b!.storage, rows, inFeatures, outFeatures);
    out = wrap(r.y, outShape, backend);
    pre = wrap(r.pre, outShape, backend);
  } else {
    const product = backend.matmul(x.storage, [rows, inFeatures], w.storage, w.shape, false, true, [], rows, outFeatures, inFeatures, b?.storage, residual?.storage);
    out = wrap(product, outShape, backend);
  }
  // the residual's gradient is the output's, handed on as it is
  const inputs = [x, weight, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  // the bias gradient is the column sums of the output's gradient, which the kernel that wrote it may attach
  const sumsServeBias = !pre && !!bias?.requiresGrad && bias.dtype === 'float32';
  record('linear', out, inputs, (g, takePending) => {
    // through the activation first: the gradient of the product's output
    const dy = pre ? wrap(backend.binary('geluBackward', pre.storage, pre.shape, g.storage, g.shape, g.shape), g.shape, backend) : g;
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      // x's other gradients so far are added by the product (as a residual is in the forward)
      const pending = takePending(0, x.dtype);
      const product = backend.matmul(dy.storage, [rows, outFeatures], w.storage, w.shape, false, false, [], rows, inFeatures, outFeatures, null, pending?.storage);
      dx = wrap(product, x.shape, backend);
      pending?.dispose();
    }
    let dWeight: Tensor | null = null;
    let dBias: Tensor | null = sumsServeBias ? g.takeDerived('columnSums', outFeatures) : null;
    if (weight.requiresGrad || (bias?.requiresGrad && !dBias)) {
      const r = backend.linearGrads(dy.storage, x.storage, rows, inFeatures, outFeatures, !!bias?.requiresGrad && !dBias, weight.dtype);
      dWeight = wrap(r.weight, weight.shape, backend);
      if (r.bias) dBias = wrap(r.bias, [outFeatures], backend);
      if (!weight.requiresGrad) {
        dWeight.dispose();
        dWeight = null;
      }
    }
    if (dy !== g) dy.dispose();
    return [dx, dWeight, ...(bias ? [dBias] : []), ...(residual ? [g] : [])];
  }, sumsServeBias ? { columnSums: outFeatures } : undefined);
  if (!out.gradNode) {
    for (const copy of [w, b, pre]) if (copy && copy !== weight && copy !== bias && copy !== weight.keptCopy && copy !== bias?.keptCopy) copy.dispose();
  }
  return out;
}
