import { check, InputError } from '../errors.js';
import { ByteTokenizer } from './tokenizer-byte.js';
import { Cl100kTokenizer } from './tokenizer-cl100k.js';

/** Names of the tokenizers this library ships. */
export const TOKENIZER_NAMES = ['byte', 'cl100k_base'] as const;
export type TokenizerName = (typeof TOKENIZER_NAMES)[number];

/**
 * What a checkpoint stores about its tokenizer (as JSON in its config). `vocabSize` and `eotId` are
 * redundant with `name` on purpose: restoring checks them, so a checkpoint never silently meets a
 * tokenizer whose ids mean something else.
 */
export interface TokenizerSpec {
  name: TokenizerName;
  vocabSize: number;
  eotId: number;
}

export interface Tokenizer {
  readonly name: TokenizerName;
  /** Every id the tokenizer can produce is below this (the model's embedding rows). */
  readonly vocabSize: number;
  /** End-of-document id, placed after every document when packing a corpus. */
  readonly eotId: number;
  /** Text to ids. Text that spells a special token (e.g. "<|endoftext|>") is encoded as ordinary text. */
  encode(text: string): number[];
  /** Ids to text; never throws on a sequence that splits a character (it shows U+FFFD instead). */
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerSpec;
}

/** A tokenizer by name. */
export function createTokenizer(name: string): Tokenizer {
  switch (name) {
    case 'byte':
      return new ByteTokenizer();
    case 'cl100k_base':
      return new Cl100kTokenizer();
    default:
      throw new InputError(`unknown tokenizer "${name}" (known: ${TOKENIZER_NAMES.join(', ')})`);
  }
}

/** The tokenizer a checkpoint was trained with, from its saved spec (parsed JSON, hence `unknown`). */
export function tokenizerFromSpec(spec: unknown): Tokenizer {
  check(
    typeof spec === 'object' && spec !== null && typeof (spec as { name?: unknown }).name === 'string',
    () => `tokenizer spec must be an object with a "name", got ${JSON.stringify(spec)}`,
  );
  const s = spec as Partial<TokenizerSpec>;
  const tokenizer = createTokenizer(s.name as string);
  for (const key of ['vocabSize', 'eotId'] as const) {
    check(
      s[key] === undefined || s[key] === tokenizer[key],
      () => `tokenizer spec says ${key} ${s[key]} but tokenizer "${tokenizer.name}" has ${tokenizer[key]}`,
    );
  }
  return tokenizer;
}

/** Throws an InputError unless every id is an integer in [0, vocabSize). */
export function checkIds(ids: ArrayLike<number>, vocabSize: number, what: string): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    check(
      Number.isInteger(id) && id >= 0 && id < vocabSize,
      () => `${what}: token id ${id} at index ${i} is outside [0, ${vocabSize})`,
    );
  }
}

/**
 * Turns ids produced one at a time (generation) into text as soon as it is complete: a character
 * split over several tokens is held back until its last byte arrives, instead of printing U+FFFD.
 */
export class TextStreamDecoder {
  private pending: number[] = [];

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Adds one id; returns the text that became complete (often '', never a partial character). */
  push(id: number): string {
    this.pending.push(id);
    const text = this.tokenizer.decode(this.pending);
    // A UTF-8 character has at most 4 bytes, so a trailing U+FFFD that persists over 4 ids is real.
    if (text.endsWith('\uFFFD') && this.pending.length < 4) return '';
    this.pending = [];
    return text;
  }

  /** What is still held back, decoded as is. */
  flush(): string {
    const text = this.pending.length > 0 ? this.tokenizer.decode(this.pending) : '';
    this.pending = [];
    return text;
  }
}
