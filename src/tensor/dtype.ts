/**
 * Element types. The CPU stores float32 or float64; int32 holds token ids and targets. bfloat16 is GPU
 * storage for activations (arithmetic in float32); its host copies (`read`) hold the values as float32.
 */
export type DType = 'float32' | 'float64' | 'int32' | 'bfloat16';
export type FloatDType = 'float32' | 'float64' | 'bfloat16';
export type FloatArray = Float32Array | Float64Array;
export type TypedArray = Float32Array | Float64Array | Int32Array;

export function isFloat(dtype: DType): dtype is FloatDType {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'bfloat16';
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'float64' ? 8 : dtype === 'bfloat16' ? 2 : 4;
}

/** A new zero-filled array of `dtype` (float32 for a host copy of bfloat16), over a plain or a shared buffer. */
export function newTypedArray(dtype: DType, size: number, shared = false): TypedArray {
  if (dtype === 'bfloat16') dtype = 'float32';
  const bytes = size * bytesPerElement(dtype);
  const buffer = shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
  switch (dtype) {
    case 'float32': return new Float32Array(buffer);
    case 'float64': return new Float64Array(buffer);
    case 'int32': return new Int32Array(buffer);
  }
}

export function dtypeOfArray(data: TypedArray): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  return 'int32';
}
