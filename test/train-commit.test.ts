import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commitFiles, hasPendingCommit, recoverCommit } from '../src/train/commit.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../..');

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'longnet-commit-'));
}

const set = (version: string): Map<string, string> =>
  new Map([['a.bin', `a${version}`], ['b.bin', `b${version}`], ['state.json', `s${version}`]]);

function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = readFileSync(join(dir, name), 'utf8');
  return out;
}

test('a save replaces the whole set and leaves other files of the directory alone', () => {
  const dir = scratch();
  try {
    writeFileSync(join(dir, 'metrics.jsonl'), 'keep me');
    commitFiles(dir, set('1'));
    commitFiles(dir, set('2'));
    assert.deepEqual(contents(dir), { 'a.bin': 'a2', 'b.bin': 'b2', 'metrics.jsonl': 'keep me', 'state.json': 's2' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a save that fails before its commit point leaves the old set; the next load cleans up', () => {
  const dir = scratch();
  try {
    commitFiles(dir, set('1'));
    assert.throws(() => commitFiles(dir, set('2'), { beforeCommit: () => { throw new Error('power cut'); } }), /power cut/);
    assert.deepEqual(contents(dir), { 'a.bin': 'a1', 'b.bin': 'b1', 'state.json': 's1' });
    // a staging directory left by a killed process (no exception handler ran)
    mkdirSync(join(dir, '.staging-abc'));
    writeFileSync(join(dir, '.staging-abc', 'a.bin'), 'a3');
    assert.equal(hasPendingCommit(dir), true);
    recoverCommit(dir);
    assert.deepEqual(contents(dir), { 'a.bin': 'a1', 'b.bin': 'b1', 'state.json': 's1' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a save interrupted after its commit point is completed by recovery', () => {
  const dir = scratch();
  try {
    commitFiles(dir, set('1'));
    assert.throws(() => commitFiles(dir, set('2'), { afterCommit: () => { throw new Error('killed'); } }), /killed/);
    assert.equal(hasPendingCommit(dir), true);
    // half moved: one new file already in place
    renameSync(join(dir, '.commit', 'a.bin'), join(dir, 'a.bin'));
    recoverCommit(dir);
    assert.equal(hasPendingCommit(dir), false);
    assert.deepEqual(contents(dir), { 'a.bin': 'a2', 'b.bin': 'b2', 'state.json': 's2' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a process killed at random moments while saving never leaves a mixed or torn set', async () => {
  const dir = scratch();
  // each save writes three 1 MB files that all carry the save's number
  const script = `
    import { commitFiles } from ${JSON.stringify(join(ROOT, 'src/train/commit.ts'))};
    const dir = ${JSON.stringify(dir)};
    for (let v = 1; ; v++) {
      const body = (c) => c + String(v).padStart(8, '0') + 'x'.repeat(1 << 20);
      commitFiles(dir, new Map([['a.bin', body('a')], ['b.bin', body('b')], ['state.json', body('s')]]));
      if (v === 1) process.stdout.write('first\\n');
    }`;
  try {
    for (let round = 0; round < 6; round++) {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((done) => child.stdout.once('data', () => done()));
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 200));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      recoverCommit(dir);
      const names = readdirSync(dir).sort();
      assert.deepEqual(names, ['a.bin', 'b.bin', 'state.json']);
      const versions = names.map((n) => {
        const text = readFileSync(join(dir, n), 'utf8');
        assert.equal(text.length, 9 + (1 << 20), `${n} is torn`);
        return text.slice(1, 9);
      });
      assert.equal(new Set(versions).size, 1, `mixed set: ${versions.join(', ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
