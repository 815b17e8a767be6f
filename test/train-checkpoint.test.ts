import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ByteTokenizer } from '../src/data/index.js';
import { InputError } from '../src/errors.js';
import { readSafetensors, writeSafetensors, serializeSafetensors } from '../src/io/safetensors.js';
import { LongNetDecoder, presetConfig, type ModelConfig } from '../src/model/index.js';
import { tensor } from '../src/tensor/index.js';
import {
  openCheckpointDir, readCheckpointConfig, readModelWeights, readTrainingState, saveCheckpoint, type CheckpointConfig,
} from '../src/train/checkpoint.js';
import { appendMetrics, readMetrics, truncateMetrics, type StepRecord } from '../src/train/metrics.js';
import { AdamW } from '../src/train/optimizer.js';
import { lossPlotSvg, niceTicks } from '../src/train/plot.js';

function smallConfig(): ModelConfig {
  return presetConfig('tiny', {
    dModel: 16, layers: 1, heads: 2, ffnDim: 32, vocabSize: 257,
    attention: { kind: 'dilated', segmentLengths: [4, 8], dilationRates: [1, 2] },
  });
}

const config = (model = smallConfig()): CheckpointConfig => ({
  format: 'longnet-checkpoint', version: 1, model, tokenizer: new ByteTokenizer().toJSON(), training: { steps: 3 },
});

const state = { step: 3, data: { epoch: 0, position: 3 }, dataContentHash: 'abc', tokens: 96, elapsedSeconds: 2, lastValLoss: 4.5, bestValLoss: 4.5, random: { dataSeed: 0 } };

/** A model with one optimizer step taken, saved into a fresh directory. */
function savedCheckpoint(): { dir: string; model: LongNetDecoder; optimizer: AdamW } {
  const dir = mkdtempSync(join(tmpdir(), 'longnet-ckpt-'));
  const model = new LongNetDecoder(smallConfig(), { seed: 1 });
  const optimizer = new AdamW(model.namedParameters());
  const tokens = tensor(Int32Array.from([1, 2, 3, 4, 5, 6]), [1, 6], { dtype: 'int32' });
  const targets = tensor(Int32Array.from([2, 3, 4, 5, 6, 7]), [1, 6], { dtype: 'int32' });
  model.loss(tokens, targets).backward();
  optimizer.update(1e-3);
  saveCheckpoint(dir, { params: model.namedParameters(), config: config(), optimizer, state });
  return { dir, model, optimizer };
}

