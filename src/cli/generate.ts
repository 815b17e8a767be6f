/**
 * `longnet generate`: continues a prompt with a checkpoint's model, token by token through the KV cache
 * (each step attends to cached keys instead of re-running the whole sequence). Text is printed as it
 * is produced; a character split over several byte tokens is held back until complete.
 */
import type { Device } from '../backend/backend.js';
import { InputError } from '../errors.js';
import { TextStreamDecoder } from '../data/index.js';
import { validateConfig } from '../model/index.js';
import { Rng, tensor } from '../tensor/index.js';
import { loadModel } from '../train/load-model.js';
import { checkSampling, sampleToken, type SamplingOptions } from '../train/sampling.js';
import type { Args, Command } from './command.js';
import { parseChoice, parseFiniteNumber } from './values.js';
import { parseInteger } from './train.js';

export const command: Command = {
  name: 'generate',
  summary: 'sample text from a checkpoint (temperature, top-k, top-p; KV cache)',
  flags: {
    checkpoint: { type: 'string', value: 'DIR', description: 'checkpoint directory (from longnet train)', required: true },
    prompt: { type: 'string', value: 'TEXT', description: 'text to continue', defaultText: 'empty: start a new document' },
    'max-new-tokens': { type: 'string', value: 'N', description: 'tokens to generate at most', defaultText: '200' },
    temperature: { type: 'string', value: 'T', description: 'sampling temperature; 0 is greedy (always the most likely token)', defaultText: '0.8' },
    'top-k': { type: 'string', value: 'K', description: 'sample among the K most likely tokens only (0: all)', defaultText: '0' },
    'top-p': { type: 'string', value: 'P', description: 'sample among the most likely tokens whose probability reaches P (1: all)', defaultText: '1' },
    seed: { type: 'string', value: 'S', description: 'random seed: the same seed gives the same text', defaultText: '0' },
    'stop-at-eot': { type: 'boolean', description: 'stop when the model ends the document (the end-of-text token)' },
    device: { type: 'string', value: 'cpu|cuda', description: 'where to run', defaultText: 'cpu' },
  },
  details: 'The prompt is preceded by the end-of-document token, as every document is in training.\n' +
    'Prints the prompt and its continuation on stdout, and a line of statistics on stderr.',
  async run(args: Args) {
    const dir = args.requireString('checkpoint');
    const prompt = args.string('prompt') ?? '';
    const maxNew = parseInteger('max-new-tokens', args.string('max-new-tokens') ?? '200', 1);
    const sampling: SamplingOptions = {
      temperature: parseFiniteNumber('temperature', args.string('temperature') ?? '0.8'),
      topK: parseInteger('top-k', args.string('top-k') ?? '0', 0),
      topP: parseFiniteNumber('top-p', args.string('top-p') ?? '1'),
    };
    try {
      checkSampling(sampling);
    } catch (err) {
      if (err instanceof InputError) throw new InputError(`--${err.message}`);
      throw err;
    }
    const seed = parseInteger('seed', args.string('seed') ?? '0', 0);
    const device = parseChoice<Device>('device', args.string('device') ?? 'cpu', ['cpu', 'cuda']);
    const { model, tokenizer, config } = loadModel(dir, device);
    try {
      const ids = [tokenizer.eotId, ...tokenizer.encode(prompt)];
      const total = ids.length + maxNew;
      try {
        validateConfig(config.model, total);
      } catch (err) {
        if (err instanceof InputError) throw new InputError(`prompt plus --max-new-tokens (${total} tokens): ${err.message}`);
        throw err;
      }
      const rng = new Rng(seed);
      const cache = model.createCache(1, total);
      const decoder = new TextStreamDecoder(tokenizer);
      const vocab = config.model.vocabSize;
      const lastRow = (logits: ReturnType<typeof model.step>): Float32Array | Float64Array => {
        const all = logits.toArray() as Float32Array | Float64Array;
        logits.dispose();
        // ids the tokenizer never produces (padding of the vocabulary) are never sampled
        return all.subarray(all.length - vocab, all.length - vocab + tokenizer.vocabSize);
      };
      // feeds token ids and frees them (on a GPU they are device memory)
      const feed = (tokens: number[]): Float32Array | Float64Array => {
        const input = tensor(Int32Array.from(tokens), [1, tokens.length], { dtype: 'int32', device });
        try {
          return lastRow(model.step(input, cache));
        } finally {
          input.dispose();
        }
      };
      process.stdout.write(prompt);
      const started = performance.now();
      let row = feed(ids);
      let produced = 0;
      while (produced < maxNew) {
        const next = sampleToken(row, sampling, rng);
        produced++;
        if (next === tokenizer.eotId) {
          if (args.boolean('stop-at-eot')) break;
        } else {
          process.stdout.write(decoder.push(next));
        }
        if (produced === maxNew) break;
        row = feed([next]);
      }
      process.stdout.write(`${decoder.flush()}\n`);
      cache.dispose();
      const seconds = (performance.now() - started) / 1000;
      process.stderr.write(`${produced} tokens in ${seconds.toFixed(2)} s (${(produced / seconds).toFixed(1)} tokens/s), prompt ${ids.length} tokens\n`);
    } finally {
      model.dispose();
    }
  },
};
