/**
 * An error caused by what the caller passed in (bad shapes, bad options, unreadable files). The CLI
 * reports it as one line with exit code 2; anything else is a bug and exits 1.
 */
export class InputError extends Error {
  override readonly name = 'InputError';
}

/** Throws an InputError with `message` unless `condition` holds. */
export function check(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new InputError(typeof message === 'string' ? message : message());
}
