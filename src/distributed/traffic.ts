/**
 * Byte accounting for a communicator: how many bytes each rank sent to each other rank, per kind of
 * operation. Tests use it to check who talks to whom; benchmarks to report exchanged volume.
 */
export interface TrafficTotals {
  readonly sent: number;
  readonly received: number;
}

export class TrafficLog {
  /** bytes[from][to] */
  private bytes: number[][];
  private readonly ops = new Map<string, number[][]>();

  constructor(readonly size: number) {
    this.bytes = TrafficLog.matrix(size);
  }

  private static matrix(size: number): number[][] {
    return Array.from({ length: size }, () => new Array<number>(size).fill(0));
  }

  /** Records one message of `bytes` from world rank `from` to `to`, made by operation `op`. */
  record(op: string, from: number, to: number, bytes: number): void {
    this.bytes[from]![to]! += bytes;
    let m = this.ops.get(op);
    if (m === undefined) {
      m = TrafficLog.matrix(this.size);
      this.ops.set(op, m);
    }
    m[from]![to]! += bytes;
  }

  /** Bytes `from` sent to `to` (all operations, or one). */
  between(from: number, to: number, op?: string): number {
    const m = op === undefined ? this.bytes : this.ops.get(op);
    return m?.[from]?.[to] ?? 0;
  }

  sent(rank: number, op?: string): number {
    let total = 0;
    for (let to = 0; to < this.size; to++) total += this.between(rank, to, op);
    return total;
  }

  received(rank: number, op?: string): number {
    let total = 0;
    for (let from = 0; from < this.size; from++) total += this.between(from, rank, op);
    return total;
  }

  /** Per rank, bytes sent and received. */
  totals(op?: string): TrafficTotals[] {
    return Array.from({ length: this.size }, (_, r) => ({ sent: this.sent(r, op), received: this.received(r, op) }));
  }

  /** The operations seen so far. */
  operations(): string[] {
    return [...this.ops.keys()].sort();
  }

  reset(): void {
    this.bytes = TrafficLog.matrix(this.size);
    this.ops.clear();
  }

  /** A plain-text table: one line per rank with bytes sent and received, per operation and in total. */
  table(): string {
    const ops = this.operations();
    const header = ['rank', ...ops.map((o) => `${o} sent/recv`), 'total sent/recv'];
    const rows = Array.from({ length: this.size }, (_, r) => [
      String(r),
      ...ops.map((o) => `${this.sent(r, o)}/${this.received(r, o)}`),
      `${this.sent(r)}/${this.received(r)}`,
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
    return [line(header), ...rows.map(line)].join('\n');
  }
}
