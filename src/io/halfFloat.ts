/**
 * IEEE binary16 (F16) and bfloat16 (BF16) bit patterns to and from JS numbers, rounding to nearest even.
 * Decoding is exact. Encoding from float32 uses bit arithmetic; encoding from float64 rounds the double
 * directly (going through float32 first would round twice and can be off by one unit).
 */

// Scratch views for reinterpreting float32 bits.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The BF16 bits nearest to the float32 value `x` (x must already be a float32, e.g. from a Float32Array). */
export function float32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  // NaN: keep sign and top payload bits, force it quiet so it cannot round to infinity.
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x0040) & 0xffff;
  // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry moves into the exponent correctly.
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToNumber(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** The F16 bits nearest to the float32 value `x`, with subnormals, overflow to infinity and NaN. */
export function float32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x0200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // biased F16 exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal result: the value is m * 2^(e - 14) units of 2^-24, m the 24-bit significand.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h; // h may reach 0x400, the smallest normal: the right bits
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry may give infinity: correct
  return sign | h;
}

export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * Rounds any double to a binary format with `mantBits` stored significand bits and `expBits` exponent
 * bits (F16: 10, 5; BF16: 7, 8), half to even, and returns its bits. NaN becomes the canonical quiet NaN.
 */
function doubleToBits(x: number, mantBits: number, expBits: number): number {
  const signBit = 1 << (mantBits + expBits);
  const infBits = ((1 << expBits) - 1) << mantBits;
  if (Number.isNaN(x)) return infBits | (1 << (mantBits - 1));
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | infBits;
  if (a === 0) return sign;
  const emin = 2 - (1 << (expBits - 1)); // exponent of the smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 may be off by one next to powers of two
  else if (2 ** (e + 1) <= a) e++;
  if (e < emin) e = emin; // subnormal range shares the smallest normal's quantum
  const m = a / 2 ** (e - mantBits); // exact: division by a power of two; m < 2^(mantBits+1)
  const fl = Math.floor(m);
  const frac = m - fl;
  const r = frac > 0.5 || (frac === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  // (e - emin) << mantBits plus r covers subnormals, normals and a carry into the next exponent alike.
  const bits = (e - emin) * 2 ** mantBits + r;
  return bits >= infBits ? sign | infBits : sign | bits;
}

/*
 * Rounding a double to float32 first and then to F16/BF16 is exact unless the float32 lands exactly on a
 * midpoint of the narrow format (midpoints are float32 values, and rounding is monotonic, so it cannot
 * cross one). Only those doubles, and F16 subnormals, take the slower exact path.
 */

export function float64ToF16Bits(x: number): number {
  const f = Math.fround(x);
  if (f === x || Number.isNaN(x)) return float32ToF16Bits(f);
  if (Math.abs(f) >= 2 ** -14) {
    f32[0] = f;
    if ((u32[0]! & 0x1fff) !== 0x1000) return float32ToF16Bits(f);
  }
  return doubleToBits(x, 10, 5);
}

export function float64ToBf16Bits(x: number): number {
  const f = Math.fround(x);
  if (f === x || Number.isNaN(x)) return float32ToBf16Bits(f);
  f32[0] = f;
  if ((u32[0]! & 0xffff) !== 0x8000) return float32ToBf16Bits(f);
  return doubleToBits(x, 7, 8);
}

/** The exact paths, for tests. */
export function float64ToF16BitsExact(x: number): number {
  return doubleToBits(x, 10, 5);
}

export function float64ToBf16BitsExact(x: number): number {
  return doubleToBits(x, 7, 8);
}

let f16Table: Float32Array | null = null;

/** All 65536 F16 values, built once: decoding large tensors becomes a table lookup. */
function f16Values(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToNumber(h);
  }
  return f16Table;
}

/** Decodes F16 bits into `out` (float32 or float64: both hold every F16 value exactly). */
export function decodeF16(bits: Uint16Array, out: Float32Array | Float64Array): void {
  const table = f16Values();
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
}

/** Decodes BF16 bits into `out`. */
export function decodeBf16(bits: Uint16Array, out: Float32Array | Float64Array): void {
  if (out instanceof Float32Array) {
    const wide = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < bits.length; i++) wide[i] = bits[i]! << 16;
    return;
  }
  for (let i = 0; i < bits.length; i++) out[i] = bf16BitsToNumber(bits[i]!);
}

/** Encodes to F16 bits; float32 input takes the bit-arithmetic path, float64 the exact one. */
export function encodeF16(src: Float32Array | Float64Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const enc = src instanceof Float32Array ? float32ToF16Bits : float64ToF16Bits;
  for (let i = 0; i < src.length; i++) out[i] = enc(src[i]!);
  return out;
}

/** Encodes to BF16 bits; float32 input takes the bit-arithmetic path, float64 the exact one. */
export function encodeBf16(src: Float32Array | Float64Array): Uint16Array {
  const out = new Uint16Array(src.length);
  if (src instanceof Float32Array) {
    const b = new Uint32Array(src.buffer, src.byteOffset, src.length);
    for (let i = 0; i < src.length; i++) {
      const x = b[i]!;
      out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x0040 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
    return out;
  }
  for (let i = 0; i < src.length; i++) out[i] = float64ToBf16Bits(src[i]!);
  return out;
}
