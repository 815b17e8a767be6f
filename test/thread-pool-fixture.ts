/** Range kernels for the thread-pool tests; imported by the worker threads too. */
import { isMainThread, threadId } from 'node:worker_threads';
import { registerRangeKernel } from '../src/backend/cpu/kernel-registry.js';
import { InputError } from '../src/errors.js';

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

// fails on item `failAt` (any item when failAt < 0) in the threads that `where` names; others idle
registerRangeKernel('test.fail', import.meta.url, (args, start, end) => {
  const failAt = args['failAt'] as number;
  const where = args['where'] as 'worker' | 'main' | 'any';
  const kind = args['kind'] as 'range' | 'input';
  const failsHere = where === 'any' || (where === 'main') === isMainThread;
  for (let i = start; i < end; i++) {
    if (!failsHere) { sleep(20); continue; }
    if (failAt < 0 || i === failAt) {
      throw kind === 'input' ? new InputError(`item ${i} is bad input`) : new RangeError(`item ${i} is bad`);
    }
  }
});

// ends the worker thread in the middle of a loop
registerRangeKernel('test.exit', import.meta.url, (_args, start, end) => {
  for (let i = start; i < end; i++) {
    if (isMainThread) sleep(50);
    else process.exit(3);
  }
});
