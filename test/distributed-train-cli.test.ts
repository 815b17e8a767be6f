/**
 * `longnet train --ranks W --seq-parallel P` end to end on the CPU: the same losses and weights as one
 * device on the same global batch (float32: rounding only), a checkpoint of one layout resumed under
 * another, and one-line errors for layouts that do not fit.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../src/io/safetensors.js';
import { runCli as cli, writeCodeCorpus, type CliResult as Result } from './support/cli.js';

let work: string;
let corpus: string;
const FAST = ['--steps', '4', '--seq-len', '32', '--batch', '4', '--eval-every', '2', '--eval-sequences', '4'];

before(() => {
  work = mkdtempSync(join(tmpdir(), 'longnet-cli-parallel-'));
  corpus = join(work, 'corpus.js');
  writeCodeCorpus(corpus);
});

after(() => rmSync(work, { recursive: true, force: true }));

interface Metric { step: number; loss?: number; valLoss?: number; tokens: number }

function metrics(dir: string): Metric[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metric);
}

function assertSameTraining(dir: string, reference: string, what: string): void {
  const got = metrics(dir);
  const want = metrics(reference);
  assert.deepEqual(got.map((m) => m.step), want.map((m) => m.step), `${what}: steps`);
  got.forEach((m, i) => {
    const w = want[i]!;
    assert.equal(m.tokens, w.tokens, `${what}: tokens at step ${m.step}`);
    for (const key of ['loss', 'valLoss'] as const) {
      assert.equal(m[key] === undefined, w[key] === undefined, `${what}: ${key} at step ${m.step}`);
      if (m[key] !== undefined) {
        assert.ok(Math.abs(m[key]! - w[key]!) < 1e-5 * Math.abs(w[key]!), `${what}: ${key} at step ${m.step}: ${m[key]} vs ${w[key]}`);
      }
    }
  });
  const a = readSafetensors(join(dir, 'model.safetensors'));
  const b = readSafetensors(join(reference, 'model.safetensors'));
  for (const [name, t] of b.tensors) {
    const x = toFloat32(a.tensors.get(name)!);
    const y = toFloat32(t);
    let worst = 0;
    for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
    // AdamW normalizes each update: float32 rounding in a near-zero gradient moves a weight by up to ~lr
    assert.ok(worst < 1e-4, `${what}: ${name} differs by ${worst}`);
  }
}

test('train --ranks 4 --seq-parallel 2 equals one device; a checkpoint resumes under another layout', async () => {
  const single = join(work, 'single');
  const parallel = join(work, 'parallel');
  const split = join(work, 'split');
  const [a, b, c] = await Promise.all([
    cli(['train', '--data', corpus, '--out', single, ...FAST]),
    cli(['train', '--data', corpus, '--out', parallel, ...FAST, '--ranks', '4', '--seq-parallel', '2']),
    cli(['train', '--data', corpus, '--out', split, ...FAST, '--stop-at', '2', '--ranks', '2']),
  ]);
  for (const r of [a, b, c]) assert.equal(r.code, 0, r.stderr);
  assert.match(b.stdout, /parallel: 4 in-process CPU ranks = 2 data-parallel x 2 sequence-parallel/);
  // one progress line and one log: rank 0's
  assert.equal(b.stdout.match(/^done: /gm)?.length, 1);
  assertSameTraining(parallel, single, '4 ranks, P = 2');

  // saved by 2 data-parallel ranks at step 2, resumed on 2 sequence-parallel ranks
  const d = await cli(['train', '--out', split, '--resume', '--ranks', '2', '--seq-parallel', '2']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /resuming .* at step 2 of 4/);
  assertSameTraining(split, single, 'resumed under another layout');
});

function assertOneLineError(r: Result, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0]!, pattern);
}

test('layouts that do not fit are one line on stderr, exit 2, and write nothing', async () => {
  const out = join(work, 'bad');
  const base = ['train', '--data', corpus, '--out', out, ...FAST];
  const noLaunch = { WORLD_SIZE: undefined };
  const [notDividing, tooFew, batch, short, launched, zero] = await Promise.all([
    cli([...base, '--ranks', '4', '--seq-parallel', '3'], noLaunch),
    cli([...base, '--seq-parallel', '2'], noLaunch),
    cli([...base, '--ranks', '3', '--batch', '4'], noLaunch),
    cli([...base, '--ranks', '4', '--seq-parallel', '4', '--seq-len', '3'], noLaunch),
    cli([...base, '--ranks', '2'], { ...noLaunch, WORLD_SIZE: '2' }),
    cli([...base, '--seq-parallel', '0'], noLaunch),
  ]);
  assertOneLineError(notDividing, /--seq-parallel 3 does not divide the 4 ranks/);
  assertOneLineError(tooFew, /--seq-parallel 2 needs at least 2 ranks, but the job has 1/);
  assertOneLineError(batch, /--batch 4 \(the global batch\) does not split evenly over 3 data-parallel replicas/);
  assertOneLineError(short, /--seq-len 3 is shorter than --seq-parallel 4/);
  assertOneLineError(launched, /on the CPU the ranks of a job run in one process \(--ranks W\)/);
  assertOneLineError(zero, /--seq-parallel: "0" is not a positive integer/);
  assert.ok(!existsSync(out), 'a failed run wrote files');
});
