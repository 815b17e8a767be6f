import type { AttentionGeometry } from '../backend/backend.js';
import { check } from '../errors.js';
import { derivedWanted, record } from '../tensor/autograd.js';
import { isFloat } from '../tensor/dtype.js';
import { formatShape, shapesEqual } from '../tensor/shape.js';
import type { Tensor } from '../tensor/tensor.js';
import { rotateUntracked } from '../tensor/ops/rotary.js';
import { wrap } from '../tensor/ops/util.js';
import { attentionConfig, type DilatedAttentionOptions } from './patterns.js';

export interface AttentionResult {
  /** [B, N, H, D] */
  output: Tensor;
  /** [B, N, H], natural log, -Infinity on rows that see no key. Not differentiable. */
  lse: Tensor;
}

/**
 * Checks q, k, v of one attention call ([batch, seqLen, heads, headDim], one float dtype, one device,
 * finite values) and returns their geometry; every message names the offending tensor. On a GPU the
 * finiteness check runs on the device and its error comes at the next wait for the device (reading the
 * loss, say), so that the host never stalls the queue here. `finiteChecked`: inputs whose finiteness a
 * kernel that wrote them already checks (a rotation), not read again here.
 */
export function checkAttentionInputs(q: Tensor, k: Tensor, v: Tensor, finiteChecked: ReadonlySet<Tensor> = new Set()): AttentionGeometry {
  check(q.rank === 4, `q must be [batch, seqLen, heads, headDim], got ${formatShape(q.shape)}`);
  check(shapesEqual(k.shape, q.shape), `k has shape ${formatShape(k.shape)} but q has ${formatShape(q.shape)}`);
  check(shapesEqual(v.shape, q.shape), `v has shape ${formatShape(v.shape)} but q has ${formatShape(q.shape)}`);
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    check(isFloat(t.dtype), `${name} must be a float tensor, got ${t.dtype}`);
    check(t.dtype === q.dtype, `${name} is ${t.dtype} but q is ${q.dtype}`);
    check(t.device === q.device, `${name} is on ${t.device} but q is on ${q.device}`);
  }
  const [batch, seqLen, heads, headDim] = q.shape as [number, number, number, number];
  check(headDim > 0, 'headDim must be positive');
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (!finiteChecked.has(t)) t.backend.checkFinite(t.storage, name);
  }
  return { batch, seqLen, heads, headDim };
}

/** Rotary tables (as rotatePairs takes them) that rotate q and k inside the attention op. */
export interface AttentionRotationTables {
  qCos: Tensor;
  qSin: Tensor;
  kCos: Tensor;
  kSin: Tensor;
}

/**
 * Dilated attention (LongNet), exactly as docs/ATTENTION.md defines it: every pattern (w_i, r_i) contributes its keys to
 * one softmax per query, so the result is the paper's mixture with weights from the log-sum-exps.
 * Differentiable in q, k and v, with the exact gradients (through the mixture weights too).
 *
 * With `rotation`, the attention of rotatePairs(q, qCos, qSin) and rotatePairs(k, kCos, kSin) (XPos), as one
 * op whose gradients are those of the unrotated q and k: a GPU rotates the kernels' float32 gradients back
 * as it writes them, one pass where a rounding and a separate rotation took two.
 */
export function dilatedAttention(
  q: Tensor, k: Tensor, v: Tensor, options: DilatedAttentionOptions & { rotation?: AttentionRotationTables },
): AttentionResult {
  const rotation = options.rotation;
  const backend = q.backend;
  // what the kernels attend with, kept for the backward; rotated q and k are checked as they are written
  const [qa, ka] = rotation
    ? [rotateUntracked(q, rotation.qCos, rotation.qSin, false, 'q'), rotateUntracked(k, rotation.kCos, rotation.kSin, false, 'k')]
    : [q, k];
  const geometry = checkAttentionInputs(qa, ka, v, new Set(rotation ? [qa, ka] : []));
  const config = attentionConfig(options, geometry);
  const r = backend.dilatedAttention(qa.storage, ka.storage, v.storage, geometry, config);
  const { batch, seqLen, heads } = geometry;
  const output = wrap(r.o, q.shape, backend);
  const lse = wrap(r.lse, [batch, seqLen, heads], backend);
  const tables = rotation && {
    qCos: rotation.qCos.storage, qSin: rotation.qSin.storage, kCos: rotation.kCos.storage, kSin: rotation.kSin.storage,
  };
  record('dilatedAttention', output, [q, k, v], (g) => {
    // the column sums of dq, dk and dv where the layers that made q, k and v take their bias gradients from
    // them; rowsum(dO * O) where the kernel that wrote dO made it
    const width = geometry.heads * geometry.headDim;
    const dsum = g.takeDerived('outputDots', geometry.headDim);
    const grads = backend.dilatedAttentionBackward(
      qa.storage, ka.storage, v.storage, output.storage, lse.storage, g.storage, geometry, config, {
        ...(tables ? { rotation: tables } : {}),
        columnSums: [q, k, v].map((t) => derivedWanted(t, 'columnSums') === width),
        ...(dsum ? { dsum: dsum.storage } : {}),
      },
    );
    dsum?.dispose();
    return [grads.dq, grads.dk, grads.dv].map((d, i) => {
      const t = wrap(d, q.shape, backend);
      const sums = grads.columnSums?.[i];
      if (sums) t.attachDerived('columnSums', sums, width);
      return t;
    });
  }, { outputDots: geometry.headDim });
  return { output, lse };
}

/** Vanilla softmax attention: dilated attention with the single pattern (N, 1). */
export function denseAttention(
  q: Tensor, k: Tensor, v: Tensor, options: { causal?: boolean; scale?: number; rotation?: AttentionRotationTables } = {},
): AttentionResult {
  const seqLen = Math.max(q.shape[1] ?? 1, 1);
  return dilatedAttention(q, k, v, { segmentLengths: [seqLen], dilationRates: [1], ...options });
}
