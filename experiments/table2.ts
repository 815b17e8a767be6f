/**
 * The paper's Table 2 at small scale: a vanilla Transformer, LongNet and a FLOP-matched Sparse
 * Transformer trained on the same code corpus with the same token budget, then perplexity at 2K, 8K and
 * 32K on the same held-out tokens.
 *
 *   npx tsx experiments/table2.ts                      # CPU set: train (skipping finished runs), then evaluate
 *   npx tsx experiments/table2.ts --stage train --models longnet-8k
 *   npx tsx experiments/table2.ts --stage eval
 *   npx tsx experiments/table2.ts --device cuda --out-tag gpu --steps 400 --tokens-per-step 32768 \
 *     --models transformer-2k,longnet-2k,longnet-8k,longnet-32k,sparse-32k --eval-tokens 131072
 *
 * The CPU set is transformer-2k, sparse-8k and longnet-8k (48 steps of 8,192 tokens each). Models train
 * one after the other; several `--stage train --models NAME` processes may run side by side, each on
 * its own models. Training resumes where a stopped run left off.
 * Checkpoints go to experiments/runs/<tag>/<model>/ (each can be evaluated with
 * `npx longnet eval --checkpoint DIR --seq-len 2048,8192,32768`); results to experiments/results/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Device } from '../src/backend/backend.js';
import { buildTokenDataset, createTokenizer } from '../src/data/index.js';
import type { ModelAttention } from '../src/model/index.js';
import { loadModel } from '../src/train/load-model.js';
import { runTraining } from '../src/train/run.js';
import {
  codeCorpus, hardware, layerAttentionFlops, linePlotSvg, LONGNET_SCHEDULE, matchSparseFixed, RESULTS, RUNS, smallConfig,
  windowLosses, writeJson, writeText,
} from './common.js';

const HEADS = 4;
const HEAD_DIM = 16;

interface ModelSpec {
  label: string;
  attention: ModelAttention;
  seqLen: number;
  note?: string;
}

/** The sparse baseline trained at `seqLen`, FLOP-matched there to LongNet's schedule. */
function sparseAt(seqLen: number): ModelSpec {
  const target = layerAttentionFlops(LONGNET_SCHEDULE, seqLen, HEADS, HEAD_DIM);
  const m = matchSparseFixed(target, seqLen, HEADS, HEAD_DIM);
  return {
    label: `Sparse Transformer (train ${seqLen / 1024}K)`, seqLen,
    attention: { kind: 'sparse-fixed', stride: m.stride, summary: m.summary },
    note: `stride ${m.stride}, summary ${m.summary}: ${(m.ratio * 100).toFixed(1)}% of LongNet's attention FLOPs at ${seqLen}`,
  };
}

const MODELS: Record<string, () => ModelSpec> = {
  'transformer-2k': () => ({ label: 'Transformer (train 2K)', attention: { kind: 'dense' }, seqLen: 2048 }),
  'sparse-8k': () => sparseAt(8192),
  'longnet-2k': () => ({ label: 'LongNet (train 2K)', attention: LONGNET_SCHEDULE, seqLen: 2048 }),
  'longnet-8k': () => ({ label: 'LongNet (train 8K)', attention: LONGNET_SCHEDULE, seqLen: 8192 }),
  // for a GPU: the paper's longest training length
  'transformer-8k': () => ({ label: 'Transformer (train 8K)', attention: { kind: 'dense' }, seqLen: 8192 }),
  'sparse-32k': () => sparseAt(32768),
  'longnet-32k': () => ({ label: 'LongNet (train 32K)', attention: LONGNET_SCHEDULE, seqLen: 32768 }),
};
const CPU_SET = ['transformer-2k', 'sparse-8k', 'longnet-8k'];

