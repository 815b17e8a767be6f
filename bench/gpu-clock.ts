/**
 * The GPU's clock and power while a benchmark runs, sampled by nvidia-smi every 100 ms: at its power
 * limit the card lowers its clock, so a step's time depends on the work around it as well as its own.
 * A sampler that cannot start (no nvidia-smi) reports null.
 */
import { spawn } from 'node:child_process';
import { median } from './median.js';

export interface ClockSummary {
  /** Median SM clock, MHz. */
  smMhz: number;
  /** Median power draw, W, and the limit. */
  watts: number;
  limitWatts: number;
  /** Share of the samples in which the power cap held the clock down. */
  powerCapped: number;
}

// clocks_event_reasons bit of the software power cap
const SW_POWER_CAP = 0x4n;

export function startClockSampler(): { stop(): Promise<ClockSummary | null> } {
  let text = '';
  let failed = false;
  const child = spawn('nvidia-smi', [
    '--query-gpu=clocks.sm,power.draw.instant,power.limit,clocks_event_reasons.active', '--format=csv,noheader,nounits', '-lms', '100',
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  child.on('error', () => { failed = true; });
  child.stdout.on('data', (chunk: Buffer) => { text += chunk.toString(); });
  return {
    async stop(): Promise<ClockSummary | null> {
      // the samples taken while the caller held the event loop are still in the pipe
      await new Promise((r) => setTimeout(r, 200));
      child.kill();
      if (failed) return null;
      const rows = text.trim().split('\n').map((l) => l.split(',').map((f) => f.trim())).filter((f) => f.length === 4 && f.every((x) => x !== ''));
      if (rows.length === 0) return null;
      return {
        smMhz: median(rows.map((r) => Number(r[0]))),
        watts: median(rows.map((r) => Number(r[1]))),
        limitWatts: Number(rows[0]![2]),
        powerCapped: rows.filter((r) => /^0x[0-9a-f]+$/i.test(r[3]!) && (BigInt(r[3]!) & SW_POWER_CAP) !== 0n).length / rows.length,
      };
    },
  };
}
