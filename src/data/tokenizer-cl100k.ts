import { Tiktoken } from 'js-tiktoken/lite';
import cl100kRanks from 'js-tiktoken/ranks/cl100k_base';
import { checkIds, type Tokenizer, type TokenizerSpec } from './tokenizer.js';

// Built once per process and only when first used: building the rank tables takes about half a second.
let shared: Tiktoken | undefined;
const A_ID = 64;
function encoding(): Tiktoken {
  shared ??= new Tiktoken(cl100kRanks);
  return shared;
}

/**
 * OpenAI's cl100k_base BPE (the paper's tokenizer), from the ranks bundled with js-tiktoken, so it works
 * offline. Ordinary ids are 0..100255; the special tokens are 100257..100260 and 100276, so the
 * vocabulary is 100277 (ids 100256 and 100261..100275 are never produced).
 */
export class Cl100kTokenizer implements Tokenizer {
  readonly name = 'cl100k_base' as const;
  readonly vocabSize: number;
  readonly eotId: number;

  constructor() {
    const specials = Object.values(cl100kRanks.special_tokens);
    this.vocabSize = Math.max(...specials) + 1;
    this.eotId = cl100kRanks.special_tokens['<|endoftext|>'];
  }

  encode(text: string): number[] {
    // No special token is allowed or rejected: text that spells "<|endoftext|>" (source code about
    // tokenizers does) is plain text and must not inject separators or throw.
    return encoding().encode(text, [], []);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize, 'cl100k_base tokenizer');
    // js-tiktoken's TextDecoder drops a leading byte-order mark; decoding behind a known one-character
    // token ("a" = 64) keeps it, and the "a" is cut off again.
    return encoding().decode([A_ID, ...Array.from(ids)]).slice(1);
  }

  toJSON(): TokenizerSpec {
    return { name: this.name, vocabSize: this.vocabSize, eotId: this.eotId };
  }
}
