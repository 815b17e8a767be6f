import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { InputError } from '../src/errors.js';
import {
  fromBigInt64, fromFloat32, fromFloat64, fromInt32, getTensor, parseSafetensors, readSafetensors,
  SAFETENSORS_DTYPES, serializeSafetensors, toFloat32, toFloat64, toInt32, writeSafetensors,
  type SafetensorsDType, type StoredTensor,
} from '../src/io/safetensors.js';
import {
  bf16BitsToNumber, f16BitsToNumber, float32ToBf16Bits, float32ToF16Bits, float64ToBf16Bits, float64ToBf16BitsExact,
  float64ToF16Bits, float64ToF16BitsExact,
} from '../src/io/halfFloat.js';

const SIZE: Record<SafetensorsDType, number> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, U8: 1 };

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

function stored(dtype: SafetensorsDType, shape: number[], seed = 1): StoredTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype, shape, data: randomBytes(n * SIZE[dtype], seed) };
}

function assertSameTensors(a: Map<string, StoredTensor>, b: Map<string, StoredTensor>): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.equal(u.dtype, t.dtype, name);
    assert.deepEqual(u.shape, t.shape, name);
    assert.deepEqual(Buffer.from(u.data), Buffer.from(t.data), name);
  }
}

/** Asserts that `fn` throws an InputError whose message contains every fragment. */
function throwsInput(fn: () => unknown, ...fragments: (string | RegExp)[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    for (const f of fragments) {
      if (typeof f === 'string') assert.ok(err.message.includes(f), `"${err.message}" lacks "${f}"`);
      else assert.match(err.message, f);
    }
    return true;
  });
}

