import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors } from '../src/io/safetensors.js';
import { runCli as cli, ROOT, MAIN, writeCodeCorpus, type CliResult as Result } from './support/cli.js';

let work: string;
let corpus: string;
/** A small, fast run: the tiny preset on a few KB of code. */
const FAST = ['--steps', '6', '--seq-len', '32', '--batch', '2', '--eval-every', '3', '--eval-sequences', '2'];

before(() => {
  work = mkdtempSync(join(tmpdir(), 'longnet-cli-train-'));
  corpus = join(work, 'corpus.js');
  writeCodeCorpus(corpus);
});

after(() => rmSync(work, { recursive: true, force: true }));

function snapshot(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((n) => [n, readFileSync(join(dir, n))]));
}

function assertUnchanged(dir: string, before: Map<string, Buffer>): void {
  const now = snapshot(dir);
  assert.deepEqual([...now.keys()], [...before.keys()], `files of ${dir} changed`);
  for (const [n, bytes] of before) assert.ok(bytes.equals(now.get(n)!), `${n} changed`);
}

function losses(dir: string): { step: number; loss?: number; valLoss?: number }[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss?: number; valLoss?: number })
    .map(({ step, loss, valLoss }) => ({ step, loss, valLoss }));
}

function tensors(dir: string): Map<string, string> {
  const f = readSafetensors(join(dir, 'model.safetensors'));
  return new Map([...f.tensors].map(([n, t]) => [n, Buffer.from(t.data).toString('base64')]));
}

