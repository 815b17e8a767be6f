/**
 * The safetensors format: an 8-byte little-endian header length n, n bytes of UTF-8 JSON describing each
 * tensor (dtype, shape, [begin, end) byte offsets into the data that follows) plus optional string
 * metadata, then the raw little-endian row-major tensor data.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { InputError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from './halfFloat.js';

export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'U8';

/** One tensor as stored: `data` holds its raw little-endian bytes (often a view into a larger buffer). */
export interface StoredTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: Uint8Array;
}

/** A parsed file; `source` (a path, or a label for in-memory bytes) prefixes every error about it. */
export interface SafetensorsFile {
  source: string;
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

export type TensorMap = Map<string, StoredTensor> | Record<string, StoredTensor>;

const DTYPE_SIZE: Record<SafetensorsDType, number> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, U8: 1 };
export const SAFETENSORS_DTYPES = Object.keys(DTYPE_SIZE) as SafetensorsDType[];
const METADATA_KEY = '__metadata__';

export function dtypeSize(dtype: SafetensorsDType): number {
  return DTYPE_SIZE[dtype];
}

function isDType(x: unknown): x is SafetensorsDType {
  return typeof x === 'string' && Object.hasOwn(DTYPE_SIZE, x);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Reading

interface HeaderEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

function isIndex(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Validates the JSON header against the size of the data section and returns its entries in header
 * order. Every problem is an InputError that names `source` and the tensor at fault.
 */
function parseHeader(
  headerBytes: Uint8Array, dataLength: number, source: string,
): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  const fail = (problem: string): never => {
    throw new InputError(`${source}: ${problem}`);
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return fail('not a safetensors file: the header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail(`not a safetensors file: the header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return fail('not a safetensors file: the header is not a JSON object');
  }
  const metaPairs: [string, string][] = [];
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        fail('"__metadata__" is not an object of strings');
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`metadata "${k}" is not a string`);
        metaPairs.push([k, v as string]);
      }
      continue;
    }
    const t = `tensor "${name}"`;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${t}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (!isDType(dtype)) {
      fail(`${t}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${SAFETENSORS_DTYPES.join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      fail(`${t}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      fail(`${t}: data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const dt = dtype as SafetensorsDType;
    const dims = shape as number[];
    if (begin > end) fail(`${t}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) {
      fail(`${t}: data_offsets [${begin}, ${end}] run past the end of the data (${dataLength} bytes)`);
    }
    const expected = elementCount(dims) * DTYPE_SIZE[dt];
    if (end - begin !== expected) {
      fail(`${t}: ${dt} shape [${dims.join(', ')}] needs ${expected} bytes but data_offsets [${begin}, ${end}] ` +
        `span ${end - begin}`);
    }
    entries.push({ name, dtype: dt, shape: dims, begin, end });
  }
  // Tensors must not share bytes (empty tensors occupy none).
  const spans = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    const prev = spans[i - 1]!;
    const cur = spans[i]!;
    if (cur.begin < prev.end) {
      fail(`tensors "${prev.name}" [${prev.begin}, ${prev.end}] and "${cur.name}" [${cur.begin}, ${cur.end}] overlap`);
    }
  }
  // fromEntries defines own properties, so a key like "__proto__" stays data, not a prototype.
  return { entries, metadata: Object.fromEntries(metaPairs) };
}

/** Reads the 8-byte header length and checks it against the file size. */
function headerLength(prefix: Uint8Array, fileLength: number, source: string): number {
  if (fileLength < 8) {
    throw new InputError(`${source}: not a safetensors file: ${fileLength} bytes, shorter than the 8-byte header length`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileLength - 8)) {
    throw new InputError(`${source}: not a safetensors file: header length ${n} runs past the end of the file ` +
      `(${fileLength} bytes)`);
  }
  return Number(n);
}

/** Parses a whole file held in memory. Tensor data are views into `bytes`, not copies. */
export function parseSafetensors(bytes: Uint8Array, source = '<bytes>'): SafetensorsFile {
  const n = headerLength(bytes, bytes.byteLength, source);
  const { entries, metadata } = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, source);
  const data = bytes.subarray(8 + n);
  const tensors = new Map<string, StoredTensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: data.subarray(e.begin, e.end) });
  }
  return { source, tensors, metadata };
}

function describeReadError(err: unknown, path: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const reasons: Record<string, string> = {
    ENOENT: 'no such file', EISDIR: 'is a directory', EACCES: 'permission denied', EPERM: 'permission denied',
    ENOTDIR: 'a path component is not a directory', ELOOP: 'too many symbolic links',
  };
  if (code !== undefined && code in reasons) return new InputError(`cannot read ${path}: ${reasons[code]}`);
  return err;
}

function readExactly(fd: number, into: Uint8Array, position: number, path: string): void {
  let done = 0;
  // Node caps one read at 2 GiB; large tensors take several.
  while (done < into.byteLength) {
    const len = Math.min(into.byteLength - done, 1 << 30);
    const got = readSync(fd, into, done, len, position + done);
    if (got === 0) throw new InputError(`${path}: file shrank while being read`);
    done += got;
  }
}