const { values } = parseArgs({
  options: {
    stage: { type: 'string', default: 'all' },
    models: { type: 'string', default: CPU_SET.join(',') },
    device: { type: 'string', default: 'cpu' },
    steps: { type: 'string', default: '48' },
    'tokens-per-step': { type: 'string', default: '8192' },
    lr: { type: 'string', default: '3e-3' },
    seed: { type: 'string', default: '0' },
    'eval-lengths': { type: 'string', default: '2048,8192,32768' },
    'eval-tokens': { type: 'string', default: '32768' },
    'out-tag': { type: 'string', default: 'cpu' },
  },
});
const names = values.models!.split(',');
for (const n of names) if (!(n in MODELS)) throw new Error(`unknown model ${n} (known: ${Object.keys(MODELS).join(', ')})`);
const device = values.device as Device;
const steps = Number(values.steps);
const tokensPerStep = Number(values['tokens-per-step']);
const lr = Number(values.lr);
const seed = Number(values.seed);
const evalLengths = values['eval-lengths']!.split(',').map(Number);
const evalTokens = Number(values['eval-tokens']);
const tag = values['out-tag']!;
const corpus = codeCorpus();
const runDir = (name: string): string => join(RUNS, tag, name);
const resultPath = join(RESULTS, `table2-${tag}.json`);

function finished(dir: string): boolean {
  try {
    const state = JSON.parse(readFileSync(join(dir, 'trainer-state.json'), 'utf8')) as { step: number };
    return state.step >= steps;
  } catch {
    return false;
  }
}

async function train(name: string): Promise<void> {
  const spec = MODELS[name]!();
  const dir = runDir(name);
  if (finished(dir)) {
    console.log(`${name}: already trained in ${dir}`);
    return;
  }
  const batch = Math.max(1, Math.round(tokensPerStep / spec.seqLen));
  console.log(`${name}: ${spec.label}${spec.note ? ` (${spec.note})` : ''}, ${steps} steps of ${batch} x ${spec.seqLen}`);
  const result = await runTraining({
    preset: 'tiny', data: corpus.path, tokenizer: 'byte', steps, seqLen: spec.seqLen, batch, lr, warmup: Math.max(1, Math.round(steps / 10)),
    seed, evalEvery: steps, evalSequences: Math.max(1, Math.round(8192 / spec.seqLen)), device,
  }, {
    out: dir, resume: existsSync(join(dir, 'trainer-state.json')), overwrite: false, model: smallConfig(spec.attention),
    log: (line) => console.log(`  ${line}`), progress: process.stdout,
  });
  if (result.interrupted !== null) process.exit(1);
}

interface Row {
  model: string;
  label: string;
  trainLength: number;
  attention: ModelAttention;
  note?: string;
  trainTokens: number;
  trainSeconds: number;
  attentionGflopsPerLayer: Record<number, number>;
  perplexity: Record<number, number>;
  loss: Record<number, number>;
  evalTokens: Record<number, number>;
}

