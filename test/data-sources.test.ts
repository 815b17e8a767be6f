import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { formatOf, listSourceFiles, openDocuments, type SourceOptions } from '../src/data/index.js';
import { fsInputError } from '../src/data/fs-errors.js';
import { InputError } from '../src/errors.js';
import { isRoot, runUnprivileged } from './support/unprivileged.js';

const root = mkdtempSync(join(tmpdir(), 'longnet-sources-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function fresh(): string {
  const d = join(root, `case${counter++}`);
  mkdirSync(d);
  return d;
}
function write(path: string, data: string | Uint8Array): string {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, data);
  return path;
}
async function collect(path: string, options?: SourceOptions): Promise<string[]> {
  const out: string[] = [];
  for await (const d of openDocuments(path, options)) out.push(d);
  return out;
}
/** Asserts that reading `path` fails with an InputError whose message matches `pattern`. */
async function rejectsInput(path: string, pattern: RegExp, options?: SourceOptions): Promise<void> {
  await assert.rejects(collect(path, options), (err: unknown) => {
    assert.ok(err instanceof InputError, `expected an InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('text files', () => {
  it('read as one document, UTF-8, byte-order mark dropped', async () => {
    const d = fresh();
    const text = 'line one\nline two 🌍\r\nthree';
    assert.deepEqual(await collect(write(join(d, 'a.txt'), text)), [text]);
    assert.deepEqual(await collect(write(join(d, 'bom.txt'), '\uFEFFhello')), ['hello']);
    assert.deepEqual(await collect(write(join(d, 'empty.txt'), '')), []);
  });

  it('invalid UTF-8 becomes U+FFFD, without throwing', async () => {
    const d = fresh();
    const f = write(join(d, 'bad.txt'), new Uint8Array([0x61, 0xff, 0x62, 0xc3]));
    assert.deepEqual(await collect(f), ['a\uFFFDb\uFFFD']);
  });

  it('a file over maxDocumentBytes is cut after newlines, losing and breaking nothing', async () => {
    const d = fresh();
    const lines = Array.from({ length: 200 }, (_, i) => `${i} ${'é🌍'.repeat(i % 7)} ${'x'.repeat(i % 13)}`);
    const text = lines.join('\n') + '\nno newline at the end ' + 'y'.repeat(100);
    const f = write(join(d, 'big.txt'), text);
    for (const max of [1, 7, 64, 1000, 1 << 20]) {
      const docs = await collect(f, { maxDocumentBytes: max });
      assert.equal(docs.join(''), text, `max ${max}`);
      assert.ok(docs.every((doc) => !doc.includes('\uFFFD')), 'no character is split');
      if (max >= 64) {
        for (const doc of docs.slice(0, -2)) {
          assert.ok(Buffer.byteLength(doc) <= max && doc.endsWith('\n'), `piece ${JSON.stringify(doc)} at max ${max}`);
        }
      }
    }
    assert.equal((await collect(f)).length, 1);
  });

  it('a text file named directly that looks binary is an error', async () => {
    const d = fresh();
    const f = write(join(d, 'blob.txt'), new Uint8Array([1, 2, 0, 4]));
    await rejectsInput(f, /blob\.txt looks binary \(NUL byte at offset 2\)/);
  });
});

describe('JSON lines', () => {
  it('reads the "text" field line by line, skipping blank lines and nulls', async () => {
    const d = fresh();
    const f = write(
      join(d, 'c.jsonl'),
      '{"text":"first","id":1}\n\n{"text":"second\\nline 🌍"}\r\n{"text":null}\n{"text":""}\n  \n{"text":"third"}',
    );
    assert.deepEqual(await collect(f), ['first', 'second\nline 🌍', 'third']);
  });

  it('uses a named field, or "content" when the first record has no "text"', async () => {
    const d = fresh();
    const f = write(join(d, 'c.jsonl'), '{"body":"a","content":"x"}\n{"body":"b","content":"y"}\n');
    assert.deepEqual(await collect(f, { field: 'body' }), ['a', 'b']);
    assert.deepEqual(await collect(f), ['x', 'y']);
  });

  it('reads .json, .ndjson and gzipped JSON lines', async () => {
    const d = fresh();
    const body = '{"text":"a"}\n{"text":"b"}\n';
    assert.deepEqual(await collect(write(join(d, 'x.json'), body)), ['a', 'b']);
    assert.deepEqual(await collect(write(join(d, 'x.ndjson'), body)), ['a', 'b']);
    assert.deepEqual(await collect(write(join(d, 'x.jsonl.gz'), gzipSync(body))), ['a', 'b']);
  });

  it('inside a directory, a .json file is a text document (package.json), .jsonl still JSON lines', async () => {
    const d = fresh();
    write(join(d, 'package.json'), '{ "name": "x" }\n');
    write(join(d, 'rows.jsonl'), '{"text":"a"}\n');
    assert.deepEqual(await collect(d), ['{ "name": "x" }\n', 'a']);
  });

  it('names the line that is not JSON, not an object, or lacks the field', async () => {
    const d = fresh();
    await rejectsInput(write(join(d, 'a.jsonl'), '{"text":"ok"}\n{"text": oops}\n'), /a\.jsonl:2: not valid JSON/);
    await rejectsInput(write(join(d, 'b.jsonl'), '{"text":"ok"}\n\n[1,2]\n'), /b\.jsonl:3: expected a JSON object, got an array/);
    const c = write(join(d, 'c.jsonl'), '{"text":"ok"}\n{"body":"x","id":2}\n');
    await rejectsInput(c, /c\.jsonl:2: no field "text" \(fields: body, id\)/);
    await rejectsInput(write(join(d, 'd.jsonl'), '{"text":5}\n'), /d\.jsonl:1: field "text" is a number, not a string/);
    await rejectsInput(write(join(d, 'e.json'), '[{"text":"a"},\n{"text":"b"}]\n'), /e\.json:1: a JSON array, not JSON lines/);
    const f = write(join(d, 'f.jsonl'), '{"text":"a"}\n');
    await rejectsInput(f, /f\.jsonl:1: no field "body" \(fields: text\)/, { field: 'body' });
    await rejectsInput(write(join(d, 'g.jsonl.gz'), gzipSync('{"text":"a"}\n').subarray(0, 12)), /g\.jsonl\.gz/);
  });
});

describe('directories', () => {
  it('walk recursively in sorted order, skipping binary and hidden files', async () => {
    const d = fresh();
    write(join(d, 'b.txt'), 'B');
    write(join(d, 'a', 'z.txt'), 'AZ');
    write(join(d, 'a', 'b', 'c.js'), 'ABC');
    write(join(d, 'A.md'), 'upper A'); // code-unit order: uppercase first
    write(join(d, 'image.png'), new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]));
    write(join(d, 'late-nul.txt'), 'x'.repeat(9000) + '\u0000'); // NUL past the first 8 KB: text
    write(join(d, '.git', 'HEAD'), 'ref: refs/heads/main');
    write(join(d, '.hidden.txt'), 'hidden');
    write(join(d, 'data.jsonl'), '{"text":"from jsonl 1"}\n{"text":"from jsonl 2"}\n');
    const files = await listSourceFiles(d);
    assert.deepEqual(
      files.map((f) => relative(d, f.path)),
      ['A.md', 'a/b/c.js', 'a/z.txt', 'b.txt', 'data.jsonl', 'late-nul.txt'],
    );
    assert.deepEqual(files.map((f) => f.format), ['text', 'text', 'text', 'text', 'jsonl', 'text']);
    const docs = await collect(d);
    assert.deepEqual(docs.slice(0, 6), ['upper A', 'ABC', 'AZ', 'B', 'from jsonl 1', 'from jsonl 2']);
    assert.equal(docs.length, 7);
    assert.deepEqual(
      (await listSourceFiles(d, { includeHidden: true })).map((f) => relative(d, f.path)).slice(0, 3),
      ['.git/HEAD', '.hidden.txt', 'A.md'],
    );
  });

  it('filter by extension, with or without the dot, case-insensitively', async () => {
    const d = fresh();
    write(join(d, 'x.js'), 'js');
    write(join(d, 'y.TS'), 'ts');
    write(join(d, 'sub', 'z.py'), 'py');
    write(join(d, 'README'), 'readme');
    assert.deepEqual(await collect(d, { extensions: ['.js', 'ts'] }), ['js', 'ts']);
    assert.deepEqual(await collect(d, { extensions: ['py'] }), ['py']);
    // A file named directly is read whatever its extension.
    assert.deepEqual(await collect(join(d, 'README'), { extensions: ['.js'] }), ['readme']);
  });

  it('follow symbolic links without looping', async () => {
    const d = fresh();
    write(join(d, 'real', 'f.txt'), 'F');
    symlinkSync(join(d, 'real'), join(d, 'link'));
    symlinkSync(d, join(d, 'real', 'loop'));
    symlinkSync(join(d, 'missing'), join(d, 'dangling'));
    // Each real directory is walked once, however many links reach it.
    assert.deepEqual(await collect(d), ['F']);
  });

  it('a directory with no usable files is an error that says why', async () => {
    const empty = fresh();
    await rejectsInput(empty, /no usable files in directory .*case\d+ \(it is empty\)/);
    const binaries = fresh();
    write(join(binaries, 'a.bin'), new Uint8Array([0, 1, 2]));
    write(join(binaries, 'sub', 'b.dat'), new Uint8Array([7, 0]));
    write(join(binaries, '.env'), 'SECRET=1');
    await rejectsInput(binaries, /no usable files in directory .* \(skipped: 2 binary, 1 hidden\)/);
    write(join(binaries, 'c.txt'), 'text');
    await rejectsInput(binaries, /\(skipped: 3 not matching \.rs, 1 hidden\)/, { extensions: ['rs'] });
  });
});

describe('bad paths and options', () => {
  it('a missing path names it', async () => {
    await rejectsInput(join(root, 'nope', 'corpus.txt'), /cannot read .*nope\/corpus\.txt: no such file or directory/);
  });

  it('a path through a file is an error', async () => {
    const f = write(join(fresh(), 'file.txt'), 'x');
    await rejectsInput(join(f, 'inside.txt'), /cannot read .*file\.txt\/inside\.txt: not a directory/);
  });

  it('an unreadable file names it', async () => {
    const f = write(join(fresh(), 'secret.txt'), 'x');
    chmodSync(f, 0o000);
    try {
      if (isRoot) {
        // root ignores permissions: read as an unprivileged user (the mkdtemp root is private to root)
        chmodSync(root, 0o755);
        const child = runUnprivileged(`
          import { openDocuments } from './src/data/index.ts';
          try { for await (const d of openDocuments(${JSON.stringify(f)})) console.log('read', d); }
          catch (err) { console.log(err.name + ': ' + err.message); }`);
        assert.equal(child.status, 0, child.stderr);
        assert.match(child.stdout, /^InputError: cannot read .*secret\.txt: permission denied/);
      } else {
        await rejectsInput(f, /cannot read .*secret\.txt: permission denied/);
      }
    } finally {
      chmodSync(f, 0o644);
    }
  });


  it('maps file-system failures to one line naming the path', () => {
    const err = (code: string) => Object.assign(new Error(`${code}: raw message`), { code });
    assert.equal(fsInputError(err('EACCES'), '/data/x.txt').message, 'cannot read /data/x.txt: permission denied');
    assert.equal(fsInputError(err('ENOENT'), 'y').message, 'cannot read y: no such file or directory');
    assert.equal(fsInputError(err('EIO'), 'z').message, 'cannot read z: EIO: raw message');
    assert.ok(fsInputError(err('EISDIR'), 'd') instanceof InputError);
  });

  it('rejects bad options', async () => {
    const f = write(join(fresh(), 'a.txt'), 'x');
    await rejectsInput(f, /maxDocumentBytes must be a positive integer/, { maxDocumentBytes: 0 });
    await rejectsInput(f, /field must not be empty/, { field: '' });
  });

  it('chooses formats by extension', () => {
    assert.equal(formatOf('a/b.JSONL'), 'jsonl');
    assert.equal(formatOf('x.jsonl.gz'), 'jsonl');
    assert.equal(formatOf('x.parquet'), 'parquet');
    assert.equal(formatOf('x.js'), 'text');
    assert.equal(formatOf('x.gz'), 'text');
  });
});