/**
 * Reads a safetensors file. Each tensor is read into its own buffer, so tensors are aligned for typed
 * array views and files larger than one Node buffer can hold are fine. `names`, if given, limits the
 * tensors read (the header is still validated in full).
 */
export function readSafetensors(path: string, names?: readonly string[]): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw describeReadError(err, path);
  }
  try {
    let size: number;
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw new InputError(`cannot read ${path}: is a directory`);
      size = st.size;
    } catch (err) {
      throw describeReadError(err, path);
    }
    const prefix = new Uint8Array(8);
    if (size >= 8) readExactly(fd, prefix, 0, path);
    const n = headerLength(prefix, size, path);
    const header = new Uint8Array(n);
    readExactly(fd, header, 8, path);
    const { entries, metadata } = parseHeader(header, size - 8 - n, path);
    const wanted = names === undefined ? null : new Set(names);
    const tensors = new Map<string, StoredTensor>();
    for (const e of entries) {
      if (wanted !== null && !wanted.has(e.name)) continue;
      const data = new Uint8Array(e.end - e.begin);
      readExactly(fd, data, 8 + n + e.begin, path);
      tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
    }
    return { source: path, tensors, metadata };
  } catch (err) {
    throw describeReadError(err, path);
  } finally {
    closeSync(fd);
  }
}

/** The tensor `name` of `file`, or an InputError naming what is missing and what the file holds. */
export function getTensor(file: SafetensorsFile, name: string): StoredTensor {
  const t = file.tensors.get(name);
  if (t !== undefined) return t;
  const held = [...file.tensors.keys()];
  const list = held.length === 0 ? 'it holds no tensors' : `it holds ${held.map((h) => `"${h}"`).join(', ')}`;
  throw new InputError(`${file.source}: no tensor named "${name}"; ${list}`);
}

// ---------------------------------------------------------------------------------------------------
// Writing

