import type { TypedArray } from '../../tensor/dtype.js';

/**
 * What a range kernel receives: typed arrays (on shared buffers when run in parallel) and plain values.
 * Everything here survives structured cloning, so the same object can be posted to a worker thread.
 */
export type KernelArg = TypedArray | number | boolean | string | readonly number[];
export type KernelArgs = Readonly<Record<string, KernelArg>>;

/**
 * Processes items [start, end) of a parallel loop; different ranges must write disjoint memory. `A` is the
 * shape of the arguments (any object of KernelArg-like values: an interface will do).
 */
export type RangeKernel<A extends object = KernelArgs> = (args: A, start: number, end: number) => void;

// entries are stored type-erased; each is only ever called with the arguments posted under its name
type StoredKernel = (args: object, start: number, end: number) => void;
interface Entry { readonly moduleUrl: string; readonly fn: StoredKernel }

// One registry per thread: the main thread and each worker fill their own by importing the kernel modules.
const kernels = new Map<string, Entry>();

/**
 * Registers `fn` under `name`. `moduleUrl` is the `import.meta.url` of the registering module: a worker
 * thread imports it to obtain the same kernel, so new kernels need no change to the worker.
 */
export function registerRangeKernel<A extends object = KernelArgs>(
  name: string, moduleUrl: string, fn: RangeKernel<A>,
): void {
  const existing = kernels.get(name);
  if (existing !== undefined && existing.fn !== fn && existing.moduleUrl !== moduleUrl) {
    throw new Error(`range kernel '${name}' is already registered by ${existing.moduleUrl}`);
  }
  kernels.set(name, { moduleUrl, fn: fn as StoredKernel });
}

export function getRangeKernel(name: string): RangeKernel<object> | undefined {
  return kernels.get(name)?.fn;
}

export function rangeKernelModule(name: string): string | undefined {
  return kernels.get(name)?.moduleUrl;
}
