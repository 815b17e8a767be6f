import { matmulRows, type MatmulArgs } from './matmul.js';
import { parallelFor, registerRangeKernel, type KernelArgs } from './thread-pool.js';

registerRangeKernel('matmul', import.meta.url, (args, start, end) => matmulRows(args as unknown as MatmulArgs, start, end));

/** Below about this many multiply-adds per thread, handing work to another thread costs more than it saves. */
const MIN_MACS_PER_THREAD = 1 << 20;

/** Runs a matrix product, its output rows split across threads when it is large enough. */
export function runMatmul(args: MatmulArgs): void {
  const rows = args.aOffsets.length * args.m;
  parallelFor('matmul', args as unknown as KernelArgs, rows, { itemCost: args.n * args.k, minCostPerThread: MIN_MACS_PER_THREAD });
}
