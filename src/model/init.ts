import { check } from '../errors.js';
import { Rng } from '../tensor/index.js';
import * as T from '../tensor/index.js';
import type { Tensor } from '../tensor/index.js';
import type { ParameterOptions } from './module.js';
import { resolveParameterOptions } from './module.js';

/** Standard deviation of Xavier (Glorot) normal init: sqrt(2 / (fanIn + fanOut)). */
export function xavierStd(fanIn: number, fanOut: number): number {
  return Math.sqrt(2 / (fanIn + fanOut));
}

/**
 * MAGNETO's (Sub-LN) init scale for a decoder-only model of `layers` layers: gamma = sqrt(log(2L)).
 * W_1, W_2, W_o and W_v are multiplied by it (Wang et al. 2022, "Foundation Transformers").
 */
export function magnetoGamma(layers: number): number {
  return Math.sqrt(Math.log(2 * layers));
}

/** A normal(0, std) tensor of `shape` (zeros when std is 0) on the device and in the dtype asked for. */
export function normalTensor(shape: readonly number[], std: number, rng: Rng, options: ParameterOptions = {}): Tensor {
  const { device, dtype } = resolveParameterOptions(options);
  if (std === 0) return T.zeros(shape, { device, dtype });
  return T.randn(shape, { rng, std, device, dtype });
}

/**
 * A [rows, cols] tensor whose first `drawnRows` rows are normal(0, std) and the rest zeros (padding).
 * Only the drawn rows take numbers from `rng`, so padding leaves every later draw as it was.
 */
export function paddedNormalTensor(
  rows: number, cols: number, drawnRows: number, std: number, rng: Rng, options: ParameterOptions = {},
): Tensor {
  check(Number.isInteger(drawnRows) && drawnRows > 0 && drawnRows <= rows, `initialized rows ${drawnRows} is not an integer in [1, ${rows}]`);
  if (drawnRows === rows) return normalTensor([rows, cols], std, rng, options);
  const { device, dtype } = resolveParameterOptions(options);
  return T.tidy(() => T.concat([normalTensor([drawnRows, cols], std, rng, options), T.zeros([rows - drawnRows, cols], { device, dtype })], 0));
}

export function constantTensor(shape: readonly number[], value: number, options: ParameterOptions = {}): Tensor {
  const { device, dtype } = resolveParameterOptions(options);
  return T.full(shape, value, { device, dtype });
}