function assertOneLineError(r: Result, pattern: RegExp): void {
  assert.equal(r.code, 2, `exit ${r.code}; stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\s+at\s+\S+\s+\(|internal error/);
}

test('train writes a checkpoint, a plot and metrics; a run stopped at step 3 and resumed repeats the straight run exactly', async () => {
  const straight = join(work, 'straight');
  const split = join(work, 'split');
  const [a, b] = await Promise.all([
    cli(['train', '--data', corpus, '--out', straight, ...FAST]),
    cli(['train', '--data', corpus, '--out', split, ...FAST, '--stop-at', '3']),
  ]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  assert.deepEqual(readdirSync(straight).sort(),
    ['config.json', 'loss.svg', 'metrics.jsonl', 'model.safetensors', 'optimizer.safetensors', 'trainer-state.json']);
  assert.match(a.stdout, /generate from it:\n {2}npx longnet generate --checkpoint \S+ --prompt '' --max-new-tokens 200\n$/);
  assert.match(a.stdout, /step 0: validation loss/);
  assert.match(b.stdout, /stopped at step 3/);
  const c = await cli(['train', '--resume', '--out', split]);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /resuming .* at step 3 of 6/);
  const want = losses(straight);
  assert.equal(want.length, 7);
  assert.deepEqual(losses(split), want);
  assert.deepEqual(tensors(split), tensors(straight));
  const state = JSON.parse(readFileSync(join(split, 'trainer-state.json'), 'utf8')) as { step: number };
  assert.equal(state.step, 6);
  // evaluating and sampling from the checkpoint
  const [ev, g1, g2, greedy] = await Promise.all([
    cli(['eval', '--checkpoint', straight, '--data', corpus, '--seq-len', '16', '--seq-len=32']),
    cli(['generate', '--checkpoint', straight, '--prompt', 'function', '--max-new-tokens', '24', '--seed', '3', '--top-k', '20', '--top-p', '0.9']),
    cli(['generate', '--checkpoint', straight, '--prompt', 'function', '--max-new-tokens', '24', '--seed', '3', '--top-k', '20', '--top-p', '0.9']),
    cli(['generate', '--checkpoint', straight, '--prompt', 'function', '--max-new-tokens', '8', '--temperature', '0']),
  ]);
  assert.equal(ev.code, 0, ev.stderr);
  const evLines = ev.stdout.trim().split('\n');
  assert.match(evLines.at(-1)!, /^perplexity: \d+\.\d+$/);
  assert.ok(evLines.some((l) => /^\s+16\s+\d+/.test(l)) && evLines.some((l) => /^\s+32\s+\d+/.test(l)), ev.stdout);
  for (const g of [g1, g2, greedy]) {
    assert.equal(g.code, 0, g.stderr);
    assert.ok(g.stdout.startsWith('function'), g.stdout);
    assert.match(g.stderr, /tokens in/);
  }
  assert.equal(g1.stdout, g2.stdout);
});

test('SIGTERM during training saves a checkpoint that --resume continues', async () => {
  const out = join(work, 'signal');
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'train', '--data', corpus, '--out', out,
    '--steps', '1000', '--seq-len', '32', '--batch', '2', '--eval-every', '500', '--eval-sequences', '1'], { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  await new Promise<void>((done) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (/step\s+1\/1000/.test(stdout)) done();
    });
  });
  child.kill('SIGTERM');
  const code = await exited;
  assert.equal(code, 143, `exit ${code}\n${stdout}\n${stderr}`);
  assert.match(stdout, /stopped by SIGTERM at step (\d+): checkpoint saved/);
  const step = Number(/stopped by SIGTERM at step (\d+)/.exec(stdout)![1]);
  assert.ok(step >= 1 && step < 1000);
  const state = JSON.parse(readFileSync(join(out, 'trainer-state.json'), 'utf8')) as { step: number };
  assert.equal(state.step, step);
  assert.ok(statSync(join(out, 'loss.svg')).size > 0);
  const r = await cli(['train', '--resume', '--out', out, '--steps', String(step + 1)]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`resuming .* at step ${step} of ${step + 1}`));
});

test('bad input: one line, exit 2, and an existing checkpoint left untouched', async () => {
  const ckpt = join(work, 'keep');
  const made = await cli(['train', '--data', corpus, '--out', ckpt, '--steps', '2', '--seq-len', '16', '--batch', '1', '--eval-sequences', '1']);
  assert.equal(made.code, 0, made.stderr);
  const before = snapshot(ckpt);
  const empty = join(work, 'empty.txt');
  writeFileSync(empty, '');
  const truncated = join(work, 'truncated');
  cpSync(ckpt, truncated, { recursive: true });
  truncateSync(join(truncated, 'model.safetensors'), 100);
  const badConfig = join(work, 'bad-config');
  cpSync(ckpt, badConfig, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(badConfig, 'config.json'), 'utf8')) as { model: { heads: number } };
  cfg.model.heads = 3;
  writeFileSync(join(badConfig, 'config.json'), JSON.stringify(cfg));
  const cases: [string[], RegExp][] = [
    [['train', '--data', join(work, 'missing.txt'), '--out', join(work, 'x1')], /cannot read .*missing\.txt: no such file/],
    [['train', '--data', empty, '--out', join(work, 'x2')], /empty corpus/],
    [['train', '--preset', 'huge', '--out', join(work, 'x3')], /--preset: "huge" is not one of tiny/],
    [['train', '--steps', 'abc', '--out', ckpt], /--steps: "abc" is not a positive integer/],
    [['train', '--lr=-1', '--out', ckpt, '--data', corpus], /--lr: -1 is not a positive number/],
    [['train', '--lr', 'fast', '--out', ckpt], /--lr: "fast" is not a finite number/],
    [['train', '--batch', '0', '--out', ckpt], /--batch: "0" is not a positive integer/],
    [['train', '--warmup', '50', '--steps', '10', '--out', join(work, 'x4'), '--data', corpus], /--warmup 50 is longer than the run/],
    [['train', '--data', corpus, '--out', ckpt], /already holds a checkpoint; pass --resume .* or --overwrite/],
    [['train', '--resume', '--out', ckpt, '--seq-len', '64'], /--seq-len 64 differs from the checkpoint/],
    [['train', '--resume', '--out', join(work, 'nothing-here')], /no checkpoint at .*nothing-here/],
    [['train', '--data', corpus, '--out', join(work, 'x5'), '--seq-len', '100000000'], /sequence length 100000000 is past XPos/],
    [['train', '--data', corpus, '--out', join(work, 'x6'), '--seq-len', '4096', '--batch', '64'], /fewer than one batch/],
    [['eval', '--checkpoint', truncated, '--data', corpus], /model\.safetensors.*(truncated|corrupt)/],
    [['eval', '--checkpoint', badConfig, '--data', corpus], /config\.json: .*heads = 3 does not divide dModel = 128/],
    [['eval', '--checkpoint', ckpt, '--data', corpus, '--seq-len', '5000'], /--seq-len 5000: .*fewer than one sequence/],
    [['generate', '--checkpoint', ckpt, '--top-p', '2'], /top-p must be in \(0, 1\]/],
    [['generate', '--checkpoint', ckpt, '--max-new-tokens=-3'], /--max-new-tokens: "-3" is not a positive integer/],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(args)));
  results.forEach((r, i) => assertOneLineError(r, cases[i]![1]));
  assertUnchanged(ckpt, before);
  for (const d of ['x1', 'x2', 'x3', 'x4', 'x5', 'x6']) assert.throws(() => statSync(join(work, d)), `${d} was created`);
});