function validateForWrite(name: string, t: StoredTensor): void {
  const what = `safetensors: tensor "${name}"`;
  if (name === METADATA_KEY) throw new InputError(`${what}: the name is reserved for metadata`);
  if (!isDType(t.dtype)) throw new InputError(`${what}: unsupported dtype ${JSON.stringify(t.dtype)}`);
  if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
    throw new InputError(`${what}: shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
  }
  const expected = elementCount(t.shape) * DTYPE_SIZE[t.dtype];
  if (t.data.byteLength !== expected) {
    throw new InputError(`${what}: ${t.dtype} shape [${t.shape.join(', ')}] needs ${expected} bytes, ` +
      `data has ${t.data.byteLength}`);
  }
}

/**
 * The header (length prefix included, padded with spaces to a multiple of 8 bytes) and the tensors in
 * data order. Tensors are laid out widest dtype first, then by name, so every tensor starts at a
 * multiple of its element size from an 8-aligned data section: readers can view it without copying.
 */
function layout(
  tensors: TensorMap, metadata: Record<string, string>,
): { header: Uint8Array; ordered: StoredTensor[]; total: number } {
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of list) validateForWrite(name, t);
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new InputError(`safetensors: metadata "${k}" is not a string`);
  }
  list.sort(([an, a], [bn, b]) => DTYPE_SIZE[b.dtype] - DTYPE_SIZE[a.dtype] || (an < bn ? -1 : an > bn ? 1 : 0));
  // Built with fromEntries so that names like "__proto__" become ordinary keys of the header.
  const pairs: [string, unknown][] = [];
  if (Object.keys(metadata).length > 0) pairs.push([METADATA_KEY, Object.fromEntries(Object.entries(metadata))]);
  let offset = 0;
  for (const [name, t] of list) {
    pairs.push([name, { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] }]);
    offset += t.data.byteLength;
  }
  const text = new TextEncoder().encode(JSON.stringify(Object.fromEntries(pairs)));
  const padded = Math.ceil(text.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(text, 8);
  return { header, ordered: list.map(([, t]) => t), total: header.byteLength + offset };
}

/** The bytes of a safetensors file holding `tensors` and `metadata`. */
export function serializeSafetensors(tensors: TensorMap, metadata: Record<string, string> = {}): Uint8Array {
  const { header, ordered, total } = layout(tensors, metadata);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let offset = header.byteLength;
  for (const t of ordered) {
    out.set(t.data, offset);
    offset += t.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically, streaming tensor data rather than assembling one buffer. */
export function writeSafetensors(path: string, tensors: TensorMap, metadata: Record<string, string> = {}): void {
  const { header, ordered } = layout(tensors, metadata);
  writeFileAtomic(path, [header, ...ordered.map((t) => t.data)]);
}

// ---------------------------------------------------------------------------------------------------
// Conversions between stored bytes and typed arrays

function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const x = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = x;
    }
  }
}

type View = Float32Array | Float64Array | Int32Array | Uint16Array | BigInt64Array | Uint8Array;

/**
 * A typed array over the little-endian elements of `data`: a view when alignment and host byte order
 * allow, otherwise a copy.
 */
function elementsOf(t: StoredTensor): View {
  const size = DTYPE_SIZE[t.dtype];
  let bytes = t.data;
  if (size > 1 && (!LITTLE_ENDIAN || bytes.byteOffset % size !== 0)) {
    bytes = bytes.slice();
    if (!LITTLE_ENDIAN) swapBytes(bytes, size);
  }
  const { buffer, byteOffset } = bytes;
  const n = bytes.byteLength / size;
  switch (t.dtype) {
    case 'F32': return new Float32Array(buffer, byteOffset, n);
    case 'F64': return new Float64Array(buffer, byteOffset, n);
    case 'I32': return new Int32Array(buffer, byteOffset, n);
    case 'I64': return new BigInt64Array(buffer, byteOffset, n);
    case 'F16':
    case 'BF16': return new Uint16Array(buffer, byteOffset, n);
    case 'U8': return bytes;
  }
}

function convertInto(t: StoredTensor, out: Float32Array | Float64Array): void {
  const src = elementsOf(t);
  if (t.dtype === 'F16') decodeF16(src as Uint16Array, out);
  else if (t.dtype === 'BF16') decodeBf16(src as Uint16Array, out);
  else if (src instanceof BigInt64Array) for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
  else out.set(src); // typed-array set converts with round-to-nearest-even
}

/** The values of a tensor of any dtype as a new Float32Array (F16 and BF16 decode exactly). */
export function toFloat32(t: StoredTensor): Float32Array {
  const out = new Float32Array(t.data.byteLength / DTYPE_SIZE[t.dtype]);
  convertInto(t, out);
  return out;
}

/** The values of a tensor of any dtype as a new Float64Array. */
export function toFloat64(t: StoredTensor): Float64Array {
  const out = new Float64Array(t.data.byteLength / DTYPE_SIZE[t.dtype]);
  convertInto(t, out);
  return out;
}

/** The values of an integer tensor (I32, I64 in range, U8) as a new Int32Array. */
export function toInt32(t: StoredTensor, what = 'tensor'): Int32Array {
  const src = elementsOf(t);
  const out = new Int32Array(src.length);
  if (src instanceof BigInt64Array) {
    for (let i = 0; i < src.length; i++) {
      const v = src[i]!;
      if (v < -2147483648n || v > 2147483647n) throw new InputError(`${what}: value ${v} at index ${i} does not fit in int32`);
      out[i] = Number(v);
    }
  } else if (src instanceof Int32Array || src instanceof Uint8Array) {
    out.set(src);
  } else {
    throw new InputError(`${what}: expected an integer dtype (I32, I64, U8), got ${t.dtype}`);
  }
  return out;
}

function checkShape(length: number, shape: readonly number[], what: string): void {
  if (!shape.every(isIndex) || elementCount(shape) !== length) {
    throw new InputError(`${what}: shape [${shape.join(', ')}] does not hold ${length} elements`);
  }
}

function bytesOf(a: Exclude<View, Uint8Array>): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE_ENDIAN) return bytes;
  const copy = bytes.slice();
  swapBytes(copy, a.BYTES_PER_ELEMENT);
  return copy;
}

/**
 * A stored tensor from float32 values, kept as F32 (the bytes share `data`'s memory: no copy) or
 * rounded to F16/BF16.
 */
export function fromFloat32(data: Float32Array, shape: readonly number[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): StoredTensor {
  checkShape(data.length, shape, 'fromFloat32');
  const bytes = dtype === 'F32' ? bytesOf(data) : bytesOf(dtype === 'F16' ? encodeF16(data) : encodeBf16(data));
  return { dtype, shape: [...shape], data: bytes };
}

/** A stored tensor from float64 values, kept as F64 (sharing memory) or rounded once to F32/F16/BF16. */
export function fromFloat64(
  data: Float64Array, shape: readonly number[], dtype: 'F64' | 'F32' | 'F16' | 'BF16' = 'F64',
): StoredTensor {
  checkShape(data.length, shape, 'fromFloat64');
  let bytes: Uint8Array;
  switch (dtype) {
    case 'F64': bytes = bytesOf(data); break;
    case 'F32': bytes = bytesOf(Float32Array.from(data)); break;
    case 'F16': bytes = bytesOf(encodeF16(data)); break;
    case 'BF16': bytes = bytesOf(encodeBf16(data)); break;
  }
  return { dtype, shape: [...shape], data: bytes };
}

/** A stored I32 tensor sharing `data`'s memory. */
export function fromInt32(data: Int32Array, shape: readonly number[]): StoredTensor {
  checkShape(data.length, shape, 'fromInt32');
  return { dtype: 'I32', shape: [...shape], data: bytesOf(data) };
}

/** A stored I64 tensor sharing `data`'s memory. */
export function fromBigInt64(data: BigInt64Array, shape: readonly number[]): StoredTensor {
  checkShape(data.length, shape, 'fromBigInt64');
  return { dtype: 'I64', shape: [...shape], data: bytesOf(data) };
}
