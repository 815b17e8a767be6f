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

export function tidy<T>(fn: () => T): T {
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
    throw new Error('tidy: the function must be synchronous');
  }
  const returned = new Set<Tensor>();
  collectTensors(result, returned, tensorCheck);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (returned.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}
