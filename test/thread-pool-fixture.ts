/** Range kernels for the thread-pool tests; imported by the worker threads too. */
import { isMainThread, threadId } from 'node:worker_threads';
import { registerRangeKernel } from '../src/backend/cpu/kernel-registry.js';

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleep(ms: number): void { Atomics.wait(sleeper, 0, 0, ms); }

// out[i] = a[i] * a[i] + bias; who[i] = the thread that did item i
registerRangeKernel('test.square', import.meta.url, (args, start, end) => {
  const a = args['a'] as Float64Array;
  const out = args['out'] as Float64Array;
  const who = args['who'] as Int32Array;
  const bias = args['bias'] as number;
  const delayMs = args['delayMs'] as number;
  for (let i = start; i < end; i++) {
    if (delayMs > 0) sleep(delayMs);
    out[i] = a[i]! * a[i]! + bias;
    who[i] = threadId;
  }
});

// fails on item `failAt`, only in a worker thread when `inWorkerOnly`
registerRangeKernel('test.fail', import.meta.url, (args, start, end) => {
  const failAt = args['failAt'] as number;
  const inWorkerOnly = args['inWorkerOnly'] as boolean;
  for (let i = start; i < end; i++) {
    if (isMainThread && inWorkerOnly) { sleep(50); continue; }
    if (i === failAt || inWorkerOnly) throw new RangeError(`item ${i} is bad`);
  }
});

// ends the worker thread in the middle of a loop
registerRangeKernel('test.exit', import.meta.url, (_args, start, end) => {
  for (let i = start; i < end; i++) {
    if (isMainThread) sleep(50);
    else process.exit(3);
  }
});
