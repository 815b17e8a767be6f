/**
 * The paper's Figure 7(b) at small scale: the loss on a fixed suffix of held-out code as the prompt
 * before it grows. For each window of the validation split (the last `total` tokens of
 * `--max-length + 1`), the suffix is the last `--suffix` predictions; the model reads prompts of
 * 1K, 3K, 7K, 15K and 31K tokens before it (windows of 2K ... 32K) and the mean loss on the suffix is
 * recorded. Uses the checkpoints of experiments/table2.ts.
 *
 *   npx tsx experiments/suffix-loss.ts
 *   npx tsx experiments/suffix-loss.ts --device cuda --models transformer-2k,longnet-8k,longnet-32k,sparse-32k --out-tag gpu --windows 4
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Device } from '../src/backend/backend.js';
import { buildTokenDataset, createTokenizer } from '../src/data/index.js';
import { loadModel } from '../src/train/load-model.js';
import { codeCorpus, hardware, linePlotSvg, mean, RESULTS, RUNS, windowLosses, writeJson, writeText } from './common.js';

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    models: { type: 'string', default: 'transformer-2k,sparse-8k,longnet-8k' },
    suffix: { type: 'string', default: '1024' },
    'max-length': { type: 'string', default: '32768' },
    windows: { type: 'string', default: '1' },
    'out-tag': { type: 'string', default: 'cpu' },
  },
});
const device = values.device as Device;
const suffix = Number(values.suffix);
const maxLength = Number(values['max-length']);
const windows = Number(values.windows);
const tag = values['out-tag']!;
const totals: number[] = [];
for (let n = 2 * suffix; n <= maxLength; n *= 2) totals.push(n);

const corpus = codeCorpus();
const dataset = await buildTokenDataset(corpus.path, createTokenizer('byte'), { valFraction: 0.1 });
const chunks = [...dataset.validationBatches(maxLength, { maxSequences: windows })];
dataset.close();

const rows: { model: string; attention: unknown; trainLength: number; suffixLoss: Record<number, number> }[] = [];
const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
for (const name of values.models!.split(',')) {
  const { model, config } = loadModel(join(RUNS, tag, name), device);
  const suffixLoss: Record<number, number> = {};
  for (const total of totals) {
    const started = performance.now();
    const perWindow = chunks.map((chunk, c) => {
      // chunk c holds validation tokens [c * maxLength, (c + 1) * maxLength]; the window is its last total + 1
      const window = chunk.subarray(chunk.length - total - 1);
      const losses = windowLosses(join(RUNS, tag, name), model, window, c * maxLength + maxLength - total);
      return mean(losses.subarray(total - suffix));
    });
    suffixLoss[total] = mean(perWindow);
    console.log(`${name}: prompt ${total - suffix} + suffix ${suffix}: suffix loss ${suffixLoss[total].toFixed(4)} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  }
  model.dispose();
  rows.push({ model: name, attention: config.model.attention, trainLength: config.training?.seqLen ?? 0, suffixLoss });
  writeJson(join(RESULTS, `suffix-loss-${tag}.json`), {
    experiment: 'loss on a fixed suffix as the prompt before it grows (Figure 7(b))',
    corpus: { name: `typescript ${corpus.version} lib/typescript.js`, split: 'validation (valFraction 0.1)', tokenizer: 'byte' },
    suffix, windows, windowLengths: totals, hardware: hardware(device), rows,
  });
  writeText(join(RESULTS, `suffix-loss-${tag}.svg`), linePlotSvg({
    title: `Loss on the last ${suffix} tokens against the prompt before them`,
    xLabel: 'prompt + suffix (tokens)', yLabel: 'mean loss on the suffix (nats per byte)', xTicks: totals,
    series: rows.map((r, i) => ({
      label: `${r.model}`, color: colors[i % colors.length]!, dashed: !r.model.startsWith('longnet'),
      points: totals.map((t) => [t, r.suffixLoss[t]!] as [number, number]),
    })),
  }));
}
