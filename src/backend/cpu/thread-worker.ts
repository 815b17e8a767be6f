/**
 * Entry point of a thread-pool worker. It takes ranges of the posted loop from the shared counter until
 * none are left, then tells the main thread (blocked in Atomics.wait) through the shared control block.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  EXITED, FAILED, NEXT, PENDING, READY, STARTED, START_FAILED, recordError, type TaskMessage,
} from './thread-control.js';
import type { RangeKernel } from './kernel-registry.js';

interface StartData { ctrl: Int32Array; errorBytes: Uint8Array; index: number }

const { ctrl, errorBytes, index } = workerData as StartData;
let inTask = false;

function finishTask(): void {
  inTask = false;
  Atomics.sub(ctrl, PENDING, 1);
  Atomics.notify(ctrl, PENDING);
}

function fail(error: unknown, count: number): void {
  recordError(ctrl, errorBytes, error);
  Atomics.store(ctrl, NEXT, count); // the other threads stop taking ranges
}

// Should kernel code end the thread, the main thread must neither wait for it nor post to it again.
process.on('exit', () => {
  Atomics.store(ctrl, READY + index, EXITED);
  Atomics.notify(ctrl, READY + index);
  if (inTask) {
    recordError(ctrl, errorBytes, new Error('a worker thread exited during a parallel loop'));
    finishTask();
  }
});

async function kernelFor(
  getRangeKernel: (name: string) => RangeKernel<object> | undefined, task: TaskMessage,
): Promise<RangeKernel<object>> {
  let fn = getRangeKernel(task.name);
  if (fn === undefined) {
    await import(task.moduleUrl); // registers the kernel in this thread
    fn = getRangeKernel(task.name);
    if (fn === undefined) throw new Error(`range kernel '${task.name}' is not registered by ${task.moduleUrl}`);
  }
  return fn;
}

async function main(): Promise<void> {
  let getRangeKernel: (name: string) => RangeKernel<object> | undefined;
  try {
    ({ getRangeKernel } = await import('./kernel-registry.js'));
  } catch (error) {
    recordError(ctrl, errorBytes, error);
    Atomics.store(ctrl, READY + index, START_FAILED);
    Atomics.notify(ctrl, READY + index);
    return;
  }
  parentPort!.on('message', (task: TaskMessage) => {
    inTask = true;
    void (async () => {
      try {
        const fn = await kernelFor(getRangeKernel, task);
        const { args, count, grain } = task;
        for (;;) {
          if (Atomics.load(ctrl, FAILED) !== 0) break;
          const start = Atomics.add(ctrl, NEXT, grain);
          if (start >= count) break;
          fn(args, start, Math.min(count, start + grain));
        }
      } catch (error) {
        fail(error, task.count);
      } finally {
        finishTask();
      }
    })();
  });
  Atomics.store(ctrl, READY + index, STARTED);
  Atomics.notify(ctrl, READY + index);
}

void main();
