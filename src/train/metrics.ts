/**
 * Per-step training metrics, one JSON object a line in `DIR/metrics.jsonl`: appended as training goes
 * (a crash loses at most the line being written), trimmed back to the checkpoint's step on resume so a
 * resumed run never logs the same step twice.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';

export interface StepRecord {
  step: number;
  /** Mean training loss of the step's tokens (nats per token); absent on step 0 (before training). */
  loss?: number;
  lr?: number;
  /** Global gradient norm before clipping. */
  gradNorm?: number;
  /** Training tokens seen so far. */
  tokens: number;
  /** Throughput of this step. */
  tokensPerSecond?: number;
  /** Seconds of training so far (across resumes). */
  elapsed: number;
  /** Validation loss, on steps where it was measured. */
  valLoss?: number;
  valPerplexity?: number;
}

export function appendMetrics(path: string, record: StepRecord): void {
  appendFileSync(path, `${JSON.stringify(record)}\n`);
}

/** The records of a metrics file; a missing file is empty, a torn or foreign line is skipped. */
export function readMetrics(path: string): StepRecord[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: StepRecord[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const r = JSON.parse(line) as Partial<StepRecord>;
      if (typeof r.step === 'number' && Number.isInteger(r.step)) out.push(r as StepRecord);
    } catch {
      // the last line of a killed run may be cut short
    }
  }
  return out;
}

/** Keeps only the records up to `step` (rewritten atomically). */
export function truncateMetrics(path: string, step: number): StepRecord[] {
  const kept = readMetrics(path).filter((r) => r.step <= step);
  writeFileAtomic(path, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return kept;
}
