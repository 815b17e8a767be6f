import type { AdamWHyper } from '../backend.js';
import type { FloatArray } from '../../tensor/dtype.js';
import { allocLike } from './storage.js';

/** Softmax (or log-softmax) of rows [start, end) into out. */
export function softmaxRows(x: FloatArray, cols: number, log: boolean, out: FloatArray, start: number, end: number): void {
  for (let r = start; r < end; r++) {
    const base = r * cols;
    let max = -Infinity;
    for (let j = 0; j < cols; j++) if (x[base + j]! > max) max = x[base + j]!;
    if (max === -Infinity) max = 0; // an all -inf row: softmax is undefined; keep it NaN-free where possible
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.exp(x[base + j]! - max);
    if (log) {
      const lse = max + Math.log(sum);
      for (let j = 0; j < cols; j++) out[base + j] = x[base + j]! - lse;
    } else {
      for (let j = 0; j < cols; j++) out[base + j] = Math.exp(x[base + j]! - max) / sum;
    }
  }
}

/** The gradient of softmax (or log-softmax) output y for rows [start, end) into dx. */
export function softmaxBackwardRows(
  y: FloatArray, dy: FloatArray, cols: number, log: boolean, dx: FloatArray, start: number, end: number,
): void {
  for (let r = start; r < end; r++) {
    const base = r * cols;
    if (log) {
      // y = log softmax: dx = dy - softmax * sum(dy)
      let s = 0;
      for (let j = 0; j < cols; j++) s += dy[base + j]!;
      for (let j = 0; j < cols; j++) dx[base + j] = dy[base + j]! - Math.exp(y[base + j]!) * s;
    } else {
      // y = softmax: dx = y * (dy - sum(dy * y))
      let s = 0;
      for (let j = 0; j < cols; j++) s += dy[base + j]! * y[base + j]!;
      for (let j = 0; j < cols; j++) dx[base + j] = y[base + j]! * (dy[base + j]! - s);
    }
  }
}

/** Layer norm of rows [start, end) into y, with each row's mean and 1 / std. */
export function layerNormRows(
  x: FloatArray, gamma: FloatArray | null, beta: FloatArray | null, cols: number, eps: number,
  y: FloatArray, mean: FloatArray, rstd: FloatArray, start: number, end: number,
): void {
  for (let r = start; r < end; r++) {
    const base = r * cols;
    let mu = 0;
    for (let j = 0; j < cols; j++) mu += x[base + j]!;
    mu /= cols;
    let variance = 0;
    for (let j = 0; j < cols; j++) {
      const d = x[base + j]! - mu;
      variance += d * d;
    }
    const rs = 1 / Math.sqrt(variance / cols + eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (let j = 0; j < cols; j++) {
      let v = (x[base + j]! - mu) * rs;
      if (gamma) v *= gamma[j]!;
      if (beta) v += beta[j]!;
      y[base + j] = v;
    }
  }
}

/** dx of layer norm for rows [start, end): rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma. */
export function layerNormBackwardRows(
  dy: FloatArray, x: FloatArray, gamma: FloatArray | null, mean: FloatArray, rstd: FloatArray, cols: number,
  dx: FloatArray, start: number, end: number,
): void {
  for (let r = start; r < end; r++) {
    const base = r * cols;
    const mu = mean[r]!;
    const rs = rstd[r]!;
    let sumG = 0;
    let sumGX = 0;
    for (let j = 0; j < cols; j++) {
      const xhat = (x[base + j]! - mu) * rs;
      const g = gamma ? dy[base + j]! * gamma[j]! : dy[base + j]!;
      sumG += g;
      sumGX += g * xhat;
    }
    const meanG = sumG / cols;
    const meanGX = sumGX / cols;
    for (let j = 0; j < cols; j++) {
      const xhat = (x[base + j]! - mu) * rs;
      const g = gamma ? dy[base + j]! * gamma[j]! : dy[base + j]!;
      dx[base + j] = rs * (g - meanG - xhat * meanGX);
    }
  }
}

/** The gradients of gamma and beta: sums over every row, in row order. */
export function layerNormParamGrads(
  dy: FloatArray, x: FloatArray, mean: FloatArray, rstd: FloatArray, rows: number, cols: number,
  dGamma: FloatArray | null, dBeta: FloatArray | null,
): void {
  if (!dGamma && !dBeta) return;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const mu = mean[r]!;
    const rs = rstd[r]!;
    for (let j = 0; j < cols; j++) {
      if (dGamma) dGamma[j] += dy[base + j]! * ((x[base + j]! - mu) * rs);
      if (dBeta) dBeta[j] += dy[base + j]!;
    }
  }
}

