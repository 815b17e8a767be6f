/** Parsers for flag values; each error names the flag and quotes what was given. */
import { InputError } from '../errors.js';
import type { Args } from './command.js';

/** "2048,4096" -> [2048, 4096]; every item a positive integer, at least one item. */
export function parsePositiveIntList(flag: string, text: string): number[] {
  const items = text.split(',').map((s) => s.trim());
  if (text.trim() === '') throw new InputError(`--${flag}: empty list`);
  return items.map((item) => {
    if (!/^\d+$/.test(item)) {
      throw new InputError(`--${flag}: "${item}" is not a positive integer (in "${text}")`);
    }
    const n = Number(item);
    if (n === 0 || !Number.isSafeInteger(n)) {
      throw new InputError(`--${flag}: "${item}" is not a positive integer (in "${text}")`);
    }
    return n;
  });
}

/** A finite decimal number (no hex, no empty string, no Infinity/NaN). */
export function parseFiniteNumber(flag: string, text: string): number {
  const t = text.trim();
  const n = Number(t);
  if (t === '' || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t) || !Number.isFinite(n)) {
    throw new InputError(`--${flag}: "${text}" is not a finite number`);
  }
  return n;
}

/** One of `choices`. */
export function parseChoice<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(text)) return text as T;
  throw new InputError(`--${flag}: "${text}" is not one of ${choices.join(', ')}`);
}

/** `--segments` and `--dilations`: equally long lists of positive integers, no dilation above its segment. */
export function readSchedule(args: Args): { segmentLengths: number[]; dilationRates: number[] } {
  const segmentLengths = parsePositiveIntList('segments', args.requireString('segments'));
  const dilationRates = parsePositiveIntList('dilations', args.requireString('dilations'));
  if (segmentLengths.length !== dilationRates.length) {
    throw new InputError(`--segments has ${segmentLengths.length} entries but --dilations has ${dilationRates.length}`);
  }
  segmentLengths.forEach((w, i) => {
    const r = dilationRates[i]!;
    if (r > w) throw new InputError(`pattern ${i + 1}: dilation ${r} is larger than its segment length ${w}`);
  });
  return { segmentLengths, dilationRates };
}
