import type { Device } from '../backend/backend.js';
import { check } from '../errors.js';
import * as T from '../tensor/index.js';
import type { FloatDType, Tensor } from '../tensor/index.js';

/**
 * XPos (Sun et al. 2022, "A Length-Extrapolatable Transformer"): rotary position embedding of interleaved
 * pairs (dims 2i, 2i+1 rotated by n * 10000^(-2i/D)) with an exponential decay: q at position n is
 * multiplied by zeta_i^((n - c)/scaleBase) and k by zeta_i^(-(n - c)/scaleBase), with
 * zeta_i = (2i/D + 0.4)/1.4 in (0.28, 1]. Then q_m . k_n carries zeta_i^((m - n)/scaleBase): it depends
 * on m - n only, and decays with distance.
 *
 * The center c cancels in every product; it only keeps the factors representable. A full forward over N
 * tokens uses c = floor(N/2); a decode cache fixes c once for its whole life. Two centers give the same
 * products up to rounding (exp(a) exp(b) against exp(a + b)).
 *
 * Bound: the largest factor is zeta_0^(-|n - c|/scaleBase) with zeta_0 = 0.4/1.4, i.e.
 * exp(|n - c| ln(3.5)/scaleBase). We keep it within 2^±100, so that q and k stay normal float32 (and
 * bf16) numbers with 2^±26 of headroom for their own magnitudes: |n - c| <= 55.3 * scaleBase, which is
 * 28,328 positions for scaleBase 512, so full sequences of up to 56,657 tokens. Longer sequences need a
 * larger scaleBase (the bound grows linearly with it).
 */

const ZETA_0 = 0.4 / 1.4;
/** The largest natural log of a scale factor we allow (2^100). */
export const XPOS_MAX_LOG_SCALE = 100 * Math.LN2;

/** zeta_i = (2i/D + 0.4)/1.4 for every pair i of a head of `headDim` dims. */
export function xposZeta(headDim: number): Float64Array {
  const half = headDim / 2;
  const z = new Float64Array(half);
  for (let i = 0; i < half; i++) z[i] = ((2 * i) / headDim + 0.4) / 1.4;
  return z;
}

/** Rotation frequencies 10000^(-2i/D). */
export function rotaryFrequencies(headDim: number): Float64Array {
  const half = headDim / 2;
  const f = new Float64Array(half);
  for (let i = 0; i < half; i++) f[i] = Math.pow(10000, (-2 * i) / headDim);
  return f;
}

/** The largest |position - center| whose scale factors stay within 2^±100. */
export function xposMaxOffset(scaleBase: number): number {
  return Math.floor((XPOS_MAX_LOG_SCALE * scaleBase) / -Math.log(ZETA_0));
}

/** The longest sequence a full forward can take: centered at floor(N/2), its offsets reach floor(N/2). */
export function xposMaxLength(scaleBase: number): number {
  return 2 * xposMaxOffset(scaleBase) + 1;
}

/** The center a full forward over `length` tokens uses. */
export function xposCenter(length: number): number {
  return Math.floor(length / 2);
}

/**
 * Per-position factors for positions [start, start + length), shaped [length, 1, D] to broadcast over
 * [B, N, H, D]: rotate(x)[e] = x[e] * cos[e] + x[e ^ 1] * sin[e] (T.rotatePairs), with the sign of the rotation in `sin`.
 */
export interface XPosTables {
  qCos: Tensor;
  qSin: Tensor;
  kCos: Tensor;
  kSin: Tensor;
}

interface HostTables {
  key: string;
  qCos: Float64Array; qSin: Float64Array; kCos: Float64Array; kSin: Float64Array;
}

// one entry: training calls forward with the same length again and again
let memo: HostTables | null = null;

