/**
 * Turning SIGINT/SIGTERM into a request to stop between training steps. Steps run synchronously, so a
 * signal is delivered only when the loop yields to the event loop; the loop then saves a checkpoint and
 * exits. While installed, these handlers stand in for the CLI's default ones (which exit at once); a
 * second signal still exits at once, for a user who does not want to wait for the save.
 */
export type StopSignal = 'SIGINT' | 'SIGTERM';

export interface StopFlag {
  /** The signal received, or null. */
  readonly signal: StopSignal | null;
}

export async function withStopSignals<T>(fn: (flag: StopFlag) => Promise<T>): Promise<T> {
  const flag: { signal: StopSignal | null } = { signal: null };
  const signals: StopSignal[] = ['SIGINT', 'SIGTERM'];
  const saved = new Map<StopSignal, ((...args: unknown[]) => void)[]>();
  const handlers = new Map<StopSignal, () => void>();
  for (const s of signals) {
    saved.set(s, process.rawListeners(s) as ((...args: unknown[]) => void)[]);
    process.removeAllListeners(s);
    const handler = (): void => {
      if (flag.signal !== null) {
        process.stderr.write(`\nlongnet: ${s} again: exiting without saving\n`);
        process.exit(s === 'SIGINT' ? 130 : 143);
      }
      flag.signal = s;
    };
    handlers.set(s, handler);
    process.on(s, handler);
  }
  try {
    return await fn(flag);
  } finally {
    for (const s of signals) {
      process.removeListener(s, handlers.get(s)!);
      for (const l of saved.get(s)!) process.on(s, l);
    }
  }
}

/** Lets pending signals (and other events) be handled: call between steps. */
export function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The conventional exit status of a process stopped by `signal` (128 + its number). */
export function signalExitCode(signal: StopSignal): number {
  return signal === 'SIGINT' ? 130 : 143;
}
