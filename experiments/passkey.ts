/**
 * Passkey retrieval against context length, LongNet and the vanilla Transformer (src/data/passkey.ts).
 * Each model is trained from scratch on sequences of one short length, each a passkey sample of random
 * length (the needle at a uniformly drawn depth) followed by filler, so that the question stands at
 * varying positions; then it is asked for the key at the end of longer contexts, the needle at evenly
 * spaced depths. A sample counts as retrieved when every digit of the answer is the model's argmax given
 * the digits before it (so greedy decoding would write the key).
 *
 *   npx tsx experiments/passkey.ts
 *   npx tsx experiments/passkey.ts --device cuda --train-length 2048 --steps 2000 --lengths 2048,8192,32768 --out-tag gpu
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Device } from '../src/backend/backend.js';
import { PASSKEY_FILLER, passkeyMinLength, passkeySample } from '../src/data/index.js';
import { LongNetDecoder, type ModelAttention } from '../src/model/index.js';
import { clipScale, globalGradNorm } from '../src/train/clip.js';
import { AdamW, PAPER_ADAMW } from '../src/train/optimizer.js';
import { learningRate } from '../src/train/schedule.js';
import { add, crossEntropy, noGrad, Rng, tensor, tidy } from '../src/tensor/index.js';
import { hardware, linePlotSvg, RESULTS, smallConfig, writeJson, writeText } from './common.js';

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    'train-length': { type: 'string', default: '256' },
    steps: { type: 'string', default: '600' },
    batch: { type: 'string', default: '4' },
    lr: { type: 'string', default: '3e-3' },
    seed: { type: 'string', default: '0' },
    lengths: { type: 'string', default: '256,512,1024,2048,4096' },
    samples: { type: 'string', default: '8' },
    models: { type: 'string', default: 'longnet,transformer' },
    'out-tag': { type: 'string', default: 'cpu' },
    /** Redraw the SVG from the JSON of earlier runs. */
    'plot-only': { type: 'boolean', default: false },
  },
});
const device = values.device as Device;
const trainLength = Number(values['train-length']);
const steps = Number(values.steps);
const batch = Number(values.batch);
const lr = Number(values.lr);
const seed = Number(values.seed);
const lengths = values.lengths!.split(',').map(Number);
const samples = Number(values.samples);
const tag = values['out-tag']!;
const DIGITS = 5;

/**
 * LongNet's schedule for this task, the Table 2 shape (x4 segments, rates capped at the 4 heads) started
 * at a quarter of the training length, so that training already mixes a dense and a dilated level.
 */
const passkeySchedule = (): ModelAttention => {
  const w0 = Math.max(16, trainLength / 4);
  return { kind: 'dilated', segmentLengths: [w0, 4 * w0, 16 * w0, 64 * w0], dilationRates: [1, 2, 4, 4] };
};
const KINDS: Record<string, { label: string; attention: () => ModelAttention }> = {
  longnet: { label: 'LongNet', attention: passkeySchedule },
  transformer: { label: 'Transformer', attention: () => ({ kind: 'dense' }) },
};

const bytes = (text: string): Int32Array => Int32Array.from(Buffer.from(text, 'latin1'));

/** Language-modelling loss of every token plus the loss of the answer digits alone (so they are not drowned by filler). */
function trainModel(attention: ModelAttention, log: (line: string) => void): { model: LongNetDecoder; losses: number[]; seconds: number } {
  const model = new LongNetDecoder(smallConfig(attention), { seed, device });
  const params = model.namedParameters();
  const optimizer = new AdamW(params, PAPER_ADAMW);
  const rng = new Rng(1000 + seed);
  const schedule = { lr, totalSteps: steps, warmup: Math.max(1, Math.round(steps / 10)), endLr: 0 };
  const losses: number[] = [];
  const minLength = passkeyMinLength(DIGITS);
  const started = performance.now();
  for (let step = 1; step <= steps; step++) {
    optimizer.zeroGrad();
    const inputs = new Int32Array(batch * trainLength);
    const targets = new Int32Array(batch * trainLength);
    const answer = new Int32Array(batch * trainLength).fill(-1);
    for (let b = 0; b < batch; b++) {
      // a sample of random length, then filler up to the sequence length: the answer's position varies,
      // so that the model must find the question by its content, not by where it stands
      const length = minLength + rng.int(trainLength + 2 - minLength);
      const s = passkeySample({ length, digits: DIGITS, rng });
      const tail = `. ${PASSKEY_FILLER.repeat(Math.ceil(trainLength / PASSKEY_FILLER.length) + 1)}`.slice(0, trainLength + 1 - length);
      const t = bytes(s.text + tail);
      inputs.set(t.subarray(0, trainLength), b * trainLength);
      targets.set(t.subarray(1), b * trainLength);
      for (let i = s.answerStart - 1; i < s.answerStart - 1 + DIGITS; i++) answer[b * trainLength + i] = t[i + 1]!;
    }
    const loss = tidy(() => {
      const logits = model.forward(tensor(inputs, [batch, trainLength], { dtype: 'int32', device }));
      const lm = crossEntropy(logits, tensor(targets, [batch, trainLength], { dtype: 'int32', device }));
      const retrieval = crossEntropy(logits, tensor(answer, [batch, trainLength], { dtype: 'int32', device }), { ignoreIndex: -1 });
      const total = add(lm, retrieval);
      total.backward();
      return [lm.item(), retrieval.item()];
    });
    const scale = clipScale(globalGradNorm(params.values()), 2.0);
    noGrad(() => optimizer.update(learningRate(schedule, step), scale));
    optimizer.zeroGrad();
    losses.push(loss[1]!);
    if (step % 10 === 0 || step === steps) log(`step ${step}/${steps}: loss ${loss[0]!.toFixed(3)}, answer loss ${loss[1]!.toFixed(3)}`);
  }
  return { model, losses, seconds: (performance.now() - started) / 1000 };
}

