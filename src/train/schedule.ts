/**
 * Learning-rate schedule of the paper's recipe (fairseq's `polynomial_decay`): linear warm-up from 0 to
 * the peak over `warmup` updates, then polynomial decay (power 1: linear) to `endLr` at the last update.
 */
import { check } from '../errors.js';

export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  lr: number;
  /** Number of optimizer updates in the whole run. */
  totalSteps: number;
  /** Updates of linear warm-up. */
  warmup: number;
  /** Learning rate at the last update (0 by default). */
  endLr?: number;
  /** Exponent of the decay (1: linear). */
  power?: number;
}

/** The paper's warm-up length (Table 3). */
export const PAPER_WARMUP = 750;

/**
 * The warm-up actually used for a run of `totalSteps` updates: the paper's 750, but never more than a
 * tenth of the run, so that a short run (a few hundred steps on a CPU) still spends most of its updates
 * near the peak rate instead of warming up for all of them.
 */
export function defaultWarmup(totalSteps: number): number {
  return Math.max(1, Math.min(PAPER_WARMUP, Math.floor(totalSteps / 10)));
}

export function checkSchedule(o: ScheduleOptions): void {
  check(Number.isInteger(o.totalSteps) && o.totalSteps >= 1, `steps must be a positive integer, got ${o.totalSteps}`);
  check(Number.isInteger(o.warmup) && o.warmup >= 0, `warmup must be a non-negative integer, got ${o.warmup}`);
  check(o.warmup <= o.totalSteps, `warmup (${o.warmup}) is longer than the run (${o.totalSteps} steps)`);
  check(Number.isFinite(o.lr) && o.lr > 0, `lr must be a positive number, got ${o.lr}`);
  const endLr = o.endLr ?? 0;
  check(Number.isFinite(endLr) && endLr >= 0 && endLr <= o.lr, `the final lr (${endLr}) must be in [0, lr = ${o.lr}]`);
  const power = o.power ?? 1;
  check(Number.isFinite(power) && power > 0, `the decay power must be positive, got ${power}`);
}

/** The learning rate of update `step` (1-based: the first update is step 1, the last `totalSteps`). */
export function learningRate(o: ScheduleOptions, step: number): number {
  const endLr = o.endLr ?? 0;
  const power = o.power ?? 1;
  if (step <= o.warmup) return (o.lr * step) / o.warmup;
  const span = o.totalSteps - o.warmup;
  if (span <= 0) return o.lr;
  const remaining = Math.max(0, 1 - (step - o.warmup) / span);
  return endLr + (o.lr - endLr) * Math.pow(remaining, power);
}
