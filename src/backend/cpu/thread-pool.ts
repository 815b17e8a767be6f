/**
 * A small synchronous parallel-for over worker threads. The main thread posts a task (a registered range
 * kernel and its arguments on shared buffers), takes its own share of the items from a shared counter,
 * then blocks in Atomics.wait until the workers are done. Workers start lazily and never keep the
 * process alive.
 */
import { availableParallelism } from 'node:os';
import { isMainThread, Worker } from 'node:worker_threads';
import { InputError, check } from '../../errors.js';
import { getRangeKernel, rangeKernelModule } from './kernel-registry.js';
import {
  ERROR_BYTES, ERROR_LENGTH, EXITED, FAILED, NEXT, PENDING, READY, STARTED, STARTING, START_FAILED,
  readError, recordError, type ErrorInfo, type TaskMessage,
} from './thread-control.js';

export { registerRangeKernel, type KernelArg, type KernelArgs, type RangeKernel } from './kernel-registry.js';

const STARTUP_TIMEOUT_MS = 20_000;
const MAX_WORKERS = 256;

/** Threads a parallel loop may use, the calling thread included: LONGNET_THREADS, else every core. */
export function threadCount(): number {
  const env = process.env['LONGNET_THREADS'];
  if (env === undefined || env === '') return Math.max(1, availableParallelism());
  const n = Number(env);
  check(Number.isInteger(n) && n >= 1, `LONGNET_THREADS must be a positive integer, got '${env}'`);
  return Math.min(n, MAX_WORKERS + 1);
}

interface Pool {
  readonly workers: Worker[];
  readonly ctrl: Int32Array;
  readonly errorBytes: Uint8Array;
}

let pool: Pool | undefined;
let lastThreads = 0;
let startupFailure: Error | undefined;
let warnedSerial = false;
let busy = false;

/**
 * Starts one worker. Compiled, the worker is the sibling .js file. Run from TypeScript source through tsx,
 * workers do not inherit tsx's module hooks (Node 20), so a tiny bootstrap registers them first.
 */
function startWorker(workerData: unknown): Worker {
  const fromSource = new URL(import.meta.url).pathname.endsWith('.ts');
  const entry = new URL(`./thread-worker${fromSource ? '.ts' : '.js'}`, import.meta.url);
  if (!fromSource) return new Worker(entry, { workerData });
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    return new Worker(entry, { workerData }); // another TypeScript loader: hope the worker inherits it
  }
  // a failure to load is reported through the control block at once, so the blocked main thread need not time out
  // (dynamic imports only: the eval'd code may run as a script or as a module, depending on the parent's flags)
  const bootstrap = `import('node:worker_threads').then(({ workerData }) =>` +
    ` import(${JSON.stringify(tsxApi)})` +
    `.then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); })` +
    `.catch((error) => {` +
    ` const text = new TextEncoder().encode(JSON.stringify({ name: 'Error', message: String(error && error.message || error), stack: '' }));` +
    ` const n = Math.min(text.length, workerData.errorBytes.length); workerData.errorBytes.set(text.subarray(0, n));` +
    ` Atomics.store(workerData.ctrl, ${ERROR_LENGTH}, n);` +
    ` Atomics.store(workerData.ctrl, ${READY} + workerData.index, ${START_FAILED});` +
    ` Atomics.notify(workerData.ctrl, ${READY} + workerData.index); }));`;
  return new Worker(bootstrap, { eval: true, workerData });
}

function startupError(detail: string): Error {
  return new Error(
    `thread pool: a worker thread failed to start (${detail})`,
  );
}

/** Returns a pool whose first `wanted` workers are running, starting missing or exited ones. */
function ensureWorkers(wanted: number): Pool {
  if (startupFailure !== undefined) throw startupFailure;
  if (pool === undefined) {
    pool = {
      workers: [],
      ctrl: new Int32Array(new SharedArrayBuffer(4 * (READY + MAX_WORKERS))),
      errorBytes: new Uint8Array(new SharedArrayBuffer(ERROR_BYTES)),
    };
  }
  const { workers, ctrl, errorBytes } = pool;
  // a worker that fails to start reports through the error slot: clear what an earlier task left there
  Atomics.store(ctrl, FAILED, 0);
  Atomics.store(ctrl, ERROR_LENGTH, 0);
  const started: number[] = [];
  for (let i = 0; i < wanted; i++) {
    if (i < workers.length && Atomics.load(ctrl, READY + i) !== EXITED) continue;
    if (i < workers.length) void workers[i]!.terminate();
    Atomics.store(ctrl, READY + i, STARTING);
    const worker = startWorker({ ctrl, errorBytes, index: i });
    worker.unref();
    // a task's errors come back through the control block; this only keeps 'error' from being unhandled
    worker.on('error', () => {});
    workers[i] = worker;
    started.push(i);
  }
  // The main thread blocks below; workers start on their own threads, so this cannot deadlock.
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (const i of started) {
    for (;;) {
      const state = Atomics.load(ctrl, READY + i);
      if (state === STARTED) break;
      let detail: string | undefined;
      if (state === START_FAILED || state === EXITED) {
        const info = readError(ctrl, errorBytes);
        detail = `${info.name}: ${info.message}`;
      } else if (Date.now() >= deadline) {
        detail = `no answer within ${STARTUP_TIMEOUT_MS / 1000} s`;
      }
      if (detail !== undefined) {
        startupFailure = startupError(detail);
        void shutdownThreadPool();
        throw startupFailure;
      }
      Atomics.wait(ctrl, READY + i, state, Math.max(1, Math.min(deadline - Date.now(), 1000)));
    }
  }
  return pool;
}

