/**
 * Passkey retrieval data: a random number hidden at a chosen depth of repetitive filler text, asked for
 * at the end, the test of long-context use of Mohtashami and Jaggi (2023). The text is ASCII, so with
 * the byte tokenizer one character is one token and a sample of `length` characters is a sequence of
 * `length` tokens whose last `digits` tokens are the answer.
 *
 *   There is a pass key hidden in this text. Find it and remember it. The grass is green. ...
 *   The pass key is 40318. Remember it. 40318 is the pass key. The sky is blue. ...
 *   What is the pass key? The pass key is 40318
 */
import { check } from '../errors.js';
import { Rng } from '../tensor/random.js';

export const PASSKEY_INTRO = 'There is a pass key hidden in this text. Find it and remember it. ';
export const PASSKEY_FILLER = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ';
export const PASSKEY_QUESTION = 'What is the pass key? The pass key is ';

const needle = (key: string): string => `The pass key is ${key}. Remember it. ${key} is the pass key. `;

export interface PasskeyOptions {
  /** Characters (= byte tokens) of the whole sample, answer included. */
  length: number;
  /** Where the needle goes in the filler: 0 at its start, 1 at its end (default: drawn uniformly). */
  depth?: number;
  /** Digits of the key (default 5). */
  digits?: number;
  /** A seed or a generator (default seed 0); the key and a drawn depth come from it. */
  rng?: number | Rng;
}

export interface PasskeySample {
  /** Exactly `length` ASCII characters; the last `digits` of them are the key. */
  text: string;
  key: string;
  /** Where the needle sentence starts. */
  needleStart: number;
  /** Where the key's digits start inside the needle. */
  keyStart: number;
  /** Where the answer (the final copy of the key) starts: length - digits. */
  answerStart: number;
  /** The depth used, in [0, 1]: the needle's offset into the filler over the filler's length. */
  depth: number;
}

/** The shortest sample with `digits` digits (no filler at all). */
export function passkeyMinLength(digits = 5): number {
  return PASSKEY_INTRO.length + needle('0'.repeat(digits)).length + PASSKEY_QUESTION.length + digits;
}

/** The filler's character at `i`: the filler sentences repeated without end. */
const fillerAt = (i: number): string => PASSKEY_FILLER[i % PASSKEY_FILLER.length]!;

/**
 * One passkey sample (see the file comment). The needle starts at a sentence boundary of the filler:
 * the last one at or before `depth` times the filler's length.
 */
export function passkeySample(options: PasskeyOptions): PasskeySample {
  const digits = options.digits ?? 5;
  check(Number.isInteger(digits) && digits >= 1 && digits <= 12, `passkey: digits = ${digits} is not an integer in 1..12`);
  const { length } = options;
  const min = passkeyMinLength(digits);
  check(Number.isInteger(length) && length >= min, `passkey: length = ${length} is shorter than the ${min} characters a sample needs`);
  const rng = options.rng instanceof Rng ? options.rng : new Rng(options.rng ?? 0);
  let key = '';
  for (let i = 0; i < digits; i++) key += String(rng.int(10));
  const depth = options.depth ?? rng.next();
  check(Number.isFinite(depth) && depth >= 0 && depth <= 1, `passkey: depth = ${depth} is not in [0, 1]`);
  const fillerLength = length - min;
  let at = Math.floor(depth * fillerLength);
  // back to a sentence boundary (the filler's start, or just after ". ")
  while (at > 0 && !(fillerAt(at - 1) === ' ' && fillerAt(at - 2) === '.')) at--;
  let filler = '';
  for (let i = 0; i < fillerLength; i++) filler += fillerAt(i);
  const hidden = needle(key);
  const text = PASSKEY_INTRO + filler.slice(0, at) + hidden + filler.slice(at) + PASSKEY_QUESTION + key;
  const needleStart = PASSKEY_INTRO.length + at;
  return {
    text, key, needleStart, keyStart: needleStart + 'The pass key is '.length, answerStart: length - digits,
    depth: fillerLength === 0 ? 0 : at / fillerLength,
  };
}