async function evaluate(): Promise<void> {
  const tokenizer = createTokenizer('byte');
  const dataset = await buildTokenDataset(corpus.path, tokenizer, { valFraction: 0.1 });
  const rows: Row[] = existsSync(resultPath) ? (JSON.parse(readFileSync(resultPath, 'utf8')) as { rows: Row[] }).rows : [];
  try {
    for (const name of names) {
      const spec = MODELS[name]!();
      const dir = runDir(name);
      if (!finished(dir)) {
        console.log(`${name}: not trained, skipped`);
        continue;
      }
      const { model, config } = loadModel(dir, device);
      const state = JSON.parse(readFileSync(join(dir, 'trainer-state.json'), 'utf8')) as { tokens: number; elapsedSeconds: number };
      const row: Row = {
        model: name, label: spec.label, trainLength: spec.seqLen, attention: config.model.attention, ...(spec.note ? { note: spec.note } : {}),
        trainTokens: state.tokens, trainSeconds: Math.round(state.elapsedSeconds), attentionGflopsPerLayer: {}, perplexity: {}, loss: {}, evalTokens: {},
      };
      for (const n of evalLengths) {
        const sequences = Math.max(1, Math.floor(evalTokens / n));
        const started = performance.now();
        // the mean next-token loss over every token of the sequences, as longnet eval computes it
        // (per-token losses are kept for experiments/suffix-loss.ts, which scores the same windows)
        let sum = 0;
        let j = 0;
        for (const window of dataset.validationBatches(n, { batchSize: 1, maxSequences: sequences })) {
          const losses = windowLosses(dir, model, window, j * n);
          for (const l of losses) sum += l;
          j++;
        }
        const loss = sum / (sequences * n);
        row.loss[n] = loss;
        row.perplexity[n] = Math.exp(loss);
        row.evalTokens[n] = sequences * n;
        row.attentionGflopsPerLayer[n] = layerAttentionFlops(config.model.attention, n, HEADS, HEAD_DIM) / 1e9;
        console.log(`${name} @ ${n}: loss ${loss.toFixed(4)}, perplexity ${Math.exp(loss).toFixed(4)} (${sequences} x ${n}, ${((performance.now() - started) / 1000).toFixed(0)} s)`);
      }
      model.dispose();
      const at = rows.findIndex((r) => r.model === name);
      if (at >= 0) rows[at] = row;
      else rows.push(row);
      save(rows);
    }
  } finally {
    dataset.close();
  }
}

function save(rows: Row[]): void {
  writeJson(resultPath, {
    experiment: 'Table 2 at small scale: perplexity at several evaluation lengths',
    corpus: { name: `typescript ${corpus.version} lib/typescript.js`, bytes: corpus.bytes, sha256: corpus.sha256, tokenizer: 'byte', valFraction: 0.1 },
    model: { ...smallConfig({ kind: 'dense' }), attention: 'per row' },
    training: { steps, tokensPerStep, lr, warmup: Math.max(1, Math.round(steps / 10)), seed, device },
    evaluation: { lengths: evalLengths, tokensPerLength: evalTokens, note: 'the first tokens of the validation split at every length' },
    hardware: hardware(device),
    rows,
  });
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];
  writeText(join(RESULTS, `table2-${tag}.svg`), linePlotSvg({
    title: 'Perplexity against evaluation length (byte-level, TypeScript source)',
    xLabel: 'evaluation length (tokens)', yLabel: 'perplexity', xTicks: evalLengths,
    series: rows.map((r, i) => ({
      label: r.label, color: colors[i % colors.length]!, dashed: r.attention.kind !== 'dilated',
      points: evalLengths.filter((n) => r.perplexity[n] !== undefined).map((n) => [n, r.perplexity[n]!] as [number, number]),
    })),
  }));
  // training curves: the loss of each step against training tokens
  const curves = rows.map((r, i) => {
    const lines = readFileSync(join(runDir(r.model), 'metrics.jsonl'), 'utf8').trim().split('\n');
    const points = lines.map((l) => JSON.parse(l) as { tokens: number; loss?: number })
      .filter((m) => m.loss !== undefined).map((m) => [m.tokens / 1000, m.loss!] as [number, number]);
    return { label: r.label, color: colors[i % colors.length]!, dashed: r.attention.kind !== 'dilated', points };
  });
  const maxK = Math.max(...curves.flatMap((c) => c.points.map((p) => p[0])));
  writeText(join(RESULTS, `table2-${tag}-training.svg`), linePlotSvg({
    title: 'Training loss (each step)', xLabel: 'training tokens (thousands)', yLabel: 'loss (nats per byte)', xLinear: true,
    xTicks: Array.from({ length: 5 }, (_, i) => Math.round((maxK * i) / 4)), series: curves,
  }));
}

if (values.stage === 'all' || values.stage === 'train') for (const n of names) await train(n);
if (values.stage === 'all' || values.stage === 'eval') await evaluate();