/** A file from a header object (or raw header text) and a data section. */
function handBuilt(header: unknown, data: Uint8Array, pad = true): Uint8Array {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  if (pad) while ((8 + Buffer.byteLength(text)) % 8 !== 0) text += ' ';
  const h = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(8 + h.length + data.length);
  out.writeBigUInt64LE(BigInt(h.length), 0);
  h.copy(out, 8);
  out.set(data, 8 + h.length);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

test('every dtype round-trips through bytes and through a file, with metadata', () => {
  const tensors = new Map<string, StoredTensor>();
  SAFETENSORS_DTYPES.forEach((dtype, i) => tensors.set(`t_${dtype}`, stored(dtype, [3, 5], i + 1)));
  tensors.set('scalar', stored('F32', [], 99));
  tensors.set('empty', stored('F16', [0, 7], 3));
  const metadata = { format: 'pt', note: 'ünïcode ✓' };
  const bytes = serializeSafetensors(tensors, metadata);
  const parsed = parseSafetensors(bytes);
  assertSameTensors(tensors, parsed.tensors);
  assert.deepEqual(parsed.metadata, metadata);

  const dir = mkdtempSync(join(tmpdir(), 'longnet-st-'));
  try {
    const path = join(dir, 'x.safetensors');
    writeSafetensors(path, Object.fromEntries(tensors), metadata);
    const read = readSafetensors(path);
    assertSameTensors(tensors, read.tensors);
    assert.deepEqual(read.metadata, metadata);
    assert.equal(read.source, path);
    const some = readSafetensors(path, ['t_I64']);
    assert.deepEqual([...some.tensors.keys()], ['t_I64']);
    assert.deepEqual(readdirSync(dir), ['x.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('names and metadata keys like "__proto__" are ordinary keys', () => {
  const tensors = new Map([['__proto__', stored('U8', [2])], ['constructor', stored('F32', [1])]]);
  const metadata = JSON.parse('{"__proto__": "p", "toString": "s"}') as Record<string, string>;
  const parsed = parseSafetensors(serializeSafetensors(tensors, metadata));
  assertSameTensors(tensors, parsed.tensors);
  assert.deepEqual(Object.entries(parsed.metadata), [['__proto__', 'p'], ['toString', 's']]);
  assert.equal(Object.getPrototypeOf(parsed.metadata), Object.prototype);
});

test('layout matches a hand-built file byte for byte: padding, order, offsets', () => {
  const a = fromFloat32(new Float32Array([1, -2]), [2]);
  const b: StoredTensor = { dtype: 'U8', shape: [3], data: new Uint8Array([7, 8, 9]) };
  const c = fromFloat64(new Float64Array([0.5]), [1, 1]);
  const bytes = serializeSafetensors({ b, a, c }, { format: 'pt' });

  // Widest dtype first, then by name; offsets relative to the end of the header.
  const json = '{"__metadata__":{"format":"pt"},' +
    '"c":{"dtype":"F64","shape":[1,1],"data_offsets":[0,8]},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
    '"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}';
  const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
  const data = Buffer.alloc(19);
  data.writeDoubleLE(0.5, 0);
  data.writeFloatLE(1, 8);
  data.writeFloatLE(-2, 12);
  data.set([7, 8, 9], 16);
  const expected = Buffer.concat([Buffer.alloc(8), Buffer.from(padded), data]);
  expected.writeBigUInt64LE(BigInt(padded.length), 0);
  assert.deepEqual(Buffer.from(bytes), expected);
  assert.equal((8 + padded.length) % 8, 0);
  assert.equal(Buffer.from(bytes).readBigUInt64LE(0), BigInt(padded.length));
});

test('reads files written by others: unpadded header, unaligned data, any key order', () => {
  const data = Buffer.alloc(1 + 8 + 4);
  data[0] = 200;
  data.writeFloatLE(3.25, 1);
  data.writeFloatLE(-0.125, 5);
  data.writeInt32LE(-7, 9);
  const bytes = handBuilt(
    '{"f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},' +
      '"i":{"dtype":"I32","shape":[1],"data_offsets":[9,13]}}',
    data, false,
  );
  const file = parseSafetensors(bytes, 'other.safetensors');
  assert.deepEqual([...toFloat32(getTensor(file, 'f'))], [3.25, -0.125]);
  assert.deepEqual([...toFloat64(getTensor(file, 'u'))], [200]);
  assert.deepEqual([...toInt32(getTensor(file, 'i'))], [-7]);
  assert.deepEqual(file.metadata, {});
});

test('typed conversions: F32, F64, I32, I64, U8 values and views', () => {
  const f = new Float32Array([1.5, -0, Infinity, -3e38, 1e-45]);
  const t = fromFloat32(f, [5]);
  assert.equal(t.data.buffer, f.buffer); // F32 shares memory: no copy on write
  assert.deepEqual([...toFloat32(t)], [...f]);
  assert.ok(Object.is(toFloat64(t)[1], -0));

  const d = new Float64Array([Math.PI, -1e300, 5e-324]);
  assert.deepEqual([...toFloat64(fromFloat64(d, [3]))], [...d]);
  assert.deepEqual([...toFloat32(fromFloat64(d, [3]))], [...Float32Array.from(d)]);
  assert.deepEqual([...toFloat32(fromFloat64(d, [3], 'F32'))], [...Float32Array.from(d)]);

  const i = new Int32Array([-2147483648, 0, 2147483647]);
  assert.deepEqual([...toInt32(fromInt32(i, [3]))], [...i]);
  assert.deepEqual([...toFloat64(fromInt32(i, [3]))], [...i]);

  const big = new BigInt64Array([-5n, 2n ** 40n, 123n]);
  assert.deepEqual([...toFloat64(fromBigInt64(big, [3]))], [-5, 2 ** 40, 123]);
  throwsInput(() => toInt32(fromBigInt64(big, [3]), 'tokens'), 'tokens', 'does not fit in int32');
  assert.deepEqual([...toInt32(fromBigInt64(new BigInt64Array([1n, -1n]), [2]))], [1, -1]);
  throwsInput(() => toInt32(t, 'ids'), 'ids', 'integer dtype', 'F32');
  throwsInput(() => fromFloat32(f, [2, 2]), 'does not hold 5 elements');
});

test('BF16: exact decoding, round to nearest even, overflow, NaN, signed zero', () => {
  const bits32 = (b: number): number => new Float32Array(new Uint32Array([b]).buffer)[0]!;
  assert.equal(float32ToBf16Bits(1), 0x3f80);
  assert.equal(float32ToBf16Bits(bits32(0x3f808000)), 0x3f80); // tie, even stays
  assert.equal(float32ToBf16Bits(bits32(0x3f818000)), 0x3f82); // tie, odd rounds up
  assert.equal(float32ToBf16Bits(bits32(0x3f808001)), 0x3f81); // above the tie
  assert.equal(float32ToBf16Bits(bits32(0x3f807fff)), 0x3f80);
  assert.equal(float32ToBf16Bits(bits32(0x7f7fffff)), 0x7f80); // largest float32 rounds to infinity
  assert.equal(float32ToBf16Bits(bits32(0x7f7f7fff)), 0x7f7f);
  assert.equal(float32ToBf16Bits(-0), 0x8000);
  assert.equal(float32ToBf16Bits(-Infinity), 0xff80);
  assert.equal(float32ToBf16Bits(bits32(0x00000001)), 0x0000); // tiny subnormal rounds to zero
  assert.equal(float32ToBf16Bits(bits32(0x00018000)), 0x0002); // subnormal tie to even
  assert.ok(Number.isNaN(bf16BitsToNumber(float32ToBf16Bits(NaN))));
  assert.ok(Number.isNaN(bf16BitsToNumber(float32ToBf16Bits(bits32(0x7f800001))))); // NaN must not become inf

  // Every non-NaN pattern decodes exactly and re-encodes to itself, by both paths.
  for (let h = 0; h < 65536; h++) {
    const x = bf16BitsToNumber(h);
    if (Number.isNaN(x)) continue;
    assert.equal(float32ToBf16Bits(x), h);
    assert.equal(float64ToBf16Bits(x), h);
  }
  // Rounding through float32 first would land on the tie and round down; the direct path sees it is above.
  const above = 1 + 2 ** -8 + 2 ** -30;
  assert.equal(float64ToBf16Bits(above), 0x3f81);
  const t = fromFloat64(new Float64Array([above]), [1], 'BF16');
  assert.equal(Buffer.from(t.data).readUInt16LE(0), 0x3f81);
  assert.deepEqual([...toFloat32(t)], [1.0078125]);
});

test('F16: subnormals, ties, overflow, infinities and NaN', () => {
  const cases: [number, number][] = [
    [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519.99, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00],
    [-Infinity, 0xfc00], [-0, 0x8000], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [-(2 ** -25), 0x8000],
    [2 ** -25 * 1.0001, 0x0001], [1.5 * 2 ** -24, 0x0002], [2.5 * 2 ** -24, 0x0002], [1023.5 * 2 ** -24, 0x0400],
    [2 ** -14, 0x0400], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [0.1, 0x2e66],
    // Doubles whose float32 rounding lands on an F16 midpoint: the direct rounding must decide.
    [1 + 2 ** -11 - 2 ** -40, 0x3c00], [1 + 2 ** -11 + 2 ** -40, 0x3c01], [65520 - 2 ** -12, 0x7bff],
    [2 ** -25 + 2 ** -60, 0x0001], [-(1 + 3 * 2 ** -11 - 2 ** -40), 0xbc01],
  ];
  for (const [x, h] of cases) {
    assert.equal(float64ToF16Bits(x), h, `float64 ${x}`);
    if (Math.fround(x) === x) assert.equal(float32ToF16Bits(x), h, `float32 ${x}`);
  }
  assert.equal(f16BitsToNumber(0x0001), 2 ** -24);
  assert.equal(f16BitsToNumber(0x7bff), 65504);
  assert.equal(f16BitsToNumber(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16BitsToNumber(0x7e00)));
  assert.ok(Number.isNaN(f16BitsToNumber(float32ToF16Bits(NaN))));
  assert.ok(Number.isNaN(f16BitsToNumber(float64ToF16Bits(NaN))));
  for (let h = 0; h < 65536; h++) {
    const x = f16BitsToNumber(h);
    if (Number.isNaN(x)) continue;
    assert.equal(float32ToF16Bits(x), h);
    assert.equal(float64ToF16Bits(x), h);
  }
  const t = fromFloat32(new Float32Array([1, 65520, 2 ** -24, NaN]), [2, 2], 'F16');
  const back = toFloat32(t);
  assert.deepEqual([...back.subarray(0, 3)], [1, Infinity, 2 ** -24]);
  assert.ok(Number.isNaN(back[3]!));
});

/** Checks that `h` is the correctly rounded encoding of `x` by looking at its neighbours. */
function isNearestEven(x: number, h: number, decode: (h: number) => number): boolean {
  const v = decode(h);
  if (!Number.isFinite(v)) return true; // overflow handled by the explicit cases
  const mag = h & 0x7fff;
  const down = mag === 0 ? -decode(1) * Math.sign(v || 1) : decode((h & 0x8000) | (mag - 1));
  const up = decode((h & 0x8000) | (mag + 1));
  const err = Math.abs(x - v);
  for (const n of [down, up]) {
    if (!Number.isFinite(n)) continue;
    const e = Math.abs(x - n);
    if (e < err) return false;
    if (e === err && (h & 1) === 1) return false; // a tie must land on the even pattern
  }
  return true;
}

test('property: float64 encoding is correctly rounded and agrees with the float32 path', () => {
  const finite = fc.double({ noNaN: true, noDefaultInfinity: true, min: -60000, max: 60000 });
  fc.assert(fc.property(finite, (x) => {
    const h = float64ToF16Bits(x);
    const b = float64ToBf16Bits(x);
    assert.ok(isNearestEven(x, h, f16BitsToNumber), `f16 ${x} -> ${h.toString(16)}`);
    assert.ok(isNearestEven(x, b, bf16BitsToNumber), `bf16 ${x} -> ${b.toString(16)}`);
    assert.equal(float64ToF16BitsExact(x), h);
    assert.equal(float64ToBf16BitsExact(x), b);
    const f = Math.fround(x);
    assert.equal(float32ToF16Bits(f), float64ToF16BitsExact(f));
    assert.equal(float32ToBf16Bits(f), float64ToBf16BitsExact(f));
  }), { numRuns: 5000 });
  // Doubles next to a midpoint of the narrow format, where rounding through float32 would go wrong.
  const nearMidpoint = (decode: (h: number) => number, maxBits: number) =>
    fc.tuple(fc.integer({ min: 0, max: maxBits - 1 }), fc.integer({ min: -4, max: 4 }), fc.boolean())
      .map(([h, nudge, negative]) => {
        const mid = (decode(h) + decode(h + 1)) / 2;
        return (negative ? -1 : 1) * mid * (1 + nudge * 2 ** -40);
      });
  fc.assert(fc.property(nearMidpoint(f16BitsToNumber, 0x7bff), (x) => {
    assert.equal(float64ToF16Bits(x), float64ToF16BitsExact(x), `f16 ${x}`);
  }), { numRuns: 3000 });
  fc.assert(fc.property(nearMidpoint(bf16BitsToNumber, 0x7f7f), (x) => {
    assert.equal(float64ToBf16Bits(x), float64ToBf16BitsExact(x), `bf16 ${x}`);
  }), { numRuns: 3000 });
});

test('property: random tensor maps round-trip through serialize and parse', () => {
  const dtype = fc.constantFrom(...SAFETENSORS_DTYPES);
  const shape = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });
  const tensor = fc.tuple(dtype, shape, fc.integer({ min: 1, max: 1 << 30 })).map(([d, s, seed]) => stored(d, s, seed));
  const name = fc.string({ minLength: 1, maxLength: 8 }).filter((n) => n !== '__metadata__');
  fc.assert(fc.property(
    fc.dictionary(name, tensor, { maxKeys: 6, noNullPrototype: true }),
    fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 10 }), { maxKeys: 3, noNullPrototype: true }),
    (tensors, metadata) => {
      const bytes = serializeSafetensors(tensors, metadata);
      const headerLength = Number(Buffer.from(bytes).readBigUInt64LE(0));
      assert.equal((8 + headerLength) % 8, 0);
      const parsed = parseSafetensors(bytes);
      assertSameTensors(new Map(Object.entries(tensors)), parsed.tensors);
      assert.deepEqual(parsed.metadata, metadata);
      // Data come out aligned to their element size: views, not copies, on read.
      for (const t of parsed.tensors.values()) assert.equal(t.data.byteOffset % SIZE[t.dtype], 0);
    },
  ), { numRuns: 300 });
});

