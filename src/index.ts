export * from './tensor/index.js';
export { dilatedAttention, denseAttention, type AttentionResult, type AttentionRotationTables } from './attention/dilated.js';
export { sparseFixedAttention, sparseFixedFlops, type SparseFixedAttentionOptions } from './attention/sparse-fixed.js';
export type { DilatedAttentionOptions } from './attention/patterns.js';
export type { Backend, Device, AttentionPattern, HeadOffsets } from './backend/backend.js';
export { getBackend, registerBackendLoader, defaultDevice } from './backend/registry.js';
export { InputError } from './errors.js';
export * from './model/index.js';
export * from './data/index.js';
export { readSafetensors, writeSafetensors, type StoredTensor, type SafetensorsDType } from './io/safetensors.js';
// registers the CUDA backend; no native code is loaded until a tensor asks for device 'cuda'
import './backend/cuda/index.js';
export { cudaAvailable } from './backend/cuda/index.js';
export * from './distributed/index.js';
