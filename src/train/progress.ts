/**
 * The training progress line: step/total, loss, tokens/s and ETA. On a terminal it redraws one line in
 * place (with a bar); into a pipe or file it prints plain lines, every `every` steps plus the first and
 * the last, so logs stay short and machine-readable.
 */
export interface ProgressFields {
  step: number;
  total: number;
  loss: number;
  lr: number;
  tokensPerSecond: number;
  /** Seconds left at the current rate. */
  etaSeconds: number;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatRate(tokensPerSecond: number): string {
  if (tokensPerSecond >= 1e6) return `${(tokensPerSecond / 1e6).toFixed(2)}M`;
  if (tokensPerSecond >= 1e4) return `${(tokensPerSecond / 1e3).toFixed(1)}k`;
  return tokensPerSecond.toFixed(0);
}

export function progressText(f: ProgressFields): string {
  const width = String(f.total).length;
  return (
    `step ${String(f.step).padStart(width)}/${f.total}  loss ${f.loss.toFixed(4)}  lr ${f.lr.toExponential(2)}  ` +
    `${formatRate(f.tokensPerSecond)} tok/s  ETA ${formatDuration(f.etaSeconds)}`
  );
}

function bar(step: number, total: number, width = 20): string {
  const filled = Math.round((width * step) / Math.max(total, 1));
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

export class ProgressLine {
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream | { write(s: string): unknown; isTTY?: boolean },
    private readonly every: number,
  ) {}

  private get tty(): boolean {
    return this.out.isTTY === true;
  }

  update(f: ProgressFields): void {
    if (this.tty) {
      this.out.write(`\r\x1b[2K${bar(f.step, f.total)} ${progressText(f)}`);
      this.drawn = true;
    } else if (f.step === 1 || f.step === f.total || f.step % this.every === 0) {
      this.out.write(`${progressText(f)}\n`);
    }
  }

  /** Prints a whole line (validation results, saves) without tearing the redrawn one. */
  message(text: string): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[2K');
    this.out.write(`${text}\n`);
    this.drawn = false;
  }

  /** Ends the redrawn line so later output starts on a fresh one. */
  finish(): void {
    if (this.tty && this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
