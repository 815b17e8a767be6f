
/**
 * The shared control block between the main thread and the pool's workers: an Int32Array of slots, and a
 * byte buffer that carries the first error of a task back to the (blocked) main thread.
 */
export const NEXT = 0; // next item index to hand out
export const PENDING = 1; // workers still busy with the current task
export const FAILED = 2; // 1 once some thread of the current task failed
export const ERROR_LENGTH = 3; // bytes of the JSON error description in the error buffer
export const READY = 4; // READY + i: the state of worker i, below

export const STARTING = 0;
export const STARTED = 1;
export const START_FAILED = 2;
export const EXITED = 3;

export const ERROR_BYTES = 16384;

/** What the main thread posts to each worker for one parallel loop. */
export interface TaskMessage {
  name: string; moduleUrl: string; args: object; count: number; grain: number;
}

export interface ErrorInfo { name: string; message: string; stack: string }

/** Records `error` unless an earlier failure of the same task is already recorded. */
export function recordError(ctrl: Int32Array, bytes: Uint8Array, error: unknown): void {
  if (Atomics.compareExchange(ctrl, FAILED, 0, 1) !== 0) return;
  const info: ErrorInfo = error instanceof Error
    ? { name: error.name, message: error.message, stack: error.stack ?? '' }
    : { name: 'Error', message: String(error), stack: '' };
  let encoded = new TextEncoder().encode(JSON.stringify(info));
  if (encoded.length > bytes.length) {
    // keep the start of the message, drop the stack
    encoded = new TextEncoder().encode(JSON.stringify({ ...info, message: info.message.slice(0, 2000), stack: '' }));
  }
  bytes.set(encoded);
  Atomics.store(ctrl, ERROR_LENGTH, encoded.length);
}

export function readError(ctrl: Int32Array, bytes: Uint8Array): ErrorInfo {
  const length = Atomics.load(ctrl, ERROR_LENGTH);
  // TextDecoder refuses views on shared memory: copy first
  const text = new TextDecoder().decode(bytes.slice(0, length));
  try {
    return JSON.parse(text) as ErrorInfo;
  } catch {
    return { name: 'Error', message: text, stack: '' };
  }
}