function expectInputError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InputError, `not an InputError: ${String(e)}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

test('a checkpoint round-trips weights, optimizer moments and trainer state exactly', () => {
  const { dir, model, optimizer } = savedCheckpoint();
  try {
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer-state.json']);
    openCheckpointDir(dir);
    const { config: read, tokenizer } = readCheckpointConfig(dir);
    assert.deepEqual(read.model, smallConfig());
    assert.equal(tokenizer.name, 'byte');
    const copy = new LongNetDecoder(read.model, { seed: 2 });
    const { weights, saveId } = readModelWeights(dir, copy.namedParameters());
    copy.loadState(weights);
    for (const [name, values] of model.stateDict()) assert.deepEqual([...copy.stateDict().get(name)!], [...values], name);
    const { state: s, moments, optimizerStep } = readTrainingState(dir, copy.namedParameters(), saveId);
    assert.equal(s.step, 3);
    assert.deepEqual(s.data, { epoch: 0, position: 3 });
    assert.equal(optimizerStep, 1);
    const restored = new AdamW(copy.namedParameters());
    restored.loadState(moments, optimizerStep, 'x');
    for (const [name, { m, v }] of optimizer.moments) {
      assert.deepEqual([...restored.moments.get(name)!.m.toArray()], [...m.toArray()]);
      assert.deepEqual([...restored.moments.get(name)!.v.toArray()], [...v.toArray()]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('damaged checkpoints are refused with one clear line naming the file', () => {
  const { dir } = savedCheckpoint();
  const copy = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'longnet-bad-'));
    cpSync(dir, d, { recursive: true });
    return d;
  };
  const params = new LongNetDecoder(smallConfig()).namedParameters();
  const made: string[] = [];
  try {
    // truncated weights
    let d = copy(); made.push(d);
    const path = join(d, 'model.safetensors');
    truncateSync(path, Math.floor(statSync(path).size / 2));
    expectInputError(() => readModelWeights(d, params), /model\.safetensors.*(truncated|corrupt)/);
    // garbage header
    d = copy(); made.push(d);
    writeFileSync(join(d, 'model.safetensors'), 'this is not a safetensors file at all');
    expectInputError(() => readModelWeights(d, params), /model\.safetensors/);
    // config.json cut short
    d = copy(); made.push(d);
    const text = readFileSync(join(d, 'config.json'), 'utf8');
    writeFileSync(join(d, 'config.json'), text.slice(0, text.length / 2));
    expectInputError(() => readCheckpointConfig(d), /config\.json: not valid JSON/);
    // a config that does not fit: heads not dividing the width
    d = copy(); made.push(d);
    writeFileSync(join(d, 'config.json'), JSON.stringify(config({ ...smallConfig(), heads: 3 })));
    expectInputError(() => readCheckpointConfig(d), /config\.json: .*heads = 3 does not divide dModel = 16/);
    // weights of another size than config.json says
    const wider = new LongNetDecoder({ ...smallConfig(), dModel: 32, ffnDim: 64 }).namedParameters();
    expectInputError(() => readModelWeights(dir, wider), /has shape \[.*\] but config\.json's model needs/);
    // a missing parameter
    d = copy(); made.push(d);
    const file = readSafetensors(join(d, 'model.safetensors'));
    const dropped = [...file.tensors.keys()][0]!;
    file.tensors.delete(dropped);
    writeSafetensors(join(d, 'model.safetensors'), file.tensors, file.metadata);
    expectInputError(() => readModelWeights(d, params), new RegExp(`missing parameter "${dropped.replace(/\./g, '\\.')}"`));
    // a NaN inside otherwise valid data
    d = copy(); made.push(d);
    const f2 = readSafetensors(join(d, 'model.safetensors'));
    const [name, t] = [...f2.tensors][1]!;
    new Float32Array(t.data.buffer, t.data.byteOffset, 1)[0] = NaN;
    writeFileSync(join(d, 'model.safetensors'), serializeSafetensors(f2.tensors, f2.metadata));
    expectInputError(() => readModelWeights(d, params), new RegExp(`"${name.replace(/\./g, '\\.')}" holds a non-finite value`));
    // optimizer state from another save
    d = copy(); made.push(d);
    const other = savedCheckpoint();
    made.push(other.dir);
    cpSync(join(other.dir, 'optimizer.safetensors'), join(d, 'optimizer.safetensors'));
    const { saveId } = readModelWeights(d, params);
    expectInputError(() => readTrainingState(d, params, saveId), /come from different saves/);
    // not a checkpoint at all
    expectInputError(() => openCheckpointDir(join(dir, 'nope')), /no checkpoint at .*no such directory/);
    d = mkdtempSync(join(tmpdir(), 'longnet-empty-')); made.push(d);
    expectInputError(() => openCheckpointDir(d), /is not a checkpoint \(no config\.json\)/);
  } finally {
    for (const d of [dir, ...made]) rmSync(d, { recursive: true, force: true });
  }
});

test('a save that fails midway leaves the previous checkpoint loadable and unchanged', () => {
  const { dir, model, optimizer } = savedCheckpoint();
  try {
    const before = new Map(readdirSync(dir).map((n) => [n, readFileSync(join(dir, n))]));
    assert.throws(() => saveCheckpoint(dir, { params: model.namedParameters(), config: config(), optimizer, state: { ...state, step: 4 } }, {
      beforeCommit: () => { throw new Error('disk full'); },
    }), /disk full/);
    const after = new Map(readdirSync(dir).map((n) => [n, readFileSync(join(dir, n))]));
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const [n, bytes] of before) assert.ok(bytes.equals(after.get(n)!), `${n} changed`);
    const { saveId } = readModelWeights(dir, model.namedParameters());
    assert.equal(readTrainingState(dir, model.namedParameters(), saveId).state.step, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('metrics are appended, read back and trimmed to a step', () => {
  const dir = mkdtempSync(join(tmpdir(), 'longnet-metrics-'));
  try {
    const path = join(dir, 'metrics.jsonl');
    for (let s = 1; s <= 5; s++) appendMetrics(path, { step: s, loss: 5 - s / 2, tokens: 10 * s, elapsed: s });
    writeFileSync(path, readFileSync(path, 'utf8') + '{"step": 6, "lo'); // a line cut by a kill
    assert.deepEqual(readMetrics(path).map((r) => r.step), [1, 2, 3, 4, 5]);
    assert.deepEqual(truncateMetrics(path, 3).map((r) => r.step), [1, 2, 3]);
    assert.deepEqual(readMetrics(path).map((r) => r.step), [1, 2, 3]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Well-formedness of an XML document (tags nest and close, attributes quoted); returns element names. */
function parseXml(text: string): { name: string; attrs: Record<string, string>; text: string }[] {
  const elements: { name: string; attrs: Record<string, string>; text: string }[] = [];
  const stack: string[] = [];
  const open: { text: string }[] = [];
  const re = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<&]*(?:&(?:lt|gt|amp|quot|apos);[^"<&]*)*")*)\s*(\/?)>|([^<]+)/gy;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(text)) !== null) {
    pos = re.lastIndex;
    if (m[5] !== undefined) {
      assert.ok(!/&(?!(lt|gt|amp|quot|apos);)/.test(m[5]), `bad entity in text: ${m[5]}`);
      if (open.length > 0) open[open.length - 1]!.text += m[5];
      continue;
    }
    const [, close, name, attrText, selfClose] = m;
    if (close) {
      assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
      open.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText!.matchAll(/([\w:-]+)="([^"]*)"/g)) attrs[a[1]!] = a[2]!;
    const element = { name: name!, attrs, text: '' };
    elements.push(element);
    if (!selfClose) {
      stack.push(name!);
      open.push(element);
    }
  }
  assert.equal(pos, text.length, `unparsable XML at ${pos}: ${text.slice(pos, pos + 40)}`);
  assert.deepEqual(stack, [], 'unclosed elements');
  return elements;
}

test('the loss plot is valid SVG with labelled axes, both curves and a legend', () => {
  const records: StepRecord[] = [{ step: 0, tokens: 0, elapsed: 0, valLoss: 5.6 }];
  for (let s = 1; s <= 300; s++) {
    const r: StepRecord = { step: s, loss: 1.5 + 4 * Math.exp(-s / 60) + 0.1 * Math.sin(s), tokens: s * 100, elapsed: s };
    if (s % 25 === 0) r.valLoss = 1.7 + 4 * Math.exp(-s / 60);
    records.push(r);
  }
  const svg = lossPlotSvg(records, { title: 'LongNet tiny: loss <lodash.js> & more' });
  const elements = parseXml(svg.replace(/^<\?xml[^>]*>\s*/, ''));
  assert.equal(elements[0]!.name, 'svg');
  assert.equal(elements[0]!.attrs['xmlns'], 'http://www.w3.org/2000/svg');
  const byClass = (c: string) => elements.filter((e) => e.attrs['class'] === c);
  assert.equal(byClass('train-loss').length, 1);
  assert.equal(byClass('train-loss-smoothed').length, 1);
  assert.equal(byClass('val-loss').length, 1);
  assert.equal(elements.filter((e) => e.name === 'circle').length, 13);
  const texts = elements.filter((e) => e.name === 'text').map((e) => e.text);
  for (const label of ['step', 'loss (nats per token)', 'perplexity']) assert.ok(texts.includes(label), `missing label ${label}`);
  assert.ok(texts.some((t) => t.includes('&lt;lodash.js&gt; &amp; more')), 'title escaped');
  assert.ok(texts.some((t) => t.startsWith('validation loss')));
  // an empty history still gives a valid document
  parseXml(lossPlotSvg([]));
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(1.3, 5.9, 5), [2, 3, 4, 5]);
});
