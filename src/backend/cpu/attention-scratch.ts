/**
 * Per-thread working memory of the attention kernels, reused from call to call so that no inner loop
 * allocates. Buffers beyond RETAIN elements (dense attention over a long sequence) are dropped after
 * the call instead of being kept for the life of the thread.
 */
const RETAIN = 1 << 20;

export class Scratch {
  private readonly buffers: Float64Array[] = [];

  /** Buffer number `slot`, at least `size` long; contents undefined. */
  get(slot: number, size: number): Float64Array {
    let b = this.buffers[slot];
    if (b === undefined || b.length < size) {
      b = new Float64Array(Math.max(size, 64));
      this.buffers[slot] = b;
    }
    return b;
  }

  /** Forgets the large buffers. */
  trim(): void {
    for (let i = 0; i < this.buffers.length; i++) {
      if (this.buffers[i]!.length > RETAIN) this.buffers[i] = new Float64Array(64);
    }
  }
}
