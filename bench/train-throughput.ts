/**
 * Training throughput of the tiny preset on the CPU: tokens per second of whole optimizer steps
 * (forward, backward, clipping, AdamW) with dilated attention against dense attention (the vanilla
 * Transformer baseline, its peer), at several sequence lengths with the same tokens per step.
 *
 *   node --import tsx bench/train-throughput.ts [--lengths 512,1024,2048,4096] [--tokens 4096] [--seconds 20]
 *
 * Prints a table whose last line is the headline (the speed-up at the longest length) and appends a
 * dated section to bench/RESULTS.md (creating it if needed; never rewriting what is there).
 */
import { appendFileSync, existsSync } from 'node:fs';
import { cpus, loadavg, platform, release } from 'node:os';
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

const loadAtStart = loadavg()[0]!;
const tokenizer = createTokenizer('byte');
const data = await buildTokenDataset(defaultCorpusPath(), tokenizer);

function makeTrainer(config: ModelConfig, seqLen: number): { trainer: Trainer; model: LongNetDecoder; batch: number } {
  const batch = Math.max(1, Math.round(tokensPerStep / seqLen));
  const model = new LongNetDecoder(config, { seed: 0 });
  const trainer = new Trainer(model, data, {
    seqLen, batch, accumulate: 1, schedule: { lr: 1e-3, totalSteps: 1000, warmup: 10 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 0, device: 'cpu',
  });
  return { trainer, model, batch };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Median tokens/s of each config's training steps. The two run in alternation, one step each, so that
 * load from other processes falls on both alike; each first takes one untimed warm-up step. At least
 * 3 timed steps each, and more until `budget` seconds have passed.
 */
function measurePair(configs: ModelConfig[], seqLen: number): { tokensPerSecond: number[]; steps: number; batch: number } {
  const runs = configs.map((c) => makeTrainer(c, seqLen));
  for (const r of runs) r.trainer.step();
  const times: number[][] = runs.map(() => []);
  const start = performance.now();
  while (times[0]!.length < 3 || (performance.now() - start) / 1000 < budget) {
    runs.forEach((r, i) => {
      const t = performance.now();
      r.trainer.step();
      times[i]!.push((performance.now() - t) / 1000);
    });
  }
  for (const r of runs) {
    r.model.dispose();
    r.trainer.optimizer.dispose();
  }
  const batch = runs[0]!.batch;
  return { tokensPerSecond: times.map((t) => (batch * seqLen) / median(t)), steps: times[0]!.length, batch };
}

const dilated = presetConfig('tiny', { vocabSize: tokenizer.vocabSize });
const dense = presetConfig('tiny', { vocabSize: tokenizer.vocabSize, attention: { kind: 'dense' } });
const schedule = dilated.attention.kind === 'dilated'
  ? `w=${dilated.attention.segmentLengths.join(',')} r=${dilated.attention.dilationRates.join(',')}` : 'dense';

const rows: { seqLen: number; batch: number; dilated: number; dense: number }[] = [];
const header = `${'seq len'.padStart(8)} ${'batch'.padStart(6)} ${'dilated tok/s'.padStart(14)} ${'dense tok/s'.padStart(12)} ${'dilated/dense'.padStart(14)}`;
console.log(`tiny preset (${dilated.layers} layers x ${dilated.dModel}, ${dilated.heads} heads), byte tokens, ${tokensPerStep} tokens a step, ${cpus().length} cores`);
console.log(header);
// warms the JIT on the kernels every measurement uses, so the first row is not slower for it
measurePair([dilated, dense], Math.min(...lengths));
for (const seqLen of lengths) {
  const m = measurePair([dilated, dense], seqLen);
  const [d, v] = m.tokensPerSecond as [number, number];
  rows.push({ seqLen, batch: m.batch, dilated: d, dense: v });
  console.log(`${String(seqLen).padStart(8)} ${String(m.batch).padStart(6)} ${d.toFixed(0).padStart(14)} ${v.toFixed(0).padStart(12)} ${(d / v).toFixed(2).padStart(14)}`);
}
const last = rows.at(-1)!;
const headline = `headline: at ${last.seqLen} tokens, dilated attention trains the tiny model ${(last.dilated / last.dense).toFixed(2)}x as fast as dense (${last.dilated.toFixed(0)} vs ${last.dense.toFixed(0)} tokens/s)`;
console.log(headline);

const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
const section = [
  '',
  `## Training throughput, tiny preset, CPU (${new Date().toISOString().slice(0, 10)})`,
  '',
  `Machine: ${cpu}, ${cpus().length} cores, ${platform()} ${release()}, Node ${process.version}; ` +
    `load average ${loadAtStart.toFixed(1)} at start, ${loadavg()[0]!.toFixed(1)} at end.`,
  `Configuration: \`bench/train-throughput.ts\`; tiny preset (${dilated.layers} layers x ${dilated.dModel}, ${dilated.heads} heads, ` +
    `FFN ${dilated.ffnDim}, ${schedule}), byte tokenizer, float32, ${tokensPerStep} tokens a step ` +
    `(batch = ${tokensPerStep} / seq len), whole AdamW steps (forward, backward, clip, update) on lodash.js, ` +
    `median step time; dilated and dense steps alternate (one warm-up step each, then at least 3 steps and ${budget} s). ` +
    'Peer: the same model with dense attention (one pattern (N, 1)).',
  '',
  '| seq len | batch | dilated tokens/s | dense tokens/s | dilated / dense |',
  '|--------:|------:|-----------------:|---------------:|----------------:|',
  ...rows.map((r) => `| ${r.seqLen} | ${r.batch} | ${r.dilated.toFixed(0)} | ${r.dense.toFixed(0)} | ${(r.dilated / r.dense).toFixed(2)} |`),
  '',
  headline.replace(/^headline: /, 'Headline: '),
  '',
].join('\n');
const results = join(dirname(fileURLToPath(import.meta.url)), 'RESULTS.md');
appendFileSync(results, existsSync(results) ? section : `# Benchmark results\n${section}`);
data.close();
