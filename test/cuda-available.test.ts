// Runs on every machine: without the addon (or a GPU) the CUDA path says why in one line and the CPU
// path is unaffected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cudaAvailable, inspectAddon } from '../src/backend/cuda/load.js';
import { createCudaBackend } from '../src/backend/cuda/index.js';
import { getBackend } from '../src/backend/registry.js';
import { InputError } from '../src/errors.js';

const oneLine = (s: string): void => {
  assert.ok(s.length > 0, 'empty reason');
  assert.ok(!s.includes('\n'), `reason spans lines: ${JSON.stringify(s)}`);
  assert.ok(!/\bat .*:\d+:\d+/.test(s), `reason holds a stack trace: ${s}`);
};

test('an addon that was never built is reported in one line', () => {
  const r = inspectAddon(undefined);
  assert.equal(r.ok, false);
  if (!r.ok) {
    oneLine(r.reason);
    assert.match(r.reason, /not built \(run npm run build:native\)/);
  }
});

test('a missing or broken addon file is reported in one line', () => {
  const missing = inspectAddon('/nonexistent/longnet_cuda.node');
  assert.equal(missing.ok, false);
  if (!missing.ok) oneLine(missing.reason);
  const dir = mkdtempSync(join(tmpdir(), 'longnet-addon-'));
  const broken = join(dir, 'longnet_cuda.node');
  writeFileSync(broken, 'not a shared library');
  const r = inspectAddon(broken);
  assert.equal(r.ok, false);
  if (!r.ok) {
    oneLine(r.reason);
    assert.match(r.reason, /failed to load/);
  }
});

test('cudaAvailable gives ok or one line, and the cuda backend fails with that line', () => {
  const status = cudaAvailable();
  if (status.ok) {
    assert.equal(createCudaBackend().device, 'cuda');
    return;
  }
  oneLine(status.reason);
  assert.throws(() => createCudaBackend(), (e: unknown) => {
    assert.ok(e instanceof InputError);
    assert.equal(e.message, `longnet: CUDA unavailable: ${status.reason}`);
    return true;
  });
  assert.throws(() => getBackend('cuda'), /^InputError: longnet: CUDA unavailable: /);
});

test('the CPU backend works whatever the state of CUDA', () => {
  cudaAvailable();
  const cpu = getBackend('cpu');
  const a = cpu.fromArray(new Float32Array([1, 2, 3]));
  const b = cpu.fromArray(new Float32Array([10, 20, 30]));
  assert.deepEqual([...cpu.read(cpu.binary('add', a, [3], b, [3], [3]))], [11, 22, 33]);
});

test('with LONGNET_CUDA_ADDON pointing nowhere, a fresh process reports one line and computes on the CPU', () => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const script = [
    "import { cudaAvailable } from './src/backend/cuda/index.ts';",
    "import { getBackend } from './src/backend/registry.ts';",
    'const s = cudaAvailable();',
    "let line = '';",
    "try { getBackend('cuda'); } catch (e) { line = e.message; }",
    "const cpu = getBackend('cpu');",
    'const x = cpu.fromArray(new Float32Array([4]));',
    "console.log(JSON.stringify({ ok: s.ok, line, value: cpu.read(cpu.unary('sqrt', x))[0] }));",
  ].join('\n');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root, encoding: 'utf8', env: { ...process.env, LONGNET_CUDA_ADDON: '/nonexistent/longnet_cuda.node' },
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; line: string; value: number };
  assert.equal(out.ok, false);
  oneLine(out.line);
  assert.match(out.line, /^longnet: CUDA unavailable: native addon not found at \/nonexistent\/longnet_cuda.node/);
  assert.equal(out.value, 2);
});