/**
 * Throws for the first target (in row order) that is neither ignoreIndex nor a class in [0, classes).
 * `classes` <= cols: the columns past it are padding (a padded vocabulary), never a class.
 */
export function checkTargets(targets: Int32Array, rows: number, classes: number, ignoreIndex: number): void {
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t !== ignoreIndex && !(t >= 0 && t < classes)) {
      throw new RangeError(`crossEntropy: target ${t} at row ${r} is outside [0, ${classes})`);
    }
  }
}

/**
 * Cross-entropy of rows [start, end) of [rows, cols] logits over their first `classes` columns (the rest
 * are padding, left out of the softmax): each row's log-sum-exp, and its loss unless its target is
 * ignored. Targets are checked first.
 */
export function crossEntropyRows(
  logits: FloatArray, targets: Int32Array, cols: number, classes: number, ignoreIndex: number,
  loss: FloatArray, lse: FloatArray, start: number, end: number,
): void {
  for (let r = start; r < end; r++) {
    const base = r * cols;
    let max = -Infinity;
    for (let j = 0; j < classes; j++) if (logits[base + j]! > max) max = logits[base + j]!;
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(logits[base + j]! - max);
    const l = max + Math.log(sum);
    lse[r] = l;
    const t = targets[r]!;
    if (t === ignoreIndex) continue;
    loss[r] = l - logits[base + t]!;
  }
}

/**
 * The gradient of cross-entropy for rows [start, end) into d, which arrives zero-filled: it stays zero
 * where the target is ignored and on the padding columns past `classes`.
 */
export function crossEntropyBackwardRows(
  logits: FloatArray, targets: Int32Array, lse: FloatArray, dLoss: FloatArray, cols: number, classes: number, ignoreIndex: number,
  d: FloatArray, start: number, end: number,
): void {
  for (let r = start; r < end; r++) {
    const t = targets[r]!;
    if (t === ignoreIndex) continue;
    const base = r * cols;
    const w = dLoss[r]!;
    const l = lse[r]!;
    for (let j = 0; j < classes; j++) d[base + j] = w * Math.exp(logits[base + j]! - l);
    d[base + t] -= w;
  }
}

/** Rows of `table` picked by `indices`, each below validRows (<= rowsInTable: the rows past it are padding). */
export function gatherKernel(table: FloatArray, rowsInTable: number, cols: number, indices: Int32Array, validRows = rowsInTable): FloatArray {
  if (!(Number.isInteger(validRows) && validRows >= 0 && validRows <= rowsInTable)) {
    throw new RangeError(`embedding: validRows = ${validRows} is not an integer in [0, ${rowsInTable}]`);
  }
  const out = allocLike(table, indices.length * cols) as FloatArray;
  for (let i = 0; i < indices.length; i++) {
    const row = indices[i]!;
    if (!(row >= 0 && row < validRows)) throw new RangeError(`embedding: index ${row} is outside [0, ${validRows})`);
    out.set(table.subarray(row * cols, (row + 1) * cols), i * cols);
  }
  return out;
}

export function scatterAddKernel(dOut: FloatArray, indices: Int32Array, rowsInTable: number, cols: number): FloatArray {
  const table = allocLike(dOut, rowsInTable * cols) as FloatArray;
  for (let i = 0; i < indices.length; i++) {
    const base = indices[i]! * cols;
    for (let j = 0; j < cols; j++) table[base + j] += dOut[i * cols + j]!;
  }
  return table;
}

/** AdamW with decoupled weight decay (Loshchilov and Hutter), bias-corrected, in place. */
export function adamwKernel(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray, h: AdamWHyper): void {
  const c1 = 1 - Math.pow(h.beta1, h.step);
  const c2 = 1 - Math.pow(h.beta2, h.step);
  const decay = 1 - h.lr * h.weightDecay;
  const scale = h.gradScale ?? 1;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i]! * scale;
    const mi = h.beta1 * m[i]! + (1 - h.beta1) * g;
    const vi = h.beta2 * v[i]! + (1 - h.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i]! * decay - h.lr * (mi / c1) / (Math.sqrt(vi / c2) + h.eps);
  }
}
