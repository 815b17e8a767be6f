export * from './tensor/index.js';
export { dilatedAttention, denseAttention, type AttentionResult } from './attention/dilated.js';
export type { DilatedAttentionOptions } from './attention/patterns.js';
export type { Backend, Device, AttentionPattern, HeadOffsets } from './backend/backend.js';
export { getBackend, registerBackendLoader, defaultDevice } from './backend/registry.js';
export { InputError } from './errors.js';
