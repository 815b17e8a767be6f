/**
 * The CUDA backend, registered with the backend registry on import. Importing this module is cheap: the
 * addon is loaded only when `getBackend('cuda')` first runs, and on a machine without CUDA that call
 * fails with one line saying why while the CPU backend works as ever.
 */
import { InputError } from '../../errors.js';
import { registerBackendLoader } from '../registry.js';
import { CudaBackend } from './cuda-backend.js';
import { loadAddon } from './load.js';
import { ATTENTION_PRECISIONS, MATMUL_PRECISION_CODE, type AttentionPrecision, type MatmulPrecision } from './native.js';

export { CudaBackend } from './cuda-backend.js';
export { CudaStorage } from './storage.js';
export { cudaAvailable, type CudaStatus } from './load.js';
export type { AttentionPrecision, DeviceInfo, MatmulPrecision, MemoryStats } from './native.js';
export { NcclComm, ncclStatus, ncclUniqueId, type NcclStatus, type ReduceOpName } from './nccl.js';
export { NcclCommunicator, createNcclCommunicator } from './nccl-communicator.js';

/**
 * The GPU of this process: LONGNET_CUDA_DEVICE, else LOCAL_RANK (one process per GPU under a launcher),
 * else 0; wrapped around the visible count.
 */
function deviceIndex(count: number): number {
  for (const name of ['LONGNET_CUDA_DEVICE', 'LOCAL_RANK']) {
    const value = process.env[name];
    if (value === undefined || value === '') continue;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new InputError(`${name}=${value} is not a device index`);
    return n % count;
  }
  return 0;
}

/** The value of LONGNET_CUDA_ATTENTION: undefined when unset or empty, else fp32 or bf16 (anything else throws). */
export function attentionPrecisionFromEnv(value: string | undefined): AttentionPrecision | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(ATTENTION_PRECISIONS as readonly string[]).includes(value)) {
    throw new InputError(`LONGNET_CUDA_ATTENTION=${value}: expected fp32 or bf16`);
  }
  return value as AttentionPrecision;
}

export function createCudaBackend(): CudaBackend {
  const r = loadAddon();
  if (!r.ok) throw new InputError(`longnet: CUDA unavailable: ${r.reason}`);
  const info = r.addon.init(deviceIndex(r.addon.probe().devices));
  const backend = new CudaBackend(r.addon, info);
  const precision = process.env['LONGNET_MATMUL_PRECISION'];
  if (precision) {
    if (!(precision in MATMUL_PRECISION_CODE)) {
      throw new InputError(`LONGNET_MATMUL_PRECISION=${precision}: expected fp32, tf32 or bf16`);
    }
    backend.setMatmulPrecision(precision as MatmulPrecision);
  }
  const attention = attentionPrecisionFromEnv(process.env['LONGNET_CUDA_ATTENTION']);
  if (attention) backend.setAttentionPrecision(attention);
  return backend;
}

registerBackendLoader('cuda', createCudaBackend);
