import type { AttentionConfig, AttentionGeometry, AttentionPattern, HeadOffsets } from '../backend/backend.js';
import { check } from '../errors.js';

export interface DilatedAttentionOptions {
  /** Segment lengths w_i, one per pattern. */
  segmentLengths: readonly number[];
  /** Dilation rates r_i, one per pattern. */
  dilationRates: readonly number[];
  causal?: boolean;
  /** Softmax scale; 1/sqrt(headDim) by default. */
  scale?: number;
  /** `paper` (h mod r, the default) or `blocked` (torchscale's convention, to load its models). */
  headOffsets?: HeadOffsets;
}

/** Checks a schedule and returns it as patterns; every message names the offending argument. */
export function parsePatterns(segmentLengths: readonly number[], dilationRates: readonly number[]): AttentionPattern[] {
  check(Array.isArray(segmentLengths) && Array.isArray(dilationRates), 'segmentLengths and dilationRates must be arrays of integers');
  check(segmentLengths.length > 0, 'segmentLengths: the pattern list is empty');
  check(
    segmentLengths.length === dilationRates.length,
    `segmentLengths has ${segmentLengths.length} entries but dilationRates has ${dilationRates.length}`,
  );
  return segmentLengths.map((w, i) => {
    const r = dilationRates[i]!;
    check(Number.isInteger(w) && w > 0, `segmentLengths[${i}] = ${w} is not a positive integer`);
    check(Number.isInteger(r) && r > 0, `dilationRates[${i}] = ${r} is not a positive integer`);
    check(r <= w, `dilationRates[${i}] = ${r} is larger than segmentLengths[${i}] = ${w}`);
    return { segmentLength: w, dilationRate: r };
  });
}

/** The full configuration of one call, validated against the geometry. */
export function attentionConfig(options: DilatedAttentionOptions, geometry: AttentionGeometry): AttentionConfig {
  const patterns = parsePatterns(options.segmentLengths, options.dilationRates);
  const scale = options.scale ?? 1 / Math.sqrt(geometry.headDim);
  check(typeof scale === 'number' && Number.isFinite(scale), `scale = ${options.scale} is not a finite number`);
  const headOffsets = options.headOffsets ?? 'paper';
  check(headOffsets === 'paper' || headOffsets === 'blocked', `headOffsets = ${String(headOffsets)} is not 'paper' or 'blocked'`);
  return { patterns, causal: options.causal ?? false, scale, headOffsets };
}

/** The offset of head `h` under dilation `r` (docs/ATTENTION.md). */
export function headOffset(h: number, heads: number, r: number, mode: HeadOffsets): number {
  return mode === 'paper' ? h % r : Math.floor(h / Math.ceil(heads / r));
}
