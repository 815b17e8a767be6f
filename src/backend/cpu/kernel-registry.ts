import type { TypedArray } from '../../tensor/dtype.js';

/**
 * What a range kernel receives: typed arrays (on shared buffers when run in parallel) and plain values.
 * Everything here survives structured cloning, so the same object can be posted to a worker thread.
 */
export type KernelArg = TypedArray | Int32Array | number | boolean | string | readonly number[];
export type KernelArgs = Readonly<Record<string, KernelArg>>;

/** Processes items [start, end) of a parallel loop; different ranges must write disjoint memory. */
export type RangeKernel = (args: KernelArgs, start: number, end: number) => void;

interface Entry { readonly moduleUrl: string; readonly fn: RangeKernel }

// One registry per thread: the main thread and each worker fill their own by importing the kernel modules.
const kernels = new Map<string, Entry>();

/**
 * Registers `fn` under `name`. `moduleUrl` is the `import.meta.url` of the registering module: a worker
 * thread imports it to obtain the same kernel, so new kernels need no change to the worker.
 */
export function registerRangeKernel(name: string, moduleUrl: string, fn: RangeKernel): void {
  const existing = kernels.get(name);
  if (existing !== undefined && existing.fn !== fn && existing.moduleUrl !== moduleUrl) {
    throw new Error(`range kernel '${name}' is already registered by ${existing.moduleUrl}`);
  }
  kernels.set(name, { moduleUrl, fn });
}

export function getRangeKernel(name: string): RangeKernel | undefined {
  return kernels.get(name)?.fn;
}

export function rangeKernelModule(name: string): string | undefined {
  return kernels.get(name)?.moduleUrl;
}
