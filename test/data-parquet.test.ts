import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { parquetMetadata } from 'hyparquet';
import { openDocuments, parquetColumns } from '../src/data/index.js';
import { InputError } from '../src/errors.js';

// A minimal Parquet writer, enough to make test files here instead of shipping binary fixtures: flat
// schema of string (BYTE_ARRAY/UTF8) and int32 columns, one PLAIN data page (v1) per column chunk,
// optional columns with RLE definition levels, pages uncompressed or gzipped. Metadata is Thrift's
// compact protocol.

class Thrift {
  private bytes: number[] = [];
  private last: number[] = [0];

  private varint(n: bigint): void {
    while (n >= 0x80n) {
      this.bytes.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.bytes.push(Number(n));
  }
  private zigzag(n: number | bigint): void {
    const b = BigInt(n);
    this.varint(b >= 0n ? b << 1n : (-b << 1n) - 1n);
  }
  private header(id: number, type: number): void {
    const delta = id - this.last[this.last.length - 1];
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.last[this.last.length - 1] = id;
  }
  i32(id: number, v: number): this {
    this.header(id, 5);
    this.zigzag(v);
    return this;
  }
  i64(id: number, v: number): this {
    this.header(id, 6);
    this.zigzag(v);
    return this;
  }
  string(id: number, s: string): this {
    this.header(id, 8);
    const b = Buffer.from(s, 'utf8');
    this.varint(BigInt(b.length));
    this.bytes.push(...b);
    return this;
  }
  private listHeader(id: number, size: number, type: number): void {
    this.header(id, 9);
    if (size < 15) this.bytes.push((size << 4) | type);
    else {
      this.bytes.push(0xf0 | type);
      this.varint(BigInt(size));
    }
  }
  i32List(id: number, vs: number[]): this {
    this.listHeader(id, vs.length, 5);
    for (const v of vs) this.zigzag(v);
    return this;
  }
  stringList(id: number, vs: string[]): this {
    this.listHeader(id, vs.length, 8);
    for (const v of vs) {
      const b = Buffer.from(v, 'utf8');
      this.varint(BigInt(b.length));
      this.bytes.push(...b);
    }
    return this;
  }
  structList<T>(id: number, items: T[], write: (t: Thrift, item: T) => void): this {
    this.listHeader(id, items.length, 12);
    for (const item of items) this.nested(write, item);
    return this;
  }
  struct<T>(id: number, item: T, write: (t: Thrift, item: T) => void): this {
    this.header(id, 12);
    this.nested(write, item);
    return this;
  }
  private nested<T>(write: (t: Thrift, item: T) => void, item: T): void {
    this.last.push(0);
    write(this, item);
    this.bytes.push(0);
    this.last.pop();
  }
  /** A top-level struct. */
  static write(write: (t: Thrift) => void): Buffer {
    const t = new Thrift();
    write(t);
    t.bytes.push(0);
    return Buffer.from(t.bytes);
  }
}

type Value = string | number | null;
interface Column {
  name: string;
  type: 'string' | 'int32';
  optional?: boolean;
}

function plainValues(col: Column, values: Value[]): Buffer {
  const parts: Buffer[] = [];
  for (const v of values) {
    if (v === null) continue;
    if (col.type === 'int32') {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v as number);
      parts.push(b);
    } else {
      const s = Buffer.from(v as string, 'utf8');
      const len = Buffer.alloc(4);
      len.writeUInt32LE(s.length);
      parts.push(len, s);
    }
  }
  return Buffer.concat(parts);
}