function hostTables(headDim: number, scaleBase: number, start: number, length: number, center: number): HostTables {
  const key = `${headDim}/${scaleBase}/${start}/${length}/${center}`;
  if (memo?.key === key) return memo;
  const zeta = xposZeta(headDim);
  const logZeta = zeta.map(Math.log);
  const freq = rotaryFrequencies(headDim);
  const half = headDim / 2;
  const size = length * headDim;
  const t: HostTables = {
    key, qCos: new Float64Array(size), qSin: new Float64Array(size), kCos: new Float64Array(size), kSin: new Float64Array(size),
  };
  for (let j = 0; j < length; j++) {
    const n = start + j;
    const rel = (n - center) / scaleBase;
    for (let i = 0; i < half; i++) {
      // the angle uses the absolute position, so every center gives bit-identical rotations
      const angle = n * freq[i]!;
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const up = Math.exp(rel * logZeta[i]!);
      const down = Math.exp(-rel * logZeta[i]!);
      const e = j * headDim + 2 * i;
      t.qCos[e] = t.qCos[e + 1] = c * up;
      t.qSin[e] = -s * up;
      t.qSin[e + 1] = s * up;
      t.kCos[e] = t.kCos[e + 1] = c * down;
      t.kSin[e] = -s * down;
      t.kSin[e + 1] = s * down;
    }
  }
  memo = t;
  return t;
}

/** The XPos factors for positions [start, start + length) around `center`, as constant tensors. */
export function xposTables(
  headDim: number, scaleBase: number, start: number, length: number, center: number,
  options: { dtype: FloatDType; device: Device },
): XPosTables {
  check(Number.isInteger(headDim) && headDim > 0 && headDim % 2 === 0, `XPos: head dim ${headDim} must be a positive even integer`);
  check(Number.isFinite(scaleBase) && scaleBase > 0, `XPos: scaleBase = ${scaleBase} must be a positive number`);
  const maxOffset = xposMaxOffset(scaleBase);
  const worst = Math.max(Math.abs(start - center), Math.abs(start + length - 1 - center));
  check(
    worst <= maxOffset,
    () => `XPos: position ${start + length - 1} is ${worst} from the center ${center}, past the float32-safe ${maxOffset} ` +
      `for scaleBase ${scaleBase}; use a shorter sequence or a larger xposScaleBase`,
  );
  const h = hostTables(headDim, scaleBase, start, length, center);
  const shape = [length, 1, headDim];
  const make = (data: Float64Array): Tensor => T.tensor(data, shape, options);
  return { qCos: make(h.qCos), qSin: make(h.qSin), kCos: make(h.kCos), kSin: make(h.kSin) };
}

/**
 * The tables of a module's last call, kept on its device: a training run asks for the same positions at
 * every step and every layer, and building and uploading them costs milliseconds. `get` hands out views,
 * which the caller's scope frees as usual; the kept tables go when the positions change or on dispose().
 */
export class XPosTableCache {
  private key = '';
  private kept: XPosTables | null = null;

  constructor(readonly headDim: number, readonly scaleBase: number, readonly options: { dtype: FloatDType; device: Device }) {}

  get(start: number, length: number, center: number): XPosTables {
    const key = `${start}/${length}/${center}`;
    if (this.kept === null || key !== this.key) {
      const made = T.noGrad(() => xposTables(this.headDim, this.scaleBase, start, length, center, this.options));
      this.dispose();
      for (const t of Object.values(made)) T.keep(t);
      this.kept = made;
      this.key = key;
    }
    const k = this.kept;
    const view = (t: Tensor): Tensor => t.shareStorage(t.shape);
    return { qCos: view(k.qCos), qSin: view(k.qSin), kCos: view(k.kCos), kSin: view(k.kSin) };
  }

  dispose(): void {
    if (this.kept) for (const t of Object.values(this.kept)) t.dispose();
    this.kept = null;
  }
}

/** XPos applied to q and k [B, N, H, D] with the tables of their positions. */
export function applyXPos(q: Tensor, k: Tensor, tables: XPosTables): { q: Tensor; k: Tensor } {
  return { q: T.rotatePairs(q, tables.qCos, tables.qSin), k: T.rotatePairs(k, tables.kCos, tables.kSin) };
}
