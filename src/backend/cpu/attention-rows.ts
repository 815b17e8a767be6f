/**
 * Moving the selected rows of one head between the [B, N, H, D] tensors and contiguous float64 tiles.
 * Contiguous tiles keep the inner loops on one array type and away from cache-set conflicts that the
 * large strides of dilated rows (r * H * D elements) would cause.
 */
import type { FloatArray } from '../../tensor/dtype.js';

/** dst[j*D + d] = mul * src[base + j*stride + d] for j < count, d < D. Returns dst. */
export function gatherRows(
  src: FloatArray, base: number, stride: number, count: number, D: number, dst: Float64Array, mul: number,
): Float64Array {
  for (let j = 0; j < count; j++) {
    const from = base + j * stride;
    const to = j * D;
    for (let d = 0; d < D; d++) dst[to + d] = src[from + d]! * mul;
  }
  return dst;
}

/** dst[j] = src[base + j*stride] for j < count. Returns dst. */
export function gatherScalars(
  src: FloatArray, base: number, stride: number, count: number, dst: Float64Array,
): Float64Array {
  for (let j = 0; j < count; j++) dst[j] = src[base + j * stride]!;
  return dst;
}