/** True when every typed array among `args` lives on a SharedArrayBuffer, so workers see the same memory. */
function allShared(args: object): boolean {
  for (const value of Object.values(args)) {
    if (ArrayBuffer.isView(value) && !(value.buffer instanceof SharedArrayBuffer)) return false;
  }
  return true;
}

export interface ParallelOptions {
  /** Relative cost of one item (default 1). */
  readonly itemCost?: number;
  /** Below this much cost per thread, fewer threads are used (default 1: any split pays). */
  readonly minCostPerThread?: number;
  /** Items taken from the shared counter at a time (default: about 8 takes per thread). */
  readonly grain?: number;
}

/**
 * Runs the registered range kernel `name` over items [0, count), split across threads when the arguments
 * are on shared buffers and the work is large enough; serially otherwise. Returns when every item is done.
 * An error in any thread is thrown here.
 */
export function parallelFor<A extends object>(
  name: string, args: A, count: number, options: ParallelOptions = {},
): void {
  const fn = getRangeKernel(name);
  if (fn === undefined) throw new Error(`parallelFor: no range kernel registered as '${name}'`);
  if (count <= 0) return;
  const { itemCost = 1, minCostPerThread = 1 } = options;
  const byCost = Math.floor((count * itemCost) / minCostPerThread);
  const threads = Math.min(threadCount(), count, Math.max(1, byCost));
  if (threads <= 1 || busy || !isMainThread || !allShared(args)) {
    if (!busy) lastThreads = 1;
    fn(args, 0, count);
    return;
  }
  let started: Pool;
  try {
    started = ensureWorkers(threads - 1);
  } catch (error) {
    // without worker threads the work still gets done, on this thread
    if (!warnedSerial) process.stderr.write(`longnet: ${(error as Error).message}; running on one thread\n`);
    warnedSerial = true;
    lastThreads = 1;
    fn(args, 0, count);
    return;
  }
  const { workers, ctrl, errorBytes } = started;
  const grain = Math.max(1, options.grain ?? Math.floor(count / (threads * 8)));
  Atomics.store(ctrl, NEXT, 0);
  Atomics.store(ctrl, FAILED, 0);
  Atomics.store(ctrl, ERROR_LENGTH, 0);
  Atomics.store(ctrl, PENDING, threads - 1);
  const task: TaskMessage = { name, moduleUrl: rangeKernelModule(name)!, args, count, grain };
  let ownError: unknown;
  let ownFailed = false;
  busy = true;
  lastThreads = threads;
  try {
    for (let i = 0; i < threads - 1; i++) workers[i]!.postMessage(task);
    try {
      for (;;) {
        if (Atomics.load(ctrl, FAILED) !== 0) break;
        const start = Atomics.add(ctrl, NEXT, grain);
        if (start >= count) break;
        fn(args, start, Math.min(count, start + grain));
      }
    } catch (error) {
      ownError = error;
      ownFailed = true;
      recordError(ctrl, errorBytes, error);
      Atomics.store(ctrl, NEXT, count);
    }
    // workers write into the caller's arrays: never return (or throw) before they are done
    for (;;) {
      const pending = Atomics.load(ctrl, PENDING);
      if (pending === 0) break;
      Atomics.wait(ctrl, PENDING, pending);
    }
  } finally {
    busy = false;
  }
  if (ownFailed) throw ownError; // keeps its class (InputError and the like)
  if (Atomics.load(ctrl, FAILED) !== 0) {
    throw rebuildError(name, readError(ctrl, errorBytes));
  }
}

const ERROR_CLASSES: Readonly<Record<string, new (message: string) => Error>> = {
  InputError, RangeError, TypeError, SyntaxError, ReferenceError, EvalError, URIError,
};

/** The worker's error as an error of the same class (where known), its stack kept after ours. */
function rebuildError(kernel: string, info: ErrorInfo): Error {
  const Class = ERROR_CLASSES[info.name] ?? Error;
  const error = new Class(`${kernel}: ${info.message}`);
  if (error.name !== info.name) error.name = info.name;
  if (info.stack !== '') error.stack = `${error.stack ?? ''}\n  -- in a worker thread --\n${info.stack}`;
  return error;
}

/** Threads the most recent top-level parallel loop of this thread ran on (1: serial). */
export function lastLoopThreads(): number {
  return lastThreads;
}

/** Stops the workers; the next parallel loop starts fresh ones. */
export async function shutdownThreadPool(): Promise<void> {
  const current = pool;
  pool = undefined;
  if (current !== undefined) await Promise.all(current.workers.map((w) => w.terminate()));
}