/** Accuracy at each length over `samples` needles at depths 0, 1/(samples-1), ..., 1. */
function evaluate(model: LongNetDecoder, log: (line: string) => void): Record<number, { accuracy: number; digitAccuracy: number; retrieved: boolean[] }> {
  const out: Record<number, { accuracy: number; digitAccuracy: number; retrieved: boolean[] }> = {};
  for (const n of lengths) {
    const retrieved: boolean[] = [];
    let digitsRight = 0;
    const started = performance.now();
    for (let i = 0; i < samples; i++) {
      // n tokens of context: the sample has n + 1 characters, its last one only a target (as in training)
      const s = passkeySample({ length: n + 1, digits: DIGITS, depth: samples === 1 ? 0.5 : i / (samples - 1), rng: 5000 + 97 * n + i });
      const t = bytes(s.text);
      const predicted = noGrad(() => tidy(() => {
        const logits = model.forward(tensor(t.subarray(0, n), [1, n], { dtype: 'int32', device })).toArray();
        const vocab = model.config.vocabSize;
        const guesses: number[] = [];
        for (let p = s.answerStart - 1; p < n; p++) {
          let best = 0;
          for (let v = 1; v < vocab; v++) if (logits[p * vocab + v]! > logits[p * vocab + best]!) best = v;
          guesses.push(best);
        }
        return guesses;
      }));
      let all = true;
      predicted.forEach((g, j) => {
        if (g === t[s.answerStart + j]) digitsRight++;
        else all = false;
      });
      retrieved.push(all);
    }
    const accuracy = retrieved.filter(Boolean).length / samples;
    out[n] = { accuracy, digitAccuracy: digitsRight / (samples * DIGITS), retrieved };
    log(`length ${n}: ${retrieved.filter(Boolean).length}/${samples} retrieved, digit accuracy ${(out[n].digitAccuracy * 100).toFixed(0)}% (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  }
  return out;
}

interface Row { model: string; label: string; results: Record<number, { accuracy: number }>; [key: string]: unknown }
const resultPath = join(RESULTS, `passkey-${tag}.json`);
const colors: Record<string, string> = { longnet: '#2ca02c', transformer: '#1f77b4' };
/** Rows of earlier runs into the same file (other models, e.g. trained in another process) are kept. */
const earlier = (): Row[] => (existsSync(resultPath) ? (JSON.parse(readFileSync(resultPath, 'utf8')) as { rows: Row[] }).rows : []);
if (values['plot-only']) plot(earlier());
for (const name of values['plot-only'] ? [] : values.models!.split(',')) {
  const kind = KINDS[name];
  if (kind === undefined) throw new Error(`unknown model ${name} (known: ${Object.keys(KINDS).join(', ')})`);
  const log = (line: string): void => console.log(`${name}: ${line}`);
  const attention = kind.attention();
  const { model, losses, seconds } = trainModel(attention, log);
  const results = evaluate(model, log);
  model.dispose();
  const rows = earlier().filter((r) => r.model !== name);
  rows.push({ model: name, label: kind.label, attention, trainSeconds: Math.round(seconds), finalAnswerLoss: losses.at(-1), answerLossEvery10Steps: losses.filter((_, i) => i % 10 === 9), results });
  rows.sort((a, b) => a.model.localeCompare(b.model));
  writeJson(resultPath, {
    experiment: 'passkey retrieval accuracy against context length',
    task: { digits: DIGITS, trainLength, evalLengths: lengths, samplesPerLength: samples, depths: 'evenly spaced in [0, 1]', tokenizer: 'byte' },
    model: { ...smallConfig({ kind: 'dense' }), attention: 'per row' },
    training: { steps, batch, lr, warmup: Math.max(1, Math.round(steps / 10)), seed, loss: 'mean cross-entropy of all tokens + mean cross-entropy of the answer digits', data: 'a passkey sample of uniformly random length in [minimum, trainLength + 1], then filler', device },
    hardware: hardware(device),
    rows,
  });
  plot(rows);
}

/** Whole keys retrieved and digits right (chance: 10%), against context length. */
function plot(rows: Row[]): void {
  const series = rows.flatMap((r) => [
    {
      label: `${r.label}: keys`, color: colors[r.model] ?? '#555555', dashed: false,
      points: lengths.map((n) => [n, (r.results[n]?.accuracy ?? NaN) * 100] as [number, number]),
    },
    {
      label: `${r.label}: digits`, color: colors[r.model] ?? '#555555', dashed: true,
      points: lengths.map((n) => [n, ((r.results[n] as { digitAccuracy?: number } | undefined)?.digitAccuracy ?? NaN) * 100] as [number, number]),
    },
  ]);
  series.push({ label: 'chance per digit', color: '#999999', dashed: true, points: lengths.map((n) => [n, 10] as [number, number]) });
  writeText(join(RESULTS, `passkey-${tag}.svg`), linePlotSvg({
    title: `Passkey retrieval (trained at ${trainLength} tokens)`, xLabel: 'context length (tokens)', yLabel: 'accuracy (%)',
    xTicks: lengths, yRange: [-5, 105], yTickStep: 20, series,
  }));
}
