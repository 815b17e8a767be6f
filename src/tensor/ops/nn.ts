import type { Backend, Storage } from '../../backend/backend.js';
import { derivedWanted, isGradEnabled, isUnitSeed, record } from '../autograd.js';
import type { DType } from '../dtype.js';
import { tidy } from '../scope.js';
import { formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { reshape } from './layout.js';
import { broadcastTo, mul } from './elementwise.js';
import { common, requireFloat, wrap } from './util.js';

function rowsCols(x: Tensor): [number, number] {
  const cols = x.shape[x.rank - 1] ?? 1;
  return [cols === 0 ? 0 : x.size / cols, cols];
}

function softmaxOp(x: Tensor, log: boolean): Tensor {
  requireFloat(log ? 'logSoftmax' : 'softmax', x);
  const [rows, cols] = rowsCols(x);
  const y = wrap(x.backend.softmax(x.storage, rows, cols, log), x.shape, x.backend);
  return record(log ? 'logSoftmax' : 'softmax', y, [x], (g) => [
    wrap(g.backend.softmaxBackward(y.storage, g.storage, rows, cols, log), g.shape, g.backend),
  ]);
}

/** Softmax over the last axis. */
export const softmax = (x: Tensor): Tensor => softmaxOp(x, false);
/** Log-softmax over the last axis. */
export const logSoftmax = (x: Tensor): Tensor => softmaxOp(x, true);

/**
 * Layer normalization over the last axis, with optional scale and shift (of x's dtype, or float32 for
 * bfloat16 x: float32 parameters serve bfloat16 activations as they are).
 */
export function layerNorm(x: Tensor, gamma: Tensor | null, beta: Tensor | null, eps = 1e-5): Tensor {
  return layerNormOp('layerNorm', x, gamma, beta, eps, false);
}

/**
 * layerNorm(gelu(x), gamma, beta): the GELU (tanh form, as `gelu`) computed inside the normalization's
 * passes and never stored, so the backward keeps only x, the pre-activation.
 */
export function geluLayerNorm(x: Tensor, gamma: Tensor | null, beta: Tensor | null, eps = 1e-5): Tensor {
  return layerNormOp('geluLayerNorm', x, gamma, beta, eps, true);
}

function layerNormOp(op: string, x: Tensor, gamma: Tensor | null, beta: Tensor | null, eps: number, geluInput: boolean): Tensor {
  requireFloat(op, x);
  const [rows, cols] = rowsCols(x);
  for (const [name, p] of [['gamma', gamma], ['beta', beta]] as const) {
    if (p && !(p.rank === 1 && p.shape[0] === cols)) {
      throw new Error(`${op}: ${name} of shape ${formatShape(p.shape)} does not match the last axis (${cols})`);
    }
    if (p && x.dtype === 'bfloat16' && p.dtype === 'float32') {
      if (p.device !== x.device) throw new Error(`${op}: tensors on different devices (${x.device} and ${p.device})`);
    } else if (p) {
      common(op, x, p);
    }
  }
  const backend = x.backend;
  const r = backend.layerNorm(x.storage, gamma?.storage ?? null, beta?.storage ?? null, rows, cols, eps, { geluInput });
  const y = wrap(r.y, x.shape, backend);
  const mean = wrap(r.mean, [rows], backend);
  const rstd = wrap(r.rstd, [rows], backend);
  const inputs = [x, ...(gamma ? [gamma] : []), ...(beta ? [beta] : [])];
  record(op, y, inputs, (g, takePending) => {
    // x's other gradients so far are added by the same kernel
    const pending = takePending(0, x.dtype);
    // what the formula that made x takes from its gradient, from this pass: dx's column sums (a bias
    // gradient), dx's dot products with x (an attention's rowsum(dO * O))
    const dots = derivedWanted(x, 'outputDots');
    const grads = backend.layerNormBackward(
      g.storage, x.storage, gamma?.storage ?? null, mean.storage, rstd.storage, rows, cols, beta !== null, {
        geluInput, addend: pending?.storage, dxColumnSums: derivedWanted(x, 'columnSums') === cols,
        ...(dots > 0 && cols % dots === 0 ? { rowDots: dots } : {}),
      },
    );
    pending?.dispose();
    const dx = wrap(grads.dx, x.shape, backend);
    if (grads.dxColumnSums) dx.attachDerived('columnSums', grads.dxColumnSums, cols);
    if (grads.dxRowDots) dx.attachDerived('outputDots', grads.dxRowDots, dots);
    const out: Tensor[] = [dx];
    if (gamma) out.push(wrap(grads.dGamma!, gamma.shape, backend));
    if (beta) out.push(wrap(grads.dBeta!, beta.shape, backend));
    return out;
  });
  if (!y.gradNode) {
    mean.dispose();
    rstd.dispose();
  }
  return y;
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (0 loss, no gradient) and not counted in the mean. */
  ignoreIndex?: number;
  reduction?: 'mean' | 'sum' | 'none';
  /**
   * How many leading columns of the logits are real classes (default: all V). The columns past them are
   * padding (a vocabulary padded for aligned matrix products): left out of the softmax, never a valid
   * target, and their gradient is 0.
   */
  classes?: number;
  /**
   * Write the gradient of the logits in the forward pass, from the same reads of the logits (reduction
   * 'mean' or 'sum', while gradients are recorded): a backward that starts from this loss with no gradient
   * given (`loss.backward()`) then hands it on without another pass over the logits. Any other backward
   * computes the gradient as without it; only the forward's work is lost.
   */
  gradientInForward?: boolean;
}

/**
 * Softmax cross-entropy of `logits` [..., V] against int32 `targets` [...]. Fused: the softmax is never
 * materialized in the forward pass. bfloat16 logits give a float32 loss.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  requireFloat('crossEntropy', logits);
  if (targets.dtype !== 'int32') throw new Error(`crossEntropy: targets must be int32, got ${targets.dtype}`);
  if (!shapesEqual(logits.shape.slice(0, -1), targets.shape)) {
    throw new Error(`crossEntropy: logits ${formatShape(logits.shape)} and targets ${formatShape(targets.shape)} do not match`);
  }
  const ignoreIndex = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? 'mean';
  const [rows, cols] = rowsCols(logits);
  const classes = options.classes ?? cols;
  if (options.classes !== undefined && !(Number.isInteger(classes) && classes >= 1 && classes <= cols)) {
    throw new RangeError(`crossEntropy: classes = ${String(options.classes)} is not an integer in [1, ${cols}] (the logits' last axis)`);
  }
  const backend = logits.backend;
  // the mean divides by the rows not ignored, counted on the backend: a host read would wait for every
  // queued kernel in the middle of the forward pass on a GPU
  const lossType: DType = logits.dtype === 'float64' ? 'float64' : 'float32';
  const meanScale = reduction === 'mean'
    ? wrap(meanWeight(backend, targets.storage, rows, ignoreIndex, lossType), [1], backend)
    : null;
  const prepare = options.gradientInForward === true && reduction !== 'none' && isGradEnabled() && logits.requiresGrad;
  const r: { loss: Storage; lse: Storage; grad?: Storage } = prepare
    ? backend.crossEntropyWithGrad(logits.storage, targets.storage, rows, cols, ignoreIndex, classes, meanScale?.storage ?? null)
    : backend.crossEntropy(logits.storage, targets.storage, rows, cols, ignoreIndex, classes);
  // the gradient for a unit seed: g = 1 on the sum, or 1 times 1/count on every row of the mean
  const prepared = r.grad ? wrap(r.grad, logits.shape, backend) : null;
  const lse = wrap(r.lse, [rows], backend);
  const perRow = wrap(r.loss, targets.shape, backend);
  let out: Tensor;
  if (reduction === 'none') {
    out = perRow;
  } else {
    let total = wrap(backend.reduce('sum', perRow.storage, [rows], [0]), [1], backend);
    perRow.dispose();
    if (meanScale) {
      const scaled = wrap(backend.binary('mul', total.storage, [1], meanScale.storage, [1], [1]), [1], backend);
      total.dispose();
      total = scaled;
    }
    out = reshape(total, []);
    total.dispose();
  }
  record('crossEntropy', out, [logits], (g) => {
    if (prepared && !prepared.isDisposed) {
      if (isUnitSeed(g)) {
        const handed = prepared.shareStorage(prepared.shape);
        prepared.dispose(); // the view keeps the memory until the backward has used it
        return [handed];
      }
      prepared.dispose();
    }
    // per-row weights of the reduced loss: g itself, or the scalar g (times 1/count for the mean) on every row
    const dLoss = reduction === 'none'
      ? g
      : tidy(() => {
        const rowsOfG = broadcastTo(reshape(g, [1]), [rows]);
        return meanScale ? mul(rowsOfG, meanScale) : rowsOfG;
      });
    // the one definition of the gradient: softmax minus one-hot on the real classes, 0 on the padding
    const d = wrap(
      backend.crossEntropyBackward(logits.storage, targets.storage, lse.storage, dLoss.storage, rows, cols, ignoreIndex, classes),
      logits.shape, backend,
    );
    if (dLoss !== g) dLoss.dispose();
    return [d];
  });
  if (!out.gradNode) {
    lse.dispose();
    meanScale?.dispose();
  }
  return out;
}

/**
 * 1 / max(count, 1) as a one-element storage of `dtype`, with count the targets not equal to
 * `ignoreIndex`, computed on the device: (t > ignore) + (-t > -ignore) is 1 exactly where t != ignore.
 */
function meanWeight(backend: Backend, targets: Storage, rows: number, ignoreIndex: number, dtype: DType): Storage {
  const t = backend.cast(targets, dtype);
  const above = backend.binaryScalar('greater', t, ignoreIndex);
  const negated = backend.unary('neg', t);
  const below = backend.binaryScalar('greater', negated, -ignoreIndex);
  const valid = backend.binary('add', above, [rows], below, [rows], [rows]);
  const count = backend.reduce('sum', valid, [rows], [0]);
  const atLeastOne = backend.binaryScalar('maximum', count, 1);
  const w = backend.unary('reciprocal', atLeastOne);
  for (const s of [t, above, negated, below, valid, count, atLeastOne]) backend.free(s);
  return w;
}

/**
 * Rows of `table` [V, C] picked by int32 `indices` [...]: result [..., C]. With `validRows`, indices must
 * be below it: the rows past it are padding (a padded vocabulary) that no index may pick.
 */
export function embedding(table: Tensor, indices: Tensor, options: { validRows?: number } = {}): Tensor {
  requireFloat('embedding', table);
  if (indices.dtype !== 'int32') throw new Error(`embedding: indices must be int32, got ${indices.dtype}`);
  if (table.rank !== 2) throw new Error(`embedding: table must be 2-D, got ${formatShape(table.shape)}`);
  if (indices.device !== table.device) throw new Error(`embedding: indices on ${indices.device}, table on ${table.device}`);
  const [rowsInTable, cols] = table.shape as [number, number];
  const validRows = options.validRows ?? rowsInTable;
  if (!(Number.isInteger(validRows) && validRows >= 0 && validRows <= rowsInTable)) {
    throw new RangeError(`embedding: validRows = ${String(options.validRows)} is not an integer in [0, ${rowsInTable}] (the table's rows)`);
  }
  const backend = table.backend;
  const out = wrap(backend.gather(table.storage, rowsInTable, cols, indices.storage, validRows), [...indices.shape, cols], backend);
  return record('embedding', out, [table], (g) => [
    wrap(backend.scatterAdd(g.storage, indices.storage, rowsInTable, cols), table.shape, backend),
  ]);
}
