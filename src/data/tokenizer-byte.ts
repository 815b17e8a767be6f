import { checkIds, type Tokenizer, type TokenizerSpec } from './tokenizer.js';

/**
 * Byte-level tokenizer: the UTF-8 bytes of the text are the ids 0..255, and id 256 marks the end of a
 * document (vocabulary 257). The end-of-document id decodes to nothing.
 */
export class ByteTokenizer implements Tokenizer {
  readonly name = 'byte' as const;
  readonly vocabSize = 257;
  readonly eotId = 256;
  private readonly encoder = new TextEncoder();
  // fatal: false, so bytes that are not valid UTF-8 become U+FFFD instead of throwing.
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  encode(text: string): number[] {
    return Array.from(this.encoder.encode(text));
  }

  /** The UTF-8 bytes of the text, without the copy into a number[]. */
  encodeBytes(text: string): Uint8Array {
    return this.encoder.encode(text);
  }

  decode(ids: ArrayLike<number>): string {
    checkIds(ids, this.vocabSize, 'byte tokenizer');
    const bytes = new Uint8Array(ids.length);
    let n = 0;
    for (let i = 0; i < ids.length; i++) if (ids[i] !== this.eotId) bytes[n++] = ids[i];
    return this.decoder.decode(bytes.subarray(0, n));
  }

  toJSON(): TokenizerSpec {
    return { name: this.name, vocabSize: this.vocabSize, eotId: this.eotId };
  }
}
