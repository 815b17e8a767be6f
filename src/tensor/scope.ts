import type { Tensor } from './tensor.js';

/**
 * Deterministic tensor lifetime. `tidy(fn)` disposes every tensor created inside `fn` except those it
 * returns and those marked with `keep`; returned tensors move to the enclosing scope. Tensors created
 * outside any scope belong to the caller, who disposes them.
 */
const scopes: Set<Tensor>[] = [];

export function trackTensor(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Takes `t` out of every scope: it lives until disposed by hand. */
export function keep<T extends Tensor>(t: T): T {
  for (const scope of scopes) scope.delete(t);
  return t;
}

function collectTensors(value: unknown, into: Set<Tensor>, isTensor: (v: unknown) => v is Tensor): void {
  if (isTensor(value)) into.add(value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, into, isTensor);
  else if (value instanceof Map) for (const v of value.values()) collectTensors(v, into, isTensor);
  else if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into, isTensor);
  }
}

let tensorCheck: (v: unknown) => v is Tensor = (_v): _v is Tensor => false;

/** Set once by the Tensor module, so that this module needs no import of the class at load time. */
export function setTensorCheck(check: (v: unknown) => v is Tensor): void {
  tensorCheck = check;
}

/**
 * Runs synchronous `fn` in a new scope and returns its result with the tensors it created (and did not
 * dispose or `keep`). If `fn` throws or returns a promise, those tensors are freed and the error passes on.
 */
function runInScope<T>(name: string, fn: () => T): { result: T; scope: Set<Tensor> } {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw error;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new Error(`${name}: the function must be synchronous`);
  }
  return { result, scope };
}

/**
 * Runs synchronous `fn` in its own scope, like `tidy`, but frees nothing: every tensor `fn` created and
 * did not dispose or `keep` is appended to `owned`, whose owner disposes them later. For computations
 * split by awaits (collectives between their pieces), which one `tidy` cannot span: the pieces' tensors
 * stay alive for a backward pass that comes later.
 */
export function collectInto<T>(owned: Tensor[], fn: () => T): T {
  const { result, scope } = runInScope('collectInto', fn);
  for (const t of scope) if (!t.isDisposed) owned.push(t);
  return result;
}

export function tidy<T>(fn: () => T): T {
  const { result, scope } = runInScope('tidy', fn);
  const returned = new Set<Tensor>();
  collectTensors(result, returned, tensorCheck);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (returned.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}