/** Definition levels (bit width 1), one RLE run per value, with the v1 page's 4-byte length prefix. */
function definitionLevels(values: Value[]): Buffer {
  const runs: number[] = [];
  for (const v of values) runs.push(1 << 1, v === null ? 0 : 1); // header: run length 1, RLE flag 0
  const body = Buffer.from(runs);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

/** Writes a Parquet file: `rowGroups[g][c]` is the values of column c in row group g. */
function writeParquet(path: string, columns: Column[], rowGroups: Value[][][], codec: 'none' | 'gzip' = 'none'): void {
  const chunks: Buffer[] = [Buffer.from('PAR1')];
  let offset = 4;
  const groupsMeta: { numRows: number; cols: { offset: number; size: number; usize: number; n: number }[] }[] = [];
  for (const group of rowGroups) {
    const cols = [];
    for (let c = 0; c < columns.length; c++) {
      const values = group[c];
      const raw = Buffer.concat([
        ...(columns[c].optional ? [definitionLevels(values)] : []),
        plainValues(columns[c], values),
      ]);
      const body = codec === 'gzip' ? gzipSync(raw) : raw;
      const header = Thrift.write((t) =>
        t
          .i32(1, 0) // DATA_PAGE
          .i32(2, raw.length)
          .i32(3, body.length)
          .struct(5, values.length, (d, n) => d.i32(1, n).i32(2, 0).i32(3, 3).i32(4, 3)),
      );
      chunks.push(header, body);
      cols.push({ offset, size: header.length + body.length, usize: header.length + raw.length, n: values.length });
      offset += header.length + body.length;
    }
    groupsMeta.push({ numRows: group[0].length, cols });
  }
  const footer = Thrift.write((t) =>
    t
      .i32(1, 1)
      .structList(2, [null, ...columns], (s, col) => {
        if (col === null) s.string(4, 'schema').i32(5, columns.length);
        else {
          s.i32(1, col.type === 'int32' ? 1 : 6).i32(3, col.optional ? 1 : 0).string(4, col.name);
          if (col.type === 'string') s.i32(6, 0); // UTF8
        }
      })
      .i64(3, groupsMeta.reduce((a, g) => a + g.numRows, 0))
      .structList(4, groupsMeta, (rg, g) =>
        rg
          .structList(1, g.cols, (cc, col) => {
            const i = g.cols.indexOf(col);
            cc.i64(2, col.offset).struct(3, col, (m, cm) =>
              m
                .i32(1, columns[i].type === 'int32' ? 1 : 6)
                .i32List(2, [0, 3])
                .stringList(3, [columns[i].name])
                .i32(4, codec === 'gzip' ? 2 : 0)
                .i64(5, cm.n)
                .i64(6, cm.usize)
                .i64(7, cm.size)
                .i64(9, cm.offset),
            );
          })
          .i64(2, g.cols.reduce((a, c) => a + c.usize, 0))
          .i64(3, g.numRows),
      )
      .string(6, 'longnet test writer'),
  );
  const len = Buffer.alloc(4);
  len.writeUInt32LE(footer.length);
  chunks.push(footer, len, Buffer.from('PAR1'));
  writeFileSync(path, Buffer.concat(chunks));
}

async function collect(docs: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const d of docs) out.push(d);
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'longnet-parquet-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('Parquet source', () => {
  const stack = join(dir, 'stack.parquet');
  const contents = ['function f() {\n  return 1;\n}\n', 'x = "héllo 🌍"', '', 'print(42)'];
  writeParquet(
    stack,
    [
      { name: 'id', type: 'int32' },
      { name: 'content', type: 'string', optional: true },
      { name: 'lang', type: 'string' },
    ],
    [
      [[1, 2], [contents[0], null], ['js', 'py']],
      [[3, 4, 5], [contents[1], contents[2], contents[3]], ['py', 'c', 'py']],
    ],
  );

  it('writes files hyparquet reads back (the test writer is sound)', async () => {
    const { readFileSync } = await import('node:fs');
    const buf = readFileSync(stack);
    const meta = parquetMetadata(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    assert.equal(meta.row_groups.length, 2);
    assert.equal(Number(meta.num_rows), 5);
    assert.deepEqual(await parquetColumns(stack), ['id', 'content', 'lang']);
  });

  it('reads the "content" column by default, row group by row group, skipping nulls and empty strings', async () => {
    assert.deepEqual(await collect(openDocuments(stack)), [contents[0], contents[1], contents[3]]);
  });

  it('reads a named column', async () => {
    assert.deepEqual(await collect(openDocuments(stack, { field: 'lang' })), ['js', 'py', 'py', 'c', 'py']);
  });

  it('falls back to "text" when there is no "content"', async () => {
    const path = join(dir, 'text.parquet');
    writeParquet(path, [{ name: 'text', type: 'string' }], [[['one', 'two']]]);
    assert.deepEqual(await collect(openDocuments(path)), ['one', 'two']);
  });

  it('decompresses gzip pages (through hyparquet-compressors)', async () => {
    const path = join(dir, 'gzip.parquet');
    const many = Array.from({ length: 50 }, (_, i) => `doc ${i} `.repeat(i + 1));
    writeParquet(path, [{ name: 'content', type: 'string' }], [[many.slice(0, 20)], [many.slice(20)]], 'gzip');
    assert.deepEqual(await collect(openDocuments(path)), many);
  });

  it('rejects a missing column, listing the columns there', async () => {
    await assert.rejects(collect(openDocuments(stack, { field: 'body' })), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /stack\.parquet: no column "body" \(columns: id, content, lang\)/);
      return true;
    });
    const path = join(dir, 'nocontent.parquet');
    writeParquet(path, [{ name: 'code', type: 'string' }], [[['a']]]);
    await assert.rejects(collect(openDocuments(path)), /no column "content" or "text" \(columns: code\)/);
  });

  it('rejects a column that is not text, and a file that is not Parquet', async () => {
    await assert.rejects(collect(openDocuments(stack, { field: 'id' })), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /column "id" holds number values/);
      return true;
    });
    const bogus = join(dir, 'bogus.parquet');
    writeFileSync(bogus, 'this is not parquet at all');
    await assert.rejects(collect(openDocuments(bogus)), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /bogus\.parquet: not a readable Parquet file/);
      return true;
    });
  });
});
