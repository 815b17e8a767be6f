import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/index.js';
import { fromFloat32, readSafetensors, toFloat64, writeSafetensors } from '../src/io/safetensors.js';
import { runCli } from './support/cli.js';

// one worker thread a process, to keep these runs light on a two-core machine
const cli = (args: string[]) => runCli(args, { LONGNET_THREADS: '1' });

let dir: string;
let input: string;
const shape = [2, 19, 3, 4];
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'longnet-ranks-'));
  input = join(dir, 'in.safetensors');
  const rng = new Rng(9);
  const n = shape.reduce((a, b) => a * b, 1);
  const rand = (): Float32Array => Float32Array.from({ length: n }, () => rng.normal());
  writeSafetensors(input, {
    q: fromFloat32(rand(), shape), k: fromFloat32(rand(), shape), v: fromFloat32(rand(), shape), do: fromFloat32(rand(), shape),
  });
});
after(() => rmSync(dir, { recursive: true, force: true }));

function compareFiles(a: string, b: string, tol: number): void {
  const x = readSafetensors(a);
  const y = readSafetensors(b);
  assert.deepEqual([...x.tensors.keys()].sort(), ['dk', 'dq', 'dv', 'lse', 'o']);
  assert.deepEqual([...y.tensors.keys()].sort(), [...x.tensors.keys()].sort());
  for (const [name, t] of x.tensors) {
    const u = y.tensors.get(name)!;
    assert.equal(u.dtype, t.dtype, name);
    assert.deepEqual(u.shape, t.shape, name);
    const p = toFloat64(t);
    const q = toFloat64(u);
    for (let i = 0; i < p.length; i++) {
      if (p[i] === q[i]) continue;
      assert.ok(Math.abs(p[i]! - q[i]!) <= tol * (1 + Math.abs(p[i]!)), `${name}[${i}]: ${p[i]} vs ${q[i]}`);
    }
  }
  assert.deepEqual(y.metadata, x.metadata);
}

for (const [label, extra, ranks, tol] of [
  ['float64, causal, 3 ranks', ['--float64', '--causal'], '3', 1e-12],
  ['float32, 2 ranks', [], '2', 2e-5],
] as const) {
  test(`longnet attention --ranks gives the single-device outputs: ${label}`, async () => {
    const common = ['attention', '--in', input, '--segments', '4,8,32', '--dilations', '1,2,4', ...extra];
    const one = join(dir, `one-${ranks}.safetensors`);
    const many = join(dir, `many-${ranks}.safetensors`);
    const [a, b] = await Promise.all([cli([...common, '--out', one]), cli([...common, '--out', many, '--ranks', ranks])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    compareFiles(one, many, tol);
  });
}

test('longnet attention --ranks refuses bad values with one line', async () => {
  const common = ['attention', '--in', input, '--segments', '4', '--dilations', '1', '--out', join(dir, 'x.safetensors')];
  const [zero, many] = await Promise.all([cli([...common, '--ranks', '0']), cli([...common, '--ranks', '20'])]);
  assert.equal(zero.code, 2);
  assert.match(zero.stderr, /--ranks: "0" is not a positive integer/);
  assert.equal(many.code, 2);
  assert.match(many.stderr, /--ranks 20 is more than the sequence length 19/);
});
