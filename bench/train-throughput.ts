/**
 * Training throughput of the tiny preset on the CPU: tokens per second of whole optimizer steps
 * (forward, backward, clipping, AdamW) with dilated attention against dense attention (the vanilla
 * Transformer baseline, its peer), at several sequence lengths with the same tokens per step.
 *
 *   node --import tsx bench/train-throughput.ts [--lengths 512,1024,2048,4096] [--tokens 4096] [--seconds 20]
 *
 * Prints a table whose last line is the headline (the speed-up at the longest length) and appends a
 * dated section to bench/RESULTS.md.
 */
import { appendFileSync } from 'node:fs';
import { cpus, platform, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildTokenDataset, createTokenizer, defaultCorpusPath } from '../src/data/index.js';
import { LongNetDecoder, presetConfig, type ModelConfig } from '../src/model/index.js';
import { Trainer } from '../src/train/trainer.js';

const { values } = parseArgs({
  options: {
    lengths: { type: 'string', default: '512,1024,2048,4096' },
    tokens: { type: 'string', default: '4096' },
    seconds: { type: 'string', default: '20' },
  },
});
const lengths = values.lengths.split(',').map(Number);
const tokensPerStep = Number(values.tokens);
const budget = Number(values.seconds);

const tokenizer = createTokenizer('byte');
const data = await buildTokenDataset(defaultCorpusPath(), tokenizer);

/** Tokens per second of training steps, after one warm-up step, over at least 2 steps and `budget` seconds. */
function measure(config: ModelConfig, seqLen: number): { tokensPerSecond: number; steps: number; batch: number } {
  const batch = Math.max(1, Math.round(tokensPerStep / seqLen));
  const model = new LongNetDecoder(config, { seed: 0 });
  const trainer = new Trainer(model, data, {
    seqLen, batch, accumulate: 1, schedule: { lr: 1e-3, totalSteps: 1000, warmup: 10 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 0, device: 'cpu',
  });
  trainer.step();
  let steps = 0;
  const start = performance.now();
  while (steps < 2 || (performance.now() - start) / 1000 < budget) {
    trainer.step();
    steps++;
  }
  const seconds = (performance.now() - start) / 1000;
  model.dispose();
  trainer.optimizer.dispose();
  return { tokensPerSecond: (steps * batch * seqLen) / seconds, steps, batch };
}

const dilated = presetConfig('tiny', { vocabSize: tokenizer.vocabSize });
const dense = presetConfig('tiny', { vocabSize: tokenizer.vocabSize, attention: { kind: 'dense' } });
const schedule = dilated.attention.kind === 'dilated'
  ? `w=${dilated.attention.segmentLengths.join(',')} r=${dilated.attention.dilationRates.join(',')}` : 'dense';

const rows: { seqLen: number; batch: number; dilated: number; dense: number }[] = [];
const header = `${'seq len'.padStart(8)} ${'batch'.padStart(6)} ${'dilated tok/s'.padStart(14)} ${'dense tok/s'.padStart(12)} ${'dilated/dense'.padStart(14)}`;
console.log(`tiny preset (${dilated.layers} layers x ${dilated.dModel}, ${dilated.heads} heads), byte tokens, ${tokensPerStep} tokens a step, ${cpus().length} cores`);
console.log(header);
for (const seqLen of lengths) {
  const d = measure(dilated, seqLen);
  const v = measure(dense, seqLen);
  rows.push({ seqLen, batch: d.batch, dilated: d.tokensPerSecond, dense: v.tokensPerSecond });
  console.log(`${String(seqLen).padStart(8)} ${String(d.batch).padStart(6)} ${d.tokensPerSecond.toFixed(0).padStart(14)} ${v.tokensPerSecond.toFixed(0).padStart(12)} ${(d.tokensPerSecond / v.tokensPerSecond).toFixed(2).padStart(14)}`);
}
const last = rows.at(-1)!;
const headline = `headline: at ${last.seqLen} tokens, dilated attention trains the tiny model ${(last.dilated / last.dense).toFixed(2)}x as fast as dense (${last.dilated.toFixed(0)} vs ${last.dense.toFixed(0)} tokens/s)`;
console.log(headline);

const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
const section = [
  '',
  `## Training throughput, tiny preset, CPU (${new Date().toISOString().slice(0, 10)})`,
  '',
  `Machine: ${cpu}, ${cpus().length} cores, ${platform()} ${release()}, Node ${process.version}.`,
  `Configuration: \`bench/train-throughput.ts\`; tiny preset (${dilated.layers} layers x ${dilated.dModel}, ${dilated.heads} heads, ` +
    `FFN ${dilated.ffnDim}, ${schedule}), byte tokenizer, float32, ${tokensPerStep} tokens a step ` +
    `(batch = ${tokensPerStep} / seq len), whole AdamW steps (forward, backward, clip, update) on lodash.js, ` +
    `one warm-up step then at least ${budget} s each. Peer: the same model with dense attention.`,
  '',
  '| seq len | batch | dilated tokens/s | dense tokens/s | dilated / dense |',
  '|--------:|------:|-----------------:|---------------:|----------------:|',
  ...rows.map((r) => `| ${r.seqLen} | ${r.batch} | ${r.dilated.toFixed(0)} | ${r.dense.toFixed(0)} | ${(r.dilated / r.dense).toFixed(2)} |`),
  '',
  headline.replace(/^headline: /, 'Headline: '),
  '',
].join('\n');
appendFileSync(join(dirname(fileURLToPath(import.meta.url)), 'RESULTS.md'), section);
data.close();