test('property: float32 values round-trip exactly through F32, and through F16/BF16 once rounded', () => {
  fc.assert(fc.property(fc.float32Array({ maxLength: 40 }), (arr) => {
    const t = fromFloat32(arr, [arr.length]);
    const parsed = parseSafetensors(serializeSafetensors({ x: t }));
    assert.deepEqual(Buffer.from(toFloat32(getTensor(parsed, 'x')).buffer), Buffer.from(arr.slice().buffer));
    for (const dt of ['F16', 'BF16'] as const) {
      const once = toFloat32(fromFloat32(arr, [arr.length], dt));
      const twice = toFloat32(fromFloat32(once, [arr.length], dt));
      assert.deepEqual(Buffer.from(twice.buffer), Buffer.from(once.buffer)); // rounding is idempotent
    }
  }), { numRuns: 200 });
});

test('corrupt files: each problem is an InputError naming the file and the problem', () => {
  const src = 'bad.safetensors';
  const parse = (bytes: Uint8Array) => () => parseSafetensors(bytes, src);
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const eight = new Uint8Array(8);

  throwsInput(parse(new Uint8Array(5)), src, '5 bytes', 'shorter than the 8-byte header length');
  const long = Buffer.alloc(16);
  long.writeBigUInt64LE(1000n, 0);
  throwsInput(parse(long), src, 'header length 1000 runs past the end of the file (16 bytes)');
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64LE(2n ** 63n, 0);
  throwsInput(parse(huge), src, 'runs past the end');
  throwsInput(parse(handBuilt('{"x": [', eight)), src, 'not valid JSON');
  throwsInput(parse(handBuilt(Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1'), eight)), src);
  const badUtf8 = handBuilt('{} ', eight);
  badUtf8[9] = 0xff;
  throwsInput(parse(badUtf8), src, 'not valid UTF-8');
  throwsInput(parse(handBuilt('[1,2]', eight)), src, 'not a JSON object');
  throwsInput(parse(handBuilt({ x: { ...ok, dtype: 'F8_E4M3' } }, eight)), src, 'tensor "x"', 'unsupported dtype "F8_E4M3"');
  throwsInput(parse(handBuilt({ x: { ...ok, dtype: undefined } }, eight)), src, 'tensor "x"', 'unsupported dtype');
  throwsInput(parse(handBuilt({ x: { ...ok, shape: [-2] } }, eight)), src, 'tensor "x"', 'shape [-2]');
  throwsInput(parse(handBuilt({ x: { ...ok, shape: [2.5] } }, eight)), src, 'not a list of non-negative integers');
  throwsInput(parse(handBuilt({ x: { ...ok, shape: [3] } }, eight)), src, 'tensor "x"', 'needs 12 bytes', 'span 8');
  throwsInput(parse(handBuilt({ x: { ...ok, dtype: 'F64' } }, eight)), src, 'F64 shape [2] needs 16 bytes');
  throwsInput(parse(handBuilt({ x: { ...ok, data_offsets: [0, 16] } }, eight)), src, 'run past the end of the data (8 bytes)');
  throwsInput(parse(handBuilt({ x: { ...ok, data_offsets: [8, 0] } }, eight)), src, 'end before they begin');
  throwsInput(parse(handBuilt({ x: { ...ok, data_offsets: [0] } }, eight)), src, 'not a pair');
  throwsInput(parse(handBuilt({ x: 3 } as unknown, eight)), src, 'tensor "x": entry is not an object');
  throwsInput(parse(handBuilt({
    x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, new Uint8Array(12))), src, '"x"', '"y"', 'overlap');
  throwsInput(parse(handBuilt({ __metadata__: { a: 1 } }, eight)), src, 'metadata "a" is not a string');
  throwsInput(parse(handBuilt({ __metadata__: [] }, eight)), src, '"__metadata__" is not an object');

  // An empty tensor may sit anywhere, even inside another one's bytes.
  const file = parseSafetensors(handBuilt({ x: ok, e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] } }, eight), src);
  assert.equal(file.tensors.get('e')!.data.length, 0);

  throwsInput(() => getTensor(file, 'do'), src, 'no tensor named "do"', '"x", "e"');
  throwsInput(() => getTensor(parseSafetensors(handBuilt({}, new Uint8Array(0)), src), 'q'), 'it holds no tensors');
});

test('reading: missing file, directory, truncated file are InputErrors naming the path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'longnet-st-'));
  try {
    throwsInput(() => readSafetensors(join(dir, 'nope.safetensors')), 'nope.safetensors', 'no such file');
    mkdirSync(join(dir, 'sub'));
    throwsInput(() => readSafetensors(join(dir, 'sub')), 'sub', 'is a directory');
    const path = join(dir, 'cut.safetensors');
    const whole = serializeSafetensors({ x: fromFloat32(new Float32Array(16), [16]) });
    writeFileSync(path, whole.subarray(0, whole.length - 10));
    throwsInput(() => readSafetensors(path), path, 'tensor "x"', 'run past the end of the data');
    writeFileSync(path, whole.subarray(0, 3));
    throwsInput(() => readSafetensors(path), path, 'shorter than the 8-byte');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writing rejects inconsistent tensors and reserved names', () => {
  throwsInput(() => serializeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Uint8Array(8) } }), '"x"', 'needs 12 bytes');
  throwsInput(() => serializeSafetensors({ __metadata__: stored('U8', [1]) }), 'reserved');
  throwsInput(() => serializeSafetensors({ x: { dtype: 'Q4' as SafetensorsDType, shape: [1], data: new Uint8Array(1) } }), 'unsupported dtype');
  throwsInput(() => serializeSafetensors({}, { a: 1 as unknown as string }), 'metadata "a"');
});
