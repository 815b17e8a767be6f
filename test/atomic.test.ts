import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkWritableTarget, writeDirectoryAtomic, writeFileAtomic, type AtomicData } from '../src/io/atomic.js';
import { InputError } from '../src/errors.js';
import { isRoot, runUnprivileged } from './support/unprivileged.js';

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'longnet-atomic-'));
}


test('writes a new file and replaces an existing one, leaving no temporary file', () => {
  const dir = scratch();
  try {
    const path = join(dir, 'out.bin');
    writeFileAtomic(path, new Uint8Array([1, 2, 3]));
    assert.deepEqual([...readFileSync(path)], [1, 2, 3]);
    writeFileAtomic(path, 'héllo');
    assert.equal(readFileSync(path, 'utf8'), 'héllo');
    writeFileAtomic(path, [new Uint8Array([9]), 'ab', new Uint8Array(0), new Uint8Array([7, 8])]);
    assert.deepEqual([...readFileSync(path)], [9, 97, 98, 7, 8]);
    assert.deepEqual(readdirSync(dir), ['out.bin']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a producer that throws midway leaves the old file intact and no partial file', () => {
  const dir = scratch();
  try {
    const path = join(dir, 'model.safetensors');
    writeFileSync(path, 'old content');
    function* failing(): Generator<Uint8Array> {
      yield new Uint8Array(1 << 16).fill(1);
      throw new Error('disk exploded');
    }
    assert.throws(() => writeFileAtomic(path, failing()), /disk exploded/);
    assert.equal(readFileSync(path, 'utf8'), 'old content');
    assert.deepEqual(readdirSync(dir), ['model.safetensors']);

    // Same when there was no file before: nothing at all is left.
    const fresh = join(dir, 'fresh.bin');
    assert.throws(() => writeFileAtomic(fresh, failing()), /disk exploded/);
    assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unwritable target is an InputError naming the path, and nothing is left behind', () => {
  const dir = scratch();
  try {
    const missing = join(dir, 'no-such-dir', 'out.bin');
    assert.throws(() => writeFileAtomic(missing, 'x'), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /no-such-dir\/out\.bin/);
      assert.match(err.message, /no such directory/);
      return true;
    });
    // A directory in the way of the target: the rename fails, the temporary file goes.
    const blocked = join(dir, 'blocked');
    mkdirSync(blocked);
    writeFileSync(join(blocked, 'keep'), 'k');
    assert.throws(() => writeFileAtomic(blocked, 'x'), InputError);
    assert.deepEqual(readdirSync(dir), ['blocked']);
    assert.deepEqual(readdirSync(blocked), ['keep']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a read-only directory keeps its old file', () => {
  const dir = scratch();
  const path = join(dir, 'out.bin');
  try {
    writeFileSync(path, 'old');
    chmodSync(dir, 0o555);
    if (isRoot) {
      // root ignores permissions: try the write as an unprivileged user
      const child = runUnprivileged(`
        import { writeFileAtomic } from './src/io/atomic.ts';
        try { writeFileAtomic(${JSON.stringify(path)}, 'new'); console.log('written'); }
        catch (err) { console.log(err.name + ': ' + err.message); }`);
      assert.equal(child.status, 0, child.stderr);
      assert.match(child.stdout, /^InputError: .*permission denied/);
    } else {
      assert.throws(() => writeFileAtomic(path, 'new'), (err: unknown) => {
        assert.ok(err instanceof InputError);
        assert.match(err.message, /permission denied/);
        return true;
      });
    }
    assert.equal(readFileSync(path, 'utf8'), 'old');
    assert.deepEqual(readdirSync(dir), ['out.bin']);
  } finally {
    chmodSync(dir, 0o755);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('replacing a file keeps its permission bits', () => {
  const dir = scratch();
  try {
    const path = join(dir, 'script.sh');
    writeFileSync(path, 'old');
    chmodSync(path, 0o750);
    writeFileAtomic(path, 'new');
    assert.equal(statSync(path).mode & 0o777, 0o750);
    assert.equal(readFileSync(path, 'utf8'), 'new');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeDirectoryAtomic creates, replaces, and on failure keeps the old directory', () => {
  const dir = scratch();
  try {
    const ckpt = join(dir, 'ckpt');
    writeDirectoryAtomic(ckpt, { 'config.json': '{"a":1}', 'weights.bin': new Uint8Array([1, 2]) });
    assert.deepEqual(readdirSync(ckpt).sort(), ['config.json', 'weights.bin']);

    writeDirectoryAtomic(ckpt, new Map<string, AtomicData>([['config.json', '{"a":2}'], ['optimizer.bin', new Uint8Array([3])]]));
    assert.deepEqual(readdirSync(ckpt).sort(), ['config.json', 'optimizer.bin']);
    assert.equal(readFileSync(join(ckpt, 'config.json'), 'utf8'), '{"a":2}');

    function* failing(): Generator<Uint8Array> {
      yield new Uint8Array([5]);
      throw new Error('interrupted');
    }
    assert.throws(() => writeDirectoryAtomic(ckpt, { 'config.json': '{"a":3}', 'weights.bin': failing() }), /interrupted/);
    assert.deepEqual(readdirSync(ckpt).sort(), ['config.json', 'optimizer.bin']);
    assert.equal(readFileSync(join(ckpt, 'config.json'), 'utf8'), '{"a":2}');
    assert.deepEqual(readdirSync(dir), ['ckpt']); // no staging or set-aside directory left

    assert.throws(() => writeDirectoryAtomic(ckpt, { '../escape': 'x' }), InputError);
    assert.deepEqual(readdirSync(dir), ['ckpt']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('checkWritableTarget rejects a missing directory or a directory in the way', () => {
  const dir = scratch();
  try {
    checkWritableTarget(join(dir, 'fine.bin'));
    assert.throws(() => checkWritableTarget(join(dir, 'missing', 'x.bin')), /no such directory/);
    mkdirSync(join(dir, 'sub'));
    assert.throws(() => checkWritableTarget(join(dir, 'sub')), /is a directory/);
    writeFileSync(join(dir, 'file'), '');
    assert.throws(() => checkWritableTarget(join(dir, 'file', 'x.bin')), InputError);
    assert.deepEqual(readdirSync(dir).sort(), ['file', 'sub']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
